//! TLS for the node's own port (`--tls-cert`, `--tls-key`). (The client
//! side of `wss://` lives in the client crate.)
//!
//! warp 0.4 no longer serves TLS itself, so the accept loop does the
//! handshake with tokio-rustls and hands the decrypted stream to hyper like
//! any other connection. Everything runs on ring, the provider async-nats
//! already brings, so the binary carries one crypto library.

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

/// The server side, from PEM files. Errors name the file and what is wrong
/// with it.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let cert_path = files.cert.display();
    let key_path = files.key.display();
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from --tls-cert {cert_path}: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {cert_path} holds no certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("cannot read a private key from --tls-key {key_path}: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!("--tls-cert {cert_path} and --tls-key {key_path} do not make a pair: {e}")
        })?;
    // WebSocket upgrades need HTTP/1.1; say so, for clients that ask.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
