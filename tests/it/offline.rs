//! Explained offline (protocol v2): every `offline` ack says why, from the
//! real cause (never connected, disconnected, node killed, 4008, resume
//! window over, node drained), with `last_seen` once the client was seen;
//! and the events the backend gets: on NATS for a plain subscriber, and
//! through a signed, retried, bounded webhook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::certs::{Pki, display};
use crate::support::*;
use futures_util::StreamExt;
use serde_json::json;
use switchboard::protocol::{AckStatus, OfflineReason, now_ms};
use switchboard_client::{Ack, Client, ConnectOptions, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends to `to` until the ack is `offline` with `reason` (and a
/// `last_seen`, when `seen`); returns that ack. Bounded by
/// [`EVENT_TIMEOUT`]: for causes that take effect a moment after the
/// event the test triggers (a field deleted, a window ending).
async fn offline_until(from: &mut Client, to: &str, reason: OfflineReason, seen: bool) -> Ack {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let ack = within(from.send_for_ack(to, &json!("probe"), false))
            .await
            .unwrap();
        if ack.status == AckStatus::Offline
            && ack.reason == Some(reason)
            && ack.last_seen.is_some() == seen
        {
            return ack;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never offline with {reason:?}; last ack {ack:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn never_seen_then_disconnected_with_last_seen() {
    let key = ["--api-key", "k"];
    let node = new_node().flags(&key).start().await;
    let mut alice = connect(&node, "alice").await;
    let ack = within(alice.send_for_ack("bob", &json!(1), false))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Offline);
    assert_eq!(ack.reason, Some(OfflineReason::NeverSeen));
    assert_eq!(ack.last_seen, None);

    let before = now_ms();
    let bob = connect(&node, "bob").await;
    within(bob.close()).await.unwrap();
    let ack = offline_until(&mut alice, "bob", OfflineReason::Disconnected, true).await;
    let seen = ack.last_seen.unwrap();
    assert!(seen >= before && seen <= now_ms(), "{seen}");
    // The presence API says it too.
    let (_, body) = http(
        &node,
        "GET",
        "/api/v1/presence/bob",
        &[("Authorization", "Bearer k")],
        None,
    )
    .await;
    assert_eq!(json(&body)["last_seen"], json!(seen));
}

#[tokio::test]
async fn a_device_still_online_keeps_last_seen_unwritten() {
    let node = new_node().start().await;
    let mut alice = connect(&node, "alice").await;
    let phone = on_device(&node, "bob", "phone").await;
    let _laptop = on_device(&node, "bob", "laptop").await;
    within(phone.close()).await.unwrap();
    // bob is still online on his laptop: sends reach him.
    let ack = within(alice.send_for_ack("bob", &json!(1), false))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Local);
    assert_eq!(ack.reason, None);
}

#[tokio::test]
async fn a_killed_node_is_node_dead() {
    let redis = Redis::start();
    let nats = Nats::start();
    let ttl = ["--node-ttl-ms", "1000"];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&ttl)
        .start()
        .await;
    let mut b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&ttl)
        .spawn()
        .await;
    let mut alice = connect(&a, "alice").await;
    let _bob = named(&b.ws_url(), "bob").await;
    b.kill();
    offline_until(&mut alice, "bob", OfflineReason::NodeDead, true).await;
}

#[tokio::test]
async fn a_client_closed_4008_is_slow_consumer() {
    let node = new_node()
        .flags(&[
            "--session-queue",
            "4",
            "--rate-limit",
            "0",
            "--write-timeout-ms",
            "300",
        ])
        .start()
        .await;
    let mut alice = connect(&node, "alice").await;
    let _bob = connect(&node, "bob").await; // and bob never reads
    let body = json!("x".repeat(60_000));
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let ack = within(alice.send_for_ack("bob", &body, false))
            .await
            .unwrap();
        if ack.status == AckStatus::Offline {
            assert_eq!(ack.reason, Some(OfflineReason::SlowConsumer), "{ack:?}");
            if ack.last_seen.is_some() {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob was never closed 4008"
        );
    }
}

#[tokio::test]
async fn a_window_that_ends_is_resume_expired() {
    let node = new_node()
        .flags(&["--resume-window-ms", "200"])
        .start()
        .await;
    let mut alice = connect(&node, "alice").await;
    let options = ConnectOptions {
        acks: true,
        ..ConnectOptions::default()
    };
    let bob = within(Client::connect_with(
        &ws_url(&node),
        Identity::Name("bob".into()),
        &options,
    ))
    .await
    .unwrap();
    drop(bob); // no close frame: the session detaches
    offline_until(&mut alice, "bob", OfflineReason::ResumeExpired, true).await;
}

#[tokio::test(start_paused = true)]
async fn a_drained_node_is_shutting_down() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut alice = connect(&a, "alice").await;
    let _bob = connect(&b, "bob").await;
    b.shutdown(Duration::from_secs(5)).await;
    offline_until(&mut alice, "bob", OfflineReason::ShuttingDown, true).await;
}

/// Collects the events published under `sb.events.>` until `n` arrived.
async fn events(sub: &mut async_nats::Subscriber, n: usize) -> Vec<(String, serde_json::Value)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let m = within(sub.next()).await.expect("an event");
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        assert!(!text.contains("token"), "no secrets in events: {text}");
        seen.push((m.subject.to_string(), json(&text)));
    }
    seen
}

#[tokio::test]
async fn a_plain_nats_subscriber_sees_presence_and_offline_events() {
    let Cluster {
        redis: _r,
        nats,
        a,
        b,
    } = Cluster::start_with(&["--api-key", "k"]).await;
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = watcher.subscribe("sb.events.>").await.unwrap();
    watcher.flush().await.unwrap();

    let alice = connect(&a, "alice").await;
    let alice_session = alice.welcome().session_id;
    let seen = events(&mut sub, 1).await;
    assert_eq!(seen[0].0, "sb.events.presence");
    let online = &seen[0].1;
    assert_eq!(online["client_id"], "alice");
    assert_eq!(online["device"], "default");
    assert_eq!(online["session"], json!(alice_session));
    assert_eq!(online["node"], "node-a");
    assert_eq!(online["state"], "online");
    assert!(online.get("reason").is_none(), "{online}");
    assert!(online["ts"].as_u64().unwrap() <= now_ms());

    let bob = connect(&b, "bob").await;
    events(&mut sub, 1).await;
    within(bob.close()).await.unwrap();
    let seen = events(&mut sub, 1).await;
    assert_eq!(seen[0].1["state"], "offline");
    assert_eq!(seen[0].1["reason"], "closed");
    assert_eq!(seen[0].1["node"], "node-b");

    // An offline send, and a group send with an offline member.
    let mut alice = alice;
    let ack = offline_until(&mut alice, "bob", OfflineReason::Disconnected, true).await;
    // Probes sent before bob's last-seen was written were offline too
    // (their events come first, in order).
    let e = loop {
        let (subject, e) = events(&mut sub, 1).await.remove(0);
        assert_eq!(subject, "sb.events.offline");
        assert_eq!(
            (e["from"].as_str(), e["to"].as_str()),
            (Some("alice"), Some("bob"))
        );
        assert_eq!(e["stored"], false);
        assert!(e.get("group").is_none(), "{e}");
        if e["msg_id"] == json!(ack.msg_id) {
            break e;
        }
    };
    assert_eq!(e["reason"], "disconnected");

    for member in ["alice", "bob", "carol"] {
        let path = format!("/api/v1/groups/team/members/{member}");
        let (status, _) = http(&a, "PUT", &path, &[("Authorization", "Bearer k")], None).await;
        assert_eq!(status, 204);
    }
    let ack = within(alice.send_group("team", &json!("hi all")))
        .await
        .unwrap();
    assert_eq!(ack.offline, Some(2));
    let mut seen = events(&mut sub, 2).await;
    seen.sort_by(|x, y| x.1["to"].as_str().cmp(&y.1["to"].as_str()));
    let reasons: Vec<_> = seen
        .iter()
        .map(|(_, e)| {
            (
                e["to"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
                e["group"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("bob", "disconnected", Some("team")),
            ("carol", "never_seen", Some("team"))
        ]
    );
}

/// What a webhook receiver saw: (signature header, body).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTP server on loopback that answers the first `fail` requests with
/// 500 and the rest with 204 (or never, when `hang`), recording each.
async fn receiver(fail: usize, hang: bool) -> (u16, Seen) {
    receiver_over(fail, hang, None).await
}

/// A webhook receiver that answers 500 to the first `fail` POSTs (or never
/// answers, with `hang`), over TLS with `tls`; records each POST's
/// signature and body.
async fn receiver_over(
    fail: usize,
    hang: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (record, tls) = (record.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve_posts(socket, record, fail, hang).await,
                    Some(tls) => {
                        if let Ok(socket) = tls.accept(socket).await {
                            serve_posts(socket, record, fail, hang).await
                        }
                    }
                }
            });
        }
    });
    (port, seen)
}

/// Reads POSTs off one connection, answering each (see [`receiver_over`]).
async fn serve_posts<S>(mut socket: S, record: Seen, fail: usize, hang: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buffer = Vec::new();
    loop {
        // One request: headers, then Content-Length bytes.
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                .unwrap_or_default()
        };
        let length: usize = header("content-length").parse().unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned();
        buffer.drain(..head_end + length);
        let n = {
            let mut seen = record.lock().unwrap();
            seen.push((header("x-switchboard-signature"), body));
            seen.len()
        };
        if hang {
            std::future::pending::<()>().await;
        }
        let status = if n <= fail {
            "500 Internal Server Error"
        } else {
            "204 No Content"
        };
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if socket.write_all(answer.as_bytes()).await.is_err() || socket.flush().await.is_err() {
            return;
        }
    }
}

fn hmac_hex(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_webhook_is_signed_and_retried_after_a_500() {
    let (port, seen) = receiver(1, false).await;
    let url = format!("http://127.0.0.1:{port}/hooks/switchboard");
    let node = new_node()
        .flags(&["--webhook-url", &url, "--webhook-secret", "hook-secret"])
        .start()
        .await;
    let _alice = connect(&node, "alice").await;
    eventually("the event is POSTed again after the 500", || async {
        seen.lock().unwrap().len() >= 2
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], seen[1], "the same event, retried");
    let (signature, body) = &seen[1];
    assert_eq!(
        *signature,
        format!("sha256={}", hmac_hex("hook-secret", body))
    );
    let body = json(body);
    assert_eq!(body["subject"], "sb.events.presence");
    assert_eq!(body["event"]["client_id"], "alice");
    assert_eq!(body["event"]["state"], "online");
    assert!(metric(&node, "switchboard_webhook_failed_total").await >= 1.0);
}

/// An https:// webhook whose receiver has a certificate from a private CA:
/// trusted with `--backend-ca-file`, refused (and counted) without it.
#[tokio::test]
async fn the_webhook_posts_over_https_to_a_private_ca() {
    let pki = Pki::new();
    let files = switchboard::config::TlsFiles {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
    };
    let tls = switchboard::tls::acceptor(&files).unwrap();
    let (port, seen) = receiver_over(0, false, Some(tls)).await;
    let url = format!("https://127.0.0.1:{port}/hooks");
    let ca = display(&pki.ca_cert);
    let flags = ["--webhook-url", &url, "--webhook-secret", "tls-secret"];
    let node = new_node()
        .flags(&flags)
        .flags(&["--backend-ca-file", &ca])
        .start()
        .await;
    let _alice = connect(&node, "alice").await;
    eventually("the event arrives over TLS", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let (signature, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(
        signature,
        format!("sha256={}", hmac_hex("tls-secret", &body))
    );
    assert_eq!(json(&body)["event"]["client_id"], "alice");
    assert_eq!(metric(&node, "switchboard_webhook_failed_total").await, 0.0);

    // The same receiver, from a node that does not trust its CA.
    let untrusting = new_node().flags(&flags).start().await;
    let before = seen.lock().unwrap().len();
    let _bob = connect(&untrusting, "bob").await;
    let failed = || async { metric(&untrusting, "switchboard_webhook_failed_total").await >= 1.0 };
    eventually("the untrusted POST fails", failed).await;
    assert_eq!(seen.lock().unwrap().len(), before, "nothing reached it");
}

#[tokio::test]
async fn a_stuck_webhook_drops_beyond_its_queue_and_routing_goes_on() {
    let (port, _seen) = receiver(0, true).await;
    let url = format!("http://127.0.0.1:{port}/");
    let node = new_node()
        .flags(&[
            "--webhook-url",
            &url,
            "--webhook-secret",
            "s",
            "--webhook-queue",
            "2",
        ])
        .start()
        .await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await;
    // Events pile up behind the stuck POST; routing does not notice.
    for i in 0..20 {
        let ack = within(alice.send_for_ack("carol", &json!(i), false))
            .await
            .unwrap();
        assert_eq!(ack.status, AckStatus::Offline);
        let ack = within(alice.send_for_ack("bob", &json!(i), false))
            .await
            .unwrap();
        assert_eq!(ack.status, AckStatus::Local);
        assert_eq!(message(&mut bob).await.body, json!(i));
    }
    let dropped = metric(&node, "switchboard_events_dropped_total{sink=\"webhook\"}").await;
    // 22 events (2 online, 20 offline): one stuck in its POST, two queued.
    assert!(dropped >= 19.0, "{dropped}");
}
