//! Switchboard: an instant-messaging broker.
//!
//! Clients hold WebSocket sessions on nodes; nodes share a presence
//! registry (client id -> node and session) and hand each other messages
//! over a bus. The modules form layers, and every `use` points down
//! (docs/architecture.md draws them; `scripts/check-layers.py` enforces
//! it):
//!
//! | layer | modules |
//! | --- | --- |
//! | runtime | [`runtime`]: connect, listen, serve, stop on a signal (the tools of the binary, `src/tools/`, sit above it) |
//! | transport | [`http`] (endpoints, the WebSocket upgrade), [`server`] (the accept loop) |
//! | node | [`node`]: the shared state, its assembly and stop, the upkeep loop, the listener on the bus, status |
//! | session | [`session`]: one task per WebSocket |
//! | routing | [`routing`]: services that own their state (locator, groups, outcomes, offline, courier), the router that composes them, registration and resumption |
//! | hub | [`hub`]: the sessions open here, their outboxes |
//! | ports | [`presence`], [`bus`], [`inbox`], [`history`], [`hooks`], [`events`]: what the router sees |
//! | backends | [`backends`]: memory, Redis, memcached, NATS, webhook, behind the ports |
//! | bottom | [`protocol`], [`config`], [`metrics`], [`health`], [`auth`], [`resume`] (tokens), [`rate`], [`redact`], [`tls`], [`process`], [`cause`], [`lock`], [`http_client`] |
//!
//! A message's path, in the order it travels: [`http`] upgrades to a
//! [`session`], which reads a `send` and asks the [`routing`] router for
//! its branch; the router looks the recipient up in [`presence`] and hands
//! the message to a session in the [`hub`] or publishes it on the [`bus`];
//! the recipient node's listener (in [`node`]) hands it to its session
//! there, and the outcome travels back the same way.

pub mod auth;
pub mod backends;
pub mod bus;
pub mod cause;
pub mod config;
pub mod events;
pub mod health;
pub mod history;
pub mod hooks;
pub mod http;
pub mod http_client;
pub mod hub;
pub mod inbox;
pub mod lock;
pub mod metrics;
pub mod node;
pub mod presence;
pub mod process;
pub mod protocol;
pub mod rate;
pub mod redact;
pub mod resume;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod session;
pub mod tls;
