use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What `agentd --help` adds after the commands: the settings a newcomer needs first.
const AFTER_HELP: &str = "\
Settings come from the environment, and from a .env file in the directory agentd is started in
(real environment variables win). Every setting is listed in .env.example; the main ones:

  SERVER_HOST, SERVER_PORT   where to listen (127.0.0.1:8080; port 0 picks a free one)
  AGENTD_API_KEY             the key every route but /health needs (Authorization: Bearer <key>)
  PROPERTY_JSON, GRAPHS_DIR  where the graphs are (property.json, graphs/)
  DATA_DIR, LOG_PATH         the SQLite database and the workers' log files (data/, data/logs/)
  WORKERS_MAX                how many workers may run at once (100; a node's capacity in a cluster)
  DATABASE_URL               postgres://... to share the database with other agentd nodes (SQLite)
  NODE_ID, NODE_ADDRESS      with several nodes: this node's id and the URL the others reach it at
  NODE_LEASE_MS              with several nodes: how long a channel's claim lasts unrenewed (10000)
  SUPERVISOR_STATUS          honest (default) or ten: HTTP 200 on every supervisor answer, as TEN
  AGORA_APP_ID, AGORA_APP_CERTIFICATE   for POST /token/generate
  RUST_LOG                   what agentd logs (info; e.g. agentd=debug shows every request)
  LOG_FORMAT                 text (default) or json, one JSON object per line on stderr";

/// The log filter when `RUST_LOG` is unset.
const DEFAULT_LOG_FILTER: &str = "info";

/// actix's own start-up lines ("starting 2 workers", which reads like agent workers) are off
/// unless `RUST_LOG` names `actix_server`.
const QUIET_ACTIX: &str = "actix_server=warn";

/// agentd: starts AI agents per session, keeps them alive with pings, and stops them for good.
#[derive(Parser)]
#[command(name = "agentd", version, about, after_help = AFTER_HELP)]
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
    if let Err(e) = init_logging() {
        eprintln!("agentd: {e}");
        return ExitCode::from(2);
    }

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

/// Installs the log subscriber: `RUST_LOG` for what, `LOG_FORMAT` (text or json) for how.
fn init_logging() -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let mut filter = match &from_env {
        Some(v) => {
            EnvFilter::try_new(v).map_err(|e| format!("RUST_LOG={v:?} is not valid: {e}"))?
        }
        None => EnvFilter::new(DEFAULT_LOG_FILTER),
    };
    if !from_env
        .as_deref()
        .unwrap_or_default()
        .contains("actix_server")
    {
        if let Ok(d) = QUIET_ACTIX.parse() {
            filter = filter.add_directive(d);
        }
    }
    let format = std::env::var("LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.trim().to_ascii_lowercase().as_str() {
        "" | "text" => builder
            // Colour only on a terminal: a worker's stderr usually goes to its log file.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        "json" => builder.json().with_ansi(false).init(),
        _ => {
            return Err(format!(
                "LOG_FORMAT={format:?} is not valid: expected text or json"
            ))
        }
    }
    Ok(())
}
