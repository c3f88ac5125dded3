//! The one HTTP client of the node and its tools: what the webhook, the
//! backend hooks and the tools (`switchboard group`, `switchboard bench`)
//! send requests with.
//!
//! It is reqwest on hyper: kept-alive, pooled connections per host (a
//! webhook or a hook backend that takes thousands of requests a second is
//! not dialed for each one), `http://` and `https://`, a connect timeout
//! and a total timeout per request. TLS is rustls on ring, the provider
//! the rest of the binary uses, trusting the system's roots and, with
//! `--backend-ca-file`, a private CA's (a backend inside the cluster's
//! network with its own certificates, or a test's).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per host: enough for a hook backend taking a
/// node's full `--hook-concurrency` without redialing.
const IDLE_PER_HOST: usize = 256;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("cannot read CA certificates from --backend-ca-file {}", .path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("--backend-ca-file {} holds no usable CA certificate", .0.display())]
    NoCa(PathBuf),
    #[error("TLS setup")]
    Tls(#[source] rustls::Error),
    #[error("HTTP client setup")]
    Build(#[source] reqwest::Error),
}

/// A pooled HTTP client. Cheap to clone (one pool, shared).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
}

/// Why a request got no answer to read.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {what}")]
pub struct RequestError {
    pub url: String,
    pub what: &'static str,
    #[source]
    pub source: Option<reqwest::Error>,
}

impl RequestError {
    /// The request ran out of time (to connect, or to be answered).
    pub fn is_timeout(&self) -> bool {
        self.source.as_ref().is_some_and(|e| e.is_timeout())
    }
}

impl HttpClient {
    /// A client trusting the system's roots and, when given, the CA
    /// certificates in `ca_file`; every request bounded by `timeout`.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Self, HttpClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system root rustls cannot parse is one root fewer, not an
            // error: the rest still work.
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|source| HttpClientError::CaFile {
                    path: path.to_owned(),
                    source,
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(HttpClientError::NoCa(path.to_owned()));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(HttpClientError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let inner = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build()
            .map_err(HttpClientError::Build)?;
        Ok(Self { inner })
    }

    /// A request to build and send (reqwest's builder).
    pub fn request(
        &self,
        method: reqwest::Method,
        url: impl reqwest::IntoUrl,
    ) -> reqwest::RequestBuilder {
        self.inner.request(method, url)
    }

    /// Sends `method url` (with `Authorization: Bearer <bearer>` when given,
    /// and `body` as JSON when given); returns the status and the body.
    /// Errors name the address and what went wrong: for the tools.
    pub async fn exchange(
        &self,
        method: reqwest::Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<String>,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), RequestError> {
        let mut request = self.request(method, url);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let failed = |what, source| RequestError {
            url: url.to_owned(),
            what,
            source: Some(source),
        };
        let response = request.send().await.map_err(|e| failed(describe(&e), e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| failed("the answer broke off", e))?;
        Ok((status, body))
    }
}

/// What went wrong with a request, in a few words.
pub fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_builder() {
        "not a usable URL"
    } else {
        "the request failed"
    }
}
