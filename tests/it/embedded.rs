//! `ledger serve` without DATABASE_URL: a private cluster under --data-dir, started as root
//! too, reused on the next start, and never left running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::e2e::Api;
use crate::harness::{eventually, LedgerProcess};

fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("pg/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_cluster_is_reused_and_never_outlives_ledger() {
    let dir = tempfile::Builder::new()
        .prefix("ledger-embedded")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let data_dir = dir.path().join("data");
    let data_arg = data_dir.to_str().unwrap().to_owned();

    let mut ledger = LedgerProcess::start(&["--data-dir", &data_arg], &[]);
    let api = Api::admin(&ledger.base_url).await;
    let (status, _) = api
        .command(
            "RegisterCustomer",
            json!({ "name": "Ana", "email": "ana@example.com" }),
        )
        .await;
    assert_eq!(status, 201);
    let postgres = postmaster_pid(&data_dir).expect("postmaster.pid while serving");
    assert!(alive(postgres));
    // Never root on the host: not the server's uids, and its superuser reads no root file.
    let status = std::fs::read_to_string(format!("/proc/{postgres}/status")).unwrap();
    let uids = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    assert!(
        uids.split_whitespace().skip(1).all(|u| u != "0"),
        "the postmaster runs as root: {uids}"
    );
    let superuser = format!(
        "postgres://ledger:{}@127.0.0.1:{}/postgres",
        std::fs::read_to_string(data_dir.join("pg-password"))
            .unwrap()
            .trim(),
        std::fs::read_to_string(data_dir.join("pg-port"))
            .unwrap()
            .trim()
    );
    let pool = sqlx::PgPool::connect(&superuser).await.unwrap();
    let secret = sqlx::query_scalar::<_, String>("SELECT pg_read_file('/etc/shadow')")
        .fetch_one(&pool)
        .await;
    assert!(secret.is_err(), "the database superuser read /etc/shadow");
    pool.close().await;
    let before = api.head().await;
    assert_eq!(
        ledger.stop_with(libc::SIGINT),
        Some(0),
        "Ctrl-C exits cleanly"
    );
    assert!(!alive(postgres), "PostgreSQL stopped with ledger");
    assert!(postmaster_pid(&data_dir).is_none(), "and shut down cleanly");

    // The server's user owns the data directory, and may leave links in it to files root
    // owns: the next start, as root, gives it nothing through them.
    let outside = dir.path().join("root-only");
    std::fs::write(&outside, "root's").unwrap();
    std::os::unix::fs::symlink(&outside, data_dir.join("pg/planted-link")).unwrap();
    std::os::unix::fs::symlink(dir.path(), data_dir.join("pg/planted-dir-link")).unwrap();
    std::fs::hard_link(&outside, data_dir.join("pg/planted-hard-link")).unwrap();
    let owner =
        |path: &Path| std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(path).unwrap());
    let owners = (owner(&outside), owner(dir.path()));
    // As root, the first start handed `pg/` over once and marked it; without the mark (an
    // operator asking for it again) the next start walks `pg/` again, links and all.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::remove_file(data_dir.join("pg-handed-over")).expect("the hand-over is marked");
    }

    // Second start: same data.
    let mut ledger = LedgerProcess::start(&["--data-dir", &data_arg], &[]);
    let api = Api::admin(&ledger.base_url).await;
    assert!(
        api.head().await > before,
        "the earlier events are still there"
    );
    let (status, answer) = api
        .command(
            "RegisterCustomer",
            json!({ "name": "Ana", "email": "ana@example.com" }),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("EMAIL_TAKEN"))
    );
    assert_eq!(
        (owner(&outside), owner(dir.path())),
        owners,
        "files outside the data directory changed hands"
    );
    // Started by root, the data directory stays root's and closed to the server's user (who
    // may only pass through to the cluster): what root writes there cannot be swapped.
    if unsafe { libc::geteuid() } == 0 {
        let meta = std::fs::metadata(&data_dir).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&meta),
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777
            ),
            (0, 0o711)
        );
        assert_ne!(
            owner(&data_dir.join("pg")),
            0,
            "the cluster is the server's"
        );
    }

    // Killed outright, ledger still takes its PostgreSQL down with it.
    let postgres = postmaster_pid(&data_dir).expect("postmaster.pid while serving");
    ledger.stop_with(libc::SIGKILL);
    eventually(
        Duration::from_secs(30),
        "PostgreSQL to stop after ledger was killed",
        || async { (!alive(postgres)).then_some(()) },
    )
    .await;
}
