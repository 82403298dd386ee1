use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

/// glibc's allocator spent ~15 % of `serve`'s CPU in malloc/free (and in consolidating its
/// arenas) under load, measured with perf during the benchmark (`ledger-bench`); mimalloc keeps per-thread
/// free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Event-sourced ticket ledger for repair and warranty service centers.
#[derive(Parser)]
#[command(name = "ledger", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

/// Where the data is: an existing server, or the embedded cluster.
#[derive(Args)]
struct DatabaseArgs {
    /// Directory of the embedded PostgreSQL cluster (ignored with DATABASE_URL).
    #[arg(long, default_value = "./.ledger")]
    data_dir: PathBuf,
    /// PostgreSQL server to use instead of the embedded one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Keep the events in this EventStoreDB (`esdb://…`) instead of PostgreSQL; the read models
    /// stay in PostgreSQL.
    #[arg(long = "store", env = "EVENTSTORE_URL", hide_env_values = true)]
    eventstore_url: Option<String>,
}

impl DatabaseArgs {
    async fn open(self) -> anyhow::Result<ledger::Database> {
        ledger::Database::open(
            &self.data_dir,
            self.database_url.filter(|u| !u.is_empty()),
            self.eventstore_url.filter(|u| !u.is_empty()),
        )
        .await
    }
}

#[derive(Subcommand)]
enum ProjectionsAction {
    /// Apply a projection's dead letters again (all of them, or the one at --position), once
    /// the projector is fixed. One that applies is cleared; one that fails stays.
    Retry {
        /// The projection (see `ledger projections`).
        name: String,
        /// Only the dead letter at this log position.
        #[arg(long)]
        position: Option<i64>,
    },
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
        #[command(flatten)]
        database: DatabaseArgs,
        /// Configuration file (priority weights, thresholds, SLA hours, warranty); see
        /// ledger.example.toml. Default: ./ledger.toml when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the GraphQL schema (SDL); `schema.graphql` at the root is its output.
    Schema,
    /// Load demo data (customers, technicians, a device, parts, tickets) and demo accounts,
    /// and print the accounts' passwords. Does nothing if the demo data is already there.
    Seed {
        /// The demo data set (the only one so far).
        #[arg(long, required = true)]
        demo: bool,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Configuration file, as for `serve`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the full history of one ticket: every event, who caused it and when, and the
    /// ticket's state after it, rebuilt by the domain's own code.
    Replay {
        /// Ticket number (TKT-YYYYMMDD-XXXXXX) or ticket id.
        ticket: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Copy every event from one store to another (an empty one), preserving ids, order,
    /// metadata and stream versions, then verify the copy. Stores are `postgres://…` or
    /// `esdb://…` URLs.
    MigrateStore {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// List each projection with its checkpoint, the head position, the lag, its state and the
    /// events it set aside (dead letters); `retry` applies those again.
    Projections {
        #[command(subcommand)]
        action: Option<ProjectionsAction>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Rebuild read models from the whole event log into fresh tables, then swap them in
    /// (queries keep being answered meanwhile).
    Rebuild {
        /// The projection to rebuild (see `ledger projections`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Rebuild every projection.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_filter = "info,sqlx=warn,tower_http=warn";
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledger: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledger: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Commands) -> anyhow::Result<()> {
    match command {
        Commands::Serve {
            listen,
            database,
            config,
        } => {
            let config = match &config {
                Some(path) => ledger::Config::load(path, true),
                None => ledger::Config::load(Path::new("ledger.toml"), false),
            }?;
            ledger::serve(ledger::ServeOptions {
                listen,
                data_dir: database.data_dir,
                database_url: database.database_url.filter(|u| !u.is_empty()),
                eventstore_url: database.eventstore_url.filter(|u| !u.is_empty()),
                config,
            })
            .await
        }
        Commands::Seed {
            demo: _,
            database,
            config,
        } => {
            let config = match &config {
                Some(path) => ledger::Config::load(path, true),
                None => ledger::Config::load(Path::new("ledger.toml"), false),
            }?;
            let db = database.open().await?;
            let result = ledger::seed_demo(&db, &config).await;
            db.close().await?;
            match result? {
                None => println!("demo data is already loaded"),
                Some(accounts) => {
                    println!("demo data loaded; demo accounts (sign in with POST /auth/login):");
                    for (role, email, password) in accounts {
                        println!("  {role:<10} {email:<28} {password}");
                    }
                }
            }
            Ok(())
        }
        Commands::MigrateStore { from, to } => {
            let (source, target) = (
                ledger::open_store(&from).await?,
                ledger::open_store(&to).await?,
            );
            let bar = indicatif::ProgressBar::new_spinner();
            let copied = ledger::migrate(&*source, &*target, &|n| {
                bar.set_message(format!("{n} events copied"))
            })
            .await?;
            bar.finish_and_clear();
            println!("copied and verified {copied} events");
            Ok(())
        }
        Commands::Schema => {
            print!("{}", query_graphql::sdl());
            Ok(())
        }
        Commands::Replay {
            ticket,
            json,
            database,
        } => {
            let db = database.open().await?;
            let result = ledger::replay(&*db.store, &ticket, json).await;
            db.close().await?;
            print!("{}", result?);
            Ok(())
        }
        Commands::Projections { action, database } => {
            let db = database.open().await?;
            let result = match action {
                None => list_projections(&db).await,
                Some(ProjectionsAction::Retry { name, position }) => {
                    retry_dead_letters(&db, &name, position).await
                }
            };
            db.close().await?;
            result
        }
        Commands::Rebuild {
            name,
            all: _,
            database,
        } => {
            let targets = match name {
                Some(name) => vec![projections::projector(&name)?],
                None => projections::all_projectors(),
            };
            let db = database.open().await?;
            let result = rebuild(&db, targets).await;
            db.close().await?;
            result
        }
    }
}

async fn list_projections(db: &ledger::Database) -> anyhow::Result<()> {
    let all = projections::status(&*db.store, &db.pool, chrono::Utc::now()).await?;
    println!(
        "{:<16} {:>12} {:>12} {:>10} {:>6} {:<9} updated",
        "projection", "checkpoint", "head", "lag", "dead", "state"
    );
    for s in &all {
        let updated = s
            .updated_at
            .map_or_else(|| "never".to_owned(), |at| at.to_rfc3339());
        println!(
            "{:<16} {:>12} {:>12} {:>10} {:>6} {:<9} {updated}",
            s.name,
            s.checkpoint,
            s.head,
            s.lag,
            s.dead_letters,
            s.state.label()
        );
    }
    let letters = projections::dead_letters(&db.pool, None).await?;
    if !letters.is_empty() {
        println!(
            "\ndead letters (ledger projections retry NAME [--position P] applies them again):"
        );
        for d in letters {
            println!(
                "{:<16} position {} {} v{} {} ({}), {} attempts, first {}, last {}: {}",
                d.projection,
                d.position,
                d.event_type,
                d.schema_version,
                d.stream_id,
                d.event_id,
                d.attempts,
                d.first_seen.to_rfc3339(),
                d.last_seen.to_rfc3339(),
                d.error
            );
        }
    }
    Ok(())
}

async fn retry_dead_letters(
    db: &ledger::Database,
    name: &str,
    position: Option<i64>,
) -> anyhow::Result<()> {
    let projector = projections::projector(name)?;
    let report = projections::retry(&*db.store, &db.pool, &*projector, position).await?;
    for p in &report.applied {
        println!("{name}: position {p} applied");
    }
    for (p, error) in &report.failed {
        println!("{name}: position {p} failed again: {error}");
    }
    if report.applied.is_empty() && report.failed.is_empty() {
        println!("{name}: no dead letter to retry");
    }
    if !report.failed.is_empty() {
        anyhow::bail!("{} dead letters still fail", report.failed.len());
    }
    Ok(())
}

async fn rebuild(
    db: &ledger::Database,
    targets: Vec<std::sync::Arc<dyn projections::Projector>>,
) -> anyhow::Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    for p in targets {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{prefix:<14} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
            )?
            .progress_chars("=> "),
        );
        bar.set_prefix(p.name());
        let started = std::time::Instant::now();
        let progress = |done: i64, head: i64| {
            bar.set_length(u64::try_from(head).unwrap_or(0));
            bar.set_position(u64::try_from(done).unwrap_or(0));
        };
        let position = projections::rebuild(&db.store, &db.pool, &*p, &progress).await?;
        bar.finish();
        println!(
            "{}: rebuilt up to position {position} in {:.1?}",
            p.name(),
            started.elapsed()
        );
    }
    Ok(())
}
