//! One contract, two inbox stores (v2): memory and Redis Streams run the
//! same cases against the real thing (redis-server started here). Whatever
//! the offline branch relies on is a case: appends in order with their
//! summary, the per-client cap, one device draining at a time (a lease a
//! newer session of the same device takes over, that another device waits
//! out, that a release or its expiry ends), deletes of what was delivered,
//! clearing, and the TTL by the store's own clock, for an inbox nobody
//! claims.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::Redis;
use switchboard::backends::{MemoryInbox, RedisInbox};
use switchboard::config::RedisTarget;
use switchboard::inbox::{InboxError, InboxLimits, InboxStore, StoredMessage};
use switchboard::protocol::{ClientId, DeviceId};
use switchboard::redact::Secret;
use uuid::Uuid;

/// The limits every store runs the contract under.
const LIMITS: InboxLimits = InboxLimits {
    max_messages: 3,
    ttl: Duration::from_secs(2),
};
/// How long a claim lasts in the cases that wait for one to lapse.
const SHORT_LEASE: Duration = Duration::from_millis(300);
const LONG_LEASE: Duration = Duration::from_secs(60);

fn client(run: &str, name: &str) -> ClientId {
    ClientId::parse(&format!("{run}-{name}")).unwrap()
}

fn device(name: &str) -> DeviceId {
    DeviceId::parse(name).unwrap()
}

fn frames(stored: &[StoredMessage]) -> Vec<&str> {
    stored.iter().map(|s| s.frame.as_str()).collect()
}

/// Polls `check` until it holds, or fails after `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn contract(store: Arc<dyn InboxStore>) {
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let store = &*store;
    appends_in_order_up_to_the_cap(store, &run).await;
    one_device_drains_at_a_time(store, &run).await;
    a_lapsed_claim_lets_another_device_drain(store, &run).await;
    deletes_and_clearing(store, &run).await;
    messages_expire_even_unread(store, &run).await;
    store.ping().await.expect("ping");
}

async fn appends_in_order_up_to_the_cap(store: &dyn InboxStore, run: &str) {
    let bob = client(run, "cap-bob");
    assert_eq!(store.summary(&bob).await.unwrap().count, 0);
    assert_eq!(store.summary(&bob).await.unwrap().oldest, None);
    let before = switchboard::protocol::now_ms();
    for n in 1..=3 {
        store.append(&bob, &format!("m{n}")).await.unwrap();
    }
    assert!(matches!(
        store.append(&bob, "m4").await,
        Err(InboxError::Full)
    ));
    let summary = store.summary(&bob).await.unwrap();
    assert_eq!(summary.count, 3, "the refused one is not stored");
    let oldest = summary.oldest.expect("an oldest");
    assert!(oldest + 1_000 >= before, "{oldest} vs {before}");
    let phone = Uuid::new_v4();
    let stored = store
        .claim(&bob, &device("phone"), phone, LONG_LEASE)
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(frames(&stored), ["m1", "m2", "m3"], "oldest first");
}

async fn one_device_drains_at_a_time(store: &dyn InboxStore, run: &str) {
    let bob = client(run, "lease-bob");
    // An empty inbox is not claimed: a device connecting later may drain
    // what is stored after.
    let early = store
        .claim(&bob, &device("laptop"), Uuid::new_v4(), LONG_LEASE)
        .await
        .unwrap();
    assert_eq!(early.as_deref().map(frames), Some(vec![]));
    store.append(&bob, "a").await.unwrap();
    let phone = Uuid::new_v4();
    let claimed = store.claim(&bob, &device("phone"), phone, LONG_LEASE).await;
    assert_eq!(claimed.unwrap().as_deref().map(frames), Some(vec!["a"]));
    // Another device waits while the phone drains.
    let laptop = Uuid::new_v4();
    let refused = store
        .claim(&bob, &device("laptop"), laptop, LONG_LEASE)
        .await;
    assert_eq!(refused.unwrap(), None);
    // A newer session of the same device takes the claim over.
    let phone_again = Uuid::new_v4();
    let taken = store
        .claim(&bob, &device("phone"), phone_again, LONG_LEASE)
        .await;
    assert_eq!(taken.unwrap().as_deref().map(frames), Some(vec!["a"]));
    // A release by a session that no longer holds it changes nothing...
    store.release(&bob, phone).await.unwrap();
    let refused = store
        .claim(&bob, &device("laptop"), laptop, LONG_LEASE)
        .await;
    assert_eq!(refused.unwrap(), None);
    // ...the holder's does.
    store.release(&bob, phone_again).await.unwrap();
    let claimed = store
        .claim(&bob, &device("laptop"), laptop, LONG_LEASE)
        .await;
    assert_eq!(claimed.unwrap().as_deref().map(frames), Some(vec!["a"]));
}

async fn a_lapsed_claim_lets_another_device_drain(store: &dyn InboxStore, run: &str) {
    let bob = client(run, "lapse-bob");
    store.append(&bob, "x").await.unwrap();
    let phone = Uuid::new_v4();
    let claimed = store
        .claim(&bob, &device("phone"), phone, SHORT_LEASE)
        .await;
    assert!(claimed.unwrap().is_some());
    // The phone's node died without releasing: the lease lapses by the
    // store's clock.
    until("the lease lapses", Duration::from_secs(5), || async {
        store
            .claim(&bob, &device("laptop"), Uuid::new_v4(), LONG_LEASE)
            .await
            .unwrap()
            .is_some()
    })
    .await;
}

async fn deletes_and_clearing(store: &dyn InboxStore, run: &str) {
    let bob = client(run, "del-bob");
    for frame in ["1", "2", "3"] {
        store.append(&bob, frame).await.unwrap();
    }
    let session = Uuid::new_v4();
    let stored = store
        .claim(&bob, &device("phone"), session, LONG_LEASE)
        .await
        .unwrap()
        .unwrap();
    // Delivered: the first two go; the third stays for the next session.
    let delivered: Vec<String> = stored[..2].iter().map(|s| s.entry.clone()).collect();
    store.remove(&bob, &delivered).await.unwrap();
    // Deleting again is harmless.
    store.remove(&bob, &delivered).await.unwrap();
    store.release(&bob, session).await.unwrap();
    let rest = store
        .claim(&bob, &device("phone"), Uuid::new_v4(), LONG_LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frames(&rest), ["3"]);
    assert_eq!(store.summary(&bob).await.unwrap().count, 1);
    assert!(store.clear(&bob).await.unwrap(), "it held something");
    assert!(!store.clear(&bob).await.unwrap(), "nothing left");
    let summary = store.summary(&bob).await.unwrap();
    assert_eq!((summary.count, summary.oldest), (0, None));
}

async fn messages_expire_even_unread(store: &dyn InboxStore, run: &str) {
    let bob = client(run, "ttl-bob");
    store.append(&bob, "soon gone").await.unwrap();
    assert_eq!(store.summary(&bob).await.unwrap().count, 1);
    // Nobody claims it: it goes by the store's clock alone.
    until("the message expires", Duration::from_secs(10), || async {
        store.summary(&bob).await.unwrap().count == 0
    })
    .await;
    let claimed = store
        .claim(&bob, &device("phone"), Uuid::new_v4(), LONG_LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.as_deref().map(frames), Some(vec![]));
}

#[tokio::test]
async fn memory() {
    contract(Arc::new(MemoryInbox::new(LIMITS))).await;
}

#[tokio::test]
async fn redis() {
    let redis = Redis::start();
    let target = RedisTarget {
        urls: vec![Secret::new(redis.url())],
        cluster: false,
        ca_file: None,
    };
    let store = RedisInbox::connect(&target, "sb:", LIMITS).await.unwrap();
    contract(Arc::new(store)).await;
}
