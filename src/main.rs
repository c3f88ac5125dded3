use std::process::ExitCode;

/// mimalloc: glibc malloc showed up at several percent of a busy node's
/// CPU (malloc_consolidate among it); mimalloc's per-thread free lists are
/// cheaper for the many small, short-lived buffers of message routing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use switchboard::cli::{Cli, Command};
use switchboard::config::{Config, ServeArgs};
use switchboard::runtime;

fn main() -> ExitCode {
    match Cli::parse().into_command() {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => bench(args),
        Command::Chat(args) => chat(args),
        Command::Group(args) => group(args),
        Command::Status(args) => status(args),
        Command::Token(args) => match switchboard::token::mint(&args) {
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

fn chat(args: switchboard::chat::ChatArgs) -> ExitCode {
    // One thread is plenty for one session, and keeps Ctrl-C prompt.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(switchboard::chat::run(args));
            // Reading stdin blocks a thread the runtime would otherwise
            // wait for on drop; after Ctrl-C, stdin may never end.
            runtime.shutdown_background();
            ExitCode::from(code as u8)
        }
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(args: switchboard::status::StatusArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => ExitCode::from(runtime.block_on(switchboard::status::run(args)) as u8),
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn group(args: switchboard::group::GroupArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => ExitCode::from(runtime.block_on(switchboard::group::run(args)) as u8),
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: switchboard::bench::BenchArgs) -> ExitCode {
    switchboard::process::raise_open_files_limit();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => ExitCode::from(runtime.block_on(switchboard::bench::run(args)) as u8),
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = config.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match runtime::start(config).await {
            Ok(node) => {
                node.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "switchboard: cannot start: {}",
                    switchboard::cause::chain(&e)
                );
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
