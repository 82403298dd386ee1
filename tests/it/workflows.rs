//! Whole service-center workflows over HTTP, as a front desk drives them, and the uniqueness
//! and stock rules under concurrent requests.

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use stream_store::{read_full_stream, EventStore, PgEventStore, StreamId};

use crate::e2e::Api;
use crate::harness::{fresh_database, LedgerProcess};

struct Desk {
    api: Api,
    url: String,
    _ledger: LedgerProcess,
}

async fn desk() -> Desk {
    let url = fresh_database().await;
    let ledger = LedgerProcess::start(&[], &[("DATABASE_URL", &url)]);
    Desk {
        api: Api::admin(&ledger.base_url).await,
        url,
        _ledger: ledger,
    }
}

impl Desk {
    /// Sends a command that must succeed; returns the first event's data.
    async fn ok(&self, name: &str, body: Value) -> Value {
        let (status, answer) = self.api.command(name, body).await;
        assert!(status == 200 || status == 201, "{name}: {status} {answer}");
        answer["events"][0]["data"].clone()
    }

    /// Sends a command that must be refused with 422 `code`, and checks it wrote nothing.
    async fn refused(&self, name: &str, body: Value, code: &str) {
        let head = self.api.head().await;
        let (status, answer) = self.api.command(name, body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some(code)),
            "{name}: {answer}"
        );
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(self.api.head().await, head, "{name} refused but wrote");
    }

    async fn id(&self, name: &str, body: Value, field: &str) -> String {
        self.ok(name, body).await[field]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn date(days_from_today: i64) -> String {
    (Utc::now().date_naive() + Duration::days(days_from_today)).to_string()
}

/// Customer, technician, a device bought `age_days` ago with a `months` warranty, checked in.
async fn front_desk(
    d: &Desk,
    age_days: i64,
    months: i64,
    serial: &str,
) -> (String, String, String) {
    let customer = d.id("RegisterCustomer", json!({ "name": "Ana Souza", "email": format!("ana-{serial}@example.com"), "phone": "+55 11 91234-5678", "tier": "paid" }), "customerId").await;
    let technician = d
        .id(
            "OnboardTechnician",
            json!({ "name": "Ravi Kumar", "email": format!("ravi-{serial}@example.com") }),
            "technicianId",
        )
        .await;
    let device = d.id("RegisterDevice", json!({
        "customerId": customer, "name": "ThinkPad X1", "brand": "Lenovo", "model": "X1 Carbon",
        "serialNumber": serial, "category": "laptop", "purchaseDate": date(-age_days), "warrantyMonths": months, "invoiceRef": "INV-1"
    }), "deviceId").await;
    d.ok("CheckInDevice", json!({
        "deviceId": device, "condition": "Scratched lid", "accessories": ["Charger"], "reportedIssue": "Does not power on",
        "expectedDeliveryDate": date(3), "expectedBudget": 20000, "technicianId": technician
    })).await;
    (customer, technician, device)
}

async fn raise_and_start(d: &Desk, customer: &str, technician: &str, device: &str) -> String {
    let raised = d.ok("RaiseTicket", json!({
        "customerId": customer, "deviceId": device, "category": "repair", "subject": "No power",
        "description": "Dead after a storm", "severity": "major", "impact": 2
    })).await;
    assert!(raised["number"].as_str().unwrap().starts_with("TKT-"));
    assert_eq!(raised["deviceId"], device);
    let ticket = raised["ticketId"].as_str().unwrap().to_owned();
    d.ok(
        "AssignTechnician",
        json!({ "ticketId": ticket, "technicianId": technician }),
    )
    .await;
    d.ok("StartWork", json!({ "ticketId": ticket })).await;
    ticket
}

async fn part(d: &Desk, stock: i64) -> String {
    d.id(
        "AddPart",
        json!({ "name": "Power board", "sku": "PB-1", "unitCost": 4500, "initialStock": stock }),
        "partId",
    )
    .await
}

async fn finish(d: &Desk, ticket: &str, device: &str) {
    d.ok(
        "ResolveTicket",
        json!({ "ticketId": ticket, "resolution": "Replaced the power board" }),
    )
    .await;
    d.ok("CloseTicket", json!({ "ticketId": ticket })).await;
    d.ok("MarkReadyForDelivery", json!({ "deviceId": device }))
        .await;
    d.ok("DeliverDevice", json!({ "deviceId": device })).await;
    d.ok("CloseDevice", json!({ "deviceId": device })).await;
    let feedback = d
        .ok(
            "SubmitFeedback",
            json!({ "ticketId": ticket, "rating": 5, "comment": "Fast and friendly" }),
        )
        .await;
    assert_eq!(feedback["rating"], 5);
    d.refused(
        "SubmitFeedback",
        json!({ "ticketId": ticket, "rating": 4 }),
        "FEEDBACK_ALREADY_GIVEN",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_under_warranty_runs_from_check_in_to_feedback() {
    let d = desk().await;
    let (customer, technician, device) = front_desk(&d, 100, 12, "SN-WARRANTY").await;
    let ticket = raise_and_start(&d, &customer, &technician, &device).await;
    let part = part(&d, 5).await;
    d.ok(
        "AddNote",
        json!({ "ticketId": ticket, "text": "Board burnt", "visibility": "internal" }),
    )
    .await;
    d.ok(
        "QuoteRepair",
        json!({ "ticketId": ticket, "amount": 15000, "description": "Power board and labour" }),
    )
    .await;
    d.ok("ApproveQuote", json!({ "ticketId": ticket })).await;
    let used = d
        .ok(
            "UsePart",
            json!({ "ticketId": ticket, "partId": part, "quantity": 2 }),
        )
        .await;
    assert_eq!(
        (used["quantity"].as_i64(), used["unitCost"].as_i64()),
        (Some(2), Some(4500))
    );
    d.ok(
        "CompleteRepair",
        json!({ "ticketId": ticket, "finalCost": 15000, "summary": "Board replaced" }),
    )
    .await;
    d.ok(
        "ClaimWarranty",
        json!({ "ticketId": ticket, "reason": "Within 12 months" }),
    )
    .await;
    // The warranty covers the repair but not a 2000 service fee.
    d.ok(
        "ApproveWarrantyClaim",
        json!({ "ticketId": ticket, "coveredAmount": 13000 }),
    )
    .await;
    d.refused(
        "RecordPayment",
        json!({ "ticketId": ticket, "amount": 2001, "method": "card" }),
        "OVERPAYMENT",
    )
    .await;
    d.refused(
        "CloseDevice",
        json!({ "deviceId": device }),
        "INVALID_TRANSITION",
    )
    .await;
    let paid = d
        .ok(
            "RecordPayment",
            json!({ "ticketId": ticket, "amount": 2000, "method": "card" }),
        )
        .await;
    assert_eq!(paid["amount"], 2000);
    finish(&d, &ticket, &device).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_with_an_expired_warranty_is_paid_in_full() {
    let d = desk().await;
    let (customer, technician, device) = front_desk(&d, 3 * 365, 12, "SN-EXPIRED").await;
    let ticket = raise_and_start(&d, &customer, &technician, &device).await;
    let part = part(&d, 5).await;
    d.ok(
        "QuoteRepair",
        json!({ "ticketId": ticket, "amount": 15000, "description": "Power board and labour" }),
    )
    .await;
    d.ok("ApproveQuote", json!({ "ticketId": ticket })).await;
    d.ok(
        "UsePart",
        json!({ "ticketId": ticket, "partId": part, "quantity": 1 }),
    )
    .await;
    d.ok(
        "CompleteRepair",
        json!({ "ticketId": ticket, "finalCost": 15000, "summary": "Board replaced" }),
    )
    .await;
    d.refused(
        "ClaimWarranty",
        json!({ "ticketId": ticket }),
        "WARRANTY_EXPIRED",
    )
    .await;
    d.ok(
        "ResolveTicket",
        json!({ "ticketId": ticket, "resolution": "Replaced the power board" }),
    )
    .await;
    d.refused(
        "CloseTicket",
        json!({ "ticketId": ticket }),
        "BALANCE_OUTSTANDING",
    )
    .await;
    d.ok("MarkReadyForDelivery", json!({ "deviceId": device }))
        .await;
    d.ok("DeliverDevice", json!({ "deviceId": device })).await;
    d.refused(
        "CloseDevice",
        json!({ "deviceId": device }),
        "BILL_NOT_SETTLED",
    )
    .await;
    d.ok(
        "RecordPayment",
        json!({ "ticketId": ticket, "amount": 10000, "method": "cash" }),
    )
    .await;
    d.refused(
        "RecordPayment",
        json!({ "ticketId": ticket, "amount": 5001, "method": "cash" }),
        "OVERPAYMENT",
    )
    .await;
    d.refused(
        "CloseDevice",
        json!({ "deviceId": device }),
        "BILL_NOT_SETTLED",
    )
    .await;
    d.ok(
        "RecordPayment",
        json!({ "ticketId": ticket, "amount": 5000, "method": "upi" }),
    )
    .await;
    d.ok("CloseTicket", json!({ "ticketId": ticket })).await;
    d.ok("CloseDevice", json!({ "deviceId": device })).await;
    d.ok("SubmitFeedback", json!({ "ticketId": ticket, "rating": 4 }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_quote_stops_billable_work() {
    let d = desk().await;
    let (customer, technician, device) = front_desk(&d, 30, 0, "SN-REJECTED").await;
    let ticket = raise_and_start(&d, &customer, &technician, &device).await;
    let part = part(&d, 5).await;
    d.ok(
        "QuoteRepair",
        json!({ "ticketId": ticket, "amount": 90000, "description": "New mainboard" }),
    )
    .await;
    d.refused(
        "UsePart",
        json!({ "ticketId": ticket, "partId": part, "quantity": 1 }),
        "QUOTE_NOT_APPROVED",
    )
    .await;
    d.ok(
        "RejectQuote",
        json!({ "ticketId": ticket, "reason": "Too expensive" }),
    )
    .await;
    d.refused(
        "UsePart",
        json!({ "ticketId": ticket, "partId": part, "quantity": 1 }),
        "QUOTE_NOT_APPROVED",
    )
    .await;
    d.refused(
        "CompleteRepair",
        json!({ "ticketId": ticket, "finalCost": 100, "summary": "x" }),
        "QUOTE_NOT_APPROVED",
    )
    .await;
    d.ok(
        "CompleteRepair",
        json!({ "ticketId": ticket, "finalCost": 0, "summary": "Returned unrepaired" }),
    )
    .await;
    d.refused(
        "RecordPayment",
        json!({ "ticketId": ticket, "amount": 1, "method": "cash" }),
        "OVERPAYMENT",
    )
    .await;
    finish(&d, &ticket, &device).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rules_answer_422_with_their_code_and_change_nothing() {
    let d = desk().await;
    let (customer, technician, device) = front_desk(&d, 10, 12, "SN-RULES").await;
    let other = d
        .id(
            "RegisterCustomer",
            json!({ "name": "Bo", "email": "bo@example.com" }),
            "customerId",
        )
        .await;
    d.refused(
        "RegisterCustomer",
        json!({ "name": "Ana 2", "email": "ANA-SN-RULES@example.com" }),
        "EMAIL_TAKEN",
    )
    .await;
    d.refused("RegisterDevice", json!({ "customerId": other, "name": "X", "serialNumber": "sn-rules", "purchaseDate": date(-1), "warrantyMonths": 1 }), "SERIAL_TAKEN").await;
    d.refused("RegisterDevice", json!({ "customerId": other, "name": "X", "serialNumber": "SN-FUTURE", "purchaseDate": date(2), "warrantyMonths": 1 }), "PURCHASE_DATE_IN_FUTURE").await;
    d.refused("RegisterDevice", json!({ "customerId": other, "name": "X", "serialNumber": "SN-NEG", "purchaseDate": date(-2), "warrantyMonths": -1 }), "INVALID_WARRANTY_MONTHS").await;
    d.refused("RegisterDevice", json!({ "customerId": technician, "name": "X", "serialNumber": "SN-NOBODY", "purchaseDate": date(-2), "warrantyMonths": 1 }), "UNKNOWN_CUSTOMER").await;
    d.refused("RaiseTicket", json!({ "customerId": other, "deviceId": device, "category": "repair", "subject": "s", "description": "d", "severity": "minor", "impact": 1 }), "DEVICE_NOT_OWNED").await;
    d.refused("CheckInDevice", json!({ "deviceId": device, "condition": "ok", "reportedIssue": "x", "expectedDeliveryDate": date(1) }), "INVALID_TRANSITION").await;
    d.refused(
        "RescheduleDelivery",
        json!({ "deviceId": device, "expectedDeliveryDate": date(5) }),
        "DELIVERY_NOT_OVERDUE",
    )
    .await;
    d.refused(
        "ChangeCustomerTier",
        json!({ "customerId": customer, "tier": "paid" }),
        "NOTHING_TO_CHANGE",
    )
    .await;
    let ticket = raise_and_start(&d, &customer, &technician, &device).await;
    d.refused(
        "ApproveQuote",
        json!({ "ticketId": ticket }),
        "NO_PENDING_QUOTE",
    )
    .await;
    d.refused(
        "ApproveWarrantyClaim",
        json!({ "ticketId": ticket }),
        "NO_PENDING_CLAIM",
    )
    .await;
    d.refused(
        "SubmitFeedback",
        json!({ "ticketId": ticket, "rating": 5 }),
        "TICKET_NOT_COMPLETED",
    )
    .await;
    d.refused(
        "UsePart",
        json!({ "ticketId": ticket, "partId": customer, "quantity": 1 }),
        "UNKNOWN_PART",
    )
    .await;
    d.ok(
        "ResolveTicket",
        json!({ "ticketId": ticket, "resolution": "Fixed" }),
    )
    .await;
    d.refused(
        "SubmitFeedback",
        json!({ "ticketId": ticket, "rating": 6 }),
        "RATING_OUT_OF_RANGE",
    )
    .await;
    d.refused(
        "SubmitFeedback",
        json!({ "ticketId": ticket, "rating": 0 }),
        "RATING_OUT_OF_RANGE",
    )
    .await;
    d.refused(
        "StartWork",
        json!({ "ticketId": ticket }),
        "INVALID_TRANSITION",
    )
    .await;
    d.ok("CloseTicket", json!({ "ticketId": ticket })).await;
    d.refused(
        "AddNote",
        json!({ "ticketId": ticket, "text": "late" }),
        "TICKET_CLOSED",
    )
    .await;
    d.ok(
        "ReopenTicket",
        json!({ "ticketId": ticket, "reason": "Fault is back" }),
    )
    .await;
    d.ok(
        "DeactivateTechnician",
        json!({ "technicianId": technician }),
    )
    .await;
    let mei = d
        .id(
            "OnboardTechnician",
            json!({ "name": "Mei", "email": "mei@example.com" }),
            "technicianId",
        )
        .await;
    d.ok(
        "AssignTechnician",
        json!({ "ticketId": ticket, "technicianId": mei }),
    )
    .await;
    d.refused(
        "AssignTechnician",
        json!({ "ticketId": ticket, "technicianId": technician }),
        "TECHNICIAN_INACTIVE",
    )
    .await;
    let p = part(&d, 1).await;
    d.refused(
        "AdjustStock",
        json!({ "partId": p, "delta": -2, "reason": "count" }),
        "INSUFFICIENT_STOCK",
    )
    .await;
    d.ok(
        "CancelTicket",
        json!({ "ticketId": ticket, "reason": "Customer withdrew" }),
    )
    .await;
    d.refused(
        "CancelTicket",
        json!({ "ticketId": ticket, "reason": "again" }),
        "INVALID_TRANSITION",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_email_frees_the_old_one() {
    let d = desk().await;
    let ana = d
        .id(
            "RegisterCustomer",
            json!({ "name": "Ana", "email": "ana@example.com" }),
            "customerId",
        )
        .await;
    let bo = d
        .id(
            "RegisterCustomer",
            json!({ "name": "Bo", "email": "bo@example.com" }),
            "customerId",
        )
        .await;
    d.refused(
        "UpdateCustomer",
        json!({ "customerId": bo, "email": "ana@example.com" }),
        "EMAIL_TAKEN",
    )
    .await;
    let updated = d
        .ok(
            "UpdateCustomer",
            json!({ "customerId": ana, "email": "ana.souza@example.com", "location": "Recife" }),
        )
        .await;
    assert_eq!(
        (updated["email"].as_str(), updated["name"].as_str()),
        (Some("ana.souza@example.com"), None)
    );
    d.ok(
        "UpdateCustomer",
        json!({ "customerId": bo, "email": "ana@example.com" }),
    )
    .await;
    d.refused(
        "RegisterCustomer",
        json!({ "name": "Cy", "email": "ana.souza@example.com" }),
        "EMAIL_TAKEN",
    )
    .await;
    d.ok(
        "ChangeCustomerTier",
        json!({ "customerId": bo, "tier": "enterprise" }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_serial_and_one_email_under_concurrent_requests() {
    let d = desk().await;
    let customer = d
        .id(
            "RegisterCustomer",
            json!({ "name": "Ana", "email": "ana@example.com" }),
            "customerId",
        )
        .await;
    let attempts = (0..20).map(|i| d.api.command("RegisterDevice", json!({
        "customerId": customer, "name": format!("Phone {i}"), "serialNumber": "SN-RACE", "purchaseDate": date(-5), "warrantyMonths": 12
    })));
    let answers = futures::future::join_all(attempts).await;
    let won = answers.iter().filter(|(s, _)| *s == 201).count();
    let taken = answers
        .iter()
        .filter(|(s, a)| *s == 422 && a["error"]["code"] == "SERIAL_TAKEN")
        .count();
    assert_eq!((won, taken), (1, 19), "{answers:?}");

    let attempts = (0..10).map(|i| {
        d.api.command(
            "RegisterCustomer",
            json!({ "name": format!("Twin {i}"), "email": "twin@example.com" }),
        )
    });
    let answers = futures::future::join_all(attempts).await;
    let won = answers.iter().filter(|(s, _)| *s == 201).count();
    let taken = answers
        .iter()
        .filter(|(s, a)| *s == 422 && a["error"]["code"] == "EMAIL_TAKEN")
        .count();
    assert_eq!((won, taken), (1, 9), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_technicians_race_for_five_parts() {
    let d = desk().await;
    let (customer, technician, device) = front_desk(&d, 10, 12, "SN-STOCK").await;
    let part = part(&d, 5).await;
    let mut tickets = Vec::new();
    for _ in 0..10 {
        let ticket = raise_and_start(&d, &customer, &technician, &device).await;
        d.ok(
            "QuoteRepair",
            json!({ "ticketId": ticket, "amount": 5000, "description": "Board" }),
        )
        .await;
        d.ok("ApproveQuote", json!({ "ticketId": ticket })).await;
        tickets.push(ticket);
    }
    let attempts = tickets.iter().map(|t| {
        d.api.command(
            "UsePart",
            json!({ "ticketId": t, "partId": part, "quantity": 1 }),
        )
    });
    let answers = futures::future::join_all(attempts).await;
    let used = answers.iter().filter(|(s, _)| *s == 200).count();
    let short = answers
        .iter()
        .filter(|(s, a)| *s == 422 && a["error"]["code"] == "INSUFFICIENT_STOCK")
        .count();
    assert_eq!((used, short), (5, 5), "{answers:?}");

    // The part's own stream says the stock is zero, and five tickets recorded a part.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&d.url)
        .await
        .unwrap();
    let store = PgEventStore::new(pool);
    let part_events = read_full_stream(&store, &StreamId::new(format!("part-{part}")).unwrap())
        .await
        .unwrap();
    let stock: i64 = part_events
        .iter()
        .map(|e| match e.event_type.as_str() {
            "PartAdded" => e.data.to_value()["initialStock"].as_i64().unwrap(),
            "StockUsed" => -e.data.to_value()["quantity"].as_i64().unwrap(),
            "StockReturned" | "StockReceived" => e.data.to_value()["quantity"].as_i64().unwrap(),
            other => panic!("unexpected {other}"),
        })
        .sum();
    assert_eq!(stock, 0);
    let mut recorded = 0;
    for t in &tickets {
        let events = read_full_stream(&store, &StreamId::new(format!("ticket-{t}")).unwrap())
            .await
            .unwrap();
        recorded += events.iter().filter(|e| e.event_type == "PartUsed").count();
    }
    assert_eq!(recorded, 5);
    let _ = store.head().await.unwrap();
}

/// A raise claims its ticket number in the number's own stream before the ticket exists, and
/// links the ticket to its device in the device's stream. The claim, the link and the ticket
/// are one chain, written by one transaction (one commit for the command, not three). A number
/// someone else holds is left to them: the command draws its next number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_claims_its_number_in_the_same_commit_and_leaves_a_taken_one() {
    use domain::{EventPayload, ReservationEvent, TicketNumber};
    use stream_store::{ExpectedVersion, NewEvent};
    use uuid::Uuid;

    let d = desk().await;
    let customer = d
        .id(
            "RegisterCustomer",
            json!({ "name": "Ana", "email": "ana@example.com" }),
            "customerId",
        )
        .await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&d.url)
        .await
        .unwrap();
    let store = PgEventStore::new(pool.clone());

    // The number the command's first attempt draws (from its command id, as the service
    // does), claimed beforehand by another ticket: today's, and tomorrow's should the date
    // turn meanwhile.
    let command_id = Uuid::new_v4();
    let draw = Uuid::new_v5(&command_id, b"ticket-number-0");
    let entropy = u64::from_le_bytes(draw.as_bytes()[..8].try_into().unwrap());
    let mut taken = Vec::new();
    for days in [0, 1] {
        let number =
            TicketNumber::generate(Utc::now().date_naive() + Duration::days(days), entropy);
        let key = StreamId::for_aggregate("ticket-number", number.as_str());
        let claim = ReservationEvent::KeyReserved {
            key: number.as_str().to_owned(),
            owner: "ticket-someone-else".into(),
            reserved_at: Utc::now(),
        };
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: claim.event_type().to_owned(),
            schema_version: claim.schema_version(),
            data: claim.to_data(),
        };
        store
            .append(
                &key,
                ExpectedVersion::NoStream,
                vec![event],
                &crate::store::meta(),
            )
            .await
            .unwrap();
        taken.push((number.as_str().to_owned(), key));
    }

    let body = json!({
        "customerId": customer, "category": "repair", "subject": "No power",
        "description": "Dead after a storm", "severity": "major", "impact": 2
    });
    let key_header = command_id.to_string();
    let (status, raised) = d
        .api
        .raw(
            "RaiseTicket",
            body.to_string(),
            &[("idempotency-key", key_header.as_str())],
        )
        .await;
    assert_eq!(status, 201, "{raised}");
    let data = &raised["events"][0]["data"];
    let number = data["number"].as_str().unwrap().to_owned();
    let ticket = data["ticketId"].as_str().unwrap().to_owned();
    for (held, key) in &taken {
        assert_ne!(&number, held, "the raise took a number someone else holds");
        let claims = read_full_stream(&store, key).await.unwrap();
        assert_eq!(claims.len(), 1, "the holder's claim was touched");
    }

    // The claim of the number the ticket got and the ticket's first event: one transaction.
    let writers: Vec<(String, String)> = sqlx::query_as(
        "SELECT stream_id, xmin::text FROM events WHERE stream_id = ANY($1) ORDER BY position",
    )
    .bind(vec![
        format!("ticket-number-{number}"),
        format!("ticket-{ticket}"),
    ])
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(writers.len(), 2, "{writers:?}");
    assert_eq!(
        writers[0].1, writers[1].1,
        "claim and ticket committed apart: {writers:?}"
    );

    // Delivered again: the first outcome, nothing new.
    let head = d.api.head().await;
    let (status, again) = d
        .api
        .raw(
            "RaiseTicket",
            body.to_string(),
            &[("idempotency-key", key_header.as_str())],
        )
        .await;
    assert_eq!((status, &again), (201, &raised));
    assert_eq!(d.api.head().await, head);

    // For a device: the claim, the device's TicketLinked and the ticket, one transaction.
    let device = d.id("RegisterDevice", json!({
        "customerId": customer, "name": "Phone", "serialNumber": "SN-CHAIN", "purchaseDate": date(-5), "warrantyMonths": 12
    }), "deviceId").await;
    let raised = d.ok("RaiseTicket", json!({
        "customerId": customer, "deviceId": device, "category": "repair", "subject": "Cracked",
        "description": "Dropped", "severity": "minor", "impact": 1
    })).await;
    let (number, ticket) = (
        raised["number"].as_str().unwrap(),
        raised["ticketId"].as_str().unwrap(),
    );
    let writers: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, xmin::text FROM events
          WHERE stream_id = ANY($1) AND event_type <> 'DeviceRegistered' ORDER BY position",
    )
    .bind(vec![
        format!("ticket-number-{number}"),
        format!("device-{device}"),
        format!("ticket-{ticket}"),
    ])
    .fetch_all(&pool)
    .await
    .unwrap();
    let types: Vec<&str> = writers.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["KeyReserved", "TicketLinked", "TicketRaised"],
        "{writers:?}"
    );
    assert!(
        writers.iter().all(|(_, x)| *x == writers[0].1),
        "committed apart: {writers:?}"
    );
}

/// A raise whose id the client chose, or that pins an expected version, takes the path that
/// reads the ticket's stream: claim, device link and ticket one after another. An id already
/// raised and a pinned version the stream is not at are refused with 4xx and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_with_a_chosen_id_or_a_pinned_version_is_checked_on_the_stream() {
    let d = desk().await;
    let (customer, _, device) = front_desk(&d, 10, 12, "SN-CHOSEN").await;
    let chosen = uuid::Uuid::new_v4().to_string();
    let body = |extra: Value| {
        let mut body = json!({
            "customerId": customer, "deviceId": device, "category": "repair", "subject": "Hinge",
            "description": "Loose", "severity": "minor", "impact": 1
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let raised = d
        .ok("RaiseTicket", body(json!({ "ticketId": chosen })))
        .await;
    assert_eq!(raised["ticketId"], chosen.as_str());
    assert_eq!(raised["deviceId"], device.as_str());

    let head = d.api.head().await;
    let (status, again) = d
        .api
        .command("RaiseTicket", body(json!({ "ticketId": chosen })))
        .await;
    assert!((400..500).contains(&status), "{status} {again}");
    assert!(again["error"]["code"].is_string(), "{again}");
    let (status, pinned) = d
        .api
        .command("RaiseTicket", body(json!({ "expectedVersion": 3 })))
        .await;
    assert_eq!(
        (status, pinned["error"]["code"].as_str()),
        (409, Some("VERSION_CONFLICT")),
        "{pinned}"
    );
    assert_eq!(d.api.head().await, head, "a refused raise wrote");
}
