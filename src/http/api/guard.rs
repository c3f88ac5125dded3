//! What every API endpoint checks first: the API key, then the node-wide
//! rate; and the small helpers the endpoints share (ids from the path,
//! store errors as answers).

use std::sync::{Arc, Mutex};

use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::super::{Refusal, error_response, refuse};
use crate::lock::Locked;
use crate::node::Node;
use crate::presence::PresenceError;
use crate::protocol::ErrorCode;
use crate::rate::TokenBucket;

/// The gate in front of every API endpoint: the key, then the rate (a
/// token bucket shared by every endpoint of the node).
#[derive(Clone)]
pub struct Guard {
    node: Arc<Node>,
    bucket: Arc<Mutex<TokenBucket>>,
}

impl Guard {
    pub fn new(node: Arc<Node>) -> Self {
        let limits = &node.config().limits;
        let bucket = TokenBucket::new(limits.api_rate_limit, limits.api_rate_burst);
        Self {
            node,
            bucket: Arc::new(Mutex::new(bucket)),
        }
    }

    /// Lets a request through with the right key and within the rate.
    pub fn check(&self) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone + use<> {
        api_key(self.node.clone()).and(within_rate(self.node.clone(), self.bucket.clone()))
    }
}

/// Lets a request through only with `Authorization: Bearer <api key>`.
fn api_key(node: Arc<Node>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            // Decided here, so that the key is not copied for each request.
            let verdict = check_api_key(node.config().api_key.as_ref(), header.as_deref());
            std::future::ready(verdict)
        })
        .untuple_one()
}

fn check_api_key(
    expected: Option<&crate::redact::Secret>,
    header: Option<&str>,
) -> Result<(), warp::Rejection> {
    let Some(expected) = expected else {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "api_disabled",
            "the HTTP API is off on this node: start it with --api-key",
        ));
    };
    match header.and_then(|h| h.strip_prefix("Bearer ")) {
        Some(key) if constant_time_eq(key.trim().as_bytes(), expected.expose().as_bytes()) => {
            Ok(())
        }
        Some(_) => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong API key",
        )),
        None => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing API key: send Authorization: Bearer <api key>",
        )),
    }
}

/// Lets a request through while the node-wide API budget lasts; beyond it,
/// 429. Checked after the key, so that callers without one cannot use up
/// the budget of those with one.
fn within_rate(
    node: Arc<Node>,
    bucket: Arc<Mutex<TokenBucket>>,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::any()
        .and_then(move || {
            let allowed = bucket.locked().allow();
            let node = node.clone();
            async move {
                if allowed {
                    return Ok(());
                }
                node.metrics().error(ErrorCode::RateLimited);
                let message = format!(
                    "the API takes {} requests per second on this node (--api-rate-limit); \
                     retry in a second",
                    node.config().limits.api_rate_limit
                );
                let refusal = Refusal::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
                let retry = HeaderValue::from_static("1");
                Err(refusal.with_header(header::RETRY_AFTER, retry).rejection())
            }
        })
        .untuple_one()
}

/// Compares in time that depends only on the length of what was presented,
/// never on how much of it was right nor on the key's own length.
fn constant_time_eq(presented: &[u8], key: &[u8]) -> bool {
    if key.is_empty() {
        return presented.is_empty();
    }
    let mut diff = presented.len() ^ key.len();
    for (i, byte) in presented.iter().enumerate() {
        diff |= usize::from(byte ^ key[i % key.len()]);
    }
    diff == 0
}

/// A presence store's failure as an answer: 503 when it could not be
/// reached, 500 when what it holds is not what a node writes.
pub fn store_error(e: &PresenceError) -> Response {
    match e {
        PresenceError::Unavailable { .. } => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
        PresenceError::Corrupt { .. } => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    }
}

/// A path segment as an id: percent-decoded ('@' and ':' often arrive
/// encoded), then checked by `parse`; 400 with `code` when it is not one.
#[allow(clippy::result_large_err)] // the refusal is the answer, built once
pub fn path_id<T>(
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, crate::protocol::InvalidId>,
    code: &str,
) -> Result<T, Response> {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    parse(&decoded).map_err(|e| error_response(StatusCode::BAD_REQUEST, code, &e.0))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"key", b"key"));
        assert!(!constant_time_eq(b"key", b"kez"));
        assert!(!constant_time_eq(b"key", b"keys"));
        assert!(!constant_time_eq(b"", b"k"));
        assert!(!constant_time_eq(b"keykey", b"key"));
        assert!(!constant_time_eq(b"k", b""));
    }
}
