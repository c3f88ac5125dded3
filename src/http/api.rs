//! The server-side API, behind the API key: `POST /api/v1/messages` (to a
//! client or a group), `GET /api/v1/presence/<client id>`, and the group
//! members endpoints (v2, [`super::groups`]).

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
use crate::lock::Locked;
use crate::node::Node;
use crate::presence::PresenceError;
use crate::protocol::frames::check_body;
use crate::protocol::{ClientId, ErrorCode, GroupId, Recipient};
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
        .and(within_rate(node.clone(), bucket.clone()))
        .and(with(node.clone()))
        .then(presence);

    let member = warp::path!("api" / "v1" / "groups" / String / "members" / String)
        .and(
            warp::put()
                .map(|| true)
                .or(warp::delete().map(|| false))
                .unify(),
        )
        .and(api_key(node.clone()))
        .and(within_rate(node.clone(), bucket.clone()))
        .and(with(node.clone()))
        .then(super::groups::change_member);

    let cluster = warp::path!("api" / "v1" / "cluster")
        .and(warp::get())
        .and(api_key(node.clone()))
        .and(within_rate(node.clone(), bucket.clone()))
        .and(with(node.clone()))
        .then(|node: Arc<Node>| async move {
            let nodes = node.router().cluster_status().await;
            json_response(StatusCode::OK, &json!({ "nodes": nodes }))
        });

    let group = warp::path!("api" / "v1" / "groups" / String)
        .and(warp::get())
        .and(api_key(node.clone()))
        .and(within_rate(node.clone(), bucket.clone()))
        .and(with(node.clone()))
        .then(super::groups::list_members);

    let inbox = warp::path!("api" / "v1" / "inbox" / String)
        .and(
            warp::get()
                .map(|| false)
                .or(warp::delete().map(|| true))
                .unify(),
        )
        .and(api_key(node.clone()))
        .and(within_rate(node.clone(), bucket))
        .and(with(node))
        .then(inbox);

    send.or(presence)
        .unify()
        .or(member)
        .unify()
        .or(group)
        .unify()
        .or(cluster)
        .unify()
        .or(inbox)
        .unify()
        .boxed()
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
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    /// v2: instead of `to`.
    #[serde(borrow, default)]
    group: Option<Cow<'a, str>>,
    #[serde(borrow)]
    body: &'a RawValue,
    /// v2: keep it in the recipient's inbox if the recipient is offline.
    #[serde(default)]
    store: bool,
}

async fn send_message(raw: Bytes, node: Arc<Node>) -> Response {
    let started = Instant::now();
    let request: SendRequest<'_> = match serde_json::from_slice(&raw) {
        Ok(request) => request,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("expected {{\"from\":…,\"to\" or \"group\":…,\"body\":…}}: {e}"),
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
    let to = match (&request.to, &request.group) {
        (Some(to), None) => match ClientId::parse(to) {
            Ok(to) => Recipient::Client(to),
            Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_recipient", &e.0),
        },
        (None, Some(group)) => match GroupId::parse(group) {
            Ok(group) => Recipient::Group(group),
            Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_group_id", &e.0),
        },
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "a send names exactly one of \"to\" and \"group\"",
            );
        }
    };
    let msg_id = Uuid::now_v7();
    let mut msg = Message::new(msg_id, from, to, request.body, None);
    msg.store = request.store;
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
    let client = match path_id(&raw_id, ClientId::parse, "invalid_client_id") {
        Ok(client) => client,
        Err(refused) => return refused,
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
            let mut answer = json!({
                "client_id": client,
                "online": !devices.is_empty(),
                "devices": devices,
            });
            if devices.is_empty()
                && let Some(seen) = node.router().last_seen(&client).await
            {
                answer["last_seen"] = json!(seen.at);
            }
            json_response(StatusCode::OK, &answer)
        }
        Err(e) => store_error(&e),
    }
}

/// `GET /api/v1/inbox/<client>`: how many messages wait, and since when;
/// `DELETE`: empties it (204).
async fn inbox(raw_id: String, delete: bool, node: Arc<Node>) -> Response {
    let client = match path_id(&raw_id, ClientId::parse, "invalid_client_id") {
        Ok(client) => client,
        Err(refused) => return refused,
    };
    let unavailable = |e: crate::inbox::InboxError| {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &crate::cause::chain(&e),
        )
    };
    let no_inbox = || {
        error_response(
            StatusCode::NOT_FOUND,
            "no_inbox",
            "this node runs without an inbox (--inbox)",
        )
    };
    if delete {
        return match node.router().clear_inbox(&client).await {
            None => no_inbox(),
            Some(Ok(_)) => warp::Reply::into_response(StatusCode::NO_CONTENT),
            Some(Err(e)) => unavailable(e),
        };
    }
    match node.router().inbox_summary(&client).await {
        None => no_inbox(),
        Some(Ok(summary)) => json_response(
            StatusCode::OK,
            &json!({
                "client_id": client,
                "count": summary.count,
                "oldest": summary.oldest,
            }),
        ),
        Some(Err(e)) => unavailable(e),
    }
}

/// A presence store's failure as an answer: 503 when it could not be
/// reached, 500 when what it holds is not what a node writes.
pub(super) fn store_error(e: &PresenceError) -> Response {
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
pub(super) fn path_id<T>(
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
