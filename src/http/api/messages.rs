//! `POST /api/v1/messages`: a server-side send, to a client or (v2) a
//! group, routed like a client's and answered like its ack.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::super::{error_response, json_response, with};
use super::guard::Guard;
use crate::node::Node;
use crate::protocol::frames::check_body;
use crate::protocol::{ClientId, ErrorCode, GroupId, Recipient};
use crate::routing::{Kept, Message};

pub fn route(node: Arc<Node>, guard: &Guard) -> BoxedFilter<(Response,)> {
    let max = node.config().limits.max_frame_bytes as u64;
    warp::path!("api" / "v1" / "messages")
        .and(warp::post())
        .and(guard.check())
        .and(warp::body::content_length_limit(max))
        .and(warp::body::bytes())
        .and(with(node))
        .then(send_message)
        .boxed()
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
    /// v3: `false` keeps it out of the conversation's history.
    #[serde(default = "kept_by_default")]
    history: bool,
}

fn kept_by_default() -> bool {
    true
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
    // v3: appended like a client's send, before it is routed.
    if let Some(history) = node.history().filter(|_| request.history) {
        history.keep(&mut msg).await;
    }
    let kept = msg.kept;
    match node.router().route(msg).await {
        Ok(sent) => {
            node.metrics().observe_route(started.elapsed());
            let mut ack = sent.ack(None, msg_id);
            match kept {
                Kept::As(cseq) => ack.cseq = Some(cseq),
                Kept::Failed => ack.history_error = Some("unavailable"),
                Kept::No => {}
            }
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
