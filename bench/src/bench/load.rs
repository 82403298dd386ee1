//! The load scenarios: commands, store appends, the generated log, visibility, reads.

use super::*;

pub(super) fn id(v: &Value, field: &str) -> String {
    v["events"][0]["data"][field]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Scenario 1: C clients each drive their own tickets raise → assign → start → resolve → close.
pub(super) async fn http_commands(
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

pub(super) fn meta() -> CommandMetadata {
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
pub(super) async fn store_appends(
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
pub(super) async fn generate(
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
pub(super) enum Workload {
    /// Scenario 1's mix: every fifth command raises a ticket, the others move earlier tickets
    /// through assign → start → resolve → close (a raise too when none is waiting).
    Lifecycle,
    /// Every command raises a new ticket, the heaviest command (it claims a ticket number
    /// first: two appends in sequence).
    RaiseOnly,
}

/// The commands after a raise, in order.
pub(super) const LIFECYCLE: [&str; 4] = [
    "AssignTechnician",
    "StartWork",
    "ResolveTicket",
    "CloseTicket",
];

/// Scenario 4: commands sent at a steady `rate` (open loop); for each, the time from its answer
/// until GraphQL, asked with the answer's position, shows the ticket at the command's version.
pub(super) async fn visibility(
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
pub(super) async fn reads(
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
pub(super) async fn gather(
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
