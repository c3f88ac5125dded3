//! The test kit: the test bed ([`bed`]: nodes on the in-memory backends,
//! reached over in-memory pipes, with paused time), real redis-server,
//! nats-server and memcached processes on free loopback ports
//! ([`servers`]), Switchboard nodes in-process or as child processes
//! ([`nodes`]), clients ([`clients`]) and plain HTTP ([`http`]) to either
//! kind of node ([`reach`]), chat traffic with a ledger of every outcome
//! ([`traffic`]), and helpers that wait for events with timeouts (never
//! sleep-and-hope).
//!
//! Every server is a [`process::ServerProcess`]: stopped when its handle
//! drops, and killed by the kernel if the test process dies
//! (PR_SET_PDEATHSIG), so a failed run leaves nothing behind.

pub mod bed;
pub mod certs;
pub mod clients;
pub mod http;
pub mod nodes;
pub mod process;
pub mod reach;
pub mod servers;
pub mod traffic;

use std::time::{Duration, Instant};

pub use bed::Bed;
pub use clients::*;
pub use http::*;
pub use nodes::*;
pub use process::{find_binary, free_port};
pub use reach::Reach;
pub use servers::*;

/// How long any single expected event may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than
/// [`EVENT_TIMEOUT`].
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(EVENT_TIMEOUT, future)
        .await
        .expect("timed out waiting for an event")
}

/// Polls `check` until it holds. For state that changes without an event
/// to wait on (a Redis key written by another task).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A device's field of a client's presence record in Redis, as the
/// protocol lays it out: `{"node":…,"session":…,"since":…}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Field {
    pub node: String,
    pub session: String,
    pub since: u64,
}

/// `client`'s field for `device`, if there is one (and Redis answers).
pub async fn device_field<C>(conn: &C, client: &str, device: &str) -> Option<Field>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    use redis::AsyncCommands;
    let value: Option<String> = conn
        .clone()
        .hget(format!("sb:presence:{client}"), device)
        .await
        .ok()
        .flatten();
    value.map(|v| serde_json::from_str(&v).expect("a presence field is JSON"))
}

/// `client`'s field for the device a client names when it names none.
pub async fn presence_field<C>(conn: &C, client: &str) -> Option<Field>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    device_field(conn, client, "default").await
}
