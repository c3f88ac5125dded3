//! `switchboard bench drain`: how long a client that comes online takes to
//! get its inbox. A sender stores `--messages` messages for a client that
//! is offline (pipelined, up to 64 unanswered), then that client connects
//! (on another node when there are two URLs); the figure is the time from
//! opening its connection to its last stored message, and the rate that
//! makes.

use std::time::{Duration, Instant};

use clap::Args;
use switchboard_client::{ConnectOptions, Event, To};

use super::{BenchResult, Common, open_session};
use switchboard::protocol::{AckStatus, ServerFrame};

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub common: Common,

    /// Stored messages to drain (at most the nodes' --inbox-max-messages).
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,

    /// Bytes of padding in each message body.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,

    /// The draining session in acks mode (it confirms as the Rust client
    /// does: every 32 messages).
    #[arg(long)]
    pub acks: bool,

    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

/// Frames sent and not yet answered, at most.
const PIPELINE: u64 = 64;
/// The whole run's bound.
const LIMIT: Duration = Duration::from_secs(120);

pub async fn drain(args: DrainArgs) -> BenchResult {
    tokio::time::timeout(LIMIT, run(args))
        .await
        .map_err(|_| format!("the drain bench did not finish within {LIMIT:?}"))?
}

async fn run(args: DrainArgs) -> BenchResult {
    let urls = &args.common.urls;
    let secret = args.jwt_secret.as_deref();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (sender, recipient) = (
        format!("drain-from-{}", &run[..8]),
        format!("drain-to-{}", &run[..8]),
    );
    let mut from = open_session(&urls[0], &sender, secret, &ConnectOptions::default()).await?;
    if from.welcome().inbox.is_none() {
        return Err("the node has no inbox: start it with --inbox".into());
    }
    let body = serde_json::json!({ "p": "x".repeat(args.payload) });
    let (mut sent, mut stored) = (0u64, 0u64);
    let started = Instant::now();
    while stored < args.messages {
        while sent < args.messages && sent - stored < PIPELINE {
            from.send_to(To::Client(&recipient), &body, None, false, true)
                .await
                .map_err(|e| e.to_string())?;
            sent += 1;
        }
        match from.next_frame().await.map_err(|e| e.to_string())? {
            Some(ServerFrame::Ack(ack))
                if ack.status == AckStatus::Offline && ack.stored == Some(true) =>
            {
                stored += 1
            }
            Some(ServerFrame::Ack(ack)) => {
                return Err(format!(
                    "a send was not stored: {ack:?} (is --inbox-max-messages below --messages?)"
                ));
            }
            Some(other) => return Err(format!("the sender got {other:?}")),
            None => return Err("the sender's session closed".into()),
        }
    }
    let store_took = started.elapsed();

    let options = ConnectOptions {
        acks: args.acks,
        ..ConnectOptions::default()
    };
    let url = urls.get(1).unwrap_or(&urls[0]);
    let connecting = Instant::now();
    let mut to = open_session(url, &recipient, secret, &options).await?;
    let welcomed = connecting.elapsed();
    let announced = to.welcome().inbox.unwrap_or(0);
    let mut got = 0u64;
    while got < announced {
        match to.next_event().await.map_err(|e| e.to_string())? {
            Event::Frame(ServerFrame::Message(m)) if m.stored => {
                got += 1;
                if let (true, Some(seq)) = (args.acks, m.seq)
                    && seq % 32 == 0
                {
                    to.confirm(seq).await.map_err(|e| e.to_string())?;
                }
            }
            Event::Frame(other) => return Err(format!("the recipient got {other:?}")),
            Event::Closed { code, reason } => {
                return Err(format!("the recipient was closed ({code:?}): {reason}"));
            }
        }
    }
    let drained = connecting.elapsed();
    let summary = serde_json::json!({
        "bench": "drain",
        "messages": args.messages,
        "announced": announced,
        "store_seconds": store_took.as_secs_f64(),
        "stores_per_second": args.messages as f64 / store_took.as_secs_f64(),
        "welcome_ms": welcomed.as_secs_f64() * 1000.0,
        "last_stored_ms": drained.as_secs_f64() * 1000.0,
        "drained_per_second": got as f64 / drained.as_secs_f64(),
    });
    eprintln!(
        "drain: {} stored in {:.0} ms ({:.0}/s, one sender, {PIPELINE} in flight); \
         welcome after {:.1} ms (inbox: {announced}); last stored message after {:.1} ms",
        args.messages,
        store_took.as_secs_f64() * 1000.0,
        args.messages as f64 / store_took.as_secs_f64(),
        welcomed.as_secs_f64() * 1000.0,
        drained.as_secs_f64() * 1000.0,
    );
    if args.common.json {
        println!("{summary}");
    }
    if announced != args.messages {
        return Err(format!(
            "the welcome announced {announced} of {} stored",
            args.messages
        ));
    }
    Ok(())
}
