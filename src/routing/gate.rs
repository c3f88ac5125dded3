//! Backend hooks (v3): the [`Gate`] asks the application's backend before
//! a connection is admitted (`connect`) and before a client's message is
//! routed (`send`), through the [`HookBackend`] port.
//!
//! **A slow or dead backend never stalls the rest.** At most
//! `--hook-concurrency` calls are under way at once per node; a call waits
//! for a slot and for its answer within `--hook-timeout-ms` in all, and
//! holds nothing else meanwhile (no lock, no other session's queue). A
//! session's sends wait for their own calls only, several at once: the
//! session keeps them in the order read (its pending answers), so acks and
//! messages go out in the order sent while the calls overlap.
//!
//! **And never lets through what it should have stopped.** A call that
//! fails (no slot or no answer in time, a non-2xx status, an answer that
//! is not a hook answer, a rewritten body that breaks the body rules) is
//! answered by `--hook-failure`: `closed` (the default) refuses the
//! connection (503 `hook_unavailable`) or the send (`unavailable`,
//! nothing routed); `open` lets it go on as if allowed, the original body
//! unchanged. Either way it is counted, and logged at most once a second
//! per cause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::hooks::{ConnectCall, ConnectVerdict, HookBackend, HookError, SendCall, SendVerdict};
use crate::lock::Locked;
use crate::metrics::Metrics;
use crate::protocol::frames::check_body;
use crate::rate::LogThrottle;

/// What `--hook-failure` makes of a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Refuse: 503 `hook_unavailable`, or `unavailable` for a send.
    Closed,
    /// Go on as if allowed.
    Open,
}

/// How the gate runs: from the node's configuration.
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    pub connect: bool,
    pub send: bool,
    pub timeout: Duration,
    pub concurrency: usize,
    pub on_failure: OnFailure,
    /// The largest body a rewrite may give (the client's frame limit).
    pub max_body_bytes: usize,
}

/// A connection's fate.
#[derive(Debug)]
pub enum Admission {
    Allow,
    Refuse {
        status: u16,
        error: String,
        message: String,
    },
    /// The hook failed and the gate is closed.
    Unavailable(String),
}

/// A send's fate.
#[derive(Debug)]
pub enum Checked {
    Allow,
    /// Route it with this body (checked).
    Rewritten(Box<RawValue>),
    Rejected {
        reason: String,
        message: String,
    },
    /// The hook failed and the gate is closed.
    Unavailable(String),
}

pub struct Gate {
    backend: Arc<dyn HookBackend>,
    settings: GateSettings,
    slots: Semaphore,
    metrics: Arc<Metrics>,
    complaints: Mutex<HashMap<&'static str, LogThrottle>>,
}

impl Gate {
    pub fn new(
        backend: Arc<dyn HookBackend>,
        settings: GateSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            backend,
            slots: Semaphore::new(settings.concurrency.max(1)),
            settings,
            metrics,
            complaints: Mutex::default(),
        }
    }

    /// Whether connections are asked about.
    pub fn connects(&self) -> bool {
        self.settings.connect
    }

    /// Whether client sends are asked about.
    pub fn sends(&self) -> bool {
        self.settings.send
    }

    /// Asks the backend whether the connection may go ahead.
    pub async fn admit(&self, call: &ConnectCall<'_>) -> Admission {
        let answer = self.call("connect", self.backend.connect(call)).await;
        match answer {
            Ok(ConnectVerdict::Allow) => {
                self.metrics.hook_call("connect", "allow");
                Admission::Allow
            }
            Ok(ConnectVerdict::Refuse {
                status,
                error,
                message,
            }) => {
                self.metrics.hook_call("connect", "refuse");
                Admission::Refuse {
                    status,
                    error,
                    message,
                }
            }
            Err(e) => match self.failed("connect", &e) {
                OnFailure::Open => Admission::Allow,
                OnFailure::Closed => {
                    Admission::Unavailable(format!("the connect hook failed: {e}"))
                }
            },
        }
    }

    /// Asks the backend whether the message may be routed, and with what
    /// body.
    pub async fn check(&self, call: &SendCall<'_>) -> Checked {
        let answer = self.call("send", self.backend.send(call)).await;
        let answer = match answer {
            Ok(SendVerdict::Rewrite(body)) => self.checked(body).map(SendVerdict::Rewrite),
            other => other,
        };
        match answer {
            Ok(SendVerdict::Allow) => {
                self.metrics.hook_call("send", "allow");
                Checked::Allow
            }
            Ok(SendVerdict::Rewrite(body)) => {
                self.metrics.hook_call("send", "rewrite");
                Checked::Rewritten(body)
            }
            Ok(SendVerdict::Refuse { reason, message }) => {
                self.metrics.hook_call("send", "refuse");
                Checked::Rejected { reason, message }
            }
            Err(e) => match self.failed("send", &e) {
                OnFailure::Open => Checked::Allow,
                OnFailure::Closed => Checked::Unavailable(format!("the send hook failed: {e}")),
            },
        }
    }

    /// A rewritten body, held to a client's body rules.
    fn checked(&self, body: Box<RawValue>) -> Result<Box<RawValue>, HookError> {
        let max = self.settings.max_body_bytes;
        if body.get().len() > max {
            return Err(HookError::Garbage(format!(
                "a rewritten body of {} bytes (the limit is {max})",
                body.get().len()
            )));
        }
        check_body(&body).map_err(|why| HookError::Garbage(format!("a rewritten body: {why}")))?;
        Ok(body)
    }

    /// One call: a slot, then the answer, both within the timeout.
    async fn call<T>(
        &self,
        hook: &'static str,
        call: impl Future<Output = Result<T, HookError>>,
    ) -> Result<T, HookError> {
        let deadline = Instant::now() + self.settings.timeout;
        self.metrics.hook_waiting(1);
        let answered = async {
            let _slot = tokio::time::timeout_at(deadline, self.slots.acquire())
                .await
                .map_err(|_| HookError::Busy)?
                .map_err(|_| HookError::Busy)?;
            let started = Instant::now();
            let answer = tokio::time::timeout_at(deadline, call)
                .await
                .map_err(|_| HookError::Timeout)?;
            self.metrics.observe_hook(hook, started.elapsed());
            answer
        }
        .await;
        self.metrics.hook_waiting(-1);
        answered
    }

    /// Counts and (at most once a second per cause) logs a failed call;
    /// answers what the gate does about it.
    fn failed(&self, hook: &'static str, e: &HookError) -> OnFailure {
        self.metrics.hook_call(hook, "failed");
        self.metrics.hook_failure(e.cause());
        let mut complaints = self.complaints.locked();
        let throttle = complaints
            .entry(e.cause())
            .or_insert_with(|| LogThrottle::new(Duration::from_secs(1)));
        if let Some(skipped) = throttle.ready() {
            let mode = match self.settings.on_failure {
                OnFailure::Closed => "refused (--hook-failure closed)",
                OnFailure::Open => "let through (--hook-failure open)",
            };
            tracing::warn!(hook, error = %e, also_failed = skipped, "a backend hook failed: {mode}");
        }
        self.settings.on_failure
    }
}
