//! The `switchboard` command line. A bare `switchboard` serves, so
//! `cargo run --release` starts a node.

use clap::{Parser, Subcommand};

use crate::tools::bench::BenchArgs;
use crate::tools::chat::ChatArgs;
use crate::tools::groups::GroupArgs;
use crate::tools::status::StatusArgs;
use crate::tools::token::TokenArgs;
use switchboard::config::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "An instant-messaging broker: WebSocket nodes, shared presence, NATS hops",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// With no subcommand, these are the flags of `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run a node (the default).
    Serve(ServeArgs),
    /// Load generator and benchmarks (see BENCHMARKS.md).
    Bench(BenchArgs),
    /// Chat from the terminal: `@bob hello` sends, what arrives is printed.
    Chat(ChatArgs),
    /// The cluster from the outside: live nodes, their sessions and rates.
    Status(StatusArgs),
    /// Manage group members through a node's API: add, remove, list.
    Group(GroupArgs),
    /// Print an HS256 token for a client id, signed with the nodes' secret.
    Token(TokenArgs),
}

impl Cli {
    /// The command to run, with a bare invocation meaning `serve`.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}
