//! The hops of a route: one encoded message hop per remote leg (per node),
//! checked against the bus's size limit, and the in-flight legs that track
//! them.
//!
//! A leg too large for one bus message (a group's leg to a node holding
//! thousands of its members) is split into parts of equal size, each
//! settled by its own `done`; a message to a client that does not fit is
//! refused (`too_large`), since one client's devices cannot be split into
//! something smaller.

use smallvec::SmallVec;

use super::Message;
use super::inflight::{Leg, Who};
use super::route::{RemoteLeg, Route};
use crate::bus::BusError;
use crate::protocol::envelope::{ENVELOPE_OVERHEAD, MessageHopOut, encode_message_hop};
use crate::protocol::{Recipient, Target};

/// One hop to publish: a leg's targets (a range of them, for a part of a
/// split leg), encoded.
pub struct PlannedHop {
    /// Index of its leg in [`Route::remote`].
    pub leg: usize,
    /// 0, or its part number (from 1) when the leg was split.
    pub part: u32,
    pub targets: std::ops::Range<usize>,
    pub json: Vec<u8>,
}

pub type Hops = SmallVec<[PlannedHop; 2]>;

/// Every leg's hop of `route`, encoded, each within `max_envelope` (the
/// bus's limit). One hop per leg, except for a group's leg too large for
/// one bus message, which is split into parts of equal size.
pub fn plan(msg: &Message, route: &Route, max_envelope: usize) -> Result<Hops, BusError> {
    let mut hops = Hops::new();
    let limit = max_envelope.saturating_sub(ENVELOPE_OVERHEAD);
    let reply = msg.sender.as_ref().map(|s| s.reply());
    let encode = |leg: &RemoteLeg, targets: &[Target], part: u32| {
        encode_message_hop(&MessageHopOut {
            msg_id: msg.msg_id,
            from: &msg.from,
            to: msg.to.addressee(),
            forwarded: false,
            reply: reply.as_ref(),
            targets,
            carbons: &leg.carbons,
            part,
            frame: &msg.frame,
        })
    };
    for (i, leg) in route.remote.iter().enumerate() {
        let whole = encode(leg, &leg.targets, 0);
        if whole.len() <= limit {
            hops.push(PlannedHop {
                leg: i,
                part: 0,
                targets: 0..leg.targets.len(),
                json: whole,
            });
            continue;
        }
        let n = leg.targets.len();
        let mut parts = whole.len().div_ceil(limit).max(2);
        let too_large = |size| BusError::TooLarge { size, limit };
        if !matches!(msg.to, Recipient::Group(_)) || n < 2 {
            return Err(too_large(whole.len()));
        }
        loop {
            let per = n.div_ceil(parts);
            let split: Vec<PlannedHop> = (0..n)
                .step_by(per)
                .enumerate()
                .map(|(k, from)| {
                    let targets = from..(from + per).min(n);
                    let part = k as u32 + 1;
                    let json = encode(leg, &leg.targets[targets.clone()], part);
                    PlannedHop {
                        leg: i,
                        part,
                        targets,
                        json,
                    }
                })
                .collect();
            match split.iter().map(|h| h.json.len()).max() {
                Some(largest) if largest > limit && per == 1 => return Err(too_large(largest)),
                Some(largest) if largest > limit => parts *= 2,
                _ => {
                    hops.extend(split);
                    break;
                }
            }
        }
    }
    Ok(hops)
}

/// The in-flight legs of `hops` (those with targets: a hop of carbons only
/// is not tracked), in the order of `hops`.
pub fn legs(route: &Route, hops: &Hops) -> SmallVec<[Leg; 2]> {
    hops.iter()
        .filter(|h| !h.targets.is_empty())
        .map(|h| {
            let leg = &route.remote[h.leg];
            Leg {
                node: leg.node.clone(),
                epoch: leg.epoch,
                part: h.part,
                targets: leg.targets[h.targets.clone()]
                    .iter()
                    .map(|t| Who {
                        to: t.to.clone(),
                        device: t.device.clone(),
                    })
                    .collect(),
            }
        })
        .collect()
}
