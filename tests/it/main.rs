//! The integration suite, one test binary (so the kit in [`support`]
//! compiles once): a module per topic, each driving real nodes through
//! real clients against real redis-server, nats-server, memcached and
//! Chromium processes.
//!
//! `cargo test --test it <topic>` runs one topic, e.g. `cargo test --test
//! it chaos -- --nocapture` for the chaos suite and its counts.

mod support;

mod auth;
mod branches;
mod browser;
mod bus_contract;
mod chaos;
mod credentials;
mod decoders;
mod deployment;
mod devices;
mod embedded;
mod errors;
mod failures;
mod first_contact;
mod groups;
mod history;
mod history_contract;
mod hooks;
mod hostile_hops;
mod http_api;
mod inbox;
mod inbox_contract;
mod lifecycle;
mod limits;
mod offline;
mod presence_contract;
mod resume;
mod rolling;
mod route_cache;
mod scaled_backends;
mod slow_consumer;
mod status;
mod storms;
mod takeover;
mod timing;
mod watch;
