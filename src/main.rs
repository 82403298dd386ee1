use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Event-sourced ticket ledger for repair and warranty service centers.
#[derive(Parser)]
#[command(name = "ledger", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the command API, GraphQL and the projectors in one process.
    ///
    /// Without DATABASE_URL a private PostgreSQL cluster is started from the PostgreSQL
    /// binaries installed on this machine, with its data under --data-dir, and stopped on exit.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory of the embedded PostgreSQL cluster (ignored with DATABASE_URL).
        #[arg(long, default_value = "./.ledger")]
        data_dir: PathBuf,
        /// PostgreSQL server to use instead of the embedded one.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Configuration file (priority weights, thresholds, SLA hours); see
        /// ledger.example.toml. Default: ./ledger.toml when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledger: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Serve {
                listen,
                data_dir,
                database_url,
                config,
            } => {
                let config = match &config {
                    Some(path) => ledger::Config::load(path, true),
                    None => ledger::Config::load(std::path::Path::new("ledger.toml"), false),
                }?;
                ledger::serve(ledger::ServeOptions {
                    listen,
                    data_dir,
                    database_url: database_url.filter(|u| !u.is_empty()),
                    config,
                })
                .await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledger: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
