//! The inbox in this process's memory: for a node on its own
//! (`--inbox memory`). Same semantics as the Redis one; lost when the node
//! stops.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::memory_clock::StoreClock;
use crate::inbox::{InboxError, InboxLimits, InboxStore, InboxSummary, StoredMessage};
use crate::lock::Locked;
use crate::protocol::{ClientId, DeviceId};

#[derive(Default)]
struct Client {
    /// (id, stored at ms, frame), oldest first.
    messages: VecDeque<(u64, u64, String)>,
    /// The draining device and session, and when its claim ends (ms).
    lease: Option<(DeviceId, Uuid, u64)>,
}

pub struct MemoryInbox {
    limits: InboxLimits,
    clock: StoreClock,
    clients: Mutex<HashMap<ClientId, Client>>,
    next_id: Mutex<u64>,
}

impl MemoryInbox {
    pub fn new(limits: InboxLimits) -> Self {
        Self {
            limits,
            clock: StoreClock::default(),
            clients: Mutex::default(),
            next_id: Mutex::new(1),
        }
    }

    /// Runs `f` on `client`'s inbox, its expired messages dropped first;
    /// an inbox left empty and unclaimed goes.
    fn with<T>(&self, client: &ClientId, f: impl FnOnce(&mut Client, u64) -> T) -> T {
        let now = self.clock.now_ms();
        let oldest_kept = now.saturating_sub(self.limits.ttl.as_millis() as u64);
        let mut clients = self.clients.locked();
        let inbox = clients.entry(client.clone()).or_default();
        while inbox.messages.front().is_some_and(|m| m.1 < oldest_kept) {
            inbox.messages.pop_front();
        }
        if inbox
            .lease
            .as_ref()
            .is_some_and(|(_, _, until)| *until <= now)
        {
            inbox.lease = None;
        }
        let out = f(inbox, now);
        if inbox.messages.is_empty() && inbox.lease.is_none() {
            clients.remove(client);
        }
        out
    }
}

impl MemoryInbox {
    /// Drops expired messages of every client, each time the number of
    /// inboxes has doubled (from 1,024): an inbox nobody reads again would
    /// otherwise keep its messages past the TTL (Redis expires its keys).
    fn prune(&self) {
        let mut clients = self.clients.locked();
        if clients.len() < 1024 || !clients.len().is_power_of_two() {
            return;
        }
        let oldest_kept = self
            .clock
            .now_ms()
            .saturating_sub(self.limits.ttl.as_millis() as u64);
        clients.retain(|_, inbox| {
            inbox.messages.retain(|m| m.1 >= oldest_kept);
            !inbox.messages.is_empty() || inbox.lease.is_some()
        });
    }
}

#[async_trait]
impl InboxStore for MemoryInbox {
    async fn append(&self, client: &ClientId, frame: &str) -> Result<(), InboxError> {
        let id = {
            let mut next = self.next_id.locked();
            *next += 1;
            *next
        };
        self.prune();
        self.with(client, |inbox, now| {
            if inbox.messages.len() >= self.limits.max_messages {
                return Err(InboxError::Full);
            }
            inbox.messages.push_back((id, now, frame.to_owned()));
            Ok(())
        })
    }

    async fn claim(
        &self,
        client: &ClientId,
        device: &DeviceId,
        session: Uuid,
        lease: Duration,
    ) -> Result<Option<Vec<StoredMessage>>, InboxError> {
        Ok(self.with(client, |inbox, now| {
            if inbox
                .lease
                .as_ref()
                .is_some_and(|(holder, _, _)| holder != device)
            {
                return None;
            }
            if inbox.messages.is_empty() {
                return Some(Vec::new());
            }
            inbox.lease = Some((device.clone(), session, now + lease.as_millis() as u64));
            Some(
                inbox
                    .messages
                    .iter()
                    .map(|(id, _, frame)| StoredMessage {
                        entry: id.to_string(),
                        frame: frame.clone(),
                    })
                    .collect(),
            )
        }))
    }

    async fn release(&self, client: &ClientId, session: Uuid) -> Result<(), InboxError> {
        self.with(client, |inbox, _| {
            if inbox
                .lease
                .as_ref()
                .is_some_and(|(_, holder, _)| *holder == session)
            {
                inbox.lease = None;
            }
        });
        Ok(())
    }

    async fn remove(&self, client: &ClientId, entries: &[String]) -> Result<(), InboxError> {
        self.with(client, |inbox, _| {
            inbox
                .messages
                .retain(|(id, _, _)| !entries.iter().any(|e| *e == id.to_string()));
        });
        Ok(())
    }

    async fn summary(&self, client: &ClientId) -> Result<InboxSummary, InboxError> {
        Ok(self.with(client, |inbox, _| InboxSummary {
            count: inbox.messages.len() as u64,
            oldest: inbox.messages.front().map(|m| m.1),
        }))
    }

    async fn clear(&self, client: &ClientId) -> Result<bool, InboxError> {
        Ok(self.with(client, |inbox, _| {
            let had = !inbox.messages.is_empty();
            inbox.messages.clear();
            inbox.lease = None;
            had
        }))
    }

    async fn ping(&self) -> Result<(), InboxError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
