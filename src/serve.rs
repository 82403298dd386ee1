use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgPool};
use stream_store::{EventStore, PgEventStore};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::{Config, EmbeddedPostgres, MIGRATOR};

/// Longest any HTTP request may take before it is answered 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of the database the embedded cluster serves.
const EMBEDDED_DATABASE: &str = "ledger";

pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: start the embedded cluster under `data_dir`.
    pub database_url: Option<String>,
    /// `Some`: keep the events in this EventStoreDB.
    pub eventstore_url: Option<String>,
    pub config: Config,
}

/// The database every command uses: `database_url`, or the embedded cluster under `data_dir`
/// (started, or shared with the `ledger` process already running it).
pub struct Database {
    pub pool: PgPool,
    /// Same database, for searches with optional filters (see [`connect_search_pool`]).
    pub search_pool: PgPool,
    pub store: Arc<dyn EventStore>,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// With `eventstore_url` the events live in that EventStoreDB; the read models stay in
    /// PostgreSQL either way.
    pub async fn open(
        data_dir: &Path,
        database_url: Option<String>,
        eventstore_url: Option<String>,
    ) -> anyhow::Result<Database> {
        let (url, embedded) = match database_url {
            Some(url) => (url, None),
            None => {
                let dir = data_dir.to_owned();
                let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, &[]))
                    .await??;
                tracing::info!(data_dir = %data_dir.display(), port = pg.port(), "embedded PostgreSQL ready");
                create_database(&pg.url("postgres"), EMBEDDED_DATABASE).await?;
                (pg.url(EMBEDDED_DATABASE), Some(pg))
            }
        };
        let pool = connect_and_migrate(&url).await?;
        let store: Arc<dyn EventStore> = match eventstore_url {
            Some(esdb) => {
                tracing::info!("events in EventStoreDB; read models in PostgreSQL");
                Arc::new(stream_store::EsdbEventStore::connect(&esdb)?)
            }
            None => Arc::new(PgEventStore::new(pool.clone())),
        };
        let search_pool = connect_search_pool(&url)?;
        Ok(Database {
            pool,
            search_pool,
            store,
            embedded,
        })
    }

    /// Closes the pool and stops the embedded cluster if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        drop(self.store);
        if let Some(pg) = self.embedded {
            let owned = pg.owns_server();
            tokio::task::spawn_blocking(move || pg.stop()).await??;
            if owned {
                tracing::info!("embedded PostgreSQL stopped");
            }
        }
        Ok(())
    }
}

/// Opens a pool on `url` and brings the schema up to date.
///
/// Its sessions keep PostgreSQL's default plan caching: the statements of the store, the
/// projectors, the command API and one-row lookups are index probes whose cached plans save the
/// planning (0.3 ms of a 0.38 ms lookup by ticket id with planning forced each time, measured
/// with EXPLAIN ANALYZE). Searches with optional filters use [`connect_search_pool`].
pub async fn connect_and_migrate(url: &str) -> anyhow::Result<PgPool> {
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .context("DATABASE_URL is not a PostgreSQL URL")?;
    let pool = pool_options(16)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")?;
    MIGRATOR.run(&pool).await.context("running migrations")?;
    Ok(pool)
}

/// A pool for the read models' searches, which take optional filters (`$1 IS NULL OR column =
/// $1`): a cached generic plan cannot use an index for those and scans the table, so these
/// sessions plan each execution with the actual values.
pub fn connect_search_pool(url: &str) -> anyhow::Result<PgPool> {
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .context("DATABASE_URL is not a PostgreSQL URL")?;
    let options = options.options([("plan_cache_mode", "force_custom_plan")]);
    Ok(pool_options(8).connect_lazy_with(options))
}

/// A connection idle for longer than this is checked before it is handed out.
const IDLE_CHECK: Duration = Duration::from_secs(1);

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings every connection as it is returned and, by default, again before handing
        // it out: a round trip per query, most of a lookup's cost. A connection in use within
        // the last second passed the ping on its return; one that sat idle longer may have been
        // cut (a server restart) and is pinged, and dropped if that fails.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_CHECK {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Runs the command API, GraphQL and the projectors until Ctrl-C or SIGTERM.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let db = Database::open(
        &options.data_dir,
        options.database_url,
        options.eventstore_url,
    )
    .await?;
    let result = run(&db, options.listen, options.config, &options.data_dir).await;
    db.close().await?;
    result
}

async fn run(
    db: &Database,
    listen: SocketAddr,
    config: Config,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let (pool, store) = (db.pool.clone(), db.store.clone());
    let secret = jwt_secret(&config, data_dir)?;
    let tokens = Arc::new(command_api::TokenService::new(
        &secret,
        store.clone(),
        command_api::Throttle::new(pool.clone()),
        config.auth.trusted_proxies.clone(),
    ));
    bootstrap(db, &config).await?;
    let shutdown = CancellationToken::new();
    let leases = projections::Leases::default();
    let runner = tokio::spawn(projections::run_all(
        store.clone(),
        pool.clone(),
        projections::all_projectors(),
        leases.clone(),
        config.projections.clone(),
        shutdown.clone(),
    ));
    let settings = query_graphql::Settings {
        policy: config.priority.clone(),
        expiring_soon_days: i64::from(config.warranty.expiring_soon_days),
    };
    let freshness = query_graphql::Freshness::start(pool.clone());
    let schema = query_graphql::build_schema(
        db.search_pool.clone(),
        pool.clone(),
        store.clone(),
        settings.clone(),
        freshness.clone(),
        Arc::new(Monitor {
            pool: pool.clone(),
            store: store.clone(),
        }),
    );
    let health_state = HealthState {
        pool: pool.clone(),
        store: store.clone(),
        leases,
    };
    let app = Router::new()
        .route("/health", get(health).with_state(health_state.clone()))
        .route("/health/ready", get(ready).with_state(health_state))
        .merge(command_api::router(
            store.clone(),
            config.priority.clone(),
            tokens.clone(),
        ))
        .merge(query_graphql::router(
            schema,
            pool.clone(),
            settings,
            freshness,
            Arc::new(TokenAuth(tokens.clone())),
        ))
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            command_api::authenticate,
        ))
        .layer(axum::middleware::map_response(security_headers))
        // Every request answered within this time (GraphQL queries have their own, shorter
        // limit; a WebSocket's life after its upgrade is not a request's).
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http());

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    // A plain line on stdout, for scripts and tests that need the bound port.
    println!("ledger listening on http://{address}");

    let stop = shutdown.clone();
    crate::listener::serve(listener, app, async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    })
    .await?;
    shutdown.cancel();
    let _ = runner.await;
    Ok(())
}

/// Headers on every answer: no MIME sniffing, no framing (clickjacking of GraphiQL, where
/// users paste tokens), no referrer leaving the site, and pages that run only the scripts the
/// binary serves and talk only to it.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::header::{
        HeaderValue, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
        X_FRAME_OPTIONS,
    };
    let headers = response.headers_mut();
    // Styles inline too: GraphiQL's editor sets them from its script.
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        ),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `projectionStatus` in GraphQL: the projections crate's own status.
struct Monitor {
    pool: PgPool,
    store: Arc<dyn EventStore>,
}

impl query_graphql::ProjectionMonitor for Monitor {
    fn status(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<Vec<query_graphql::ProjectionStatus>, String>> {
        Box::pin(async move {
            let all = projections::status(&*self.store, &self.pool, chrono::Utc::now())
                .await
                .map_err(|e| e.to_string())?;
            Ok(all
                .into_iter()
                .filter_map(|s| {
                    Some(query_graphql::ProjectionStatus {
                        name: s.name.to_owned(),
                        checkpoint: s.checkpoint,
                        head: s.head,
                        lag: s.lag,
                        updated_at: s.updated_at?,
                        dead_letters: s.dead_letters,
                        state: match s.state {
                            projections::State::Ok => query_graphql::ProjectionState::Ok,
                            projections::State::Degraded => {
                                query_graphql::ProjectionState::Degraded
                            }
                            projections::State::Stuck => query_graphql::ProjectionState::Stuck,
                        },
                    })
                })
                .collect())
        })
    }
}

/// Checks tokens for GraphQL WebSocket connections.
struct TokenAuth(Arc<command_api::TokenService>);

impl query_graphql::Authenticator for TokenAuth {
    fn authenticate<'a>(
        &'a self,
        authorization: &'a str,
    ) -> futures::future::BoxFuture<'a, Option<domain::access::Principal>> {
        Box::pin(async move {
            let token = command_api::bearer_token(authorization)?;
            self.0.authenticate(token).await.ok().map(|a| a.principal)
        })
    }
}

/// The secret that signs tokens: configured, from the environment, or kept in the data
/// directory (created on first use, readable by its owner only).
fn jwt_secret(config: &Config, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = config
        .auth
        .jwt_secret
        .clone()
        .or_else(|| std::env::var("LEDGER_JWT_SECRET").ok())
    {
        crate::config::check_secret(&secret)?;
        return Ok(secret.into_bytes());
    }
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join("jwt-secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if existing.trim().len() >= 32 {
            return Ok(existing.trim().as_bytes().to_vec());
        }
    }
    let secret = format!(
        "{}{}",
        command_api::generate_password(),
        command_api::generate_password()
    )
    .replace('-', "");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(secret.into_bytes())
}

/// On the very first start, creates the admin account and prints its password once.
pub async fn bootstrap(db: &Database, config: &Config) -> anyhow::Result<()> {
    let service = command_api::CommandService::new(db.store.clone(), config.priority.clone());
    let chosen = std::env::var("LEDGER_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    if let Some((email, password, generated)) =
        command_api::bootstrap_admin(&service, &config.auth.admin_email, chosen)
            .await
            .map_err(|e| anyhow::anyhow!("creating the first admin account: {e}"))?
    {
        if generated {
            println!("ledger: first start: admin account {email} with one-time password {password} (change it at the first sign-in)");
        } else {
            println!("ledger: first start: admin account {email} with the password from LEDGER_ADMIN_PASSWORD");
        }
    }
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
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&pool)
            .await
        {
            // Another process sharing the cluster may have just created it.
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(name)
                    .fetch_one(&pool)
                    .await?;
            if !exists {
                return Err(e.into());
            }
        }
    }
    pool.close().await;
    Ok(())
}

#[derive(Clone)]
struct HealthState {
    pool: PgPool,
    store: Arc<dyn EventStore>,
    leases: projections::Leases,
}

/// `GET /health`: 200 with the head position, each projection's checkpoint, lag, dead letters
/// and state, and the projections this process runs; `status` is `ok`, or `degraded` when a
/// projection set events aside or is stuck. 503 when the database cannot be reached.
async fn health(State(state): State<HealthState>) -> (StatusCode, Json<serde_json::Value>) {
    health_report(&state).await
}

/// `GET /health/ready`: as `/health`, but 503 also when a projection is stuck (behind the
/// head and not moving), so a load balancer sends no one to a process whose reads are frozen.
async fn ready(State(state): State<HealthState>) -> (StatusCode, Json<serde_json::Value>) {
    let (code, body) = health_report(&state).await;
    let stuck = body["projections"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["state"] == "stuck"));
    if stuck {
        (StatusCode::SERVICE_UNAVAILABLE, body)
    } else {
        (code, body)
    }
}

async fn health_report(state: &HealthState) -> (StatusCode, Json<serde_json::Value>) {
    match projections::status(&*state.store, &state.pool, chrono::Utc::now()).await {
        Ok(all) => {
            let head = all.first().map_or(0, |s| s.head);
            let healthy = all.iter().all(|s| s.state == projections::State::Ok);
            let projections: Vec<_> = all
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "checkpoint": s.checkpoint,
                        "lag": s.lag,
                        "deadLetters": s.dead_letters,
                        "state": s.state.label(),
                    })
                })
                .collect();
            (
                StatusCode::OK,
                Json(serde_json::json!({
                    "status": if healthy { "ok" } else { "degraded" },
                    "head": head,
                    "projections": projections,
                    "running": state.leases.held(),
                })),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable" })),
        ),
    }
}
