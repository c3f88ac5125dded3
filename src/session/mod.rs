//! One WebSocket session, from welcome to close.
//!
//! Each session is one task that owns its socket. Its life:
//!
//! 1. [`open`] registers it, before the WebSocket upgrade is answered (the
//!    router writes its device field once it is reachable here; a client
//!    over `--max-devices` is refused with HTTP 409); [`run`] writes the
//!    welcome once the socket is there;
//! 2. [`turn`]'s loop serves it: writes what others queued in its outbox,
//!    answers the client's frames in reading order, reads the next ones,
//!    pings, and watches the node's shutdown;
//! 3. [`finish`] makes it unreachable, answers what was still queued for
//!    it, and closes the socket with the reason ([`Disconnect`]); or, for
//!    a session in acks mode whose connection was lost (or whose node is
//!    draining), it **detaches**: the router keeps it, and what comes for
//!    it, until the client resumes it ([`Start::Resumed`]) or the window
//!    ends (`routing::resumption`).
//!
//! A session sees the node through a narrow [`Env`]: the router, the
//! limits, the metrics and health it reports to, and the shutdown signal.
//! Every socket write is bounded by the write timeout ([`socket`]): a
//! client that stops reading is closed as a slow consumer (4008) instead
//! of stalling its session forever.

mod history;
mod hooks;
mod socket;
mod turn;

use std::sync::Arc;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::socket::{close_socket, write, write_outbound};
use self::turn::Session;
use crate::config::Limits;
use crate::health::Health;
use crate::hub::{Outbox, QueueLimits, SessionHandle, Slot};
use crate::metrics::Metrics;
use crate::protocol::frames::{WelcomeExtras, encode_welcome};
use crate::protocol::{ClientId, DeviceId, Disconnect, ErrorCode, Fate, NodeId, now_ms};
use crate::resume::ResumeKeys;
use crate::routing::{RegisterError, Registrar, Resumption, Router, TakeOverError, Watches};

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

/// Outgoing bytes gathered before tungstenite writes to the socket. Its
/// buffer keeps the capacity a burst grew it to for the session's life, so
/// this is also what a session that once got a burst (a watch of hundreds
/// of clients answered at once) keeps: 16 KiB here cost 85 bytes per watch
/// with 200 watches per session (BENCHMARKS.md, presence). A write still
/// carries ten or so small frames.
const WRITE_BUFFER_BYTES: usize = 2 * 1024;

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

/// What a session needs of its node.
pub struct Env {
    pub node: NodeId,
    /// Where its sends go, and what becomes of what it is handed.
    pub router: Arc<Router>,
    /// Its device field in presence.
    pub registrar: Arc<Registrar>,
    /// Detaching, and taking a detached session back (acks mode).
    pub resumption: Arc<Resumption>,
    /// Presence for clients (v3).
    pub watches: Arc<Watches>,
    /// History (v3), when the node keeps it (`--history`).
    pub history: Option<Arc<crate::routing::History>>,
    /// The backend hooks (v3), when configured (`--hook-url`).
    pub gate: Option<Arc<crate::routing::Gate>>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Cancelled when the node begins to shut down: every session closes
    /// with 1001.
    pub shutdown: CancellationToken,
    /// Acks mode's resume, when on.
    pub resume: Option<Resume>,
    /// `--signal-rate`: signals a session may send per second (v3).
    pub signal_rate: u32,
}

/// How detached sessions are kept, and their tokens signed.
pub struct Resume {
    pub keys: ResumeKeys,
    pub window: std::time::Duration,
}

/// How a session starts on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new session; `resume_refused` when the client asked to resume
    /// and could not (the welcome then says `"resumed":false`).
    Fresh { resume_refused: bool },
    /// A detached session taken back: the client has every message up to
    /// `seq` `upto`.
    Resumed { upto: u64 },
}

/// How a session's loop ended.
enum Ending {
    /// Close with this reason; the socket is still writable.
    Close(Disconnect),
    /// The client closed the session; its close frame was echoed.
    ClosedByClient,
    /// The connection dropped without a close frame.
    Gone,
    /// The client stopped reading; close with 4008 without waiting for it.
    SlowConsumer,
}

impl Ending {
    /// Whether an acks-mode session ending this way is kept for a resume:
    /// its connection was lost (dropped, silent, or too slow to take what
    /// it was sent), or its node is draining. A close from the client, a
    /// replacement, or a policy close ends it.
    fn detaches(&self) -> bool {
        matches!(
            self,
            Ending::Gone
                | Ending::SlowConsumer
                | Ending::Close(Disconnect::GoingAway | Disconnect::Idle)
        )
    }

    /// What the session tells those who still try to reach it.
    fn disconnect(&self) -> Disconnect {
        match self {
            Ending::Close(why) => *why,
            Ending::ClosedByClient | Ending::Gone => Disconnect::Normal,
            Ending::SlowConsumer => Disconnect::SlowConsumer,
        }
    }
}

/// Opens a session of `client` on `device`: reachable here and registered
/// in presence, before its socket exists (what arrives meanwhile waits in
/// its outbox). Refused when the client is over `--max-devices` or the
/// presence store cannot be written.
pub async fn open(
    env: &Env,
    client: ClientId,
    device: DeviceId,
    acks: bool,
) -> Result<Arc<SessionHandle>, RegisterError> {
    let limits = QueueLimits {
        frames: env.limits.session_queue,
        bytes: env.limits.session_queue_bytes,
    };
    let handle = Arc::new(SessionHandle {
        id: Uuid::new_v4(),
        client,
        device,
        since: now_ms(),
        outbox: if acks {
            Outbox::acks(limits)
        } else {
            Outbox::new(limits)
        },
    });
    match env
        .registrar
        .register(&handle, env.limits.max_devices)
        .await
    {
        Ok(_) => {
            env.metrics.session_opened();
            tracing::debug!(client = %handle.client, device = %handle.device,
                session = %handle.id, "session open");
            Ok(handle)
        }
        Err(e) => {
            if let RegisterError::Presence(_) = &e {
                tracing::warn!(client = %handle.client, error = %crate::cause::chain(&e),
                    "session refused: presence not written");
                env.health.presence_failed();
                env.metrics.error(ErrorCode::Unavailable);
            }
            Err(e)
        }
    }
}

/// Takes back `client`'s detached session `session` on `device` (its
/// token checked): from this node's detached sessions, or from the node
/// that holds it (`routing::resumption`). `Ok(None)`: it cannot be taken
/// back (the client gets a fresh session); `Err`: it may still be, but not
/// now (the presence store could not be read: the client should retry).
pub async fn take_back(
    env: &Env,
    client: &ClientId,
    device: &DeviceId,
    session: Uuid,
) -> Result<Option<Arc<SessionHandle>>, TakeOverError> {
    let handle = match env.resumption.claim(client, session) {
        Some(handle) => handle,
        None => {
            let handle = Arc::new(SessionHandle {
                id: session,
                client: client.clone(),
                device: device.clone(),
                since: now_ms(),
                outbox: Outbox::acks(QueueLimits {
                    frames: env.limits.session_queue,
                    bytes: env.limits.session_queue_bytes,
                }),
            });
            let taken = env
                .resumption
                .take_over(handle.clone(), env.limits.max_devices)
                .await;
            match taken {
                Ok(()) => {}
                Err(e @ TakeOverError::Unavailable(_)) => {
                    tracing::debug!(%client, %session, error = %e, "resume deferred");
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!(%client, %session, error = %e, "resume refused");
                    return Ok(None);
                }
            }
            env.metrics.session_opened();
            handle
        }
    };
    env.metrics.resumed();
    tracing::debug!(%client, %session, "session resumed");
    Ok(Some(handle))
}

/// Runs an open session on its upgraded socket, to the end (or until it
/// detaches).
pub async fn run(
    env: Arc<Env>,
    // Boxed: rustc keeps an async fn's arguments beside the locals it moves
    // them into, so a socket by value would be held twice by every idle
    // session (2 × 328 bytes instead of 2 × 8).
    mut ws: Box<Socket>,
    handle: Arc<SessionHandle>,
    start: Start,
    slot: Slot,
) {
    let acks = handle.outbox.is_acks();
    let token = match &env.resume {
        Some(resume) if acks => Some(resume.keys.mint(&handle.client, &handle.device, handle.id)),
        _ => None,
    };
    let resumed = match start {
        Start::Resumed { .. } => Some(true),
        Start::Fresh {
            resume_refused: true,
        } => env.resume.as_ref().map(|_| false),
        Start::Fresh { .. } => None,
    };
    // A new session claims its client's inbox: what waits there goes
    // first (a resumed one drained it, or another session is).
    let inbox = match start {
        Start::Fresh { .. } => Box::pin(env.router.offline().claim_inbox(&handle)).await,
        Start::Resumed { .. } => env.router.offline().has_inbox().then_some(0),
    };
    let welcome = encode_welcome(
        &handle.client,
        &handle.device,
        handle.id,
        &env.node,
        WelcomeExtras {
            resume_token: token.as_deref(),
            resumed,
            inbox,
        },
    );
    let mut frames = vec![welcome.into()];
    if let Start::Resumed { upto } = start {
        // What the client confirms by resuming is delivered; what it did
        // not get is written again, in order, before anything new.
        let (confirmed, again) = handle.outbox.replay(upto);
        // Boxed, like every rare step: settling is a large future, and
        // inline it would grow every idle session's task.
        Box::pin(settle_delivered(&env.router, &handle, confirmed)).await;
        frames.extend(again);
        // Presence frames are never kept for a detached session (the
        // replay dropped any): it is shown the current state afresh.
        Box::pin(env.resumption.rewatch(&handle)).await;
    }
    // The rare, large steps (welcome, clean-up) are boxed so that they do
    // not size the task an idle session keeps in memory.
    let welcomed = Box::pin(write(&mut ws, frames, env.limits.write_timeout)).await;
    let ending = match welcomed {
        // Boxed as well: rustc lays an awaited future out next to a copy of
        // it, so an inline `serve` would make this future twice its size.
        Ok(()) => {
            // By reference: a future taking it by value holds it twice
            // (argument and local), and it lives as long as the session.
            let mut session = Session::new(&env, &handle, &mut ws);
            Box::pin(session.serve()).await
        }
        Err(_) => Ending::Gone,
    };
    if let Some(resume) = env.resume.as_ref().filter(|_| acks && ending.detaches()) {
        let why = ending.disconnect();
        if !matches!(ending, Ending::Gone) {
            let _ = Box::pin(close_socket(&mut ws, why, &env.limits)).await;
        }
        // A detached session keeps its slot (it still holds memory and a
        // presence field), so that connecting and dropping cannot pile up
        // detached sessions beyond --max-sessions; a draining node lets
        // them go, since it waits for its slots before passing them on.
        // The slot goes back only once the session counts as detached: a
        // drain that saw every slot back and no detached session would
        // not wait for (or pass on) this one, and end it at once.
        let (kept, released) = match env.shutdown.is_cancelled() {
            true => (None, Some(slot)),
            false => (Some(slot), None),
        };
        let give_up = env.resumption.drain_over().clone();
        env.resumption.detach(handle, resume.window, give_up, kept);
        drop(released);
        return;
    }
    Box::pin(finish(&env, &handle, Some(*ws), ending)).await;
}

/// Acks mode: messages the client confirmed are delivered.
pub async fn settle_delivered(
    router: &Router,
    handle: &SessionHandle,
    confirmed: Vec<crate::hub::Outbound>,
) {
    for item in confirmed {
        if let Some(handover) = item.handover {
            router
                .settle(&handover, &handle.client, &handle.device, Fate::Delivered)
                .await;
        }
    }
}

/// Ends an open session whose socket never came (the upgrade failed).
pub async fn abandon(env: Arc<Env>, handle: Arc<SessionHandle>) {
    Box::pin(finish(&env, &handle, None, Ending::Gone)).await;
}

/// Leaves: unreachable first (no new frames, local entry and presence
/// field gone), then whatever is still queued is written or answered
/// `offline`, then the close frame.
async fn finish(env: &Env, handle: &SessionHandle, ws: Option<Socket>, ending: Ending) {
    let why = ending.disconnect();
    // After the closing handshake the server closes the TCP connection
    // first (RFC 6455 7.1.1): a client that closed waits for it before
    // its close completes, so it must not wait for the clean-up's round
    // trips to the presence store as well.
    let ws = match ending {
        Ending::ClosedByClient | Ending::Gone => {
            drop(ws);
            None
        }
        _ => ws,
    };
    handle.outbox.close(why);
    env.registrar.unregister(handle, why.into()).await;

    let rest = handle.outbox.take_all();
    let timeout = env.limits.write_timeout;
    let router = &env.router;
    if handle.outbox.is_acks() {
        // Written or not, none of it will be confirmed now.
        router
            .undelivered(&handle.client, &handle.device, rest.messages, why)
            .await;
        if let (Ending::Close(why), Some(mut ws)) = (ending, ws) {
            let _ = close_socket(&mut ws, why, &env.limits).await;
        }
        env.metrics.session_closed();
        return;
    }
    match (ending, ws) {
        (Ending::Close(why), Some(mut ws)) => {
            let _ = write_outbound(&mut ws, router, handle, Vec::new(), rest, timeout).await;
            let _ = close_socket(&mut ws, why, &env.limits).await;
        }
        (Ending::SlowConsumer, ws) => {
            env.metrics.slow_consumer();
            router
                .undelivered(&handle.client, &handle.device, rest.messages, why)
                .await;
            if let Some(mut ws) = ws {
                let _ = close_socket(&mut ws, Disconnect::SlowConsumer, &env.limits).await;
            }
        }
        // The socket is done: the echo of the client's close went out when
        // it arrived, or the connection is gone.
        (_, _) => {
            router
                .undelivered(&handle.client, &handle.device, rest.messages, why)
                .await;
        }
    }
    env.metrics.session_closed();
    tracing::debug!(client = %handle.client, device = %handle.device,
        session = %handle.id, "session closed");
}
