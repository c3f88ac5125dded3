//! A session's main loop. Each turn waits for one event:
//!
//! 1. frames other tasks queued in its outbox (messages for this client,
//!    receipts owed to it), or a request to close;
//! 2. the answer to a frame it read, once its lookup finished;
//! 3. the next client frame, while fewer than [`MAX_IN_FLIGHT`] are
//!    unanswered;
//! 4. the keepalive timer (ping, or close a client gone silent);
//! 5. the node shutting down (close with 1001);
//!
//! then gathers everything else that is ready and writes it all with a
//! single flush: one system call for an ack and the messages that arrived
//! meanwhile, rather than one each.
//!
//! Sends are pipelined: the presence lookups of up to [`MAX_IN_FLIGHT`]
//! sends run concurrently, but [`Router::dispatch`] and the acks happen
//! strictly in reading order, which is what keeps messages from one
//! session to one recipient in order.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use uuid::Uuid;

use super::socket::{write, write_outbound};
use super::{Ending, Env, MAX_IN_FLIGHT, Socket};
use crate::hub::{Sender, SessionHandle};
use crate::metrics::{PolicyClose, SignalFate};
use crate::protocol::frames::{encode_ack, encode_error, encode_pong};
use crate::protocol::watch::{encode_ok, encode_watching};
use crate::protocol::{
    ClientFrame, Disconnect, ErrorCode, FrameError, Recipient, SignalRequest, parse_client_frame,
};
use crate::rate::{Limiter, TokenBucket, Verdict};
use crate::routing::{Kept, Message, Route, RouteError, Router, WatchError};

/// What the session owes the client for one frame it read. Small: the
/// routed ones are boxed, since a reply is held by the main loop, and
/// anything it holds sizes every idle session's future.
enum Reply {
    /// A pong or an error, ready to write.
    Ready(String),
    /// Frames ready to write, in order (v3: `watching` and the watched
    /// clients' `presence`); none for a signal.
    Frames(Vec<String>),
    /// A send whose route has been looked up.
    Routed(Box<Routed>),
    /// A signal whose route has been looked up (v3): handed over, answered
    /// only with an error, and only when it carried an `id`.
    Signal(Box<SignalRoute>),
}

struct Routed {
    msg: Message,
    route: Result<Route, RouteError>,
    read_at: Instant,
}

struct SignalRoute {
    msg: Message,
    route: Result<Route, RouteError>,
    id: Option<String>,
}

type Pending<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// The frames whose answers are being worked out, in reading order. Made
/// on a session's first such frame: an empty `FuturesOrdered` is already an
/// allocation (152 bytes), and most sessions are idle.
struct Waiting<'a>(Option<FuturesOrdered<Pending<'a>>>);

impl<'a> Waiting<'a> {
    fn push_back(&mut self, answer: Pending<'a>) {
        self.0
            .get_or_insert_with(FuturesOrdered::new)
            .push_back(answer);
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesOrdered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl futures_util::Stream for Waiting<'_> {
    type Item = Reply;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Reply>> {
        match &mut self.get_mut().0 {
            Some(answers) => answers.poll_next_unpin(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

/// What the main loop woke up for.
enum Event {
    /// Frames were queued for the client, or a close was asked for.
    Outbox,
    /// The node is shutting down.
    ShuttingDown,
    /// A frame's answer is ready.
    Reply(Reply),
    /// The client sent a frame (or the socket ended: `None`).
    Incoming(Option<Result<WsMessage, WsError>>),
    /// The keepalive timer fired.
    Keepalive,
}

/// The state of the main loop.
pub(super) struct Session<'a> {
    env: &'a Env,
    router: &'a Router,
    handle: &'a Arc<SessionHandle>,
    ws: &'a mut Socket,
    /// Frames read whose answer waits on a lookup (and any read after
    /// them, so that answers keep reading order).
    pending: Waiting<'a>,
    /// Answers ready to write, in reading order.
    answers: Vec<Utf8Bytes>,
    limiter: Limiter,
    /// `--signal-rate` (v3): signals beyond it are dropped.
    signals: TokenBucket,
    /// When the client last sent anything, a pong included.
    last_heard: Instant,
    /// When the next keepalive ping is due.
    next_ping: Instant,
}

impl<'a> Session<'a> {
    pub(super) fn new(env: &'a Env, handle: &'a Arc<SessionHandle>, ws: &'a mut Socket) -> Self {
        let limits = &env.limits;
        Self {
            env,
            router: &env.router,
            handle,
            ws,
            pending: Waiting(None),
            answers: Vec::new(),
            limiter: Limiter::new(limits.rate_limit, limits.rate_burst, limits.rate_abuse),
            signals: {
                let rate = env.signal_rate;
                TokenBucket::new(rate, rate)
            },
            last_heard: Instant::now(),
            next_ping: Instant::now() + limits.ping_interval,
        }
    }

    pub(super) async fn serve(&mut self) -> Ending {
        let write_timeout = self.env.limits.write_timeout;
        // One timer per session serves both the pings and the idle check.
        let keepalive = tokio::time::sleep_until(self.next_ping);
        tokio::pin!(keepalive);
        let shutdown = self.env.shutdown.clone();
        let shutting_down = shutdown.cancelled();
        tokio::pin!(shutting_down);
        loop {
            // The select only picks what happened; it is handled after it.
            // An idle session's future is this loop waiting here, and rustc
            // sizes it by every step's locals: handled inside the select,
            // its output (a routed reply, 416 bytes) would stay reserved
            // across each step's await (docs/operations.md, "Memory per
            // session").
            let event = tokio::select! {
                // Close requests and queued frames first: a session being
                // replaced or shut down should not keep reading.
                biased;

                () = self.handle.outbox.ready() => Event::Outbox,
                () = &mut shutting_down => Event::ShuttingDown,
                Some(reply) = self.pending.next(), if !self.pending.is_empty() => Event::Reply(reply),
                incoming = self.ws.next(), if self.pending.len() < MAX_IN_FLIGHT => Event::Incoming(incoming),
                () = &mut keepalive => Event::Keepalive,
            };
            match event {
                Event::Outbox => {}
                Event::ShuttingDown => {
                    return Box::pin(self.drain_and_close(Disconnect::GoingAway)).await;
                }
                Event::Reply(reply) => Box::pin(respond(self.env, reply, &mut self.answers)).await,
                // Boxed: handling a frame is this loop's largest step (2 KiB
                // of future); inline, every idle session would carry room
                // for it.
                Event::Incoming(incoming) => {
                    if let Some(ending) = Box::pin(self.receive(incoming)).await {
                        return ending;
                    }
                }
                Event::Keepalive => match Box::pin(self.keepalive()).await {
                    Ok(deadline) => keepalive.as_mut().reset(deadline),
                    Err(ending) => return ending,
                },
            }

            // `let … else`, not `while let`: the scrutinee's temporary would
            // live across the await, reserving a reply's room again.
            loop {
                let Some(Some(reply)) = self.pending.next().now_or_never() else {
                    break;
                };
                Box::pin(respond(self.env, reply, &mut self.answers)).await;
            }
            let batch = self.handle.outbox.take();
            let close = batch.close;
            if close == Some(Disconnect::SlowConsumer) {
                let (client, device) = (&self.handle.client, &self.handle.device);
                Box::pin(self.env.router.undelivered(
                    client,
                    device,
                    batch.messages,
                    Disconnect::SlowConsumer,
                ))
                .await;
                return Ending::SlowConsumer;
            }
            let answers = std::mem::take(&mut self.answers);
            let written = Box::pin(write_outbound(
                self.ws,
                self.router,
                self.handle,
                answers,
                batch,
                write_timeout,
            ))
            .await;
            if written.is_err() {
                return Ending::SlowConsumer;
            }
            if let Some(why) = close {
                return Box::pin(self.drain_and_close(why)).await;
            }
        }
    }

    /// The keepalive timer fired: close a session that has gone silent,
    /// ping one that is due. Returns when the timer should fire next.
    async fn keepalive(&mut self) -> Result<Instant, Ending> {
        let limits = &self.env.limits;
        let now = Instant::now();
        let silent_until = self.last_heard + limits.idle_timeout;
        if now >= silent_until {
            tracing::debug!(client = %self.handle.client, "no answer to pings; closing");
            self.env.metrics.policy_closed(PolicyClose::Idle);
            return Err(Box::pin(self.drain_and_close(Disconnect::Idle)).await);
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
            self.env.metrics.policy_closed(PolicyClose::RateAbuse);
            return Some(Box::pin(self.drain_and_close(Disconnect::RateAbuse)).await);
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
                let echo = tokio::time::timeout(self.env.limits.write_timeout, self.ws.flush());
                let _ = echo.await;
                return Some(Ending::ClosedByClient);
            }
            None => return Some(Ending::Gone),
            Some(Err(WsError::Utf8(e))) => {
                tracing::debug!(client = %self.handle.client, error = %e, "text frame is not UTF-8");
                self.env.metrics.error(ErrorCode::BadFrame);
                return Some(Box::pin(self.drain_and_close(Disconnect::InvalidPayload)).await);
            }
            Some(Err(WsError::Capacity(e))) => {
                tracing::debug!(client = %self.handle.client, error = %e, "frame over the hard limit");
                self.env.metrics.error(ErrorCode::TooLarge);
                return Some(Box::pin(self.drain_and_close(Disconnect::TooBig)).await);
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
        let max = self.env.limits.max_frame_bytes;
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
                Ok(ClientFrame::Signal(signal)) => signal.id.map(Cow::into_owned),
                Ok(
                    ClientFrame::Ping { id }
                    | ClientFrame::Watch { id, .. }
                    | ClientFrame::Unwatch { id, .. }
                    | ClientFrame::Visibility { id, .. },
                ) => id.map(Cow::into_owned),
                Ok(ClientFrame::History(h)) => h.id.map(Cow::into_owned),
                Ok(ClientFrame::Conversations(c)) => c.id.map(Cow::into_owned),
                Ok(ClientFrame::Read(r)) => r.id.map(Cow::into_owned),
                Ok(ClientFrame::Received { .. }) => None,
                Err(e) => e.id,
            };
            return self.rate_limited(id.as_deref());
        }
        match parse_client_frame(&text) {
            Ok(ClientFrame::Send(send)) => {
                let msg_id = Uuid::now_v7();
                // Group sends get no `delivered` receipts (only `offline`).
                let receipt = send.receipt && matches!(send.to, Recipient::Client(_));
                let sender = Sender {
                    node: self.env.node.clone(),
                    client: self.handle.client.clone(),
                    session: self.handle.id,
                    id: send.id.map(Into::into),
                    receipt,
                    group: send.to.group().cloned(),
                };
                let mut msg = Message::new(
                    msg_id,
                    self.handle.client.clone(),
                    send.to,
                    send.body,
                    Some(sender),
                );
                msg.store = send.store;
                // v3: the application's backend decides first (hook calls
                // of a session's sends overlap; their answers keep the
                // order read), then the message is kept in history (its
                // `cseq` goes on every copy), then routed.
                let gate = self.env.gate.as_ref().filter(|g| g.sends());
                let history = self.env.history.as_ref().filter(|_| send.history);
                if gate.is_some() || history.is_some() {
                    let (router, device) = (self.router, &self.handle.device);
                    self.pending.push_back(Box::pin(async move {
                        if let Some(gate) = gate
                            && let Err(refused) = super::hooks::ask(gate, &mut msg, device).await
                        {
                            return Reply::Ready(refused);
                        }
                        if let Some(history) = history {
                            history.keep(&mut msg).await;
                        }
                        let route = router.locate(&msg).await;
                        Reply::Routed(Box::new(Routed {
                            msg,
                            route,
                            read_at,
                        }))
                    }));
                    return;
                }
                match self.router.locate_fast(&msg) {
                    Some(route) if self.pending.is_empty() => {
                        // The common path: answered at once, the send
                        // by value (no reply to box).
                        let routed = Routed {
                            msg,
                            route: Ok(route),
                            read_at,
                        };
                        Box::pin(answer_send(self.env, routed, &mut self.answers)).await;
                    }
                    Some(route) => self.queue(Reply::Routed(Box::new(Routed {
                        msg,
                        route: Ok(route),
                        read_at,
                    }))),
                    None => {
                        let router = self.router;
                        self.pending.push_back(Box::pin(async move {
                            let route = router.locate(&msg).await;
                            Reply::Routed(Box::new(Routed {
                                msg,
                                route,
                                read_at,
                            }))
                        }));
                    }
                }
            }
            // Acks mode: what the client has is delivered. (Without acks
            // mode there is nothing to confirm.) Nothing is sent back.
            Ok(ClientFrame::Received { upto }) => {
                let confirmed = self.handle.outbox.confirm(upto);
                // Boxed: settling is a large future (see `respond`).
                Box::pin(super::settle_delivered(self.router, self.handle, confirmed)).await;
            }
            Ok(ClientFrame::Ping { id }) => self.queue(Reply::Ready(encode_pong(id.as_deref()))),
            Ok(ClientFrame::Watch { id, clients }) => {
                let (env, handle) = (self.env, self.handle);
                let id = id.map(Cow::into_owned);
                self.pending.push_back(Box::pin(async move {
                    let frames = match env.watches.watch(handle, clients).await {
                        Ok(watching) => {
                            let id = id.as_deref();
                            let mut frames =
                                vec![encode_watching(id, &watching.clients, &watching.denied)];
                            frames.extend(watching.frames);
                            frames
                        }
                        Err(e) => {
                            let code = match e {
                                WatchError::TooMany { .. } => ErrorCode::TooManyWatched,
                                WatchError::Store(_) => ErrorCode::Unavailable,
                            };
                            env.metrics.error(code);
                            let error = FrameError::new(code, e.to_string(), id.as_deref());
                            vec![encode_error(&error)]
                        }
                    };
                    Reply::Frames(frames)
                }));
            }
            Ok(ClientFrame::Unwatch { id, clients }) => {
                self.env.watches.unwatch(self.handle, clients);
                self.queue(Reply::Ready(encode_ok(id.as_deref())));
            }
            Ok(ClientFrame::Visibility { id, visible }) => {
                let (env, client) = (self.env, &self.handle.client);
                let id = id.map(Cow::into_owned);
                self.pending.push_back(Box::pin(async move {
                    let frame = match env.watches.visibility(client, visible).await {
                        Ok(()) => encode_ok(id.as_deref()),
                        Err(e) => {
                            env.metrics.error(ErrorCode::Unavailable);
                            let message = crate::cause::chain(&e);
                            let error =
                                FrameError::new(ErrorCode::Unavailable, message, id.as_deref());
                            encode_error(&error)
                        }
                    };
                    Reply::Ready(frame)
                }));
            }
            Ok(ClientFrame::Signal(signal)) => self.signal(signal, read_at).await,
            Ok(ClientFrame::History(request)) => {
                let (env, client) = (self.env, &self.handle.client);
                let id = request.id.map(Cow::into_owned);
                let (thread, range, limit) = (request.thread, request.range, request.limit);
                self.pending.push_back(Box::pin(async move {
                    Reply::Ready(super::history::page(env, client, id, thread, range, limit).await)
                }));
            }
            Ok(ClientFrame::Conversations(request)) => {
                let (env, client) = (self.env, &self.handle.client);
                let id = request.id.map(Cow::into_owned);
                let (before, limit) = (request.before, request.limit);
                self.pending.push_back(Box::pin(async move {
                    Reply::Ready(
                        super::history::conversations(env, client, id, before, limit).await,
                    )
                }));
            }
            Ok(ClientFrame::Read(request)) => {
                let (env, handle) = (self.env, self.handle);
                let id = request.id.map(Cow::into_owned);
                let (thread, upto) = (request.thread, request.upto);
                self.pending.push_back(Box::pin(async move {
                    Reply::Ready(super::history::read(env, handle, id, thread, upto).await)
                }));
            }
            Err(e) => self.refuse(e),
        }
    }

    /// A signal (v3): within `--signal-rate`, routed like a message (one
    /// hop per node) but never answered, except with an error when it
    /// carried an `id`.
    async fn signal(&mut self, signal: SignalRequest<'_>, read_at: Instant) {
        if !self.signals.allow_at(read_at) {
            self.env.metrics.signal(SignalFate::RateLimited);
            return;
        }
        let sender = Sender {
            node: self.env.node.clone(),
            client: self.handle.client.clone(),
            session: self.handle.id,
            id: None,
            receipt: false,
            group: signal.to.group().cloned(),
        };
        let from = self.handle.client.clone();
        let msg = Message::signal(from, signal.to, signal.body, sender);
        let id = signal.id.map(Cow::into_owned);
        match self.router.locate_fast(&msg) {
            Some(route) if self.pending.is_empty() => {
                self.router.dispatch_signal(msg, route).await;
            }
            Some(route) => self.queue(Reply::Signal(Box::new(SignalRoute {
                msg,
                route: Ok(route),
                id,
            }))),
            None => {
                let router = self.router;
                self.pending.push_back(Box::pin(async move {
                    let route = router.locate(&msg).await;
                    Reply::Signal(Box::new(SignalRoute { msg, route, id }))
                }));
            }
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
        self.env.metrics.error(error.code);
        if !error.unanswered {
            self.queue(Reply::Ready(encode_error(&error)));
        }
    }

    fn rate_limited(&mut self, id: Option<&str>) {
        let limit = self.env.limits.rate_limit;
        self.refuse(FrameError::new(
            ErrorCode::RateLimited,
            format!("more than {limit} frames per second; this frame was dropped"),
            id,
        ));
    }

    /// Before closing with `why`: answer every send already read, so each
    /// gets its one ack.
    async fn drain_and_close(&mut self, why: Disconnect) -> Ending {
        let mut frames = std::mem::take(&mut self.answers);
        while let Some(reply) = self.pending.next().await {
            Box::pin(respond(self.env, reply, &mut frames)).await;
        }
        if write(self.ws, frames, self.env.limits.write_timeout)
            .await
            .is_err()
        {
            return Ending::SlowConsumer;
        }
        Ending::Close(why)
    }
}

/// Turns a reply into the frames that answer it (added to `answers`),
/// dispatching sends and signals.
///
/// Callers box this future: it is the largest step of a session's turn,
/// and inline it would grow every idle session's task by its size.
async fn respond(env: &Env, reply: Reply, answers: &mut Vec<Utf8Bytes>) {
    match reply {
        Reply::Ready(frame) => answers.push(frame.into()),
        Reply::Frames(frames) => answers.extend(frames.into_iter().map(Into::into)),
        Reply::Signal(signal) => {
            let SignalRoute { msg, route, id } = *signal;
            match route {
                Ok(route) => {
                    env.router.dispatch_signal(msg, route).await;
                }
                Err(e) => {
                    env.metrics.error(e.code());
                    if let Some(id) = id {
                        let error = FrameError::new(e.code(), e.to_string(), Some(&id));
                        answers.push(encode_error(&error).into());
                    }
                }
            }
        }
        Reply::Routed(routed) => answer_send(env, *routed, answers).await,
    }
}

/// Dispatches a send whose route is known and writes its ack (or error).
async fn answer_send(env: &Env, routed: Routed, answers: &mut Vec<Utf8Bytes>) {
    let Routed {
        msg,
        route,
        read_at,
    } = routed;
    let (msg_id, kept) = (msg.msg_id, msg.kept);
    let id = msg.sender.as_ref().and_then(|s| s.id.clone());
    let outcome = match route {
        Ok(route) => env.router.dispatch(msg, route).await,
        Err(e) => Err(e),
    };
    let frame = match outcome {
        Ok(sent) => {
            env.metrics.observe_route(read_at.elapsed());
            let mut ack = sent.ack(id.as_deref(), msg_id);
            match kept {
                Kept::As(cseq) => ack.cseq = Some(cseq),
                Kept::Failed => ack.history_error = Some("unavailable"),
                Kept::No => {}
            }
            encode_ack(&ack)
        }
        Err(e) => {
            env.metrics.error(e.code());
            encode_error(&FrameError::new(e.code(), e.to_string(), id.as_deref()))
        }
    };
    answers.push(frame.into());
}
