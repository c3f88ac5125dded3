//! One contract, three history stores (v3): memory, Redis and a Redis
//! Cluster run the same cases against the real thing. Whatever the
//! `History` service relies on is a case: `cseq` 1, 2, 3, … with no gap
//! and no repeat under concurrent appends; pages before, after and newest
//! with `more`; read cursors (moved by one's own sends, forward only,
//! clamped); each client's conversations, most recent first, with unread
//! counts and the other client's cursor; retention by count and by age on
//! the store's clock; deletion, after which numbering goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::Redis;
use crate::support::servers::RedisCluster;
use switchboard::backends::{MemoryHistory, RedisHistory};
use switchboard::config::RedisTarget;
use switchboard::history::{Conversation, HistoryLimits, HistoryStore, NewEntry, Page, Range};
use switchboard::protocol::{ClientId, GroupId};
use switchboard::redact::Secret;
use uuid::Uuid;

const LIMITS: HistoryLimits = HistoryLimits {
    ttl: Duration::from_secs(3600),
    max_messages: 1000,
};

fn client(run: &str, name: &str) -> ClientId {
    ClientId::parse(&format!("{run}-{name}")).unwrap()
}

async fn append(store: &dyn HistoryStore, c: &Conversation, from: &ClientId, text: &str) -> u64 {
    let body = serde_json::to_string(text).unwrap();
    let entry = NewEntry {
        msg_id: Uuid::now_v7(),
        from,
        ts: switchboard::protocol::now_ms(),
        body: &body,
    };
    store.append(c, entry).await.expect("append")
}

fn cseqs(page: &Page) -> Vec<u64> {
    page.entries.iter().map(|e| e.cseq).collect()
}

async fn contract(store: Arc<dyn HistoryStore>) {
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    numbered_without_gaps_under_contention(store.clone(), &run).await;
    pages(&*store, &run).await;
    cursors(&*store, &run).await;
    conversations(&*store, &run).await;
    deletion_keeps_the_numbering(&*store, &run).await;
    store.ping().await.expect("ping");
}

async fn numbered_without_gaps_under_contention(store: Arc<dyn HistoryStore>, run: &str) {
    let team = Conversation::Group(GroupId::parse(&format!("{run}-crowd")).unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, team) = (store.clone(), team.clone());
            let from = client(run, &format!("s{i}"));
            tokio::spawn(async move {
                let mut got = Vec::new();
                for n in 0..5 {
                    got.push(append(&*store, &team, &from, &format!("{i}-{n}")).await);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let got = task.await.unwrap();
        // Each sender's own appends in the order it made them.
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<_>>(), "no gap, no repeat");
    let page = store.page(&team, Range::Latest, 200).await.unwrap();
    assert_eq!(cseqs(&page), (1..=100).collect::<Vec<_>>());
    assert!(!page.more);
}

async fn pages(store: &dyn HistoryStore, run: &str) {
    let (ann, ben) = (client(run, "p-ann"), client(run, "p-ben"));
    let c = Conversation::pair(&ann, &ben);
    for n in 1..=10 {
        let from = if n % 2 == 0 { &ben } else { &ann };
        assert_eq!(append(store, &c, from, &format!("m{n}")).await, n);
    }
    let newest = store.page(&c, Range::Latest, 3).await.unwrap();
    assert_eq!((cseqs(&newest), newest.more), (vec![8, 9, 10], true));
    let before = store.page(&c, Range::Before(8), 3).await.unwrap();
    assert_eq!((cseqs(&before), before.more), (vec![5, 6, 7], true));
    let first = store.page(&c, Range::Before(3), 5).await.unwrap();
    assert_eq!((cseqs(&first), first.more), (vec![1, 2], false));
    let after = store.page(&c, Range::After(7), 2).await.unwrap();
    assert_eq!((cseqs(&after), after.more), (vec![8, 9], true));
    let last = store.page(&c, Range::After(8), 5).await.unwrap();
    assert_eq!((cseqs(&last), last.more), (vec![9, 10], false));
    let none = store.page(&c, Range::After(10), 5).await.unwrap();
    assert!(none.entries.is_empty() && !none.more);
    // What was appended comes back whole.
    let entry = &newest.entries[2];
    assert_eq!(
        (entry.from.as_str(), entry.body.get()),
        (ben.as_str(), "\"m10\"")
    );
    // The same conversation from either side.
    assert_eq!(Conversation::pair(&ben, &ann), c);
}

async fn cursors(store: &dyn HistoryStore, run: &str) {
    let (ann, ben) = (client(run, "r-ann"), client(run, "r-ben"));
    let c = Conversation::pair(&ann, &ben);
    append(store, &c, &ann, "1").await;
    append(store, &c, &ben, "2").await;
    append(store, &c, &ben, "3").await;
    // Sending moved ben's cursor; ann's is still where her send left it.
    let moved = store.mark_read(&c, &ann, 2).await.unwrap();
    assert_eq!((moved.upto, moved.moved), (2, true));
    let back = store.mark_read(&c, &ann, 1).await.unwrap();
    assert_eq!((back.upto, back.moved), (2, false), "never back");
    let past = store.mark_read(&c, &ann, 99).await.unwrap();
    assert_eq!(
        (past.upto, past.moved),
        (3, true),
        "never past the last cseq"
    );
    let (list, _) = store.conversations(&ben, &[], None, 10).await.unwrap();
    let s = &list[0];
    assert_eq!((s.cseq, s.read, s.unread, s.peer_read), (3, 3, 0, Some(3)));
}

async fn conversations(store: &dyn HistoryStore, run: &str) {
    let (ann, ben, cy) = (
        client(run, "c-ann"),
        client(run, "c-ben"),
        client(run, "c-cy"),
    );
    let team = GroupId::parse(&format!("{run}-c-team")).unwrap();
    let with_ben = Conversation::pair(&ann, &ben);
    let with_cy = Conversation::pair(&ann, &cy);
    let group = Conversation::Group(team.clone());
    append(store, &with_ben, &ben, "b1").await;
    append(store, &with_ben, &ben, "b2").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    append(store, &group, &cy, "g1").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    append(store, &with_cy, &ann, "c1").await;
    let (list, more) = store
        .conversations(&ann, std::slice::from_ref(&team), None, 10)
        .await
        .unwrap();
    let order: Vec<&Conversation> = list.iter().map(|s| &s.conversation).collect();
    assert_eq!(order, [&with_cy, &group, &with_ben], "most recent first");
    assert!(!more);
    let ben_side = &list[2];
    assert_eq!((ben_side.cseq, ben_side.read, ben_side.unread), (2, 0, 2));
    assert_eq!(
        (ben_side.peer_read, ben_side.last.body.get()),
        (Some(2), "\"b2\"")
    );
    let (group_side, cy_side) = (&list[1], &list[0]);
    assert_eq!((group_side.unread, group_side.peer_read), (1, None));
    assert_eq!((cy_side.unread, cy_side.read), (0, 1), "her own send");
    // Paging by the last message's time, and the limit.
    let (first, more) = store
        .conversations(&ann, std::slice::from_ref(&team), None, 2)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert!(more);
    let before = first[1].last.ts;
    let (rest, more) = store
        .conversations(&ann, std::slice::from_ref(&team), Some(before), 2)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|s| &s.conversation).collect::<Vec<_>>(),
        [&with_ben]
    );
    assert!(!more);
    // A group one is not given is not listed; nor are others' pairs.
    let (without, _) = store.conversations(&ann, &[], None, 10).await.unwrap();
    assert_eq!(without.len(), 2);
    let (cys, _) = store.conversations(&cy, &[], None, 10).await.unwrap();
    assert_eq!(
        cys.iter().map(|s| &s.conversation).collect::<Vec<_>>(),
        [&with_cy]
    );
}

async fn deletion_keeps_the_numbering(store: &dyn HistoryStore, run: &str) {
    let (ann, ben) = (client(run, "d-ann"), client(run, "d-ben"));
    let c = Conversation::pair(&ann, &ben);
    for _ in 0..3 {
        append(store, &c, &ann, "x").await;
    }
    store.delete(&c).await.unwrap();
    assert!(
        store
            .page(&c, Range::Latest, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    let (list, _) = store.conversations(&ann, &[], None, 10).await.unwrap();
    assert!(
        list.iter().all(|s| s.conversation != c),
        "a deleted conversation is not listed"
    );
    assert_eq!(
        append(store, &c, &ben, "again").await,
        4,
        "numbering goes on"
    );
    let (list, _) = store.conversations(&ann, &[], None, 10).await.unwrap();
    let s = list.iter().find(|s| s.conversation == c).unwrap();
    assert_eq!(
        (s.cseq, s.read, s.unread),
        (4, 0, 1),
        "the cursors went too"
    );
}

/// Retention: the newest `max` kept, and what is older than the TTL gone
/// (by the store's clock), the numbering going on.
async fn retention(store: &dyn HistoryStore, ttl: Duration) {
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (ann, ben) = (client(&run, "t-ann"), client(&run, "t-ben"));
    let c = Conversation::pair(&ann, &ben);
    for _ in 0..8 {
        append(store, &c, &ann, "x").await;
    }
    let kept = store.page(&c, Range::Latest, 100).await.unwrap();
    assert_eq!(cseqs(&kept), vec![4, 5, 6, 7, 8], "the newest five");
    let (list, _) = store.conversations(&ben, &[], None, 10).await.unwrap();
    assert_eq!(list[0].unread, 5, "unread counts what is kept");
    let deadline = Instant::now() + ttl * 5;
    while !store
        .page(&c, Range::Latest, 100)
        .await
        .unwrap()
        .entries
        .is_empty()
    {
        assert!(Instant::now() < deadline, "messages outlived the TTL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (list, _) = store.conversations(&ben, &[], None, 10).await.unwrap();
    assert!(list.is_empty(), "an expired conversation is not listed");
    assert_eq!(append(store, &c, &ann, "later").await, 9);
}

const SHORT: HistoryLimits = HistoryLimits {
    ttl: Duration::from_secs(1),
    max_messages: 5,
};

fn target(urls: &str, cluster: bool) -> RedisTarget {
    RedisTarget {
        urls: urls.split(',').map(Secret::new).collect(),
        cluster,
        ca_file: None,
    }
}

#[tokio::test]
async fn memory() {
    contract(Arc::new(MemoryHistory::new(LIMITS))).await;
    retention(&MemoryHistory::new(SHORT), SHORT.ttl).await;
}

#[tokio::test]
async fn redis() {
    let redis = Redis::start();
    let t = target(&redis.url(), false);
    contract(Arc::new(
        RedisHistory::connect(&t, "sb:", LIMITS).await.unwrap(),
    ))
    .await;
    let short = RedisHistory::connect(&t, "short:", SHORT).await.unwrap();
    retention(&short, SHORT.ttl).await;
}

#[tokio::test]
async fn redis_cluster() {
    let cluster = RedisCluster::start();
    let t = target(&cluster.seeds(), true);
    contract(Arc::new(
        RedisHistory::connect(&t, "sb:", LIMITS).await.unwrap(),
    ))
    .await;
    let short = RedisHistory::connect(&t, "short:", SHORT).await.unwrap();
    retention(&short, SHORT.ttl).await;
}
