//! The group members endpoints (v2, docs/protocol.md "HTTP"), behind the
//! API key: `PUT` and `DELETE /api/v1/groups/<group>/members/<client id>`,
//! `GET /api/v1/groups/<group>`.

use std::sync::Arc;

use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::super::{error_response, json_response, with};
use super::guard::{Guard, path_id, store_error};
use crate::node::Node;
use crate::presence::MemberAdded;
use crate::protocol::{ClientId, GroupId};

pub fn route(node: Arc<Node>, guard: &Guard) -> BoxedFilter<(Response,)> {
    let member = warp::path!("api" / "v1" / "groups" / String / "members" / String)
        .and(
            warp::put()
                .map(|| true)
                .or(warp::delete().map(|| false))
                .unify(),
        )
        .and(guard.check())
        .and(with(node.clone()))
        .then(change_member);
    let group = warp::path!("api" / "v1" / "groups" / String)
        .and(warp::get())
        .and(guard.check())
        .and(with(node))
        .then(list_members);
    member.or(group).unify().boxed()
}

/// `PUT` (`add`) or `DELETE` a member: 204 either way, also when nothing
/// changed; 409 `group_full` beyond `--max-group-members`.
async fn change_member(
    raw_group: String,
    raw_client: String,
    add: bool,
    node: Arc<Node>,
) -> Response {
    let group = match path_id(&raw_group, GroupId::parse, "invalid_group_id") {
        Ok(group) => group,
        Err(refused) => return refused,
    };
    let client = match path_id(&raw_client, ClientId::parse, "invalid_client_id") {
        Ok(client) => client,
        Err(refused) => return refused,
    };
    let groups = node.router().groups();
    let changed = if add {
        let max = node.config().limits.max_group_members;
        match groups.add_member(&group, &client, max).await {
            Ok(MemberAdded::Full) => {
                return error_response(
                    StatusCode::CONFLICT,
                    "group_full",
                    &format!("{group} has {max} members, the most allowed (--max-group-members)"),
                );
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        match groups.remove_member(&group, &client).await {
            Ok(true) => {
                // Watches allowed by this group end: here now, elsewhere on
                // the broadcast.
                node.watches()
                    .revalidate(crate::routing::Scope::Groups)
                    .await;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        }
    };
    match changed {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(&e),
    }
}

/// `{"group":"team","members":[…]}`, sorted, read from the store (not a
/// node's cache); 404 when the group has no members.
async fn list_members(raw_group: String, node: Arc<Node>) -> Response {
    let group = match path_id(&raw_group, GroupId::parse, "invalid_group_id") {
        Ok(group) => group,
        Err(refused) => return refused,
    };
    match node.router().groups().read(&group).await {
        Ok(members) if members.is_empty() => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{group} has no members"),
        ),
        Ok(members) => json_response(StatusCode::OK, &json!({"group": group, "members": members})),
        Err(e) => store_error(&e),
    }
}
