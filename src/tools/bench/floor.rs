//! The floors Switchboard is measured against on the same machine: what
//! nats-server alone costs to relay a message from a publisher to a
//! subscriber, and what a WebSocket server that does nothing but echo
//! costs per frame. Switchboard's cross-node path is one WebSocket frame
//! in, a NATS relay, one WebSocket frame out (plus acks and outcomes), so
//! these bound what it could ever reach.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::report::{Latencies, Summary};
use super::{BenchResult, Common, EchoServerArgs, NatsFloorArgs, RelayServerArgs, sample_servers};

pub async fn nats(args: NatsFloorArgs) -> BenchResult {
    let connect = |name: &'static str| {
        let url = args.nats_url.clone();
        async move {
            async_nats::ConnectOptions::new()
                .name(name)
                .connect(url.as_str())
                .await
                .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))
        }
    };
    let publisher = connect("floor publisher").await?;
    let subscriber = connect("floor subscriber").await?;
    let subject = format!("floor.{}", uuid::Uuid::new_v4().simple());
    let mut inbox = subscriber
        .subscribe(subject.clone())
        .await
        .map_err(|e| e.to_string())?;
    subscriber.flush().await.map_err(|e| e.to_string())?;

    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Latencies::new());
    let reader = {
        let (received, latency) = (received.clone(), latency.clone());
        tokio::spawn(async move {
            while let Some(message) = inbox.next().await {
                let text = String::from_utf8_lossy(&message.payload);
                if let Some(t) = text.split(',').next().and_then(|t| t.parse::<u64>().ok()) {
                    let now = epoch.elapsed().as_micros() as u64;
                    latency.record(0, now.saturating_sub(t));
                    received.fetch_add(1, Relaxed);
                }
            }
        })
    };

    // Only the NATS server counts as server here.
    let servers = Common {
        urls: Vec::new(),
        ..args.common.clone()
    };
    let before = sample_servers(&servers).await;
    let generator_before = switchboard::process::cpu_seconds("self").unwrap_or(0.0);
    let padding = "x".repeat(args.payload);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while Instant::now() < end {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
        while sent < due {
            let payload = format!("{},{padding}", epoch.elapsed().as_micros());
            publisher
                .publish(subject.clone(), payload.into())
                .await
                .map_err(|e| e.to_string())?;
            sent += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = sample_servers(&servers).await;
    let generator_after = switchboard::process::cpu_seconds("self").unwrap_or(0.0);
    let drain_until = Instant::now() + Duration::from_secs(3);
    while received.load(Relaxed) < sent && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let got = received.load(Relaxed);
    let server_cpu = after.cpu_seconds - before.cpu_seconds;
    let summary = Summary {
        kind: "floor",
        mode: "nats-relay".into(),
        clients: 2,
        payload_bytes: args.payload,
        offered_rate: args.rate,
        duration_s: args.duration,
        sent,
        received: got,
        delivered_rate: got as f64 / elapsed,
        loss: sent.saturating_sub(got) as f64 / sent.max(1) as f64,
        latency: latency.summary(),
        generator_cores: (generator_after - generator_before) / elapsed,
        server_cores: server_cpu / elapsed,
        server_cpu_us_per_msg: server_cpu * 1e6 / got.max(1) as f64,
        ..Summary::default()
    };
    summary.print();
    if args.common.json {
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    }
    Ok(())
}

/// Serves WebSocket connections that echo every text frame, with the same
/// small read buffer and batched flushes as a Switchboard session.
pub async fn echo_server(args: EchoServerArgs) -> i32 {
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "switchboard bench echo-server: cannot listen on {}: {e}",
                args.listen
            );
            return 1;
        }
    };
    eprintln!("echo server on ws://{}", args.listen);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let config = WebSocketConfig::default().read_buffer_size(2048);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            // Clients wait for a welcome before they start, as with a node.
            let welcome = format!(
                r#"{{"type":"welcome","client_id":"echo","session_id":"{}","node":"echo"}}"#,
                uuid::Uuid::new_v4()
            );
            if ws.send(WsMessage::Text(welcome.into())).await.is_err() {
                return;
            }
            while let Some(Ok(message)) = ws.next().await {
                if !message.is_text() {
                    continue;
                }
                if ws.feed(message).await.is_err() {
                    return;
                }
                // Echo whatever else already arrived before one flush.
                while let Some(Some(Ok(more))) = ws.next().now_or_never() {
                    if more.is_text() && ws.feed(more).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The relay floor: the least any design of Switchboard's shape can cost.
/// WebSocket in, NATS, WebSocket out, and nothing else: no presence (each
/// connection subscribes to its own client's subject, so NATS itself
/// finds the recipient), no JSON beyond finding `"to"`, no acks, no
/// receipts, no tracking. Run two of these and drive them with `switchboard
/// bench --mode relay`: the same clients, rates and arrivals as a real
/// cross-node run. Writes are batched per turn like a Switchboard session.
pub async fn relay_server(args: RelayServerArgs) -> i32 {
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "switchboard bench relay-server: cannot listen on {}: {e}",
                args.listen
            );
            return 1;
        }
    };
    let nats = match async_nats::ConnectOptions::new()
        .name("relay floor")
        .connect(args.nats_url.as_str())
        .await
    {
        Ok(nats) => nats,
        Err(e) => {
            eprintln!(
                "switchboard bench relay-server: cannot connect to NATS at {}: {e}",
                args.nats_url
            );
            return 1;
        }
    };
    eprintln!("relay floor on ws://{}", args.listen);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(relay_session(stream, nats.clone()));
    }
}

/// One relayed connection: `?client_id=` names it; what it sends goes to
/// `relayfloor.<to>`, what arrives on `relayfloor.<client id>` is written.
// tungstenite's handshake callback returns its (large) error response type.
#[allow(clippy::result_large_err)]
async fn relay_session(stream: tokio::net::TcpStream, nats: async_nats::Client) {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let mut client_id = String::new();
    let config = WebSocketConfig::default().read_buffer_size(512);
    let callback = |request: &Request, response: Response| {
        client_id = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("client_id=")))
            .unwrap_or("anonymous")
            .to_owned();
        Ok(response)
    };
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let Ok(mut inbox) = nats.subscribe(format!("relayfloor.{client_id}")).await else {
        return;
    };
    let welcome = format!(
        r#"{{"type":"welcome","client_id":"{client_id}","session_id":"{}","node":"relay"}}"#,
        uuid::Uuid::nil()
    );
    if ws.send(WsMessage::Text(welcome.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    if let Some(to) = recipient(&text) {
                        let subject = format!("relayfloor.{to}");
                        let payload = bytes::Bytes::copy_from_slice(text.as_bytes());
                        if nats.publish(subject, payload).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            delivered = inbox.next() => {
                let Some(first) = delivered else { return };
                let mut batch = vec![first];
                while let Some(Some(more)) = inbox.next().now_or_never() {
                    batch.push(more);
                }
                for message in batch {
                    let Ok(text) = String::from_utf8(message.payload.to_vec()) else {
                        continue;
                    };
                    if ws.feed(WsMessage::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The recipient of a `send` frame, found without parsing the JSON.
fn recipient(frame: &str) -> Option<&str> {
    let start = frame.find(r#""to":""#)? + 6;
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_relay_finds_the_recipient_without_parsing() {
        assert_eq!(
            super::recipient(r#"{"type":"send","to":"bob","body":1}"#),
            Some("bob")
        );
        assert_eq!(super::recipient(r#"{"type":"ping"}"#), None);
    }
}
