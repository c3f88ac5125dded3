//! The accept loop: TCP connections in, HTTP/1.1 (with upgrades) served by
//! the warp routes.
//!
//! warp's own server would do, but owning the loop lets the node set
//! TCP_NODELAY (small chat frames must not wait for Nagle), survive
//! accept errors such as running out of file descriptors, terminate TLS,
//! time out slow handshakes, and drain plain HTTP connections on shutdown.
//! Upgraded WebSocket connections leave hyper's hands at the upgrade; the
//! session loop closes those.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// How long in-flight HTTP requests may take to finish on shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of file descriptors, say), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts until `shutdown`. With `tls`, every connection first completes
/// a TLS handshake. `handshake_timeout` bounds the TLS handshake and the
/// wait for each request's headers, so that connections which open and
/// then dawdle (slowloris) cannot pile up.
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, peer, routes, handshake_timeout, shutdown).await;
            };
            match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    serve_connection(stream, peer, routes, handshake_timeout, shutdown).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(HTTP_DRAIN, connections.wait()).await;
}

/// Serves HTTP/1.1, upgrades included, on one connection: a TCP or TLS
/// stream from the accept loop, or any other byte stream (the test bed
/// serves its clients over in-memory pipes, `tokio::io::duplex`, through
/// exactly this). `peer` names the other end in logs.
pub async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    routes: BoxedFilter<(Response,)>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = WithPeer {
        inner: TowerToHyperService::new(warp::service(routes)),
        peer,
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// A service that puts the address at the other end of the connection (a
/// `SocketAddr`) in each request's extensions before `inner` sees it: the
/// connect hook tells the application's backend (v3).
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithPeer<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        self.inner.call(request)
    }
}
