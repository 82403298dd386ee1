//! The real binary end to end: HTTP commands in, GraphQL out, over a fresh database.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{eventually, fresh_database, LedgerProcess};

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Api {
    /// Without a token.
    pub fn anonymous(base: &str) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            token: None,
        }
    }

    /// Signed in with `email` and `password`.
    pub async fn login(base: &str, email: &str, password: &str) -> Self {
        let mut api = Api::anonymous(base);
        let response = api
            .http
            .post(format!("{base}/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 200, "login as {email}");
        let body: Value = response.json().await.unwrap();
        api.token = Some(body["accessToken"].as_str().unwrap().to_owned());
        api
    }

    /// Signed in as the first admin.
    pub async fn admin(base: &str) -> Self {
        Api::login(
            base,
            crate::harness::ADMIN_EMAIL,
            crate::harness::ADMIN_PASSWORD,
        )
        .await
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.authorize(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .expect("GET")
    }

    pub async fn command(&self, name: &str, body: Value) -> (u16, Value) {
        self.raw(name, body.to_string(), &[]).await
    }

    pub async fn raw(&self, name: &str, body: String, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self
            .authorize(self.http.post(format!("{}/commands/{name}", self.base)))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("command request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let response = self
            .authorize(self.http.post(format!("{}/graphql", self.base)))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("graphql request");
        response.json().await.expect("graphql answers JSON")
    }

    pub async fn head(&self) -> i64 {
        let health: Value = self
            .http
            .get(format!("{}/health", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["head"].as_i64().expect("head in /health")
    }

    /// Registers a customer and a technician; returns their ids.
    pub async fn customer_and_technician(&self) -> (String, String) {
        let (status, customer) = self
            .command(
                "RegisterCustomer",
                json!({ "name": "Ana Souza", "email": "ana@example.com", "tier": "enterprise" }),
            )
            .await;
        assert_eq!(status, 201, "{customer}");
        let (status, technician) = self
            .command(
                "OnboardTechnician",
                json!({ "name": "Ravi Kumar", "email": "ravi@example.com" }),
            )
            .await;
        assert_eq!(status, 201, "{technician}");
        (
            customer["events"][0]["data"]["customerId"]
                .as_str()
                .unwrap()
                .to_owned(),
            technician["events"][0]["data"]["technicianId"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    pub async fn raise(&self, customer: &str) -> (String, String) {
        let (status, raised) = self.command("RaiseTicket", json!({
            "customerId": customer, "category": "repair", "subject": "Phone does not charge",
            "description": "Stopped charging after a fall", "severity": "critical", "impact": 3
        })).await;
        assert_eq!(status, 201, "{raised}");
        let data = &raised["events"][0]["data"];
        (
            data["ticketId"].as_str().unwrap().to_owned(),
            data["number"].as_str().unwrap().to_owned(),
        )
    }
}

async fn start() -> (LedgerProcess, Api) {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let api = Api::admin(&ledger.base_url).await;
    (ledger, api)
}

/// Two servers on one database take turns on one ticket: each keeps the ticket's state warm
/// from its own last command, so each must read what the other appended since before it
/// decides (a server deciding on its kept state alone would lose every race for the stream and
/// answer 503, or decide on a ticket that no longer is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_taking_turns_on_a_ticket_each_see_the_others_commands() {
    let url = fresh_database().await;
    let first = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let a = Api::admin(&first.base_url).await;
    let second = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let b = Api::admin(&second.base_url).await;
    let (customer, technician) = a.customer_and_technician().await;
    let (ticket, _) = a.raise(&customer).await;
    let turns = [
        (
            &a,
            "AssignTechnician",
            json!({ "ticketId": ticket, "technicianId": technician }),
        ),
        (&b, "StartWork", json!({ "ticketId": ticket })),
        (
            &a,
            "ResolveTicket",
            json!({ "ticketId": ticket, "resolution": "Replaced the port" }),
        ),
        (&b, "CloseTicket", json!({ "ticketId": ticket })),
        (
            &a,
            "ReopenTicket",
            json!({ "ticketId": ticket, "reason": "Fails again" }),
        ),
    ];
    for (version, (api, name, body)) in (2..).zip(turns) {
        let (status, answer) = api.command(name, body).await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["version"], version, "{name}: {answer}");
    }
    // What the second server's own last state (closed) would allow, the ticket as it is now
    // (reopened by the first) refuses.
    let (status, answer) = b
        .command(
            "ReopenTicket",
            json!({ "ticketId": ticket, "reason": "Again" }),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    drop((first, second));
}

/// A command refused on a state that may trail the log is decided again on the stream as the
/// log holds it. Here another writer's event reaches the table without its notification, so
/// the server's stream cache cannot know of it (as for a moment after any other process's
/// append): the server, whose own last command left the ticket assigned, must still resolve
/// the ticket that work has started on, not answer that an assigned ticket cannot be resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_confirmed_on_the_log_not_on_a_copy_that_trails_it() {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let api = Api::admin(&ledger.base_url).await;
    let (customer, technician) = api.customer_and_technician().await;
    let (ticket, _) = api.raise(&customer).await;
    let (status, answer) = api
        .command(
            "AssignTechnician",
            json!({ "ticketId": ticket, "technicianId": technician }),
        )
        .await;
    assert_eq!((status, &answer["version"]), (200, &json!(2)), "{answer}");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let inserted = sqlx::query(
        "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                             data, command_id, correlation_id, causation_id, actor_id,
                             actor_role, recorded_at)
         SELECT (SELECT MAX(position) FROM events) + 1, stream_id, 3, gen_random_uuid(),
                'WorkStarted', 1, jsonb_build_object('technicianId', $2::text, 'startedAt', now()),
                gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), actor_id, actor_role,
                now()
         FROM events WHERE stream_id = $1 AND version = 2",
    )
    .bind(format!("ticket-{ticket}"))
    .bind(&technician)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), 1);
    let (status, answer) = api
        .command(
            "ResolveTicket",
            json!({ "ticketId": ticket, "resolution": "Replaced the port" }),
        )
        .await;
    assert_eq!((status, &answer["version"]), (200, &json!(4)), "{answer}");
    drop(ledger);
}

const TICKET_QUERY: &str = "query($n: String!) { ticketByNumber(number: $n) {
    id number status subject customer { name } assignee { name } priority { score level }
    raisedAt assignedAt startedAt resolvedAt closedAt
    history { type version position recordedAt actor { id role } data } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_goes_from_raised_to_closed_and_graphql_shows_it() {
    let (mut ledger, api) = start().await;
    let (customer, technician) = api.customer_and_technician().await;
    let (ticket, number) = api.raise(&customer).await;
    assert!(number.starts_with("TKT-") && number.len() == 19, "{number}");
    // What the read model said after each version, to compare with time travel later.
    let steps = [
        ("", json!(null)),
        (
            "AssignTechnician",
            json!({ "ticketId": ticket, "technicianId": technician }),
        ),
        ("StartWork", json!({ "ticketId": ticket })),
        (
            "ResolveTicket",
            json!({ "ticketId": ticket, "resolution": "Replaced the charging port" }),
        ),
        ("CloseTicket", json!({ "ticketId": ticket })),
    ];
    let mut seen = vec![];
    for (name, body) in steps {
        if !name.is_empty() {
            let (status, answer) = api.command(name, body).await;
            assert_eq!(status, 200, "{name}: {answer}");
            assert_eq!(answer["streamId"], format!("ticket-{ticket}"));
        }
        let version = seen.len() as i64 + 1;
        let row = eventually(Duration::from_secs(10), "the read model at this version", || async {
            let t = api.graphql("query($id: ID!) { ticket(id: $id) { version status balance assignee { id } } }", json!({ "id": ticket })).await;
            let t = t["data"]["ticket"].clone();
            (t["version"] == version).then_some(t)
        }).await;
        seen.push(row);
    }
    for (i, row) in seen.iter().enumerate() {
        let at = api.graphql("query($id: ID!, $v: Int!) { ticket(id: $id) { stateAt(version: $v) { version status balance assigneeId } } }", json!({ "id": ticket, "v": i + 1 })).await;
        let at = &at["data"]["ticket"]["stateAt"];
        assert_eq!(
            (&at["version"], &at["status"], &at["balance"]),
            (&row["version"], &row["status"], &row["balance"]),
            "version {}",
            i + 1
        );
        assert_eq!(at["assigneeId"], row["assignee"]["id"]);
    }
    let before = api.graphql("query($id: ID!) { ticket(id: $id) { stateAt(time: \"2000-01-01T00:00:00Z\") { version } } }", json!({ "id": ticket })).await;
    assert_eq!(before["data"]["ticket"]["stateAt"], Value::Null);
    let both = api
        .graphql(
            "query($id: ID!) { ticket(id: $id) { stateAt { version } } }",
            json!({ "id": ticket }),
        )
        .await;
    assert_eq!(both["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    let shown = eventually(
        Duration::from_secs(10),
        "the closed ticket in GraphQL",
        || async {
            let answer = api.graphql(TICKET_QUERY, json!({ "n": number })).await;
            let t = answer["data"]["ticketByNumber"].clone();
            (t["status"] == "CLOSED").then_some(t)
        },
    )
    .await;
    assert_eq!(shown["id"], ticket.as_str());
    assert_eq!(shown["customer"]["name"], "Ana Souza");
    assert_eq!(shown["assignee"]["name"], "Ravi Kumar");
    assert_eq!(
        shown["priority"]["level"], "P1",
        "critical 5 + enterprise 5 + impact 3 = 13"
    );
    for field in [
        "raisedAt",
        "assignedAt",
        "startedAt",
        "resolvedAt",
        "closedAt",
    ] {
        assert!(shown[field].is_string(), "{field} is set");
    }
    let history = shown["history"].as_array().unwrap();
    let types: Vec<_> = history
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "TicketRaised",
            "TechnicianAssigned",
            "WorkStarted",
            "TicketResolved",
            "TicketClosed"
        ]
    );
    assert_eq!(
        history
            .iter()
            .map(|e| e["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(history[0]["actor"]["role"], "admin");
    assert_eq!(
        history[3]["data"]["resolution"],
        "Replaced the charging port"
    );

    let list = api.graphql("{ tickets(status: CLOSED, first: 10) { totalCount edges { cursor node { number } } pageInfo { hasNextPage } } }", json!({})).await;
    assert_eq!(list["data"]["tickets"]["totalCount"], 1, "{list}");
    assert_eq!(
        list["data"]["tickets"]["edges"][0]["node"]["number"],
        number.as_str()
    );
    let by_assignee = api
        .graphql(
            "query($a: ID!) { tickets(assigneeId: $a) { totalCount } }",
            json!({ "a": technician }),
        )
        .await;
    assert_eq!(by_assignee["data"]["tickets"]["totalCount"], 1);
    let head = api.head().await;
    let audit = eventually(Duration::from_secs(10), "the audit log to catch up", || async {
        let a = api.graphql("{ auditLog(first: 100) { totalCount edges { node { position type streamId actor { role } } } } }", json!({})).await;
        (a["data"]["auditLog"]["totalCount"] == head).then_some(a)
    }).await;
    let positions: Vec<_> = audit["data"]["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());

    // The auditor's replay from the command line, by number, as text and as JSON.
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(args)
            .env("DATABASE_URL", &ledger.database_url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let replay = run(&["replay", &number, "--json"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let doc: Value = serde_json::from_slice(&replay.stdout).unwrap();
    let steps = doc["events"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    assert_eq!(steps[4]["type"], "TicketClosed");
    assert_eq!(steps[4]["stateAfter"]["status"], "closed");
    assert_eq!(steps[1]["stateAfter"]["assignee"], technician.as_str());
    let text = run(&["replay", &number]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("TicketResolved") && text.contains("status=closed"),
        "{text}"
    );
    let missing = run(&["replay", "TKT-20000101-ZZZZZZ"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no ticket numbered"));

    assert_eq!(
        ledger.stop_with(libc::SIGTERM),
        Some(0),
        "a clean exit on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_change_nothing() {
    let (_ledger, api) = start().await;
    let (customer, technician) = api.customer_and_technician().await;
    let (ticket, _) = api.raise(&customer).await;

    // The same Idempotency-Key twice: one append, the same answer.
    let body = json!({ "ticketId": ticket, "technicianId": technician }).to_string();
    let first = api
        .raw(
            "AssignTechnician",
            body.clone(),
            &[("Idempotency-Key", "assign-once")],
        )
        .await;
    let head = api.head().await;
    let second = api
        .raw(
            "AssignTechnician",
            body,
            &[("Idempotency-Key", "assign-once")],
        )
        .await;
    assert_eq!(first.0, 200);
    assert_eq!(first, second, "a repeated command answers the same");
    assert_eq!(api.head().await, head, "and appends nothing");
    let raise = json!({ "customerId": customer, "category": "general", "subject": "s", "description": "d", "severity": "minor", "impact": 1 }).to_string();
    let r1 = api
        .raw(
            "RaiseTicket",
            raise.clone(),
            &[("Idempotency-Key", "6f1d8a52-3f0e-4bd5-9b7e-0a4b8f7d2c11")],
        )
        .await;
    let r2 = api
        .raw(
            "RaiseTicket",
            raise,
            &[("Idempotency-Key", "6f1d8a52-3f0e-4bd5-9b7e-0a4b8f7d2c11")],
        )
        .await;
    assert_eq!(
        (r1.0, &r1.1),
        (201, &r2.1),
        "a repeated raise answers 201 and the same ticket"
    );
    assert_eq!(r2.0, 201);
    // The command id derives from the user and the key (another user's same key is another
    // command), even when the key is a UUID.
    assert_ne!(r1.1["commandId"], "6f1d8a52-3f0e-4bd5-9b7e-0a4b8f7d2c11");
    let head = api.head().await;

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("AssignTechnician", json!({ "ticketId": ticket, "technicianId": technician, "expectedVersion": 1 }).to_string(), 409, "VERSION_CONFLICT"),
        ("StartWork", "{not json".into(), 400, "MALFORMED_REQUEST"),
        ("StartWork", json!({ "ticketId": ticket, "extra": true }).to_string(), 400, "MALFORMED_REQUEST"),
        ("StartWork", json!({ "ticketId": "not-a-uuid" }).to_string(), 400, "MALFORMED_REQUEST"),
        ("StartWork", "".into(), 400, "MALFORMED_REQUEST"),
        ("RegisterCustomer", json!({ "name": "X", "email": "not-an-email" }).to_string(), 400, "INVALID_FIELD"),
        ("RegisterCustomer", json!({ "name": "   ", "email": "x@example.com" }).to_string(), 400, "INVALID_FIELD"),
        ("RaiseTicket", json!({ "customerId": customer, "category": "repair", "subject": "s", "description": "d", "severity": "minor", "impact": 9 }).to_string(), 400, "INVALID_FIELD"),
        ("RaiseTicket", json!({ "customerId": customer, "category": "spaceship", "subject": "s", "description": "d", "severity": "minor", "impact": 1 }).to_string(), 400, "MALFORMED_REQUEST"),
        ("RaiseTicket", json!({ "customerId": technician, "category": "repair", "subject": "s", "description": "d", "severity": "minor", "impact": 1 }).to_string(), 422, "UNKNOWN_CUSTOMER"),
        ("RegisterCustomer", json!({ "name": "Other Ana", "email": "ANA@example.com" }).to_string(), 422, "EMAIL_TAKEN"),
        ("CloseTicket", json!({ "ticketId": ticket }).to_string(), 422, "INVALID_TRANSITION"),
        ("AssignTechnician", json!({ "ticketId": ticket, "technicianId": customer }).to_string(), 422, "UNKNOWN_TECHNICIAN"),
        ("AssignTechnician", json!({ "ticketId": ticket, "technicianId": technician }).to_string(), 422, "ALREADY_ASSIGNED"),
        ("StartWork", json!({ "ticketId": uuid::Uuid::new_v4() }).to_string(), 404, "NOT_FOUND"),
        ("LaunchRocket", "{}".into(), 404, "UNKNOWN_COMMAND"),
        ("StartWork", format!("{{\"ticketId\": \"{ticket}\", \"pad\": \"{}\"}}", "x".repeat(70 * 1024)), 413, "PAYLOAD_TOO_LARGE"),
    ];
    for (name, body, status, code) in cases {
        let (got, answer) = api.raw(name, body, &[]).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{name}: {answer}");
        assert!(answer["error"]["message"].is_string());
    }
    let (got, answer) = api
        .raw(
            "StartWork",
            json!({ "ticketId": ticket }).to_string(),
            &[("X-Correlation-Id", "nope")],
        )
        .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (400, Some("MALFORMED_REQUEST"))
    );
    assert_eq!(
        api.head().await,
        head,
        "no refused command appended anything"
    );

    // An inactive technician gets no new assignment.
    let (status, _) = api
        .command(
            "DeactivateTechnician",
            json!({ "technicianId": technician }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, another) = api
        .command(
            "OnboardTechnician",
            json!({ "name": "Mei", "email": "mei@example.com" }),
        )
        .await;
    assert_eq!(status, 201);
    let mei = another["events"][0]["data"]["technicianId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answer) = api
        .command(
            "AssignTechnician",
            json!({ "ticketId": ticket, "technicianId": mei }),
        )
        .await;
    assert_eq!(status, 200, "reassignment: {answer}");
    assert_eq!(
        answer["events"][0]["data"]["previousTechnicianId"],
        technician.as_str()
    );
    let (status, answer) = api
        .command(
            "AssignTechnician",
            json!({ "ticketId": ticket, "technicianId": technician }),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("TECHNICIAN_INACTIVE"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_documents_itself() {
    let (_ledger, api) = start().await;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for name in [
        "RegisterCustomer",
        "OnboardTechnician",
        "DeactivateTechnician",
        "RaiseTicket",
        "AssignTechnician",
        "StartWork",
        "ResolveTicket",
        "CloseTicket",
    ] {
        assert!(
            doc["paths"][format!("/commands/{name}")]["post"].is_object(),
            "{name} documented"
        );
    }
    let graphiql = http
        .get(format!("{}/graphql", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(graphiql.status(), 200);
    assert!(graphiql
        .text()
        .await
        .unwrap()
        .to_lowercase()
        .contains("graphiql"));
    let bad = api
        .graphql("{ tickets(first: 1000) { totalCount } }", json!({}))
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let bad = api.graphql("{ ticket(id: \"x\") { id } }", json!({})).await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let none = api
        .graphql(
            "{ ticket(id: \"6f1d8a52-3f0e-4bd5-9b7e-0a4b8f7d2c11\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(none["data"]["ticket"], Value::Null);
}
