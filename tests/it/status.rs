//! `switchboard status`: live nodes from the heartbeats, each node's own
//! answer over NATS, rates from two samples.

use crate::support::*;
use serde_json::json;

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
    let (redis_url, nats_url) = (cluster_.redis.url(), cluster_.nats.url());
    // The command itself, as an operator runs it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["status", "--json", "--redis-url", &redis_url])
        .args(["--nats-url", &nats_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = view["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    for node in nodes {
        let status = &node["status"];
        assert!(status.is_object(), "every live node answers: {node}");
        assert_eq!(node["alive"], true);
        assert_eq!(status["sessions"], 1, "{node}");
        assert_eq!(
            (&status["presence"], &status["bus"]),
            (&json!("redis"), &json!("nats"))
        );
        assert!(
            status["presence_ok"] == true && status["bus_ok"] == true,
            "{status}"
        );
    }
    assert_eq!(nodes[0]["status"]["sends"]["remote"], 5);
    // A NATS nobody runs: a clear error, not a hang.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "status",
            "--redis-url",
            &redis_url,
            "--nats-url",
            "nats://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NATS at nats://127.0.0.1:1"));
}
