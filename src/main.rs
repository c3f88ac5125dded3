use std::process::ExitCode;

/// mimalloc: glibc malloc showed up at several percent of a busy node's
/// CPU (malloc_consolidate among it); mimalloc's per-thread free lists are
/// cheaper for the many small, short-lived buffers of message routing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod tools;

use std::future::Future;

use clap::Parser;
use switchboard::config::{Config, ServeArgs};
use switchboard::runtime;
use tools::cli::{Cli, Command};

fn main() -> ExitCode {
    match Cli::parse().into_command() {
        Command::Serve(args) => serve(args),
        // One thread is plenty for one session, and keeps Ctrl-C prompt.
        Command::Chat(args) => run(Threads::One, exit(tools::chat::run(args))),
        Command::Group(args) => run(Threads::One, exit(tools::groups::run(args))),
        Command::Status(args) => run(Threads::One, exit(tools::status::run(args))),
        Command::Bench(args) => {
            switchboard::process::raise_open_files_limit();
            run(Threads::PerCore(None), exit(tools::bench::run(args)))
        }
        Command::Token(args) => match tools::token::mint(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchboard token: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// The threads of a command's runtime.
enum Threads {
    One,
    /// One per core, or this many.
    PerCore(Option<usize>),
}

/// Runs `command` on a runtime of its own and exits with its code. The
/// runtime is shut down without waiting for blocked threads: a tool
/// reading stdin (the chat) may never see it end after Ctrl-C.
fn run(threads: Threads, command: impl Future<Output = ExitCode>) -> ExitCode {
    let built = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Threads::PerCore(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.enable_all();
            if let Some(workers) = workers {
                builder.worker_threads(workers);
            }
            builder.build()
        }
    };
    match built {
        Ok(runtime) => {
            let code = runtime.block_on(command);
            runtime.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A tool's exit status (as its `run` returns it) as the process's.
async fn exit(tool: impl Future<Output = i32>) -> ExitCode {
    ExitCode::from(tool.await as u8)
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(&args.log, args.log_format);
    let config = match Config::try_from(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchboard: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(limit) = switchboard::process::raise_open_files_limit() {
        tracing::debug!(limit, "open files limit");
    }
    let workers = config.worker_threads;
    run(Threads::PerCore(workers), async move {
        match runtime::start(config).await {
            Ok(node) => {
                node.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                let e = switchboard::cause::chain(&e);
                eprintln!("switchboard: cannot start: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn init_logging(filter: &str, format: switchboard::config::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("switchboard: ignoring --log {filter:?} ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        // One object per line, the event's fields beside `message`.
        switchboard::config::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        // Colours only on a terminal, not in files and pipes.
        switchboard::config::LogFormat::Text => {
            logs.with_ansi(std::io::stdout().is_terminal()).init()
        }
    }
}
