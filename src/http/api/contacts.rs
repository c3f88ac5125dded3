//! The contacts endpoints (v3, docs/protocol.md "HTTP additions"), behind
//! the API key: `PUT` and `DELETE /api/v1/contacts/<client>/<contact>`,
//! `GET /api/v1/contacts/<client>`. A contact is whom a client may watch
//! (one way). A removed contact ends the watch within a second, on every
//! node: here at once, elsewhere when the change's broadcast arrives.

use std::sync::Arc;

use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::super::{error_response, json_response, with};
use super::guard::{Guard, path_id, store_error};
use crate::node::Node;
use crate::presence::ContactAdded;
use crate::protocol::ClientId;
use crate::routing::Scope;

pub fn route(node: Arc<Node>, guard: &Guard) -> BoxedFilter<(Response,)> {
    let change = warp::path!("api" / "v1" / "contacts" / String / String)
        .and(
            warp::put()
                .map(|| true)
                .or(warp::delete().map(|| false))
                .unify(),
        )
        .and(guard.check())
        .and(with(node.clone()))
        .then(change_contact);
    let list = warp::path!("api" / "v1" / "contacts" / String)
        .and(warp::get())
        .and(guard.check())
        .and(with(node))
        .then(list_contacts);
    change.or(list).unify().boxed()
}

/// `PUT` (`add`) or `DELETE` a contact: 204 either way, also when nothing
/// changed; 409 `too_many_contacts` beyond `--max-contacts`.
async fn change_contact(
    raw_client: String,
    raw_contact: String,
    add: bool,
    node: Arc<Node>,
) -> Response {
    let client = match path_id(&raw_client, ClientId::parse, "invalid_client_id") {
        Ok(client) => client,
        Err(refused) => return refused,
    };
    let contact = match path_id(&raw_contact, ClientId::parse, "invalid_client_id") {
        Ok(contact) => contact,
        Err(refused) => return refused,
    };
    let store = node.presence();
    if add {
        let max = node.config().watching.max_contacts;
        return match store.add_contact(&client, &contact, max).await {
            Ok(ContactAdded::Full) => error_response(
                StatusCode::CONFLICT,
                "too_many_contacts",
                &format!("{client} has {max} contacts, the most allowed (--max-contacts)"),
            ),
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => store_error(&e),
        };
    }
    match store.remove_contact(&client, &contact).await {
        Ok(removed) => {
            if removed {
                // Watches of it end: here now, elsewhere on the broadcast.
                node.watches()
                    .revalidate(Scope::Watchers(std::slice::from_ref(&client)))
                    .await;
                node.router().courier().changed_contacts(client);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => store_error(&e),
    }
}

/// `{"client_id":"alice","contacts":[…]}`, sorted (empty when none).
async fn list_contacts(raw_client: String, node: Arc<Node>) -> Response {
    let client = match path_id(&raw_client, ClientId::parse, "invalid_client_id") {
        Ok(client) => client,
        Err(refused) => return refused,
    };
    match node.presence().contacts(&client).await {
        Ok(mut contacts) => {
            contacts.sort_unstable();
            json_response(
                StatusCode::OK,
                &json!({"client_id": client, "contacts": contacts}),
            )
        }
        Err(e) => store_error(&e),
    }
}
