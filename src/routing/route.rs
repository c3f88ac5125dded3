//! A send's way out: find the branch ([`Router::locate`]), take it
//! ([`Router::dispatch`]), publish cross-node messages.

use bytes::Bytes;
use uuid::Uuid;

use super::cache::CachedRoute;
use super::courier::Parcel;
use super::liveness::Belief;
use super::{Message, Route, RouteError, Router};
use crate::bus::{Bounce, BounceTag, BusError};
use crate::hub::Outbound;
use crate::protocol::envelope::{ENVELOPE_OVERHEAD, encode_envelope};
use crate::protocol::{AckStatus, ClientId, NodeId};

impl Router {
    /// The branch for a message to `to`, if it is known without asking the
    /// presence store: a recipient with a session here, or a remote one in
    /// the route cache whose node is still alive in the same run.
    pub fn locate_fast(&self, to: &ClientId) -> Option<Route> {
        if let Some(session) = self.hub.get(to) {
            return Some(Route::Local {
                session: session.id,
            });
        }
        let cached = self.cache.get(to)?;
        match self.liveness.judge(&cached.node, cached.since) {
            Belief::Alive { epoch } if epoch == cached.epoch => {
                self.metrics.route_cache_hit();
                Some(Route::Remote {
                    node: cached.node,
                    epoch,
                })
            }
            _ => {
                self.cache.remove(to);
                None
            }
        }
    }

    /// Finds the branch for a message to `to`.
    pub async fn locate(&self, to: &ClientId) -> Result<Route, RouteError> {
        if let Some(route) = self.locate_fast(to) {
            return Ok(route);
        }
        self.lookup(to).await
    }

    /// Finds the branch by asking the presence store, and remembers remote
    /// routes.
    pub(super) async fn lookup(&self, to: &ClientId) -> Result<Route, RouteError> {
        self.metrics.presence_lookup();
        let Some(record) = self.ports.presence.lookup(to).await? else {
            return Ok(Route::Offline);
        };
        Ok(match self.liveness.judge(&record.node, record.since) {
            // A crashed node's record, or a ghost of an earlier run: not
            // believed, and deleted (compared on its session) on the way.
            Belief::Dead => {
                self.forget_stale_record(to.clone(), record.node, record.session);
                Route::Offline
            }
            Belief::Alive { .. } if record.node == self.node => Route::Local {
                session: record.session,
            },
            Belief::Alive { epoch } => {
                self.cache.insert(
                    to.clone(),
                    CachedRoute {
                        node: record.node.clone(),
                        since: record.since,
                        epoch,
                    },
                );
                Route::Remote {
                    node: record.node,
                    epoch,
                }
            }
        })
    }

    /// Takes the branch. Calls for one sender must come in send order.
    pub async fn dispatch(&self, msg: Message, route: Route) -> Result<AckStatus, RouteError> {
        let status = match route {
            Route::Offline => AckStatus::Offline,
            Route::Local { session } => match self.hub.get(&msg.to) {
                Some(handle) => {
                    let item = Outbound {
                        frame: msg.frame,
                        receipt_to: msg.receipt_to.map(Box::new),
                    };
                    // A refused push means the recipient is closing: the
                    // message goes no further than this node.
                    match handle.outbox.push(item) {
                        Ok(()) => AckStatus::Local,
                        Err(_) => AckStatus::Offline,
                    }
                }
                None => {
                    self.forget_stale_record(msg.to, self.node.clone(), session);
                    AckStatus::Offline
                }
            },
            Route::Remote { node, epoch } => {
                self.publish_tracked(&msg, &node, epoch).await?;
                AckStatus::Remote
            }
        };
        self.metrics.send_routed(status);
        Ok(status)
    }

    /// [`locate`](Self::locate) then [`dispatch`](Self::dispatch), for
    /// senders with a single message in flight (the HTTP API).
    pub async fn route(&self, msg: Message) -> Result<AckStatus, RouteError> {
        let route = self.locate(&msg.to).await?;
        self.dispatch(msg, route).await
    }

    /// Sends a message hop to `node`. A message whose sender session is
    /// here is tracked until its outcome returns; one re-routed for a
    /// sender elsewhere bounces to that sender's node if nobody listens on
    /// `node`'s subject.
    pub(super) async fn publish_tracked(
        &self,
        msg: &Message,
        node: &NodeId,
        epoch: u64,
    ) -> Result<(), RouteError> {
        // Refused before queueing, so the sender hears it now.
        if !self.ports.bus.connected() {
            return Err(BusError::unavailable("the bus (NATS) is disconnected").into());
        }
        let hop = msg.hop();
        let limit = self
            .ports
            .bus
            .max_envelope()
            .saturating_sub(ENVELOPE_OVERHEAD);
        if hop.len() > limit {
            return Err(BusError::TooLarge {
                size: hop.len(),
                limit,
            }
            .into());
        }
        let seq = match &msg.receipt_to {
            // Re-routing for another node's sender: sent on its own, so
            // that a bounce can name the message to its sender's node.
            Some(to) if to.node != self.node => {
                let bounce = Bounce {
                    node: &to.node,
                    tag: BounceTag::Message(msg.msg_id),
                };
                let envelope = Bytes::from(encode_envelope([hop.as_slice()]));
                return Ok(self.ports.bus.publish(node, envelope, Some(bounce)).await?);
            }
            // Tracked before it leaves, so an outcome cannot overtake it.
            Some(to) => Some(
                self.outcomes
                    .track(to.clone(), msg.to.clone(), node.clone(), epoch)
                    .map_err(|_| RouteError::TooManyInFlight)?,
            ),
            None => None,
        };
        let parcel = Parcel::Hop { json: hop, seq };
        if self.courier.send(node.clone(), parcel).await.is_err() {
            self.outcomes.untrack(msg.msg_id);
            return Err(RouteError::ShuttingDown);
        }
        Ok(())
    }

    /// A record that must not be believed: one naming a dead node, a ghost
    /// of this node's earlier run, or one that outlived its session here.
    /// Deleting it, compared on its session id, can only remove that stale
    /// record.
    pub(super) fn forget_stale_record(&self, client: ClientId, node: NodeId, session: Uuid) {
        let Some(permit) = self.background_permit() else {
            return;
        };
        let presence = self.ports.presence.clone();
        self.in_background(permit, async move {
            if let Err(e) = presence.remove(&client, &node, session).await {
                tracing::debug!(%client, error = %e, "could not delete a stale presence record");
            }
        });
    }
}
