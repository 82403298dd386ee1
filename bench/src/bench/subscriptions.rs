//! Scenario 6: `ticketUpdated` subscriptions under load. 1,000 subscriptions (ten to each of
//! 100 tickets, over graphql-ws sockets of several staff users, as the server caps sockets
//! and subscriptions per user) while notes are added to those tickets at a steady 1,000
//! commands/s; the same load without subscriptions first, for comparison. Per step: database
//! transactions per command (the live feed's reads show as the difference), delivery latency
//! (from a command's answer until each subscriber has the ticket at that version or later),
//! and the server's CPU.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use super::{id, percentiles, Http};

pub(super) const TICKETS: usize = 100;
pub(super) const SUBSCRIPTIONS: usize = 1000;
/// Staff users the sockets belong to, and sockets per user (the server allows 8 sockets of
/// 32 subscriptions per user).
const USERS: usize = 8;
const SOCKETS_PER_USER: usize = 4;
const PASSWORD: &str = "Bench-watcher-1!";
/// Longer than PostgreSQL's interval between a backend's reports of its counts.
const STATS_FLUSH: Duration = Duration::from_millis(1500);

/// What one subscriber saw of its ticket: versions in the order they came, with the time.
type Seen = Vec<(i64, Instant)>;

pub(super) async fn run(
    http: &Http,
    (customer, rate, seconds): (&str, u64, u64),
    (pool, server_pid): (&sqlx::PgPool, u32),
) -> anyhow::Result<Value> {
    let mut tickets = Vec::with_capacity(TICKETS);
    for _ in 0..TICKETS {
        let raised = http
            .command(
                "RaiseTicket",
                json!({ "customerId": customer, "category": "general", "subject": "Watched",
                        "description": "d", "severity": "minor", "impact": 1 }),
            )
            .await?;
        tickets.push(id(&raised, "ticketId"));
    }
    http.caught_up(Duration::from_secs(60)).await?;
    let without = load(http, &tickets, (rate, seconds), (pool, server_pid), None).await?;

    let mut tokens = Vec::new();
    for u in 0..USERS {
        let email = format!("watcher{u}-{}@example.com", uuid::Uuid::new_v4().simple());
        http.command(
            "RegisterUser",
            json!({ "email": email, "name": format!("Watcher {u}"), "role": "admin",
                    "password": PASSWORD }),
        )
        .await?;
        tokens.push(http.login_as(&email, PASSWORD).await?);
    }
    let sockets = USERS * SOCKETS_PER_USER;
    let mut subscribers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(sockets);
    let stop = tokio_util::sync::CancellationToken::new();
    for s in 0..sockets {
        let token = tokens[s % USERS].clone();
        // Subscription n watches ticket n % TICKETS; socket s carries n = s, s + sockets, …
        let watched: Vec<(usize, String)> = (s..SUBSCRIPTIONS)
            .step_by(sockets)
            .map(|n| (n, tickets[n % TICKETS].clone()))
            .collect();
        let (base, ready, stop) = (http.base.clone(), ready_tx.clone(), stop.clone());
        subscribers.push(tokio::spawn(async move {
            subscriber(&base, &token, watched, ready, stop).await
        }));
    }
    drop(ready_tx);
    for _ in 0..sockets {
        if ready_rx.recv().await.is_none() {
            bail!("a subscriber socket failed before subscribing");
        }
    }
    let with = load(
        http,
        &tickets,
        (rate, seconds),
        (pool, server_pid),
        Some(&stop),
    )
    .await?;
    let mut seen: HashMap<usize, Seen> = HashMap::new();
    for s in subscribers {
        seen.extend(s.await??);
    }
    let Loaded {
        mut report,
        answered,
    } = with;
    // For each command and each subscriber of its ticket: the first message at its version
    // or later (a message may carry several changes the projector applied at once).
    let mut delivery = Vec::new();
    let mut missed = 0usize;
    for (n, messages) in &seen {
        let ticket = n % TICKETS;
        for (version, at) in answered.get(&ticket).into_iter().flatten() {
            match messages.iter().find(|(v, _)| v >= version) {
                Some((_, got)) => {
                    delivery.push(got.saturating_duration_since(*at).as_micros() as u64)
                }
                None => missed += 1,
            }
        }
    }
    report["subscriptions"] = json!(seen.len());
    report["sockets"] = json!(sockets);
    report["messages"] = json!(seen.values().map(Vec::len).sum::<usize>());
    report["deliveries_missed"] = json!(missed);
    report["delivery_after_answer"] = percentiles(delivery);
    let per_command = |r: &Value| r["db_transactions_per_command"].as_f64().unwrap_or(0.0);
    report["extra_db_transactions_per_command"] =
        json!(per_command(&report) - per_command(&without.report));
    Ok(json!({ "without_subscriptions": without.report, "with_subscriptions": report }))
}

/// One socket's subscriptions (`watched`: subscription number and ticket), until `stop`.
async fn subscriber(
    base: &str,
    token: &str,
    watched: Vec<(usize, String)>,
    ready: tokio::sync::mpsc::Sender<()>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<HashMap<usize, Seen>> {
    let url = format!("{}/graphql/ws", base.replace("http://", "ws://"));
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let text = |v: Value| Message::Text(v.to_string().into());
    socket
        .send(text(json!({ "type": "connection_init",
                           "payload": { "Authorization": format!("Bearer {token}") } })))
        .await?;
    match socket.next().await {
        Some(Ok(Message::Text(t))) if t.contains("connection_ack") => {}
        other => bail!("no connection_ack: {other:?}"),
    }
    let query = "subscription($id: ID!) { ticketUpdated(id: $id) { version } }";
    for (n, ticket) in &watched {
        socket
            .send(text(json!({ "id": n.to_string(), "type": "subscribe",
                               "payload": { "query": query, "variables": { "id": ticket } } })))
            .await?;
    }
    // The server has them once it answers a ping sent after them.
    socket.send(text(json!({ "type": "ping" }))).await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"pong\"") => break,
            Some(Ok(_)) => {}
            other => bail!("socket ended while subscribing: {other:?}"),
        }
    }
    let _ = ready.send(()).await;
    let mut seen: HashMap<usize, Seen> = watched.iter().map(|(n, _)| (*n, Vec::new())).collect();
    loop {
        let message = tokio::select! {
            m = socket.next() => m,
            () = stop.cancelled() => break,
        };
        let Some(Ok(Message::Text(t))) = message else {
            match message {
                Some(Ok(_)) => continue,
                other => bail!("subscription socket ended: {other:?}"),
            }
        };
        let at = Instant::now();
        let v: Value = serde_json::from_str(&t)?;
        if v["type"] != "next" {
            continue;
        }
        let n: usize = v["id"].as_str().context("id")?.parse()?;
        let version = v["payload"]["data"]["ticketUpdated"]["version"]
            .as_i64()
            .with_context(|| format!("a message without a version: {v}"))?;
        seen.entry(n).or_default().push((version, at));
    }
    let _ = socket.close(None).await;
    Ok(seen)
}

struct Loaded {
    report: Value,
    /// Per ticket (index): the version each command made, with the time of its answer.
    answered: HashMap<usize, Vec<(i64, Instant)>>,
}

/// Notes added to random tickets of `tickets` at `rate` per second for `seconds`; then, once
/// the projections caught up, `stop` (the subscribers have had every change by then or never).
async fn load(
    http: &Http,
    tickets: &[String],
    (rate, seconds): (u64, u64),
    (pool, server_pid): (&sqlx::PgPool, u32),
    stop: Option<&tokio_util::sync::CancellationToken>,
) -> anyhow::Result<Loaded> {
    // Transactions in the database (autovacuum's too), and reads of the tickets read model
    // (the live feed reads a changed ticket's row; commands and the projector do not read it).
    let counts = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database
                      WHERE datname = current_database()),
                    (SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables
                      WHERE relid = 'public.tickets'::regclass)",
        )
        .fetch_one(pool)
        .await
    };
    // Backends report their counts when idle, at most once a second: the previous step's are
    // all in before this one starts counting.
    tokio::time::sleep(STATS_FLUSH).await;
    let cpu_before = cpu_seconds(server_pid);
    let (xact_before, reads_before) = counts().await?;
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    let mut n = 0usize;
    while Instant::now() < deadline {
        ticker.tick().await;
        // Spread evenly and deterministically over the tickets.
        let ticket = (n * 37) % tickets.len();
        n += 1;
        let (http, id) = (http.clone(), tickets[ticket].clone());
        tasks.push(tokio::spawn(async move {
            let answer = http
                .command(
                    "AddNote",
                    json!({ "ticketId": id, "text": "watched", "visibility": "internal" }),
                )
                .await?;
            let version = answer["version"].as_i64().context("version")?;
            anyhow::Ok((ticket, version, Instant::now()))
        }));
    }
    let sent_seconds = started.elapsed().as_secs_f64();
    let mut answered: HashMap<usize, Vec<(i64, Instant)>> = HashMap::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await? {
            Ok((ticket, version, at)) => answered.entry(ticket).or_default().push((version, at)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    http.caught_up(Duration::from_secs(60)).await?;
    if let Some(stop) = stop {
        // Messages already sent by the server are read before the sockets close.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.cancel();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server_pid) - cpu_before;
    tokio::time::sleep(STATS_FLUSH).await;
    let (xact, reads) = counts().await?;
    let (xact, reads) = (xact - xact_before, reads - reads_before);
    let commands: usize = answered.values().map(Vec::len).sum();
    let first_errors: Vec<_> = errors.iter().take(3).cloned().collect();
    Ok(Loaded {
        report: json!({
            "target_per_s": rate,
            "achieved_per_s": n as f64 / sent_seconds,
            "commands": commands,
            "failed": errors.len(),
            "first_errors": first_errors,
            "db_transactions_per_command": xact as f64 / commands.max(1) as f64,
            "ticket_reads_per_command": reads as f64 / commands.max(1) as f64,
            "serve_cpu_cores": cpu / elapsed,
        }),
        answered,
    })
}

/// CPU time (user and system) of process `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / per_second.max(1.0)
}
