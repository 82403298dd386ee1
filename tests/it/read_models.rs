//! Read models against the events that made them: a scripted day of a service center, then
//! rebuilds, a projector killed mid-stream, and a takeover between two processes.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Duration as Days, Utc};
use domain::priority::PriorityPolicy;
use domain::{replay, EventPayload, Ticket, TicketEvent, TicketState};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use stream_store::{read_full_stream, EventStore, PgEventStore, StreamId};

use crate::e2e::Api;
use crate::harness::{eventually, fresh_database, ledger_command, test_db, LedgerProcess};

const READ_MODEL_TABLES: &[&str] = &[
    "customers",
    "technicians",
    "parts",
    "devices",
    "device_visit_tickets",
    "tickets",
    "ticket_notes",
    "ticket_parts",
    "ticket_payments",
    "audit_log",
    "users",
];

/// Every read-model table as canonical JSON text, rows in a stable order.
async fn dump(pool: &PgPool) -> HashMap<&'static str, String> {
    let mut out = HashMap::new();
    for table in READ_MODEL_TABLES {
        let text: String = sqlx::query_scalar(&format!(
            "SELECT COALESCE(json_agg(t ORDER BY t::text), '[]')::text FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.insert(*table, text);
    }
    out
}

async fn caught_up(api: &Api) {
    eventually(
        Duration::from_secs(30),
        "projections to catch up",
        || async {
            let health: Value = reqwest::get(format!("{}/health", api.base))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let lagging = health["projections"]
                .as_array()?
                .iter()
                .any(|p| p["lag"] != 0);
            let all = projections::all_projectors().len();
            (health["projections"].as_array()?.len() == all && !lagging).then_some(())
        },
    )
    .await;
}

fn date(days: i64) -> String {
    (Utc::now().date_naive() + Days::days(days)).to_string()
}

struct Day {
    technicians: Vec<String>,
    tickets: Vec<String>,
    devices: Vec<(String, &'static str)>,
}

async fn ok(api: &Api, name: &str, body: Value) -> Value {
    let (status, answer) = api.command(name, body).await;
    assert!(status == 200 || status == 201, "{name}: {status} {answer}");
    answer["events"][0]["data"].clone()
}

/// A day at the service center: staff, customers of every tier, devices with active,
/// expiring and expired warranties, and tickets in every state, with money.
async fn scripted_day(api: &Api) -> Day {
    let mut technicians = Vec::new();
    for (i, name) in ["Ravi", "Mei", "Joao"].iter().enumerate() {
        let t = ok(
            api,
            "OnboardTechnician",
            json!({ "name": name, "email": format!("tech{i}@example.com") }),
        )
        .await;
        technicians.push(t["technicianId"].as_str().unwrap().to_owned());
    }
    let mut customers = Vec::new();
    for (i, tier) in ["free", "paid", "enterprise", "paid", "free"]
        .iter()
        .enumerate()
    {
        let c = ok(api, "RegisterCustomer", json!({ "name": format!("Customer {i}"), "email": format!("c{i}@example.com"), "tier": tier })).await;
        customers.push(c["customerId"].as_str().unwrap().to_owned());
    }
    // (purchase days ago, warranty months, expected status)
    let plans: [(i64, i64, &str); 5] = [
        (30, 12, "ACTIVE"),
        (350, 12, "EXPIRING_SOON"),
        (800, 12, "EXPIRED"),
        (340, 12, "EXPIRING_SOON"),
        (100, 24, "ACTIVE"),
    ];
    let mut devices = Vec::new();
    for (i, (age, months, expected)) in plans.iter().enumerate() {
        let d = ok(api, "RegisterDevice", json!({
            "customerId": customers[i], "name": format!("Device {i}"), "serialNumber": format!("SN-DAY-{i}"),
            "purchaseDate": date(-age), "warrantyMonths": months
        })).await;
        devices.push((d["deviceId"].as_str().unwrap().to_owned(), *expected));
    }
    let part = ok(
        api,
        "AddPart",
        json!({ "name": "Battery", "unitCost": 3000, "initialStock": 50 }),
    )
    .await["partId"]
        .as_str()
        .unwrap()
        .to_owned();
    let severities = ["critical", "major", "minor"];
    let mut tickets = Vec::new();
    for i in 0..24usize {
        let customer = &customers[i % customers.len()];
        let device = (i % 3 == 0).then(|| devices[i % customers.len()].0.clone());
        let mut body = json!({
            "customerId": customer, "category": "repair", "subject": format!("Issue {i}"),
            "description": "Details", "severity": severities[i % 3], "impact": 1 + (i % 5)
        });
        if let Some(d) = &device {
            body["deviceId"] = json!(d);
        }
        let t = ok(api, "RaiseTicket", body).await["ticketId"]
            .as_str()
            .unwrap()
            .to_owned();
        let tech = &technicians[i % technicians.len()];
        match i % 6 {
            0 => {} // unassigned
            1 => {
                ok(
                    api,
                    "AssignTechnician",
                    json!({ "ticketId": t, "technicianId": tech }),
                )
                .await;
            }
            2 => {
                ok(
                    api,
                    "AssignTechnician",
                    json!({ "ticketId": t, "technicianId": tech }),
                )
                .await;
                ok(api, "StartWork", json!({ "ticketId": t })).await;
                ok(
                    api,
                    "AddNote",
                    json!({ "ticketId": t, "text": "Waiting for parts", "visibility": "internal" }),
                )
                .await;
            }
            3 | 4 => {
                ok(
                    api,
                    "AssignTechnician",
                    json!({ "ticketId": t, "technicianId": tech }),
                )
                .await;
                ok(api, "StartWork", json!({ "ticketId": t })).await;
                ok(api, "QuoteRepair", json!({ "ticketId": t, "amount": 10000 + 100 * i as i64, "description": "Battery" })).await;
                ok(api, "ApproveQuote", json!({ "ticketId": t })).await;
                ok(
                    api,
                    "UsePart",
                    json!({ "ticketId": t, "partId": part, "quantity": 1 }),
                )
                .await;
                ok(api, "CompleteRepair", json!({ "ticketId": t, "finalCost": 12000 + 100 * i as i64, "summary": "Done" })).await;
                ok(
                    api,
                    "RecordPayment",
                    json!({ "ticketId": t, "amount": 5000, "method": "card" }),
                )
                .await;
                ok(
                    api,
                    "ResolveTicket",
                    json!({ "ticketId": t, "resolution": "Fixed" }),
                )
                .await;
                if i % 6 == 4 {
                    ok(
                        api,
                        "RecordPayment",
                        json!({ "ticketId": t, "amount": 7000 + 100 * i as i64, "method": "cash" }),
                    )
                    .await;
                    ok(api, "CloseTicket", json!({ "ticketId": t })).await;
                    ok(
                        api,
                        "SubmitFeedback",
                        json!({ "ticketId": t, "rating": 1 + (i % 5) as i64 }),
                    )
                    .await;
                }
            }
            _ => {
                ok(
                    api,
                    "CancelTicket",
                    json!({ "ticketId": t, "reason": "Duplicate" }),
                )
                .await;
            }
        }
        tickets.push(t);
    }
    // One device through the whole board.
    let d0 = &devices[0].0;
    ok(api, "CheckInDevice", json!({ "deviceId": d0, "condition": "ok", "reportedIssue": "x", "expectedDeliveryDate": date(2) })).await;
    ok(api, "MarkReadyForDelivery", json!({ "deviceId": d0 })).await;
    Day {
        technicians,
        tickets,
        devices,
    }
}

async fn ticket_states(
    store: &dyn EventStore,
    tickets: &[String],
) -> Vec<(TicketState, DateTime<Utc>)> {
    let mut out = Vec::new();
    for t in tickets {
        let events = read_full_stream(store, &StreamId::new(format!("ticket-{t}")).unwrap())
            .await
            .unwrap();
        let decoded: Vec<TicketEvent> = events
            .iter()
            .filter_map(|e| {
                TicketEvent::from_stored(&e.event_type, e.schema_version, e.data.raw()).unwrap()
            })
            .collect();
        let state = replay::<Ticket>(&decoded).state().cloned().unwrap();
        out.push((state, events[0].recorded_at));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_answer_what_the_events_say_and_rebuild_identically() {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let api = Api::admin(&ledger.base_url).await;
    let day = scripted_day(&api).await;
    caught_up(&api).await;

    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let store = PgEventStore::new(pool.clone());
    let states = ticket_states(&store, &day.tickets).await;
    let policy = PriorityPolicy::default();
    let now = Utc::now();

    // Unassigned queue: by current score, then age.
    let mut expected: Vec<_> = states
        .iter()
        .filter(|(s, _)| s.assignee.is_none() && s.status == domain::TicketStatus::Open)
        .collect();
    expected.sort_by_key(|(s, _)| {
        (
            std::cmp::Reverse(policy.score(
                domain::priority::PriorityInputs {
                    severity: s.severity,
                    tier: s.customer_tier,
                    impact: s.impact,
                    raised_at: s.raised_at,
                },
                now,
            )),
            s.raised_at,
        )
    });
    let queue = api.graphql("{ ticketQueue(first: 100) { totalCount edges { node { id priority { score level } } } } }", json!({})).await;
    let got: Vec<String> = queue["data"]["ticketQueue"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got,
        expected
            .iter()
            .map(|(s, _)| s.id.to_string())
            .collect::<Vec<_>>(),
        "{queue}"
    );
    let next = api.graphql("{ nextTicket { id } }", json!({})).await;
    assert_eq!(next["data"]["nextTicket"]["id"], got[0].as_str());
    // The queue's head path (per-group candidates) and the general search agree, page by page.
    let ids = |v: &Value, field: &str| -> Vec<String> {
        v["data"][field]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let searched = api.graphql("{ tickets(filter: { status: [OPEN], unassigned: true }, orderBy: PRIORITY, first: 100) { edges { node { id } } } }", json!({})).await;
    assert_eq!(ids(&searched, "tickets"), got, "{searched}");
    let first_page = api
        .graphql(
            "{ ticketQueue(first: 2) { edges { cursor node { id } } } }",
            json!({}),
        )
        .await;
    let cursor = first_page["data"]["ticketQueue"]["edges"][1]["cursor"].clone();
    let second_page = api.graphql("query($after: String) { ticketQueue(first: 2, after: $after) { edges { node { id } } } }", json!({ "after": cursor })).await;
    let paged: Vec<String> = ids(&first_page, "ticketQueue")
        .into_iter()
        .chain(ids(&second_page, "ticketQueue"))
        .collect();
    assert_eq!(paged, got.iter().take(4).cloned().collect::<Vec<_>>());

    // Balances, bills and statuses per ticket.
    for (s, _) in &states {
        let t = api.graphql("query($id: ID!) { ticket(id: $id) { status bill paid balance covered notes { text } parts { quantity } payments { amount } } }", json!({ "id": s.id.to_string() })).await;
        let t = &t["data"]["ticket"];
        let money =
            |m: domain::Money| format!("{}.{:02}", m.minor_units() / 100, m.minor_units() % 100);
        assert_eq!(t["bill"], money(s.bill()));
        assert_eq!(t["paid"], money(s.paid));
        assert_eq!(t["balance"], money(s.balance()));
        assert_eq!(
            t["status"].as_str().unwrap().to_lowercase(),
            s.status.label()
        );
        assert_eq!(t["notes"].as_array().unwrap().len() as u32, s.notes);
        assert_eq!(t["parts"].as_array().unwrap().len(), s.parts.len());
    }

    // Warranty statuses, computed against today.
    for (id, expected) in &day.devices {
        let d = api
            .graphql(
                "query($id: ID!) { device(id: $id) { warranty { status daysRemaining } } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(d["data"]["device"]["warranty"]["status"], *expected, "{d}");
    }
    let expiring = api
        .graphql(
            "{ devicesExpiringWithin(days: 30) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(expiring["data"]["devicesExpiringWithin"]["totalCount"], 2);

    // Technician metrics, computed here from the events.
    let perf = api.graphql("{ technicianPerformance { totalCount edges { node { technicianId assigned open completed rating_count: ratingCount totalRepairValue averageRating } } } }", json!({})).await;
    for tech in &day.technicians {
        let mine: Vec<_> = states
            .iter()
            .filter(|(s, _)| s.assignee.map(|a| a.to_string()).as_deref() == Some(tech.as_str()))
            .collect();
        let row = &perf["data"]["technicianPerformance"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node"]["technicianId"] == tech.as_str())
            .unwrap()["node"];
        let active = |s: &TicketState| {
            matches!(
                s.status,
                domain::TicketStatus::Open | domain::TicketStatus::InProgress
            )
        };
        let done = |s: &TicketState| {
            matches!(
                s.status,
                domain::TicketStatus::Resolved | domain::TicketStatus::Closed
            )
        };
        assert_eq!(row["assigned"], mine.len());
        assert_eq!(row["open"], mine.iter().filter(|(s, _)| active(s)).count());
        assert_eq!(
            row["completed"],
            mine.iter().filter(|(s, _)| done(s)).count()
        );
        assert_eq!(
            row["rating_count"],
            mine.iter().filter(|(s, _)| s.feedback.is_some()).count()
        );
        let value: i64 = mine
            .iter()
            .filter_map(|(s, _)| s.final_cost)
            .map(|m| m.minor_units())
            .sum();
        assert_eq!(
            row["totalRepairValue"],
            format!("{}.{:02}", value / 100, value % 100)
        );
    }

    // Reports and their CSV files agree with the events.
    let dist = api.graphql("{ statusDistribution { status count } kpis { ticketsRaised openTickets unassignedTickets pendingDeliveries } }", json!({})).await;
    let total: i64 = dist["data"]["statusDistribution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, day.tickets.len() as i64);
    assert_eq!(dist["data"]["kpis"]["ticketsRaised"], day.tickets.len());
    assert_eq!(dist["data"]["kpis"]["pendingDeliveries"], 1);
    let csv = api.get("/reports/status-distribution.csv").await;
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("status,count\n"), "{csv}");
    let open_line = format!(
        "open,{}",
        states
            .iter()
            .filter(|(s, _)| s.status == domain::TicketStatus::Open)
            .count()
    );
    assert!(csv.lines().any(|l| l == open_line), "{csv}");
    assert_eq!(api.get("/reports/nope.csv").await.status(), 404);
    let board = api
        .graphql(
            "{ billingBoard { readyForDelivery } projectionStatus { name lag } }",
            json!({}),
        )
        .await;
    assert_eq!(board["data"]["billingBoard"]["readyForDelivery"], 1);
    assert!(board["data"]["projectionStatus"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["lag"] == 0));

    // Rebuild everything while queries keep being answered: same rows.
    let before = dump(&pool).await;
    let querying = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..200 {
                let r = api.graphql("{ ticketQueue(first: 5) { totalCount } auditLog(first: 1) { totalCount } }", json!({})).await;
                assert!(
                    r["errors"].is_null(),
                    "a query failed during the rebuild: {r}"
                );
                answered += 1;
            }
            answered
        })
    };
    let out = ledger_command(&["rebuild", "--all"], &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(querying.await.unwrap(), 200);
    assert_eq!(dump(&pool).await, before, "a rebuild gives the same rows");
    let listed = ledger_command(&["projections"], &url);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("service_desk") && listed.contains("audit_log"),
        "{listed}"
    );
    drop(ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_priority_functions_match_the_domain() {
    let url = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let policy = PriorityPolicy {
        severity_weight: 2,
        tier_weight: 1,
        impact_weight: 3,
        age_step_hours: 6,
        max_age_points: 7,
        ..Default::default()
    };
    let now = Utc::now();
    for (i, severity) in [
        domain::Severity::Critical,
        domain::Severity::Major,
        domain::Severity::Minor,
    ]
    .into_iter()
    .enumerate()
    {
        for tier in [
            domain::Tier::Free,
            domain::Tier::Paid,
            domain::Tier::Enterprise,
        ] {
            for impact in 1..=5 {
                for hours in [0i64, 5, 6, 13, 47, 1000, -3] {
                    let raised = now - Days::hours(hours + i as i64);
                    let inputs = domain::priority::PriorityInputs {
                        severity,
                        tier,
                        impact: domain::Impact::parse("i", impact).unwrap(),
                        raised_at: raised,
                    };
                    let (score, level): (i32, String) = sqlx::query_as("SELECT priority_score($1, $2, $3, $4, $5, $6), priority_level(priority_score($1, $2, $3, $4, $5, $6), $6)")
                        .bind(serde_json::to_value(severity).unwrap().as_str().unwrap().to_owned())
                        .bind(serde_json::to_value(tier).unwrap().as_str().unwrap().to_owned())
                        .bind(impact as i32)
                        .bind(raised)
                        .bind(now)
                        .bind(serde_json::to_value(&policy).unwrap())
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    let expected = policy.score(inputs, now);
                    assert_eq!(
                        score as u32, expected,
                        "{severity:?} {tier:?} {impact} {hours}h"
                    );
                    assert_eq!(level, format!("{:?}", policy.level(expected)));
                }
            }
        }
    }
}

/// A `ledger serve` process's `/health`.
async fn health(base: &str) -> Option<Value> {
    reqwest::get(format!("{base}/health"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_takes_over_the_projections_and_nothing_is_lost_or_doubled() {
    let url = fresh_database().await;
    let a = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let b = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let (api_a, api_b) = (Api::admin(&a.base_url).await, Api::admin(&b.base_url).await);
    // Exactly one of them runs each projection: usually the first started runs all, but the
    // leases are taken one projection at a time, so the two may also split them. The one that
    // is killed below holds at least one.
    let a_holds = eventually(
        Duration::from_secs(20),
        "each projection to run in exactly one process",
        || async {
            let (ha, hb) = (health(&api_a.base).await?, health(&api_b.base).await?);
            let count = |h: &Value| h["running"].as_array().map_or(0, Vec::len);
            let (in_a, in_b) = (count(&ha), count(&hb));
            (in_a + in_b == projections::all_projectors().len()).then_some(in_a > 0)
        },
    )
    .await;
    let (mut holder, _survivor_process, survivor_api) = if a_holds {
        (a, b, api_b)
    } else {
        (b, a, api_a)
    };
    for i in 0..5 {
        ok(
            &survivor_api,
            "RegisterCustomer",
            json!({ "name": format!("Before {i}"), "email": format!("b{i}@example.com") }),
        )
        .await;
    }
    caught_up(&survivor_api).await;
    holder.stop_with(libc::SIGKILL);
    for i in 0..5 {
        ok(
            &survivor_api,
            "RegisterCustomer",
            json!({ "name": format!("After {i}"), "email": format!("a{i}@example.com") }),
        )
        .await;
    }
    eventually(
        Duration::from_secs(20),
        "the survivor to take over",
        || async {
            let h = health(&survivor_api.base).await?;
            (h["running"].as_array()?.len() == projections::all_projectors().len()).then_some(())
        },
    )
    .await;
    caught_up(&survivor_api).await;

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let head: i64 = sqlx::query_scalar("SELECT MAX(position) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM audit_log ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "every event once in the audit log"
    );
    let customers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(customers, 10);
    let live = dump(&pool).await;
    let out = ledger_command(&["rebuild", "--all"], &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        dump(&pool).await,
        live,
        "what survived equals a clean rebuild"
    );
    drop(_survivor_process);
}

/// Appends `n` CustomerRegistered events straight to the store, one stream each.
async fn register_customers(store: &dyn EventStore, label: &str, n: usize) {
    for i in 0..n {
        let customer = uuid::Uuid::new_v4();
        let data = json!({ "customerId": customer, "name": format!("{label} {i}"), "email": format!("{label}{i}@example.com"),
                           "phone": null, "location": null, "tier": "paid", "registeredAt": Utc::now() });
        let event = stream_store::NewEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: "CustomerRegistered".into(),
            schema_version: 1,
            data,
        };
        store
            .append(
                &StreamId::new(format!("customer-{customer}")).unwrap(),
                stream_store::ExpectedVersion::NoStream,
                vec![event],
                &crate::store::meta(),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_stream_resumes_to_a_clean_rebuild() {
    let url = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let store = PgEventStore::new(pool.clone());
    // A backlog of real events for the projector to chew on.
    register_customers(&store, "backlog", 400).await;
    let mut ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    // Kill it as soon as it has applied something but (most likely) not everything.
    eventually(
        Duration::from_secs(30),
        "the projector to start applying",
        || async {
            let p: Option<i64> =
                sqlx::query_scalar("SELECT MIN(position) FROM projection_checkpoints")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (p.unwrap_or(0) > 0).then_some(())
        },
    )
    .await;
    ledger.stop_with(libc::SIGKILL);
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    caught_up(&Api::admin(&ledger.base_url).await).await;
    let customers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(customers, 400);
    let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        audit,
        store.head().await.unwrap(),
        "every event once, after the bootstrap's too"
    );
    let live = dump(&pool).await;
    let out = ledger_command(&["rebuild", "--all"], &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dump(&pool).await, live);
    drop(ledger);
}

/// Every index and constraint of the `public` schema, by name.
async fn live_schema(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'public'
         UNION ALL
         SELECT conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace
         UNION ALL
         SELECT relname::text, COALESCE(array_to_string(reloptions, ','), '')
         FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The rebuild schemas in the database (a finished or abandoned rebuild leaves none).
async fn rebuild_schemas(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM pg_namespace WHERE nspname LIKE 'rebuild_%'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A rebuild swaps its tables in only when no reader holds them: a reader's open transaction
/// makes the swap wait and retry, never fails the reader; afterwards the live tables have the
/// same rows, indexes and constraints, under the same names, and no rebuild schema is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_waits_for_readers_and_keeps_the_schema() {
    let db = test_db().await;
    register_customers(&*db.store, "reader", 20).await;
    let desk = projections::projector("service_desk").unwrap();
    // The schema as the migrations made it (table options included).
    let schema = live_schema(&db.pool).await;
    for projector in [&*desk, &projections::AuditLog] {
        projections::rebuild(&db.store, &db.pool, projector, &|_, _| {})
            .await
            .unwrap();
        assert_eq!(live_schema(&db.pool).await, schema, "{}", projector.name());
    }
    let rows = dump(&db.pool).await;

    let mut reader = db.pool.begin().await.unwrap();
    let count = "SELECT COUNT(*) FROM customers";
    let seen: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(seen, 20);
    let rebuild = tokio::spawn({
        let (store, pool) = (db.store.clone(), db.pool.clone());
        async move { projections::rebuild(&store, &pool, &*desk, &|_, _| {}).await }
    });
    // The swap's wait for the reader's lock; a second wait, begun later, shows that the swap
    // gave way after its lock timeout and tried again.
    let waiting = || async {
        sqlx::query_scalar::<_, DateTime<Utc>>(
            "SELECT l.waitstart FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE c.relname = 'customers' AND l.mode = 'AccessExclusiveLock' AND NOT l.granted",
        )
        .fetch_optional(&db.pool)
        .await
        .ok()
        .flatten()
    };
    let first = eventually(
        Duration::from_secs(30),
        "the swap to wait for the reader's lock",
        waiting,
    )
    .await;
    eventually(Duration::from_secs(30), "the swap to try again", || async {
        waiting().await.filter(|started| *started > first)
    })
    .await;
    // The reader goes on undisturbed while the swap waits for it.
    let seen: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(seen, 20);
    assert!(
        !rebuild.is_finished(),
        "the swap did not wait for the reader"
    );
    reader.commit().await.unwrap();
    let position = rebuild.await.unwrap().unwrap();
    assert_eq!(position, db.store.head().await.unwrap());
    assert_eq!(live_schema(&db.pool).await, schema);
    assert_eq!(dump(&db.pool).await, rows);
    assert_eq!(rebuild_schemas(&db.pool).await, 0);
}

/// A reader that holds a live table through every attempt at the swap makes the rebuild give
/// up with an error naming it; the live tables keep their rows and no rebuild schema is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_that_cannot_swap_says_who_holds_the_live_tables() {
    let db = test_db().await;
    register_customers(&*db.store, "held", 5).await;
    let desk = projections::projector("service_desk").unwrap();
    projections::rebuild(&db.store, &db.pool, &*desk, &|_, _| {})
        .await
        .unwrap();
    let rows = dump(&db.pool).await;
    let mut reader = db.pool.begin().await.unwrap();
    let reader_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    sqlx::query("SELECT COUNT(*) FROM customers")
        .execute(&mut *reader)
        .await
        .unwrap();

    let error = projections::rebuild(&db.store, &db.pool, &*desk, &|_, _| {})
        .await
        .expect_err("the swap cannot have its locks");
    let message = error.to_string();
    assert!(
        matches!(error, projections::ProjectionError::SwapLocked { .. }),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "pid {reader_pid} (client backend, AccessShareLock"
        )),
        "{message}"
    );
    reader.commit().await.unwrap();
    assert_eq!(dump(&db.pool).await, rows);
    assert_eq!(rebuild_schemas(&db.pool).await, 0);
}

/// An autovacuum of a live table (here crawling: one page per 100 ms) does not keep a rebuild
/// from swapping its tables in: the swap waits for it past `deadlock_timeout`, so PostgreSQL
/// cancels it. Swap attempts that each gave up after their short lock timeout would all have
/// failed while the vacuum ran, and the rebuild with them. The cluster is the test's own: its
/// autovacuum looks at every database each second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_swaps_its_tables_in_while_autovacuum_works_on_the_live_ones() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("autovacuum-pg-{}", uuid::Uuid::new_v4().simple()));
    let pg = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            ledger::EmbeddedPostgres::start(&dir, &[("fsync", "off"), ("autovacuum_naptime", "1")])
        }
    })
    .await
    .unwrap()
    .unwrap();
    let pool = ledger::connect_and_migrate(&pg.url("postgres"))
        .await
        .unwrap();
    let store: std::sync::Arc<dyn EventStore> =
        std::sync::Arc::new(PgEventStore::new(pool.clone()));
    register_customers(&*store, "vacuumed", 10_000).await;
    let audit = &projections::AuditLog;
    projections::rebuild(&store, &pool, audit, &|_, _| {})
        .await
        .unwrap();
    // The new live table: vacuumed as soon as the launcher comes by, as slowly as can be.
    sqlx::raw_sql(
        "ALTER TABLE audit_log SET (autovacuum_vacuum_insert_threshold = 1,
             autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_cost_delay = 100,
             autovacuum_vacuum_cost_limit = 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let vacuuming = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT a.pid FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a USING (pid)
             WHERE a.backend_type = 'autovacuum worker' AND v.relid = 'audit_log'::regclass
               AND v.phase = 'scanning heap'",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    };
    let worker = eventually(
        Duration::from_secs(60),
        "an autovacuum worker on the live audit log",
        vacuuming,
    )
    .await;
    let pages: i64 = sqlx::query_scalar(
        "SELECT heap_blks_total - heap_blks_scanned FROM pg_stat_progress_vacuum WHERE pid = $1",
    )
    .bind(worker)
    .fetch_one(&pool)
    .await
    .unwrap();
    // At 100-400 ms a page, minutes: longer than all the swap's attempts (~25 s) together.
    assert!(
        pages > 150,
        "the vacuum must outlast the swap's attempts: {pages} pages left"
    );

    let position = projections::rebuild(&store, &pool, audit, &|_, _| {})
        .await
        .expect("the rebuild swapped its tables in");
    assert_eq!(position, store.head().await.unwrap());
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 10_000);
    pool.close().await;
    drop(pg);
    let _ = std::fs::remove_dir_all(dir);
}

/// A rebuild computes one batch while it writes the one before. Over a log of several rebuild
/// batches (10,000 events) in which every ticket's events are spread over all of them, it must
/// write exactly the rows that following the log in small batches wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_over_many_batches_writes_what_following_the_log_wrote() {
    use domain::{Aggregate, CustomerId, TechnicianId, TicketId};
    let db = test_db().await;
    const TICKETS: usize = 6_000;
    let start = Utc::now();
    let technician = TechnicianId::from_uuid(uuid::Uuid::new_v4());
    let customer = CustomerId::from_uuid(uuid::Uuid::new_v4());
    let mut tickets: Vec<(TicketId, Ticket)> = (0..TICKETS)
        .map(|_| (TicketId::from_uuid(uuid::Uuid::new_v4()), Ticket::default()))
        .collect();
    // Round by round: every ticket is raised, then every ticket assigned, and so on, so that
    // each ticket is continued in later batches than the one that raised it.
    let mut rows: Vec<(String, i64, String, i32, Value, DateTime<Utc>)> = Vec::new();
    for round in 0..4i64 {
        let at = start + Days::minutes(round);
        for (n, (id, ticket)) in tickets.iter_mut().enumerate() {
            let command =
                crate::projections::lifecycle(*id, customer, technician, n as u64 + 1, at)
                    .swap_remove(round as usize);
            let events = ticket.decide(command, at).unwrap();
            let stream = StreamId::for_aggregate(Ticket::STREAM_PREFIX, *id);
            for e in &events {
                rows.push((
                    stream.as_str().to_owned(),
                    round + 1,
                    e.event_type().to_owned(),
                    e.schema_version(),
                    e.to_data(),
                    at,
                ));
            }
            *ticket = events
                .iter()
                .fold(std::mem::take(ticket), |t, e| t.evolve(e));
        }
    }
    assert_eq!(rows.len(), 4 * TICKETS, "one event per command");
    sqlx::query(
        "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                             data, command_id, correlation_id, causation_id, actor_id,
                             actor_role, recorded_at)
         SELECT n, e.stream_id, e.version, gen_random_uuid(), e.event_type, e.schema_version,
                e.data, gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'tester',
                'admin', e.recorded_at
         FROM ROWS FROM (jsonb_to_recordset($1)
                         AS (stream_id text, version bigint, event_type text,
                             schema_version int, data jsonb, recorded_at timestamptz))
              WITH ORDINALITY AS e (stream_id, version, event_type, schema_version, data,
                                    recorded_at, n)",
    )
    .bind(Value::Array(
        rows.iter()
            .map(
                |(stream_id, version, event_type, schema_version, data, at)| {
                    json!({
                        "stream_id": stream_id, "version": version, "event_type": event_type,
                        "schema_version": schema_version, "data": data, "recorded_at": at,
                    })
                },
            )
            .collect(),
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let desk = projections::projector("service_desk").unwrap();
    projections::catch_up(&*db.store, &db.pool, &*desk)
        .await
        .unwrap();
    let followed = dump(&db.pool).await;
    let resolved: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tickets WHERE status = 'resolved' AND version = 4",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(resolved, TICKETS as i64);
    // A fresh instance: nothing remembered from following the log.
    let desk = projections::projector("service_desk").unwrap();
    let position = projections::rebuild(&db.store, &db.pool, &*desk, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(position, 4 * TICKETS as i64);
    assert_eq!(dump(&db.pool).await, followed);
}

/// The users read model follows each account: registered, signed in, password changed, role
/// changed, deactivated; a rebuild gives the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_read_model_follows_each_account() {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let api = Api::admin(&ledger.base_url).await;
    let user = ok(
        &api,
        "RegisterUser",
        json!({ "email": "ines@example.com", "name": "Ines", "role": "auditor",
                "password": "Secret-pass-9", "mustChangePassword": true }),
    )
    .await;
    let id = user["userId"].as_str().unwrap().to_owned();
    let ines = Api::login(&ledger.base_url, "ines@example.com", "Secret-pass-9").await;
    ok(
        &ines,
        "ChangePassword",
        json!({ "currentPassword": "Secret-pass-9", "newPassword": "Other-pass-9" }),
    )
    .await;
    ok(
        &api,
        "ChangeUserRole",
        json!({ "userId": id, "role": "admin" }),
    )
    .await;
    ok(&api, "DeactivateUser", json!({ "userId": id })).await;
    caught_up(&api).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let row: (String, String, String, bool, bool, bool) = sqlx::query_as(
        "SELECT email, name, role, active, must_change_password, last_signed_in_at IS NOT NULL
           FROM users WHERE user_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "ines@example.com".into(),
            "Ines".into(),
            "admin".into(),
            false,
            false,
            true
        )
    );
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(admins, 2, "the first admin and Ines");
    let before = dump(&pool).await;
    let out = ledger_command(&["rebuild", "users"], &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dump(&pool).await, before);
    drop(ledger);
}

/// A value in a read model that no enum of this build names is answered as an error, never
/// read as a default (it was "open" before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stored_value_is_an_error_never_a_default() {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let api = Api::admin(&ledger.base_url).await;
    let (customer, _) = api.customer_and_technician().await;
    let (ticket, _) = api.raise(&customer).await;
    caught_up(&api).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let query = "{ tickets(first: 5) { edges { node { id status } } } }";
    let before = api.graphql(query, json!({})).await;
    assert_eq!(
        before["data"]["tickets"]["edges"][0]["node"]["status"], "OPEN",
        "{before}"
    );
    sqlx::query("UPDATE tickets SET status = 'frozen' WHERE ticket_id = $1::uuid")
        .bind(&ticket)
        .execute(&pool)
        .await
        .unwrap();
    let after = api.graphql(query, json!({})).await;
    assert_eq!(
        after["errors"][0]["extensions"]["code"], "INTERNAL",
        "{after}"
    );
    assert!(after["data"]["tickets"].is_null(), "{after}");
    drop(ledger);
}
