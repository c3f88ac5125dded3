//! A session's outbound queue, and the way to ask a session to close.
//!
//! Other tasks (the router, the hop handler, other sessions) push frames;
//! the session's own loop takes them and writes them to its socket. The
//! queue is bounded: a push into a full queue is refused and marks the
//! session as a slow consumer (closed with 4008), so one stuck client can
//! never make the node buffer without limit.
//!
//! It is a mutex around a `VecDeque` rather than a channel on purpose: an
//! idle session's empty `VecDeque` owns no heap memory, which matters at
//! tens of thousands of idle sessions per node.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::close;
use crate::router::Origin;

/// One frame waiting for the socket.
#[derive(Debug)]
pub enum Outbound {
    /// A client message. Its outcome (delivered, or offline if it never
    /// reaches the socket) is reported to `origin`, when there is one.
    Message {
        frame: Utf8Bytes,
        origin: Option<Box<Origin>>,
    },
    /// Any other frame (a receipt): nothing to report back.
    Frame(Utf8Bytes),
}

/// Why a push was refused. The frame comes back so the caller can answer
/// its sender.
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

struct State {
    queue: VecDeque<Outbound>,
    /// Set once; the first close code asked for wins.
    close: Option<u16>,
}

pub struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    wake: Notify,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                close: None,
            }),
            capacity,
            wake: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, item: Outbound) -> Result<(), Refused> {
        let mut state = self.state();
        if state.close.is_some() {
            return Err(Refused::Closing(item));
        }
        if state.queue.len() >= self.capacity {
            state.close = Some(close::SLOW_CONSUMER);
            drop(state);
            self.wake.notify_one();
            return Err(Refused::Full(item));
        }
        state.queue.push_back(item);
        drop(state);
        // notify_one stores a permit when the loop is not waiting, so a push
        // between two waits is never missed.
        self.wake.notify_one();
        Ok(())
    }

    /// Asks the session to close with `code` once it has written what is
    /// already queued (unless the code is 4008: a slow consumer's queue is
    /// not worth waiting for). Later pushes are refused.
    pub fn close(&self, code: u16) {
        let mut state = self.state();
        if state.close.is_none() {
            state.close = Some(code);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Waits until there is something to take or a close was asked for.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Takes everything queued, and the close code if one was asked for.
    pub fn take(&self) -> (VecDeque<Outbound>, Option<u16>) {
        let mut state = self.state();
        // Leaves an empty, unallocated queue behind.
        (std::mem::take(&mut state.queue), state.close)
    }

    pub fn close_code(&self) -> Option<u16> {
        self.state().close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> Outbound {
        Outbound::Frame(Utf8Bytes::from(s.to_owned()))
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_asks_for_4008() {
        let outbox = Outbox::new(2);
        outbox.push(frame("a")).unwrap();
        outbox.push(frame("b")).unwrap();
        assert!(matches!(outbox.push(frame("c")), Err(Refused::Full(_))));
        assert!(matches!(outbox.push(frame("d")), Err(Refused::Closing(_))));
        outbox.ready().await;
        let (items, close) = outbox.take();
        assert_eq!(items.len(), 2);
        assert_eq!(close, Some(close::SLOW_CONSUMER));
    }

    #[tokio::test]
    async fn first_close_code_wins_and_queued_frames_stay() {
        let outbox = Outbox::new(8);
        outbox.push(frame("a")).unwrap();
        outbox.close(close::REPLACED);
        outbox.close(close::GOING_AWAY);
        let (items, close) = outbox.take();
        assert_eq!((items.len(), close), (1, Some(close::REPLACED)));
    }
}
