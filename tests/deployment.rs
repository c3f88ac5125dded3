//! The deployment files at the top of the repository agree with the code:
//! compose.yaml passes only flags and variables the binary knows, and
//! nats.conf is a configuration nats-server accepts.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use clap::CommandFactory;
use switchboard::cli::Cli;

fn repo_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The long flags and environment variables `switchboard serve` accepts.
fn serve_flags() -> (BTreeSet<String>, BTreeSet<String>) {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
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

#[test]
fn compose_passes_the_nodes_only_flags_and_variables_that_exist() {
    let compose: serde_yaml::Value = serde_yaml::from_str(&repo_file("compose.yaml")).unwrap();
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
    assert_eq!(nodes, 2, "compose runs two nodes");
    let nats = &services[&serde_yaml::Value::from("nats")];
    assert!(
        nats["volumes"][0]
            .as_str()
            .unwrap()
            .starts_with("./nats.conf:"),
        "nats runs with the repository's nats.conf"
    );
    let dockerfile = repo_file("Dockerfile");
    assert!(dockerfile.contains("cargo build --release"));
}

#[test]
fn nats_conf_is_accepted_by_nats_server() {
    let binary = support::find_binary("nats-server");
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nats.conf");
    let output = Command::new(binary)
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
    for setting in ["port: 4222", "max_payload", "# cluster {"] {
        assert!(text.contains(setting), "nats.conf lacks {setting}");
    }
}
