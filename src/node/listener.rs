//! This node's subscription on the bus (its listener): reads what other
//! nodes sent and hands each part to the service it is for: message hops
//! and changes to the router, outcomes and bounces to the outcomes in
//! flight, `replaced` hops to the registrar, hand-over and adoption
//! requests to resumption, status requests to the node's status.
//!
//! Envelopes come from other nodes, which are trusted but verified: a
//! malformed one is counted, logged (at most once a second, with a count of
//! what was not logged) and skipped, never a crash.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::bus::{Delivery, Responder, Subscription};
use crate::metrics::HopRejection;
use crate::protocol::requests::Request;
use crate::protocol::{Envelope, EnvelopeError, Hop};
use crate::rate::LogThrottle;

/// How the inbox ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// `stop` was cancelled: the node is shutting down.
    Stopped,
    /// The bus closed the inbox: no hop can arrive any more.
    Closed,
}

/// Reads the subscription until `stop` is cancelled or the bus closes it.
/// Messages whose frame is larger than `max_frame` (the largest a client
/// of any node can cause) are refused.
pub async fn run(
    node: Arc<Node>,
    mut inbox: Subscription,
    max_frame: usize,
    stop: CancellationToken,
) -> Ended {
    let router = node.router().clone();
    let metrics = router.metrics().clone();
    let mut complaints = LogThrottle::new(Duration::from_secs(1));
    loop {
        let delivery = tokio::select! {
            delivery = inbox.next() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
            () = stop.cancelled() => return Ended::Stopped,
        };
        let bytes = match delivery {
            Delivery::Envelope(bytes) => bytes,
            Delivery::Bounced(tag) => {
                router.outcomes().bounced(tag);
                continue;
            }
            Delivery::Request { payload, responder } => {
                answer(&node, &payload, responder).await;
                continue;
            }
        };
        metrics.hop_received();
        match Envelope::decode(&bytes) {
            Ok(envelope) => {
                for hop in envelope.into_hops() {
                    match hop {
                        Hop::Message(message) => {
                            let frame = message.frame.get();
                            let verdict = if frame.len() > max_frame {
                                Err(HopRejection::Oversized)
                            } else if !message.frame_matches() {
                                Err(HopRejection::Mismatched)
                            } else {
                                frame_of(&bytes, frame).ok_or(HopRejection::Malformed)
                            };
                            match verdict {
                                Ok(frame) => router.accept_hop(message, frame).await,
                                Err(why) => {
                                    metrics.hop_rejected(why);
                                    if let Some(skipped) = complaints.ready() {
                                        tracing::warn!(reason = ?why, msg_id = %message.msg_id,
                                            to = ?message.to, group = ?message.group,
                                            bytes = frame.len(), skipped,
                                            "refused a message hop; its sender is told offline");
                                    }
                                    // Not delivered: the sender hears it now,
                                    // not at the hop timeout.
                                    router.refuse_hop(&message).await;
                                }
                            }
                        }
                        Hop::Outcomes(outcomes) => {
                            for outcome in &outcomes {
                                router.outcomes().settle(outcome);
                            }
                        }
                        Hop::Replaced(replaced) => node.registrar().accept_replaced(replaced).await,
                        Hop::Changed(changed) => {
                            let elsewhere = changed.node != *node.id();
                            let contacts = changed.contacts.clone();
                            let groups = !changed.groups.is_empty();
                            router.accept_changed(changed);
                            if elsewhere {
                                node.watches().membership_changed(contacts, groups);
                            }
                        }
                        Hop::Signal(signal) => {
                            let frame = signal.frame.get();
                            let cut = (frame.len() <= max_frame && signal.frame_matches())
                                .then(|| frame_of(&bytes, frame))
                                .flatten();
                            match cut {
                                Some(frame) => router.accept_signal(signal, frame),
                                // Signals may be dropped: counted, never answered.
                                None => metrics.hop_rejected(HopRejection::Mismatched),
                            }
                        }
                        Hop::Watched(watched) => node.watches().accept_watched(watched),
                        Hop::Owed(owed) => {
                            let frame = owed.frame.get();
                            let cut = (frame.len() <= max_frame && owed.frame_matches())
                                .then(|| frame_of(&bytes, frame))
                                .flatten();
                            match cut {
                                Some(frame) => router.outcomes().accept_owed(&owed, frame),
                                None => metrics.hop_rejected(HopRejection::Mismatched),
                            }
                        }
                        Hop::Read(read) => {
                            let frame = read.frame.get();
                            let cut = (frame.len() <= max_frame && read.frame_matches())
                                .then(|| frame_of(&bytes, frame))
                                .flatten();
                            match cut {
                                Some(frame) => router.accept_read(read, frame),
                                None => metrics.hop_rejected(HopRejection::Mismatched),
                            }
                        }
                    }
                }
            }
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
    Ended::Closed
}

/// Answers another node's request. A hand-over or an adoption is answered
/// in the subscription's order: what arrived before the hand-over is in
/// what it hands over; what comes after is forwarded. A status request is
/// answered beside it: it pings the presence store, which must never hold
/// hops up.
async fn answer(node: &Arc<Node>, payload: &[u8], responder: Responder) {
    let request = match serde_json::from_slice::<Request>(payload) {
        Ok(request) => request,
        Err(e) => {
            tracing::debug!(error = %e, "unreadable request from another node");
            return responder
                .respond(crate::routing::resumption::not_found())
                .await;
        }
    };
    match request {
        Request::TakeOver(take_over) => {
            let (answer, forwarded) = node.resumption().hand_over(take_over);
            responder.respond(answer).await;
            if let Some(forwarded) = forwarded {
                node.resumption().tell_forwarded(forwarded).await;
            }
        }
        Request::Adopt(adopt) => {
            let adopted = node.resumption().adopt(adopt).await;
            responder.respond(adopted).await;
        }
        Request::Ping => responder.respond(Bytes::new()).await,
        Request::Status => {
            let node = node.clone();
            node.tasks().clone().spawn(async move {
                let status = super::status::of_this_node(&node).await;
                let answer = serde_json::to_vec(&status).expect("serializable");
                responder.respond(answer.into()).await;
            });
        }
    }
}

/// The frame of a message hop as a slice of the bus message it came in:
/// handed to the recipient's socket without a copy.
fn frame_of(payload: &Bytes, frame: &str) -> Option<Utf8Bytes> {
    let start = (frame.as_ptr() as usize).checked_sub(payload.as_ptr() as usize)?;
    let end = start.checked_add(frame.len())?;
    if end > payload.len() {
        return None;
    }
    // SAFETY: `start..end` lies within `payload` and starts where `frame`
    // starts, so it is the very memory `frame` borrows: valid UTF-8,
    // already checked by the decoder. Checking it again would scan every
    // received message once more.
    Some(unsafe { Utf8Bytes::from_bytes_unchecked(payload.slice(start..end)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_from_the_payload_without_a_copy() {
        let payload = Bytes::from_static(br#"{"frame":{"a":1}}"#);
        let text = std::str::from_utf8(&payload).unwrap();
        let frame = &text[9..16];
        let cut = frame_of(&payload, frame).unwrap();
        assert_eq!(cut.as_str(), r#"{"a":1}"#);
        assert_eq!(cut.as_str().as_ptr(), frame.as_ptr());
        assert!(frame_of(&payload, "elsewhere").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_lets_one_through_per_period() {
        let mut t = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(t.ready(), Some(2));
    }
}
