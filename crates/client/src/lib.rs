//! A Rust client for Switchboard nodes, speaking the protocol of
//! `docs/protocol.md` with typed frames.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use switchboard_client::{Client, ConnectOptions, Event, Identity};
//! use switchboard_client::protocol::ServerFrame;
//!
//! # async fn demo() -> Result<(), switchboard_client::ClientError> {
//! // With authentication on: Identity::Token(token) instead. One session
//! // per device; alice's other devices stay online.
//! let options = ConnectOptions { device: Some("laptop".into()), ..Default::default() };
//! let mut alice =
//!     Client::connect_with("ws://127.0.0.1:8080", Identity::Name("alice".into()), &options).await?;
//! println!("alice is on node {}", alice.welcome().node);
//!
//! // The ack says which branch the node took (local, remote or offline)
//! // and how many of bob's sessions the message reached.
//! let ack = alice.send_for_ack("bob", &serde_json::json!({"text": "hi"}), true).await?;
//! println!("message {} routed {:?} to {:?} sessions", ack.msg_id, ack.status, ack.sessions);
//!
//! // Then everything that arrives, typed, until the session closes.
//! let mut events = alice.events();
//! while let Some(event) = events.next().await {
//!     match event? {
//!         Event::Frame(ServerFrame::Message(m)) if m.carbon => {
//!             println!("(sent from another device) {}", m.body)
//!         }
//!         Event::Frame(ServerFrame::Message(m)) => println!("{}: {}", m.from, m.body),
//!         Event::Frame(ServerFrame::Receipt { msg_id, status, device, .. }) => {
//!             println!("{msg_id} on {device:?}: {status:?}")
//!         }
//!         Event::Frame(_) => {}
//!         Event::Closed { code, reason } => println!("closed {code:?} {reason}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! It depends on nothing of the server: an application that only talks to
//! Switchboard compiles this crate and `switchboard-protocol`. The
//! server's tests, `switchboard chat` and the load generator all use it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use uuid::Uuid;

mod resuming;

pub use resuming::{CONFIRM_AFTER, CONFIRM_EVERY, Happening, ResumingClient};
pub use switchboard_protocol as protocol;
use switchboard_protocol::{
    AckFrame, ConversationsFrame, ErrorCode, HistoryFrame, PageRange, ServerFrame, Thread,
    WatchingFrame,
};

impl ClientError {
    /// v3: how long the node asked this client to wait before trying
    /// again (503 `busy` with `Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// v3: how long to wait before trying again after this error, when the
    /// node said (`Retry-After`): that long plus up to a second more at
    /// random, since `Retry-After` counts whole seconds and clients told
    /// the same second must not all come back at the same instant.
    pub fn retry_wait(&self) -> Option<Duration> {
        self.retry_after()
            .map(|after| after + Duration::from_secs(1).mul_f64(switchboard_protocol::jitter()))
    }
}

/// How a client proves who it is.
#[derive(Debug, Clone)]
pub enum Identity {
    /// `?client_id=`: only accepted by nodes with authentication off.
    Name(String),
    /// A JWT whose `sub` is the client id.
    Token(String),
}

/// The `welcome` frame: who the node says we are, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub client_id: String,
    /// This session's device (`default` when none was named).
    pub device: String,
    pub session_id: Uuid,
    pub node: String,
    /// Acks mode: what takes this session back after a drop.
    pub resume_token: Option<String>,
    /// When resuming: whether the node took the session back.
    pub resumed: Option<bool>,
    /// With an inbox: how many stored messages follow.
    pub inbox: Option<u64>,
}

/// How to open the connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Local address to connect from (for example one of 127.0.0.x, to
    /// spread many connections over several source addresses).
    pub local_addr: Option<IpAddr>,
    /// Initial size of the socket's read buffer.
    pub read_buffer_bytes: usize,
    /// TLS settings for `wss://` URLs. Default: trust the system's roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// This session's device (`?device=`); the node says `default` without.
    pub device: Option<String>,
    /// Acks mode (`?acks=1`): messages carry a `seq` to confirm.
    pub acks: bool,
    /// Take back a detached session: its resume token and the last `seq`
    /// received.
    pub resume: Option<(String, u64)>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            local_addr: None,
            read_buffer_bytes: 16 * 1024,
            tls: None,
            device: None,
            acks: false,
            resume: None,
        }
    }
}

/// A frame as it arrived, unparsed (for clients that parse only what they
/// need, like the load generator).
#[derive(Debug, Clone, PartialEq)]
pub enum RawEvent {
    Text(Utf8Bytes),
    Closed { code: Option<u16>, reason: String },
}

/// Something that arrived on the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Frame(ServerFrame),
    /// The server closed the session. `code` is absent when the connection
    /// dropped without a close frame.
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered the handshake with an HTTP error.
    #[error("node refused the connection: HTTP {status}: {body}")]
    Refused {
        status: u16,
        body: String,
        /// v3: the node's `Retry-After` (503 `busy`, over its connect
        /// rate): do not try again sooner.
        retry_after: Option<Duration>,
    },
    #[error("connection failed: {0}")]
    Connect(String),
    /// The node said something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("session closed (code {code:?}): {reason}")]
    Closed { code: Option<u16>, reason: String },
    /// The node refused a frame with an `error` frame.
    #[error("refused: {code}: {message}")]
    Rejected {
        code: ErrorCode,
        message: String,
        /// v3, `rejected`: the application's reason.
        reason: Option<String>,
    },
}

/// What a session runs over: a TCP (or TLS) connection, or any other byte
/// stream ([`Client::connect_over`]).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Stream = WebSocketStream<Box<dyn Io>>;

pub struct Client {
    ws: Stream,
    welcome: Welcome,
    /// Frames read while waiting for an ack, kept for `next_*` in order.
    held: VecDeque<RawEvent>,
    next_ack_id: u64,
}

/// The node's answer to a send: which branch it took, how many sessions
/// it reached, and (v2) the group counts or why the recipient is offline.
pub type Ack = AckFrame;

/// Whom a send is for.
#[derive(Debug, Clone, Copy)]
pub enum To<'a> {
    Client(&'a str),
    Group(&'a str),
}

#[derive(Serialize)]
struct SendFrame<'a, B: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    body: &'a B,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    receipt: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    store: bool,
}

/// The `id` a server frame answers, if it carries one.
fn frame_id(frame: &ServerFrame) -> Option<&str> {
    match frame {
        ServerFrame::Ack(ack) => ack.id.as_deref(),
        ServerFrame::Watching(watching) => watching.id.as_deref(),
        ServerFrame::History(page) => page.id.as_deref(),
        ServerFrame::Conversations(list) => list.id.as_deref(),
        ServerFrame::Ok { id } | ServerFrame::Pong { id } | ServerFrame::Error { id, .. } => {
            id.as_deref()
        }
        _ => None,
    }
}

/// Turns a node address (`ws://host:port`, with or without `/ws`), an
/// identity and the options into the URL of the WebSocket endpoint.
pub fn session_url(base: &str, identity: &Identity, options: &ConnectOptions) -> String {
    let base = base.trim_end_matches('/');
    let endpoint = if base.ends_with("/ws") {
        base.to_owned()
    } else {
        format!("{base}/ws")
    };
    let mut query: Vec<(&str, String)> = vec![match identity {
        Identity::Name(name) => ("client_id", name.clone()),
        Identity::Token(token) => ("token", token.clone()),
    }];
    if let Some(device) = &options.device {
        query.push(("device", device.clone()));
    }
    if options.acks {
        query.push(("acks", "1".into()));
    }
    if let Some((token, upto)) = &options.resume {
        query.push(("resume", token.clone()));
        query.push(("upto", upto.to_string()));
    }
    let query = serde_urlencoded::to_string(query).unwrap_or_default();
    format!("{endpoint}?{query}")
}

async fn open_tcp(
    host: &str,
    port: u16,
    local_addr: Option<IpAddr>,
) -> Result<TcpStream, ClientError> {
    let connect_error = |e: std::io::Error| ClientError::Connect(format!("{host}:{port}: {e}"));
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(connect_error)?;
    let addr: SocketAddr = addrs
        .next()
        .ok_or_else(|| ClientError::Connect(format!("{host}: no address")))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(connect_error)?;
    if let Some(ip) = local_addr {
        no_port_at_bind(&socket);
        socket.bind(SocketAddr::new(ip, 0)).map_err(connect_error)?;
    }
    let stream = socket.connect(addr).await.map_err(connect_error)?;
    // Chat frames are small: they must not wait for Nagle.
    stream.set_nodelay(true).map_err(connect_error)?;
    Ok(stream)
}

/// Leaves the choice of the local port to `connect` after a `bind` to an
/// address (Linux IP_BIND_ADDRESS_NO_PORT): a port picked at `bind` time
/// cannot take the destination into account nor reuse TIME_WAIT ports, and
/// with tens of thousands of recent connections that search is what makes
/// opening the next one slow.
fn no_port_at_bind(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a pointer to a local
        // int of the size passed. Failure only loses the optimisation.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

impl Client {
    /// Connects and waits for the `welcome` frame, which the node sends once
    /// this session is reachable by others.
    pub async fn connect(base: &str, identity: Identity) -> Result<Self, ClientError> {
        Self::connect_with(base, identity, &ConnectOptions::default()).await
    }

    /// [`connect`](Self::connect), with options.
    pub async fn connect_with(
        base: &str,
        identity: Identity,
        options: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let request = session_url(base, &identity, options)
            .into_client_request()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let secure = request.uri().scheme_str() == Some("wss");
        let host = request.uri().host().unwrap_or("127.0.0.1").to_owned();
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        let stream = open_tcp(&host, port, options.local_addr).await?;
        let stream: Box<dyn Io> = if secure {
            let tls = match &options.tls {
                Some(tls) => tls.clone(),
                None => tls_config(None).map_err(ClientError::Connect)?,
            };
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| ClientError::Connect(format!("{host}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, stream)
                .await
                .map_err(|e| ClientError::Connect(format!("{host}:{port}: TLS: {e}")))?;
            Box::new(tls)
        } else {
            Box::new(stream)
        };
        Self::handshake(request, stream, options).await
    }

    /// [`connect_with`](Self::connect_with) over a stream the caller
    /// opened (a test's in-memory pipe to a node, a tunnel): the URL only
    /// names the endpoint, its identity and options.
    pub async fn connect_over(
        io: impl Io + 'static,
        base: &str,
        identity: Identity,
        options: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let request = session_url(base, &identity, options)
            .into_client_request()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        Self::handshake(request, Box::new(io), options).await
    }

    /// The WebSocket handshake over `stream`, then the welcome.
    async fn handshake(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
        stream: Box<dyn Io>,
        options: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let config = WebSocketConfig::default().read_buffer_size(options.read_buffer_bytes);
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(response) => ClientError::Refused {
                    status: response.status().as_u16(),
                    retry_after: response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs),
                    body: response
                        .body()
                        .as_deref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default(),
                },
                other => ClientError::Connect(other.to_string()),
            })?;
        let mut client = Self {
            ws,
            welcome: Welcome {
                client_id: String::new(),
                device: String::new(),
                session_id: Uuid::nil(),
                node: String::new(),
                resume_token: None,
                resumed: None,
                inbox: None,
            },
            held: VecDeque::new(),
            next_ack_id: 0,
        };
        match client.next_event().await? {
            Event::Frame(ServerFrame::Welcome {
                client_id,
                device,
                session_id,
                node,
                resume_token,
                resumed,
                inbox,
            }) => {
                client.welcome = Welcome {
                    client_id,
                    device,
                    session_id,
                    node,
                    resume_token,
                    resumed,
                    inbox,
                };
                Ok(client)
            }
            Event::Frame(other) => Err(ClientError::Protocol(format!(
                "expected a welcome frame first, got {other:?}"
            ))),
            Event::Closed { code, reason } => Err(ClientError::Closed { code, reason }),
        }
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends `body` to client `to`. The node answers with exactly one `ack`
    /// (or `error`) per send, in order; `id` is echoed in it.
    pub async fn send<B: Serialize>(
        &mut self,
        to: &str,
        body: &B,
        id: Option<&str>,
        receipt: bool,
    ) -> Result<(), ClientError> {
        self.send_to(To::Client(to), body, id, receipt, false).await
    }

    /// Sends `body` to a client or a group; `store` keeps it in an offline
    /// recipient's inbox (when the node has one).
    pub async fn send_to<B: Serialize>(
        &mut self,
        to: To<'_>,
        body: &B,
        id: Option<&str>,
        receipt: bool,
        store: bool,
    ) -> Result<(), ClientError> {
        let (to, group) = match to {
            To::Client(client) => (Some(client), None),
            To::Group(group) => (None, Some(group)),
        };
        let frame = serde_json::to_string(&SendFrame {
            kind: "send",
            to,
            group,
            body,
            id,
            receipt,
            store,
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send_raw(frame).await
    }

    /// Sends `body` to `to` and waits for the node's answer: the [`Ack`],
    /// or [`ClientError::Rejected`] with the error frame's code. Frames that
    /// arrive meanwhile (messages, receipts) are kept for
    /// [`next_event`](Self::next_event), in order. With `receipt`, a
    /// `delivered` receipt follows when the recipient got it.
    pub async fn send_for_ack<B: Serialize>(
        &mut self,
        to: &str,
        body: &B,
        receipt: bool,
    ) -> Result<Ack, ClientError> {
        self.ask(To::Client(to), body, receipt, false).await
    }

    /// Sends `body` to every member of `group` and waits for the group ack
    /// (`fanout`, with its counts), or the error (`not_member`, say).
    pub async fn send_group<B: Serialize>(
        &mut self,
        group: &str,
        body: &B,
    ) -> Result<Ack, ClientError> {
        self.ask(To::Group(group), body, false, false).await
    }

    /// Sends and waits for the answer to that send, keeping what arrives
    /// meanwhile.
    pub async fn ask<B: Serialize>(
        &mut self,
        to: To<'_>,
        body: &B,
        receipt: bool,
        store: bool,
    ) -> Result<Ack, ClientError> {
        let id = self.next_id();
        self.send_to(to, body, Some(&id), receipt, store).await?;
        match self.answer(&id).await? {
            ServerFrame::Ack(ack) => Ok(ack),
            other => Err(ClientError::Protocol(format!(
                "expected an ack, got {other:?}"
            ))),
        }
    }

    /// A fresh frame id for a request whose answer is awaited.
    fn next_id(&mut self) -> String {
        self.next_ack_id += 1;
        format!("ack-{}", self.next_ack_id)
    }

    /// Waits for the answer to the frame sent with `id` (any frame carrying
    /// it), keeping what arrives meanwhile for [`next_event`](Self::next_event);
    /// an `error` frame is [`ClientError::Rejected`].
    async fn answer(&mut self, id: &str) -> Result<ServerFrame, ClientError> {
        loop {
            let raw = self.read_raw().await;
            let text = match &raw {
                RawEvent::Text(text) => text.clone(),
                RawEvent::Closed { code, reason } => {
                    let error = ClientError::Closed {
                        code: *code,
                        reason: reason.clone(),
                    };
                    self.held.push_back(raw);
                    return Err(error);
                }
            };
            match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Error {
                    id: Some(got),
                    code,
                    message,
                    reason,
                }) if got == id => {
                    return Err(ClientError::Rejected {
                        code,
                        message,
                        reason,
                    });
                }
                Ok(frame) if frame_id(&frame) == Some(id) => return Ok(frame),
                _ => self.held.push_back(raw),
            }
        }
    }

    /// v3: a page of a conversation (`thread`: the other client, or a
    /// group): `limit` messages, oldest first, before or after a `cseq` or
    /// the newest; `more` says whether others lie beyond.
    pub async fn history(
        &mut self,
        thread: &Thread,
        range: PageRange,
        limit: usize,
    ) -> Result<HistoryFrame, ClientError> {
        let id = self.next_id();
        let mut frame = serde_json::json!({"type": "history", "limit": limit, "id": id});
        match thread {
            Thread::With(client) => frame["with"] = client.as_str().into(),
            Thread::Group(group) => frame["group"] = group.as_str().into(),
        }
        match range {
            PageRange::Latest => {}
            PageRange::Before(n) => frame["before"] = n.into(),
            PageRange::After(n) => frame["after"] = n.into(),
        }
        self.send_raw(frame.to_string()).await?;
        match self.answer(&id).await? {
            ServerFrame::History(page) => Ok(page),
            other => Err(ClientError::Protocol(format!(
                "expected history, got {other:?}"
            ))),
        }
    }

    /// v3: this client's conversations, most recent first (`before`: only
    /// those whose last message is older, in ms).
    pub async fn conversations(
        &mut self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<ConversationsFrame, ClientError> {
        let id = self.next_id();
        let mut frame = serde_json::json!({"type": "conversations", "limit": limit, "id": id});
        if let Some(before) = before {
            frame["before"] = before.into();
        }
        self.send_raw(frame.to_string()).await?;
        match self.answer(&id).await? {
            ServerFrame::Conversations(list) => Ok(list),
            other => Err(ClientError::Protocol(format!(
                "expected conversations, got {other:?}"
            ))),
        }
    }

    /// v3: this client has read `thread` up to `upto` (its `cseq`).
    pub async fn mark_read(&mut self, thread: &Thread, upto: u64) -> Result<(), ClientError> {
        let id = self.next_id();
        let mut frame = serde_json::json!({"type": "read", "upto": upto, "id": id});
        match thread {
            Thread::With(client) => frame["with"] = client.as_str().into(),
            Thread::Group(group) => frame["group"] = group.as_str().into(),
        }
        self.send_raw(frame.to_string()).await?;
        self.answer(&id).await.map(drop)
    }

    /// v3: watches `clients`' presence. Returns who is watched and who is
    /// denied; the current state of each watched one follows as
    /// `presence` frames (events), then every change.
    pub async fn watch(&mut self, clients: &[&str]) -> Result<WatchingFrame, ClientError> {
        let id = self.next_id();
        let frame = serde_json::json!({"type": "watch", "clients": clients, "id": id});
        self.send_raw(frame.to_string()).await?;
        match self.answer(&id).await? {
            ServerFrame::Watching(watching) => Ok(watching),
            other => Err(ClientError::Protocol(format!(
                "expected watching, got {other:?}"
            ))),
        }
    }

    /// v3: stops watching `clients`.
    pub async fn unwatch(&mut self, clients: &[&str]) -> Result<(), ClientError> {
        let id = self.next_id();
        let frame = serde_json::json!({"type": "unwatch", "clients": clients, "id": id});
        self.send_raw(frame.to_string()).await?;
        self.answer(&id).await.map(drop)
    }

    /// v3: invisible (`false`: watchers see this client offline) or
    /// visible again.
    pub async fn set_visible(&mut self, visible: bool) -> Result<(), ClientError> {
        let id = self.next_id();
        let frame = serde_json::json!({"type": "visibility", "visible": visible, "id": id});
        self.send_raw(frame.to_string()).await?;
        self.answer(&id).await.map(drop)
    }

    /// v3: sends an ephemeral signal ("typing…"). Nothing answers it; a
    /// signal may be dropped (rate, a full recipient).
    pub async fn signal<B: Serialize>(&mut self, to: To<'_>, body: &B) -> Result<(), ClientError> {
        let (key, value) = match to {
            To::Client(client) => ("to", client),
            To::Group(group) => ("group", group),
        };
        let frame = serde_json::json!({"type": "signal", key: value, "body": body});
        self.send_raw(frame.to_string()).await
    }

    /// Everything that arrives, as a stream that ends after the close.
    pub fn events(&mut self) -> BoxStream<'_, Result<Event, ClientError>> {
        futures_util::stream::unfold((self, false), |(client, done)| async move {
            if done {
                return None;
            }
            let event = client.next_event().await;
            let last = !matches!(event, Ok(Event::Frame(_)));
            Some((event, (client, last)))
        })
        .boxed()
    }

    /// Sends a `ping` frame; the node answers with a `pong`.
    pub async fn ping(&mut self, id: Option<&str>) -> Result<(), ClientError> {
        let frame = match id {
            Some(id) => serde_json::json!({"type": "ping", "id": id}),
            None => serde_json::json!({"type": "ping"}),
        };
        self.send_raw(frame.to_string()).await
    }

    /// Sends any text frame as is.
    pub async fn send_raw(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        self.ws
            .send(WsMessage::Text(text.into().into()))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))
    }

    /// Acks mode: confirms every message up to `seq` `upto` (the node
    /// answers nothing; `delivered` receipts go to the senders).
    pub async fn confirm(&mut self, upto: u64) -> Result<(), ClientError> {
        self.send_raw(format!(r#"{{"type":"received","upto":{upto}}}"#))
            .await
    }

    /// Queues a text frame without flushing; [`flush`](Self::flush) sends
    /// everything queued in as few writes as possible.
    pub async fn feed_raw(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), ClientError> {
        self.ws
            .feed(WsMessage::Text(text.into()))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.ws
            .flush()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))
    }

    /// The next text frame, unparsed, or the close.
    pub async fn next_raw(&mut self) -> RawEvent {
        match self.held.pop_front() {
            Some(held) => held,
            None => self.read_raw().await,
        }
    }

    /// The next text frame or close from the socket itself.
    async fn read_raw(&mut self) -> RawEvent {
        loop {
            match self.ws.next().await {
                Some(Ok(WsMessage::Text(text))) => return RawEvent::Text(text),
                Some(Ok(WsMessage::Close(frame))) => {
                    return RawEvent::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return RawEvent::Closed {
                        code: None,
                        reason: e.to_string(),
                    };
                }
                None => {
                    return RawEvent::Closed {
                        code: None,
                        reason: String::new(),
                    };
                }
            }
        }
    }

    /// Sends a raw WebSocket message (binary frames, close frames).
    pub async fn send_message(&mut self, message: WsMessage) -> Result<(), ClientError> {
        self.ws
            .send(message)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))
    }

    /// The next frame or close.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        match self.next_raw().await {
            RawEvent::Text(text) => serde_json::from_str(&text)
                .map(Event::Frame)
                .map_err(|e| ClientError::Protocol(format!("unreadable frame {text:?}: {e}"))),
            RawEvent::Closed { code, reason } => Ok(Event::Closed { code, reason }),
        }
    }

    /// The next frame; `None` once the session is closed.
    pub async fn next_frame(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        match self.next_event().await? {
            Event::Frame(frame) => Ok(Some(frame)),
            Event::Closed { .. } => Ok(None),
        }
    }

    /// Closes the session normally.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws
            .close(None)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        // Wait for the server's side of the closing handshake.
        while let Some(Ok(_)) = self.ws.next().await {}
        Ok(())
    }
}

/// A TLS client configuration for `wss://` URLs: trusts the system's
/// roots, or only the CA in `ca_file` when one is given (a private CA, a
/// test's self-signed one). On ring, like the server.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read CA certificates from {}: {e}", path.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_url_appends_the_endpoint_and_encodes_the_identity() {
        let none = ConnectOptions::default();
        assert_eq!(
            session_url("ws://h:1", &Identity::Name("a@b:c".into()), &none),
            "ws://h:1/ws?client_id=a%40b%3Ac"
        );
        assert_eq!(
            session_url("ws://h:1/ws", &Identity::Token("t.k".into()), &none),
            "ws://h:1/ws?token=t.k"
        );
        let v2 = ConnectOptions {
            device: Some("phone".into()),
            acks: true,
            resume: Some(("tok".into(), 7)),
            ..ConnectOptions::default()
        };
        assert_eq!(
            session_url("ws://h:1/", &Identity::Name("a".into()), &v2),
            "ws://h:1/ws?client_id=a&device=phone&acks=1&resume=tok&upto=7"
        );
    }
}
