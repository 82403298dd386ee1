//! pgbench, the limit every ratio divides by, and the checkpoints that start each step.

use super::*;

/// Scenario 7: what PostgreSQL itself commits: pgbench, one row per commit at 32 clients, and
/// 100 rows per commit.
pub(super) async fn pgbench(pool: &sqlx::PgPool, url: &str, seconds: u64) -> anyhow::Result<Value> {
    let one_row = pgbench_run(pool, url, seconds, Pgbench::OneRow).await?;
    let hundred_rows = pgbench_run(pool, url, seconds, Pgbench::HundredRows).await?;
    Ok(
        json!({ "one_row_per_commit_tps_32_clients": one_row, "hundred_rows_per_commit_rows_per_s": hundred_rows }),
    )
}

/// What one pgbench run commits at 32 clients.
#[derive(Clone, Copy)]
pub(super) enum Pgbench {
    /// One row per commit: transactions/s.
    OneRow,
    /// 100 rows per commit: rows/s.
    HundredRows,
}

/// `ROUNDS` runs of `scenario` with pgbench before, between and after them. Each run is
/// judged by the pgbench runs just before and just after it (the mean of the two is the limit
/// at the moment it ran: on a shared VM the limit moves by tens of percent within minutes, so
/// measured minutes apart a ratio would mostly measure that), and the median run by
/// `figure / limit` is the result: one run of a few seconds moves by 10–20 % from the next.
/// Returns the median round and every round, each `{result, pgbench, ratio}`.
pub(super) async fn rounds<F, Fut>(
    pool: &sqlx::PgPool,
    url: &str,
    seconds: u64,
    which: Pgbench,
    figure: impl Fn(&Value) -> f64,
    mut scenario: F,
) -> anyhow::Result<(Value, Vec<Value>)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let mut before = pgbench_run(pool, url, seconds, which).await?;
    let mut all = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        checkpoint(pool).await;
        let result = scenario().await?;
        let after = pgbench_run(pool, url, seconds, which).await?;
        let limit = (before + after) / 2.0;
        let ratio = figure(&result) / limit;
        all.push(json!({ "result": result, "pgbench": { "before": before, "after": after, "mean": limit }, "ratio": ratio }));
        before = after;
    }
    let median = median_round(&all).cloned().context("no round ran")?;
    Ok((median, all))
}

/// The round whose `ratio` is the median of `rounds` (the upper one of an even count).
pub(super) fn median_round(rounds: &[Value]) -> Option<&Value> {
    let ratio = |round: &Value| round["ratio"].as_f64().unwrap_or(f64::NAN);
    let mut by_ratio: Vec<&Value> = rounds.iter().collect();
    by_ratio.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    by_ratio.get(by_ratio.len() / 2).copied()
}

/// One pgbench run, from a checkpoint like every measured step; its rows are removed after it,
/// so that no step pays for vacuuming them and the table does not grow over the run.
pub(super) async fn pgbench_run(
    pool: &sqlx::PgPool,
    url: &str,
    seconds: u64,
    which: Pgbench,
) -> anyhow::Result<f64> {
    checkpoint(pool).await;
    let url = url.to_owned();
    let per_s =
        tokio::task::spawn_blocking(move || pgbench_process(&url, seconds, which)).await??;
    sqlx::raw_sql("TRUNCATE bench_rows").execute(pool).await?;
    Ok(per_s)
}

/// Starts a measured step from a checkpoint: the pages the previous step dirtied are written
/// out first, so a checkpoint its WAL made due does not land in this step, which then pays
/// only for its own writes (and the checkpoints they cause). It takes the superuser or
/// `pg_checkpoint`; without either, on a server given by `DATABASE_URL`, steps run as they
/// come and the run says so once.
pub(super) async fn checkpoint(pool: &sqlx::PgPool) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(pool).await {
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            eprintln!("bench: CHECKPOINT between steps failed ({e}); steps run without it");
        }
    }
}

pub(super) fn pgbench_process(url: &str, seconds: u64, which: Pgbench) -> anyhow::Result<f64> {
    let bin = EmbeddedPostgres::bin_dir()?.join("pgbench");
    let dir = tempfile_dir()?;
    let script = dir.join("script.sql");
    let (sql, rows) = match which {
        Pgbench::OneRow => ("INSERT INTO bench_rows (v) VALUES (random());\n", 1.0),
        Pgbench::HundredRows => (
            "INSERT INTO bench_rows (v) SELECT random() FROM generate_series(1, 100);\n",
            100.0,
        ),
    };
    std::fs::write(&script, sql)?;
    let out = Command::new(&bin)
        .args([
            "-n",
            "-c",
            "32",
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .context("running pgbench")?;
    let _ = std::fs::remove_dir_all(dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| {
            format!(
                "pgbench said: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(tps * rows)
}
