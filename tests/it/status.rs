//! `switchboard status`: live nodes from the heartbeats, each node's own
//! answer over NATS, rates from two samples.

use crate::support::*;
use serde_json::json;
use switchboard::status::{StatusArgs, cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_live_node_with_its_sessions_and_sends() {
    let cluster_ = Cluster::start().await;
    let mut alice = connect(&cluster_.a, "alice").await;
    let mut bob = connect(&cluster_.b, "bob").await;
    for i in 0..5 {
        alice.send("bob", &json!(i), None, false).await.unwrap();
        ack_status(&mut alice).await;
        next_frame(&mut bob).await;
    }
    let args = StatusArgs {
        redis_url: cluster_.redis.url(),
        nats_url: cluster_.nats.url(),
        key_prefix: "sb:".into(),
        subject_prefix: "sb".into(),
        json: true,
    };
    let view = within(cluster(&args)).await.unwrap();
    let names: Vec<&str> = view.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    for node in &view.nodes {
        let status = node.status.as_ref().expect("every live node answers");
        assert!(node.alive);
        assert_eq!(status.sessions, 1, "{}", node.node);
        assert_eq!(
            (status.presence.as_str(), status.bus.as_str()),
            ("redis", "nats")
        );
        assert!(status.presence_ok && status.bus_ok, "{status:?}");
    }
    let a = view.nodes[0].status.as_ref().unwrap();
    assert_eq!(a.sends.get("remote"), Some(&5));

    // The command itself, as an operator runs it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "status",
            "--json",
            "--redis-url",
            &args.redis_url,
            "--nats-url",
            &args.nats_url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(printed["nodes"][1]["status"]["sessions"], 1);
    // A NATS nobody runs: a clear error, not a hang.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "status",
            "--redis-url",
            &args.redis_url,
            "--nats-url",
            "nats://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NATS at nats://127.0.0.1:1"));
}
