//! One WebSocket session, from welcome to close.
//!
//! Each session is one task that owns its socket and does three things in
//! one `select!` loop:
//!
//! 1. writes what other tasks queued in its [`Outbox`] (messages for this
//!    client, receipts), and reports each message's outcome to its sender;
//! 2. answers the client's frames, one answer per frame, in reading order;
//! 3. reads the next client frame, while fewer than [`MAX_IN_FLIGHT`] are
//!    unanswered.
//!
//! Sends are pipelined: the presence lookups of up to [`MAX_IN_FLIGHT`]
//! sends run concurrently, but [`Router::dispatch`] and the acks happen
//! strictly in reading order, which is what keeps messages from one session
//! to one recipient in order.
//!
//! Every socket write is bounded by the configured write timeout: a client
//! that stops reading is closed as a slow consumer (4008) instead of
//! stalling its session forever. The loop also pings the client, closes it
//! when it has gone silent (1008), and closes it when it keeps sending
//! faster than its rate limit (1008).

mod outbox;
mod registry;
mod slots;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use uuid::Uuid;

use crate::metrics::PolicyClose;
use crate::node::Node;
use crate::presence::{PresenceError, PresenceRecord};
use crate::protocol::frames::{encode_ack, encode_error, encode_pong, encode_welcome};
use crate::protocol::{
    ClientFrame, ClientId, ErrorCode, FrameError, ReceiptStatus, close, now_ms, parse_client_frame,
};
use crate::rate::{Limiter, Verdict};
use crate::router::{Message, Origin, Route, RouteError, Router};

pub use self::outbox::{Batch, Outbound, Outbox, QueueLimits, Refused};
pub use self::registry::{SessionHandle, SessionRegistry};
pub use self::slots::{Slot, Slots};

/// The socket type of a session: a WebSocket over hyper's upgraded
/// connection.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Client frames read but not yet answered, per session. When reached, the
/// session stops reading until the oldest is answered (TCP backpressure).
pub const MAX_IN_FLIGHT: usize = 64;

/// Initial size of a session's read buffer. tungstenite's default is
/// 128 KiB per connection, which would dominate the cost of an idle
/// session; frames larger than this are still read whole (the buffer grows
/// for them).
pub const READ_BUFFER_BYTES: usize = 512;

/// Outgoing bytes gathered before tungstenite writes to the socket.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Frames larger than `max_frame_bytes` get a `too_large` error; frames
/// larger than this multiple of it close the session with 1009, since
/// reading them at all is already abuse.
pub const HARD_LIMIT_FACTOR: usize = 4;

/// The tungstenite settings for a session's socket.
pub fn socket_config(max_frame_bytes: usize) -> WebSocketConfig {
    let hard_limit = max_frame_bytes.saturating_mul(HARD_LIMIT_FACTOR);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(hard_limit))
        .max_frame_size(Some(hard_limit))
}

/// What the session owes the client for one frame it read.
// Replies live inside the pending futures, which are boxed anyway.
#[allow(clippy::large_enum_variant)]
enum Reply {
    /// A pong or an error, ready to write.
    Ready(String),
    /// A send whose route has been looked up.
    Routed {
        msg: Message,
        route: Result<Route, RouteError>,
        read_at: Instant,
    },
}

type Pending<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// How the main loop ended.
enum Ending {
    /// Close with this code; the socket is still writable.
    Close(u16, &'static str),
    /// The client closed the session; its close frame was echoed.
    ClosedByClient,
    /// The connection dropped without a close frame.
    Gone,
    /// The client stopped reading; close with 4008 without waiting for it.
    SlowConsumer,
    /// The session could not be registered and was never welcomed.
    Refused,
}

/// Runs a session for `client` on an upgraded socket, to the end.
pub async fn run(node: Arc<Node>, mut ws: Socket, client: ClientId) {
    let handle = Arc::new(SessionHandle {
        id: Uuid::new_v4(),
        client: client.clone(),
        since: now_ms(),
        outbox: Outbox::new(QueueLimits {
            frames: node.config.limits.session_queue,
            bytes: node.config.limits.session_queue_bytes,
        }),
    });

    // The rare, large steps (registration, welcome, clean-up) are boxed so
    // that they do not size the task an idle session keeps in memory.
    if let Err(e) = Box::pin(open(&node, &handle)).await {
        tracing::warn!(%client, error = %e, "session refused: presence not written");
        node.presence_ok
            .store(false, std::sync::atomic::Ordering::Relaxed);
        node.metrics.error(ErrorCode::Unavailable);
        // It was findable here from the moment it was registered locally:
        // what others queued for it meanwhile is answered, not dropped.
        Box::pin(finish(&node, &handle, ws, Ending::Refused)).await;
        return;
    }
    node.metrics.session_opened();
    tracing::debug!(%client, session = %handle.id, "session open");

    let welcome = encode_welcome(&client, handle.id, &node.id);
    let welcomed = Box::pin(write(&mut ws, [welcome], node.config.limits.write_timeout)).await;
    let ending = match welcomed {
        // Boxed as well: rustc lays an awaited future out next to a copy of
        // it, so an inline `serve` would make this future twice its size.
        Ok(()) => Box::pin(Session::new(&node, &handle, &mut ws).serve()).await,
        Err(()) => Ending::Gone,
    };
    Box::pin(finish(&node, &handle, ws, ending)).await;
    node.metrics.session_closed();
    tracing::debug!(%client, session = %handle.id, "session closed");
}

/// Makes the session reachable: registered locally, then in presence. The
/// local entry comes first so that once the record names this node, the
/// session is already here to receive.
async fn open(node: &Node, handle: &Arc<SessionHandle>) -> Result<(), PresenceError> {
    let _registering = node.sessions.registration(&handle.client).lock().await;
    if let Some(older) = node.sessions.insert(handle.clone()) {
        older.outbox.close(close::REPLACED);
    }
    // A session that slipped in while the node began shutting down is not
    // in the list the shutdown closes: close it here.
    if node.shutdown.is_cancelled() {
        handle.outbox.close(close::GOING_AWAY);
    }
    let record = PresenceRecord {
        node: node.id.clone(),
        session: handle.id,
        since: handle.since,
    };
    if let Some(previous) = node.presence.register(&handle.client, &record).await?
        && previous.session != handle.id
    {
        node.router.evict(&handle.client, &previous).await;
    }
    Ok(())
}

/// The state of the main loop.
struct Session<'a> {
    node: &'a Node,
    router: &'a Router,
    handle: &'a SessionHandle,
    ws: &'a mut Socket,
    /// Frames read whose answer waits on a lookup (and any read after
    /// them, so that answers keep reading order).
    pending: FuturesOrdered<Pending<'a>>,
    /// Answers ready to write, in reading order.
    answers: Vec<Utf8Bytes>,
    limiter: Limiter,
    /// When the client last sent anything, a pong included.
    last_heard: Instant,
    /// When the next keepalive ping is due.
    next_ping: Instant,
}

impl<'a> Session<'a> {
    fn new(node: &'a Node, handle: &'a SessionHandle, ws: &'a mut Socket) -> Self {
        let limits = &node.config.limits;
        Self {
            node,
            router: &node.router,
            handle,
            ws,
            pending: FuturesOrdered::new(),
            answers: Vec::new(),
            limiter: Limiter::new(limits.rate_limit, limits.rate_burst, limits.rate_abuse),
            last_heard: Instant::now(),
            next_ping: Instant::now() + limits.ping_interval,
        }
    }

    /// Each turn waits for one event, gathers everything else that is
    /// ready (answers whose lookups finished, frames queued by others),
    /// and writes it all with a single flush: one system call for an ack
    /// and the messages that arrived meanwhile, rather than one each.
    async fn serve(mut self) -> Ending {
        let write_timeout = self.node.config.limits.write_timeout;
        // One timer per session serves both the pings and the idle check.
        let keepalive = tokio::time::sleep_until(self.next_ping.into());
        tokio::pin!(keepalive);
        loop {
            tokio::select! {
                // Close requests and queued frames first: a session being
                // replaced or shut down should not keep reading.
                biased;

                () = self.handle.outbox.ready() => {}

                Some(reply) = self.pending.next(), if !self.pending.is_empty() => {
                    let frame = Box::pin(answer(self.node, reply)).await;
                    self.answers.push(frame.into());
                }

                incoming = self.ws.next(), if self.pending.len() < MAX_IN_FLIGHT => {
                    if let Some(ending) = self.receive(incoming).await {
                        return ending;
                    }
                }

                () = &mut keepalive => {
                    match self.keepalive().await {
                        Ok(deadline) => keepalive.as_mut().reset(deadline.into()),
                        Err(ending) => return ending,
                    }
                }
            }

            while let Some(Some(reply)) = self.pending.next().now_or_never() {
                let frame = Box::pin(answer(self.node, reply)).await;
                self.answers.push(frame.into());
            }
            let batch = self.handle.outbox.take();
            let close = batch.close;
            if close == Some(close::SLOW_CONSUMER) {
                answer_all(self.router, batch.messages, ReceiptStatus::Offline).await;
                return Ending::SlowConsumer;
            }
            let answers = std::mem::take(&mut self.answers);
            let written = Box::pin(write_outbound(
                self.ws,
                self.router,
                answers,
                batch,
                write_timeout,
            ))
            .await;
            if written.is_err() {
                return Ending::SlowConsumer;
            }
            if let Some(code) = close {
                return Box::pin(self.drain_and_close(code, close_reason(code))).await;
            }
        }
    }

    /// The keepalive timer fired: close a session that has gone silent,
    /// ping one that is due. Returns when the timer should fire next.
    async fn keepalive(&mut self) -> Result<Instant, Ending> {
        let limits = &self.node.config.limits;
        let now = Instant::now();
        let silent_until = self.last_heard + limits.idle_timeout;
        if now >= silent_until {
            tracing::debug!(client = %self.handle.client, "no answer to pings; closing");
            self.node.metrics.policy_closed(PolicyClose::Idle);
            return Err(
                Box::pin(self.drain_and_close(close::POLICY, "idle: no answer to pings")).await,
            );
        }
        if now >= self.next_ping {
            let ping = async {
                self.ws.feed(WsMessage::Ping(Default::default())).await?;
                self.ws.flush().await
            };
            if !matches!(
                tokio::time::timeout(limits.write_timeout, ping).await,
                Ok(Ok(()))
            ) {
                return Err(Ending::SlowConsumer);
            }
            self.next_ping = now + limits.ping_interval;
        }
        Ok(self.next_ping.min(silent_until))
    }

    /// Handles what the socket produced; `Some` when the session ends.
    async fn receive(&mut self, incoming: Option<Result<WsMessage, WsError>>) -> Option<Ending> {
        let now = Instant::now();
        if let Some(Ok(_)) = &incoming {
            self.last_heard = now;
        }
        // Every data frame and every ping the client sends costs the node
        // work, so each one counts against its rate.
        let verdict = match &incoming {
            Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_) | WsMessage::Ping(_))) => {
                self.limiter.check(now)
            }
            _ => Verdict::Allow,
        };
        if verdict == Verdict::Abuse {
            tracing::debug!(client = %self.handle.client, "sustained rate abuse; closing");
            self.node.metrics.policy_closed(PolicyClose::RateAbuse);
            return Some(Box::pin(self.drain_and_close(close::POLICY, "rate limit abuse")).await);
        }
        match incoming {
            Some(Ok(WsMessage::Text(text))) => self.read_text(text, now, verdict).await,
            Some(Ok(WsMessage::Binary(_))) if verdict == Verdict::Refuse => self.rate_limited(None),
            Some(Ok(WsMessage::Binary(_))) => self.refuse(FrameError::new(
                ErrorCode::BadFrame,
                "binary frames are not part of the protocol; send JSON in text frames",
                None,
            )),
            // tungstenite answers pings itself.
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
            Some(Ok(WsMessage::Close(_))) => {
                // tungstenite has queued the echo of the client's close
                // frame (RFC 6455 5.5.1): send it now, before the clean-up.
                let echo =
                    tokio::time::timeout(self.node.config.limits.write_timeout, self.ws.flush());
                let _ = echo.await;
                return Some(Ending::ClosedByClient);
            }
            None => return Some(Ending::Gone),
            Some(Err(WsError::Utf8(e))) => {
                tracing::debug!(client = %self.handle.client, error = %e, "text frame is not UTF-8");
                self.node.metrics.error(ErrorCode::BadFrame);
                return Some(
                    Box::pin(self.drain_and_close(
                        close::INVALID_PAYLOAD,
                        close_reason(close::INVALID_PAYLOAD),
                    ))
                    .await,
                );
            }
            Some(Err(WsError::Capacity(e))) => {
                tracing::debug!(client = %self.handle.client, error = %e, "frame over the hard limit");
                self.node.metrics.error(ErrorCode::TooLarge);
                return Some(
                    Box::pin(self.drain_and_close(close::TOO_BIG, close_reason(close::TOO_BIG)))
                        .await,
                );
            }
            Some(Err(e)) => {
                tracing::debug!(client = %self.handle.client, error = %e, "socket error");
                return Some(Ending::Gone);
            }
        }
        None
    }

    /// Handles one text frame. A send whose route is known at once (a
    /// local recipient, a cached remote one) is dispatched right here;
    /// otherwise it starts its lookup. Answers keep reading order.
    async fn read_text(&mut self, text: Utf8Bytes, read_at: Instant, verdict: Verdict) {
        let max = self.node.config.limits.max_frame_bytes;
        if text.len() > max {
            return self.refuse(FrameError::new(
                ErrorCode::TooLarge,
                format!("frame is {} bytes; the limit is {max}", text.len()),
                None,
            ));
        }
        if verdict == Verdict::Refuse {
            // Parsed only to echo the refused frame's id.
            let id = match parse_client_frame(&text) {
                Ok(ClientFrame::Send(send)) => send.id.map(Cow::into_owned),
                Ok(ClientFrame::Ping { id }) => id.map(Cow::into_owned),
                Err(e) => e.id,
            };
            return self.rate_limited(id.as_deref());
        }
        match parse_client_frame(&text) {
            Ok(ClientFrame::Send(send)) => {
                let msg_id = Uuid::now_v7();
                let origin = Origin {
                    node: self.node.id.clone(),
                    client: self.handle.client.clone(),
                    session: self.handle.id,
                    msg_id,
                    id: send.id.map(Into::into),
                    receipt: send.receipt,
                    tracked: false,
                };
                let msg = Message::new(
                    msg_id,
                    self.handle.client.clone(),
                    send.to,
                    send.body,
                    Some(origin),
                );
                let known = self.router.locate_fast(&msg.to);
                match known {
                    Some(route) if self.pending.is_empty() => {
                        let reply = Reply::Routed {
                            msg,
                            route: Ok(route),
                            read_at,
                        };
                        let frame = Box::pin(answer(self.node, reply)).await;
                        self.answers.push(frame.into());
                    }
                    Some(route) => self.queue(Reply::Routed {
                        msg,
                        route: Ok(route),
                        read_at,
                    }),
                    None => {
                        let router = self.router;
                        self.pending.push_back(Box::pin(async move {
                            let route = router.locate(&msg.to).await;
                            Reply::Routed {
                                msg,
                                route,
                                read_at,
                            }
                        }));
                    }
                }
            }
            Ok(ClientFrame::Ping { id }) => self.queue(Reply::Ready(encode_pong(id.as_deref()))),
            Err(e) => self.refuse(e),
        }
    }

    /// An answer known now, written after any still waiting on a lookup.
    fn queue(&mut self, reply: Reply) {
        match reply {
            Reply::Ready(frame) if self.pending.is_empty() => self.answers.push(frame.into()),
            reply => self.pending.push_back(Box::pin(std::future::ready(reply))),
        }
    }

    fn refuse(&mut self, error: FrameError) {
        self.node.metrics.error(error.code);
        self.queue(Reply::Ready(encode_error(&error)));
    }

    fn rate_limited(&mut self, id: Option<&str>) {
        let limit = self.node.config.limits.rate_limit;
        self.refuse(FrameError::new(
            ErrorCode::RateLimited,
            format!("more than {limit} frames per second; this frame was dropped"),
            id,
        ));
    }

    /// Before closing with `code`: answer every send already read, so each
    /// gets its one ack.
    async fn drain_and_close(&mut self, code: u16, reason: &'static str) -> Ending {
        let mut frames = std::mem::take(&mut self.answers);
        while let Some(reply) = self.pending.next().await {
            frames.push(Box::pin(answer(self.node, reply)).await.into());
        }
        if write(self.ws, frames, self.node.config.limits.write_timeout)
            .await
            .is_err()
        {
            return Ending::SlowConsumer;
        }
        Ending::Close(code, reason)
    }
}

/// Turns a reply into the frame that answers it, dispatching sends.
///
/// Callers box this future: it is the largest step of a session's turn,
/// and inline it would grow every idle session's task by its size.
async fn answer(node: &Node, reply: Reply) -> String {
    let (msg, route, read_at) = match reply {
        Reply::Ready(frame) => return frame,
        Reply::Routed {
            msg,
            route,
            read_at,
        } => (msg, route, read_at),
    };
    let msg_id = msg.msg_id;
    let id = msg.origin.as_ref().and_then(|o| o.id.clone());
    let outcome = match route {
        Ok(route) => node.router.dispatch(msg, route).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(status) => {
            node.metrics.observe_route(read_at.elapsed());
            encode_ack(id.as_deref(), msg_id, status)
        }
        Err(e) => {
            node.metrics.error(e.code());
            encode_error(&FrameError::new(e.code(), e.to_string(), id.as_deref()))
        }
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "node shutting down",
        close::REPLACED => "replaced by a newer session",
        close::TOO_BIG => "frame too large",
        close::INVALID_PAYLOAD => "text frame is not valid UTF-8",
        close::SLOW_CONSUMER => "slow consumer",
        _ => "",
    }
}

/// Leaves: unreachable first (no new frames, local entry and presence
/// record gone), then whatever is still queued is written or answered
/// `offline`, then the close frame.
async fn finish(node: &Node, handle: &SessionHandle, mut ws: Socket, ending: Ending) {
    let code = match ending {
        Ending::Close(code, _) => code,
        Ending::Gone | Ending::ClosedByClient => close::NORMAL,
        Ending::SlowConsumer => close::SLOW_CONSUMER,
        Ending::Refused => close::INTERNAL,
    };
    handle.outbox.close(code);
    node.sessions.remove(&handle.client, handle.id);
    if let Err(e) = node
        .presence
        .remove(&handle.client, &node.id, handle.id)
        .await
    {
        tracing::debug!(client = %handle.client, error = %e,
            "presence record of a closed session not deleted yet; will retry");
        node.defer_removal(handle.client.clone(), handle.id);
    }

    let rest = handle.outbox.take_all();
    let timeout = node.config.limits.write_timeout;
    match ending {
        Ending::Close(code, reason) => {
            let _ = write_outbound(&mut ws, &node.router, Vec::new(), rest, timeout).await;
            let _ = close_socket(&mut ws, code, reason, timeout).await;
        }
        Ending::SlowConsumer => {
            node.metrics.slow_consumer();
            answer_all(&node.router, rest.messages, ReceiptStatus::Offline).await;
            let _ = close_socket(&mut ws, close::SLOW_CONSUMER, "slow consumer", timeout).await;
        }
        // The socket is done: the echo of the client's close went out when
        // it arrived, or the connection is gone.
        Ending::ClosedByClient | Ending::Gone => {
            answer_all(&node.router, rest.messages, ReceiptStatus::Offline).await;
        }
        Ending::Refused => {
            answer_all(&node.router, rest.messages, ReceiptStatus::Offline).await;
            let _ = close_socket(&mut ws, close::INTERNAL, "presence unavailable", timeout).await;
        }
    }
}

/// Writes frames and flushes once, within `timeout`.
async fn write<F: Into<Utf8Bytes>>(
    ws: &mut Socket,
    frames: impl IntoIterator<Item = F>,
    timeout: Duration,
) -> Result<(), ()> {
    let send = async {
        for frame in frames {
            ws.feed(WsMessage::Text(frame.into())).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Writes answers and queued frames with one flush, then reports each
/// queued message's outcome: `delivered` once the socket took it, `offline`
/// if it did not.
async fn write_outbound(
    ws: &mut Socket,
    router: &Router,
    answers: Vec<Utf8Bytes>,
    batch: Batch,
    timeout: Duration,
) -> Result<(), ()> {
    if answers.is_empty() && batch.messages.is_empty() && batch.outcomes.is_empty() {
        return Ok(());
    }
    let mut origins = Vec::new();
    let mut frames = answers;
    frames.extend(batch.outcomes);
    frames.extend(batch.messages.into_iter().map(|item| {
        origins.extend(item.origin);
        item.frame
    }));
    let written = write(ws, frames, timeout).await.is_ok();
    let status = if written {
        ReceiptStatus::Delivered
    } else {
        ReceiptStatus::Offline
    };
    // Every outcome is reported; the router decides who needs to hear it
    // (a sender's node always, a sender here only if it asked).
    for origin in origins {
        router.answer(&origin, status).await;
    }
    if written { Ok(()) } else { Err(()) }
}

async fn close_socket(
    ws: &mut Socket,
    code: u16,
    reason: &'static str,
    timeout: Duration,
) -> Result<(), ()> {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    match tokio::time::timeout(timeout, ws.close(Some(frame))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Answers the sender of every message in `items` with `status`.
async fn answer_all(router: &Router, items: VecDeque<Outbound>, status: ReceiptStatus) {
    for origin in items.into_iter().filter_map(|item| item.origin) {
        router.answer(&origin, status).await;
    }
}
