//! Registrations that arrive together go to Redis together.
//!
//! A connect writes its device field (the `REGISTER` script) and then its
//! node's index member (`SADD`, see the module above). One connect at a
//! time, that is two round trips and two commands per connect, each with
//! its own trip through the connection's driver task: in a reconnect storm,
//! thousands a second. Here one task takes every registration queued, lets
//! the connects already running add theirs (one yield, no timer: alone, a
//! registration goes at once), and sends them as one batch of scripts,
//! then one `SADD` per node index with the members of those written. While
//! a batch is out, the next one gathers, so batches grow with the load.
//!
//! Nothing about a registration's meaning changes: each script is still
//! its own atomic step on its own key, run in arrival order (on a cluster,
//! each on its key's master), and answers what it did alone (written, the
//! field it replaced, the client's devices, or too many devices). A member
//! is still added only after its field is written, and a registration is
//! answered only once both are done.

use std::time::Duration;

use redis::{Cmd, ErrorKind, RedisError, Script, Value};
use tokio::sync::{mpsc, oneshot};

use super::connect::Conn;
use super::store_error;
use crate::presence::PresenceError;
use crate::protocol::ClientId;

/// Registrations waiting for the batcher, at most (a connect beyond it
/// waits for room, as it would have waited for Redis).
const QUEUE: usize = 4096;
/// Registrations sent in one batch, at most.
const BATCH: usize = 512;
/// Longest a registration waits for its batch (queued behind others, then
/// Redis' own response time): past it, it fails as one call alone would
/// have, and the registrar deletes the field if it was written after all.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the `REGISTER` script answered for one registration.
pub struct Raw {
    /// False: not written, the client has the most devices allowed.
    pub written: bool,
    /// The device's field it replaced.
    pub previous: Option<String>,
    /// The client's fields after it.
    pub fields: Vec<(String, String)>,
}

/// One registration: the field to write and the index member to add once
/// it is.
pub struct Registration {
    pub client: ClientId,
    pub key: String,
    pub device: String,
    pub value: String,
    pub max_devices: usize,
    pub index_key: String,
    pub member: String,
}

struct Pending {
    registration: Registration,
    answer: oneshot::Sender<Result<Raw, PresenceError>>,
}

/// The handle on the batcher task; the task ends when this is dropped.
pub struct Registrations {
    queue: mpsc::Sender<Pending>,
}

impl Registrations {
    /// Starts the batcher on `conn`, running `script` (`REGISTER`).
    pub fn start(conn: Conn, script: Script) -> Self {
        let (queue, taken) = mpsc::channel(QUEUE);
        tokio::spawn(run(conn, script, taken));
        Self { queue }
    }

    /// Writes one device field and its index member, with whatever else
    /// is being registered at the same moment.
    pub async fn register(&self, registration: Registration) -> Result<Raw, PresenceError> {
        let gone = || PresenceError::unavailable("Redis: the registration batcher has stopped");
        let (answer, answered) = oneshot::channel();
        let asked = async {
            self.queue
                .send(Pending {
                    registration,
                    answer,
                })
                .await
                .map_err(|_| gone())?;
            answered.await.map_err(|_| gone())?
        };
        tokio::time::timeout(ANSWER_TIMEOUT, asked)
            .await
            .unwrap_or_else(|_| Err(PresenceError::unavailable("Redis: registration timed out")))
    }
}

async fn run(conn: Conn, script: Script, mut taken: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(BATCH);
    while taken.recv_many(&mut batch, BATCH).await > 0 {
        // The connects woken with this one add theirs first.
        tokio::task::yield_now().await;
        while batch.len() < BATCH {
            match taken.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        send(&conn, &script, std::mem::take(&mut batch)).await;
    }
}

/// Sends one batch and answers each registration in it.
async fn send(conn: &Conn, script: &Script, batch: Vec<Pending>) {
    let scripts = || {
        batch
            .iter()
            .map(|p| invoke(script, &p.registration))
            .collect::<Vec<_>>()
    };
    let mut replies = conn.batch_each(scripts()).await;
    // A restarted or failed-over Redis has no scripts: load, and once more.
    let unloaded = |r: &Result<Value, RedisError>| {
        r.as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript))
    };
    if replies.as_ref().is_ok_and(|r| r.iter().any(unloaded)) {
        replies = match script.prepare_invoke().load_async(&mut conn.clone()).await {
            Ok(_) => conn.batch_each(scripts()).await,
            Err(e) => Err(e),
        };
    }
    let replies = match replies {
        Ok(replies) => replies,
        Err(e) => return fail_all(batch, &e),
    };
    let answers: Vec<Result<Raw, PresenceError>> = batch
        .iter()
        .zip(replies)
        .map(|(p, reply)| {
            let client = &p.registration.client;
            let reply = reply.map_err(|e| store_error(client, e))?;
            let (written, previous, fields): (i64, Option<String>, Vec<(String, String)>) =
                redis::from_redis_value(reply).map_err(|e| store_error(client, e.into()))?;
            Ok(Raw {
                written: written != 0,
                previous,
                fields,
            })
        })
        .collect();

    // The index members of the fields written, one SADD per node index.
    let mut indexes: Vec<(&str, Cmd)> = Vec::new();
    for (p, answer) in batch.iter().zip(&answers) {
        if !matches!(answer, Ok(raw) if raw.written) {
            continue;
        }
        let r = &p.registration;
        match indexes.iter_mut().find(|(key, _)| *key == r.index_key) {
            Some((_, sadd)) => {
                sadd.arg(&r.member);
            }
            None => {
                let mut sadd = redis::cmd("SADD");
                sadd.arg(&r.index_key).arg(&r.member);
                indexes.push((&r.index_key, sadd));
            }
        }
    }
    let indexed = if indexes.is_empty() {
        Ok(())
    } else {
        let commands = indexes.into_iter().map(|(_, sadd)| sadd).collect();
        conn.batch(commands).await.map(drop)
    };
    if let Err(e) = indexed {
        // Written but not indexed: answered as failed, as one alone was
        // (the registrar then deletes its field again).
        return fail_all(batch, &e);
    }
    for (p, answer) in batch.into_iter().zip(answers) {
        let _ = p.answer.send(answer);
    }
}

fn invoke(script: &Script, r: &Registration) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(1)
        .arg(&r.key)
        .arg(&r.device)
        .arg(&r.value)
        .arg(r.max_devices);
    cmd
}

/// Answers every registration of `batch` with the connection's error.
fn fail_all(batch: Vec<Pending>, e: &RedisError) {
    let what = format!("Redis: {}", crate::cause::chain(e));
    for p in batch {
        let _ = p.answer.send(Err(PresenceError::unavailable(what.clone())));
    }
}
