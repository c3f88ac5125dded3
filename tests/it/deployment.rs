//! The deployment files at the top of the repository agree with the code:
//! compose.yaml passes only flags and variables the binary knows, the
//! README's configuration table lists every flag, and nats.conf is a
//! configuration nats-server accepts, its authorization example included.

use std::collections::BTreeSet;
use std::process::Command;

use clap::{CommandFactory, Parser};
use switchboard::config::ServeArgs;

/// `switchboard serve`'s arguments, as the binary's command line flattens
/// them.
#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

fn repo_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The long flags and environment variables `switchboard serve` accepts.
fn serve_flags() -> (BTreeSet<String>, BTreeSet<String>) {
    let serve = Serve::command();
    let mut flags = BTreeSet::new();
    let mut envs = BTreeSet::new();
    for arg in serve.get_arguments() {
        if let Some(long) = arg.get_long() {
            flags.insert(format!("--{long}"));
        }
        if let Some(env) = arg.get_env() {
            envs.insert(env.to_string_lossy().into_owned());
        }
    }
    (flags, envs)
}

/// Operators read the README's table, not `--help`: a flag missing there
/// is a setting nobody knows to change.
#[test]
fn the_readme_lists_every_flag() {
    let readme = repo_file("README.md");
    let table: String = readme
        .lines()
        .skip_while(|line| !line.starts_with("## Configuration"))
        .take_while(|line| !line.starts_with("## HTTP"))
        .filter(|line| line.starts_with("| `--"))
        .collect::<Vec<_>>()
        .join("\n");
    let (flags, _) = serve_flags();
    let missing: Vec<_> = flags
        .iter()
        .filter(|flag| *flag != "--help" && !table.contains(&format!("`{flag}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's configuration table lacks {missing:?}"
    );
}

#[test]
fn compose_passes_the_nodes_only_flags_and_variables_that_exist() {
    let mut compose: serde_yaml::Value = serde_yaml::from_str(&repo_file("compose.yaml")).unwrap();
    // The NATS services share their settings through a YAML merge key.
    compose.apply_merge().unwrap();
    let (flags, envs) = serve_flags();
    let services = compose["services"].as_mapping().expect("services");
    let mut nodes = 0;
    for (name, service) in services {
        if service.get("build").is_none() {
            continue;
        }
        nodes += 1;
        let command: Vec<&str> = service["command"]
            .as_sequence()
            .expect("command as a list")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(command.first(), Some(&"serve"), "{name:?}");
        for word in &command {
            if word.starts_with("--") {
                assert!(flags.contains(*word), "{name:?} passes unknown flag {word}");
            }
        }
        let environment = service["environment"]
            .as_mapping()
            .expect("environment map");
        let mut set = BTreeSet::new();
        for key in environment.keys() {
            let key = key.as_str().unwrap();
            assert!(envs.contains(key), "{name:?} sets unknown variable {key}");
            set.insert(key);
        }
        // A clustered node needs both backends (the node refuses one alone).
        assert!(
            set.contains("SWITCHBOARD_REDIS_URL") && set.contains("SWITCHBOARD_NATS_URL"),
            "{name:?}"
        );
        for dependency in ["redis", "nats"] {
            assert!(
                service["depends_on"].get(dependency).is_some(),
                "{name:?} must wait for {dependency}"
            );
        }
    }
    assert_eq!(nodes, 1, "compose has one `node` service, which scales");
    let service = |name: &str| &services[&serde_yaml::Value::from(name)];
    assert_eq!(service("node")["deploy"]["replicas"].as_u64(), Some(2));
    assert!(
        service("node")["ports"].is_null(),
        "nodes publish no port of their own: the load balancer does"
    );
    let lb = service("lb");
    assert_eq!(lb["ports"][0].as_str(), Some("127.0.0.1:8080:8080"));
    assert!(
        lb["volumes"][0]
            .as_str()
            .unwrap()
            .starts_with("./deploy/haproxy.cfg:"),
        "the load balancer runs the repository's config"
    );
    for nats in ["nats", "nats-2", "nats-3"] {
        assert!(
            service(nats)["volumes"][0]
                .as_str()
                .unwrap()
                .starts_with("./nats.conf:"),
            "{nats} runs with the repository's nats.conf"
        );
    }
    assert_eq!(
        service("nats-2")["profiles"][0].as_str(),
        Some("nats-cluster")
    );
    let dockerfile = repo_file("Dockerfile");
    assert!(dockerfile.contains("cargo build --release"));
}

#[test]
fn nats_conf_is_accepted_by_nats_server() {
    let binary = crate::support::nats_server();
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nats.conf");
    let output = Command::new(&binary)
        .arg("-c")
        .arg(&conf)
        .arg("-t")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = repo_file("nats.conf");
    for setting in ["port: 4222", "max_payload", "\ncluster {"] {
        assert!(text.contains(setting), "nats.conf lacks {setting}");
    }
    // The documented way to start the second and third clustered servers
    // from the same file is accepted too (tests/scaled_backends.rs runs
    // all three).
    let overrides: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("nats-server -c nats.conf -p"))
        .collect();
    assert_eq!(
        overrides.len(),
        2,
        "nats.conf shows how to start servers 2 and 3"
    );
    for line in overrides {
        let args: Vec<&str> = line
            .trim_start_matches('#')
            .split_whitespace()
            .skip(3)
            .collect();
        let output = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .args(&args)
            .arg("-t")
            .output()
            .unwrap();
        assert!(output.status.success(), "{line}: {output:?}");
    }
}

/// The commented authorization example in nats.conf, uncommented, with
/// the rest of the file: a real nats-server runs it, nodes get in with the
/// credentials the comments name and can route, and a client without them
/// is refused.
#[tokio::test]
async fn the_nats_conf_authorization_example_works_as_documented() {
    let text = repo_file("nats.conf");
    let start = text
        .find("# BEGIN node authorization")
        .expect("the example");
    let end = text.find("# END node authorization").expect("its end");
    let example: String = text[start..end]
        .lines()
        .skip(1)
        .map(|line| line.strip_prefix("# ").unwrap_or(line).to_owned() + "\n")
        .collect();
    // Only the authorization part: the ports come from the harness.
    let dir = crate::support::certs::temp_dir("nats-auth");
    let conf = dir.join("nats.conf");
    std::fs::write(&conf, &example).unwrap();
    let nats = crate::support::Nats::start_args(&["-c", &crate::support::certs::display(&conf)]);
    let redis = crate::support::Redis::start();
    let url = format!("nats://switchboard:change-me@127.0.0.1:{}", nats.port());
    let r = redis.url();
    let node = |id: &'static str| {
        let (r, url) = (r.clone(), url.clone());
        async move {
            crate::support::new_node()
                .flags(&["--node-id", id, "--redis-url", &r, "--nats-url", &url])
                .try_start()
                .await
        }
    };
    let a = node("node-a")
        .await
        .expect("the documented credentials get in");
    let b = node("node-b").await.unwrap();
    let mut alice = crate::support::connect(&a, "alice").await;
    let mut bob = crate::support::connect(&b, "bob").await;
    crate::support::deliver(
        &mut alice,
        &mut bob,
        switchboard::protocol::AckStatus::Remote,
    )
    .await;
    assert!(
        async_nats::connect(nats.url()).await.is_err(),
        "anonymous clients are refused"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The load balancer's config is valid by haproxy's own check, and sends
/// sessions to the `node` service's port, health-checked on /readyz.
#[test]
fn the_load_balancer_config_passes_haproxy_check() {
    let config = repo_file("deploy/haproxy.cfg");
    assert!(config.contains("option httpchk GET /readyz"));
    assert!(config.contains("node:8080"));
    let haproxy = crate::support::find_binary("haproxy");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
    let out = std::process::Command::new(haproxy)
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .expect("haproxy runs");
    assert!(
        out.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every metric the Grafana dashboard queries is one a live node exposes.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_a_node_exposes() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/switchboard.json")).unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("switchboard_") || word.starts_with("process_") {
                    queried.insert(word.to_owned());
                }
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let node = crate::support::new_node().start().await;
    let (status, text) = crate::support::http(&node, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    for name in &queried {
        let exposed = text
            .lines()
            .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")));
        assert!(
            exposed,
            "the dashboard queries {name}, which /metrics lacks"
        );
    }
}
