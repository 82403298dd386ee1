//! A private PostgreSQL cluster for the whole test binary, one fresh database per test, and
//! helpers to run the real `ledger` binary.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ledger::EmbeddedPostgres;
use sqlx::{Connection, PgConnection, PgPool};
use stream_store::{EventStore, PgEventStore};
use tokio::sync::Mutex;

struct Cluster {
    pg: EmbeddedPostgres,
    template_ready: Mutex<bool>,
}

/// The cluster lives as long as the test process; its server gets SIGINT when the process
/// exits (see `ledger::EmbeddedPostgres`).
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-pg");
        remove_abandoned_clusters(&base);
        let dir = base.join(format!("pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Durability is not under test here; speed is welcome.
        let settings = [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "300"),
        ];
        let pg =
            EmbeddedPostgres::start(&dir, &settings).expect("start the test PostgreSQL cluster");
        Cluster {
            pg,
            template_ready: Mutex::new(false),
        }
    })
}

/// Deletes cluster directories of earlier test runs whose process is gone.
fn remove_abandoned_clusters(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("pg-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

const TEMPLATE: &str = "ledger_template";

/// A fresh, migrated database; returns its URL.
pub async fn fresh_database() -> String {
    let cluster = cluster();
    let mut admin = PgConnection::connect(&cluster.pg.url("postgres"))
        .await
        .expect("admin connection");
    {
        let mut ready = cluster.template_ready.lock().await;
        if !*ready {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {TEMPLATE}"))
                .execute(&mut admin)
                .await
                .expect("drop template");
            sqlx::query(&format!("CREATE DATABASE {TEMPLATE}"))
                .execute(&mut admin)
                .await
                .expect("create template");
            let pool = ledger::connect_and_migrate(&cluster.pg.url(TEMPLATE))
                .await
                .expect("migrate template");
            pool.close().await;
            *ready = true;
        }
    }
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    cluster.pg.url(&name)
}

/// A fresh database with its pool and a PostgreSQL event store on it.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
    pub store: Arc<dyn EventStore>,
}

pub async fn test_db() -> TestDb {
    let url = fresh_database().await;
    let pool = ledger::connect_and_migrate(&url)
        .await
        .expect("connect to test database");
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(pool.clone()));
    TestDb { url, pool, store }
}

/// Polls `check` until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    let mut poll = tokio::time::interval(Duration::from_millis(25));
    loop {
        poll.tick().await;
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
    }
}

/// The first admin's e-mail and password in every test process.
pub const ADMIN_EMAIL: &str = "admin@ledger.local";
pub const ADMIN_PASSWORD: &str = "Admin-pass-1!";
/// The token secret of every test process (so tests can forge an expired token).
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

/// A running `ledger serve` process.
pub struct LedgerProcess {
    child: Option<Child>,
    pid: i32,
    pub base_url: String,
    /// The DATABASE_URL it was given (empty for the embedded cluster).
    pub database_url: String,
}

impl LedgerProcess {
    /// Starts `ledger serve` on a free port with `env` added, and waits until it listens.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> LedgerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        cmd.env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .env("LEDGER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("LEDGER_JWT_SECRET", JWT_SECRET);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ledger");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("ledger listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let base_url = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("ledger serve did not start listening");
        let pid = i32::try_from(child.id()).expect("pid fits");
        let database_url = env
            .iter()
            .find(|(k, _)| *k == "DATABASE_URL")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        LedgerProcess {
            child: Some(child),
            pid,
            base_url,
            database_url,
        }
    }

    /// Sends `signal` and waits (at most a minute) for the process to exit; returns its exit
    /// code (`None` when a signal ended it).
    pub fn stop_with(&mut self, signal: i32) -> Option<i32> {
        let mut child = self.child.take().expect("ledger still running");
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(self.pid, signal) };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("ledger did not exit within a minute of signal {signal}"))
            .expect("wait for ledger");
        status.code()
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `ledger ARGS` against the database at `url` and waits for it.
pub fn ledger_command(args: &[&str], url: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ledger")
}
