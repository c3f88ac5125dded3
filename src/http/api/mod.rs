//! The server-side API, behind the API key (docs/protocol.md, "HTTP"): a
//! module per resource, each behind the same [`Guard`] (the key, then the
//! node-wide rate).
//!
//! | endpoints | module |
//! | --- | --- |
//! | `POST /api/v1/messages` | [`messages`] |
//! | `GET /api/v1/presence/<client id>`, `GET /api/v1/cluster` | [`presence`] |
//! | `PUT`, `DELETE /api/v1/groups/<group>/members/<client id>`, `GET /api/v1/groups/<group>` (v2) | [`groups`] |
//! | `GET`, `DELETE /api/v1/inbox/<client id>` (v2) | [`inbox`] |
//! | `PUT`, `DELETE /api/v1/contacts/<client>/<contact>`, `GET /api/v1/contacts/<client>` (v3) | [`contacts`] |
//! | `GET`, `DELETE /api/v1/history/<client>/<other>`, `…/groups/<group>/history` (v3) | [`history`] |

mod contacts;
mod groups;
mod guard;
mod history;
mod inbox;
mod messages;
mod presence;

use std::sync::Arc;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use self::guard::Guard;
use crate::node::Node;

pub fn routes(node: Arc<Node>) -> BoxedFilter<(Response,)> {
    let guard = Guard::new(node.clone());
    messages::route(node.clone(), &guard)
        .or(presence::route(node.clone(), &guard))
        .unify()
        .or(groups::route(node.clone(), &guard))
        .unify()
        .or(inbox::route(node.clone(), &guard))
        .unify()
        .or(contacts::route(node.clone(), &guard))
        .unify()
        .or(history::route(node, &guard))
        .unify()
        .boxed()
}
