//! Timing behaviour on the test bed, with paused time: nodes on the
//! in-memory backends, clients over in-memory pipes. Nothing here sleeps
//! in real time; deadlines (the hop timeout, the linger, the node TTL)
//! pass because the clock moves while every task waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use switchboard::backends::MemoryPresence;
use switchboard::presence::{
    ContactAdded, ContactStore, GroupStore, HeartbeatReport, Heartbeats, LastSeen, LastSeenStore,
    MemberAdded, PresenceError, PresenceRecord, PresenceStore, Registered, SessionRecords,
    WatchStore,
};
use switchboard::protocol::{
    AckStatus, ClientId, DeviceId, GroupId, NodeId, OfflineReason, ReceiptStatus, ServerFrame,
};
use switchboard_client::Client;
use uuid::Uuid;

use crate::support::*;

/// The next frame of `client`, which must be a receipt: its status and
/// reason.
async fn receipt(client: &mut Client) -> (ReceiptStatus, Option<OfflineReason>) {
    match next_frame(client).await {
        ServerFrame::Receipt { status, reason, .. } => (status, reason),
        other => panic!("expected a receipt, got {other:?}"),
    }
}

/// A cross-node message without a receipt asked for is still reported
/// back to its sender's node, which stops tracking it: past the hop
/// timeout the sender hears nothing. One whose outcome never comes (its
/// envelope lost on the way) is answered `offline` at the hop timeout.
#[tokio::test(start_paused = true)]
async fn outcomes_return_even_when_no_receipt_was_asked_for() {
    let bed = Bed::new();
    let flags = ["--write-timeout-ms", "500", "--hop-timeout-ms", "1000"];
    let (a, b) = bed.pair(&flags).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    for i in 0..20 {
        let ack = within(alice.send_for_ack("bob", &json!(i), false))
            .await
            .unwrap();
        assert_eq!(ack.status, AckStatus::Remote);
        assert_eq!(message(&mut bob).await.body, json!(i));
    }
    eventually("node a has every outcome", || async {
        a.node().router().outcomes().in_flight() == 0
    })
    .await;
    // Past the hop timeout: no receipt (none was asked for, and the
    // outcome came back). A ping's pong is the next frame.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    alice.ping(Some("after")).await.unwrap();
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Pong { .. }
    ));

    // From now on, what goes to node b is lost on the way: no outcome
    // comes, and each is answered offline at the hop timeout.
    bed.lose_envelopes_to("node-b");
    for i in 0..20 {
        let ack = within(alice.send_for_ack("bob", &json!(i), false))
            .await
            .unwrap();
        assert_eq!(ack.status, AckStatus::Remote);
    }
    let sent = tokio::time::Instant::now();
    for _ in 0..20 {
        let (status, _) = receipt(&mut alice).await;
        assert_eq!(status, ReceiptStatus::Offline);
    }
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "answered after {waited:?}"
    );
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
        if member.starts_with("node-a|") && self.forget.swap(false, Ordering::SeqCst) {
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

    async fn groups_of(&self, client: &ClientId) -> Result<Vec<GroupId>, PresenceError> {
        self.inner.groups_of(client).await
    }
}

#[async_trait::async_trait]
impl ContactStore for SlowRestore {
    async fn add_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
        max: usize,
    ) -> Result<ContactAdded, PresenceError> {
        self.inner.add_contact(client, contact, max).await
    }

    async fn remove_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
    ) -> Result<bool, PresenceError> {
        self.inner.remove_contact(client, contact).await
    }

    async fn contacts(&self, client: &ClientId) -> Result<Vec<ClientId>, PresenceError> {
        self.inner.contacts(client).await
    }
}

#[async_trait::async_trait]
impl WatchStore for SlowRestore {
    async fn add_watcher(&self, node: &NodeId, clients: &[ClientId]) -> Result<(), PresenceError> {
        self.inner.add_watcher(node, clients).await
    }

    async fn remove_watcher(
        &self,
        node: &NodeId,
        clients: &[ClientId],
    ) -> Result<(), PresenceError> {
        self.inner.remove_watcher(node, clients).await
    }

    async fn watchers(&self, clients: &[ClientId]) -> Result<Vec<Vec<NodeId>>, PresenceError> {
        self.inner.watchers(clients).await
    }

    async fn forget_watcher(&self, node: &NodeId) -> Result<(), PresenceError> {
        self.inner.forget_watcher(node).await
    }

    async fn set_invisible(
        &self,
        client: &ClientId,
        since: Option<u64>,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        self.inner.set_invisible(client, since, ttl).await
    }

    async fn invisible(&self, clients: &[ClientId]) -> Result<Vec<Option<u64>>, PresenceError> {
        self.inner.invisible(clients).await
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
    let bed = Bed::with_presence(store.clone());
    let (a, b) = bed.pair(&["--node-ttl-ms", "1000"]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;

    store.forget.store(true, Ordering::SeqCst);
    eventually("node a started restoring", || async {
        !store.forget.load(Ordering::SeqCst)
    })
    .await;
    // Well past a TTL into the restore: node a must still be alive to b.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(store.restores.load(Ordering::SeqCst), 0, "still restoring");
    let ack = within(bob.send_for_ack("alice", &json!("still there?"), true))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Remote);
    assert_eq!(message(&mut alice).await.body, json!("still there?"));
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
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;

    let ack = within(alice.send_for_ack("bob", &json!(1), false))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Remote);
    message(&mut bob).await;
    let written = tokio::time::Instant::now();
    eventually("node a hears the quiet outcome", || async {
        a.node().router().outcomes().in_flight() == 0
    })
    .await;
    let waited = written.elapsed();
    assert!(
        waited >= LINGER - Duration::from_millis(1) && waited <= LINGER + Duration::from_millis(50),
        "it lingered {waited:?}"
    );

    let ack = within(alice.send_for_ack("bob", &json!(2), true))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Remote);
    message(&mut bob).await;
    let written = tokio::time::Instant::now();
    assert_eq!(receipt(&mut alice).await, (ReceiptStatus::Delivered, None));
    assert!(
        written.elapsed() < Duration::from_millis(5),
        "{:?}",
        written.elapsed()
    );
}

/// The message hops in each envelope `hops` has seen so far.
fn hops_per_envelope(hops: &mut tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>) -> Vec<usize> {
    use switchboard::protocol::{Envelope, Hop};
    let mut per = Vec::new();
    while let Ok(raw) = hops.try_recv() {
        let envelope = Envelope::decode(&raw).unwrap();
        let n = envelope
            .into_hops()
            .filter(|hop| matches!(hop, Hop::Message(_)))
            .count();
        if n > 0 {
            per.push(n);
        }
    }
    per
}

/// `--bus-linger-ms`: a message that would go to another node alone waits
/// up to the linger for company, and one more sent meanwhile shares its
/// envelope; off (the default), each goes at once in its own.
#[tokio::test(start_paused = true)]
async fn a_lone_message_lingers_for_company_only_when_asked() {
    for linger in [0u64, 5] {
        let bed = Bed::new();
        let flag = linger.to_string();
        let (a, b) = bed.pair(&["--bus-linger-ms", &flag]).await;
        let mut alice = connect(&a, "alice").await;
        let mut bob = connect(&b, "bob").await;
        let mut hops = bed.watch("node-b");

        // Alone: it waits the linger, no more.
        let sent = tokio::time::Instant::now();
        alice.send("bob", &json!(1), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        assert_eq!(message(&mut bob).await.body, json!(1));
        let waited = sent.elapsed();
        let linger = Duration::from_millis(linger);
        assert!(
            waited >= linger && waited <= linger + Duration::from_millis(2),
            "linger {linger:?}: it arrived after {waited:?}"
        );
        assert_eq!(hops_per_envelope(&mut hops), [1]);

        // A second message a millisecond later.
        alice.send("bob", &json!(2), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        tokio::time::advance(Duration::from_millis(1)).await;
        alice.send("bob", &json!(3), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        assert_eq!(message(&mut bob).await.body, json!(2));
        assert_eq!(message(&mut bob).await.body, json!(3));
        let expected: &[usize] = if linger.is_zero() { &[1, 1] } else { &[2] };
        assert_eq!(hops_per_envelope(&mut hops), expected, "linger {linger:?}");
    }
}
