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

mod subscriptions;

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

struct Server {
    child: Child,
    base: String,
}

/// The `ledger` binary the server runs: `LEDGER_BIN`, else the one built beside this one
/// (`cargo build --release --workspace` builds both).
fn ledger_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LEDGER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let beside = std::env::current_exe()?.with_file_name("ledger");
    if !beside.exists() {
        bail!(
            "no ledger binary at {} (build it: cargo build --release --workspace, or set LEDGER_BIN)",
            beside.display()
        );
    }
    Ok(beside)
}

impl Server {
    fn start(url: &str) -> anyhow::Result<Server> {
        let mut child = Command::new(ledger_binary()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
            .env("LEDGER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("LEDGER_JWT_SECRET", JWT_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("serve stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().context("serve exited")??;
            if let Some(url) = line.strip_prefix("ledger listening on ") {
                break url.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, base })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Http {
    async fn login(base: &str) -> anyhow::Result<Http> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let mut http = Http {
            client,
            base: base.to_owned(),
            token: String::new(),
        };
        http.token = http.login_as("admin@ledger.local", ADMIN_PASSWORD).await?;
        Ok(http)
    }

    /// A token of the user `email`.
    async fn login_as(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let body: Value = self
            .client
            .post(format!("{}/auth/login", self.base))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await?
            .json()
            .await?;
        Ok(body["accessToken"].as_str().context("login")?.to_owned())
    }

    async fn command(&self, name: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}/commands/{name}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{name}: {status} {body}");
        }
        Ok(body)
    }

    async fn graphql(
        &self,
        query: &str,
        variables: Value,
        position: Option<i64>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token);
        if let Some(p) = position {
            request = request.header("X-Ledger-Position", p.to_string());
        }
        let body: Value = request
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if !body["errors"].is_null() {
            bail!("graphql: {body}");
        }
        Ok(body)
    }

    async fn lag(&self) -> anyhow::Result<i64> {
        let health: Value = self
            .client
            .get(format!("{}/health", self.base))
            .send()
            .await?
            .json()
            .await?;
        Ok(health["projections"].as_array().map_or(i64::MAX, |p| {
            p.iter()
                .map(|x| x["lag"].as_i64().unwrap_or(i64::MAX))
                .max()
                .unwrap_or(0)
        }))
    }

    /// Seconds until every projection has caught up (bounded).
    async fn caught_up(&self, limit: Duration) -> anyhow::Result<f64> {
        let start = Instant::now();
        while self.lag().await? > 0 {
            if start.elapsed() > limit {
                bail!("projections did not catch up within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(start.elapsed().as_secs_f64())
    }
}

/// One client's own keep-alive HTTP/1.1 connection, for the closed-loop scenarios (commands,
/// reads), as `wrk` and pgbench keep one connection per client. The connection is driven on
/// the client's own task: no pool to check out from and no connection task to hand each
/// request to and wake for its answer, which made reqwest's client cost 39–47 µs of CPU
/// per query against `wrk`'s 19 on the machine the server shares (BENCHMARKS.md, thirteenth
/// round). After a failed exchange (or the server closing it) the connection is dropped and
/// a new one is opened on the next request.
struct Connection {
    authority: String,
    authorization: HeaderValue,
    open: Option<Open>,
}

/// An open connection: where requests go in, and what moves their bytes.
type Open = (http1::SendRequest<Full<Bytes>>, Pin<Box<Driver>>);
type Driver = http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>;

impl Connection {
    fn new(http: &Http) -> anyhow::Result<Connection> {
        let authority = http
            .base
            .strip_prefix("http://")
            .context("the server's address")?
            .to_owned();
        Ok(Connection {
            authority,
            authorization: HeaderValue::from_str(&format!("Bearer {}", http.token))?,
            open: None,
        })
    }

    /// POSTs `body` as JSON to `path`: the answer's status and JSON body.
    async fn post(&mut self, path: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        let request = hyper::Request::post(path)
            .header(header::HOST, &self.authority)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        if self.open.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.authority).await?;
            stream.set_nodelay(true)?;
            let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
            self.open = Some((sender, Box::pin(driver)));
        }
        let Some((sender, driver)) = self.open.as_mut() else {
            bail!("no connection");
        };
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, serde_json::from_slice(&bytes)?))
        };
        // The driver moves the bytes; it ends only when the connection does.
        let answer = tokio::select! {
            answer = exchange => Some(answer),
            _ = driver => None,
        };
        match answer {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(e)) => {
                self.open = None;
                Err(e)
            }
            None => {
                self.open = None;
                bail!("the server closed the connection")
            }
        }
    }

    async fn command(&mut self, name: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, answer) = self.post(&format!("/commands/{name}"), body).await?;
        if !status.is_success() {
            bail!("{name}: {status} {answer}");
        }
        Ok(answer)
    }

    async fn graphql(&mut self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let (_, answer) = self
            .post(
                "/graphql",
                &json!({ "query": query, "variables": variables }),
            )
            .await?;
        if !answer["errors"].is_null() {
            bail!("graphql: {answer}");
        }
        Ok(answer)
    }
}

fn id(v: &Value, field: &str) -> String {
    v["events"][0]["data"][field]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Scenario 1: C clients each drive their own tickets raise → assign → start → resolve → close.
async fn http_commands(
    http: &Http,
    clients: usize,
    seconds: u64,
    customer: &str,
    technician: &str,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, customer, technician) = (http.clone(), customer.to_owned(), technician.to_owned());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                let Ok(mut connection) = Connection::new(&http) else {
                    return (lat, 1);
                };
                while Instant::now() < deadline {
                    let mut timed = |started: Instant, r: anyhow::Result<Value>| -> Option<Value> {
                        lat.push(started.elapsed().as_micros() as u64);
                        r.map_err(|_| errors += 1).ok()
                    };
                    let t = Instant::now();
                    let Some(raised) = timed(t, connection.command("RaiseTicket", &json!({ "customerId": customer, "category": "repair", "subject": "Bench", "description": "d", "severity": "major", "impact": 2 })).await) else { continue };
                    let ticket = id(&raised, "ticketId");
                    for (name, body) in [
                        ("AssignTechnician", json!({ "ticketId": ticket, "technicianId": technician })),
                        ("StartWork", json!({ "ticketId": ticket })),
                        ("ResolveTicket", json!({ "ticketId": ticket, "resolution": "done" })),
                        ("CloseTicket", json!({ "ticketId": ticket })),
                    ] {
                        let t = Instant::now();
                        if timed(t, connection.command(name, &body).await).is_none() {
                            break;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (lat, errors, elapsed) = gather(tasks).await?;
    let commands = lat.len();
    let catch_up = http.caught_up(Duration::from_secs(60)).await?;
    Ok(
        json!({ "clients": clients, "commands": commands, "commands_per_s": commands as f64 / elapsed, "errors": errors, "latency": percentiles(lat), "lag_zero_after_s": catch_up }),
    )
}

fn meta() -> CommandMetadata {
    let id = Uuid::new_v4();
    CommandMetadata {
        command_id: id,
        correlation_id: id,
        causation_id: id,
        actor: Actor {
            id: "bench".into(),
            role: "admin".into(),
        },
        recorded_at: Utc::now(),
    }
}

/// Scenario 2: appends at the store level, one event each, to per-client streams.
async fn store_appends(
    store: Arc<dyn EventStore>,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = StreamId::new(format!("bench-{}-{c}", Uuid::new_v4().simple()))
                    .expect("stream name");
                let (mut lat, mut errors, mut version) = (Vec::new(), 0u64, 0i64);
                while Instant::now() < deadline {
                    let e = NewEvent {
                        event_id: Uuid::new_v4(),
                        event_type: "BenchEvent".into(),
                        schema_version: 1,
                        data: json!({ "n": version }),
                    };
                    let t = Instant::now();
                    match store
                        .append(&stream, ExpectedVersion::Exact(version), vec![e], &meta())
                        .await
                    {
                        Ok(_) => {
                            version += 1;
                            lat.push(t.elapsed().as_micros() as u64);
                        }
                        // Each client owns its stream: any failure is an error of the store.
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (lat, errors, elapsed) = gather(tasks).await?;
    Ok(
        json!({ "clients": clients, "events": lat.len(), "events_per_s": lat.len() as f64 / elapsed, "errors": errors, "latency": percentiles(lat) }),
    )
}

/// Appends about `target` realistic ticket events (half the tickets closed, half open and
/// assigned) for one customer and a few technicians; returns the open ticket ids.
async fn generate(
    store: Arc<dyn EventStore>,
    target: usize,
    customer: Uuid,
    technicians: &[Uuid],
) -> anyhow::Result<(usize, Vec<Uuid>)> {
    let tickets = target / 7 * 2;
    let per_task = tickets / 16 + 1;
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let (store, technicians) = (store.clone(), technicians.to_vec());
            tokio::spawn(async move {
                let (mut written, mut open) = (0usize, Vec::new());
                for i in 0..per_task {
                    let ticket = Uuid::new_v4();
                    let now = Utc::now();
                    let technician = domain::TechnicianId::from_uuid(technicians[(task + i) % technicians.len()]);
                    let raised = json!({ "type": "TicketRaised", "data": {
                        "ticketId": ticket, "number": domain::TicketNumber::generate(now.date_naive(), NUMBERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).as_str(),
                        "customerId": customer, "customerTier": "paid", "deviceId": null, "category": "repair",
                        "subject": format!("Generated {i}"), "description": "bench", "severity": SEVERITIES[i % 3],
                        "impact": 1 + i % 5, "priorityScore": 8, "priorityLevel": "P2", "raisedAt": now } });
                    let mut events: Vec<TicketEvent> = vec![serde_json::from_value(raised).map_err(anyhow::Error::from)?];
                    events.push(TicketEvent::TechnicianAssigned { technician_id: technician, previous_technician_id: None, assigned_at: now });
                    if i % 2 == 0 {
                        let text = |s: &str| domain::Text::parse("t", s, 100).map_err(anyhow::Error::from);
                        events.push(TicketEvent::WorkStarted { technician_id: technician, started_at: now });
                        events.push(TicketEvent::TicketResolved { resolution: text("fixed")?, resolved_at: now });
                        events.push(TicketEvent::TicketClosed { closed_at: now });
                    } else {
                        open.push(ticket);
                    }
                    let new: Vec<NewEvent> = events.iter().map(|e| NewEvent { event_id: Uuid::new_v4(), event_type: e.event_type().into(), schema_version: 1, data: e.to_data() }).collect();
                    written += new.len();
                    store.append(&StreamId::for_aggregate("ticket", ticket), ExpectedVersion::NoStream, new, &meta()).await?;
                }
                anyhow::Ok((written, open))
            })
        })
        .collect();
    let (mut written, mut open) = (0, Vec::new());
    for t in tasks {
        let (w, o) = t.await??;
        written += w;
        open.extend(o);
    }
    Ok((written, open))
}

/// What the visibility scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Scenario 1's mix: every fifth command raises a ticket, the others move earlier tickets
    /// through assign → start → resolve → close (a raise too when none is waiting).
    Lifecycle,
    /// Every command raises a new ticket, the heaviest command (it claims a ticket number
    /// first: two appends in sequence).
    RaiseOnly,
}

/// The commands after a raise, in order.
const LIFECYCLE: [&str; 4] = [
    "AssignTechnician",
    "StartWork",
    "ResolveTicket",
    "CloseTicket",
];

/// Scenario 4: commands sent at a steady `rate` (open loop); for each, the time from its answer
/// until GraphQL, asked with the answer's position, shows the ticket at the command's version.
async fn visibility(
    http: &Http,
    rate: u64,
    seconds: u64,
    (customer, technician): (&str, &str),
    workload: Workload,
) -> anyhow::Result<Value> {
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let mut ticker = tokio::time::interval(interval);
    // Open loop: ticks missed while the client was busy are sent at once, keeping the rate.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    // Tickets whose previous command was answered, with the index of their next step.
    let waiting = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let mut tasks = Vec::new();
    let started = Instant::now();
    let mut tick = 0u64;
    while Instant::now() < deadline {
        ticker.tick().await;
        tick += 1;
        let next: Option<(String, usize)> = match workload {
            Workload::Lifecycle if tick % 5 != 0 => {
                waiting.lock().ok().and_then(|mut w| w.pop_front())
            }
            _ => None,
        };
        let (http, customer, technician, waiting) = (
            http.clone(),
            customer.to_owned(),
            technician.to_owned(),
            waiting.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (name, body) = match &next {
                None => ("RaiseTicket", json!({ "customerId": customer, "category": "general", "subject": "Visible?", "description": "d", "severity": "minor", "impact": 1 })),
                Some((ticket, 0)) => (LIFECYCLE[0], json!({ "ticketId": ticket, "technicianId": technician })),
                Some((ticket, 2)) => (LIFECYCLE[2], json!({ "ticketId": ticket, "resolution": "done" })),
                Some((ticket, step)) => (LIFECYCLE[*step], json!({ "ticketId": ticket })),
            };
            let sent = Instant::now();
            let answer = http.command(name, body).await?;
            let answered = Instant::now();
            let command = answered.duration_since(sent).as_micros() as u64;
            let (ticket, step) = match next {
                Some((ticket, step)) => (ticket, step + 1),
                None => (id(&answer, "ticketId"), 0),
            };
            let position = answer["position"].as_i64().context("position")?;
            let version = answer["version"].as_i64().context("version")?;
            let seen = http.graphql("query($id: ID!) { ticket(id: $id) { version } }", json!({ "id": ticket }), Some(position)).await?;
            if seen["data"]["ticket"]["version"].as_i64() < Some(version) {
                bail!("{name} on {ticket} not visible at position {position}: {seen}");
            }
            let visible = answered.elapsed().as_micros() as u64;
            if workload == Workload::Lifecycle && step < LIFECYCLE.len() {
                if let Ok(mut w) = waiting.lock() {
                    w.push_back((ticket, step));
                }
            }
            anyhow::Ok((name == "RaiseTicket", command, visible))
        }));
    }
    let sent = tasks.len();
    let send_seconds = started.elapsed().as_secs_f64();
    let (mut lat, mut answers, mut errors, mut raises) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for t in tasks {
        match t.await? {
            Ok((raise, command, visible)) => {
                raises += usize::from(raise);
                answers.push(command);
                lat.push(visible);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let first_errors: Vec<_> = errors.iter().take(3).cloned().collect();
    let elapsed = started.elapsed().as_secs_f64();
    Ok(
        json!({ "workload": format!("{workload:?}"), "target_per_s": rate, "achieved_per_s": sent as f64 / send_seconds, "raises": raises, "seconds_until_last_answer": elapsed, "visible": lat.len(), "failed": errors.len(), "first_errors": first_errors, "command_latency": percentiles(answers), "visibility": percentiles(lat) }),
    )
}

/// Scenario 5: GraphQL reads by 32 clients.
async fn reads(
    http: &Http,
    clients: usize,
    seconds: u64,
    query: &'static str,
    variables: Arc<dyn Fn(usize) -> Value + Send + Sync>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, variables) = (http.clone(), variables.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors, mut i) = (Vec::new(), 0u64, c * 7919);
                let Ok(mut connection) = Connection::new(&http) else {
                    return (lat, 1);
                };
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match connection.graphql(query, variables(i)).await {
                        Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                        Err(_) => errors += 1,
                    }
                    i += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let (lat, errors, elapsed) = gather(tasks).await?;
    Ok(
        json!({ "clients": clients, "queries": lat.len(), "queries_per_s": lat.len() as f64 / elapsed, "errors": errors, "latency": percentiles(lat) }),
    )
}

/// Waits for every client: all their latencies (µs), their errors, and the seconds waited.
async fn gather(
    clients: Vec<tokio::task::JoinHandle<(Vec<u64>, u64)>>,
) -> anyhow::Result<(Vec<u64>, u64, f64)> {
    let started = Instant::now();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for c in clients {
        let (l, e) = c.await?;
        lat.extend(l);
        errors += e;
    }
    Ok((lat, errors, started.elapsed().as_secs_f64()))
}

/// Scenario 7: what PostgreSQL itself commits: pgbench, one row per commit at 32 clients, and
/// 100 rows per commit.
async fn pgbench(pool: &sqlx::PgPool, url: &str, seconds: u64) -> anyhow::Result<Value> {
    let one_row = pgbench_run(pool, url, seconds, Pgbench::OneRow).await?;
    let hundred_rows = pgbench_run(pool, url, seconds, Pgbench::HundredRows).await?;
    Ok(
        json!({ "one_row_per_commit_tps_32_clients": one_row, "hundred_rows_per_commit_rows_per_s": hundred_rows }),
    )
}

/// What one pgbench run commits at 32 clients.
#[derive(Clone, Copy)]
enum Pgbench {
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
async fn rounds<F, Fut>(
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
fn median_round(rounds: &[Value]) -> Option<&Value> {
    let ratio = |round: &Value| round["ratio"].as_f64().unwrap_or(f64::NAN);
    let mut by_ratio: Vec<&Value> = rounds.iter().collect();
    by_ratio.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    by_ratio.get(by_ratio.len() / 2).copied()
}

/// One pgbench run, from a checkpoint like every measured step; its rows are removed after it,
/// so that no step pays for vacuuming them and the table does not grow over the run.
async fn pgbench_run(
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
async fn checkpoint(pool: &sqlx::PgPool) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(pool).await {
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            eprintln!("bench: CHECKPOINT between steps failed ({e}); steps run without it");
        }
    }
}

fn pgbench_process(url: &str, seconds: u64, which: Pgbench) -> anyhow::Result<f64> {
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

/// The report as a table.
pub fn table(report: &Value) -> String {
    let mut out = String::new();
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.1}"));
    out.push_str(&format!("machine: {}\n\n", report["machine"]));
    out.push_str(&format!(
        "pgbench: {} tps (1 row/commit, 32 clients), {} rows/s (100 rows/commit)\n\n",
        f(&report["pgbench"]["one_row_per_commit_tps_32_clients"]),
        f(&report["pgbench"]["hundred_rows_per_commit_rows_per_s"])
    ));
    out.push_str("scenario                     clients      rate/s     p50 ms     p95 ms     p99 ms     max ms  errors  peak RSS MiB\n");
    let row = |out: &mut String, name: &str, r: &Value, rate: &str| {
        let l = &r["latency"];
        out.push_str(&format!(
            "{name:<28} {:>7} {:>11} {:>10} {:>10} {:>10} {:>10} {:>7} {:>13}\n",
            r["clients"],
            f(&r[rate]),
            f(&l["p50_ms"]),
            f(&l["p95_ms"]),
            f(&l["p99_ms"]),
            f(&l["max_ms"]),
            r["errors"].as_u64().map_or("-".into(), |e| e.to_string()),
            f(&r["serve_peak_rss_mib"])
        ));
    };
    for r in report["store_appends"].as_array().into_iter().flatten() {
        row(&mut out, "store appends (events)", r, "events_per_s");
    }
    if !report["catch_up_before_http_s"].is_null() {
        out.push_str(&format!(
            "(serve caught up on the store appends' events in {} s before the HTTP scenarios began)\n",
            f(&report["catch_up_before_http_s"])
        ));
    }
    for r in report["http_commands"].as_array().into_iter().flatten() {
        row(&mut out, "HTTP commands", r, "commands_per_s");
    }
    for v in [&report["visibility"], &report["visibility_raise_only"]] {
        if v.is_null() {
            continue;
        }
        out.push_str(&format!(
        "visibility, {} at {}/s (sent {}/s, last answer after {} s): p50 {} ms, p99 {} ms, failed {}; command answer p50 {} ms, p99 {} ms\n",
        v["workload"].as_str().unwrap_or_default(),
        v["target_per_s"],
        f(&v["achieved_per_s"]),
        f(&v["seconds_until_last_answer"]),
        f(&v["visibility"]["p50_ms"]),
        f(&v["visibility"]["p99_ms"]),
        v["failed"],
        f(&v["command_latency"]["p50_ms"]),
        f(&v["command_latency"]["p99_ms"])
        ));
    }
    let subs = &report["subscriptions"];
    if !subs.is_null() {
        let (off, on) = (&subs["without_subscriptions"], &subs["with_subscriptions"]);
        out.push_str(&format!(
            "subscriptions, {} over {} sockets at {}/s (sent {}/s, failed {}): delivery after the answer p50 {} ms, p99 {} ms, missed {}; ticket row reads per command {} (without subscriptions {}), db transactions per command {} (without {}); serve CPU {} cores (without {})\n",
            on["subscriptions"],
            on["sockets"],
            on["target_per_s"],
            f(&on["achieved_per_s"]),
            on["failed"],
            f(&on["delivery_after_answer"]["p50_ms"]),
            f(&on["delivery_after_answer"]["p99_ms"]),
            on["deliveries_missed"],
            f(&on["ticket_reads_per_command"]),
            f(&off["ticket_reads_per_command"]),
            f(&on["db_transactions_per_command"]),
            f(&off["db_transactions_per_command"]),
            f(&on["serve_cpu_cores"]),
            f(&off["serve_cpu_cores"]),
        ));
    }
    let reads = &report["graphql_reads"];
    if !reads.is_null() {
        row(
            &mut out,
            "GraphQL ticket by id",
            &reads["ticket_by_id"],
            "queries_per_s",
        );
        row(
            &mut out,
            "GraphQL technician queue",
            &reads["technician_queue"],
            "queries_per_s",
        );
    }
    if !report["generate"].is_null() {
        out.push_str(&format!(
            "generated {} events at {} events/s; live catch-up {} events/s, peak RSS {} MiB\n",
            report["generate"]["events"],
            f(&report["generate"]["events_per_s"]),
            f(&report["live_catch_up"]["events_per_s"]),
            f(&report["live_catch_up"]["serve_peak_rss_mib"])
        ));
    }
    for (key, what) in [
        (
            "http_commands_32_rounds",
            "HTTP commands at 32 clients / pgbench tps",
        ),
        ("rebuild_rounds", "slowest rebuild / pgbench rows"),
    ] {
        if let Some(rounds) = report[key].as_array() {
            let ratios: Vec<String> = rounds
                .iter()
                .map(|r| format!("{:.3}", r["ratio"].as_f64().unwrap_or(f64::NAN)))
                .collect();
            out.push_str(&format!(
                "rounds of {what}: {} (the median one is shown)\n",
                ratios.join(" / ")
            ));
        }
    }
    for r in report["rebuild"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "rebuild {:<14} {} events in {} s = {} events/s\n",
            r["projection"].as_str().unwrap_or(""),
            r["events"],
            f(&r["seconds"]),
            f(&r["events_per_s"])
        ));
    }
    for (key, what) in [
        (
            "pgbench_next_to_commands_32",
            "tps (1 row/commit) around HTTP commands at 32 clients",
        ),
        (
            "pgbench_next_to_rebuild",
            "rows/s (100 rows/commit) around the rebuilds",
        ),
    ] {
        let limit = &report[key];
        if !limit.is_null() {
            out.push_str(&format!(
                "pgbench {what}: {} before, {} after, mean {}\n",
                f(&limit["before"]),
                f(&limit["after"]),
                f(&limit["mean"])
            ));
        }
    }
    out.push_str(&format!(
        "\nratios (to pgbench around the scenario where it ran): commands(32)/pgbench tps = {:.3}; slowest rebuild/pgbench rows = {:.3}\n",
        report["ratios"]["commands_32_clients_vs_pgbench_one_row_tps"]
            .as_f64()
            .unwrap_or(f64::NAN),
        report["ratios"]["slowest_rebuild_vs_pgbench_100_rows_per_s"]
            .as_f64()
            .unwrap_or(f64::NAN)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::{median_round, slowest};
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
