//! The wire contract (`docs/protocol.md`) as types. The frames clients
//! and nodes exchange, and the identifiers, live in the
//! `switchboard-protocol` crate (shared with the clients) and are
//! re-exported here; the envelope nodes exchange over the bus is the
//! server's own. Nothing else in the crate builds or parses JSON that
//! crosses a process boundary.

pub mod envelope;
pub mod requests;
pub mod status;

pub use switchboard_protocol::*;

pub use envelope::{
    Carbon, Changed, Envelope, EnvelopeError, Fate, Hop, MessageHop, Outcome, OwedHop, ReadHop,
    ReplacedHop, ReplyTo, Settled, SignalHop, Target, WatchedHop,
};
