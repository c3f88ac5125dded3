//! Switchboard: an instant-messaging broker.
//!
//! Clients hold WebSocket sessions on nodes; nodes share a presence
//! registry (client id -> node and session) and hand each other messages
//! over a bus. A tour of the crate, in the order a message travels:
//!
//! - [`http`]: the endpoints; `GET /ws` authenticates ([`auth`]) and
//!   upgrades to a [`session`].
//! - [`session`]: one task per WebSocket: reads frames ([`protocol`]),
//!   writes what its outbox holds.
//! - [`router`]: the three branches (local, remote, offline) for each send,
//!   using the [`presence`] store and the [`bus`].
//! - [`hop`]: the receiving end of the bus, back into the router.
//! - [`client`]: a typed Rust client, used by the tests and tools.
//! - [`node`] wires it all together; [`server`] accepts connections;
//!   [`config`] and [`cli`] turn flags into a checked configuration;
//!   [`metrics`] counts.
//! - [`liveness`] and [`upkeep`]: heartbeats, dead-node detection and
//!   recovery after presence outages.
//! - Defences: [`rate`] (per-session and API limits), [`tls`], and
//!   [`redact`] (credentials kept out of logs); docs/security.md has the
//!   whole picture.

pub mod auth;
pub mod bench;
pub mod bus;
pub mod chat;
pub mod cli;
pub mod client;
pub mod config;
pub mod hop;
pub mod http;
pub mod liveness;
pub mod metrics;
pub mod node;
pub mod presence;
pub mod process;
pub mod protocol;
pub mod rate;
pub mod redact;
pub mod router;
pub mod server;
pub mod session;
pub mod tls;
pub mod token;
pub mod upkeep;
