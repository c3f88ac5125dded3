//! One contract, four presence stores: in-memory, Redis, Redis Cluster and
//! memcached each run the same cases against the real thing (the servers
//! are started here, on free loopback ports). Whatever the router and the
//! upkeep loop rely on is a case: insert, update, lookup,
//! compare-and-delete, takeover, atomic registration under contention, the
//! heartbeat, bulk re-registration, and the end of a dead node's records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::Redis;
use crate::support::servers::{Memcached, RedisCluster};
use switchboard::backends::{MemcachedPresence, MemoryPresence, RedisPresence};
use switchboard::config::{MemcachedTarget, RedisTarget};
use switchboard::presence::{PresenceRecord, PresenceStore};
use switchboard::protocol::{ClientId, NodeId};
use switchboard::redact::Secret;
use uuid::Uuid;

fn client(run: &str, name: &str) -> ClientId {
    ClientId::parse(&format!("{run}-{name}")).unwrap()
}

fn node(name: &str) -> NodeId {
    NodeId::parse(name).unwrap()
}

fn record(node_name: &str, since: u64) -> PresenceRecord {
    PresenceRecord {
        node: node(node_name),
        session: Uuid::new_v4(),
        since,
    }
}

/// The whole contract, case by case, on one store. Client ids carry a
/// fresh prefix, so a store shared with other runs does not interfere.
/// `expiry`: how long the store may take to forget a dead node's records
/// by itself (zero where `sweep` deletes them).
async fn contract(store: Arc<dyn PresenceStore>, expiry: Duration) {
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let started = Instant::now();
    insert_update_lookup(&*store, &run).await;
    compare_and_delete(&*store, &run).await;
    takeover(&*store, &run).await;
    registration_is_atomic(store.clone(), &run).await;
    heartbeat(&*store, &run).await;
    bulk_reregistration(&*store, &run).await;
    dead_nodes_records_end(&*store, &run, expiry).await;
    store.ping().await.expect("ping");
    eprintln!(
        "contract on {}: passed in {:?}",
        store.backend(),
        started.elapsed()
    );
}

async fn insert_update_lookup(store: &dyn PresenceStore, run: &str) {
    let alice = client(run, "alice");
    assert_eq!(store.lookup(&alice).await.unwrap(), None, "absent at first");
    let first = record("node-a", 1);
    assert_eq!(
        store.register(&alice, &first).await.unwrap(),
        None,
        "insert"
    );
    assert_eq!(store.lookup(&alice).await.unwrap(), Some(first.clone()));
    let second = record("node-a", 2);
    assert_eq!(
        store.register(&alice, &second).await.unwrap(),
        Some(first),
        "update returns what it replaced"
    );
    assert_eq!(store.lookup(&alice).await.unwrap(), Some(second));
}

async fn compare_and_delete(store: &dyn PresenceStore, run: &str) {
    let bob = client(run, "bob");
    let mine = record("node-a", 1);
    store.register(&bob, &mine).await.unwrap();
    assert!(
        !store
            .remove(&bob, &node("node-a"), Uuid::new_v4())
            .await
            .unwrap(),
        "another session's remove deletes nothing"
    );
    assert_eq!(store.lookup(&bob).await.unwrap(), Some(mine.clone()));
    assert!(store.remove(&bob, &mine.node, mine.session).await.unwrap());
    assert_eq!(store.lookup(&bob).await.unwrap(), None);
    assert!(
        !store.remove(&bob, &mine.node, mine.session).await.unwrap(),
        "a second remove finds nothing"
    );
}

async fn takeover(store: &dyn PresenceStore, run: &str) {
    let carol = client(run, "carol");
    let old = record("node-a", 1);
    let new = record("node-b", 2);
    store.register(&carol, &old).await.unwrap();
    assert_eq!(
        store.register(&carol, &new).await.unwrap(),
        Some(old.clone()),
        "the newer session learns which one to close"
    );
    assert!(
        !store.remove(&carol, &old.node, old.session).await.unwrap(),
        "the older session's late disconnect"
    );
    assert_eq!(store.lookup(&carol).await.unwrap(), Some(new));
}

/// Many sessions of one client registering at once, from many nodes: each
/// register must replace exactly one predecessor, so the replaced records
/// form one chain: every session but the last is replaced exactly once,
/// and exactly one register found nothing.
async fn registration_is_atomic(store: Arc<dyn PresenceStore>, run: &str) {
    let dave = client(run, "dave");
    let records: Vec<PresenceRecord> = (0..24)
        .map(|i| record(&format!("node-{}", i % 4), i))
        .collect();
    let tasks: Vec<_> = records
        .iter()
        .cloned()
        .map(|r| {
            let (store, dave) = (store.clone(), dave.clone());
            tokio::spawn(async move { store.register(&dave, &r).await.unwrap() })
        })
        .collect();
    let mut replaced = Vec::new();
    for task in tasks {
        replaced.push(task.await.unwrap());
    }
    let last = store.lookup(&dave).await.unwrap().expect("a record");
    assert_eq!(
        replaced.iter().filter(|r| r.is_none()).count(),
        1,
        "exactly one register found the client absent"
    );
    let mut sessions: Vec<Uuid> = replaced.iter().flatten().map(|r| r.session).collect();
    sessions.push(last.session);
    sessions.sort();
    let mut all: Vec<Uuid> = records.iter().map(|r| r.session).collect();
    all.sort();
    assert_eq!(sessions, all, "each session replaced once, or last");
}

async fn heartbeat(store: &dyn PresenceStore, run: &str) {
    let ttl = Duration::from_secs(3);
    let retention = Duration::from_secs(3600);
    let (me, other) = (format!("{run}-a|1|00"), format!("{run}-b|1|00"));
    let first = store.heartbeat(&me, ttl, retention).await.unwrap();
    assert!(first.own_was_missing, "a first beat finds itself missing");
    store.heartbeat(&other, ttl, retention).await.unwrap();
    let again = store.heartbeat(&me, ttl, retention).await.unwrap();
    assert!(!again.own_was_missing, "a later beat finds itself");
    let expiry = |member: &str| {
        again
            .members
            .iter()
            .find(|(m, _)| m == member)
            .map(|(_, e)| *e)
    };
    let mine = expiry(&me).expect("own entry listed");
    assert!(
        mine >= again.server_now_ms + 2_900 && mine <= again.server_now_ms + 3_100,
        "own entry expires a TTL after the store's now: {mine} vs {}",
        again.server_now_ms
    );
    assert!(expiry(&other).is_some(), "other nodes' entries listed");

    // Entries expired longer than the retention are dropped.
    let short = Duration::from_millis(1);
    let gone = format!("{run}-gone|1|00");
    store.heartbeat(&gone, short, retention).await.unwrap();
    let start = Instant::now();
    loop {
        let report = store.heartbeat(&me, ttl, short).await.unwrap();
        if !report.members.iter().any(|(m, _)| *m == gone) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "expired entry never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bulk_reregistration(store: &dyn PresenceStore, run: &str) {
    // Enough entries to span several batches of every backend.
    let entries: Vec<(ClientId, PresenceRecord)> = (0..1500)
        .map(|i| (client(run, &format!("bulk-{i}")), record("node-r", i)))
        .collect();
    // A third already there (same session), a third taken by a newer
    // session elsewhere, a third absent.
    let mut newer = Vec::new();
    for (i, (client, mine)) in entries.iter().enumerate() {
        match i % 3 {
            0 => {
                store.register(client, mine).await.unwrap();
            }
            1 => {
                let other = record("node-s", 10_000);
                store.register(client, &other).await.unwrap();
                newer.push((i, other));
            }
            _ => {}
        }
    }
    let results = store.reregister(&entries).await.unwrap();
    assert_eq!(results.len(), entries.len());
    let mut newer = newer.into_iter();
    for (i, ((client, mine), result)) in entries.iter().zip(results).enumerate() {
        let now = store.lookup(client).await.unwrap();
        if i % 3 == 1 {
            let (_, other) = newer.next().unwrap();
            assert_eq!(
                result,
                Some(other.clone()),
                "entry {i}: the newer one is named"
            );
            assert_eq!(now, Some(other), "entry {i}: the newer one is kept");
        } else {
            assert_eq!(result, None, "entry {i}");
            assert_eq!(now.as_ref(), Some(mine), "entry {i}: written back");
        }
    }
}

/// A dead node's records (written before its death) end: swept at once
/// where the store can list them, expired by their TTL where it cannot
/// (memcached), while live nodes keep refreshing theirs as nodes do. A
/// record the dead node's next run wrote stays.
async fn dead_nodes_records_end(store: &dyn PresenceStore, run: &str, expiry: Duration) {
    let ghosts: Vec<(ClientId, PresenceRecord)> = (0..50)
        .map(|i| (client(run, &format!("ghost-{i}")), record("node-dead", 100)))
        .collect();
    let live: Vec<(ClientId, PresenceRecord)> = (0..10)
        .map(|i| (client(run, &format!("live-{i}")), record("node-live", 100)))
        .collect();
    let later_run = (client(run, "reborn"), record("node-dead", 300));
    for (client, r) in ghosts.iter().chain(&live).chain([&later_run]) {
        store.register(client, r).await.unwrap();
    }
    store.sweep(&node("node-dead"), None, 200).await.unwrap();
    let deadline = Instant::now() + expiry + crate::support::EVENT_TIMEOUT;
    loop {
        store.reregister(&live).await.unwrap();
        store
            .reregister(std::slice::from_ref(&later_run))
            .await
            .unwrap();
        let mut left = 0;
        for (client, _) in &ghosts {
            left += usize::from(store.lookup(client).await.unwrap().is_some());
        }
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} records of the dead node are still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (client, r) in live.iter().chain([&later_run]) {
        assert_eq!(store.lookup(client).await.unwrap().as_ref(), Some(r));
    }
}

#[tokio::test]
async fn memory() {
    contract(Arc::new(MemoryPresence::new()), Duration::ZERO).await;
}

fn redis_target(urls: &str, cluster: bool) -> RedisTarget {
    RedisTarget {
        urls: urls.split(',').map(Secret::new).collect(),
        cluster,
        ca_file: None,
    }
}

#[tokio::test]
async fn redis() {
    let redis = Redis::start();
    let store = RedisPresence::connect(&redis_target(&redis.url(), false), "sb:")
        .await
        .unwrap();
    contract(Arc::new(store), Duration::ZERO).await;
}

#[tokio::test]
async fn redis_cluster() {
    let cluster = RedisCluster::start();
    let store = RedisPresence::connect(&redis_target(&cluster.seeds(), true), "sb:")
        .await
        .unwrap();
    contract(Arc::new(store), Duration::ZERO).await;
}

/// Long enough that no case outlives a record on a busy machine; the
/// dead-node case waits it out.
const MEMCACHED_TTL: Duration = Duration::from_secs(5);

#[tokio::test]
async fn memcached_one_server() {
    let memcached = Memcached::start();
    let target = MemcachedTarget {
        servers: vec![memcached.address()],
        record_ttl: MEMCACHED_TTL,
    };
    let store = MemcachedPresence::connect(&target, "sb:").await.unwrap();
    contract(Arc::new(store), MEMCACHED_TTL).await;
}

#[tokio::test]
async fn memcached_three_servers() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let target = MemcachedTarget {
        servers: servers.iter().map(Memcached::address).collect(),
        record_ttl: MEMCACHED_TTL,
    };
    let store = MemcachedPresence::connect(&target, "sb:").await.unwrap();
    contract(Arc::new(store), MEMCACHED_TTL).await;
}

/// A call abandoned half-way (its caller timed out, or its session closed)
/// may leave its reply unread on the connection; the next caller must
/// never read it as its own. Every abandoned exchange's connection is
/// closed, so lookups after hundreds of abandoned ones still see exactly
/// their own record.
#[tokio::test]
async fn memcached_abandoned_calls_never_answer_the_next_caller() {
    let memcached = Memcached::start();
    let target = MemcachedTarget {
        servers: vec![memcached.address()],
        record_ttl: Duration::from_secs(60),
    };
    let store = MemcachedPresence::connect(&target, "sb:").await.unwrap();
    let (alice, bob) = (client("cancel", "alice"), client("cancel", "bob"));
    let (a, b) = (record("node-a", 1), record("node-b", 2));
    store.register(&alice, &a).await.unwrap();
    store.register(&bob, &b).await.unwrap();
    let mut abandoned = 0;
    for i in 0..300 {
        // Cut off at varying points: after the write, waiting for the
        // reply, or part-way through reading it.
        if abandon_after(store.lookup(&alice), i % 8).await {
            abandoned += 1;
        }
        assert_eq!(
            store.lookup(&bob).await.unwrap().as_ref(),
            Some(&b),
            "after {i}"
        );
    }
    assert!(abandoned >= 10, "only {abandoned} calls were cut off");
}

/// Polls `future` up to `polls + 1` times, yielding in between, and drops
/// it if it has not finished: true when it was abandoned.
async fn abandon_after<F: std::future::Future>(future: F, polls: usize) -> bool {
    let mut future = std::pin::pin!(future);
    for _ in 0..=polls {
        let ready =
            std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready()))
                .await;
        if ready {
            return false;
        }
        tokio::task::yield_now().await;
    }
    true
}

/// Writes `value` at `key` behind the store's back.
fn memcached_set(memcached: &Memcached, key: &str, value: &str) {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(memcached.address()).unwrap();
    write!(stream, "ms {key} {} T60\r\n{value}\r\n", value.len()).unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("HD"), "{reply}");
}

/// A record that is not one (someone else wrote the key) is replaced by a
/// register or a re-registration, as Redis' scripts replace it, rather
/// than blocking them.
#[tokio::test]
async fn memcached_replaces_corrupt_records() {
    let memcached = Memcached::start();
    let target = MemcachedTarget {
        servers: vec![memcached.address()],
        record_ttl: Duration::from_secs(60),
    };
    let store = MemcachedPresence::connect(&target, "sb:").await.unwrap();
    let (alice, bob) = (client("corrupt", "alice"), client("corrupt", "bob"));
    memcached_set(&memcached, &format!("sb:presence:{alice}"), "not a record");
    memcached_set(&memcached, &format!("sb:presence:{bob}"), "not a record");
    assert!(
        store.lookup(&alice).await.is_err(),
        "a corrupt record is an error"
    );

    let mine = record("node-a", 1);
    assert_eq!(store.register(&alice, &mine).await.unwrap(), None);
    assert_eq!(store.lookup(&alice).await.unwrap(), Some(mine));

    // One at a time (not the batch path): the CAS loop of a single entry.
    let theirs = record("node-b", 2);
    let replaced = store
        .reregister(std::slice::from_ref(&(bob.clone(), theirs.clone())))
        .await
        .unwrap();
    assert_eq!(replaced, vec![None]);
    assert_eq!(store.lookup(&bob).await.unwrap(), Some(theirs));
}

/// A hung memcached is an error within about a second per call, however
/// many calls queue for its connections: waiting for one of the pool's
/// connections counts against the same bound as the exchange itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_memcached_answers_every_caller_in_bounded_time() {
    let memcached = Memcached::start();
    let target = MemcachedTarget {
        servers: vec![memcached.address()],
        record_ttl: Duration::from_secs(60),
    };
    let store = Arc::new(MemcachedPresence::connect(&target, "sb:").await.unwrap());
    memcached.freeze();
    let started = Instant::now();
    // Ten times the pool: without the bound, the last caller would wait
    // for ten rounds of timeouts ahead of it (about 10 s).
    let calls: Vec<_> = (0..160)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.lookup(&client("hung", &format!("c{i}"))).await })
        })
        .collect();
    for call in calls {
        assert!(matches!(
            call.await.unwrap(),
            Err(switchboard::presence::PresenceError::Unavailable { .. })
        ));
    }
    let took = started.elapsed();
    memcached.thaw();
    assert!(took < Duration::from_secs(6), "callers waited {took:?}");
}
