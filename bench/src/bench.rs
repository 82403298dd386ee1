//! `ledger-bench`: the project's benchmark. Runs every scenario against a fresh database (the
//! embedded cluster by default, with `fsync` and `synchronous_commit` on), prints a table and
//! writes JSON. See BENCHMARKS.md for figures and findings.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use chrono::Utc;
use domain::{EventPayload, TicketEvent};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use stream_store::{
    Actor, CommandMetadata, EventStore, ExpectedVersion, NewEvent, PgEventStore, StreamId,
};
use uuid::Uuid;

use ledger::EmbeddedPostgres;

mod client;
mod load;
mod pgbench;
mod report;
mod subscriptions;

use client::{Connection, Http, Server};
use load::{generate, http_commands, id, meta, reads, store_appends, visibility, Workload};
use pgbench::{checkpoint, pgbench, rounds, Pgbench};
pub use report::table;

pub struct BenchOptions {
    pub database_url: Option<String>,
    /// Seconds each load step runs.
    pub seconds: u64,
    /// Events in the rebuild scenario.
    pub events: usize,
    pub output: PathBuf,
    /// Scenarios to run; empty means all.
    pub only: Vec<Scenario>,
    /// Keep the database created on `database_url` instead of dropping it.
    pub keep_database: bool,
}

/// The benchmark's scenarios, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Appends,
    Commands,
    Visibility,
    Subscriptions,
    Reads,
    Rebuild,
}

const ADMIN_PASSWORD: &str = "Bench-admin-1!";
const SEVERITIES: [&str; 3] = ["critical", "major", "minor"];
/// Distinct ticket numbers for generated tickets (the API reserves them; the generator writes
/// events directly).
static NUMBERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_000_000);
/// Rounds of each scenario a ratio judges (commands at 32 clients, the rebuilds); the median
/// round is reported (`http_commands_32_rounds` and `rebuild_rounds` have all of them).
const ROUNDS: usize = 3;
const JWT_SECRET: &str = "bench-secret-bench-secret-bench-secret-0123";

/// Latency figures in milliseconds.
fn percentiles(mut micros: Vec<u64>) -> Value {
    if micros.is_empty() {
        return json!(null);
    }
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    json!({ "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0), "samples": micros.len() })
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the kernel's peak-RSS counter, so each scenario gets its own peak.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ledger-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs one statement (CREATE or DROP DATABASE) on the server the run uses.
async fn on_server(admin_url: &str, statement: &str) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await?;
    sqlx::query(statement).execute(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Runs every scenario and returns the report.
pub async fn run(options: BenchOptions) -> anyhow::Result<Value> {
    let dir = tempfile_dir()?;
    let mut embedded = None;
    let name = format!("ledger_bench_{}", Uuid::new_v4().simple());
    let admin_url = match &options.database_url {
        Some(url) => url.clone(),
        None => {
            let root = dir.clone();
            let pg = tokio::task::spawn_blocking(move || {
                EmbeddedPostgres::start(&root.join("pg"), &[("max_connections", "300")])
            })
            .await??;
            let url = pg.url("postgres");
            embedded = Some(pg);
            url
        }
    };
    on_server(&admin_url, &format!("CREATE DATABASE {name}")).await?;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => bail!("DATABASE_URL must name a database"),
    };
    let pool = ledger::connect_and_migrate(&url).await?;
    sqlx::query("CREATE TABLE bench_rows (id BIGSERIAL PRIMARY KEY, v DOUBLE PRECISION)")
        .execute(&pool)
        .await?;
    let settings: Vec<(String, String)> = sqlx::query_as("SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'server_version')").fetch_all(&pool).await?;
    let mut report = json!({
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "postgres": settings.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>() },
        "seconds_per_step": options.seconds,
    });
    let step = |name: &str| eprintln!("bench: {name}");

    step("pgbench (the limit)");
    report["pgbench"] = pgbench(&pool, &url, options.seconds).await?;

    let wants = |s: Scenario| options.only.is_empty() || options.only.contains(&s);
    // The bench's own store (and its listener, which queries the log after every append)
    // exists only while the bench appends itself: during the HTTP scenarios the server is
    // the only client of the log, as it would be in production.
    let open_store = || -> Arc<dyn EventStore> { Arc::new(PgEventStore::new(pool.clone())) };
    if wants(Scenario::Appends) {
        step("store appends");
        let store = open_store();
        let mut appends = Vec::new();
        for c in [1, 8, 32, 128] {
            checkpoint(&pool).await;
            appends.push(store_appends(store.clone(), c, options.seconds).await?);
        }
        report["store_appends"] = json!(appends);
    }

    let server = Server::start(&url)?;
    let http = Http::login(&server.base).await?;
    let customer = id(
        &http
            .command(
                "RegisterCustomer",
                json!({ "name": "Bench", "email": "bench@example.com", "tier": "paid" }),
            )
            .await?,
        "customerId",
    );
    let technician = id(
        &http
            .command(
                "OnboardTechnician",
                json!({ "name": "Tech", "email": "tech@example.com" }),
            )
            .await?,
        "technicianId",
    );
    if report.get("store_appends").is_some() {
        // The server starts behind by every event the store appends wrote; the commands
        // measure the server at work, not racing its own catch-up on them.
        step("serve catching up on the store appends' events");
        report["catch_up_before_http_s"] = json!(settle(&http, &pool).await?);
    }
    if wants(Scenario::Commands) {
        step("commands over HTTP");
        let mut commands = Vec::new();
        for c in [1, 8, 32, 128] {
            reset_peak(server.pid());
            let run = || http_commands(&http, c, options.seconds, &customer, &technician);
            let mut result = if c == 32 {
                let per_s = |r: &Value| r["commands_per_s"].as_f64().unwrap_or(0.0);
                let (median, all) =
                    rounds(&pool, &url, options.seconds, Pgbench::OneRow, per_s, run).await?;
                report["pgbench_next_to_commands_32"] = median["pgbench"].clone();
                report["http_commands_32_rounds"] = json!(all);
                median["result"].clone()
            } else {
                checkpoint(&pool).await;
                run().await?
            };
            result["serve_peak_rss_mib"] = json!(rss_kib(server.pid(), "VmHWM:") as f64 / 1024.0);
            commands.push(result);
        }
        report["http_commands"] = json!(commands);
    }

    if wants(Scenario::Visibility) {
        step("visibility at 1,000 commands/s");
        for (key, workload) in [
            ("visibility", Workload::Lifecycle),
            ("visibility_raise_only", Workload::RaiseOnly),
        ] {
            checkpoint(&pool).await;
            reset_peak(server.pid());
            let mut seen = visibility(
                &http,
                1000,
                options.seconds,
                (&customer, &technician),
                workload,
            )
            .await?;
            seen["serve_peak_rss_mib"] = json!(rss_kib(server.pid(), "VmHWM:") as f64 / 1024.0);
            report[key] = seen;
            // Each workload starts from read models that have caught up.
            http.caught_up(Duration::from_secs(60)).await?;
        }
    }
    if wants(Scenario::Subscriptions) {
        step("1,000 subscriptions over 100 tickets at 1,000 commands/s");
        checkpoint(&pool).await;
        report["subscriptions"] = subscriptions::run(
            &http,
            (&customer, 1000, options.seconds),
            (&pool, server.pid()),
        )
        .await?;
    }
    drop(server);
    if !wants(Scenario::Reads) && !wants(Scenario::Rebuild) {
        return finish(
            report,
            pool,
            embedded,
            (&admin_url, &name, options.keep_database),
            dir,
            &options.output,
        )
        .await;
    }

    step(&format!("generating {} events", options.events));
    let store = open_store();
    let technicians: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    for t in &technicians {
        let e = domain::TechnicianEvent::TechnicianOnboarded {
            technician_id: domain::TechnicianId::from_uuid(*t),
            name: domain::Text::parse("n", "Generated", 50)?,
            email: domain::Email::parse("e", &format!("{t}@bench.example"))?,
            onboarded_at: Utc::now(),
        };
        let new = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: e.event_type().into(),
            schema_version: 1,
            data: e.to_data(),
        };
        store
            .append(
                &StreamId::for_aggregate("technician", t),
                ExpectedVersion::NoStream,
                vec![new],
                &meta(),
            )
            .await?;
    }
    let generated_customer = Uuid::parse_str(&customer)?;
    let started = Instant::now();
    let (written, open) = generate(
        store.clone(),
        options.events,
        generated_customer,
        &technicians,
    )
    .await?;
    report["generate"] = json!({ "events": written, "seconds": started.elapsed().as_secs_f64(), "events_per_s": written as f64 / started.elapsed().as_secs_f64() });

    step("serve catching up on the generated log (memory across the whole log)");
    let server = Server::start(&url)?;
    let http = Http::login(&server.base).await?;
    reset_peak(server.pid());
    let catch_up = settle(&http, &pool).await?;
    report["live_catch_up"] = json!({ "events": written, "seconds": catch_up, "events_per_s": written as f64 / catch_up, "serve_peak_rss_mib": rss_kib(server.pid(), "VmHWM:") as f64 / 1024.0 });

    if wants(Scenario::Reads) {
        step("GraphQL reads");
        let open = Arc::new(open);
        let ids = open.clone();
        checkpoint(&pool).await;
        reset_peak(server.pid());
        let mut by_id = reads(
            &http,
            32,
            options.seconds,
            "query($id: ID!) { ticket(id: $id) { id number status priority { score level } } }",
            Arc::new(move |i| json!({ "id": ids[i % ids.len()] })),
        )
        .await?;
        by_id["serve_peak_rss_mib"] = json!(rss_kib(server.pid(), "VmHWM:") as f64 / 1024.0);
        let techs = Arc::new(technicians.clone());
        checkpoint(&pool).await;
        reset_peak(server.pid());
        let mut queue = reads(&http, 32, options.seconds, "query($t: ID!) { ticketQueue(technicianId: $t, first: 20) { totalCount edges { node { id number priority { score } } } } }", Arc::new(move |i| json!({ "t": techs[i % techs.len()] }))).await?;
        queue["serve_peak_rss_mib"] = json!(rss_kib(server.pid(), "VmHWM:") as f64 / 1024.0);
        report["graphql_reads"] = json!({ "tickets_in_read_model": open.len() * 2, "ticket_by_id": by_id, "technician_queue": queue });
    }
    drop(server);

    if wants(Scenario::Rebuild) {
        step("rebuild of every read model");
        let head = store.head().await?;
        let (store, pool) = (&store, &pool);
        let rebuild_all = || async move {
            let mut rebuilds = Vec::new();
            for p in projections::all_projectors() {
                checkpoint(pool).await;
                let started = Instant::now();
                projections::rebuild(store, pool, &*p, &|_, _| {}).await?;
                let seconds = started.elapsed().as_secs_f64();
                rebuilds.push(json!({ "projection": p.name(), "events": head, "seconds": seconds, "events_per_s": head as f64 / seconds }));
            }
            anyhow::Ok(Value::Array(rebuilds))
        };
        let (median, all) = rounds(
            pool,
            &url,
            options.seconds,
            Pgbench::HundredRows,
            slowest,
            rebuild_all,
        )
        .await?;
        report["rebuild"] = median["result"].clone();
        report["pgbench_next_to_rebuild"] = median["pgbench"].clone();
        report["rebuild_rounds"] = json!(all);
    }
    finish(
        report,
        pool,
        embedded,
        (&admin_url, &name, options.keep_database),
        dir,
        &options.output,
    )
    .await
}

/// Waits until every projection has caught up, then vacuums and analyzes, as pgbench does
/// before its runs: what follows measures a settled database, not a race with the catch-up
/// or with autovacuum over the rows just written. Returns the seconds the catch-up took.
async fn settle(http: &Http, pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    let catch_up = http.caught_up(Duration::from_secs(3600)).await?;
    eprintln!("bench: vacuum and analyze");
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await?;
    Ok(catch_up)
}

/// The events/s of the slowest of `rebuilds` (0 when there are none).
fn slowest(rebuilds: &Value) -> f64 {
    rebuilds
        .as_array()
        .and_then(|r| {
            r.iter()
                .filter_map(|x| x["events_per_s"].as_f64())
                .reduce(f64::min)
        })
        .unwrap_or(0.0)
}

/// Adds the ratios, writes the JSON report and removes the embedded cluster.
async fn finish(
    mut report: Value,
    pool: sqlx::PgPool,
    embedded: Option<EmbeddedPostgres>,
    (admin_url, name, keep): (&str, &str, bool),
    dir: PathBuf,
    output: &std::path::Path,
) -> anyhow::Result<Value> {
    // Ratios to what PostgreSQL itself commits, measured in the same run: by pgbench bracketing
    // the scenario when it ran there, else by the run's first pgbench.
    let one = report["pgbench_next_to_commands_32"]["mean"]
        .as_f64()
        .or(report["pgbench"]["one_row_per_commit_tps_32_clients"].as_f64())
        .unwrap_or(f64::NAN);
    let rows = report["pgbench_next_to_rebuild"]["mean"]
        .as_f64()
        .or(report["pgbench"]["hundred_rows_per_commit_rows_per_s"].as_f64())
        .unwrap_or(f64::NAN);
    let commands32 = report["http_commands"][2]["commands_per_s"]
        .as_f64()
        .unwrap_or(0.0);
    let slowest_rebuild = slowest(&report["rebuild"]);
    report["ratios"] = json!({
        "commands_32_clients_vs_pgbench_one_row_tps": commands32 / one,
        "slowest_rebuild_vs_pgbench_100_rows_per_s": slowest_rebuild / rows,
        "pgbench_one_row_tps_used": one,
        "pgbench_100_rows_per_s_used": rows,
    });
    pool.close().await;
    if embedded.is_none() {
        if keep {
            eprintln!("bench: kept database {name}");
        } else {
            // A server the user named keeps running: only the run's database goes (an
            // embedded cluster goes whole).
            on_server(
                admin_url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await?;
        }
    }
    drop(embedded);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::write(output, serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::pgbench::median_round;
    use super::slowest;
    use serde_json::json;

    #[test]
    fn the_median_round_is_the_middle_one_by_ratio_not_by_order() {
        let rounds = [
            json!({ "ratio": 0.61, "result": "a" }),
            json!({ "ratio": 0.42, "result": "b" }),
            json!({ "ratio": 0.55, "result": "c" }),
        ];
        assert_eq!(
            median_round(&rounds).map(|r| &r["result"]),
            Some(&json!("c"))
        );
        assert_eq!(
            median_round(&rounds[..1]).map(|r| &r["result"]),
            Some(&json!("a"))
        );
        assert!(median_round(&[]).is_none());
    }

    #[test]
    fn the_slowest_rebuild_decides_and_none_counts_as_zero() {
        let rebuilds = json!([{ "events_per_s": 300.0 }, { "events_per_s": 210.0 }]);
        assert_eq!(slowest(&rebuilds), 210.0);
        assert_eq!(slowest(&json!([])), 0.0);
        assert_eq!(slowest(&json!(null)), 0.0);
    }
}
