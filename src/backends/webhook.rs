//! Events POSTed to the application's backend (`--webhook-url`): each as
//! `{"subject":"<the NATS subject>","event":{…}}`, signed with
//! `X-Switchboard-Signature: sha256=<hex of HMAC-SHA256 of the body with
//! --webhook-secret>`, so that the receiver can check it came from the
//! cluster.
//!
//! A POST that fails (no connection, a timeout, any status but 2xx) is
//! retried with exponential backoff and full jitter: the first retry
//! within half a second, the last of [`ATTEMPTS`] within about 16 s. Then
//! the event is dropped (and counted). One connection, kept alive and
//! opened again when it breaks; events go one at a time, in order.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookConfig;
use crate::events::{EventSink, subject};
use crate::metrics::Metrics;

/// Tries per event, the first included.
pub const ATTEMPTS: u32 = 6;
/// The backoff before the first retry (at most; doubled for each next).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest one POST (with its connection) may take.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Webhook {
    /// `host:port` to connect to, and the request's path.
    authority: String,
    path: String,
    secret: Vec<u8>,
    subject_prefix: String,
    metrics: Arc<Metrics>,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

/// The signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

impl Webhook {
    pub fn new(config: &WebhookConfig, subject_prefix: &str, metrics: Arc<Metrics>) -> Self {
        let rest = config
            .url
            .expose()
            .strip_prefix("http://")
            .expect("checked by the config");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Self {
            authority,
            path: path.to_owned(),
            secret: config.secret.expose().as_bytes().to_vec(),
            subject_prefix: subject_prefix.to_owned(),
            metrics,
            conn: Mutex::new(None),
        }
    }

    /// One POST; `Ok` on a 2xx answer.
    async fn post(&self, body: &Bytes, signed: &str) -> Result<(), String> {
        let mut conn = self.conn.lock().await;
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("{}: {e}", self.authority))?;
            tokio::spawn(connection);
            *conn = Some(sender);
        }
        let sender = conn.as_mut().expect("just connected");
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("x-switchboard-signature", signed)
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let answer = sender.send_request(request).await;
        match answer {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the webhook answered {}", response.status())),
            Err(e) => {
                *conn = None;
                Err(format!("{}: {e}", self.authority))
            }
        }
    }
}

/// A random fraction in [0, 1), for jitter.
fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64
}

#[async_trait]
impl EventSink for Webhook {
    async fn deliver(
        &self,
        kind: &'static str,
        event: Bytes,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let subject = subject(&self.subject_prefix, kind);
        let mut body = Vec::with_capacity(event.len() + subject.len() + 24);
        body.extend_from_slice(br#"{"subject":""#);
        body.extend_from_slice(subject.as_bytes());
        body.extend_from_slice(br#"","event":"#);
        body.extend_from_slice(&event);
        body.push(b'}');
        let body = Bytes::from(body);
        let signed = signature(&self.secret, &body);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Full jitter: anywhere up to the doubled backoff.
                let ceiling = FIRST_BACKOFF * 2u32.pow(attempt - 1);
                let pause = ceiling.mul_f64(jitter());
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => break,
                }
            }
            match tokio::time::timeout(POST_TIMEOUT, self.post(&body, &signed)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    *self.conn.lock().await = None;
                    last = format!("no answer from {} within {POST_TIMEOUT:?}", self.authority);
                }
            }
            self.metrics.webhook_failed();
            if stop.is_cancelled() {
                break;
            }
        }
        Err(last)
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
