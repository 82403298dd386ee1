//! `ledger-bench`: pgbench's limits, store appends, HTTP commands at 1/8/32/128 clients,
//! visibility at 1,000 commands/s, subscriptions, a generated log, live catch-up, GraphQL
//! reads, rebuilds; peak RSS of `ledger serve` per scenario. Prints a table and writes JSON.
//! Runs the `ledger` binary built beside it (`cargo build --release --workspace`).

use std::path::PathBuf;

use clap::Parser;

mod bench;

/// The ticket ledger's benchmark (BENCHMARKS.md has figures and findings).
#[derive(Parser)]
#[command(name = "ledger-bench", version)]
struct Cli {
    /// Use this server (a fresh database is created on it) instead of an embedded one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Seconds per load step.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events in the generated log (rebuild and read scenarios).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-results.json")]
    output: PathBuf,
    /// Run only these scenarios (comma-separated); pgbench always runs, for the ratios.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<bench::Scenario>,
    /// Keep the database created on DATABASE_URL (to profile `ledger rebuild` or queries
    /// against the generated log afterwards); its name is printed.
    #[arg(long, requires = "database_url")]
    keep_database: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The rebuilds build their indexes on purpose; sqlx's slow-statement warnings about them
    // would only interleave with the table.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sqlx::query=error,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let report = bench::run(bench::BenchOptions {
        keep_database: cli.keep_database,
        database_url: cli.database_url.filter(|u| !u.is_empty()),
        seconds: cli.seconds,
        events: cli.events,
        output: cli.output.clone(),
        only: cli.only,
    })
    .await?;
    print!("{}", bench::table(&report));
    println!("JSON report: {}", cli.output.display());
    Ok(())
}
