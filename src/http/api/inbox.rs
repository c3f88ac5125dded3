//! `GET /api/v1/inbox/<client id>` (v2): how many messages wait, and since
//! when; `DELETE`: empties it.

use std::sync::Arc;

use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::super::{error_response, json_response, with};
use super::guard::{Guard, path_id};
use crate::node::Node;
use crate::protocol::ClientId;

pub fn route(node: Arc<Node>, guard: &Guard) -> BoxedFilter<(Response,)> {
    warp::path!("api" / "v1" / "inbox" / String)
        .and(
            warp::get()
                .map(|| false)
                .or(warp::delete().map(|| true))
                .unify(),
        )
        .and(guard.check())
        .and(with(node))
        .then(inbox)
        .boxed()
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
        return match node.router().offline().clear_inbox(&client).await {
            None => no_inbox(),
            Some(Ok(_)) => warp::Reply::into_response(StatusCode::NO_CONTENT),
            Some(Err(e)) => unavailable(e),
        };
    }
    match node.router().offline().inbox_summary(&client).await {
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
