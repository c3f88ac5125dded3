//! A session's outbound queue, and the way to ask a session to close.
//!
//! Other tasks (the router, the hop handler, other sessions) push frames;
//! the session's own loop takes them and writes them to its socket. Two
//! kinds of frames wait here, kept apart on purpose:
//!
//! - **messages** for this client. Their queue is bounded in frames and in
//!   bytes: a push beyond either bound is refused and marks the session as
//!   a slow consumer (closed with 4008), so one stuck client can never make
//!   the node buffer without limit.
//! - **outcomes** owed to this client as a sender (receipts). They are
//!   never the reason a session is cut off: a recipient node that dies with
//!   a thousand of its messages in flight owes it a thousand `offline`
//!   receipts at once, and a client that reads promptly must get every
//!   one. They are bounded by what the node tracks for its senders (every
//!   owed outcome is a message in flight or queued at a recipient here),
//!   and the session writes them a batch per turn, in pace with its
//!   socket; a client that stops reading is still caught by the write
//!   timeout.
//!
//! - **notes** (v3): presence frames of watched clients, read receipts and
//!   signals. They are never numbered, kept or re-sent, and never the
//!   reason a session is cut off. A presence frame replaces the one still
//!   waiting for the same client, and a read receipt the one for the same
//!   conversation and reader (only the latest matters), so they are
//!   bounded by the clients watched and by [`MAX_READ_NOTES`]; a signal is
//!   dropped instead of queued when the session's queue is more than half
//!   full.
//!
//! In acks mode (v2) a third kind waits: messages written but not yet
//! confirmed by the client (`received`). [`take`](Outbox::take) numbers
//! each message it hands out (`"seq"`), keeps a copy until
//! [`confirm`](Outbox::confirm), and those copies count against the same
//! bounds: a client that never confirms fills its queue and is a slow
//! consumer like one that never reads. The copies are what a resumed
//! session writes again ([`replay`](Outbox::replay)).
//!
//! It is a mutex around `VecDeque`s rather than a channel on purpose: an
//! idle session's empty `VecDeque` owns no heap memory, which matters at
//! tens of thousands of idle sessions per node.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use std::sync::Arc;

use super::Handover;
use crate::lock::Locked;
use crate::protocol::frames::with_field;
use crate::protocol::{ClientId, Disconnect};

/// Outcomes written per turn of the session loop at most, so that a burst
/// of them shares the socket with messages and answers.
pub const OUTCOMES_PER_TURN: usize = 256;
/// Messages from the client's inbox written per turn at most.
pub const STORED_PER_TURN: usize = 256;
/// Read receipts (v3) waiting in one session at most, each for another
/// conversation and reader.
pub const MAX_READ_NOTES: usize = 256;

/// A client message waiting for the socket. Its outcome (delivered, or
/// offline if it never reaches the socket) is reported through its
/// `handover`, when it has one (carbons have none: they are never
/// counted).
#[derive(Debug)]
pub struct Outbound {
    pub frame: Utf8Bytes,
    pub handover: Option<Arc<Handover>>,
}

/// Why a push was refused. The message comes back so the caller can
/// answer its sender.
#[derive(Debug)]
pub enum Refused {
    /// The queue was full; the session is now closing with 4008.
    Full(Outbound),
    /// The session is closing; it takes no more frames.
    Closing(Outbound),
}

impl Refused {
    pub fn into_inner(self) -> Outbound {
        match self {
            Refused::Full(o) | Refused::Closing(o) => o,
        }
    }
}

/// What an acks-mode session takes when it leaves its node (a resume
/// elsewhere, or a draining node passing it on): see
/// [`Outbox::take_kept`].
#[derive(Debug, Default)]
pub struct Kept {
    /// The `seq` its next message gets.
    pub next_seq: u64,
    /// The unconfirmed messages with their `seq`, then those never written.
    pub messages: Vec<(Option<u64>, Outbound)>,
    /// Outcomes (receipt frames) owed to the client as a sender, not yet
    /// written.
    pub owed: Vec<Utf8Bytes>,
}

/// What the session loop takes in one turn.
#[derive(Debug, Default)]
pub struct Batch {
    pub messages: VecDeque<Outbound>,
    pub outcomes: Vec<Utf8Bytes>,
    /// Presence frames and signals (v3).
    pub notes: Vec<Utf8Bytes>,
    /// The close code, if a close was asked for.
    pub close: Option<Disconnect>,
}

struct State {
    messages: VecDeque<Outbound>,
    /// Messages from the client's inbox (v2), written before any in
    /// `messages`. Not counted against the bounds: their number is bounded
    /// by `--inbox-max-messages`, and they are handed out a page at a time
    /// (in acks mode, only while half the bounds are free).
    stored: VecDeque<Outbound>,
    /// Bytes of the frames in `messages`.
    bytes: usize,
    /// Acks mode: messages handed out and not confirmed, by `seq`, and
    /// their bytes.
    unconfirmed: VecDeque<(u64, Outbound)>,
    unconfirmed_bytes: usize,
    /// Acks mode: the `seq` of the next message handed out (from 1); 0
    /// when the session is not in acks mode.
    next_seq: u64,
    outcomes: VecDeque<Utf8Bytes>,
    /// v3: the latest presence frame not yet written, per watched client.
    presence: Vec<(ClientId, Utf8Bytes)>,
    /// v3: the latest read receipt not yet written, per conversation and
    /// reader (the key).
    reads: Vec<(Utf8Bytes, Utf8Bytes)>,
    /// v3: signals not yet written, and their bytes.
    signals: VecDeque<Utf8Bytes>,
    signal_bytes: usize,
    /// Set once; the first close code asked for wins.
    close: Option<Disconnect>,
}

/// The bounds of a session's message queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

pub struct Outbox {
    state: Mutex<State>,
    limits: QueueLimits,
    wake: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("closing", &self.closing())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    pub fn new(limits: QueueLimits) -> Self {
        Self::with_seq(limits, 0)
    }

    /// The outbox of a session in acks mode.
    pub fn acks(limits: QueueLimits) -> Self {
        Self::with_seq(limits, 1)
    }

    fn with_seq(limits: QueueLimits, next_seq: u64) -> Self {
        Self {
            state: Mutex::new(State {
                messages: VecDeque::new(),
                stored: VecDeque::new(),
                bytes: 0,
                unconfirmed: VecDeque::new(),
                unconfirmed_bytes: 0,
                next_seq,
                outcomes: VecDeque::new(),
                presence: Vec::new(),
                reads: Vec::new(),
                signals: VecDeque::new(),
                signal_bytes: 0,
                close: None,
            }),
            limits,
            wake: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    /// Queues a message for this client.
    pub fn push(&self, item: Outbound) -> Result<(), Refused> {
        let mut state = self.state();
        if state.close.is_some() {
            return Err(Refused::Closing(item));
        }
        let bytes = state.bytes + item.frame.len();
        let frames = state.messages.len() + state.unconfirmed.len();
        if frames >= self.limits.frames || bytes + state.unconfirmed_bytes > self.limits.bytes {
            state.close = Some(Disconnect::SlowConsumer);
            drop(state);
            self.wake.notify_one();
            return Err(Refused::Full(item));
        }
        state.bytes = bytes;
        state.messages.push_back(item);
        drop(state);
        // notify_one stores a permit when the loop is not waiting, so a push
        // between two waits is never missed.
        self.wake.notify_one();
        Ok(())
    }

    /// Queues the messages of the client's inbox, to be written before
    /// any other message.
    pub fn put_stored(&self, items: impl IntoIterator<Item = Outbound>) {
        self.state().stored.extend(items);
        self.wake.notify_one();
    }

    /// Queues an outcome (a receipt frame) owed to this client. Refused
    /// only once the session is closing.
    pub fn owe(&self, receipt: Utf8Bytes) -> Result<(), Utf8Bytes> {
        let mut state = self.state();
        if state.close.is_some() {
            return Err(receipt);
        }
        state.outcomes.push_back(receipt);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Queues the presence frame of `client` (v3), in place of the one
    /// still waiting for it, if any. Refused only once the session is
    /// closing.
    pub fn put_presence(&self, client: &ClientId, frame: Utf8Bytes) -> bool {
        let mut state = self.state();
        if state.close.is_some() {
            return false;
        }
        match state.presence.iter_mut().find(|(c, _)| c == client) {
            Some((_, waiting)) => *waiting = frame,
            None => state.presence.push((client.clone(), frame)),
        }
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Queues a read receipt (v3) for the conversation and reader `key`,
    /// in place of one still waiting for the same; beyond
    /// [`MAX_READ_NOTES`] waiting, it is dropped (the client's next
    /// `conversations` has the cursors). Answers whether it was queued.
    pub fn put_read(&self, key: Utf8Bytes, frame: Utf8Bytes) -> bool {
        let mut state = self.state();
        if state.close.is_some() {
            return false;
        }
        match state.reads.iter().position(|(k, _)| *k == key) {
            Some(i) => state.reads[i].1 = frame,
            None if state.reads.len() < MAX_READ_NOTES => state.reads.push((key, frame)),
            None => return false,
        }
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Queues a signal (v3), unless the session is closing or its queue
    /// is more than half full (in frames or bytes): a signal is dropped
    /// rather than queued behind messages. Answers whether it was queued.
    pub fn put_signal(&self, frame: Utf8Bytes) -> bool {
        let mut state = self.state();
        let frames = state.messages.len() + state.unconfirmed.len() + state.signals.len();
        let bytes = state.bytes + state.unconfirmed_bytes + state.signal_bytes + frame.len();
        if state.close.is_some()
            || frames >= self.limits.frames / 2
            || bytes > self.limits.bytes / 2
        {
            return false;
        }
        state.signal_bytes += frame.len();
        state.signals.push_back(frame);
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Asks the session to close with `code` once it has written what is
    /// already queued (unless the code is 4008: a slow consumer's queue is
    /// not worth waiting for). Later pushes are refused.
    pub fn close(&self, why: Disconnect) {
        let mut state = self.state();
        if state.close.is_none() {
            state.close = Some(why);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Waits until there is something to take or a close was asked for.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Takes every queued message, up to [`OUTCOMES_PER_TURN`] outcomes
    /// (the rest wait for the next turn, which is already signalled), and
    /// the close code if one was asked for.
    pub fn take(&self) -> Batch {
        let mut state = self.state();
        let n = state.outcomes.len().min(OUTCOMES_PER_TURN);
        let outcomes: Vec<Utf8Bytes> = state.outcomes.drain(..n).collect();
        if !state.outcomes.is_empty() {
            self.wake.notify_one();
        } else if state.outcomes.capacity() > OUTCOMES_PER_TURN {
            // A burst is over: give its memory back.
            state.outcomes = VecDeque::new();
        }
        // Taken, not drained: a burst of presence frames (a watch of a
        // thousand clients) leaves no capacity behind in an idle session.
        let mut notes: Vec<Utf8Bytes> = std::mem::take(&mut state.presence)
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        notes.extend(std::mem::take(&mut state.reads).into_iter().map(|(_, f)| f));
        notes.extend(std::mem::take(&mut state.signals));
        state.signal_bytes = 0;
        let mut messages = if state.stored.is_empty() {
            state.bytes = 0;
            // Leaves an empty, unallocated queue behind.
            std::mem::take(&mut state.messages)
        } else {
            self.stored_page(&mut state)
        };
        if state.next_seq > 0 {
            // Acks mode: numbered, and kept until confirmed; the socket
            // gets the numbered frame, the outcome waits for `received`.
            for item in &mut messages {
                let seq = state.next_seq;
                state.next_seq += 1;
                let frame = Utf8Bytes::from(with_field(&item.frame, "seq", &seq.to_string()));
                state.unconfirmed_bytes += frame.len();
                let kept = Outbound {
                    frame: frame.clone(),
                    handover: item.handover.take(),
                };
                state.unconfirmed.push_back((seq, kept));
                item.frame = frame;
            }
        }
        Batch {
            messages,
            outcomes,
            notes,
            close: state.close,
        }
    }

    /// The next page of stored messages (live ones wait behind them). In
    /// acks mode a page only fills half the bounds, less what waits for
    /// confirmation; `confirm` wakes the loop for the next one.
    fn stored_page(&self, state: &mut State) -> VecDeque<Outbound> {
        let acks = state.next_seq > 0;
        let (mut frames, mut bytes) = (state.unconfirmed.len(), state.unconfirmed_bytes);
        let mut page = VecDeque::new();
        while let Some(next) = state.stored.front() {
            let full = page.len() >= STORED_PER_TURN
                || (acks
                    && frames > 0
                    && (frames >= self.limits.frames / 2
                        || bytes + next.frame.len() > self.limits.bytes / 2));
            if full {
                break;
            }
            frames += 1;
            bytes += next.frame.len();
            page.push_back(state.stored.pop_front().expect("just seen"));
        }
        if state.stored.is_empty() {
            state.stored = VecDeque::new();
            // Live messages waited: the next turn takes them.
            self.wake.notify_one();
        } else if page.len() == STORED_PER_TURN {
            self.wake.notify_one();
        }
        page
    }

    /// Whether this is an acks-mode session's outbox.
    pub fn is_acks(&self) -> bool {
        self.state().next_seq > 0
    }

    /// Acks mode: the client has every message up to `seq` `upto`. Returns
    /// those confirmed now, for their outcomes (`delivered`).
    pub fn confirm(&self, upto: u64) -> Vec<Outbound> {
        let mut state = self.state();
        let mut confirmed = Vec::new();
        while state
            .unconfirmed
            .front()
            .is_some_and(|(seq, _)| *seq <= upto)
        {
            let (_, item) = state.unconfirmed.pop_front().expect("just seen");
            state.unconfirmed_bytes -= item.frame.len();
            confirmed.push(item);
        }
        if !state.stored.is_empty() && !confirmed.is_empty() {
            // Room for the next page of stored messages.
            self.wake.notify_one();
        }
        confirmed
    }

    /// Acks mode, for a session taken back: confirms up to `upto` (returned
    /// first), and returns the frames after it to write again, in order,
    /// still kept until confirmed. Takes back a slow consumer's close, so
    /// that the session can go on.
    pub fn replay(&self, upto: u64) -> (Vec<Outbound>, Vec<Utf8Bytes>) {
        let confirmed = self.confirm(upto);
        let mut state = self.state();
        state.close = None;
        // Notes are never kept for a detached session (v3): the resumed
        // one is shown the current presence afresh, and late signals go.
        state.presence = Vec::new();
        state.reads = Vec::new();
        state.signals = VecDeque::new();
        state.signal_bytes = 0;
        let again = state
            .unconfirmed
            .iter()
            .map(|(_, o)| o.frame.clone())
            .collect();
        drop(state);
        // What waited while it was detached goes out on the first turn.
        self.wake.notify_one();
        (confirmed, again)
    }

    /// Acks mode, on the node a detached session leaves: closes the outbox
    /// (later pushes are refused, and re-routed) and takes everything kept,
    /// in order: the unconfirmed messages with their `seq`, then those
    /// never written; and the outcomes owed to the client as a sender,
    /// which go with it (a sender that resumes elsewhere still hears every
    /// outcome of what it sent).
    pub fn take_kept(&self) -> Kept {
        let mut state = self.state();
        if state.close.is_none() {
            state.close = Some(Disconnect::Replaced);
        }
        state.bytes = 0;
        state.unconfirmed_bytes = 0;
        let mut messages: Vec<(Option<u64>, Outbound)> = std::mem::take(&mut state.unconfirmed)
            .into_iter()
            .map(|(seq, o)| (Some(seq), o))
            .collect();
        messages.extend(
            std::mem::take(&mut state.stored)
                .into_iter()
                .chain(std::mem::take(&mut state.messages))
                .map(|o| (None, o)),
        );
        Kept {
            next_seq: state.next_seq,
            messages,
            owed: std::mem::take(&mut state.outcomes).into(),
        }
    }

    /// Acks mode, on the node a detached session moves to: puts back what
    /// the old node kept, before anything that arrived here meanwhile, and
    /// continues its numbering.
    pub fn restore(&self, kept: Kept) {
        let mut state = self.state();
        state.next_seq = kept.next_seq.max(1);
        let mut fresh = Vec::new();
        for (seq, item) in kept.messages {
            match seq {
                Some(seq) => {
                    state.unconfirmed_bytes += item.frame.len();
                    state.unconfirmed.push_back((seq, item));
                }
                None => {
                    state.bytes += item.frame.len();
                    fresh.push(item);
                }
            }
        }
        for item in fresh.into_iter().rev() {
            state.messages.push_front(item);
        }
        for receipt in kept.owed.into_iter().rev() {
            state.outcomes.push_front(receipt);
        }
        drop(state);
        // The session's loop takes them on its first turn.
        self.wake.notify_one();
    }

    /// Acks mode: messages kept for the client, written or not.
    pub fn kept(&self) -> usize {
        let state = self.state();
        state.unconfirmed.len() + state.stored.len() + state.messages.len()
    }

    /// Everything still queued, outcomes included, for a session that is
    /// ending; in acks mode, the unconfirmed messages first (written, but
    /// not known to have arrived), then those never written.
    pub fn take_all(&self) -> Batch {
        let mut state = self.state();
        state.bytes = 0;
        state.unconfirmed_bytes = 0;
        let mut messages: VecDeque<Outbound> = std::mem::take(&mut state.unconfirmed)
            .into_iter()
            .map(|(_, o)| o)
            .collect();
        messages.extend(std::mem::take(&mut state.stored));
        messages.extend(std::mem::take(&mut state.messages));
        // Notes are never answered: a session that ends drops them.
        state.presence = Vec::new();
        state.reads = Vec::new();
        state.signals = VecDeque::new();
        state.signal_bytes = 0;
        Batch {
            messages,
            outcomes: std::mem::take(&mut state.outcomes).into(),
            notes: Vec::new(),
            close: state.close,
        }
    }

    pub fn closing(&self) -> Option<Disconnect> {
        self.state().close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(s: &str) -> Outbound {
        Outbound {
            frame: Utf8Bytes::from(s.to_owned()),
            handover: None,
        }
    }

    const LIMITS: QueueLimits = QueueLimits {
        frames: 2,
        bytes: 1 << 20,
    };

    #[tokio::test]
    async fn a_full_queue_refuses_and_asks_for_4008() {
        let outbox = Outbox::new(LIMITS);
        outbox.push(message("a")).unwrap();
        outbox.push(message("b")).unwrap();
        assert!(matches!(outbox.push(message("c")), Err(Refused::Full(_))));
        assert!(matches!(
            outbox.push(message("d")),
            Err(Refused::Closing(_))
        ));
        outbox.ready().await;
        let batch = outbox.take();
        assert_eq!(batch.messages.len(), 2);
        assert_eq!(batch.close, Some(Disconnect::SlowConsumer));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let outbox = Outbox::new(QueueLimits {
            frames: 100,
            bytes: 10,
        });
        outbox.push(message("12345")).unwrap();
        outbox.push(message("67890")).unwrap();
        assert!(matches!(outbox.push(message("x")), Err(Refused::Full(_))));
        assert_eq!(outbox.closing(), Some(Disconnect::SlowConsumer));
        // Bytes are counted per queue-full, not forever.
        let fresh = Outbox::new(QueueLimits {
            frames: 100,
            bytes: 10,
        });
        for _ in 0..10 {
            fresh.push(message("12345678")).unwrap();
            assert_eq!(fresh.take().messages.len(), 1);
        }
    }

    #[test]
    fn outcomes_never_fill_the_queue_and_come_a_batch_per_turn() {
        let outbox = Outbox::new(LIMITS);
        for i in 0..1000 {
            outbox.owe(Utf8Bytes::from(i.to_string())).unwrap();
        }
        outbox.push(message("m")).unwrap();
        assert_eq!(outbox.closing(), None, "outcomes are not a slow consumer");
        let first = outbox.take();
        assert_eq!(first.messages.len(), 1);
        assert_eq!(first.outcomes.len(), OUTCOMES_PER_TURN);
        assert_eq!(first.outcomes[0].as_str(), "0");
        let mut taken = first.outcomes.len();
        while taken < 1000 {
            let next = outbox.take();
            assert_eq!(next.outcomes[0].as_str(), taken.to_string(), "in order");
            taken += next.outcomes.len();
        }
        assert!(outbox.take().outcomes.is_empty());
    }

    #[test]
    fn a_session_that_moves_takes_its_owed_outcomes_with_it() {
        let old = Outbox::acks(LIMITS);
        old.push(message(r#"{"a":1}"#)).unwrap();
        let written = old.take();
        assert_eq!(written.messages.len(), 1);
        old.push(message(r#"{"b":2}"#)).unwrap();
        old.owe(Utf8Bytes::from_static("r1")).unwrap();
        old.owe(Utf8Bytes::from_static("r2")).unwrap();
        let kept = old.take_kept();
        assert_eq!(kept.next_seq, 2);
        assert_eq!(kept.owed, ["r1", "r2"]);
        // The old outbox refuses what comes later: its caller sends it on.
        assert!(old.owe(Utf8Bytes::from_static("r3")).is_err());

        let new = Outbox::acks(LIMITS);
        new.owe(Utf8Bytes::from_static("r3")).unwrap();
        new.restore(kept);
        let batch = new.take();
        let owed: Vec<&str> = batch.outcomes.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            owed,
            ["r1", "r2", "r3"],
            "what was owed before, then what came since"
        );
        let frames: Vec<&str> = batch.messages.iter().map(|m| m.frame.as_str()).collect();
        assert_eq!(frames, [r#"{"b":2,"seq":2}"#]);
    }

    #[test]
    fn acks_mode_numbers_keeps_and_confirms() {
        let outbox = Outbox::acks(QueueLimits {
            frames: 3,
            bytes: 1 << 20,
        });
        for body in ["{\"a\":1}", "{\"b\":2}"] {
            outbox.push(message(body)).unwrap();
        }
        let batch = outbox.take();
        let frames: Vec<&str> = batch.messages.iter().map(|m| m.frame.as_str()).collect();
        assert_eq!(frames, [r#"{"a":1,"seq":1}"#, r#"{"b":2,"seq":2}"#]);
        // Kept until confirmed: they count against the bound.
        outbox.push(message("{\"c\":3}")).unwrap();
        assert!(matches!(outbox.push(message("{}")), Err(Refused::Full(_))));
        assert_eq!(outbox.confirm(1).len(), 1);
        // A resumed session writes again what is after `upto`.
        let (confirmed, again) = outbox.replay(1);
        assert!(confirmed.is_empty());
        assert_eq!(again, [Utf8Bytes::from(r#"{"b":2,"seq":2}"#)]);
        assert_eq!(outbox.closing(), None, "a replay takes back the 4008");
        let next = outbox.take();
        assert_eq!(next.messages[0].frame.as_str(), r#"{"c":3,"seq":3}"#);
        // Ending: unconfirmed first, in order.
        let rest = outbox.take_all();
        let frames: Vec<&str> = rest.messages.iter().map(|m| m.frame.as_str()).collect();
        assert_eq!(frames, [r#"{"b":2,"seq":2}"#, r#"{"c":3,"seq":3}"#]);
    }

    #[tokio::test]
    async fn first_close_code_wins_and_queued_frames_stay() {
        let outbox = Outbox::new(QueueLimits {
            frames: 8,
            bytes: 1 << 20,
        });
        outbox.push(message("a")).unwrap();
        outbox.close(Disconnect::Replaced);
        outbox.close(Disconnect::GoingAway);
        let batch = outbox.take();
        assert_eq!(
            (batch.messages.len(), batch.close),
            (1, Some(Disconnect::Replaced))
        );
        assert!(outbox.owe(Utf8Bytes::from_static("r")).is_err());
    }
}
