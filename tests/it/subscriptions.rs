//! Subscriptions are authorised like queries (issue 34, section 2).

use std::time::Duration;

use serde_json::{json, Value};

use crate::e2e::Api;
use crate::graphql::WsClient;
use crate::harness::{fresh_database, LedgerProcess};

async fn ok(api: &Api, name: &str, body: Value) -> Value {
    let (status, answer) = api.command(name, body).await;
    assert!(status == 200 || status == 201, "{name}: {status} {answer}");
    answer["events"][0]["data"].clone()
}

fn id(data: &Value, field: &str) -> String {
    data[field].as_str().expect("id").to_owned()
}

struct World {
    _ledger: LedgerProcess,
    admin: Api,
    ana: Api,
    mei: Api,
    ticket_a: String,
    ticket_b: String,
}

/// Ana's ticket A is Ravi's; Bo's ticket B is Mei's.
async fn world() -> World {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let admin = Api::admin(&ledger.base_url).await;
    let a = id(
        &ok(
            &admin,
            "RegisterCustomer",
            json!({ "name": "Ana", "email": "ana@example.com" }),
        )
        .await,
        "customerId",
    );
    let b = id(
        &ok(
            &admin,
            "RegisterCustomer",
            json!({ "name": "Bo", "email": "bo@example.com" }),
        )
        .await,
        "customerId",
    );
    let ravi = id(
        &ok(
            &admin,
            "OnboardTechnician",
            json!({ "name": "Ravi", "email": "ravi@example.com" }),
        )
        .await,
        "technicianId",
    );
    let mei = id(
        &ok(
            &admin,
            "OnboardTechnician",
            json!({ "name": "Mei", "email": "mei@example.com" }),
        )
        .await,
        "technicianId",
    );
    let raise = |c: &str| json!({ "customerId": c, "category": "repair", "subject": "Secret subject", "description": "d", "severity": "major", "impact": 2 });
    let ticket_a = id(&ok(&admin, "RaiseTicket", raise(&a)).await, "ticketId");
    let ticket_b = id(&ok(&admin, "RaiseTicket", raise(&b)).await, "ticketId");
    ok(
        &admin,
        "AssignTechnician",
        json!({ "ticketId": ticket_a, "technicianId": ravi }),
    )
    .await;
    ok(
        &admin,
        "AssignTechnician",
        json!({ "ticketId": ticket_b, "technicianId": mei }),
    )
    .await;
    let user = |email: &str, role: &str, link: Value| {
        let mut body =
            json!({ "email": email, "name": email, "role": role, "password": "Secret-pass-9" });
        body.as_object_mut()
            .unwrap()
            .extend(link.as_object().unwrap().clone());
        body
    };
    ok(
        &admin,
        "RegisterUser",
        user(
            "ana.user@example.com",
            "customer",
            json!({ "customerId": a }),
        ),
    )
    .await;
    ok(
        &admin,
        "RegisterUser",
        user(
            "mei.user@example.com",
            "technician",
            json!({ "technicianId": mei }),
        ),
    )
    .await;
    let ana = Api::login(&ledger.base_url, "ana.user@example.com", "Secret-pass-9").await;
    let mei = Api::login(&ledger.base_url, "mei.user@example.com", "Secret-pass-9").await;
    World {
        _ledger: ledger,
        admin,
        ana,
        mei,
        ticket_a,
        ticket_b,
    }
}

const TICKET: &str =
    "subscription($id: ID!) { ticketUpdated(id: $id) { subject version notes { text visibility } } }";

/// The first message for subscription `sub`, which must be a refusal naming `code`.
async fn refused(ws: &mut WsClient, sub: &str, code: &str) {
    let message = ws.next(Duration::from_secs(5)).await.expect("an answer");
    assert_eq!(message["id"], sub, "{message}");
    let text = message.to_string();
    assert!(text.contains(code), "{message}");
    assert!(!text.contains("Secret subject"), "{message}");
}

/// Waits until the socket's subscription to `ticket` delivers (a subscription has no
/// acknowledgement: changes made before the server took it are not sent).
async fn active(admin: &Api, ws: &mut WsClient, ticket: &str) {
    for i in 0..20 {
        ok(
            admin,
            "AddNote",
            json!({ "ticketId": ticket, "text": format!("ping {i}"), "visibility": "public" }),
        )
        .await;
        if ws.next(Duration::from_millis(500)).await.is_some() {
            // Drain what else the pings sent.
            while ws.next(Duration::from_millis(300)).await.is_some() {}
            return;
        }
    }
    panic!("the subscription to {ticket} never delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_need_a_session_and_subscriptions_the_right_to_read() {
    let w = world().await;
    // No token: no acknowledgement, and the socket is closed.
    let anonymous = Api::anonymous(&w.admin.base);
    let mut ws = WsClient::open(&anonymous, json!({})).await;
    let first = ws.next(Duration::from_secs(5)).await;
    assert!(
        first.as_ref().is_none_or(|m| m["type"] != "connection_ack"),
        "{first:?}"
    );
    let mut ws = WsClient::open(&anonymous, json!({ "Authorization": "Bearer forged" })).await;
    let first = ws.next(Duration::from_secs(5)).await;
    assert!(
        first.as_ref().is_none_or(|m| m["type"] != "connection_ack"),
        "{first:?}"
    );

    // A technician subscribing to a colleague's ticket, a customer to another's: refused.
    let mut mei = WsClient::connect(&w.mei).await;
    mei.subscribe("x", TICKET, json!({ "id": w.ticket_a }))
        .await;
    refused(&mut mei, "x", "FORBIDDEN").await;
    let mut ana = WsClient::connect(&w.ana).await;
    ana.subscribe("y", TICKET, json!({ "id": w.ticket_b }))
        .await;
    refused(&mut ana, "y", "FORBIDDEN").await;

    // Her own ticket: changes come, internal notes do not.
    ana.subscribe("mine", TICKET, json!({ "id": w.ticket_a }))
        .await;
    mei.subscribe("hers", TICKET, json!({ "id": w.ticket_b }))
        .await;
    active(&w.admin, &mut ana, &w.ticket_a).await;
    active(&w.admin, &mut mei, &w.ticket_b).await;
    ok(
        &w.admin,
        "AddNote",
        json!({ "ticketId": w.ticket_a, "text": "internal remark", "visibility": "internal" }),
    )
    .await;
    ok(
        &w.admin,
        "AddNote",
        json!({ "ticketId": w.ticket_a, "text": "public remark", "visibility": "public" }),
    )
    .await;
    let mut seen = Vec::new();
    while let Some(m) = ana.next(Duration::from_secs(3)).await {
        if m["type"] == "complete" {
            continue;
        }
        assert_eq!(m["id"], "mine", "{m}");
        seen.push(m);
        if seen.last().unwrap().to_string().contains("public remark") {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|m| m.to_string().contains("public remark")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|m| !m.to_string().contains("internal remark")),
        "{seen:?}"
    );

    // Taken off her ticket, a technician gets no further change of it.
    let (status, _) = w.admin.command("AssignTechnician", json!({ "ticketId": w.ticket_b,
        "technicianId": id(&ok(&w.admin, "OnboardTechnician", json!({ "name": "Lu", "email": "lu@example.com" })).await, "technicianId") })).await;
    assert_eq!(status, 200);
    ok(
        &w.admin,
        "AddNote",
        json!({ "ticketId": w.ticket_b, "text": "after reassignment", "visibility": "internal" }),
    )
    .await;
    while let Some(m) = mei.next(Duration::from_secs(2)).await {
        assert!(
            m["type"] == "complete" || !m.to_string().contains("after reassignment"),
            "{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_close_when_the_session_ends_and_are_capped() {
    let w = world().await;
    // Too many subscriptions on one socket.
    let mut ana = WsClient::connect(&w.ana).await;
    let cap = query_graphql::MAX_SUBSCRIPTIONS_PER_CONNECTION;
    for i in 0..cap {
        ana.subscribe(&format!("s{i}"), TICKET, json!({ "id": w.ticket_a }))
            .await;
    }
    ana.subscribe("over", TICKET, json!({ "id": w.ticket_a }))
        .await;
    refused(&mut ana, "over", "TOO_MANY_SUBSCRIPTIONS").await;

    // Too many sockets for one user.
    let mut sockets = Vec::new();
    for _ in 1..query_graphql::MAX_CONNECTIONS_PER_USER {
        sockets.push(WsClient::connect(&w.ana).await);
    }
    let token = format!("Bearer {}", w.ana.token.as_deref().unwrap());
    let mut over = WsClient::open(&w.ana, json!({ "Authorization": token })).await;
    let first = over.next(Duration::from_secs(5)).await;
    assert!(
        first.as_ref().is_none_or(|m| m["type"] != "connection_ack"),
        "{first:?}"
    );
    drop(sockets);

    // Signing out closes the socket within seconds.
    let logout = reqwest::Client::new()
        .post(format!("{}/auth/logout", w.ana.base))
        .bearer_auth(w.ana.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert!(logout.status().is_success(), "{}", logout.status());
    assert!(
        ana.closed_within(Duration::from_secs(10)).await,
        "the socket outlived its session"
    );

    // A deactivated technician's socket too.
    let mut mei = WsClient::connect(&w.mei).await;
    let me: Value = w.mei.get("/auth/me").await.json().await.unwrap();
    let user_id = me["userId"].as_str().expect("userId").to_owned();
    ok(&w.admin, "DeactivateUser", json!({ "userId": user_id })).await;
    assert!(
        mei.closed_within(Duration::from_secs(10)).await,
        "the socket outlived the account"
    );
}
