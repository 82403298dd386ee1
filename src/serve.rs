use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use domain::priority::PriorityPolicy;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use stream_store::{EventStore, PgEventStore};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::{Config, EmbeddedPostgres, MIGRATOR};

/// Name of the database the embedded cluster serves.
const EMBEDDED_DATABASE: &str = "ledger";

pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: start the embedded cluster under `data_dir`.
    pub database_url: Option<String>,
    pub config: Config,
}

/// Opens a pool on `url` and brings the schema up to date.
pub async fn connect_and_migrate(url: &str) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    MIGRATOR.run(&pool).await.context("running migrations")?;
    Ok(pool)
}

/// Runs the command API, GraphQL and the projectors until Ctrl-C or SIGTERM.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let (url, embedded) = match options.database_url {
        Some(url) => (url, None),
        None => {
            let dir = options.data_dir.clone();
            let pg =
                tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, &[])).await??;
            tracing::info!(data_dir = %options.data_dir.display(), port = pg.port(), "embedded PostgreSQL started");
            create_database(&pg.url("postgres"), EMBEDDED_DATABASE).await?;
            (pg.url(EMBEDDED_DATABASE), Some(pg))
        }
    };
    let result = run(&url, options.listen, options.config.priority).await;
    if let Some(pg) = embedded {
        tokio::task::spawn_blocking(move || pg.stop()).await??;
        tracing::info!("embedded PostgreSQL stopped");
    }
    result
}

async fn run(url: &str, listen: SocketAddr, policy: PriorityPolicy) -> anyhow::Result<()> {
    let pool = connect_and_migrate(url).await?;
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(pool.clone()));
    let shutdown = CancellationToken::new();
    let projections = tokio::spawn(projections::run_all(
        store.clone(),
        pool.clone(),
        projections::all_projectors(),
        shutdown.clone(),
    ));
    let schema = query_graphql::build_schema(pool.clone(), store.clone(), policy.clone());
    let app = Router::new()
        .route(
            "/health",
            get(health).with_state(HealthState {
                pool: pool.clone(),
                store: store.clone(),
            }),
        )
        .merge(command_api::router(store.clone(), policy.clone()))
        .merge(query_graphql::router(schema))
        .layer(TraceLayer::new_for_http());

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    // A plain line on stdout, for scripts and tests that need the bound port.
    println!("ledger listening on http://{address}");

    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            stop.cancel();
        })
        .await?;
    shutdown.cancel();
    let _ = projections.await;
    pool.close().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
        .context("connecting to the embedded PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&pool)
            .await?;
    if !exists {
        // Identifiers cannot be bound; `name` is a constant of ours.
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    Ok(())
}

#[derive(Clone)]
struct HealthState {
    pool: PgPool,
    store: Arc<dyn EventStore>,
}

/// `GET /health`: 200 with the head position and each projection's checkpoint and lag, or
/// 503 when the database cannot be reached.
async fn health(State(state): State<HealthState>) -> (StatusCode, Json<serde_json::Value>) {
    let head = state.store.head().await;
    let checkpoints = projections::checkpoints(&state.pool).await;
    match (head, checkpoints) {
        (Ok(head), Ok(checkpoints)) => {
            let projections: Vec<_> = checkpoints
                .into_iter()
                .map(|c| serde_json::json!({ "name": c.name, "checkpoint": c.position, "lag": head - c.position }))
                .collect();
            (
                StatusCode::OK,
                Json(
                    serde_json::json!({ "status": "ok", "head": head, "projections": projections }),
                ),
            )
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable" })),
        ),
    }
}
