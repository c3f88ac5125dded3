//! `GET /api/v1/presence/<client id>`: the client's believed devices,
//! and when it was last seen if it has none; `GET /api/v1/cluster`: every
//! live node's status.

use std::sync::Arc;

use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::super::{json_response, with};
use super::guard::{Guard, path_id, store_error};
use crate::node::Node;
use crate::protocol::ClientId;

pub fn route(node: Arc<Node>, guard: &Guard) -> BoxedFilter<(Response,)> {
    let presence = warp::path!("api" / "v1" / "presence" / String)
        .and(warp::get())
        .and(guard.check())
        .and(with(node.clone()))
        .then(presence);
    let cluster = warp::path!("api" / "v1" / "cluster")
        .and(warp::get())
        .and(guard.check())
        .and(with(node))
        .then(|node: Arc<Node>| async move {
            let nodes = crate::node::status::of_cluster(&node).await;
            json_response(StatusCode::OK, &json!({ "nodes": nodes }))
        });
    presence.or(cluster).unify().boxed()
}

async fn presence(raw_id: String, node: Arc<Node>) -> Response {
    let client = match path_id(&raw_id, ClientId::parse, "invalid_client_id") {
        Ok(client) => client,
        Err(refused) => return refused,
    };
    match node.router().locator().devices(&client).await {
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
                && let Some(seen) = node.router().offline().last_seen(&client).await
            {
                answer["last_seen"] = json!(seen.at);
            }
            json_response(StatusCode::OK, &answer)
        }
        Err(e) => store_error(&e),
    }
}
