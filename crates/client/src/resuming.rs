//! A session that outlives its connections: acks mode with automatic
//! resume (docs/protocol.md, "Acks mode and resume").
//!
//! [`ResumingClient`] connects in acks mode, confirms what it reads
//! (lazily: every [`CONFIRM_EVERY`] messages, or once nothing new arrived
//! for [`CONFIRM_AFTER`]), and when the connection is lost (dropped, or
//! closed by a draining node with 1001) it reconnects to the node URLs in
//! turn with exponential backoff and full jitter, presenting its resume
//! token and the last `seq` it read: the node hands back every message
//! after it, once, in order. It never tries again sooner than a node's
//! `Retry-After` (503 `busy`, v3), and after a draining node's 1001 it
//! waits the `reconnect_after_ms` the close reason names, so that a
//! drained node's clients come back spread. A fresh identity is asked for on every
//! connect, so expiring tokens are renewed. The clients it watches (v3
//! presence) are watched again by a fresh session; a resumed one kept
//! them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_client::ClientError> {
//! use switchboard_client::{Happening, Identity, ResumingClient};
//! let urls = vec!["ws://node-1:8080".to_owned(), "ws://node-2:8080".to_owned()];
//! let mut bob = ResumingClient::connect(urls, || Identity::Name("bob".into()), Default::default()).await?;
//! loop {
//!     match bob.next().await? {
//!         Happening::Frame(frame) => println!("{frame:?}"),
//!         Happening::Reconnected { resumed, node } => println!("on {node}, resumed: {resumed}"),
//!     }
//! }
//! # }
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use switchboard_protocol::{
    ConversationsFrame, HistoryFrame, PageRange, ServerFrame, Thread, WatchingFrame, jitter,
};

use crate::{Client, ClientError, ConnectOptions, Event, Identity, To, Welcome};

/// Confirm at the latest after this many messages...
pub const CONFIRM_EVERY: u64 = 32;
/// ...or once nothing new arrived for this long.
pub const CONFIRM_AFTER: Duration = Duration::from_millis(200);
/// The first reconnect waits up to this long (full jitter)...
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// ...doubling up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Reconnect attempts before giving up.
const MAX_ATTEMPTS: u32 = 30;

/// What [`ResumingClient::next`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    /// A frame from the node (messages are numbered; repeats are skipped).
    Frame(ServerFrame),
    /// The connection was lost and a new one is up: `resumed` when the
    /// session was taken back (nothing lost), not when it is a fresh one
    /// (what was kept for the old one was answered `offline` to its
    /// senders).
    Reconnected { resumed: bool, node: String },
}

pub struct ResumingClient {
    urls: Vec<String>,
    identity: Box<dyn FnMut() -> Identity + Send>,
    options: ConnectOptions,
    client: Client,
    token: Option<String>,
    last_seq: u64,
    confirmed: u64,
    next_url: usize,
    reconnects: u64,
    /// v3: the clients watched, for a fresh session to watch again.
    watched: BTreeSet<String>,
}

impl ResumingClient {
    /// Connects in acks mode to the first of `urls` that answers.
    pub async fn connect(
        urls: Vec<String>,
        identity: impl FnMut() -> Identity + Send + 'static,
        options: ConnectOptions,
    ) -> Result<Self, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::Connect("no node URL given".into()));
        }
        let mut identity: Box<dyn FnMut() -> Identity + Send> = Box::new(identity);
        let options = ConnectOptions {
            acks: true,
            ..options
        };
        let mut next_url = 0;
        // A busy node (over its connect rate) says when to come back.
        let mut attempt = 0;
        let client = loop {
            match dial(&urls, &mut next_url, &mut identity, &options).await {
                Ok(client) => break client,
                Err(e) if attempt + 1 < MAX_ATTEMPTS && e.retry_after().is_some() => {
                    attempt += 1;
                    tokio::time::sleep(e.retry_wait().unwrap_or_default()).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            token: client.welcome().resume_token.clone(),
            client,
            urls,
            identity,
            options,
            last_seq: 0,
            confirmed: 0,
            next_url,
            reconnects: 0,
            watched: BTreeSet::new(),
        })
    }

    /// The current connection's welcome.
    pub fn welcome(&self) -> &Welcome {
        self.client.welcome()
    }

    /// Connections made after the first.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Sends on the current connection. An error means the frame may not
    /// have left: [`next`](Self::next) reconnects, and the caller decides
    /// whether to send it again.
    pub async fn send_to<B: Serialize>(
        &mut self,
        to: To<'_>,
        body: &B,
        id: Option<&str>,
        receipt: bool,
    ) -> Result<(), ClientError> {
        self.client.send_to(to, body, id, receipt, false).await
    }

    /// v3: watches `clients` (see [`Client::watch`]); kept across
    /// reconnects. Those refused as a whole (an error) are not kept.
    pub async fn watch(&mut self, clients: &[&str]) -> Result<WatchingFrame, ClientError> {
        let watching = self.client.watch(clients).await?;
        self.watched.extend(clients.iter().map(|c| (*c).to_owned()));
        Ok(watching)
    }

    /// v3: stops watching `clients`.
    pub async fn unwatch(&mut self, clients: &[&str]) -> Result<(), ClientError> {
        for client in clients {
            self.watched.remove(*client);
        }
        self.client.unwatch(clients).await
    }

    /// v3: invisible (`false`) or visible again.
    pub async fn set_visible(&mut self, visible: bool) -> Result<(), ClientError> {
        self.client.set_visible(visible).await
    }

    /// v3: an ephemeral signal (see [`Client::signal`]).
    pub async fn signal<B: Serialize>(&mut self, to: To<'_>, body: &B) -> Result<(), ClientError> {
        self.client.signal(to, body).await
    }

    /// v3: a page of a conversation (see [`Client::history`]).
    pub async fn history(
        &mut self,
        thread: &Thread,
        range: PageRange,
        limit: usize,
    ) -> Result<HistoryFrame, ClientError> {
        self.client.history(thread, range, limit).await
    }

    /// v3: this client's conversations (see [`Client::conversations`]).
    pub async fn conversations(
        &mut self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<ConversationsFrame, ClientError> {
        self.client.conversations(before, limit).await
    }

    /// v3: this client has read `thread` up to `upto`.
    pub async fn mark_read(&mut self, thread: &Thread, upto: u64) -> Result<(), ClientError> {
        self.client.mark_read(thread, upto).await
    }

    /// The next frame, or a reconnection. Errors only when the session
    /// cannot go on: closed by this side or for good by the node (replaced,
    /// a policy close), or no node answered [`MAX_ATTEMPTS`] times.
    pub async fn next(&mut self) -> Result<Happening, ClientError> {
        loop {
            let event = if self.last_seq > self.confirmed {
                tokio::select! {
                    event = self.client.next_event() => event,
                    () = tokio::time::sleep(CONFIRM_AFTER) => {
                        self.confirm().await;
                        continue;
                    }
                }
            } else {
                self.client.next_event().await
            };
            match event {
                Ok(Event::Frame(ServerFrame::Message(m))) => {
                    if let Some(seq) = m.seq {
                        if seq <= self.last_seq {
                            continue; // written again after a resume
                        }
                        self.last_seq = seq;
                        if self.last_seq - self.confirmed >= CONFIRM_EVERY {
                            self.confirm().await;
                        }
                    }
                    return Ok(Happening::Frame(ServerFrame::Message(m)));
                }
                Ok(Event::Frame(frame)) => return Ok(Happening::Frame(frame)),
                Ok(Event::Closed { code, reason }) if !resumable(code) => {
                    return Err(ClientError::Closed { code, reason });
                }
                Ok(Event::Closed { reason, .. }) => {
                    // A draining node's hint: come back after it.
                    let hint = switchboard_protocol::frames::reconnect_hint(&reason);
                    let resumed = self.reconnect(hint).await?;
                    let node = self.client.welcome().node.clone();
                    return Ok(Happening::Reconnected { resumed, node });
                }
                Err(_) => {
                    let resumed = self.reconnect(None).await?;
                    let node = self.client.welcome().node.clone();
                    return Ok(Happening::Reconnected { resumed, node });
                }
            }
        }
    }

    /// Closes the session for good (no resume).
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.confirm().await;
        self.client.close().await
    }

    async fn confirm(&mut self) {
        if self.last_seq > self.confirmed && self.client.confirm(self.last_seq).await.is_ok() {
            self.confirmed = self.last_seq;
        }
    }

    /// Reconnects with backoff and full jitter (the first wait is the
    /// node's `hint` when it gave one), never sooner than a `Retry-After`,
    /// resuming when it can. Returns whether the session was taken back.
    async fn reconnect(&mut self, hint: Option<Duration>) -> Result<bool, ClientError> {
        let mut last_error: Option<ClientError> = None;
        for attempt in 0..MAX_ATTEMPTS {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1 << attempt.min(16))
                .min(BACKOFF_CAP);
            let backoff = match (attempt, hint) {
                (0, Some(hint)) => hint,
                _ => ceiling.mul_f64(jitter()),
            };
            let not_before = last_error.as_ref().and_then(ClientError::retry_wait);
            if not_before.is_some() {
                // "Come back after": to the same node (a resume it could
                // not finish yet may be finished there).
                self.next_url = self.next_url.wrapping_sub(1);
            }
            tokio::time::sleep(backoff.max(not_before.unwrap_or_default())).await;
            self.options.resume = self.token.clone().map(|t| (t, self.last_seq));
            let dialed = dial(
                &self.urls,
                &mut self.next_url,
                &mut self.identity,
                &self.options,
            )
            .await;
            match dialed {
                Ok(client) => {
                    self.client = client;
                    self.reconnects += 1;
                    let resumed = self.client.welcome().resumed == Some(true);
                    if !resumed {
                        // A fresh session numbers from 1 again, and
                        // watches nothing yet.
                        self.last_seq = 0;
                        if let Err(e) = self.rewatch().await {
                            last_error = Some(e);
                            continue;
                        }
                    }
                    self.confirmed = self.last_seq;
                    self.token = self.client.welcome().resume_token.clone();
                    return Ok(resumed);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::Connect("no node answered".into())))
    }
}

impl ResumingClient {
    /// A fresh session watches again what the old one watched, at most
    /// 256 clients a frame (the protocol's limit).
    async fn rewatch(&mut self) -> Result<(), ClientError> {
        let watched: Vec<String> = self.watched.iter().cloned().collect();
        for chunk in watched.chunks(256) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            match self.client.watch(&chunk).await {
                // Refused (too many, the store away): the caller hears of
                // it from the presence frames that do not come; the
                // session goes on.
                Ok(_) | Err(ClientError::Rejected { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// One connection attempt to the next URL in turn.
async fn dial(
    urls: &[String],
    next_url: &mut usize,
    identity: &mut Box<dyn FnMut() -> Identity + Send>,
    options: &ConnectOptions,
) -> Result<Client, ClientError> {
    let url = &urls[*next_url % urls.len()];
    *next_url += 1;
    Client::connect_with(url, identity(), options).await
}

/// Closes after which a resume makes sense: the connection was lost, the
/// node is draining (1001), the client was too slow (4008), or went
/// silent (1008 idle). Not after its own close (1000), a replacement by
/// a newer session of its device (4001), or a frame too large (1009).
fn resumable(code: Option<u16>) -> bool {
    !matches!(code, Some(1000 | 4001 | 1009 | 1007))
}
