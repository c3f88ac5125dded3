//! The accept loop: TCP connections in, HTTP/1.1 (with upgrades) served by
//! the warp routes.
//!
//! warp's own server would do, but owning the loop lets the node set
//! TCP_NODELAY (small chat frames must not wait for Nagle), survive
//! accept errors such as running out of file descriptors, and drain plain
//! HTTP connections on shutdown. Upgraded WebSocket connections leave
//! hyper's hands at the upgrade; the session loop closes those.

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// How long in-flight HTTP requests may take to finish on shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of file descriptors, say), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
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
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
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
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(HTTP_DRAIN, connections.wait()).await;
}
