//! The backend hooks over HTTP (`--hook-url`, v3): each call a JSON POST
//! to the application's backend, signed like the webhook
//! (`X-Switchboard-Signature: sha256=<hex HMAC-SHA256 of the body>`), over
//! the pooled client's kept-alive connections (`http://` or `https://`).
//! The answer must be one of the hook answers of docs/protocol.md, with a
//! 2xx status; anything else is a [`HookError`].

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::webhook::signature;
use crate::hooks::{ConnectCall, ConnectVerdict, HookBackend, HookError, SendCall, SendVerdict};
use crate::http_client::HttpClient;

pub struct HttpHooks {
    /// Parsed once: parsing it per call (IDNA, the host) was a measurable
    /// part of a call's CPU.
    url: reqwest::Url,
    secret: Vec<u8>,
    /// Each call's own bound (`--hook-timeout-ms`); the client is the
    /// node's one pooled client, shared with the webhook.
    timeout: std::time::Duration,
    client: HttpClient,
}

/// A hook answer, as the backend writes it.
#[derive(Deserialize)]
struct Answer<'a> {
    allow: bool,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

impl HttpHooks {
    pub fn new(url: &str, secret: &str, timeout: std::time::Duration, client: HttpClient) -> Self {
        Self {
            url: reqwest::Url::parse(url).expect("--hook-url is checked when the config is read"),
            secret: secret.as_bytes().to_vec(),
            timeout,
            client,
        }
    }

    /// POSTs `call`; the answer's body on a 2xx status.
    async fn post(&self, call: &impl serde::Serialize) -> Result<Bytes, HookError> {
        let body = serde_json::to_vec(call)
            .map_err(|e| HookError::Garbage(format!("the call would not serialize: {e}")))?;
        let signed = signature(&self.secret, &body);
        let answer = self
            .client
            .request(reqwest::Method::POST, self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-switchboard-signature", signed)
            .timeout(self.timeout)
            .body(body)
            .send()
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Err(HookError::Timeout),
            // The URL may hold credentials: only what went wrong is kept.
            Err(e) => {
                return Err(HookError::Unreachable(
                    crate::http_client::describe(&e).into(),
                ));
            }
        };
        let status = response.status();
        if !status.is_success() {
            return Err(HookError::Status(status.as_u16()));
        }
        response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                HookError::Timeout
            } else {
                HookError::Unreachable("the answer broke off".into())
            }
        })
    }
}

fn answer(bytes: &Bytes) -> Result<Answer<'_>, HookError> {
    serde_json::from_slice(bytes)
        .map_err(|e| HookError::Garbage(format!("expected {{\"allow\": true|false, …}}: {e}")))
}

#[async_trait]
impl HookBackend for HttpHooks {
    async fn connect(&self, call: &ConnectCall<'_>) -> Result<ConnectVerdict, HookError> {
        let bytes = self.post(call).await?;
        let answer = answer(&bytes)?;
        if answer.allow {
            return Ok(ConnectVerdict::Allow);
        }
        let status = answer.status.unwrap_or(403);
        if !(400..=499).contains(&status) {
            return Err(HookError::Garbage(format!(
                "a refusal's status must be 400 to 499; this one is {status}"
            )));
        }
        Ok(ConnectVerdict::Refuse {
            status,
            error: answer.error.unwrap_or_else(|| "refused".into()),
            message: answer
                .message
                .unwrap_or_else(|| "the application refused this connection".into()),
        })
    }

    async fn send(&self, call: &SendCall<'_>) -> Result<SendVerdict, HookError> {
        let bytes = self.post(call).await?;
        let answer = answer(&bytes)?;
        Ok(match (answer.allow, answer.body) {
            (true, None) => SendVerdict::Allow,
            (true, Some(body)) => SendVerdict::Rewrite(body.to_owned()),
            (false, _) => SendVerdict::Refuse {
                reason: answer.error.unwrap_or_else(|| "rejected".into()),
                message: answer
                    .message
                    .unwrap_or_else(|| "the application refused this message".into()),
            },
        })
    }
}
