//! GraphQL for frontends: read-your-writes, live updates over graphql-ws, and limits.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::e2e::Api;
use crate::harness::{fresh_database, LedgerProcess};

async fn start() -> (LedgerProcess, Api) {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    let api = Api::admin(&ledger.base_url).await;
    (ledger, api)
}

async fn graphql_at(api: &Api, position: &str, query: &str, variables: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}/graphql", api.base))
        .bearer_auth(api.token.as_deref().unwrap_or_default())
        .header("X-Ledger-Position", position)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_always_reads_its_own_writes() {
    let (_ledger, api) = start().await;
    let (customer, technician) = api.customer_and_technician().await;
    for _ in 0..20 {
        let (status, raised) = api.command("RaiseTicket", json!({
            "customerId": customer, "category": "general", "subject": "Question", "description": "d", "severity": "minor", "impact": 1
        })).await;
        assert_eq!(status, 201);
        let ticket = raised["events"][0]["data"]["ticketId"]
            .as_str()
            .unwrap()
            .to_owned();
        // Read it twice before the change: the second answer may come from serve's ticket
        // cache, which the assignment below must not outlive.
        let raised_at = raised["position"].as_i64().unwrap().to_string();
        for _ in 0..2 {
            let seen = graphql_at(
                &api,
                &raised_at,
                "query($id: ID!) { ticket(id: $id) { version assignee { id } } }",
                json!({ "id": ticket }),
            )
            .await;
            assert_eq!(seen["data"]["ticket"]["version"], 1, "{seen}");
        }
        let (_, assigned) = api
            .command(
                "AssignTechnician",
                json!({ "ticketId": ticket, "technicianId": technician }),
            )
            .await;
        let position = assigned["position"].as_i64().unwrap().to_string();
        let seen = graphql_at(
            &api,
            &position,
            "query($id: ID!) { ticket(id: $id) { version assignee { id } } }",
            json!({ "id": ticket }),
        )
        .await;
        assert_eq!(seen["data"]["ticket"]["version"], 2, "{seen}");
        assert_eq!(
            seen["data"]["ticket"]["assignee"]["id"],
            technician.as_str()
        );
    }
    let bad = graphql_at(&api, "soon", "{ projectionStatus { lag } }", json!({})).await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let future = graphql_at(&api, "999999999", "{ projectionStatus { lag } }", json!({})).await;
    assert_eq!(
        future["errors"][0]["extensions"]["code"], "NOT_CAUGHT_UP",
        "{future}"
    );
}

/// A graphql-ws client, just enough to subscribe.
pub(crate) struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl WsClient {
    pub(crate) async fn connect(api: &Api) -> WsClient {
        let token = format!("Bearer {}", api.token.as_deref().unwrap_or_default());
        let mut client = WsClient::open(api, json!({ "Authorization": token })).await;
        assert_eq!(
            client.next(Duration::from_secs(5)).await.expect("ack")["type"],
            "connection_ack"
        );
        client
    }

    /// A socket that has sent `connection_init` with `payload` (the answer is not read).
    pub(crate) async fn open(api: &Api, payload: Value) -> WsClient {
        let url = format!("{}/graphql/ws", api.base.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket");
        let mut client = WsClient { socket };
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        client
    }

    /// Whether the server closes the socket within `limit`.
    pub(crate) async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    pub(crate) async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
    }

    pub(crate) async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } })).await;
    }

    /// The next data message, or None when nothing arrives within `limit`.
    pub(crate) async fn next(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??
                .ok()?;
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] != "ping" && value["type"] != "pong" {
                    return Some(value);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_fire_once_per_change_within_a_second() {
    let (_ledger, api) = start().await;
    let (customer, technician) = api.customer_and_technician().await;
    let mut ws = WsClient::connect(&api).await;
    ws.subscribe(
        "q",
        "subscription { queueChanged { totalCount ticketIds } }",
        json!({}),
    )
    .await;
    ws.subscribe(
        "t",
        "subscription($t: ID) { queueChanged(technicianId: $t) { technicianId totalCount } }",
        json!({ "t": technician }),
    )
    .await;
    // Give the subscriptions a moment to register before the change they must see.
    assert!(
        ws.next(Duration::from_millis(300)).await.is_none(),
        "nothing before a change"
    );

    let (_, raised) = api.command("RaiseTicket", json!({
        "customerId": customer, "category": "repair", "subject": "Screen", "description": "d", "severity": "major", "impact": 2
    })).await;
    let ticket = raised["events"][0]["data"]["ticketId"]
        .as_str()
        .unwrap()
        .to_owned();
    let change = ws
        .next(Duration::from_secs(1))
        .await
        .expect("queue change within a second");
    assert_eq!(
        (change["type"].as_str(), change["id"].as_str()),
        (Some("next"), Some("q")),
        "{change}"
    );
    assert_eq!(change["payload"]["data"]["queueChanged"]["totalCount"], 1);
    assert_eq!(
        change["payload"]["data"]["queueChanged"]["ticketIds"][0],
        ticket.as_str()
    );
    assert!(
        ws.next(Duration::from_millis(500)).await.is_none(),
        "exactly once"
    );

    ws.subscribe(
        "u",
        "subscription($id: ID!) { ticketUpdated(id: $id) { version status assignee { id } } }",
        json!({ "id": ticket }),
    )
    .await;
    assert!(ws.next(Duration::from_millis(300)).await.is_none());
    api.command(
        "AssignTechnician",
        json!({ "ticketId": ticket, "technicianId": technician }),
    )
    .await;
    // Leaves the unassigned queue, enters the technician's, and the ticket changed: three
    // messages, one per subscription.
    let mut got = Vec::new();
    while let Some(m) = ws.next(Duration::from_secs(1)).await {
        got.push(m);
        if got.len() == 3 {
            break;
        }
    }
    let by_id = |id: &str| got.iter().filter(|m| m["id"] == id).collect::<Vec<_>>();
    assert_eq!(by_id("q").len(), 1, "{got:?}");
    assert_eq!(
        by_id("q")[0]["payload"]["data"]["queueChanged"]["totalCount"],
        0
    );
    assert_eq!(by_id("t").len(), 1, "{got:?}");
    assert_eq!(
        by_id("t")[0]["payload"]["data"]["queueChanged"]["totalCount"],
        1
    );
    assert_eq!(by_id("u").len(), 1, "{got:?}");
    assert_eq!(
        by_id("u")[0]["payload"]["data"]["ticketUpdated"]["assignee"]["id"],
        technician.as_str()
    );
    assert!(
        ws.next(Duration::from_millis(500)).await.is_none(),
        "exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_are_refused_before_they_run() {
    let (_ledger, api) = start().await;
    // (Introspection is exempt from the depth limit: see hostile.rs for the standard query.)
    let depth_bomb = format!(
        "{{ tickets {{ edges {{ node {{ {} id {} }} }} }} }}",
        "customer { ".repeat(12),
        "} ".repeat(12)
    );
    // Twice each: the second parse comes from the parse cache, and must be refused all the same.
    for _ in 0..2 {
        let answer = api.graphql(&depth_bomb, json!({})).await;
        refused_with(&answer, "nested too deep");
        let answer = api
            .graphql("{ tickets(first: 5) { totalCount }", json!({}))
            .await;
        assert!(answer["data"].is_null(), "{answer}");
        assert!(answer["errors"][0]["message"].is_string(), "{answer}");
    }
    let wide = format!(
        "{{ {} }}",
        (0..60)
            .map(|i| format!(
                "t{i}: tickets(first: 100) {{ edges {{ node {{ id number subject }} }} }}"
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for _ in 0..2 {
        let answer = api.graphql(&wide, json!({})).await;
        refused_with(&answer, "complex");
    }
    let answer = api
        .graphql("{ auditLog(first: 100000) { totalCount } }", json!({}))
        .await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let answer = api
        .graphql("{ tickets(first: -1) { totalCount } }", json!({}))
        .await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let answer = api
        .graphql("{ tickets(after: \"garbage\") { totalCount } }", json!({}))
        .await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    // Still healthy.
    assert!(api.head().await >= 0);
    let fine = api
        .graphql("{ tickets(first: 5) { totalCount } }", json!({}))
        .await;
    assert_eq!(fine["data"]["tickets"]["totalCount"], 0);
}

/// A query refused as a whole (no data), with an error message containing `fragment`.
fn refused_with(answer: &Value, fragment: &str) {
    assert!(answer["data"].is_null(), "{answer}");
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.to_lowercase().contains(fragment), "{answer}");
}
