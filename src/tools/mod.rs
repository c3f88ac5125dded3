//! The tools of the `switchboard` binary beside `serve`: load and
//! benchmarks ([`bench`]), a terminal chat client ([`chat`]), group
//! membership from the command line ([`groups`]), a cluster's status
//! ([`status`]), test tokens ([`token`]), and the command line that
//! chooses between them ([`cli`]).
//!
//! They are the binary's own modules, not the server library's: a tool
//! talks to nodes as any outside program would (the client crate, the
//! HTTP API, the stores' and NATS's own protocols), and reads the library
//! only for its types and backends.

pub mod bench;
pub mod chat;
pub mod cli;
pub mod groups;
pub mod status;
pub mod token;

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use switchboard::http_client::HttpClient;

/// How long one request of a tool may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `method url` (with `Authorization: Bearer <bearer>` when given,
/// and `body` as JSON when given) with the library's one HTTP client;
/// returns the status and the body. Errors say what went wrong, for
/// people.
pub async fn fetch(
    method: reqwest::Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<String>,
) -> Result<(reqwest::StatusCode, Bytes), String> {
    static CLIENT: OnceLock<Result<HttpClient, String>> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        HttpClient::new(None, REQUEST_TIMEOUT).map_err(|e| switchboard::cause::chain(&e))
    });
    let client = client.as_ref().map_err(Clone::clone)?;
    client
        .exchange(method, url, bearer, body)
        .await
        .map_err(|e| switchboard::cause::chain(&e))
}
