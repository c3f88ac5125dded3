//! One contract, four presence stores: in-memory, Redis, Redis Cluster and
//! memcached each run the same cases against the real thing (the servers
//! are started here, on free loopback ports), port by port. Whatever the
//! routing services and the upkeep loop rely on is a case:
//!
//! - `SessionRecords`: a field per device (insert, update, lookup, several
//!   at once, the `--max-devices` cap), compare-and-delete per field,
//!   takeover of a device, atomic registration under contention (a
//!   same-device takeover racing different-device registers, and racing
//!   the cap), batched lookups, bulk re-registration;
//! - `Heartbeats`: the heartbeat, the end of a dead node's fields;
//! - `GroupStore` (v2): add, remove, list, the member cap, also under
//!   contention;
//! - `LastSeenStore` (v2): batched reads, the newest wins, the TTL;
//! - `ContactStore` (v3): add, remove, list, the contact cap, also under
//!   contention; `GroupStore::groups_of`, the reverse index;
//! - `WatchStore` (v3): watcher nodes per client, batched, forgotten per
//!   node; invisibility with its TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::Redis;
use crate::support::servers::{Memcached, RedisCluster};
use switchboard::backends::{MemcachedPresence, MemoryPresence, RedisPresence};
use switchboard::config::{MemcachedTarget, RedisTarget};
use switchboard::presence::{
    ContactAdded, MemberAdded, PresenceRecord, PresenceStore, Registered, SessionRecords,
};
use switchboard::protocol::{ClientId, DeviceId, GroupId, NodeId};
use switchboard::redact::Secret;
use uuid::Uuid;

/// The cap the cases register under, unless they test it.
const MANY: usize = 64;

fn client(run: &str, name: &str) -> ClientId {
    ClientId::parse(&format!("{run}-{name}")).unwrap()
}

fn node(name: &str) -> NodeId {
    NodeId::parse(name).unwrap()
}

fn device(name: &str) -> DeviceId {
    DeviceId::parse(name).unwrap()
}

fn record(node_name: &str, since: u64) -> PresenceRecord {
    on("default", node_name, since)
}

fn on(device_name: &str, node_name: &str, since: u64) -> PresenceRecord {
    PresenceRecord {
        device: device(device_name),
        node: node(node_name),
        session: Uuid::new_v4(),
        since,
    }
}

/// A client's devices, in device order.
async fn devices(store: &dyn PresenceStore, client: &ClientId) -> Vec<PresenceRecord> {
    let mut all = store.lookup(client).await.unwrap();
    all.sort_by(|a, b| a.device.cmp(&b.device));
    all
}

fn sorted(mut records: Vec<PresenceRecord>) -> Vec<PresenceRecord> {
    records.sort_by(|a, b| a.device.cmp(&b.device));
    records
}

/// Registers under the common cap; the device it replaced.
async fn register(
    store: &dyn PresenceStore,
    client: &ClientId,
    record: &PresenceRecord,
) -> Option<PresenceRecord> {
    match store.register(client, record, MANY).await.unwrap() {
        Registered::Done { replaced, .. } => replaced,
        other => panic!("{client}: {other:?}"),
    }
}

async fn remove(store: &dyn PresenceStore, client: &ClientId, r: &PresenceRecord) -> bool {
    store
        .remove(client, &r.device, &r.node, r.session)
        .await
        .unwrap()
}

/// The whole contract, case by case, on one store. Client ids carry a
/// fresh prefix, so a store shared with other runs does not interfere.
/// `expiry`: how long the store may take to forget a dead node's records
/// by itself (zero where `sweep` deletes them).
async fn contract(store: Arc<dyn PresenceStore>, expiry: Duration) {
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let started = Instant::now();
    // SessionRecords: fields per device, compare-and-delete, the cap.
    insert_update_lookup(&*store, &run).await;
    several_devices(&*store, &run).await;
    compare_and_delete(&*store, &run).await;
    takeover(&*store, &run).await;
    the_device_cap(&*store, &run).await;
    registration_is_atomic(store.clone(), &run).await;
    the_cap_holds_under_contention(store.clone(), &run).await;
    lookups_in_one_batch(&*store, &run).await;
    bulk_reregistration(&*store, &run).await;
    // Heartbeats: the beat itself, and the end of a dead node's fields.
    heartbeat(&*store, &run).await;
    dead_nodes_records_end(&*store, &run, expiry).await;
    // GroupStore.
    group_members(&*store, &run).await;
    the_member_cap_holds_under_contention(store.clone(), &run).await;
    // LastSeenStore.
    last_seen_records(&*store, &run).await;
    // ContactStore, the groups of a client, WatchStore (v3).
    contacts(&*store, &run).await;
    the_contact_cap_holds_under_contention(store.clone(), &run).await;
    groups_of_a_client(&*store, &run).await;
    watchers(&*store, &run).await;
    invisibility(&*store, &run).await;
    store.ping().await.expect("ping");
    eprintln!(
        "contract on {}: passed in {:?}",
        store.backend(),
        started.elapsed()
    );
}

async fn insert_update_lookup(store: &dyn PresenceStore, run: &str) {
    let alice = client(run, "alice");
    assert!(devices(store, &alice).await.is_empty(), "absent at first");
    let first = record("node-a", 1);
    assert_eq!(
        store.register(&alice, &first, MANY).await.unwrap(),
        Registered::Done {
            replaced: None,
            devices: vec![first.clone()]
        },
        "insert"
    );
    assert_eq!(devices(store, &alice).await, vec![first.clone()]);
    let second = record("node-a", 2);
    assert_eq!(
        store.register(&alice, &second, MANY).await.unwrap(),
        Registered::Done {
            replaced: Some(first),
            devices: vec![second.clone()]
        },
        "update returns what it replaced"
    );
    assert_eq!(devices(store, &alice).await, vec![second]);
}

/// One client on three devices at once: three fields, each written and
/// deleted on its own; the record goes with its last field.
async fn several_devices(store: &dyn PresenceStore, run: &str) {
    let erin = client(run, "erin");
    let phone = on("phone", "node-a", 1);
    let laptop = on("laptop", "node-b", 2);
    let tab = on("tab.2", "node-a", 3);
    let mut expected = Vec::new();
    for r in [&phone, &laptop, &tab] {
        expected.push(r.clone());
        let Registered::Done { replaced, devices } = store.register(&erin, r, MANY).await.unwrap()
        else {
            panic!("refused")
        };
        assert_eq!(replaced, None, "a new device replaces nothing");
        assert_eq!(
            sorted(devices),
            sorted(expected.clone()),
            "the whole record"
        );
    }
    assert_eq!(devices(store, &erin).await, sorted(expected));
    assert!(remove(store, &erin, &laptop).await);
    assert_eq!(
        devices(store, &erin).await,
        vec![phone.clone(), tab.clone()]
    );
    assert!(remove(store, &erin, &phone).await);
    assert!(remove(store, &erin, &tab).await);
    assert!(
        devices(store, &erin).await.is_empty(),
        "gone with its last field"
    );
}

async fn compare_and_delete(store: &dyn PresenceStore, run: &str) {
    let bob = client(run, "bob");
    let mine = on("phone", "node-a", 1);
    let other = on("laptop", "node-a", 1);
    register(store, &bob, &mine).await;
    register(store, &bob, &other).await;
    assert!(
        !store
            .remove(&bob, &mine.device, &node("node-a"), Uuid::new_v4())
            .await
            .unwrap(),
        "another session's remove deletes nothing"
    );
    assert!(
        !store
            .remove(&bob, &device("tab"), &mine.node, mine.session)
            .await
            .unwrap(),
        "the session on another device's field deletes nothing"
    );
    assert_eq!(
        devices(store, &bob).await,
        vec![other.clone(), mine.clone()]
    );
    assert!(remove(store, &bob, &mine).await);
    assert_eq!(devices(store, &bob).await, vec![other.clone()]);
    assert!(
        !remove(store, &bob, &mine).await,
        "a second remove finds nothing"
    );
    assert!(remove(store, &bob, &other).await);
}

async fn takeover(store: &dyn PresenceStore, run: &str) {
    let carol = client(run, "carol");
    let old = on("phone", "node-a", 1);
    let new = on("phone", "node-b", 2);
    let laptop = on("laptop", "node-a", 1);
    register(store, &carol, &old).await;
    register(store, &carol, &laptop).await;
    assert_eq!(
        register(store, &carol, &new).await,
        Some(old.clone()),
        "the newer session learns which one to close"
    );
    assert!(
        !remove(store, &carol, &old).await,
        "the older session's late disconnect"
    );
    assert_eq!(devices(store, &carol).await, vec![laptop, new]);
}

/// At most `max` devices: a new one beyond it is refused and nothing is
/// written; a same-device replacement never counts against it.
async fn the_device_cap(store: &dyn PresenceStore, run: &str) {
    let frank = client(run, "frank");
    let held: Vec<PresenceRecord> = (0..3).map(|i| on(&format!("d{i}"), "node-a", i)).collect();
    for r in &held {
        assert!(matches!(
            store.register(&frank, r, 3).await.unwrap(),
            Registered::Done { .. }
        ));
    }
    let fourth = on("d3", "node-b", 9);
    match store.register(&frank, &fourth, 3).await.unwrap() {
        Registered::TooManyDevices { devices } => {
            assert_eq!(sorted(devices), held.clone(), "the devices it holds")
        }
        other => panic!("the fourth device got {other:?}"),
    }
    assert_eq!(devices(store, &frank).await, held, "nothing written");
    let again = on("d1", "node-b", 10);
    assert!(
        matches!(
            store.register(&frank, &again, 3).await.unwrap(),
            Registered::Done { replaced: Some(ref r), .. } if *r == held[1]
        ),
        "a device already online reconnects at the cap"
    );
    assert!(remove(store, &frank, &held[0]).await);
    assert!(matches!(
        store.register(&frank, &fourth, 3).await.unwrap(),
        Registered::Done { .. }
    ));
    assert_eq!(devices(store, &frank).await.len(), 3);
}

/// Many sessions of one device registering at once, from many nodes, while
/// other devices of the same client register too: each register of the
/// device must replace exactly one predecessor, so the replaced sessions
/// form one chain (every session but the last replaced exactly once, and
/// exactly one register found the device absent), and no other device's
/// field is lost or replaced.
async fn registration_is_atomic(store: Arc<dyn PresenceStore>, run: &str) {
    let dave = client(run, "dave");
    let phones: Vec<PresenceRecord> = (0..24)
        .map(|i| on("phone", &format!("node-{}", i % 4), i))
        .collect();
    let others: Vec<PresenceRecord> = (0..12)
        .map(|i| on(&format!("other-{i}"), &format!("node-{}", i % 4), i))
        .collect();
    let tasks: Vec<_> = phones
        .iter()
        .chain(&others)
        .cloned()
        .map(|r| {
            let (store, dave) = (store.clone(), dave.clone());
            tokio::spawn(async move {
                let replaced = register(&*store, &dave, &r).await;
                (r, replaced)
            })
        })
        .collect();
    let mut replaced = Vec::new();
    for task in tasks {
        let (r, previous) = task.await.unwrap();
        if r.device.as_str() == "phone" {
            replaced.push(previous);
        } else {
            assert_eq!(
                previous, None,
                "{}: a device of its own replaces nothing",
                r.device
            );
        }
    }
    let now = devices(&*store, &dave).await;
    assert_eq!(now.len(), 13, "every device has its field: {now:?}");
    let last = now.iter().find(|r| r.device.as_str() == "phone").unwrap();
    assert_eq!(
        replaced.iter().filter(|r| r.is_none()).count(),
        1,
        "exactly one register found the device absent"
    );
    let mut sessions: Vec<Uuid> = replaced.iter().flatten().map(|r| r.session).collect();
    sessions.push(last.session);
    sessions.sort();
    let mut all: Vec<Uuid> = phones.iter().map(|r| r.session).collect();
    all.sort();
    assert_eq!(sessions, all, "each session replaced once, or last");
}

/// Twice the cap's worth of new devices registering at once: exactly the
/// cap's worth get in.
async fn the_cap_holds_under_contention(store: Arc<dyn PresenceStore>, run: &str) {
    let gina = client(run, "gina");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (store, gina) = (store.clone(), gina.clone());
            let r = on(&format!("d{i}"), &format!("node-{}", i % 4), i);
            tokio::spawn(async move { store.register(&gina, &r, 8).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Registered::Done { devices, .. } => {
                assert!(devices.len() <= 8, "{devices:?}");
                admitted += 1;
            }
            Registered::TooManyDevices { devices } => assert_eq!(devices.len(), 8),
        }
    }
    assert_eq!(admitted, 8);
    assert_eq!(devices(&*store, &gina).await.len(), 8);
}

async fn members(store: &dyn PresenceStore, group: &GroupId) -> Vec<String> {
    let mut members: Vec<String> = store
        .members(group)
        .await
        .unwrap()
        .iter()
        .map(|m| m.to_string())
        .collect();
    members.sort();
    members
}

async fn group_members(store: &dyn PresenceStore, run: &str) {
    let team = GroupId::parse(&format!("{run}-team")).unwrap();
    let (ann, ben, cy) = (client(run, "ann"), client(run, "ben"), client(run, "cy"));
    assert!(members(store, &team).await.is_empty());
    assert_eq!(
        store.add_member(&team, &ann, 2).await.unwrap(),
        MemberAdded::Added
    );
    assert_eq!(
        store.add_member(&team, &ann, 2).await.unwrap(),
        MemberAdded::Already
    );
    assert_eq!(
        store.add_member(&team, &ben, 2).await.unwrap(),
        MemberAdded::Added
    );
    // Full: a new member is refused, one already in is not.
    assert_eq!(
        store.add_member(&team, &cy, 2).await.unwrap(),
        MemberAdded::Full
    );
    assert_eq!(
        store.add_member(&team, &ben, 2).await.unwrap(),
        MemberAdded::Already
    );
    assert_eq!(
        members(store, &team).await,
        [ann.to_string(), ben.to_string()]
    );
    assert!(store.remove_member(&team, &ann).await.unwrap());
    assert!(!store.remove_member(&team, &ann).await.unwrap());
    assert_eq!(
        store.add_member(&team, &cy, 2).await.unwrap(),
        MemberAdded::Added
    );
    assert_eq!(
        members(store, &team).await,
        [ben.to_string(), cy.to_string()]
    );
    // Groups are apart from each other and from presence records.
    let other = GroupId::parse(&format!("{run}-other")).unwrap();
    assert!(members(store, &other).await.is_empty());
    assert!(store.lookup(&ben).await.unwrap().is_empty());
    // The group goes with its last member.
    assert!(store.remove_member(&team, &ben).await.unwrap());
    assert!(store.remove_member(&team, &cy).await.unwrap());
    assert!(members(store, &team).await.is_empty());
    assert_eq!(
        store.add_member(&team, &ann, 1).await.unwrap(),
        MemberAdded::Added
    );
}

async fn the_member_cap_holds_under_contention(store: Arc<dyn PresenceStore>, run: &str) {
    let crowd = GroupId::parse(&format!("{run}-crowd")).unwrap();
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (store, crowd) = (store.clone(), crowd.clone());
            let who = client(run, &format!("m{i}"));
            tokio::spawn(async move { store.add_member(&crowd, &who, 10).await.unwrap() })
        })
        .collect();
    let mut added = 0;
    for task in tasks {
        match task.await.unwrap() {
            MemberAdded::Added => added += 1,
            MemberAdded::Full => {}
            MemberAdded::Already => panic!("every task adds another client"),
        }
    }
    assert_eq!(added, 10);
    assert_eq!(members(&*store, &crowd).await.len(), 10);
}

async fn lookups_in_one_batch(store: &dyn PresenceStore, run: &str) {
    let clients: Vec<ClientId> = (0..40).map(|i| client(run, &format!("many-{i}"))).collect();
    let mut expected = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        // None, one or two devices.
        let mine: Vec<PresenceRecord> = (0..i % 3)
            .map(|d| on(&format!("d{d}"), "node-a", i as u64))
            .collect();
        for r in &mine {
            register(store, c, r).await;
        }
        expected.push(mine);
    }
    let found = store.lookup_many(&clients).await.unwrap();
    assert_eq!(found.len(), clients.len());
    for ((c, found), expected) in clients.iter().zip(found).zip(expected) {
        assert_eq!(sorted(found), expected, "{c}");
    }
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
    // Enough entries to span several batches of every backend; every
    // fifth client has a second device in the same batch.
    let mut entries: Vec<(ClientId, PresenceRecord)> = Vec::new();
    for i in 0..1200u64 {
        let c = client(run, &format!("bulk-{i}"));
        entries.push((c.clone(), record("node-r", i)));
        if i % 5 == 0 {
            entries.push((c, on("second", "node-r", i)));
        }
    }
    // A third already there (same session), a third taken by a newer
    // session of the same device elsewhere, a third absent.
    let mut newer = Vec::new();
    for (i, (client, mine)) in entries.iter().enumerate() {
        match i % 3 {
            0 => {
                register(store, client, mine).await;
            }
            1 => {
                let other = PresenceRecord {
                    node: node("node-s"),
                    session: Uuid::new_v4(),
                    since: 10_000,
                    ..mine.clone()
                };
                register(store, client, &other).await;
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
        let field = now.iter().find(|r| r.device == mine.device);
        if i % 3 == 1 {
            let (_, other) = newer.next().unwrap();
            assert_eq!(
                result,
                Some(other.clone()),
                "entry {i}: the newer one is named"
            );
            assert_eq!(field, Some(&other), "entry {i}: the newer one is kept");
        } else {
            assert_eq!(result, None, "entry {i}");
            assert_eq!(field, Some(mine), "entry {i}: written back");
        }
    }
}

/// A dead node's fields (written before its death) end: swept at once
/// where the store can list them, expired by their TTL where it cannot
/// (memcached), while live nodes keep refreshing theirs as nodes do. A
/// field the dead node's next run wrote stays, and so do the live devices
/// of a client whose other device was on the dead node.
async fn dead_nodes_records_end(store: &dyn PresenceStore, run: &str, expiry: Duration) {
    let ghosts: Vec<(ClientId, PresenceRecord)> = (0..50)
        .map(|i| (client(run, &format!("ghost-{i}")), record("node-dead", 100)))
        .collect();
    let mut live: Vec<(ClientId, PresenceRecord)> = (0..10)
        .map(|i| (client(run, &format!("live-{i}")), record("node-live", 100)))
        .collect();
    // Half of the ghosts' clients are online elsewhere too.
    for (c, _) in ghosts.iter().step_by(2) {
        live.push((c.clone(), on("elsewhere", "node-live", 100)));
    }
    let later_run = (client(run, "reborn"), record("node-dead", 300));
    for (client, r) in ghosts.iter().chain(&live).chain([&later_run]) {
        register(store, client, r).await;
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
        for (client, ghost) in &ghosts {
            let now = store.lookup(client).await.unwrap();
            left += usize::from(now.iter().any(|r| r.session == ghost.session));
        }
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} fields of the dead node are still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (client, r) in live.iter().chain([&later_run]) {
        let now = store.lookup(client).await.unwrap();
        assert!(now.contains(r), "{client}: {now:?}");
    }
}

/// Last-seen: written and read back in one batch, the newest wins, a
/// client never seen reads `None`, and a record is gone after its TTL by
/// the store's own clock.
async fn last_seen_records(store: &dyn PresenceStore, run: &str) {
    use switchboard::presence::LastSeen;
    use switchboard::protocol::SessionEnd;
    let (alice, bob, carol) = (
        client(run, "ls-alice"),
        client(run, "ls-bob"),
        client(run, "ls-carol"),
    );
    let long = Duration::from_secs(3600);
    let seen = |at, reason| LastSeen { at, reason };
    store
        .set_last_seen(&alice, seen(1_000, SessionEnd::Closed), long)
        .await
        .unwrap();
    store
        .set_last_seen(&alice, seen(2_000, SessionEnd::NodeDead), long)
        .await
        .unwrap();
    store
        .set_last_seen(
            &bob,
            seen(3_000, SessionEnd::Replaced),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    let read = store
        .last_seen_many(&[alice.clone(), bob.clone(), carol.clone()])
        .await
        .unwrap();
    assert_eq!(
        read,
        [
            Some(seen(2_000, SessionEnd::NodeDead)),
            Some(seen(3_000, SessionEnd::Replaced)),
            None
        ]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .last_seen_many(std::slice::from_ref(&bob))
        .await
        .unwrap()[0]
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "bob's last-seen outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alice_still = store.last_seen_many(std::slice::from_ref(&alice)).await;
    assert_eq!(
        alice_still.unwrap()[0],
        Some(seen(2_000, SessionEnd::NodeDead))
    );
}

fn names<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut names: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    names.sort();
    names
}

async fn contacts(store: &dyn PresenceStore, run: &str) {
    let (ann, ben, cy) = (
        client(run, "c-ann"),
        client(run, "c-ben"),
        client(run, "c-cy"),
    );
    assert!(store.contacts(&ann).await.unwrap().is_empty());
    let add = |who| store.add_contact(&ann, who, 2);
    assert_eq!(add(&ben).await.unwrap(), ContactAdded::Added);
    assert_eq!(add(&ben).await.unwrap(), ContactAdded::Already);
    assert_eq!(add(&cy).await.unwrap(), ContactAdded::Added);
    // Full: a new contact is refused, one already there is not.
    let dee = client(run, "c-dee");
    assert_eq!(add(&dee).await.unwrap(), ContactAdded::Full);
    assert_eq!(add(&cy).await.unwrap(), ContactAdded::Already);
    assert_eq!(
        names(store.contacts(&ann).await.unwrap()),
        names([&ben, &cy])
    );
    // One way: ann may watch ben, not the other way round.
    assert!(store.contacts(&ben).await.unwrap().is_empty());
    assert!(store.remove_contact(&ann, &ben).await.unwrap());
    assert!(!store.remove_contact(&ann, &ben).await.unwrap());
    assert_eq!(names(store.contacts(&ann).await.unwrap()), names([&cy]));
    assert!(store.remove_contact(&ann, &cy).await.unwrap());
    assert!(store.contacts(&ann).await.unwrap().is_empty());
}

async fn the_contact_cap_holds_under_contention(store: Arc<dyn PresenceStore>, run: &str) {
    let popular = client(run, "c-popular");
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (store, popular) = (store.clone(), popular.clone());
            let who = client(run, &format!("c{i}"));
            tokio::spawn(async move { store.add_contact(&popular, &who, 10).await.unwrap() })
        })
        .collect();
    let mut added = 0;
    for task in tasks {
        match task.await.unwrap() {
            ContactAdded::Added => added += 1,
            ContactAdded::Full => {}
            ContactAdded::Already => panic!("every task adds another contact"),
        }
    }
    assert_eq!(added, 10);
    assert_eq!(store.contacts(&popular).await.unwrap().len(), 10);
}

async fn groups_of_a_client(store: &dyn PresenceStore, run: &str) {
    let (ann, ben) = (client(run, "g-ann"), client(run, "g-ben"));
    let one = GroupId::parse(&format!("{run}-g1")).unwrap();
    let two = GroupId::parse(&format!("{run}-g2")).unwrap();
    assert!(store.groups_of(&ann).await.unwrap().is_empty());
    for group in [&one, &two] {
        store.add_member(group, &ann, MANY).await.unwrap();
    }
    store.add_member(&two, &ben, MANY).await.unwrap();
    assert_eq!(
        names(store.groups_of(&ann).await.unwrap()),
        names([&one, &two])
    );
    assert_eq!(names(store.groups_of(&ben).await.unwrap()), names([&two]));
    // A member who leaves loses the group from its index.
    store.remove_member(&two, &ann).await.unwrap();
    assert_eq!(names(store.groups_of(&ann).await.unwrap()), names([&one]));
    // A refused add (full group) adds nothing to the index.
    let full = GroupId::parse(&format!("{run}-g3")).unwrap();
    store.add_member(&full, &ben, 1).await.unwrap();
    assert_eq!(
        store.add_member(&full, &ann, 1).await.unwrap(),
        MemberAdded::Full
    );
    assert_eq!(names(store.groups_of(&ann).await.unwrap()), names([&one]));
}

async fn watchers(store: &dyn PresenceStore, run: &str) {
    let (ann, ben, cy) = (
        client(run, "w-ann"),
        client(run, "w-ben"),
        client(run, "w-cy"),
    );
    let (a, b) = (node(&format!("{run}-wa")), node(&format!("{run}-wb")));
    let all = [ann.clone(), ben.clone(), cy.clone()];
    let read = async |clients: &[ClientId]| -> Vec<Vec<String>> {
        let nodes = store.watchers(clients).await.unwrap();
        nodes.into_iter().map(names).collect()
    };
    assert_eq!(read(&all).await, [Vec::<String>::new(), vec![], vec![]]);
    store
        .add_watcher(&a, &[ann.clone(), ben.clone()])
        .await
        .unwrap();
    store
        .add_watcher(&b, std::slice::from_ref(&ben))
        .await
        .unwrap();
    // Adding again changes nothing.
    store
        .add_watcher(&a, std::slice::from_ref(&ann))
        .await
        .unwrap();
    assert_eq!(
        read(&all).await,
        [vec![a.to_string()], names([&a, &b]), vec![]]
    );
    store
        .remove_watcher(&a, &[ben.clone(), cy.clone()])
        .await
        .unwrap();
    assert_eq!(
        read(&all).await,
        [vec![a.to_string()], vec![b.to_string()], vec![]]
    );
    // A node forgotten (dead, or its own earlier run) watches nothing;
    // the others keep theirs.
    store
        .add_watcher(&a, std::slice::from_ref(&cy))
        .await
        .unwrap();
    store.forget_watcher(&a).await.unwrap();
    assert_eq!(read(&all).await, [vec![], vec![b.to_string()], vec![]]);
    store.forget_watcher(&b).await.unwrap();
    assert_eq!(read(&all).await, [Vec::<String>::new(), vec![], vec![]]);
}

async fn invisibility(store: &dyn PresenceStore, run: &str) {
    let (ann, ben, cy) = (
        client(run, "i-ann"),
        client(run, "i-ben"),
        client(run, "i-cy"),
    );
    let long = Duration::from_secs(3600);
    store.set_invisible(&ann, Some(1_000), long).await.unwrap();
    store
        .set_invisible(&ben, Some(2_000), Duration::from_secs(1))
        .await
        .unwrap();
    let all = [ann.clone(), ben.clone(), cy.clone()];
    assert_eq!(
        store.invisible(&all).await.unwrap(),
        [Some(1_000), Some(2_000), None]
    );
    // Visible again.
    store.set_invisible(&ann, None, long).await.unwrap();
    assert_eq!(store.invisible(&all).await.unwrap()[0], None);
    // Invisibility ends with its TTL (a client that never says it is
    // visible again is not hidden for ever).
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.invisible(std::slice::from_ref(&ben)).await.unwrap()[0].is_some() {
        assert!(Instant::now() < deadline, "invisibility outlived its TTL");
        tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Registrations that arrive together go to Redis in one batch (a script
/// each, then one SADD per node index): each still answers what it did
/// alone, the index gets every member written and none refused, and a
/// Redis that lost its scripts (restarted, or `SCRIPT FLUSH`) has them
/// loaded again by the batch.
#[tokio::test]
async fn redis_registrations_at_once_each_answer_as_alone() {
    let redis = Redis::start();
    let store = RedisPresence::connect(&redis_target(&redis.url(), false), "sb:")
        .await
        .unwrap();
    let many: Vec<ClientId> = (0..300)
        .map(|i| client("batch", &format!("c{i}")))
        .collect();
    let records: Vec<PresenceRecord> = many.iter().map(|_| record("node-a", 1)).collect();
    let answers = futures_util::future::join_all(
        many.iter()
            .zip(&records)
            .map(|(c, r)| store.register(c, r, 10)),
    )
    .await;
    for (answer, r) in answers.into_iter().zip(&records) {
        match answer.unwrap() {
            Registered::Done { replaced, devices } => {
                assert_eq!((replaced, devices), (None, vec![r.clone()]));
            }
            other => panic!("{other:?}"),
        }
    }
    // One client, three devices at once, two allowed: two written.
    let carol = client("batch", "carol");
    let devices: Vec<PresenceRecord> = ["d1", "d2", "d3"]
        .iter()
        .map(|d| on(d, "node-a", 1))
        .collect();
    let answers =
        futures_util::future::join_all(devices.iter().map(|r| store.register(&carol, r, 2))).await;
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Ok(Registered::TooManyDevices { .. })))
        .count();
    assert_eq!(refused, 1, "{answers:?}");
    let mut conn = redis.connection().await;
    let indexed: usize = redis::cmd("SCARD")
        .arg("sb:node:node-a:clients")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(indexed, 302, "every member written, and only those");
    // Batched: far fewer SADDs than registrations.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let sadds: usize = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_sadd:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0);
    assert!((1..=30).contains(&sadds), "{sadds} SADDs for 302 members");

    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let dave = client("batch", "dave");
    let r = record("node-a", 2);
    assert!(matches!(
        store.register(&dave, &r, 10).await.unwrap(),
        Registered::Done { .. }
    ));
    assert_eq!(store.lookup(&dave).await.unwrap(), vec![r]);
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
    register(&store, &alice, &a).await;
    register(&store, &bob, &b).await;
    let mut abandoned = 0;
    for i in 0..300 {
        // Cut off at varying points: after the write, waiting for the
        // reply, or part-way through reading it.
        if abandon_after(store.lookup(&alice), i % 8).await {
            abandoned += 1;
        }
        assert_eq!(
            store.lookup(&bob).await.unwrap(),
            vec![b.clone()],
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
    assert_eq!(register(&store, &alice, &mine).await, None);
    assert_eq!(store.lookup(&alice).await.unwrap(), vec![mine]);

    // One at a time (not the batch path): the CAS loop of a single entry.
    let theirs = record("node-b", 2);
    let replaced = store
        .reregister(std::slice::from_ref(&(bob.clone(), theirs.clone())))
        .await
        .unwrap();
    assert_eq!(replaced, vec![None]);
    assert_eq!(store.lookup(&bob).await.unwrap(), vec![theirs]);
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
