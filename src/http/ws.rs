//! `GET /ws`: check the handshake, the page's origin, the client's token
//! and the node's capacity, then upgrade to a WebSocket session.
//!
//! The handshake is done here rather than with `warp::ws()` because warp
//! builds every socket with tungstenite's default 128 KiB read buffer and
//! offers no way to change it. Taking hyper's `OnUpgrade` ourselves lets
//! the session start with a 512-byte read buffer
//! ([`session::READ_BUFFER_BYTES`]) instead: the difference between
//! ~130 KiB and a few KiB per idle session.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::Refusal;
use crate::auth::AuthError;
use crate::hooks::ConnectCall;
use crate::hub::SessionHandle;
use crate::metrics::UpgradeRefusal;
use crate::node::Node;
use crate::protocol::{ClientId, DeviceId};
use crate::redact;
use crate::routing::{Admission, RegisterError};
use crate::session;

pub fn route(node: Arc<Node>) -> BoxedFilter<(Response,)> {
    warp::path!("ws")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::ext::optional::<OnUpgrade>())
        // The connection's peer, put there by `server::serve_connection`.
        .and(warp::ext::optional::<SocketAddr>())
        .then(
            move |headers: HeaderMap, query: String, on_upgrade, peer: Option<SocketAddr>| {
                let node = node.clone();
                async move { upgrade(&node, &headers, &query, on_upgrade, peer).await }
            },
        )
        .boxed()
}

async fn upgrade(
    node: &Arc<Node>,
    headers: &HeaderMap,
    query: &str,
    on_upgrade: Option<OnUpgrade>,
    peer: Option<SocketAddr>,
) -> Response {
    match admit(node, headers, query, on_upgrade, peer).await {
        Ok(response) => response,
        Err(Refused { why, refusal }) => {
            node.metrics().upgrade_refused(why);
            // The query may carry a token: only its redacted form is logged.
            tracing::debug!(status = refusal.status.as_u16(), reason = ?why,
                query = %redact::query(query), "WebSocket upgrade refused");
            refusal.response()
        }
    }
}

/// An upgrade refused: what the client is told, and how it is counted.
struct Refused {
    why: UpgradeRefusal,
    refusal: Refusal,
}

impl Refused {
    fn new(
        why: UpgradeRefusal,
        status: StatusCode,
        code: impl Into<std::borrow::Cow<'static, str>>,
        message: &str,
    ) -> Self {
        Self {
            why,
            refusal: Refusal::new(status, code, message),
        }
    }

    fn bad_request(code: &'static str, message: &str) -> Self {
        Self::new(
            UpgradeRefusal::BadRequest,
            StatusCode::BAD_REQUEST,
            code,
            message,
        )
    }

    fn unavailable(code: &'static str, message: &str) -> Self {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        Self::new(UpgradeRefusal::Unavailable, status, code, message)
    }
}

impl From<AuthError> for Refused {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(why) => Self::new(
                UpgradeRefusal::Unauthorized,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &why,
            ),
            AuthError::BadClientId(why) => Self::bad_request("invalid_client_id", &why),
            AuthError::BadDeviceId(why) => Self::bad_request("invalid_device_id", &why),
        }
    }
}

impl From<RegisterError> for Refused {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::TooManyDevices { .. } => Self::new(
                UpgradeRefusal::TooManyDevices,
                StatusCode::CONFLICT,
                "too_many_devices",
                &e.to_string(),
            ),
            RegisterError::Presence(_) => Self::unavailable(
                "unavailable",
                "this node could not write the session's presence; retry shortly or connect to another",
            ),
        }
    }
}

/// Runs the checks in order of cost (the handshake, the page's origin, a
/// token's signature, the node's state and capacity, then the
/// registration itself, which writes the device's field), starts the
/// session, and answers 101.
async fn admit(
    node: &Arc<Node>,
    headers: &HeaderMap,
    query: &str,
    on_upgrade: Option<OnUpgrade>,
    peer: Option<SocketAddr>,
) -> Result<Response, Refused> {
    let key = handshake_key(headers)?;
    check_origin(node, headers)?;
    let (client, device, wants, claims) = identify(node, headers, query)?;
    check_serving(node)?;
    check_connect_rate(node)?;
    ask_the_application(node, &client, &device, peer, claims.as_ref()).await?;
    let on_upgrade = on_upgrade.ok_or_else(|| {
        Refused::bad_request(
            "bad_handshake",
            "this connection cannot be upgraded (WebSocket needs HTTP/1.1)",
        )
    })?;
    let slot = take_slot(node)?;
    let (handle, start) = Box::pin(open_or_resume(node, client, device, wants)).await?;
    let config = session::socket_config(node.config().limits.max_frame_bytes);
    let env = node.session_env().clone();
    node.tasks().spawn(async move {
        // Held until the session ends, however it ends (a detached session
        // keeps it: see `session::run`).
        match on_upgrade.await {
            Ok(upgraded) => {
                // Boxed, as the session below: this task's cell is sized by
                // its largest step, and it lives as long as the session.
                let ws = Box::pin(WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                ))
                .await;
                let ws = Box::new(ws);
                // Boxed: the task itself then stays small, and the session's
                // state is one allocation of its own size.
                Box::pin(session::run(env, ws, handle, start, slot)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                Box::pin(session::abandon(env, handle)).await;
                drop(slot);
            }
        }
    });
    Ok(switching_protocols(&key))
}

/// A page may open sessions only from an allowed origin.
fn check_origin(node: &Node, headers: &HeaderMap) -> Result<(), Refused> {
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or(""));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if node.config().allowed_origins.allows(origin, host) {
        return Ok(());
    }
    Err(Refused::new(
        UpgradeRefusal::Origin,
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "pages from this origin may not open sessions here (see --allowed-origins)",
    ))
}

/// The node takes sessions: it is not shutting down, and it can write
/// presence (a session is only reachable once its record is written).
fn check_serving(node: &Node) -> Result<(), Refused> {
    if node.is_shutting_down() {
        return Err(Refused::unavailable(
            "shutting_down",
            "this node is shutting down; connect to another",
        ));
    }
    if !node.health().presence_reachable() {
        return Err(Refused::unavailable(
            "unavailable",
            "this node cannot reach its presence store; retry shortly or connect to another",
        ));
    }
    Ok(())
}

/// Under `--max-connect-rate` (v3): beyond it, 503 `busy` with a jittered
/// `Retry-After`, before anything costly (the connect hook, the
/// registration) is done for the connection. A resume counts too: in a
/// storm, resumes are the storm.
fn check_connect_rate(node: &Node) -> Result<(), Refused> {
    let Err(seconds) = node.connects().admit(crate::protocol::jitter()) else {
        return Ok(());
    };
    let message = format!(
        "this node admits at most {} new sessions a second; retry after {seconds} s",
        node.config().limits.max_connect_rate
    );
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let mut refused = Refused::new(UpgradeRefusal::Busy, status, "busy", &message);
    refused.refusal = refused
        .refusal
        .with_header(header::RETRY_AFTER, HeaderValue::from(seconds));
    Err(refused)
}

/// A place under `--max-sessions`.
fn take_slot(node: &Node) -> Result<crate::hub::Slot, Refused> {
    node.slots().take().ok_or_else(|| {
        let message = format!(
            "this node holds its maximum of {} sessions; connect to another",
            node.slots().max()
        );
        let status = StatusCode::SERVICE_UNAVAILABLE;
        Refused::new(UpgradeRefusal::Capacity, status, "at_capacity", &message)
    })
}

/// A resume takes a detached session back (its presence field is still
/// there); anything else registers a new one, before the upgrade is
/// answered, so that a client over --max-devices hears 409, and one the
/// store cannot take hears 503.
async fn open_or_resume(
    node: &Node,
    client: ClientId,
    device: DeviceId,
    wants: Wants,
) -> Result<(Arc<SessionHandle>, session::Start), Refused> {
    let env = node.session_env();
    let resumed = match (&wants.resume, &env.resume) {
        (Some(token), Some(resume)) if wants.acks => {
            match resume.keys.verify(token, &client, &device) {
                Ok(session) => Box::pin(session::take_back(env, &client, &device, session))
                    .await
                    .map_err(|e| {
                        // Not a fresh session: that would forfeit what is
                        // kept for this one. The client comes back shortly.
                        let mut refused = Refused::unavailable(
                            "unavailable",
                            "this node could not take the session to resume over just now \
                             (its presence store or the session's node did not answer); retry here shortly",
                        );
                        tracing::debug!(%client, error = %e, "resume deferred");
                        refused.refusal = refused
                            .refusal
                            .with_header(header::RETRY_AFTER, HeaderValue::from(1u64));
                        refused
                    })?,
                Err(e) => {
                    tracing::debug!(%client, error = %e, "resume refused");
                    None
                }
            }
        }
        _ => None,
    };
    if wants.resume.is_some() && resumed.is_none() {
        node.metrics().resume_rejected();
    }
    Ok(match resumed {
        Some(handle) => (handle, session::Start::Resumed { upto: wants.upto }),
        None => {
            let start = session::Start::Fresh {
                resume_refused: wants.resume.is_some(),
            };
            let opened = Box::pin(session::open(env, client, device, wants.acks)).await?;
            (opened, start)
        }
    })
}

/// The 101 that completes the handshake.
fn switching_protocols(key: &str) -> Response {
    let mut response = Response::default();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header value"),
    );
    response
}

/// Checks the RFC 6455 handshake headers and returns the client's key.
fn handshake_key(headers: &HeaderMap) -> Result<String, Refused> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(Refused::bad_request(
            "bad_handshake",
            "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        // RFC 6455 4.4: 426, naming the version this server speaks.
        let mut refused = Refused::new(
            UpgradeRefusal::BadRequest,
            StatusCode::UPGRADE_REQUIRED,
            "bad_handshake",
            "only WebSocket version 13 is supported",
        );
        let version = HeaderValue::from_static("13");
        refused.refusal = refused
            .refusal
            .with_header(header::SEC_WEBSOCKET_VERSION, version);
        return Err(refused);
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Refused::bad_request("bad_handshake", "missing Sec-WebSocket-Key"))
}

#[derive(Deserialize, Default)]
struct ConnectQuery {
    token: Option<String>,
    client_id: Option<String>,
    device: Option<String>,
    /// v2: `acks=1` asks for acks mode.
    acks: Option<String>,
    /// v2: a resume token, and the last `seq` the client has.
    resume: Option<String>,
    upto: Option<u64>,
}

/// The connect hook (v3), when on: the application's backend decides.
async fn ask_the_application(
    node: &Node,
    client: &ClientId,
    device: &DeviceId,
    remote_addr: Option<SocketAddr>,
    claims: Option<&serde_json::Value>,
) -> Result<(), Refused> {
    let Some(gate) = node.gate().filter(|g| g.connects()) else {
        return Ok(());
    };
    let call = ConnectCall {
        hook: "connect",
        client_id: client,
        device,
        node: node.id(),
        remote_addr,
        claims,
    };
    match gate.admit(&call).await {
        Admission::Allow => Ok(()),
        Admission::Refuse {
            status,
            error,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            Err(Refused::new(UpgradeRefusal::Hook, status, error, &message))
        }
        Admission::Unavailable(why) => Err(Refused::unavailable("hook_unavailable", &why)),
    }
}

/// What a connecting client asks for beyond its identity (v2).
struct Wants {
    acks: bool,
    resume: Option<String>,
    upto: u64,
}

/// Works out which client is connecting, per the node's auth mode, and on
/// which device (the client's own label; `default` when it names none).
fn identify(
    node: &Node,
    headers: &HeaderMap,
    query: &str,
) -> Result<(ClientId, DeviceId, Wants, Option<serde_json::Value>), AuthError> {
    let query: ConnectQuery = serde_urlencoded::from_str(query)
        .map_err(|e| AuthError::BadClientId(format!("unreadable query string: {e}")))?;
    let device = match query.device.as_deref() {
        None => DeviceId::default_device(),
        Some(device) => {
            DeviceId::parse(device).map_err(|e| AuthError::BadDeviceId(e.to_string()))?
        }
    };
    let (client, claims) = match &node.auth() {
        Some(verifier) => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let token = query.token.as_deref().or(bearer).ok_or_else(|| {
                AuthError::Unauthorized(
                    "missing token: present a JWT as ?token= or Authorization: Bearer".into(),
                )
            })?;
            verifier
                .verify_claims(token)
                .map(|(client, claims)| (client, Some(claims)))
        }
        None => {
            let id = query.client_id.ok_or_else(|| {
                AuthError::BadClientId(
                    "authentication is off on this node: name yourself with ?client_id=".into(),
                )
            })?;
            ClientId::parse(&id)
                .map(|client| (client, None))
                .map_err(|e| AuthError::BadClientId(e.to_string()))
        }
    }?;
    let wants = Wants {
        acks: matches!(query.acks.as_deref(), Some("1" | "true")),
        resume: query.resume.filter(|t| !t.is_empty()),
        upto: query.upto.unwrap_or(0),
    };
    Ok((client, device, wants, claims))
}
