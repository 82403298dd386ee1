//! Identity and roles: every door checks who is asking, and a refusal changes nothing.

use serde_json::{json, Value};

use crate::e2e::Api;
use crate::harness::{fresh_database, LedgerProcess, JWT_SECRET};

struct World {
    _ledger: LedgerProcess,
    admin: Api,
    ana: Api,
    bo: Api,
    ravi: Api,
    mei: Api,
    auditor: Api,
    ticket_a: String,
    number_a: String,
    ticket_b: String,
    number_b: String,
    customer_a: String,
    customer_b: String,
    device_b: String,
    technician_mei: String,
}

async fn ok(api: &Api, name: &str, body: Value) -> Value {
    let (status, answer) = api.command(name, body).await;
    assert!(status == 200 || status == 201, "{name}: {status} {answer}");
    answer["events"][0]["data"].clone()
}

async fn user(admin: &Api, email: &str, role: &str, link: Value) -> Api {
    let mut body =
        json!({ "email": email, "name": email, "role": role, "password": "Secret-pass-9" });
    if let Value::Object(extra) = link {
        body.as_object_mut().unwrap().extend(extra);
    }
    ok(admin, "RegisterUser", body).await;
    Api::login(&admin.base, email, "Secret-pass-9").await
}

async fn world() -> World {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let admin = Api::admin(&ledger.base_url).await;
    let customer_a = ok(
        &admin,
        "RegisterCustomer",
        json!({ "name": "Ana", "email": "ana@example.com" }),
    )
    .await["customerId"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer_b = ok(
        &admin,
        "RegisterCustomer",
        json!({ "name": "Bo", "email": "bo@example.com" }),
    )
    .await["customerId"]
        .as_str()
        .unwrap()
        .to_owned();
    let t1 = ok(
        &admin,
        "OnboardTechnician",
        json!({ "name": "Ravi", "email": "ravi@example.com" }),
    )
    .await["technicianId"]
        .as_str()
        .unwrap()
        .to_owned();
    let t2 = ok(
        &admin,
        "OnboardTechnician",
        json!({ "name": "Mei", "email": "mei@example.com" }),
    )
    .await["technicianId"]
        .as_str()
        .unwrap()
        .to_owned();
    let device_b = ok(&admin, "RegisterDevice", json!({ "customerId": customer_b, "name": "Phone", "serialNumber": "SN-BO", "purchaseDate": "2026-01-01", "warrantyMonths": 12 })).await["deviceId"].as_str().unwrap().to_owned();
    let raise = |customer: &str| json!({ "customerId": customer, "category": "repair", "subject": "Broken", "description": "d", "severity": "major", "impact": 2 });
    let a = ok(&admin, "RaiseTicket", raise(&customer_a)).await;
    let b = ok(&admin, "RaiseTicket", raise(&customer_b)).await;
    let (ticket_a, number_a) = (
        a["ticketId"].as_str().unwrap().to_owned(),
        a["number"].as_str().unwrap().to_owned(),
    );
    let (ticket_b, number_b) = (
        b["ticketId"].as_str().unwrap().to_owned(),
        b["number"].as_str().unwrap().to_owned(),
    );
    ok(
        &admin,
        "AssignTechnician",
        json!({ "ticketId": ticket_a, "technicianId": t1 }),
    )
    .await;
    ok(
        &admin,
        "AssignTechnician",
        json!({ "ticketId": ticket_b, "technicianId": t2 }),
    )
    .await;
    ok(
        &admin,
        "AddNote",
        json!({ "ticketId": ticket_a, "text": "Customer was rude", "visibility": "internal" }),
    )
    .await;
    ok(
        &admin,
        "AddNote",
        json!({ "ticketId": ticket_a, "text": "Parts ordered", "visibility": "public" }),
    )
    .await;
    let ana = user(
        &admin,
        "ana.user@example.com",
        "customer",
        json!({ "customerId": customer_a }),
    )
    .await;
    let bo = user(
        &admin,
        "bo.user@example.com",
        "customer",
        json!({ "customerId": customer_b }),
    )
    .await;
    let ravi = user(
        &admin,
        "ravi.user@example.com",
        "technician",
        json!({ "technicianId": t1 }),
    )
    .await;
    let mei = user(
        &admin,
        "mei.user@example.com",
        "technician",
        json!({ "technicianId": t2 }),
    )
    .await;
    let auditor = user(&admin, "audit@example.com", "auditor", json!({})).await;
    World {
        _ledger: ledger,
        admin,
        ana,
        bo,
        ravi,
        mei,
        auditor,
        ticket_a,
        number_a,
        ticket_b,
        number_b,
        customer_a,
        customer_b,
        device_b,
        technician_mei: t2,
    }
}

/// Every command with a plausible body for the world's objects.
fn every_command(w: &World) -> Vec<(&'static str, Value)> {
    let (tb, ca, cb) = (&w.ticket_b, &w.customer_a, &w.customer_b);
    let some = "6f1d8a52-3f0e-4bd5-9b7e-0a4b8f7d2c11";
    vec![
        (
            "RegisterCustomer",
            json!({ "name": "X", "email": "x@example.com" }),
        ),
        (
            "UpdateCustomer",
            json!({ "customerId": cb, "name": "Changed" }),
        ),
        (
            "ChangeCustomerTier",
            json!({ "customerId": ca, "tier": "enterprise" }),
        ),
        (
            "OnboardTechnician",
            json!({ "name": "X", "email": "xt@example.com" }),
        ),
        (
            "DeactivateTechnician",
            json!({ "technicianId": w.technician_mei }),
        ),
        (
            "RegisterDevice",
            json!({ "customerId": cb, "name": "X", "serialNumber": "SN-X", "purchaseDate": "2026-01-01", "warrantyMonths": 1 }),
        ),
        (
            "ExtendWarranty",
            json!({ "deviceId": w.device_b, "months": 1 }),
        ),
        (
            "CheckInDevice",
            json!({ "deviceId": w.device_b, "condition": "ok", "reportedIssue": "x", "expectedDeliveryDate": "2099-01-01" }),
        ),
        ("MarkReadyForDelivery", json!({ "deviceId": w.device_b })),
        ("DeliverDevice", json!({ "deviceId": w.device_b })),
        ("CloseDevice", json!({ "deviceId": w.device_b })),
        (
            "RescheduleDelivery",
            json!({ "deviceId": w.device_b, "expectedDeliveryDate": "2099-01-01" }),
        ),
        (
            "RaiseTicket",
            json!({ "customerId": cb, "category": "general", "subject": "s", "description": "d", "severity": "minor", "impact": 1 }),
        ),
        (
            "AssignTechnician",
            json!({ "ticketId": tb, "technicianId": w.technician_mei }),
        ),
        ("StartWork", json!({ "ticketId": tb })),
        (
            "AddNote",
            json!({ "ticketId": tb, "text": "x", "visibility": "internal" }),
        ),
        (
            "QuoteRepair",
            json!({ "ticketId": tb, "amount": 100, "description": "x" }),
        ),
        ("ApproveQuote", json!({ "ticketId": tb })),
        ("RejectQuote", json!({ "ticketId": tb })),
        (
            "UsePart",
            json!({ "ticketId": tb, "partId": some, "quantity": 1 }),
        ),
        (
            "CompleteRepair",
            json!({ "ticketId": tb, "finalCost": 0, "summary": "x" }),
        ),
        (
            "ResolveTicket",
            json!({ "ticketId": tb, "resolution": "x" }),
        ),
        ("CloseTicket", json!({ "ticketId": tb })),
        ("CancelTicket", json!({ "ticketId": tb, "reason": "x" })),
        ("ReopenTicket", json!({ "ticketId": tb, "reason": "x" })),
        (
            "RecordPayment",
            json!({ "ticketId": tb, "amount": 1, "method": "cash" }),
        ),
        ("ClaimWarranty", json!({ "ticketId": tb })),
        ("ApproveWarrantyClaim", json!({ "ticketId": tb })),
        (
            "RejectWarrantyClaim",
            json!({ "ticketId": tb, "reason": "x" }),
        ),
        ("SubmitFeedback", json!({ "ticketId": tb, "rating": 5 })),
        ("AddPart", json!({ "name": "X", "unitCost": 1 })),
        ("ReceiveStock", json!({ "partId": some, "quantity": 1 })),
        (
            "AdjustStock",
            json!({ "partId": some, "delta": 1, "reason": "x" }),
        ),
        (
            "RegisterUser",
            json!({ "email": "new@example.com", "name": "N", "role": "admin", "password": "Secret-pass-9" }),
        ),
        ("ChangeUserRole", json!({ "userId": some, "role": "admin" })),
        ("DeactivateUser", json!({ "userId": some })),
        (
            "ChangePassword",
            json!({ "userId": some, "newPassword": "Other-pass-9" }),
        ),
    ]
}

async fn forbidden(api: &Api, admin: &Api, name: &str, body: Value) {
    let head = admin.head().await;
    let (status, answer) = api.command(name, body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{name}: {answer}"
    );
    assert_eq!(admin.head().await, head, "{name} was refused but wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_what_it_may_not_do_and_nothing_changes() {
    let w = world().await;
    // Auditors change nothing at all; customers and technicians nothing of Bo's ticket (Mei's).
    for (name, body) in every_command(&w) {
        forbidden(&w.auditor, &w.admin, name, body.clone()).await;
        forbidden(&w.ana, &w.admin, name, body.clone()).await;
        forbidden(&w.ravi, &w.admin, name, body).await;
    }
    // Technicians only work on their own tickets; customers only decide on theirs.
    forbidden(
        &w.ravi,
        &w.admin,
        "ApproveQuote",
        json!({ "ticketId": w.ticket_a }),
    )
    .await;
    forbidden(
        &w.ana,
        &w.admin,
        "StartWork",
        json!({ "ticketId": w.ticket_a }),
    )
    .await;
    forbidden(
        &w.ana,
        &w.admin,
        "AddNote",
        json!({ "ticketId": w.ticket_a, "text": "x", "visibility": "internal" }),
    )
    .await;

    // What each may do, with the actor recorded on the event.
    let (status, raised) = w.ana.command("RaiseTicket", json!({ "customerId": w.customer_a, "category": "general", "subject": "Mine", "description": "d", "severity": "minor", "impact": 1 })).await;
    assert_eq!(status, 201, "{raised}");
    ok(&w.ravi, "StartWork", json!({ "ticketId": w.ticket_a })).await;
    ok(
        &w.ravi,
        "QuoteRepair",
        json!({ "ticketId": w.ticket_a, "amount": 5000, "description": "Screen" }),
    )
    .await;
    ok(&w.ana, "ApproveQuote", json!({ "ticketId": w.ticket_a })).await;
    ok(
        &w.ana,
        "AddNote",
        json!({ "ticketId": w.ticket_a, "text": "Thanks!" }),
    )
    .await;
    ok(&w.mei, "StartWork", json!({ "ticketId": w.ticket_b })).await;
    let me: Value = w.ana.get("/auth/me").await.json().await.unwrap();
    let history = w
        .admin
        .graphql(
            "query($id: ID!) { ticket(id: $id) { history { type actor { id role } } } }",
            json!({ "id": w.ticket_a }),
        )
        .await;
    let approved = history["data"]["ticket"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "QuoteApproved")
        .unwrap()
        .clone();
    assert_eq!(
        approved["actor"],
        json!({ "id": me["userId"], "role": "customer" })
    );
    let _ = &w.bo;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_reads_only_their_own_tickets_by_any_door() {
    let w = world().await;
    let code = |v: &Value| {
        v["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_owned)
    };
    let by_id = w
        .ana
        .graphql(
            "query($id: ID!) { ticket(id: $id) { subject } }",
            json!({ "id": w.ticket_b }),
        )
        .await;
    assert_eq!(code(&by_id).as_deref(), Some("FORBIDDEN"), "{by_id}");
    let by_number = w
        .ana
        .graphql(
            "query($n: String!) { ticketByNumber(number: $n) { subject } }",
            json!({ "n": w.number_b }),
        )
        .await;
    assert_eq!(code(&by_number).as_deref(), Some("FORBIDDEN"));
    let list = w
        .ana
        .graphql(
            "{ tickets(first: 100) { totalCount edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(list["data"]["tickets"]["totalCount"], 1, "{list}");
    assert_eq!(
        list["data"]["tickets"]["edges"][0]["node"]["id"],
        w.ticket_a.as_str()
    );
    let searched = w
        .ana
        .graphql(
            "query($s: String!) { tickets(filter: { search: $s }) { totalCount } }",
            json!({ "s": w.number_b }),
        )
        .await;
    assert_eq!(searched["data"]["tickets"]["totalCount"], 0);
    let history = w
        .ana
        .graphql(
            "query($id: ID!) { ticket(id: $id) { history { type } } }",
            json!({ "id": w.ticket_b }),
        )
        .await;
    assert_eq!(code(&history).as_deref(), Some("FORBIDDEN"));
    let own = w
        .ana
        .graphql(
            "query($id: ID!) { ticket(id: $id) { notes { text visibility } } }",
            json!({ "id": w.ticket_a }),
        )
        .await;
    let notes = own["data"]["ticket"]["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "internal notes are staff-only: {own}");
    assert_eq!(notes[0]["visibility"], "PUBLIC");
    let device = w
        .ana
        .graphql(
            "query($id: ID!) { device(id: $id) { serialNumber } }",
            json!({ "id": w.device_b }),
        )
        .await;
    assert_eq!(code(&device).as_deref(), Some("FORBIDDEN"));
    let devices = w.ana.graphql("{ devices { totalCount } }", json!({})).await;
    assert_eq!(devices["data"]["devices"]["totalCount"], 0);
    for overview in [
        "{ auditLog { totalCount } }",
        "{ kpis { openTickets } }",
        "{ projectionStatus { lag } }",
        "{ ticketQueue { totalCount } }",
    ] {
        let answer = w.ana.graphql(overview, json!({})).await;
        assert_eq!(
            code(&answer).as_deref(),
            Some("FORBIDDEN"),
            "{overview}: {answer}"
        );
    }
    assert_eq!(w.ana.get("/reports/kpis.csv").await.status(), 403);
    // Technicians: their own tickets and the unassigned queue, not a colleague's.
    let other = w
        .ravi
        .graphql(
            "query($id: ID!) { ticket(id: $id) { subject } }",
            json!({ "id": w.ticket_b }),
        )
        .await;
    assert_eq!(code(&other).as_deref(), Some("FORBIDDEN"));
    let queue = w
        .ravi
        .graphql(
            "query($t: ID!) { ticketQueue(technicianId: $t) { totalCount } }",
            json!({ "t": w.technician_mei }),
        )
        .await;
    assert_eq!(code(&queue).as_deref(), Some("FORBIDDEN"));
    // Auditors read everything, history and audit log included.
    let audit = w.auditor.graphql("query($id: ID!) { auditLog { totalCount } ticket(id: $id) { history { type } } kpis { openTickets } }", json!({ "id": w.ticket_b })).await;
    assert!(audit["errors"].is_null(), "{audit}");
    let hashes = w
        .auditor
        .graphql(
            "{ auditLog(filter: { type: \"UserRegistered\" }) { edges { node { data } } } }",
            json!({}),
        )
        .await;
    for e in hashes["data"]["auditLog"]["edges"].as_array().unwrap() {
        assert_eq!(e["node"]["data"]["passwordHash"], "[redacted]");
    }
    let _ = (&w.number_a, &w.bo, &w.customer_b, &w.mei);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_end_and_are_checked() {
    let w = world().await;
    let anonymous = Api::anonymous(&w.admin.base);
    let (status, answer) = anonymous
        .command("AddPart", json!({ "name": "X", "unitCost": 1 }))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let answer = anonymous
        .graphql("{ tickets { totalCount } }", json!({}))
        .await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let mut garbage = Api::anonymous(&w.admin.base);
    garbage.token = Some("not-a-token".into());
    assert_eq!(
        garbage
            .command("AddPart", json!({ "name": "X", "unitCost": 1 }))
            .await
            .0,
        401
    );

    // An expired token, properly signed.
    let me: Value = w.ana.get("/auth/me").await.json().await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "sub": me["userId"], "sid": uuid::Uuid::new_v4(), "role": "customer", "iat": now - 7200, "exp": now - 3600, "iat_ms": (now + 10) * 1000 });
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let mut old = Api::anonymous(&w.admin.base);
    old.token = Some(expired);
    assert_eq!(old.command("RaiseTicket", json!({})).await.0, 401);

    // Refresh, then logout ends the session.
    let renewed: Value = reqwest::Client::new()
        .post(format!("{}/auth/refresh", w.ana.base))
        .bearer_auth(w.ana.token.clone().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(renewed["accessToken"].is_string());
    let logout = reqwest::Client::new()
        .post(format!("{}/auth/logout", w.ana.base))
        .bearer_auth(w.ana.token.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_eq!(w.ana.get("/auth/me").await.status(), 401);

    // A deactivated account's tokens stop working at once.
    ok(
        &w.admin,
        "DeactivateUser",
        json!({ "userId": me["userId"] }),
    )
    .await;
    let mut renewed_api = Api::anonymous(&w.admin.base);
    renewed_api.token = renewed["accessToken"].as_str().map(str::to_owned);
    assert_eq!(renewed_api.get("/auth/me").await.status(), 401);
    let _ = (&w.bo, &w.ravi);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_passwords_must_change_and_failures_are_throttled() {
    let w = world().await;
    let (status, weak) = w.admin.command("RegisterUser", json!({ "email": "weak@example.com", "name": "W", "role": "auditor", "password": "password123" })).await;
    assert_eq!(
        (status, weak["error"]["code"].as_str()),
        (422, Some("WEAK_PASSWORD"))
    );
    let registered = ok(&w.admin, "RegisterUser", json!({ "email": "temp@example.com", "name": "T", "role": "admin", "password": "Temp-pass-1", "mustChangePassword": true })).await;
    assert_eq!(
        registered["passwordHash"], "[redacted]",
        "no password hash in a command's answer"
    );
    let temp = Api::login(&w.admin.base, "temp@example.com", "Temp-pass-1").await;
    let (status, answer) = temp
        .command("AddPart", json!({ "name": "X", "unitCost": 1 }))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("PASSWORD_CHANGE_REQUIRED"))
    );
    let (status, _) = temp
        .command(
            "ChangePassword",
            json!({ "currentPassword": "wrong", "newPassword": "New-pass-22" }),
        )
        .await;
    assert_eq!(status, 401);
    let changed = ok(
        &temp,
        "ChangePassword",
        json!({ "currentPassword": "Temp-pass-1", "newPassword": "New-pass-22" }),
    )
    .await;
    assert_eq!(changed["passwordHash"], "[redacted]");
    assert_eq!(
        temp.get("/auth/me").await.status(),
        401,
        "tokens from before the change are void"
    );
    let fresh = Api::login(&w.admin.base, "temp@example.com", "New-pass-22").await;
    ok(&fresh, "AddPart", json!({ "name": "X", "unitCost": 1 })).await;

    let http = reqwest::Client::new();
    let attempt = |password: &'static str| {
        let http = http.clone();
        let url = format!("{}/auth/login", w.admin.base);
        async move {
            http.post(url)
                .json(&json!({ "email": "temp@example.com", "password": password }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..5 {
        assert_eq!(attempt("wrong-pass-1").await, 401);
    }
    assert_eq!(
        attempt("New-pass-22").await,
        429,
        "locked after five failures, even with the right password"
    );
    let _ = (&w.ana, &w.bo, &w.ravi, &w.mei, &w.auditor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_data_comes_with_demo_accounts_that_sign_in() {
    let url = fresh_database().await;
    let seed = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["seed", "--demo"])
            .env("DATABASE_URL", &url)
            .env("LEDGER_ADMIN_PASSWORD", crate::harness::ADMIN_PASSWORD)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = seed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let account = |role: &str| -> (String, String) {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(role))
            .unwrap_or_else(|| panic!("{role} in {text}"));
        let parts: Vec<_> = line.split_whitespace().collect();
        (parts[1].to_owned(), parts[2].to_owned())
    };
    let again = seed();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already loaded"));
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let (email, password) = account("customer");
    let customer = Api::login(&ledger.base_url, &email, &password).await;
    let mine = customer
        .graphql("{ tickets { totalCount } }", json!({}))
        .await;
    assert_eq!(mine["data"]["tickets"]["totalCount"], 2, "{mine}");
    let (email, password) = account("auditor");
    let auditor = Api::login(&ledger.base_url, &email, &password).await;
    let all = auditor
        .graphql("{ tickets { totalCount } }", json!({}))
        .await;
    assert_eq!(all["data"]["tickets"]["totalCount"], 4);
    let (email, password) = account("technician");
    let technician = Api::login(&ledger.base_url, &email, &password).await;
    let queue = technician
        .graphql("{ ticketQueue { totalCount } }", json!({}))
        .await;
    assert_eq!(
        queue["data"]["ticketQueue"]["totalCount"], 2,
        "the unassigned queue: {queue}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_lock_themselves_out() {
    let w = world().await;
    let me: Value = w.admin.get("/auth/me").await.json().await.unwrap();
    forbidden(
        &w.admin,
        &w.admin,
        "ChangeUserRole",
        json!({ "userId": me["userId"], "role": "auditor" }),
    )
    .await;
    forbidden(
        &w.admin,
        &w.admin,
        "DeactivateUser",
        json!({ "userId": me["userId"] }),
    )
    .await;
    let _ = (&w.ana, &w.bo, &w.ravi, &w.mei, &w.auditor);
}
