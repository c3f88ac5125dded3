//! `switchboard bench hook-backend`: the cheapest backend the hooks (v3)
//! can have, so that a benchmark measures what the *node* pays for a hook
//! call and not what some example backend pays to answer it.
//!
//! It answers every call `{"allow":true}` after `--delay-ms` (0 by
//! default: at once), checking the signature when given `--secret` (a
//! wrong one gets 401, which the node counts as a hook failure, so a
//! benchmark with mistyped secrets shows failures rather than flattering
//! figures). It is served by the node's own accept loop
//! (`switchboard::server`), kept-alive HTTP/1.1 like a real backend.
//! On SIGINT or SIGTERM it prints how many calls it answered and how many
//! had a bad signature, so a script can check the hook was really called.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use switchboard::backends::webhook::signature;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

#[derive(Debug, Clone, Args)]
pub struct HookBackendArgs {
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,

    /// Answer each call after this long (a backend that looks something
    /// up). Calls wait concurrently, as with a real backend.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,

    /// The node's --hook-secret: every call's X-Switchboard-Signature is
    /// checked against it (401 when wrong).
    #[arg(long)]
    pub secret: Option<String>,
}

/// What the backend has seen, printed when it stops.
#[derive(Default)]
struct Calls {
    answered: AtomicU64,
    bad_signature: AtomicU64,
}

pub async fn run(args: HookBackendArgs) -> i32 {
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "switchboard bench hook-backend: cannot listen on {}: {e}",
                args.listen
            );
            return 1;
        }
    };
    let calls = Arc::new(Calls::default());
    let secret: Option<Arc<[u8]>> = args.secret.map(|s| Arc::from(s.into_bytes()));
    let delay = Duration::from_millis(args.delay_ms);
    let seen = calls.clone();
    let routes = warp::post()
        .and(warp::header::optional::<String>("x-switchboard-signature"))
        .and(warp::body::bytes())
        .then(move |given: Option<String>, body: Bytes| {
            let secret = secret.clone();
            let calls = seen.clone();
            async move { answer(&calls, secret.as_deref(), given, &body, delay).await }
        })
        .boxed();

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        switchboard::runtime::wait_for_signal().await;
        stop.cancel();
    });
    eprintln!(
        "hook backend on http://{} (delay {} ms)",
        args.listen, args.delay_ms
    );
    switchboard::server::serve(listener, routes, None, Duration::from_secs(10), shutdown).await;
    eprintln!(
        "hook backend: {} calls answered, {} with a bad signature",
        calls.answered.load(Relaxed),
        calls.bad_signature.load(Relaxed)
    );
    0
}

async fn answer(
    calls: &Calls,
    secret: Option<&[u8]>,
    given: Option<String>,
    body: &[u8],
    delay: Duration,
) -> Response {
    if let Some(secret) = secret
        && given.as_deref() != Some(signature(secret, body).as_str())
    {
        calls.bad_signature.fetch_add(1, Relaxed);
        return warp::reply::with_status("bad signature", StatusCode::UNAUTHORIZED).into_response();
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    calls.answered.fetch_add(1, Relaxed);
    warp::reply::with_header(r#"{"allow":true}"#, "content-type", "application/json")
        .into_response()
}
