//! The NATS bus: node `n` listens on `<subject prefix>.node.<n>`, and
//! every node on `<subject prefix>.nodes` (broadcasts).
//!
//! Core NATS is fire-and-forget, so this file is careful about the two ways
//! a publish can go wrong without an error: while the client is
//! disconnected, async-nats queues publishes (and blocks once 2048 are
//! queued), and a queued publish is lost if the connection never comes
//! back. So a publish is refused outright while disconnected, and every
//! publish is bounded by [`PUBLISH_TIMEOUT`].
//!
//! async-nats' `flush` only writes the client's buffer to the socket; it
//! proves nothing about the server. A real round trip here is a request to
//! a subject nobody serves: the server itself answers "no responders",
//! after processing everything this connection sent before.
//!
//! The same server feature bounces message hops: an envelope is published
//! with a reply subject to which nobody ever replies,
//! `<prefix>.bounce.<origin>.<msg id>` for a single message or
//! `<prefix>.bounce.<origin>.<to>.<first>.<last>` for a batch of the
//! origin's tracked messages; when the recipient node's subject has no
//! subscriber at all, the server sends a "no responders" status there, and
//! the origin node learns at once that the messages went nowhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::bus::{Bounce, BounceTag, Bus, BusError, Delivery, Responder, Subscription};
use crate::config::{NatsAuth, NatsTarget};
use crate::protocol::NodeId;

/// Longest a publish may wait for room in the client's outgoing queue.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);
/// How long startup waits for NATS before giving up with an error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a round trip to the server may take (`/readyz`, startup).
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Adds the node's credentials. Files are read now, so that a wrong path
/// fails at startup with its name.
async fn with_auth(
    options: async_nats::ConnectOptions,
    auth: &NatsAuth,
) -> Result<async_nats::ConnectOptions, BusError> {
    let unreadable = |flag: &str, path: &std::path::Path, e: std::io::Error| {
        BusError::unavailable(format!("cannot use {flag} {}: {e}", path.display()))
    };
    Ok(match auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsAuth::Token(token) => options.token(token.expose().to_owned()),
        NatsAuth::CredsFile(path) => options
            .credentials_file(path)
            .await
            .map_err(|e| unreadable("--nats-creds", path, e))?,
        NatsAuth::NkeyFile(path) => {
            let seed = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| unreadable("--nats-nkey", path, e))?;
            let seed = seed.trim();
            if !seed.starts_with("SU") {
                return Err(BusError::unavailable(format!(
                    "--nats-nkey {}: expected a user nkey seed (SU...), as `nk -gen user` prints",
                    path.display()
                )));
            }
            options.nkey(seed.to_owned())
        }
    })
}

pub struct NatsBus {
    client: async_nats::Client,
    subject_prefix: String,
    /// Where round-trip probes go; no one subscribes to it.
    probe_subject: String,
    /// The server's max_payload, read once per connection: asking the
    /// client for it clones its whole server info, too much per message.
    max_payload: AtomicUsize,
    /// Set on every (re)connect, when the server, and its limit, may change.
    reconnected: Arc<AtomicBool>,
    /// Counts disconnects and the reconnects after them (see
    /// [`Bus::generation`]).
    connects: Arc<AtomicU64>,
}

impl NatsBus {
    /// Connects to one or more NATS servers (the client fails over between
    /// them). `name` shows up in the server's connection list.
    pub async fn connect(
        target: &NatsTarget,
        subject_prefix: &str,
        name: &str,
    ) -> Result<Self, BusError> {
        let urls = &target.urls;
        let shown = urls.join(",");
        let reconnected = Arc::new(AtomicBool::new(true));
        let connects = Arc::new(AtomicU64::new(0));
        let on_connect = reconnected.clone();
        let counted = connects.clone();
        // The first connect is no change; only a disconnect, and the
        // reconnect after it, may have lost broadcasts.
        let was_lost = Arc::new(AtomicBool::new(false));
        let options = with_auth(async_nats::ConnectOptions::new(), &target.auth)
            .await?
            .name(format!("switchboard {name}"))
            .connection_timeout(Duration::from_secs(2))
            // Back quickly after a NATS restart: 100 ms, 200 ms, ... 1 s.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * attempts.clamp(1, 10) as u64)
            })
            .event_callback(move |event| {
                let on_connect = on_connect.clone();
                let counted = counted.clone();
                let was_lost = was_lost.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            on_connect.store(true, Ordering::Relaxed);
                            if was_lost.swap(false, Ordering::Relaxed) {
                                counted.fetch_add(1, Ordering::Relaxed);
                            }
                            tracing::info!("NATS connected");
                        }
                        async_nats::Event::Disconnected => {
                            was_lost.store(true, Ordering::Relaxed);
                            counted.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!("NATS disconnected")
                        }
                        // This node's own shutdown (Bus::close).
                        async_nats::Event::Draining | async_nats::Event::Closed => {
                            tracing::debug!(event = %event, "NATS connection closing")
                        }
                        other => tracing::warn!(event = %other, "NATS event"),
                    }
                }
            });
        let client = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(urls))
            .await
            .map_err(|_| {
                BusError::unavailable(format!(
                    "no answer from NATS at {shown} within {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| {
                BusError::unavailable(format!("cannot connect to NATS at {shown}: {e}"))
            })?;
        Ok(Self {
            client,
            subject_prefix: subject_prefix.to_owned(),
            probe_subject: format!("{subject_prefix}.probe.{}", uuid::Uuid::new_v4().simple()),
            max_payload: AtomicUsize::new(0),
            reconnected,
            connects,
        })
    }

    /// A request the server answers itself ("no responders"): proof that
    /// the server is reachable and has processed what came before it.
    async fn round_trip(&self) -> Result<(), BusError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BusError::unavailable("NATS is disconnected"));
        }
        let request = async_nats::Request::new().timeout(Some(PING_TIMEOUT));
        match self
            .client
            .send_request(self.probe_subject.clone(), request)
            .await
        {
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
                Err(BusError::unavailable("no answer from NATS"))
            }
            Err(e) => Err(BusError::unavailable(format!(
                "NATS round trip failed: {e}"
            ))),
            Ok(_) => Ok(()),
        }
    }

    fn subject(&self, node: &NodeId) -> String {
        format!("{}.node.{}", self.subject_prefix, node)
    }

    /// Where other nodes' requests to `node` go: `<prefix>.req.<node id>`.
    fn request_subject(&self, node: &NodeId) -> String {
        format!("{}.req.{}", self.subject_prefix, node)
    }

    fn broadcast_subject(&self) -> String {
        format!("{}.nodes", self.subject_prefix)
    }

    /// Publishes within [`PUBLISH_TIMEOUT`], refusing while disconnected or
    /// over the server's limit.
    async fn publish_bounded(
        &self,
        subject: String,
        reply: Option<String>,
        envelope: Bytes,
    ) -> Result<(), BusError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BusError::unavailable("NATS is disconnected"));
        }
        let limit = self.max_envelope();
        if envelope.len() > limit {
            return Err(BusError::TooLarge {
                size: envelope.len(),
                limit,
            });
        }
        let publish = async {
            match reply {
                Some(reply) => {
                    self.client
                        .publish_with_reply(subject, reply, envelope)
                        .await
                }
                None => self.client.publish(subject, envelope).await,
            }
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, publish)
            .await
            .map_err(|_| BusError::unavailable("NATS publish timed out"))?
            .map_err(|e| BusError::caused("NATS publish failed", e))
    }

    fn bounce_subject(&self, bounce: &Bounce<'_>) -> String {
        let prefix = &self.subject_prefix;
        match &bounce.tag {
            BounceTag::Message(msg_id) => {
                format!("{prefix}.bounce.{}.{}", bounce.node, msg_id.simple())
            }
            BounceTag::Batch { to, first, last } => {
                format!("{prefix}.bounce.{}.{to}.{first}.{last}", bounce.node)
            }
        }
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(
        &self,
        node: &NodeId,
        envelope: Bytes,
        bounce: Option<Bounce<'_>>,
    ) -> Result<(), BusError> {
        let reply = bounce.map(|b| self.bounce_subject(&b));
        self.publish_bounded(self.subject(node), reply, envelope)
            .await
    }

    async fn broadcast(&self, envelope: Bytes) -> Result<(), BusError> {
        self.publish_bounded(self.broadcast_subject(), None, envelope)
            .await
    }

    async fn publish_event(&self, kind: &str, event: Bytes) -> Result<(), BusError> {
        let subject = crate::events::subject(&self.subject_prefix, kind);
        self.publish_bounded(subject, None, event).await
    }

    async fn subscribe(&self, node: &NodeId) -> Result<Subscription, BusError> {
        let failed = |e| BusError::caused("NATS subscribe failed", e);
        let envelopes = self
            .client
            .subscribe(self.subject(node))
            .await
            .map_err(failed)?
            .map(|message| Delivery::Envelope(message.payload));
        let broadcasts = self
            .client
            .subscribe(self.broadcast_subject())
            .await
            .map_err(failed)?
            .map(|message| Delivery::Envelope(message.payload));
        // Requests (a detached session's hand-over) on a subject of their
        // own, so that they never mix with hops and their bounce replies.
        let client = self.client.clone();
        let requests = self
            .client
            .subscribe(self.request_subject(node))
            .await
            .map_err(failed)?
            .filter_map(move |message| {
                let client = client.clone();
                let request = message.reply.map(|reply| Delivery::Request {
                    payload: message.payload,
                    responder: Responder::new(move |answer| async move {
                        if let Err(e) = client.publish(reply, answer).await {
                            tracing::debug!(error = %e, "could not answer a request");
                        }
                    }),
                });
                async move { request }
            });
        let bounce_prefix = format!("{}.bounce.{}.", self.subject_prefix, node);
        let bounces = self
            .client
            .subscribe(format!("{bounce_prefix}>"))
            .await
            .map_err(failed)?
            .filter_map(move |message| {
                let tag = (message.status == Some(async_nats::StatusCode::NO_RESPONDERS))
                    .then(|| message.subject.strip_prefix(bounce_prefix.as_str()))
                    .flatten()
                    .and_then(parse_bounce);
                async move { tag.map(Delivery::Bounced) }
            });
        // Only once the server has the subscriptions may sessions be
        // welcomed here; otherwise a hop could arrive before them and vanish.
        self.round_trip().await?;
        let envelopes = futures_util::stream::select(envelopes, broadcasts);
        let envelopes = futures_util::stream::select(envelopes, requests);
        Ok(Box::pin(futures_util::stream::select(envelopes, bounces)))
    }

    async fn request(
        &self,
        node: &NodeId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let request = self.client.request(self.request_subject(node), payload);
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(answer)) => Ok(answer.payload),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                Err(BusError::NoListener {
                    what: format!("no responders for node {node}"),
                })
            }
            Ok(Err(e)) => Err(BusError::caused(format!("request to node {node}"), e)),
            Err(_) => Err(BusError::NoAnswer {
                what: format!("node {node} did not answer within {timeout:?}"),
            }),
        }
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn generation(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    fn max_envelope(&self) -> usize {
        if self.reconnected.swap(false, Ordering::Relaxed) {
            let limit = self.client.server_info().max_payload;
            self.max_payload.store(limit, Ordering::Relaxed);
        }
        self.max_payload.load(Ordering::Relaxed)
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.round_trip().await
    }

    fn backend(&self) -> &'static str {
        "nats"
    }

    async fn close(&self) {
        // What the courier published last goes out before the connection.
        if let Err(e) = tokio::time::timeout(PING_TIMEOUT, self.client.flush()).await {
            tracing::debug!(error = %e, "NATS flush at shutdown timed out");
        }
        if let Err(e) = self.client.drain().await {
            tracing::debug!(error = %e, "NATS drain at shutdown failed");
        }
    }
}

/// The tag of a bounce subject's tail: `<msg id>` or `<to>.<first>.<last>`.
fn parse_bounce(tail: &str) -> Option<BounceTag> {
    let parts: Vec<&str> = tail.split('.').collect();
    match parts.as_slice() {
        [id] => uuid::Uuid::try_parse(id).ok().map(BounceTag::Message),
        [to, first, last] => Some(BounceTag::Batch {
            to: NodeId::parse(to).ok()?,
            first: first.parse().ok()?,
            last: last.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_tags_parse() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(
            parse_bounce(&id.simple().to_string()),
            Some(BounceTag::Message(id))
        );
        assert_eq!(
            parse_bounce("node-b.10.42"),
            Some(BounceTag::Batch {
                to: NodeId::parse("node-b").unwrap(),
                first: 10,
                last: 42
            })
        );
        assert_eq!(parse_bounce("a.b"), None);
        assert_eq!(parse_bounce("node-b.x.1"), None);
    }
}
