//! The chat page every node serves at `/`: a newcomer's first contact,
//! with no client to write. Its files are compiled into the binary (no
//! CDN: it works offline): the page's own script runs on the browser
//! bundle of the JavaScript client package (`clients/js`, built there and
//! committed as `dist/switchboard-client.min.js`, so that building the
//! node needs no Node.js), and talks to the node that served it over the
//! same WebSocket protocol as any client.
//!
//! The page needs two facts about its node, its id and whether clients
//! sign in with a token or a name; they are written into the HTML once,
//! when the routes are built.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use warp::reply::{Reply, Response};

use crate::protocol::NodeId;

const INDEX: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const CONVERSATIONS_JS: &str = include_str!("page/conversations.js");
const CLIENT_JS: &str = include_str!("../../clients/js/dist/switchboard-client.min.js");
const APP_CSS: &str = include_str!("page/app.css");
const ADMIN: &str = include_str!("page/admin.html");
const ADMIN_JS: &str = include_str!("page/admin.js");

/// Scripts and styles from this node only, sockets to it only; no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// `GET /`, `GET /page/app.js` (and its `conversations.js`),
/// `GET /page/switchboard-client.min.js`,
/// `GET /page/app.css`; the admin page
/// `GET /admin` and `GET /page/admin.js` (its data comes from the API,
/// behind the API key the operator enters in it).
pub fn routes(node: &NodeId, tokens_required: bool) -> BoxedFilter<(Response,)> {
    // Node ids are [A-Za-z0-9_-], so they need no escaping in HTML.
    let index = INDEX
        .replace("{{NODE}}", node.as_str())
        .replace("{{AUTH}}", if tokens_required { "token" } else { "name" });
    let page = warp::path::end()
        .and(warp::get())
        .map(move || asset(index.clone(), "text/html; charset=utf-8"));
    let script = warp::path!("page" / "app.js")
        .and(warp::get())
        .map(|| asset(APP_JS.to_owned(), "text/javascript; charset=utf-8"));
    let conversations = warp::path!("page" / "conversations.js")
        .and(warp::get())
        .map(|| {
            asset(
                CONVERSATIONS_JS.to_owned(),
                "text/javascript; charset=utf-8",
            )
        });
    let client = warp::path!("page" / "switchboard-client.min.js")
        .and(warp::get())
        .map(|| asset(CLIENT_JS.to_owned(), "text/javascript; charset=utf-8"));
    let style = warp::path!("page" / "app.css")
        .and(warp::get())
        .map(|| asset(APP_CSS.to_owned(), "text/css; charset=utf-8"));
    let admin = warp::path!("admin")
        .and(warp::get())
        .map(|| asset(ADMIN.to_owned(), "text/html; charset=utf-8"));
    let admin_js = warp::path!("page" / "admin.js")
        .and(warp::get())
        .map(|| asset(ADMIN_JS.to_owned(), "text/javascript; charset=utf-8"));
    page.or(script)
        .unify()
        .or(conversations)
        .unify()
        .or(client)
        .unify()
        .or(style)
        .unify()
        .or(admin)
        .unify()
        .or(admin_js)
        .unify()
        .boxed()
}

fn asset(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A new binary may bring a new page: always revalidate.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}
