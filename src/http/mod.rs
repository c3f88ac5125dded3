//! The HTTP surface of a node (docs/protocol.md, "HTTP"): health, metrics,
//! the WebSocket endpoint, the API and the chat page. Every error answer is JSON of the
//! form `{"error": <code>, "message": <what to fix>}`.

mod api;
mod page;
mod ws;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderName, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use crate::node::Node;

/// How long `/readyz` waits for each backend.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes(node: Arc<Node>) -> BoxedFilter<(Response,)> {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_response(StatusCode::OK, &json!({"status": "ok"})));

    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with(node.clone()))
        .then(readyz);

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with(node.clone()))
        .map(|node: Arc<Node>| {
            warp::reply::with_header(
                node.metrics().render(),
                "content-type",
                "text/plain; version=0.0.4",
            )
            .into_response()
        });

    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(ws::route(node.clone()))
        .unify()
        .or(page::routes(node.id(), node.auth().is_some()))
        .unify()
        .or(api::routes(node))
        .unify()
        .recover(rejection_response)
        .unify()
        .boxed()
}

fn with(node: Arc<Node>) -> impl Filter<Extract = (Arc<Node>,), Error = Infallible> + Clone {
    warp::any().map(move || node.clone())
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, &json!({"error": code, "message": message}))
}

async fn readyz(node: Arc<Node>) -> Response {
    if node.is_shutting_down() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "reason": "node is shutting down"}),
        );
    }
    let (presence, bus) = tokio::join!(
        tokio::time::timeout(READY_TIMEOUT, node.presence().ping()),
        tokio::time::timeout(READY_TIMEOUT, node.bus().ping()),
    );
    let mut reasons = Vec::new();
    if !node.health().receiving() {
        reasons.push("this node's bus inbox closed; it cannot receive hops".to_owned());
    }
    match presence {
        Ok(Ok(())) => {}
        Ok(Err(e)) => reasons.push(format!("{}: {e}", node.presence().backend())),
        Err(_) => reasons.push(format!("{}: no answer", node.presence().backend())),
    }
    match bus {
        Ok(Ok(())) => {}
        Ok(Err(e)) => reasons.push(format!("{}: {e}", node.bus().backend())),
        Err(_) => reasons.push(format!("{}: no answer", node.bus().backend())),
    }
    if let Some(inbox) = node.inbox() {
        match tokio::time::timeout(READY_TIMEOUT, inbox.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => reasons.push(format!("inbox ({}): {e}", inbox.backend())),
            Err(_) => reasons.push(format!("inbox ({}): no answer", inbox.backend())),
        }
    }
    if let Some(history) = node.history() {
        let store = history.store();
        match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => reasons.push(format!("history ({}): {e}", store.backend())),
            Err(_) => reasons.push(format!("history ({}): no answer", store.backend())),
        }
    }
    if reasons.is_empty() {
        json_response(
            StatusCode::OK,
            &json!({
                "status": "ready",
                "node": node.id(),
                "presence": node.presence().backend(),
                "bus": node.bus().backend(),
            }),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "reason": reasons.join("; ")}),
        )
    }
}

/// A refusal: the status and the JSON body `{"error": <code>, "message":
/// <what to fix>}` a request is answered with. Raised inside filters as a
/// warp rejection ([`refuse`]), or returned by the WebSocket upgrade's
/// checks.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    /// The error code (v3: a connect hook's own, so not always static).
    pub code: std::borrow::Cow<'static, str>,
    pub message: String,
    /// Headers the remedy needs (`Retry-After`, `Sec-WebSocket-Version`).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Refusal {
    pub fn new(
        status: StatusCode,
        code: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// The same refusal, answered with `name: value` as well.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The answer: the status, the JSON body, the headers.
    pub fn response(&self) -> Response {
        let mut response = error_response(self.status, &self.code, &self.message);
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }

    /// Raised inside a filter.
    pub fn rejection(self) -> warp::Rejection {
        warp::reject::custom(self)
    }
}

impl warp::reject::Reject for Refusal {}

pub(crate) fn refuse(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> warp::Rejection {
    Refusal::new(status, code, message).rejection()
}

/// Turns warp's rejections into JSON answers.
async fn rejection_response(rejection: warp::Rejection) -> Result<Response, Infallible> {
    use warp::reject::{LengthRequired, MethodNotAllowed, PayloadTooLarge};
    let response = if let Some(refusal) = rejection.find::<Refusal>() {
        refusal.response()
    } else if rejection.is_not_found() {
        error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body exceeds --max-frame-bytes",
        )
    } else if rejection.find::<LengthRequired>().is_some() {
        error_response(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send a Content-Length header",
        )
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )
    } else {
        error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("{rejection:?}"),
        )
    };
    Ok(response)
}
