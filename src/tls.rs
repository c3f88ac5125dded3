//! TLS for the node's own port (`--tls-cert`, `--tls-key`). (The client
//! side of `wss://` lives in the client crate.)
//!
//! warp 0.4 no longer serves TLS itself, so the accept loop does the
//! handshake with tokio-rustls and hands the decrypted stream to hyper like
//! any other connection. Everything runs on ring, the provider async-nats
//! already brings, so the binary carries one crypto library.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default, for libraries (the redis crate)
/// that build their TLS configuration from it. Harmless if already set.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why `--tls-cert` and `--tls-key` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from --tls-cert {}", .path.display())]
    Certificates {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("--tls-cert {} holds no certificate (-----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(PathBuf),
    #[error("cannot read a private key from --tls-key {}", .path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("--tls-cert {} and --tls-key {} do not make a pair", .cert.display(), .key.display())]
    NoPair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS setup")]
    Setup(#[source] rustls::Error),
}

/// The server side, from PEM files. Errors name the file and what is wrong
/// with it.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: files.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Key {
        path: files.key.clone(),
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::NoPair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    // WebSocket upgrades need HTTP/1.1; say so, for clients that ask.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
