//! Finding a client's sessions: its record in the route cache, or read
//! from the store (many clients in one round trip), keeping only the
//! devices that are to be believed ([`Liveness`]).
//!
//! The patent looks a recipient up in the presence registry on every send;
//! the [`Locator`] does it at most once per cache lifetime, and cleans up
//! on the way: a device field naming a dead node, a ghost of an earlier
//! run, or one that outlived its session here is deleted (compared on its
//! session id, so that only that stale field can go) in the background.

use std::sync::Arc;

use super::background::Background;
use super::cache::{CachedDevice, CachedRoute, RouteCache};
use super::courier::Courier;
use super::liveness::{Belief, Liveness};
use super::offline::Offline;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::presence::{PresenceError, PresenceRecord, SessionRecords};
use crate::protocol::{ClientId, NodeId};

pub struct Locator {
    node: NodeId,
    records: Arc<dyn SessionRecords>,
    liveness: Arc<Liveness>,
    hub: Arc<Hub>,
    cache: Arc<RouteCache>,
    courier: Courier,
    offline: Arc<Offline>,
    metrics: Arc<Metrics>,
    background: Background,
}

/// What a locator works with.
pub struct LocatorParts {
    pub records: Arc<dyn SessionRecords>,
    pub liveness: Arc<Liveness>,
    pub hub: Arc<Hub>,
    pub cache: Arc<RouteCache>,
    pub courier: Courier,
    pub offline: Arc<Offline>,
    pub metrics: Arc<Metrics>,
    pub background: Background,
}

impl Locator {
    pub fn new(parts: LocatorParts) -> Self {
        Self {
            node: parts.liveness.me().node.clone(),
            records: parts.records,
            liveness: parts.liveness,
            hub: parts.hub,
            cache: parts.cache,
            courier: parts.courier,
            offline: parts.offline,
            metrics: parts.metrics,
            background: parts.background,
        }
    }

    pub fn cache(&self) -> &RouteCache {
        &self.cache
    }

    pub fn records(&self) -> &Arc<dyn SessionRecords> {
        &self.records
    }

    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// Forgets every cached route if the bus reconnected since they were
    /// read (broadcasts of changes may have been missed meanwhile).
    pub fn follow_bus(&self, generation: u64) {
        self.cache.follow_bus(generation);
    }

    /// A cached record whose remote devices are all believed, in the run
    /// they were read in.
    pub fn cached(&self, client: &ClientId) -> Option<CachedRoute> {
        let route = self.cache.get(client)?;
        let believed = route.iter().all(|d| {
            d.record.node == self.node
                || matches!(self.liveness.judge(&d.record.node, d.record.since),
                    Belief::Alive { epoch } if epoch == d.epoch)
        });
        if believed {
            Some(route)
        } else {
            self.cache.invalidate(client);
            None
        }
    }

    /// Reads `clients`' records from the store in one round trip, keeps
    /// the believed devices, and caches them.
    pub async fn lookup_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<CachedRoute>, PresenceError> {
        let read = self.lookup_noting_dead(clients).await?;
        Ok(read.into_iter().map(|(route, _)| route).collect())
    }

    /// [`lookup_many`](Self::lookup_many), saying for each client whether
    /// a device of it was dropped for naming a dead node.
    pub async fn lookup_noting_dead(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<(CachedRoute, bool)>, PresenceError> {
        self.metrics.presence_lookup();
        let seen: Vec<u64> = clients.iter().map(|c| self.cache.generation(c)).collect();
        let records = self.records.lookup_many(clients).await?;
        Ok(clients
            .iter()
            .zip(seen)
            .zip(records)
            .map(|((client, seen), records)| {
                let (route, dead) = self.believe_noting_dead(client, records);
                self.cache.insert(client.clone(), route.clone(), seen);
                (route, dead)
            })
            .collect())
    }

    /// `client`'s devices that are to be believed, read from the store (for
    /// the presence API).
    pub async fn devices(&self, client: &ClientId) -> Result<Vec<PresenceRecord>, PresenceError> {
        let records = self.records.lookup(client).await?;
        Ok(self
            .believe(client, records)
            .iter()
            .map(|d| d.record.clone())
            .collect())
    }

    /// The devices of a record that are to be believed. The others (a
    /// crashed node's, a ghost of an earlier run, one that outlived its
    /// session here) are deleted on the way, compared on their session.
    pub fn believe(&self, client: &ClientId, records: Vec<PresenceRecord>) -> CachedRoute {
        self.believe_noting_dead(client, records).0
    }

    /// [`believe`](Self::believe), and whether a device named a dead node.
    fn believe_noting_dead(
        &self,
        client: &ClientId,
        records: Vec<PresenceRecord>,
    ) -> (CachedRoute, bool) {
        let mut dead = false;
        let route = records
            .into_iter()
            .filter_map(|record| {
                if record.node == self.node {
                    // Sessions register here before their field is
                    // written, so a field naming this node with no session
                    // here is left over (a ghost, or a close whose delete
                    // is still on its way).
                    if self.hub.get_session(client, record.session).is_none() {
                        self.forget_stale_record(client.clone(), record, false);
                        return None;
                    }
                    return Some(CachedDevice { record, epoch: 0 });
                }
                match self.liveness.judge(&record.node, record.since) {
                    Belief::Dead => {
                        dead = true;
                        self.forget_stale_record(client.clone(), record, true);
                        None
                    }
                    Belief::Alive { epoch } => Some(CachedDevice { record, epoch }),
                }
            })
            .collect();
        (route, dead)
    }

    /// A device field that must not be believed: one naming a dead node, a
    /// ghost of this node's earlier run, or one that outlived its session
    /// here. Deleting it, compared on its session id, can only remove that
    /// stale field. A field of a `dead` node's session that is deleted here
    /// ends that session (announced, and written as last-seen if it was
    /// the last).
    fn forget_stale_record(&self, client: ClientId, record: PresenceRecord, dead: bool) {
        let records = self.records.clone();
        let courier = self.courier.clone();
        let offline = dead.then(|| self.offline.clone());
        // Past the bound it is left: the next lookup finds it again.
        let _ = self.background.try_spawn(async move {
            match records
                .remove(&client, &record.device, &record.node, record.session)
                .await
            {
                Ok(true) => {
                    if let Some(offline) = offline {
                        offline.ended_with_its_node(&client, &record).await;
                    }
                    courier.changed_client(client)
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(%client, error = %e, "could not delete a stale presence record")
                }
            }
        });
    }
}
