//! The server-side API: `POST /api/v1/messages` and
//! `GET /api/v1/presence/<client id>`, both behind the API key.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{error_response, json_response, refuse, with};
use crate::node::Node;
use crate::presence::PresenceError;
use crate::protocol::frames::check_body;
use crate::protocol::{ClientId, ErrorCode, Recipient};
use crate::rate::TokenBucket;
use crate::routing::Message;

pub fn routes(node: Arc<Node>) -> BoxedFilter<(Response,)> {
    let limits = &node.config().limits;
    let bucket = Arc::new(Mutex::new(TokenBucket::new(
        limits.api_rate_limit,
        limits.api_rate_burst,
    )));
    let send = warp::path!("api" / "v1" / "messages")
        .and(warp::post())
        .and(api_key(node.clone()))
        .and(within_rate(node.clone(), bucket.clone()))
        .and(warp::body::content_length_limit(
            limits.max_frame_bytes as u64,
        ))
        .and(warp::body::bytes())
        .and(with(node.clone()))
        .then(send_message);

    let presence = warp::path!("api" / "v1" / "presence" / String)
        .and(warp::get())
        .and(api_key(node.clone()))
        .and(within_rate(node.clone(), bucket))
        .and(with(node))
        .then(presence);

    send.or(presence).unify().boxed()
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
            let allowed = bucket.lock().unwrap_or_else(|p| p.into_inner()).allow();
            let node = node.clone();
            async move {
                if allowed {
                    return Ok(());
                }
                node.metrics().error(ErrorCode::RateLimited);
                Err(refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "the API takes {} requests per second on this node (--api-rate-limit); \
                         retry in a second",
                        node.config().limits.api_rate_limit
                    ),
                ))
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

#[derive(Deserialize)]
struct SendRequest<'a> {
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    to: Cow<'a, str>,
    #[serde(borrow)]
    body: &'a RawValue,
}

async fn send_message(raw: Bytes, node: Arc<Node>) -> Response {
    let started = Instant::now();
    let request: SendRequest<'_> = match serde_json::from_slice(&raw) {
        Ok(request) => request,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("expected {{\"from\":…,\"to\":…,\"body\":…}}: {e}"),
            );
        }
    };
    if let Err(why) = check_body(request.body) {
        return error_response(StatusCode::BAD_REQUEST, "bad_request", &why);
    }
    let from = match ClientId::parse(&request.from) {
        Ok(from) => from,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_sender", &e.0),
    };
    let to = match ClientId::parse(&request.to) {
        Ok(to) => to,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_recipient", &e.0),
    };
    let msg_id = Uuid::now_v7();
    let msg = Message::new(msg_id, from, Recipient::Client(to), request.body, None);
    match node.router().route(msg).await {
        Ok(sent) => {
            node.metrics().observe_route(started.elapsed());
            let ack = sent.ack(None, msg_id);
            let mut body = serde_json::to_value(&ack).unwrap_or_default();
            if let Some(fields) = body.as_object_mut() {
                fields.remove("id");
            }
            json_response(StatusCode::OK, &body)
        }
        Err(e) => {
            node.metrics().error(e.code());
            let status = match e.code() {
                ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            error_response(status, e.code().as_str(), &e.to_string())
        }
    }
}

async fn presence(raw_id: String, node: Arc<Node>) -> Response {
    // Path segments arrive percent-encoded; '@' and ':' often are.
    let decoded = percent_encoding::percent_decode_str(&raw_id).decode_utf8_lossy();
    let client = match ClientId::parse(&decoded) {
        Ok(client) => client,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_client_id", &e.0),
    };
    match node.router().devices(&client).await {
        Ok(devices) => {
            let devices: Vec<_> = devices
                .iter()
                .map(|d| {
                    json!({
                        "device": d.device,
                        "node": d.node,
                        "session": d.session,
                        "since": d.since,
                    })
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "client_id": client,
                    "online": !devices.is_empty(),
                    "devices": devices,
                }),
            )
        }
        Err(e @ PresenceError::Unavailable { .. }) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
        Err(e @ PresenceError::Corrupt { .. }) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    }
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
