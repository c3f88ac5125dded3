//! `switchboard group add|remove|list`: the group members endpoints of the
//! HTTP API (docs/protocol.md, "HTTP") from the command line.
//!
//! ```text
//! $ switchboard group --url http://127.0.0.1:8080 --api-key "$KEY" add team alice bob
//! added alice to team
//! added bob to team
//! $ switchboard group --url http://127.0.0.1:8080 --api-key "$KEY" list team
//! alice
//! bob
//! ```
//!
//! `http://` or `https://` (a node behind a TLS proxy); the API key is read
//! from `SWITCHBOARD_API_KEY` when not given.

use bytes::Bytes;
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

#[derive(Debug, Clone, Args)]
pub struct GroupArgs {
    /// A node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The nodes' API key.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: String,
    #[command(subcommand)]
    pub action: GroupAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum GroupAction {
    /// Add clients to a group.
    Add {
        group: String,
        #[arg(required = true)]
        clients: Vec<String>,
    },
    /// Remove clients from a group.
    Remove {
        group: String,
        #[arg(required = true)]
        clients: Vec<String>,
    },
    /// Print a group's members, one per line.
    List { group: String },
}

#[derive(Deserialize)]
struct Members {
    members: Vec<String>,
}

/// Runs the command; the exit code is 0 when every request succeeded.
pub async fn run(args: GroupArgs) -> i32 {
    match act(&args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("switchboard group: {e}");
            1
        }
    }
}

async fn act(args: &GroupArgs) -> Result<(), String> {
    let base = args.url.trim_end_matches('/');
    match &args.action {
        GroupAction::Add { group, clients } => {
            let done = ("added", "to");
            change(base, &args.api_key, Method::PUT, group, clients, done).await
        }
        GroupAction::Remove { group, clients } => {
            let done = ("removed", "from");
            change(base, &args.api_key, Method::DELETE, group, clients, done).await
        }
        GroupAction::List { group } => {
            let path = format!("/api/v1/groups/{}", encode(group));
            let (status, body) = request(base, Method::GET, &path, &args.api_key).await?;
            match status {
                StatusCode::OK => {
                    let list: Members = serde_json::from_slice(&body)
                        .map_err(|e| format!("unexpected answer from the node: {e}"))?;
                    for member in list.members {
                        println!("{member}");
                    }
                    Ok(())
                }
                // No members: nothing to print, and not a failure.
                StatusCode::NOT_FOUND => Ok(()),
                _ => Err(refusal(status, &body)),
            }
        }
    }
}

/// Adds (`PUT`) or removes (`DELETE`) each client in turn; stops at the
/// first refusal.
async fn change(
    base: &str,
    api_key: &str,
    method: Method,
    group: &str,
    clients: &[String],
    (done, preposition): (&str, &str),
) -> Result<(), String> {
    for client in clients {
        let path = format!(
            "/api/v1/groups/{}/members/{}",
            encode(group),
            encode(client)
        );
        let (status, body) = request(base, method.clone(), &path, api_key).await?;
        if status != StatusCode::NO_CONTENT {
            return Err(refusal(status, &body));
        }
        println!("{done} {client} {preposition} {group}");
    }
    Ok(())
}

/// A path segment, percent-encoded (client ids may hold '@' and ':').
fn encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The node's JSON error (`{"error":…,"message":…}`) as a line to print.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
        message: String,
    }
    match serde_json::from_slice::<Refusal>(body) {
        Ok(r) => format!("{status}: {} ({})", r.message, r.error),
        Err(_) => format!("{status}: {}", String::from_utf8_lossy(body)),
    }
}

/// One request to the node's API.
async fn request(
    base: &str,
    method: Method,
    path: &str,
    api_key: &str,
) -> Result<(StatusCode, Bytes), String> {
    crate::tools::fetch(method, &format!("{base}{path}"), Some(api_key), None).await
}
