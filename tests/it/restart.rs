//! PostgreSQL restarting under a running `ledger serve`: requests fail cleanly (503, never a
//! 500 or a crash) while it is down, and everything resumes when it is back.

use std::time::Duration;

use ledger::EmbeddedPostgres;
use serde_json::json;

use crate::e2e::Api;
use crate::harness::{eventually, LedgerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_rides_out_a_postgres_restart() {
    let dir = tempfile::Builder::new()
        .prefix("ledger-restart")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let root = dir.path().join("pg");
    let start = |root: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            EmbeddedPostgres::start(&root, &[("fsync", "off")]).unwrap()
        })
    };
    let pg = start(root.clone()).await.unwrap();
    let url = pg.url("postgres");
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let api = Api::admin(&ledger.base_url).await;
    let (status, _) = api
        .command(
            "RegisterCustomer",
            json!({ "name": "Ana", "email": "ana@example.com" }),
        )
        .await;
    assert_eq!(status, 201);

    // Down: commands answer 503 STORE_UNAVAILABLE, queries an error, and nothing crashes.
    tokio::task::spawn_blocking(move || pg.stop().unwrap())
        .await
        .unwrap();
    let (status, answer) = api
        .command(
            "RegisterCustomer",
            json!({ "name": "Bo", "email": "bo@example.com" }),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("STORE_UNAVAILABLE")),
        "{answer}"
    );
    let health = reqwest::get(format!("{}/health", api.base)).await.unwrap();
    assert_eq!(health.status(), 503);

    // Back (same port): commands, projections and GraphQL resume.
    let pg = start(root.clone()).await.unwrap();
    assert_eq!(
        pg.url("postgres"),
        url,
        "the restarted cluster keeps its address"
    );
    eventually(Duration::from_secs(30), "sign-in after the restart", || async {
        let response = reqwest::Client::new()
            .post(format!("{}/auth/login", ledger.base_url))
            .json(&json!({ "email": crate::harness::ADMIN_EMAIL, "password": crate::harness::ADMIN_PASSWORD }))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let api = Api::admin(&ledger.base_url).await;
    let (status, answer) = api
        .command(
            "RegisterCustomer",
            json!({ "name": "Cy", "email": "cy@example.com" }),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    eventually(
        Duration::from_secs(30),
        "the projections to catch up after the restart",
        || async {
            let health: serde_json::Value = reqwest::get(format!("{}/health", api.base))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let lagging = health["projections"]
                .as_array()?
                .iter()
                .any(|p| p["lag"] != 0);
            (health["status"] == "ok" && !lagging).then_some(())
        },
    )
    .await;
    let customers = api
        .graphql(
            "{ auditLog(filter: { type: \"CustomerRegistered\" }) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        customers["data"]["auditLog"]["totalCount"], 2,
        "{customers}"
    );
    drop(ledger);
    drop(pg);
}
