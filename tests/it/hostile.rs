//! What hostile users tried (issue 34): each test fails without its fix.

use std::time::Duration;

use serde_json::{json, Value};

use crate::e2e::Api;
use crate::harness::{eventually, fresh_database, ledger_command, LedgerProcess};

async fn ok(api: &Api, name: &str, body: Value) -> Value {
    let (status, answer) = api.command(name, body).await;
    assert!(status == 200 || status == 201, "{name}: {status} {answer}");
    answer
}

fn data(answer: &Value, field: &str) -> String {
    answer["events"][0]["data"][field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {answer}"))
        .to_owned()
}

/// A server on a fresh database, its admin, and a customer signed in with a ticket of their own.
struct Shop {
    ledger: LedgerProcess,
    url: String,
    admin: Api,
    customer_id: String,
    ana: Api,
    ticket: String,
}

async fn shop() -> Shop {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let admin = Api::admin(&ledger.base_url).await;
    let customer = ok(
        &admin,
        "RegisterCustomer",
        json!({ "name": "Ana", "email": "ana@example.com" }),
    )
    .await;
    let customer_id = data(&customer, "customerId");
    ok(
        &admin,
        "RegisterUser",
        json!({ "email": "ana.user@example.com", "name": "Ana",
        "role": "customer", "customerId": customer_id, "password": "Secret-pass-9" }),
    )
    .await;
    let ana = Api::login(&ledger.base_url, "ana.user@example.com", "Secret-pass-9").await;
    let raised = ok(
        &ana,
        "RaiseTicket",
        json!({ "customerId": customer_id, "category": "repair",
        "subject": "Broken", "description": "d", "severity": "major", "impact": 2 }),
    )
    .await;
    let ticket = data(&raised, "ticketId");
    Shop {
        ledger,
        url,
        admin,
        customer_id,
        ana,
        ticket,
    }
}

/// Adds a part (`part`: AddPart's body) and takes the shop's ticket to work: assigned,
/// quoted, approved, started. Returns the part's id and the ticket's version.
async fn in_work(s: &Shop, part: Value) -> (String, i64) {
    let part = data(&ok(&s.admin, "AddPart", part).await, "partId");
    let tech = ok(
        &s.admin,
        "OnboardTechnician",
        json!({ "name": "Ravi", "email": "ravi@example.com" }),
    )
    .await;
    let tech = data(&tech, "technicianId");
    ok(
        &s.admin,
        "AssignTechnician",
        json!({ "ticketId": s.ticket, "technicianId": tech }),
    )
    .await;
    ok(
        &s.admin,
        "QuoteRepair",
        json!({ "ticketId": s.ticket, "amount": 500000, "description": "Repair" }),
    )
    .await;
    ok(&s.ana, "ApproveQuote", json!({ "ticketId": s.ticket })).await;
    let started = ok(&s.admin, "StartWork", json!({ "ticketId": s.ticket })).await;
    (part, started["version"].as_i64().unwrap())
}

async fn health(api: &Api) -> Value {
    api.get("/health").await.json().await.expect("health JSON")
}

/// Waits until every projection has applied the whole log.
async fn caught_up(api: &Api) -> Value {
    eventually(Duration::from_secs(30), "projections caught up", || async {
        let h = health(api).await;
        let behind = h["projections"].as_array()?.iter().any(|p| p["lag"] != 0);
        (!behind).then_some(h)
    })
    .await
}

async fn db(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect")
}

/// Appends an event to a stream straight into the log, as an older version of the ledger (or
/// a newer one) could have written it.
async fn append_raw(pool: &sqlx::PgPool, stream: &str, event_type: &str, schema: i32, data: Value) {
    sqlx::query(
        "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                             data, command_id, correlation_id, causation_id, actor_id,
                             actor_role, recorded_at)
         SELECT (SELECT MAX(position) FROM events) + 1, $1,
                (SELECT MAX(version) FROM events WHERE stream_id = $1) + 1, gen_random_uuid(),
                $2, $3, $4::json, gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),
                'admin-user', 'admin', now()",
    )
    .bind(stream)
    .bind(event_type)
    .bind(schema)
    .bind(data.to_string())
    .execute(pool)
    .await
    .expect("raw append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_note_or_payment_id_is_refused_and_the_read_models_keep_following() {
    let s = shop().await;
    let note = json!({ "ticketId": s.ticket, "noteId": "0190f1d2-0000-7000-8000-00000000a11c",
        "text": "Is it ready?", "visibility": "public" });
    ok(&s.ana, "AddNote", note.clone()).await;
    let (status, again) = s.ana.command("AddNote", note.clone()).await;
    assert_eq!(
        (status, &again["error"]["code"]),
        (422, &json!("NOTE_ID_TAKEN")),
        "{again}"
    );

    ok(
        &s.admin,
        "QuoteRepair",
        json!({ "ticketId": s.ticket, "amount": 5000, "description": "Port" }),
    )
    .await;
    ok(&s.ana, "ApproveQuote", json!({ "ticketId": s.ticket })).await;
    let payment = json!({ "ticketId": s.ticket, "paymentId": "0190f1d2-0000-7000-8000-0000000000aa",
        "amount": 1000, "method": "cash" });
    ok(&s.admin, "RecordPayment", payment.clone()).await;
    let (status, again) = s.admin.command("RecordPayment", payment).await;
    assert_eq!(
        (status, &again["error"]["code"]),
        (422, &json!("PAYMENT_ID_TAKEN")),
        "{again}"
    );

    // The same ids on another ticket are that ticket's own.
    let other = ok(
        &s.ana,
        "RaiseTicket",
        json!({ "customerId": s.customer_id, "category": "repair",
        "subject": "Second", "description": "d", "severity": "minor", "impact": 1 }),
    )
    .await;
    let other = data(&other, "ticketId");
    ok(
        &s.ana,
        "AddNote",
        json!({ "ticketId": other, "noteId": "0190f1d2-0000-7000-8000-00000000a11c",
        "text": "Same id, other ticket", "visibility": "public" }),
    )
    .await;
    let h = caught_up(&s.admin).await;
    assert_eq!(h["status"], "ok", "{h}");
    let answer = s
        .ana
        .graphql(
            "query($id: ID!) { ticket(id: $id) { notes { text } paid } }",
            json!({ "id": other }),
        )
        .await;
    assert_eq!(
        answer["data"]["ticket"]["notes"][0]["text"], "Same id, other ticket",
        "{answer}"
    );
}

/// A log written before the domain checked child ids may repeat one, within a ticket and
/// across tickets: it projects and rebuilds as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_repeats_child_ids_projects_and_rebuilds() {
    let s = shop().await;
    let pool = db(&s.url).await;
    let stream = format!("ticket-{}", s.ticket);
    let note = |text: &str| {
        json!({ "noteId": "0190f1d2-0000-7000-8000-00000000d001", "text": text,
        "visibility": "public", "addedAt": "2026-12-01T10:00:00Z" })
    };
    append_raw(&pool, &stream, "NoteAdded", 1, note("first")).await;
    append_raw(&pool, &stream, "NoteAdded", 1, note("second")).await;
    // The notification of a raw insert is not sent: a command makes the projections look.
    ok(
        &s.ana,
        "AddNote",
        json!({ "ticketId": s.ticket, "text": "third", "visibility": "public" }),
    )
    .await;
    let h = caught_up(&s.admin).await;
    assert_eq!(h["status"], "ok", "{h}");
    let notes = "query($id: ID!) { ticket(id: $id) { notes { text } } }";
    let answer = s.admin.graphql(notes, json!({ "id": s.ticket })).await;
    assert_eq!(
        answer["data"]["ticket"]["notes"],
        json!([{ "text": "first" }, { "text": "second" }, { "text": "third" }]),
        "{answer}"
    );
    let rebuilt = ledger_command(&["rebuild", "service_desk"], &s.url);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let answer = s.admin.graphql(notes, json!({ "id": s.ticket })).await;
    assert_eq!(
        answer["data"]["ticket"]["notes"].as_array().map(Vec::len),
        Some(3),
        "{answer}"
    );
}

/// An event the projector cannot apply is set aside after a few attempts; the projection goes
/// on, says it is degraded, and applies the event again when told to once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_set_aside_shown_and_retried() {
    let s = shop().await;
    let pool = db(&s.url).await;
    // An event of a schema version this projector does not know (written by a newer ledger).
    append_raw(
        &pool,
        &format!("ticket-{}", s.ticket),
        "NoteAdded",
        99,
        json!({ "future": true }),
    )
    .await;
    // A statement that fails on one note, as a bug in the projector would.
    sqlx::query(
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.text = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF; RETURN NEW; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER refuse_boom BEFORE INSERT ON ticket_notes FOR EACH ROW EXECUTE FUNCTION refuse_boom()")
        .execute(&pool)
        .await
        .unwrap();
    let other = ok(
        &s.admin,
        "RaiseTicket",
        json!({ "customerId": s.customer_id, "category": "repair",
        "subject": "Other", "description": "d", "severity": "minor", "impact": 1 }),
    )
    .await;
    let other = data(&other, "ticketId");
    ok(
        &s.admin,
        "AddNote",
        json!({ "ticketId": other, "text": "boom", "visibility": "internal" }),
    )
    .await;
    let after = ok(
        &s.admin,
        "AddNote",
        json!({ "ticketId": other, "text": "after", "visibility": "internal" }),
    )
    .await;

    let h = caught_up(&s.admin).await;
    assert_eq!(h["status"], "degraded", "{h}");
    let desk = h["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "service_desk")
        .unwrap()
        .clone();
    assert_eq!(
        (&desk["deadLetters"], &desk["state"]),
        (&json!(2), &json!("degraded")),
        "{h}"
    );
    // Everything after them was applied.
    let notes = "query($id: ID!) { ticket(id: $id) { notes { text } } }";
    let answer = s.admin.graphql(notes, json!({ "id": other })).await;
    assert_eq!(
        answer["data"]["ticket"]["notes"],
        json!([{ "text": "after" }]),
        "{answer}"
    );
    let status = s
        .admin
        .graphql("{ projectionStatus { name deadLetters state } }", json!({}))
        .await;
    assert!(
        status["data"]["projectionStatus"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "service_desk"
                && p["deadLetters"] == 2
                && p["state"] == "DEGRADED"),
        "{status}"
    );
    let listed = ledger_command(&["projections"], &s.url);
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        out.contains("degraded") && out.contains("NoteAdded v99") && out.contains("boom refused"),
        "{out}"
    );

    // The note's statement is fixed; the unknown schema version is not.
    sqlx::query("DROP TRIGGER refuse_boom ON ticket_notes")
        .execute(&pool)
        .await
        .unwrap();
    let retried = ledger_command(&["projections", "retry", "service_desk"], &s.url);
    let out = String::from_utf8_lossy(&retried.stdout);
    assert!(
        !retried.status.success(),
        "the v99 event still fails: {out}"
    );
    assert!(
        out.contains("applied") && out.contains("failed again"),
        "{out}"
    );
    let answer = s.admin.graphql(notes, json!({ "id": other })).await;
    assert_eq!(
        answer["data"]["ticket"]["notes"],
        json!([{ "text": "boom" }, { "text": "after" }]),
        "{answer}"
    );
    let h = health(&s.admin).await;
    let desk = h["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "service_desk")
        .unwrap()
        .clone();
    assert_eq!(desk["deadLetters"], 1, "{h}");
    // The ticket row kept its newest version (the retried event is older than it).
    let rows: i64 = sqlx::query_scalar("SELECT version FROM tickets WHERE ticket_id = $1::uuid")
        .bind(&other)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, after["version"].as_i64().unwrap());
    // A rebuild leaves the dead letter out too, and succeeds.
    let rebuilt = ledger_command(&["rebuild", "service_desk"], &s.url);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    drop(s.ledger);
}

/// An `Idempotency-Key` is its user's: another user's same key is another command, and a key
/// reused for another body is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_belong_to_their_user_and_their_request() {
    let s = shop().await;
    let internal =
        json!({ "ticketId": s.ticket, "text": "Customer is difficult", "visibility": "internal" });
    let key = [("idempotency-key", "shared-key-1")];
    let (status, first) = s.admin.raw("AddNote", internal.to_string(), &key).await;
    assert_eq!(status, 200, "{first}");
    // The customer sends the admin's key: their own command runs, nothing of the admin's comes back.
    let rating = json!({ "ticketId": s.ticket, "text": "Any news?", "visibility": "public" });
    let (status, theirs) = s.ana.raw("AddNote", rating.to_string(), &key).await;
    assert_eq!(status, 200, "{theirs}");
    assert!(!theirs.to_string().contains("difficult"), "{theirs}");
    assert_ne!(theirs["commandId"], first["commandId"]);
    assert_eq!(theirs["events"][0]["data"]["text"], "Any news?");
    // The same request again is answered as before, without a new event.
    let (status, again) = s.admin.raw("AddNote", internal.to_string(), &key).await;
    assert_eq!(
        (status, &again["position"]),
        (200, &first["position"]),
        "{again}"
    );
    // Key order and spacing do not make another request.
    let respaced = format!("{{ \"visibility\":\"internal\", \"text\": \"Customer is difficult\", \"ticketId\": \"{}\" }}", s.ticket);
    let (status, again) = s.admin.raw("AddNote", respaced, &key).await;
    assert_eq!(
        (status, &again["position"]),
        (200, &first["position"]),
        "{again}"
    );
    // The same key with another body, or for another command, is refused and changes nothing.
    let head = s.admin.head().await;
    let other = json!({ "ticketId": s.ticket, "text": "Something else", "visibility": "internal" });
    let (status, refused) = s.admin.raw("AddNote", other.to_string(), &key).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (422, &json!("IDEMPOTENCY_KEY_REUSED")),
        "{refused}"
    );
    let (status, refused) = s
        .admin
        .raw(
            "StartWork",
            json!({ "ticketId": s.ticket }).to_string(),
            &key,
        )
        .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (422, &json!("IDEMPOTENCY_KEY_REUSED")),
        "{refused}"
    );
    assert_eq!(s.admin.head().await, head);
    // A customer's correlation id is theirs: it cannot join another user's correlation.
    let correlation = [("x-correlation-id", "0190f1d2-0000-7000-8000-0000000c0de1")];
    let (_, mine) = s
        .admin
        .raw(
            "AddNote",
            json!({ "ticketId": s.ticket, "text": "a", "visibility": "public" }).to_string(),
            &correlation,
        )
        .await;
    let (_, yours) = s
        .ana
        .raw(
            "AddNote",
            json!({ "ticketId": s.ticket, "text": "b", "visibility": "public" }).to_string(),
            &correlation,
        )
        .await;
    let pool = db(&s.url).await;
    let correlations: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT correlation_id FROM events WHERE position = ANY($1) ORDER BY position",
    )
    .bind(vec![
        mine["position"].as_i64().unwrap(),
        yours["position"].as_i64().unwrap(),
    ])
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_ne!(correlations[0], correlations[1]);

    // A customer counts only the notes they may read, and sees no staff user ids: staff by
    // name and role instead.
    caught_up(&s.admin).await;
    let query =
        "query($id: ID!) { ticket(id: $id) { noteCount notes { text authorId author { name role } } } }";
    let theirs = s.ana.graphql(query, json!({ "id": s.ticket })).await;
    assert_eq!(theirs["data"]["ticket"]["noteCount"], 3, "{theirs}");
    let notes = theirs["data"]["ticket"]["notes"].as_array().unwrap();
    assert!(notes.iter().all(|n| n["authorId"].is_null()), "{theirs}");
    let by = |text: &str| notes.iter().find(|n| n["text"] == text).unwrap()["author"].clone();
    assert_eq!(
        by("a"),
        json!({ "name": "Administrator", "role": "admin" }),
        "{theirs}"
    );
    assert_eq!(
        by("Any news?"),
        json!({ "name": "Ana", "role": "customer" }),
        "{theirs}"
    );
    // Staff see who by name in a ticket's history too.
    let history = s
        .admin
        .graphql(
            "query($id: ID!) { ticket(id: $id) { history { actor { name role } } } }",
            json!({ "id": s.ticket }),
        )
        .await;
    assert_eq!(
        history["data"]["ticket"]["history"][0]["actor"],
        json!({ "name": "Ana", "role": "customer" }),
        "{history}"
    );
    let staff = s.admin.graphql(query, json!({ "id": s.ticket })).await;
    assert_eq!(staff["data"]["ticket"]["noteCount"], 4, "{staff}");
    assert!(
        staff["data"]["ticket"]["notes"][0]["authorId"].is_string(),
        "{staff}"
    );

    // Another password is another request, though the password never enters its id plainly.
    let pw = [("idempotency-key", "password-change-1")];
    let change = |new: &str| json!({ "currentPassword": "Secret-pass-9", "newPassword": new });
    let (status, changed) = s
        .ana
        .raw("ChangePassword", change("New-pass-one-1").to_string(), &pw)
        .await;
    assert_eq!(status, 200, "{changed}");
    // Signed in again with the new password (a change ends earlier sessions).
    let ana = Api::login(&s.ledger.base_url, "ana.user@example.com", "New-pass-one-1").await;
    let (status, refused) = ana
        .raw(
            "ChangePassword",
            change("Other-pass-two-2").to_string(),
            &pw,
        )
        .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (422, &json!("IDEMPOTENCY_KEY_REUSED")),
        "{refused}"
    );
    let (status, again) = ana
        .raw("ChangePassword", change("New-pass-one-1").to_string(), &pw)
        .await;
    assert_eq!((status, &again["position"]), (200, &changed["position"]));
}

/// A command refused on a pinned version claims nothing; a use of parts refused and then
/// retried with the same key takes the stock once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_leave_nothing_half_done() {
    let s = shop().await;
    // A stale pinned version: 409, and the address stays free for anyone.
    let (status, stale) = s
        .ana
        .command(
            "UpdateCustomer",
            json!({ "customerId": s.customer_id,
        "email": "wanted@example.com", "expectedVersion": 7 }),
        )
        .await;
    assert_eq!(status, 409, "{stale}");
    ok(
        &s.admin,
        "RegisterCustomer",
        json!({ "name": "Bo", "email": "wanted@example.com" }),
    )
    .await;
    let (status, serial) = s
        .admin
        .command(
            "RegisterDevice",
            json!({ "customerId": s.customer_id,
        "name": "Phone", "serialNumber": "SN-FREE", "purchaseDate": "2026-01-01",
        "warrantyMonths": 12, "expectedVersion": 3 }),
        )
        .await;
    assert_eq!(status, 409, "{serial}");
    ok(
        &s.admin,
        "RegisterDevice",
        json!({ "customerId": s.customer_id, "name": "Phone",
        "serialNumber": "SN-FREE", "purchaseDate": "2026-01-01", "warrantyMonths": 12 }),
    )
    .await;

    let (part, version) = in_work(
        &s,
        json!({ "name": "Port", "unitCost": 700, "initialStock": 5 }),
    )
    .await;
    // A stale pinned version of the ticket is refused before the stock is touched.
    let body = json!({ "ticketId": s.ticket, "partId": part, "quantity": 3, "expectedVersion": version - 1 });
    let (status, refused) = s
        .admin
        .raw(
            "UsePart",
            body.to_string(),
            &[("idempotency-key", "use-port-1")],
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    let body =
        json!({ "ticketId": s.ticket, "partId": part, "quantity": 3, "expectedVersion": version });
    let (status, used) = s
        .admin
        .raw(
            "UsePart",
            body.to_string(),
            &[("idempotency-key", "use-port-2")],
        )
        .await;
    assert_eq!(status, 200, "{used}");
    let pool = db(&s.url).await;
    let moves: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version")
            .bind(format!("part-{part}"))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(moves, ["PartAdded", "StockUsed"]);
    caught_up(&s.admin).await;
    let stock: i64 = sqlx::query_scalar("SELECT stock FROM parts WHERE part_id = $1::uuid")
        .bind(&part)
        .fetch_one(&pool)
        .await
        .unwrap();
    let used: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0)::bigint FROM ticket_parts WHERE part_id = $1::uuid",
    )
    .bind(&part)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((stock, used), (2, 3));
}

/// The query graphql-js's `getIntrospectionQuery()` sends (GraphiQL, Apollo, code generators).
const INTROSPECTION: &str = r#"
    query IntrospectionQuery {
      __schema {
        queryType { name }
        mutationType { name }
        subscriptionType { name }
        types { ...FullType }
        directives { name description locations args { ...InputValue } }
      }
    }
    fragment FullType on __Type {
      kind name description
      fields(includeDeprecated: true) {
        name description
        args { ...InputValue }
        type { ...TypeRef }
        isDeprecated deprecationReason
      }
      inputFields { ...InputValue }
      interfaces { ...TypeRef }
      enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
      possibleTypes { ...TypeRef }
    }
    fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
    fragment TypeRef on __Type {
      kind name
      ofType { kind name ofType { kind name ofType { kind name ofType { kind name
        ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
    }"#;

/// Every GraphQL request is bounded before it costs memory or CPU, and the standard
/// introspection query is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_requests_are_bounded_before_they_cost_anything() {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let admin = Api::admin(&ledger.base_url).await;
    let anonymous = Api::anonymous(&ledger.base_url);
    let http = reqwest::Client::new();
    let endpoint = format!("{}/graphql", ledger.base_url);

    // A body over the limit is refused, whatever it holds.
    let huge = format!(
        "{{\"query\": \"{{ __typename }}\", \"variables\": {{\"x\": \"{}\"}}}}",
        "a".repeat(300 * 1024)
    );
    let answer = http
        .post(&endpoint)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_client_error(), "{}", answer.status());

    // Nested fragment spreads: 10^20 fields once expanded, refused at once.
    let mut bomb = String::from("query { ...F0 }\n");
    for i in 0..20 {
        let spreads = vec![format!("...F{}", i + 1); 10].join(" ");
        bomb.push_str(&format!("fragment F{i} on QueryRoot {{ {spreads} }}\n"));
    }
    bomb.push_str("fragment F20 on QueryRoot { __typename }\n");
    let answer = anonymous.graphql(&bomb, json!({})).await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "QUERY_TOO_LARGE",
        "{answer}"
    );
    assert!(answer.get("data").is_none_or(Value::is_null), "{answer}");

    // Thousands of aliases of a list query.
    let aliases: String = (0..2_000)
        .map(|i| format!("a{i}: tickets(first: 1) {{ totalCount }} "))
        .collect();
    let answer = admin.graphql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "QUERY_TOO_LARGE",
        "{answer}"
    );
    // Fewer, but each a query of its own: refused by its cost.
    let aliases: String = (0..300)
        .map(|i| format!("a{i}: tickets(first: 1) {{ totalCount }} "))
        .collect();
    let answer = admin.graphql(&format!("{{ {aliases} }}"), json!({})).await;
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("complex"),
        "{answer}"
    );

    // Brackets nested past what the parser is given.
    let nested = format!(
        "{{ tickets(filter: {}) {{ totalCount }} }}",
        "[".repeat(5_000)
    );
    let answer = admin.graphql(&nested, json!({})).await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "QUERY_TOO_LARGE",
        "{answer}"
    );

    // The standard introspection query is answered in full.
    let answer = anonymous.graphql(INTROSPECTION, json!({})).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert!(
        answer["data"]["__schema"]["types"]
            .as_array()
            .is_some_and(|t| t.len() > 20),
        "{answer}"
    );

    // HTML answers (GraphiQL, where users paste tokens) cannot be framed or sniffed, run only
    // the scripts the binary serves, and load nothing from elsewhere.
    let page = anonymous.get("/graphql").await;
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("script-src 'self';") && policy.contains("connect-src 'self';"),
        "{policy}"
    );
    let html = page.text().await.unwrap();
    let linked: Vec<&str> = html
        .split(['"', '\''])
        .filter(|part| part.ends_with(".js") || part.ends_with(".css"))
        .collect();
    assert!(linked.len() >= 5, "{html}");
    for path in linked {
        assert!(
            path.starts_with("/graphiql/"),
            "{path} is fetched from elsewhere"
        );
        let file = anonymous.get(path).await;
        assert_eq!(file.status(), 200, "{path}");
        let kind = file.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            kind.starts_with("text/javascript") || kind.starts_with("text/css"),
            "{path}: {kind}"
        );
        assert!(!file.bytes().await.unwrap().is_empty(), "{path}");
    }
    assert_eq!(anonymous.get("/graphiql/../Cargo.toml").await.status(), 404);

    // Still serving.
    let answer = admin
        .graphql("{ projectionStatus { name } }", json!({}))
        .await;
    assert!(answer["data"]["projectionStatus"].is_array(), "{answer}");
}

/// Guessing passwords is slowed for the guesser (atomically, in every process), not for the
/// owner, and a 429 says when to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_abuse_slows_the_attacker_not_the_owner() {
    let s = shop().await;
    let second = LedgerProcess::start(&[], &[("DATABASE_URL", &s.url)]);
    let http = reqwest::Client::new();
    let attempt = |base: String, email: String, password: &'static str, forwarded: String| {
        let http = http.clone();
        async move {
            let answer = http
                .post(format!("{base}/auth/login"))
                .header("x-forwarded-for", forwarded)
                .json(&json!({ "email": email, "password": password }))
                .send()
                .await
                .unwrap();
            let retry_after = answer.headers().get("retry-after").is_some();
            (answer.status().as_u16(), retry_after)
        }
    };
    // Twenty guesses at once at Ana's password, each claiming another client address (from an
    // untrusted peer the header is ignored), spread over two processes.
    let guesses = (0..20).map(|i| {
        let base = if i % 2 == 0 {
            &s.ledger.base_url
        } else {
            &second.base_url
        };
        attempt(
            base.clone(),
            "ana.user@example.com".into(),
            "wrong-pass-1",
            format!("10.9.8.{i}"),
        )
    });
    let answers = futures::future::join_all(guesses).await;
    let checked = answers.iter().filter(|(status, _)| *status == 401).count();
    assert!(checked <= 5, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(status, retry)| *status == 401 || (*status == 429 && *retry)),
        "{answers:?}"
    );
    // Typos with made-up e-mails from the same address do not lock the admin out.
    for i in 0..10 {
        let (status, _) = attempt(
            s.ledger.base_url.clone(),
            format!("nobody{i}@example.com"),
            "typo",
            String::new(),
        )
        .await;
        assert_eq!(status, 401);
    }
    Api::admin(&s.ledger.base_url).await;
    Api::admin(&second.base_url).await;

    // The current-password check of ChangePassword is slowed the same way.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, _) = s
            .admin
            .command(
                "ChangePassword",
                json!({ "currentPassword": "not-it", "newPassword": "Another-pass-1" }),
            )
            .await;
        statuses.push(status);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
}

/// One `UsePart` request of the random run: its key and body never change between tries.
struct Use {
    key: String,
    body: Value,
}

/// Sends `u` until it gets an answer that is not a dropped connection or a 5xx (a crash, the
/// server away): what a client retrying with the same key does, within a deadline.
async fn until_answered(base: &std::sync::Mutex<String>, token: &str, u: &Use) -> u16 {
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(60), "an answer to UsePart", || async {
        let url = format!("{}/commands/UsePart", base.lock().unwrap());
        let sent = http
            .post(url)
            .bearer_auth(token)
            .header("idempotency-key", &u.key)
            .json(&u.body)
            .send()
            .await
            .ok()?;
        let status = sent.status().as_u16();
        (status < 500).then_some(status)
    })
    .await
}

/// Random interleavings of parts used concurrently, stale pinned versions (refusals), keys
/// repeated with the same body (retries) and with another (refused), and the server killed
/// mid-flight and restarted: in the end the stock taken from the part is exactly the parts
/// recorded on the ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_moves_always_equal_the_parts_on_tickets() {
    use rand::{Rng, SeedableRng};
    let s = shop().await;
    let (part, mut version) = in_work(
        &s,
        json!({ "name": "Screw", "unitCost": 10, "initialStock": 1000 }),
    )
    .await;
    let token = s.admin.token.clone().unwrap();
    let base = std::sync::Arc::new(std::sync::Mutex::new(s.ledger.base_url.clone()));
    let mut ledger = s.ledger;
    let mut rng = rand::rngs::StdRng::seed_from_u64(34);
    let mut sent: Vec<Use> = Vec::new();
    for round in 0..6 {
        // Five at once: new keys, repeats of earlier requests, earlier keys with other bodies,
        // pinned versions right or stale.
        let batch: Vec<Use> = (0..5)
            .map(|i| match rng.gen_range(0..10) {
                0..=1 if !sent.is_empty() => {
                    let earlier = &sent[rng.gen_range(0..sent.len())];
                    Use { key: earlier.key.clone(), body: earlier.body.clone() }
                }
                2 if !sent.is_empty() => {
                    let earlier = &sent[rng.gen_range(0..sent.len())];
                    Use { key: earlier.key.clone(), body: json!({ "ticketId": s.ticket, "partId": part, "quantity": 7 }) }
                }
                3..=4 => Use {
                    key: format!("use-{round}-{i}"),
                    body: json!({ "ticketId": s.ticket, "partId": part, "quantity": rng.gen_range(1..4),
                                  "expectedVersion": version - rng.gen_range(0..2) }),
                },
                _ => Use {
                    key: format!("use-{round}-{i}"),
                    body: json!({ "ticketId": s.ticket, "partId": part, "quantity": rng.gen_range(1..4) }),
                },
            })
            .collect();
        let token = token.clone();
        let tasks: Vec<_> = batch
            .into_iter()
            .map(|u| {
                let (base, token) = (base.clone(), token.clone());
                tokio::spawn(async move {
                    let status = until_answered(&base, &token, &u).await;
                    (u, status)
                })
            })
            .collect();
        if round % 2 == 1 {
            // A crash while the batch is in flight (at a random moment: the pause is what is
            // tested, not a wait), then a new server on the same database.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
            ledger.stop_with(libc::SIGKILL);
            ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &s.url)]);
            *base.lock().unwrap() = ledger.base_url.clone();
        }
        for task in tasks {
            let (u, status) = task.await.unwrap();
            assert!(
                matches!(status, 200 | 409 | 422),
                "{} answered {status}",
                u.key
            );
            sent.push(u);
        }
        let pool = db(&s.url).await;
        version =
            sqlx::query_scalar::<_, i64>("SELECT MAX(version) FROM events WHERE stream_id = $1")
                .bind(format!("ticket-{}", s.ticket))
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
    }
    // One key sent with two bodies at once (another part count): at most one is recorded, and
    // the other's stock take is given back.
    let overlapping: Vec<_> = (0..20)
        .map(|i| {
            let u = Use {
                key: format!("overlap-{}", i / 2),
                body: json!({ "ticketId": s.ticket, "partId": part, "quantity": 1 + i % 2 }),
            };
            let (base, token) = (base.clone(), token.clone());
            tokio::spawn(async move { until_answered(&base, &token, &u).await })
        })
        .collect();
    let mut answered = Vec::new();
    for task in overlapping {
        answered.push(task.await.unwrap());
    }
    assert!(
        answered.iter().all(|s| matches!(s, 200 | 422)),
        "{answered:?}"
    );
    drop(ledger);
    let pool = db(&s.url).await;
    let moved: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(CASE event_type WHEN 'StockUsed' THEN (data->>'quantity')::bigint
                                             WHEN 'StockReturned' THEN -(data->>'quantity')::bigint
                                             ELSE 0 END), 0)::bigint
           FROM events WHERE stream_id = $1",
    )
    .bind(format!("part-{part}"))
    .fetch_one(&pool)
    .await
    .unwrap();
    let recorded: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM((data->>'quantity')::bigint), 0)::bigint FROM events
          WHERE stream_id = $1 AND event_type = 'PartUsed'",
    )
    .bind(format!("ticket-{}", s.ticket))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(recorded > 0, "some parts were used");
    assert_eq!(moved, recorded, "stock taken = parts on the ticket");
}

/// A first start that claimed the first admin and died before registering it: the next start
/// registers the admin, instead of leaving a ledger no one can sign in to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_cut_short_is_completed_by_the_next() {
    let url = fresh_database().await;
    // Migrations only (no bootstrap outside `serve`).
    let migrated = ledger_command(&["projections"], &url);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let pool = db(&url).await;
    sqlx::query(
        "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                             data, command_id, correlation_id, causation_id, actor_id,
                             actor_role, recorded_at)
         VALUES (1, 'ledger-bootstrap', 1, gen_random_uuid(), 'KeyReserved', 1,
                 json_build_object('key', 'first-admin', 'owner', 'user-' || gen_random_uuid(),
                                   'reservedAt', now()),
                 gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'system', 'system',
                 now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    Api::admin(&ledger.base_url).await;
}

/// Idle or slow connections cannot take the server from everyone: past the cap a new connection
/// waits until one closes, and one that does not send a request's head in time is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped() {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let address = ledger.base_url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..ledger::MAX_CONNECTIONS {
        idle.push(
            tokio::net::TcpStream::connect(&address)
                .await
                .expect("connect"),
        );
    }
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let health = format!("{}/health", ledger.base_url);
    assert!(
        impatient.get(&health).send().await.is_err(),
        "answered past the connection cap"
    );
    // The idle ones are still open here, and send nothing: the server closes them.
    let answered = eventually(
        ledger::HEADER_READ_TIMEOUT + Duration::from_secs(20),
        "an answer once the idle connections were closed",
        || async {
            let r = impatient.get(&health).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    assert_eq!(answered, ());
    drop(idle);
    // A request head past its limit is refused before any handler sees it; a large one within
    // it (a long token, cookies) is not.
    let large = "x".repeat(ledger::MAX_HEAD_BYTES / 4);
    let answered = impatient
        .get(&health)
        .header("x-padding", large)
        .send()
        .await;
    assert_eq!(answered.map(|r| r.status().as_u16()).ok(), Some(200));
    let huge = "x".repeat(ledger::MAX_HEAD_BYTES + 1);
    let refused = impatient
        .get(&health)
        .header("x-padding", huge)
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(refused.ok(), Some(431), "a head past the limit");

    // A connection upgraded to a WebSocket keeps its place while the socket is open (its
    // session has 10 s to start: long enough to fill every place).
    let ws = format!("ws://{address}/graphql/ws");
    let mut sockets = Vec::new();
    for _ in 0..ledger::MAX_CONNECTIONS {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = ws.as_str().into_client_request().unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        sockets.push(
            tokio_tungstenite::connect_async(request)
                .await
                .expect("upgrade")
                .0,
        );
    }
    assert!(
        impatient.get(&health).send().await.is_err(),
        "answered past the cap while every place was a WebSocket"
    );
    drop(sockets);
    let answered = eventually(
        Duration::from_secs(20),
        "an answer once the sockets closed",
        || async {
            let r = impatient.get(&health).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    assert_eq!(answered, ());
}

/// Two registrations of one device racing: the refused one gives back no serial that the
/// registered device holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_duplicate_keeps_the_winners_serial() {
    let s = shop().await;
    for i in 0..8 {
        let body = json!({ "deviceId": uuid::Uuid::now_v7(), "customerId": s.customer_id,
            "name": "Phone", "serialNumber": format!("SN-RACE-{i}"), "purchaseDate": "2026-01-01",
            "warrantyMonths": 12 });
        let (a, b) = tokio::join!(
            s.admin.command("RegisterDevice", body.clone()),
            s.admin.command("RegisterDevice", body.clone())
        );
        assert!(
            matches!((a.0, b.0), (201, 422) | (422, 201) | (201, 201)),
            "{a:?} {b:?}"
        );
        let other = json!({ "customerId": s.customer_id, "name": "Other",
            "serialNumber": format!("SN-RACE-{i}"), "purchaseDate": "2026-01-01", "warrantyMonths": 12 });
        let (status, taken) = s.admin.command("RegisterDevice", other).await;
        assert_eq!(
            (status, &taken["error"]["code"]),
            (422, &json!("SERIAL_TAKEN")),
            "{taken}"
        );
    }
}

/// The state of the server's side of the TCP connection from `client_port` to `server_port`
/// (`/proc/net/tcp`: "01" is ESTABLISHED), if the kernel still has one.
fn server_side_state(server_port: u16, client_port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
        (port(local) == Some(server_port) && port(remote) == Some(client_port))
            .then(|| (*state).to_owned())
    })
}

/// A peer that sends requests and reads no answer does not keep its connection: once an
/// answer has waited `WRITE_STALL_TIMEOUT` for it to read, the server closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_reads_nothing_is_let_go() {
    use tokio::io::AsyncWriteExt;
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let address = ledger.base_url.trim_start_matches("http://").to_owned();
    let mut peer = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (server_port, client_port) = (
        peer.peer_addr().unwrap().port(),
        peer.local_addr().unwrap().port(),
    );
    // Forty answers of a megabyte each, far more than the sockets' buffers hold.
    let request = format!("GET /graphiql/graphiql.min.js HTTP/1.1\r\nHost: {address}\r\n\r\n");
    peer.write_all(request.repeat(40).as_bytes()).await.unwrap();
    assert_eq!(
        server_side_state(server_port, client_port).as_deref(),
        Some("01"),
        "connected"
    );
    eventually(
        ledger::WRITE_STALL_TIMEOUT + Duration::from_secs(20),
        "the server to close the connection of a peer that reads nothing",
        || async {
            let state = server_side_state(server_port, client_port);
            (state.as_deref() != Some("01")).then_some(())
        },
    )
    .await;
    drop(peer);
}

/// One key sent at once with two bodies that touch other streams too (two devices for one
/// ticket, two e-mail addresses for one customer): the loser leaves nothing behind, neither a
/// device linked to a ticket it is not the device of nor an e-mail address held for no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_key_leaves_nothing_of_the_losing_body() {
    let s = shop().await;
    let device = |serial: &str| {
        json!({ "customerId": s.customer_id, "name": "Phone", "serialNumber": serial,
            "purchaseDate": "2026-01-01", "warrantyMonths": 12 })
    };
    let a = data(
        &ok(&s.admin, "RegisterDevice", device("SN-KEY-A")).await,
        "deviceId",
    );
    let b = data(
        &ok(&s.admin, "RegisterDevice", device("SN-KEY-B")).await,
        "deviceId",
    );
    let raise = |device: &str| {
        json!({ "customerId": s.customer_id, "deviceId": device, "category": "repair",
            "subject": "Broken", "description": "d", "severity": "major", "impact": 2 })
        .to_string()
    };
    let register = |email: &str| json!({ "name": "Bo", "email": email }).to_string();
    for i in 0..12 {
        let key = format!("two-bodies-{i}");
        let key = [("idempotency-key", key.as_str())];
        let (x, y) = tokio::join!(
            s.admin.raw("RaiseTicket", raise(&a), &key),
            s.admin.raw("RaiseTicket", raise(&b), &key)
        );
        let mut codes = [x.0, y.0];
        codes.sort_unstable();
        assert_eq!(codes, [201, 422], "{x:?} {y:?}");
        let key = format!("two-emails-{i}");
        let key = [("idempotency-key", key.as_str())];
        let (x, y) = tokio::join!(
            s.admin.raw(
                "RegisterCustomer",
                register(&format!("bo{i}.x@example.com")),
                &key
            ),
            s.admin.raw(
                "RegisterCustomer",
                register(&format!("bo{i}.y@example.com")),
                &key
            )
        );
        let mut codes = [x.0, y.0];
        codes.sort_unstable();
        assert_eq!(codes, [201, 422], "{x:?} {y:?}");
        // The losing address is free: another customer registers with it.
        let lost = if x.0 == 422 { "x" } else { "y" };
        ok(
            &s.admin,
            "RegisterCustomer",
            json!({ "name": "Cy", "email": format!("bo{i}.{lost}@example.com") }),
        )
        .await;
    }
    // Every link a device holds names a ticket raised for that device.
    let pool = db(&s.url).await;
    let stray: Vec<(String, String)> = sqlx::query_as(
        "SELECT l.stream_id, l.data->>'ticketId' FROM events l
          WHERE l.event_type = 'TicketLinked'
            AND NOT EXISTS (SELECT 1 FROM events r
                             WHERE r.stream_id = 'ticket-' || (l.data->>'ticketId')
                               AND r.event_type = 'TicketRaised'
                               AND 'device-' || (r.data->>'deviceId') = l.stream_id)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        stray.is_empty(),
        "links to tickets of another device: {stray:?}"
    );
}
