//! The history endpoints (v3, docs/protocol.md "HTTP additions"), behind
//! the API key: the application's moderation and "delete my data".
//!
//! - `GET /api/v1/history/<client>/<other>?before=&after=&limit=`: the
//!   two-client conversation as `client`'s `history` frame shows it;
//! - `GET /api/v1/groups/<group>/history?…`: a group's;
//! - `DELETE` of either: its messages and read cursors go (204); its
//!   numbering goes on after the last `cseq` it had.
//!
//! 404 `no_history` on a node without `--history`.

use std::collections::HashMap;
use std::sync::Arc;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::super::{error_response, with};
use super::guard::{Guard, path_id};
use crate::history::Conversation;
use crate::node::Node;
use crate::protocol::history::{DEFAULT_PAGE, MAX_PAGE, PageRange, Thread, encode_history};
use crate::protocol::{ClientId, GroupId};
use crate::routing::History;

pub fn route(node: Arc<Node>, guard: &Guard) -> BoxedFilter<(Response,)> {
    let method = warp::get()
        .map(|| false)
        .or(warp::delete().map(|| true))
        .unify();
    let pair = warp::path!("api" / "v1" / "history" / String / String)
        .and(method)
        .and(warp::query::<HashMap<String, String>>())
        .and(guard.check())
        .and(with(node.clone()))
        .then(
            |client: String, other: String, delete, query, node| async move {
                let client = match path_id(&client, ClientId::parse, "invalid_client_id") {
                    Ok(client) => client,
                    Err(refused) => return refused,
                };
                let other = match path_id(&other, ClientId::parse, "invalid_client_id") {
                    Ok(other) => other,
                    Err(refused) => return refused,
                };
                let conversation = Conversation::pair(&client, &other);
                answer(node, conversation, Thread::With(other), delete, query).await
            },
        );
    let group = warp::path!("api" / "v1" / "groups" / String / "history")
        .and(method)
        .and(warp::query::<HashMap<String, String>>())
        .and(guard.check())
        .and(with(node))
        .then(|group: String, delete, query, node| async move {
            match path_id(&group, GroupId::parse, "invalid_group_id") {
                Ok(group) => {
                    let conversation = Conversation::Group(group.clone());
                    answer(node, conversation, Thread::Group(group), delete, query).await
                }
                Err(refused) => refused,
            }
        });
    pair.or(group).unify().boxed()
}

async fn answer(
    node: Arc<Node>,
    conversation: Conversation,
    thread: Thread,
    delete: bool,
    query: HashMap<String, String>,
) -> Response {
    let Some(history) = node.history() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "no_history",
            "this node keeps no history (it runs without --history)",
        );
    };
    let unavailable = |e: crate::history::HistoryError| {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &crate::cause::chain(&e),
        )
    };
    if delete {
        return match history.delete(&conversation).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => unavailable(e),
        };
    }
    let (range, limit) = match page_of(&query) {
        Ok(page) => page,
        Err(why) => return error_response(StatusCode::BAD_REQUEST, "bad_request", &why),
    };
    match history.read(&conversation, range, limit).await {
        Ok(page) => {
            let frames = History::frames(&conversation, &page);
            let body = encode_history(None, &thread, &frames, page.more);
            warp::http::Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(body.into())
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(e) => unavailable(e),
    }
}

/// `before`, `after` (not both) and `limit` (1 to 200, default 50).
fn page_of(query: &HashMap<String, String>) -> Result<(PageRange, usize), String> {
    let number = |name: &str| -> Result<Option<u64>, String> {
        query
            .get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{name} must be a whole number, at least 0"))
            })
            .transpose()
    };
    let range = match (number("before")?, number("after")?) {
        (None, None) => PageRange::Latest,
        (Some(before), None) => PageRange::Before(before),
        (None, Some(after)) => PageRange::After(after),
        (Some(_), Some(_)) => {
            return Err("a page is either before or after a cseq, not both".into());
        }
    };
    let limit = match number("limit")? {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE as u64).contains(&n) => n as usize,
        Some(n) => return Err(format!("limit must be 1 to {MAX_PAGE}; this one is {n}")),
    };
    Ok((range, limit))
}
