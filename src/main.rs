use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// agentd: starts AI agents per session, keeps them alive with pings, and stops them for good.
#[derive(Parser)]
#[command(name = "agentd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Run the built-in agent worker for one per-worker property file.
    Worker {
        /// The per-worker property file written by `/start`.
        #[arg(long)]
        property: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A missing .env is normal; a broken one is worth saying.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("agentd: cannot load .env: {e}");
            return ExitCode::from(2);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a worker's stderr usually goes to its log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let command = cli.command.unwrap_or(Command::Serve);
    // The server wants every core; a worker is one of possibly a thousand idle processes and is
    // kept to a single thread.
    let runtime = match &command {
        Command::Serve => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        Command::Worker { .. } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Serve => runtime
            .block_on(agentd::server::serve())
            .map_err(|e| e.to_string()),
        Command::Worker { property } => runtime
            .block_on(agentd::worker::run(&property))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentd: {e}");
            ExitCode::FAILURE
        }
    }
}
