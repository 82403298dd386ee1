//! `ledger migrate-store` copies a whole log to another store, identically.

use serde_json::json;

use crate::e2e::Api;
use crate::harness::{fresh_database, LedgerProcess, ADMIN_PASSWORD};

fn ledger(args: &[&str], url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("LEDGER_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

async fn all_events(url: &str) -> Vec<stream_store::RecordedEvent> {
    let store = ledger::open_store(url).await.unwrap();
    let mut out = Vec::new();
    loop {
        let page = store
            .read_all(
                out.last()
                    .map_or(0, |e: &stream_store::RecordedEvent| e.position),
                500,
            )
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_data_round_trips_between_two_postgres_databases() {
    let (source, target) = (fresh_database().await, fresh_database().await);
    assert!(ledger(&["seed", "--demo"], &source).status.success());
    let out = ledger(
        &["migrate-store", "--from", &source, "--to", &target],
        &source,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied and verified"));

    let (a, b) = (all_events(&source).await, all_events(&target).await);
    assert_eq!(a.len(), b.len());
    assert!(a.len() > 30);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (
                x.event_id,
                &x.stream_id,
                x.version,
                &x.data,
                x.command_id,
                &x.actor,
                x.recorded_at
            ),
            (
                y.event_id,
                &y.stream_id,
                y.version,
                &y.data,
                y.command_id,
                &y.actor,
                y.recorded_at
            )
        );
    }
    // The copy serves the same read models.
    let copy = LedgerProcess::start(&[], &[("DATABASE_URL", &target)]);
    let api = Api::admin(&copy.base_url).await;
    let tickets = crate::harness::eventually(
        std::time::Duration::from_secs(20),
        "the copy's read models",
        || async {
            let t = api.graphql("{ tickets { totalCount } }", json!({})).await;
            (t["data"]["tickets"]["totalCount"] == 4).then_some(t)
        },
    )
    .await;
    assert_eq!(tickets["data"]["tickets"]["totalCount"], 4);

    // A second copy into a non-empty store is refused.
    let again = ledger(
        &["migrate-store", "--from", &source, "--to", &target],
        &source,
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
