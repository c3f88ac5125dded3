//! Events POSTed to the application's backend (`--webhook-url`): each as
//! `{"subject":"<the NATS subject>","event":{…}}`, signed with
//! `X-Switchboard-Signature: sha256=<hex of HMAC-SHA256 of the body with
//! --webhook-secret>`, so that the receiver can check it came from the
//! cluster.
//!
//! A POST that fails (no connection, a timeout, any status but 2xx) is
//! retried with exponential backoff and full jitter: the first retry
//! within half a second, the last of [`ATTEMPTS`] within about 16 s. Then
//! the event is dropped (and counted). Events go one at a time, in order,
//! over the node's one HTTP client ([`HttpClient`]: kept-alive
//! connections, `http://` or `https://`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookConfig;
use crate::events::{EventSink, SinkError, subject};
use crate::http_client::HttpClient;
use crate::metrics::Metrics;
use crate::protocol::jitter;

/// Tries per event, the first included.
pub const ATTEMPTS: u32 = 6;
/// The backoff before the first retry (at most; doubled for each next).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest one POST (with its connection) may take.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Webhook {
    url: String,
    secret: Vec<u8>,
    subject_prefix: String,
    metrics: Arc<Metrics>,
    /// The node's one HTTP client (requests bounded by [`POST_TIMEOUT`]).
    client: HttpClient,
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
    /// The sink for `config`, POSTing with `client` (whose requests must be
    /// bounded by about [`POST_TIMEOUT`]).
    pub fn new(
        config: &WebhookConfig,
        subject_prefix: &str,
        metrics: Arc<Metrics>,
        client: HttpClient,
    ) -> Self {
        Self {
            url: config.url.expose().to_owned(),
            secret: config.secret.expose().as_bytes().to_vec(),
            subject_prefix: subject_prefix.to_owned(),
            metrics,
            client,
        }
    }

    /// One POST; `Ok` on a 2xx answer.
    async fn post(&self, body: &Bytes, signed: &str) -> Result<(), SinkError> {
        let answer = self
            .client
            .request(reqwest::Method::POST, &self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-switchboard-signature", signed)
            .body(body.clone())
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(SinkError::Status(response.status().as_u16())),
            // The URL may hold credentials: only what went wrong is kept.
            Err(e) => Err(SinkError::Unreachable(
                crate::http_client::describe(&e).into(),
            )),
        }
    }
}

#[async_trait]
impl EventSink for Webhook {
    async fn deliver(
        &self,
        kind: &'static str,
        event: Bytes,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let subject = subject(&self.subject_prefix, kind);
        let mut body = Vec::with_capacity(event.len() + subject.len() + 24);
        body.extend_from_slice(br#"{"subject":""#);
        body.extend_from_slice(subject.as_bytes());
        body.extend_from_slice(br#"","event":"#);
        body.extend_from_slice(&event);
        body.push(b'}');
        let body = Bytes::from(body);
        let signed = signature(&self.secret, &body);
        let mut last = SinkError::Stopped;
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
            match self.post(&body, &signed).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
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
