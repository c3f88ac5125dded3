//! Events (v2): what the nodes tell the application's backend, so that it
//! can send a push notification, keep last-seen, or count things. Two
//! kinds (docs/protocol.md, "Events"): `presence` (a session opened or
//! ended) and `offline` (a send took the offline branch, or a routed
//! message ended offline).
//!
//! Emitting one never waits and never fails a send: [`Events::emit`]
//! encodes the event once and offers it to each sink's bounded queue. A
//! sink (NATS subjects, a webhook) drains its queue in a task of its own,
//! so a slow or dead sink costs the routing path nothing; what does not fit
//! in its queue is dropped, counted in `/metrics` and logged at most once a
//! second.
//!
//! This is a port: the [`EventSink`]s live in [`crate::backends`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::lock::Locked;
use crate::metrics::Metrics;
use crate::protocol::{OfflineEvent, PresenceEvent};
use crate::rate::LogThrottle;

/// The subject events of `kind` go out on (and the webhook names).
pub fn subject(subject_prefix: &str, kind: &str) -> String {
    format!("{subject_prefix}.events.{kind}")
}

#[derive(Debug, Clone)]
pub enum Event {
    Presence(PresenceEvent),
    Offline(OfflineEvent),
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Presence(_) => "presence",
            Event::Offline(_) => "offline",
        }
    }

    fn json(&self) -> Bytes {
        let json = match self {
            Event::Presence(e) => serde_json::to_vec(e),
            Event::Offline(e) => serde_json::to_vec(e),
        };
        Bytes::from(json.expect("events serialize"))
    }
}

/// Why a sink gave up on an event.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink refused it at once (NATS is away: no retry, the queue
    /// would only grow).
    #[error("the sink did not take the event")]
    Refused(#[source] crate::cause::Cause),
    /// The receiver answered, but not with a 2xx (after every retry).
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
    /// No answer (after every retry): no connection, or no answer in time.
    #[error("no answer from the receiver")]
    Unreachable(#[source] crate::cause::Cause),
    /// The node is shutting down: retries stopped.
    #[error("the node is shutting down")]
    Stopped,
}

/// One way out for events. Retrying is the sink's own business; an error
/// means it gave up on this event.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one event of `kind` (its JSON body). `stop` is cancelled
    /// when the node is shutting down: give up retrying then.
    async fn deliver(
        &self,
        kind: &'static str,
        event: Bytes,
        stop: &CancellationToken,
    ) -> Result<(), SinkError>;

    /// "nats" or "webhook", for metrics and logs.
    fn name(&self) -> &'static str;
}

struct Queue {
    tx: mpsc::Sender<(&'static str, Bytes)>,
    webhook: bool,
    name: &'static str,
    complaints: Mutex<LogThrottle>,
}

/// The node's events, as the router emits them. Cheap to clone.
#[derive(Clone, Default)]
pub struct Events {
    queues: Arc<Vec<Queue>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sinks: Vec<_> = self.queues.iter().map(|q| q.name).collect();
        f.debug_struct("Events").field("sinks", &sinks).finish()
    }
}

impl Events {
    /// No sinks: every event is dropped unseen (and nothing is computed
    /// for one: check [`is_on`](Self::is_on)).
    pub fn off() -> Self {
        Self::default()
    }

    /// Events going to `sinks` (each with its queue bound), drained by
    /// tasks on `tasks`.
    pub fn start(
        sinks: Vec<(Arc<dyn EventSink>, usize)>,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let mut queues = Vec::new();
        for (sink, bound) in sinks {
            let (tx, rx) = mpsc::channel(bound.max(1));
            let name = sink.name();
            let webhook = name == "webhook";
            tasks.spawn(drain(sink, rx, metrics.clone(), stop.clone()));
            queues.push(Queue {
                tx,
                webhook,
                name,
                complaints: Mutex::new(LogThrottle::new(Duration::from_secs(1))),
            });
        }
        Self {
            queues: Arc::new(queues),
            metrics: Some(metrics),
        }
    }

    /// Whether any sink listens.
    pub fn is_on(&self) -> bool {
        !self.queues.is_empty()
    }

    /// Offers `event` to every sink; never waits.
    pub fn emit(&self, event: Event) {
        let (Some(metrics), false) = (&self.metrics, self.queues.is_empty()) else {
            return;
        };
        let kind = event.kind();
        metrics.event(kind == "presence");
        let json = event.json();
        for queue in self.queues.iter() {
            if queue.tx.try_send((kind, json.clone())).is_err() {
                metrics.event_dropped(queue.webhook);
                let ready = queue.complaints.locked().ready();
                if let Some(skipped) = ready {
                    tracing::warn!(
                        sink = queue.name,
                        also_dropped = skipped,
                        "event queue full (or its sink stopped): event dropped"
                    );
                }
            }
        }
    }
}

/// One sink's task: delivers what its queue holds, in order, until every
/// sender is gone (the router was dropped) and the queue is empty.
async fn drain(
    sink: Arc<dyn EventSink>,
    mut rx: mpsc::Receiver<(&'static str, Bytes)>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let webhook = sink.name() == "webhook";
    let mut complaints = LogThrottle::new(Duration::from_secs(1));
    while let Some((kind, event)) = rx.recv().await {
        if let Err(e) = sink.deliver(kind, event, &stop).await {
            metrics.event_dropped(webhook);
            if let Some(skipped) = complaints.ready() {
                tracing::warn!(sink = sink.name(), error = %crate::cause::chain(&e),
                    also_dropped = skipped, "an event could not be delivered; dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientId, DeviceId, NodeId, PresenceState};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A sink that takes nothing until `open` is cancelled.
    struct Stuck {
        open: CancellationToken,
        delivered: AtomicUsize,
    }

    #[async_trait]
    impl EventSink for Stuck {
        async fn deliver(
            &self,
            _kind: &'static str,
            _event: Bytes,
            _stop: &CancellationToken,
        ) -> Result<(), SinkError> {
            self.open.cancelled().await;
            self.delivered.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn name(&self) -> &'static str {
            "webhook"
        }
    }

    fn online() -> Event {
        Event::Presence(PresenceEvent {
            client_id: ClientId::parse("bob").unwrap(),
            device: DeviceId::parse("phone").unwrap(),
            session: uuid::Uuid::nil(),
            node: NodeId::parse("a").unwrap(),
            state: PresenceState::Online,
            reason: None,
            ts: 1,
        })
    }

    #[tokio::test]
    async fn a_stuck_sink_drops_beyond_its_queue_and_never_blocks() {
        let metrics = Arc::new(Metrics::default());
        let tasks = TaskTracker::new();
        let sink = Arc::new(Stuck {
            open: CancellationToken::new(),
            delivered: AtomicUsize::new(0),
        });
        let events = Events::start(
            vec![(sink.clone(), 4)],
            metrics.clone(),
            &tasks,
            CancellationToken::new(),
        );
        for _ in 0..100 {
            events.emit(online());
        }
        let text = metrics.render();
        // One taken by the task (stuck in deliver), four queued: 95 dropped
        // (or 96 if the task had not taken one yet).
        let dropped = text
            .lines()
            .find(|l| l.starts_with("switchboard_events_dropped_total{sink=\"webhook\"}"))
            .unwrap();
        let n: u64 = dropped.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((95..=96).contains(&n), "{dropped}");
        sink.open.cancel();
        drop(events);
        tasks.close();
        tasks.wait().await;
        assert_eq!(sink.delivered.load(Ordering::SeqCst) as u64, 100 - n);
    }
}
