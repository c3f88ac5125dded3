//! Timing behaviour on the embedded backends, with paused time: nodes
//! assembled in this process on the in-memory presence store and bus, with
//! sessions that have no socket ([`FakeSession`]). Nothing here sleeps in
//! real time; deadlines (the hop timeout, the node TTL) pass because the
//! test advances the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use switchboard::backends::{MemoryHub, MemoryPresence};
use switchboard::presence::{
    GroupStore, HeartbeatReport, Heartbeats, LastSeen, LastSeenStore, MemberAdded, PresenceError,
    PresenceRecord, PresenceStore, Registered, SessionRecords,
};
use switchboard::protocol::{AckStatus, ClientId, DeviceId, GroupId, NodeId};
use uuid::Uuid;

use crate::support::{FakeSession, assembled, eventually};

/// Two nodes, `a` and `b`, on one in-memory store and hub.
pub async fn pair(
    presence: Arc<dyn PresenceStore>,
    flags: &[&str],
) -> (
    (Arc<switchboard::node::Node>, switchboard::node::Lifetime),
    (Arc<switchboard::node::Node>, switchboard::node::Lifetime),
) {
    let hub = MemoryHub::new();
    let with = |id: &'static str| {
        let mut all = vec!["--node-id", id];
        all.extend_from_slice(flags);
        all
    };
    let a = assembled(&with("a"), presence.clone(), Arc::new(hub.bus())).await;
    let b = assembled(&with("b"), presence, Arc::new(hub.bus())).await;
    (a, b)
}

/// A cross-node message without a receipt asked for is still reported
/// back to its sender's node, which stops tracking it: past the hop
/// timeout the sender hears nothing. One whose outcome never comes is
/// answered `offline` at the hop timeout.
#[tokio::test(start_paused = true)]
async fn outcomes_return_even_when_no_receipt_was_asked_for() {
    let ((a, _la), (b, _lb)) = pair(
        Arc::new(MemoryPresence::new()),
        &["--write-timeout-ms", "500", "--hop-timeout-ms", "1000"],
    )
    .await;
    let alice = FakeSession::open(&a, "alice").await;
    let bob = FakeSession::open(&b, "bob").await;
    for _ in 0..20 {
        let sent = a.router().route(alice.message("bob", false)).await.unwrap();
        assert_eq!(sent.status, AckStatus::Remote);
    }
    eventually("bob has them all", || async {
        bob.handle.outbox.take().messages.len() >= 20 || bob.handle.outbox.closing().is_some()
    })
    .await;
    // Those were taken without being "written": their outcomes never come,
    // and they are answered offline at the hop timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, receipts) = alice.write().await;
    assert_eq!(receipts.len(), 20, "{receipts:?}");
    assert!(receipts.iter().all(|r| r.contains("\"offline\"")));

    for _ in 0..20 {
        let sent = a.router().route(alice.message("bob", false)).await.unwrap();
        assert_eq!(sent.status, AckStatus::Remote);
    }
    let mut written = 0;
    while written < 20 {
        bob.handle.outbox.ready().await;
        written += bob.write().await.0.len();
    }
    eventually("node a has every outcome", || async {
        a.router().outcomes().in_flight() == 0
    })
    .await;
    // Past the hop timeout: no receipt (none was asked for, and the
    // outcome came back).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, receipts) = alice.write().await;
    assert!(receipts.is_empty(), "{receipts:?}");
}

/// The in-memory store with one twist: after `forget`, node `a`'s next
/// heartbeat reports it missing (what a store that lost its data says),
/// and re-registration takes `delay`, as it does for a very large node.
struct SlowRestore {
    inner: MemoryPresence,
    delay: Duration,
    forget: AtomicBool,
    restores: AtomicUsize,
}

#[async_trait::async_trait]
impl SessionRecords for SlowRestore {
    async fn register(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
        max_devices: usize,
    ) -> Result<Registered, PresenceError> {
        self.inner.register(client, record, max_devices).await
    }

    async fn lookup(&self, client: &ClientId) -> Result<Vec<PresenceRecord>, PresenceError> {
        self.inner.lookup(client).await
    }

    async fn remove(
        &self,
        client: &ClientId,
        device: &DeviceId,
        node: &NodeId,
        session: Uuid,
    ) -> Result<bool, PresenceError> {
        self.inner.remove(client, device, node, session).await
    }

    async fn reregister(
        &self,
        entries: &[(ClientId, PresenceRecord)],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError> {
        tokio::time::sleep(self.delay).await;
        let done = self.inner.reregister(entries).await;
        self.restores.fetch_add(1, Ordering::SeqCst);
        done
    }

    fn refresh_interval(&self, _configured: Duration) -> Option<Duration> {
        None
    }
}

#[async_trait::async_trait]
impl Heartbeats for SlowRestore {
    async fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
        retention: Duration,
    ) -> Result<HeartbeatReport, PresenceError> {
        let mut report = self.inner.heartbeat(member, ttl, retention).await?;
        if member.starts_with("a|") && self.forget.swap(false, Ordering::SeqCst) {
            report.own_was_missing = true;
        }
        Ok(report)
    }

    async fn sweep(
        &self,
        node: &NodeId,
        lost_run: Option<u64>,
        before_since: u64,
    ) -> Result<Vec<(ClientId, PresenceRecord)>, PresenceError> {
        self.inner.sweep(node, lost_run, before_since).await
    }
}

#[async_trait::async_trait]
impl GroupStore for SlowRestore {
    async fn add_member(
        &self,
        group: &GroupId,
        client: &ClientId,
        max_members: usize,
    ) -> Result<MemberAdded, PresenceError> {
        self.inner.add_member(group, client, max_members).await
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        client: &ClientId,
    ) -> Result<bool, PresenceError> {
        self.inner.remove_member(group, client).await
    }

    async fn members(&self, group: &GroupId) -> Result<Vec<ClientId>, PresenceError> {
        self.inner.members(group).await
    }
}

#[async_trait::async_trait]
impl LastSeenStore for SlowRestore {
    async fn set_last_seen(
        &self,
        client: &ClientId,
        seen: LastSeen,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        self.inner.set_last_seen(client, seen, ttl).await
    }

    async fn last_seen_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<LastSeen>>, PresenceError> {
        self.inner.last_seen_many(clients).await
    }
}

#[async_trait::async_trait]
impl PresenceStore for SlowRestore {
    async fn ping(&self) -> Result<(), PresenceError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "slow-restore"
    }
}

/// A node re-registering after the store lost its data keeps
/// heartbeating meanwhile: however long the restore takes (here three
/// node TTLs), the other nodes go on believing it alive and routing to it.
#[tokio::test(start_paused = true)]
async fn a_long_restore_does_not_stop_the_heartbeat() {
    let store = Arc::new(SlowRestore {
        inner: MemoryPresence::new(),
        delay: Duration::from_secs(3),
        forget: AtomicBool::new(false),
        restores: AtomicUsize::new(0),
    });
    let ((a, _la), (b, _lb)) = pair(store.clone(), &["--node-ttl-ms", "1000"]).await;
    let alice = FakeSession::open(&a, "alice").await;
    let bob = FakeSession::open(&b, "bob").await;

    store.forget.store(true, Ordering::SeqCst);
    eventually("node a started restoring", || async {
        !store.forget.load(Ordering::SeqCst)
    })
    .await;
    // Well past a TTL into the restore: node a must still be alive to b.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(store.restores.load(Ordering::SeqCst), 0, "still restoring");
    let sent = b.router().route(bob.message("alice", true)).await.unwrap();
    assert_eq!(sent.status, AckStatus::Remote);
    alice.handle.outbox.ready().await;
    let (messages, _) = alice.write().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    eventually("the restore finished", || async {
        store.restores.load(Ordering::SeqCst) == 1
    })
    .await;
}

/// A `delivered` outcome nobody waits for (no receipt asked) lingers at
/// most `LINGER` for company before it goes alone; one whose sender asked
/// for a receipt goes at once.
#[tokio::test(start_paused = true)]
async fn quiet_outcomes_linger_briefly_and_receipts_do_not() {
    use switchboard::routing::courier::LINGER;
    let ((a, _la), (b, _lb)) = pair(Arc::new(MemoryPresence::new()), &[]).await;
    let alice = FakeSession::open(&a, "alice").await;
    let bob = FakeSession::open(&b, "bob").await;

    let sent = a.router().route(alice.message("bob", false)).await.unwrap();
    assert_eq!(sent.status, AckStatus::Remote);
    bob.handle.outbox.ready().await;
    assert_eq!(bob.write().await.0.len(), 1);
    let written = tokio::time::Instant::now();
    eventually("node a hears the quiet outcome", || async {
        a.router().outcomes().in_flight() == 0
    })
    .await;
    let waited = written.elapsed();
    assert!(
        waited >= LINGER - Duration::from_millis(1) && waited <= LINGER + Duration::from_millis(50),
        "it lingered {waited:?}"
    );

    let sent = a.router().route(alice.message("bob", true)).await.unwrap();
    assert_eq!(sent.status, AckStatus::Remote);
    bob.handle.outbox.ready().await;
    bob.write().await;
    let written = tokio::time::Instant::now();
    alice.handle.outbox.ready().await;
    let (_, receipts) = alice.write().await;
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert!(receipts[0].contains("delivered"));
    assert!(
        written.elapsed() < Duration::from_millis(5),
        "{:?}",
        written.elapsed()
    );
}
