//! memcached's meta protocol over a small pool of connections per server.
//!
//! Only four commands are needed: `mg` (get, with the item's CAS value),
//! `ms` (set: plain, add-if-absent, or only-if-the-CAS-still-matches),
//! `md` (delete, optionally only with a matching CAS) and `mn` (a no-op,
//! as a ping). Requests to one connection are pipelined: every command is
//! written, then every reply read, in order.
//!
//! A connection whose exchange did not run to the end (an error, a
//! timeout, or the caller's future dropped mid-way) may still have replies
//! in flight, which the next caller would read as its own. So a connection
//! goes back to the pool only after a complete exchange; any other is
//! closed. That is also how the pool recovers from a server restart:
//! broken connections are dropped and new ones opened on demand.

use std::sync::Mutex;
use std::time::Duration;

use crate::lock::Locked;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How long one exchange may take before the caller hears `unavailable`.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Connections to one server in use at once; callers beyond it wait.
const POOL_SIZE: usize = 16;
/// Largest value this store ever reads: the nodes list is the biggest.
const MAX_VALUE: usize = 1 << 20;

/// One request of an exchange.
#[derive(Debug, Clone)]
pub enum Meta {
    /// `mg <key> v c`: the value and its CAS.
    Get { key: String },
    /// `ms <key> <len> T<ttl> ME|C<cas>`: set only if absent (`add`), or
    /// only if the CAS still matches.
    Set {
        key: String,
        value: String,
        ttl_secs: u32,
        mode: SetMode,
    },
    /// `md <key> C<cas>`: delete only if the CAS still matches.
    Delete { key: String, cas: u64 },
    /// `mn`: answered `MN`.
    Noop,
}

impl Meta {
    /// The key a request is about (for choosing its server); none for `mn`.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Get { key } | Self::Set { key, .. } | Self::Delete { key, .. } => Some(key),
            Self::Noop => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Set whatever is there.
    Always,
    Add,
    Cas(u64),
}

/// One reply, in the order of the requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `VA`: a hit.
    Value { value: String, cas: u64 },
    /// `EN`: a miss.
    Miss,
    /// `HD`: stored or deleted.
    Done,
    /// `NS`: not stored (an `add` found the key).
    NotStored,
    /// `EX`: the CAS did not match (someone wrote in between).
    Exists,
    /// `NF`: not found (a CAS write or delete of a missing key).
    NotFound,
    /// `MN`.
    Noop,
}

/// Connections to one memcached server.
pub struct Server {
    pub addr: String,
    idle: Mutex<Vec<BufStream<TcpStream>>>,
    in_use: Semaphore,
}

impl Server {
    pub fn new(addr: String) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
            in_use: Semaphore::new(POOL_SIZE),
        }
    }

    /// Sends `requests` on one connection and reads their replies, all
    /// within [`RESPONSE_TIMEOUT`].
    pub async fn exchange(&self, requests: &[Meta]) -> Result<Vec<Reply>, String> {
        // Waiting for a connection counts against the same bound: with the
        // server hung, every exchange ahead would otherwise add its own
        // timeout to this caller's wait.
        let _permit = tokio::time::timeout(RESPONSE_TIMEOUT, self.in_use.acquire())
            .await
            .map_err(|_| {
                format!(
                    "memcached at {}: all {POOL_SIZE} connections busy for {RESPONSE_TIMEOUT:?}",
                    self.addr
                )
            })?
            .map_err(|_| "memcached pool closed".to_owned())?;
        let pooled = self.idle.locked().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let replies = tokio::time::timeout(RESPONSE_TIMEOUT, exchange(&mut conn, requests))
            .await
            .map_err(|_| {
                format!(
                    "memcached at {} did not answer within {RESPONSE_TIMEOUT:?}",
                    self.addr
                )
            })?
            .map_err(|e| format!("memcached at {}: {e}", self.addr))?;
        // Only now, with every reply read, is the connection clean.
        self.idle.locked().push(conn);
        Ok(replies)
    }

    async fn connect(&self) -> Result<BufStream<TcpStream>, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                format!(
                    "no answer from memcached at {} within {CONNECT_TIMEOUT:?}",
                    self.addr
                )
            })?
            .map_err(|e| format!("cannot connect to memcached at {}: {e}", self.addr))?;
        // Requests are small and waited on: Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        Ok(BufStream::new(stream))
    }
}

async fn exchange(
    conn: &mut BufStream<TcpStream>,
    requests: &[Meta],
) -> std::io::Result<Vec<Reply>> {
    let mut out = Vec::with_capacity(64 * requests.len());
    for request in requests {
        encode(request, &mut out);
    }
    conn.write_all(&out).await?;
    conn.flush().await?;
    let mut replies = Vec::with_capacity(requests.len());
    let mut line = String::new();
    for _ in requests {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(invalid("the server closed the connection"));
        }
        replies.push(decode(&line, conn).await?);
    }
    Ok(replies)
}

fn encode(request: &Meta, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = match request {
        Meta::Get { key } => write!(out, "mg {key} v c\r\n"),
        Meta::Set {
            key,
            value,
            ttl_secs,
            mode,
        } => {
            let _ = write!(out, "ms {key} {} T{ttl_secs}", value.len());
            let _ = match mode {
                SetMode::Always => Ok(()),
                SetMode::Add => write!(out, " ME"),
                SetMode::Cas(cas) => write!(out, " C{cas}"),
            };
            write!(out, "\r\n{value}\r\n")
        }
        Meta::Delete { key, cas } => write!(out, "md {key} C{cas}\r\n"),
        Meta::Noop => write!(out, "mn\r\n"),
    };
}

async fn decode(line: &str, conn: &mut BufStream<TcpStream>) -> std::io::Result<Reply> {
    let mut words = line.trim_end().split(' ');
    Ok(match words.next().unwrap_or_default() {
        "VA" => {
            let size: usize = words
                .next()
                .and_then(|s| s.parse().ok())
                .filter(|size| *size <= MAX_VALUE)
                .ok_or_else(|| invalid(&format!("bad value header {line:?}")))?;
            let cas = words
                .find_map(|flag| flag.strip_prefix('c')?.parse().ok())
                .ok_or_else(|| invalid(&format!("no CAS in {line:?}")))?;
            let mut data = vec![0; size + 2];
            conn.read_exact(&mut data).await?;
            data.truncate(size);
            let value =
                String::from_utf8(data).map_err(|_| invalid("a value that is not UTF-8"))?;
            Reply::Value { value, cas }
        }
        "EN" => Reply::Miss,
        "HD" => Reply::Done,
        "NS" => Reply::NotStored,
        "EX" => Reply::Exists,
        "NF" => Reply::NotFound,
        "MN" => Reply::Noop,
        _ => return Err(invalid(&format!("unexpected reply {:?}", line.trim_end()))),
    })
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_encoded_as_meta_commands() {
        let mut out = Vec::new();
        for request in [
            Meta::Get { key: "k".into() },
            Meta::Set {
                key: "k".into(),
                value: "a b".into(),
                ttl_secs: 60,
                mode: SetMode::Cas(7),
            },
            Meta::Set {
                key: "k".into(),
                value: "v".into(),
                ttl_secs: 0,
                mode: SetMode::Add,
            },
            Meta::Delete {
                key: "k".into(),
                cas: 9,
            },
            Meta::Noop,
        ] {
            encode(&request, &mut out);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "mg k v c\r\nms k 3 T60 C7\r\na b\r\nms k 1 T0 ME\r\nv\r\nmd k C9\r\nmn\r\n"
        );
    }
}
