//! History in this process's memory: for a node on its own
//! (`--history memory`). Same semantics as the Redis store (the contract
//! suite runs both); lost when the node stops. Retention is judged by the
//! store's clock ([`StoreClock`]), as Redis judges it by its `TIME`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use super::memory_clock::StoreClock;
use crate::history::{
    Conversation, Cursor, Entry, HistoryError, HistoryLimits, HistoryStore, NewEntry, Page, Range,
    Summary,
};
use crate::lock::Locked;
use crate::protocol::{ClientId, GroupId};

/// One conversation: its numbering, its kept messages (with when the
/// store took each), its read cursors.
#[derive(Default)]
struct Log {
    seq: u64,
    entries: VecDeque<(u64, Entry)>,
    read: HashMap<ClientId, u64>,
}

impl Log {
    /// Drops what retention no longer keeps.
    fn trim(&mut self, limits: &HistoryLimits, now: u64) {
        let oldest = now.saturating_sub(limits.ttl.as_millis() as u64);
        while self
            .entries
            .front()
            .is_some_and(|(at, _)| *at < oldest || self.entries.len() > limits.max_messages)
        {
            self.entries.pop_front();
        }
        if self.entries.is_empty() {
            // Nothing kept: neither are the cursors (the numbering stays).
            self.read.clear();
        }
    }

    fn last(&self) -> Option<&Entry> {
        self.entries.back().map(|(_, e)| e)
    }
}

#[derive(Default)]
struct Logs {
    logs: HashMap<Conversation, Log>,
    /// Each client's two-client conversations.
    pairs: HashMap<ClientId, Vec<Conversation>>,
}

pub struct MemoryHistory {
    limits: HistoryLimits,
    clock: StoreClock,
    logs: Mutex<Logs>,
}

impl MemoryHistory {
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            limits,
            clock: StoreClock::default(),
            logs: Mutex::default(),
        }
    }

    /// Runs `f` on the conversation's log, trimmed first.
    fn with<T>(&self, conversation: &Conversation, f: impl FnOnce(&mut Log, &mut Logs) -> T) -> T {
        let now = self.clock.now_ms();
        let mut logs = self.logs.locked();
        let mut log = logs.logs.remove(conversation).unwrap_or_default();
        log.trim(&self.limits, now);
        let out = f(&mut log, &mut logs);
        logs.logs.insert(conversation.clone(), log);
        out
    }
}

#[async_trait]
impl HistoryStore for MemoryHistory {
    async fn append(
        &self,
        conversation: &Conversation,
        entry: NewEntry<'_>,
    ) -> Result<u64, HistoryError> {
        let now = self.clock.now_ms();
        let body = serde_json::value::RawValue::from_string(entry.body.to_owned())
            .map_err(|e| HistoryError::new(format!("a body that is not JSON: {e}")))?;
        Ok(self.with(conversation, |log, logs| {
            log.seq += 1;
            let cseq = log.seq;
            log.entries.push_back((
                now,
                Entry {
                    cseq,
                    msg_id: entry.msg_id,
                    from: entry.from.clone(),
                    ts: entry.ts,
                    body,
                },
            ));
            let cursor = log.read.entry(entry.from.clone()).or_default();
            *cursor = (*cursor).max(cseq);
            log.trim(&self.limits, now);
            if let Conversation::Pair(a, b) = conversation {
                for client in [a, b] {
                    let pairs = logs.pairs.entry(client.clone()).or_default();
                    if !pairs.contains(conversation) {
                        pairs.push(conversation.clone());
                    }
                }
            }
            cseq
        }))
    }

    async fn page(
        &self,
        conversation: &Conversation,
        range: Range,
        limit: usize,
    ) -> Result<Page, HistoryError> {
        Ok(self.with(conversation, |log, _| {
            let limit = limit.max(1);
            let kept = log.entries.iter().map(|(_, e)| e);
            let mut entries: Vec<Entry> = match range {
                Range::Latest => kept.rev().take(limit + 1).cloned().collect(),
                Range::Before(before) => kept
                    .rev()
                    .filter(|e| e.cseq < before)
                    .take(limit + 1)
                    .cloned()
                    .collect(),
                Range::After(after) => kept
                    .filter(|e| e.cseq > after)
                    .take(limit + 1)
                    .cloned()
                    .collect(),
            };
            let more = entries.len() > limit;
            entries.truncate(limit);
            // Collected from the newest for Latest and Before.
            if !matches!(range, Range::After(_)) {
                entries.reverse();
            }
            Page { entries, more }
        }))
    }

    async fn conversations(
        &self,
        client: &ClientId,
        groups: &[GroupId],
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Summary>, bool), HistoryError> {
        let mut candidates: Vec<Conversation> = {
            let logs = self.logs.locked();
            logs.pairs.get(client).cloned().unwrap_or_default()
        };
        candidates.extend(groups.iter().cloned().map(Conversation::Group));
        let mut summaries = Vec::new();
        for conversation in candidates {
            let summary = self.with(&conversation, |log, _| {
                let last = log.last()?.clone();
                let read = log.read.get(client).copied().unwrap_or(0);
                let unread = log.entries.iter().filter(|(_, e)| e.cseq > read).count() as u64;
                let peer_read = conversation
                    .peer(client)
                    .map(|peer| log.read.get(peer).copied().unwrap_or(0));
                Some(Summary {
                    conversation: conversation.clone(),
                    cseq: log.seq,
                    last,
                    read,
                    unread,
                    peer_read,
                })
            });
            if let Some(summary) = summary.filter(|s| before.is_none_or(|b| s.last.ts < b)) {
                summaries.push(summary);
            }
        }
        summaries.sort_by(|a, b| b.last.ts.cmp(&a.last.ts).then(b.cseq.cmp(&a.cseq)));
        let more = summaries.len() > limit;
        summaries.truncate(limit);
        Ok((summaries, more))
    }

    async fn mark_read(
        &self,
        conversation: &Conversation,
        client: &ClientId,
        upto: u64,
    ) -> Result<Cursor, HistoryError> {
        Ok(self.with(conversation, |log, _| {
            let upto = upto.min(log.seq);
            let cursor = log.read.entry(client.clone()).or_default();
            let moved = upto > *cursor;
            *cursor = (*cursor).max(upto);
            Cursor {
                upto: *cursor,
                moved,
            }
        }))
    }

    async fn delete(&self, conversation: &Conversation) -> Result<(), HistoryError> {
        self.with(conversation, |log, _| {
            log.entries.clear();
            log.read.clear();
        });
        Ok(())
    }

    async fn ping(&self) -> Result<(), HistoryError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
