//! The receiving end of node-to-node hops: reads this node's inbox on the
//! bus and hands each envelope to the router.
//!
//! Envelopes come from other nodes, which are trusted but verified: a
//! malformed one is counted, logged (at most once a second, with a count of
//! what was not logged) and skipped, never a crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::bus::{Delivery, Inbox};
use crate::metrics::{HopRejection, Metrics};
use crate::protocol::{Envelope, EnvelopeError, Hop};
use crate::router::Router;

/// Runs until the bus closes the inbox.
pub async fn run(router: Arc<Router>, metrics: Arc<Metrics>, mut inbox: Inbox) {
    let mut complaints = Throttle::new(Duration::from_secs(1));
    while let Some(delivery) = inbox.next().await {
        let bytes = match delivery {
            Delivery::Envelope(bytes) => bytes,
            Delivery::Bounced(msg_id) => {
                router.bounced(msg_id);
                continue;
            }
        };
        metrics.hop_received();
        match Envelope::decode(&bytes) {
            Ok(envelope) => match envelope.hop {
                Hop::Message(message) => router.accept_hop(message).await,
                Hop::Receipt(receipt) => router.accept_receipt(receipt),
                Hop::Replaced(replaced) => router.accept_replaced(replaced),
                Hop::Forwarded(forwarded) => router.accept_forwarded(forwarded),
            },
            Err(e) => {
                metrics.hop_rejected(match e {
                    EnvelopeError::Malformed(_) => HopRejection::Malformed,
                    EnvelopeError::UnknownVersion(_) => HopRejection::UnknownVersion,
                });
                if let Some(skipped) = complaints.ready() {
                    tracing::warn!(error = %e, bytes = bytes.len(), skipped,
                        "dropped an envelope this node cannot read");
                }
            }
        }
    }
    tracing::error!("the bus closed this node's inbox; hops can no longer arrive");
}

/// Lets one log line through per period and counts the rest.
struct Throttle {
    period: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            skipped: 0,
        }
    }

    /// `Some(lines skipped since the last one)` when a line may be logged.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_period() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        t.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(t.ready(), Some(2));
    }
}
