//! `ledger seed --demo`: a small service center to try the ledger with, and demo accounts.

use anyhow::Context as _;
use command_api::{run_command, CommandService};
use domain::access::{Principal, Role};
use domain::UserId;
use serde_json::{json, Value};
use stream_store::{read_full_stream, StreamId};

use crate::{Config, Database};

async fn send(
    service: &CommandService,
    admin: &Principal,
    name: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let outcome = run_command(service, admin, name, &body)
        .await
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    Ok(outcome
        .events
        .first()
        .map(|e| e.data.to_value())
        .unwrap_or(Value::Null))
}

fn id(v: &Value, field: &str) -> anyhow::Result<String> {
    v[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {field} in {v}"))
}

/// Loads the demo data once; returns the demo accounts as (role, e-mail, password).
pub async fn seed_demo(
    db: &Database,
    config: &Config,
) -> anyhow::Result<Option<Vec<(String, String, String)>>> {
    crate::serve::bootstrap(db, config).await?;
    let marker = StreamId::new("ledger-demo-seed")?;
    if !read_full_stream(&*db.store, &marker).await?.is_empty() {
        return Ok(None);
    }
    let service = CommandService::new(db.store.clone(), config.priority.clone());
    let admin = Principal {
        user_id: UserId::from_uuid(uuid::Uuid::nil()),
        role: Role::Admin,
        customer_id: None,
        technician_id: None,
    };
    let mut customers = Vec::new();
    for (name, email, tier) in [
        ("Ana Souza", "ana@demo.example", "enterprise"),
        ("Bo Lindqvist", "bo@demo.example", "paid"),
        ("Chidi Okafor", "chidi@demo.example", "free"),
    ] {
        let c = send(
            &service,
            &admin,
            "RegisterCustomer",
            json!({ "name": name, "email": email, "tier": tier, "phone": "+1 555 0100" }),
        )
        .await?;
        customers.push(id(&c, "customerId")?);
    }
    let mut technicians = Vec::new();
    for (name, email) in [
        ("Ravi Kumar", "ravi@demo.example"),
        ("Mei Tanaka", "mei@demo.example"),
    ] {
        technicians.push(id(
            &send(
                &service,
                &admin,
                "OnboardTechnician",
                json!({ "name": name, "email": email }),
            )
            .await?,
            "technicianId",
        )?);
    }
    let today = chrono::Utc::now().date_naive();
    let device = id(&send(&service, &admin, "RegisterDevice", json!({
        "customerId": customers[0], "name": "ThinkPad X1", "brand": "Lenovo", "model": "X1 Carbon",
        "serialNumber": "DEMO-X1-0001", "category": "laptop", "purchaseDate": (today - chrono::Duration::days(200)).to_string(), "warrantyMonths": 12
    })).await?, "deviceId")?;
    send(&service, &admin, "CheckInDevice", json!({ "deviceId": device, "condition": "Scratched lid", "accessories": ["Charger"], "reportedIssue": "Does not power on", "expectedDeliveryDate": (today + chrono::Duration::days(3)).to_string(), "expectedBudget": 20000, "technicianId": technicians[0] })).await?;
    let part = id(
        &send(
            &service,
            &admin,
            "AddPart",
            json!({ "name": "Power board", "sku": "PB-100", "unitCost": 4500, "initialStock": 10 }),
        )
        .await?,
        "partId",
    )?;
    let raise = |customer: &str, subject: &str, severity: &str, impact: i64| json!({ "customerId": customer, "category": "repair", "subject": subject, "description": "Reported at the front desk", "severity": severity, "impact": impact });
    let mut laptop = raise(&customers[0], "Laptop does not power on", "critical", 4);
    laptop["deviceId"] = json!(device);
    let t1 = id(
        &send(&service, &admin, "RaiseTicket", laptop).await?,
        "ticketId",
    )?;
    send(
        &service,
        &admin,
        "AssignTechnician",
        json!({ "ticketId": t1, "technicianId": technicians[0] }),
    )
    .await?;
    send(&service, &admin, "StartWork", json!({ "ticketId": t1 })).await?;
    send(
        &service,
        &admin,
        "QuoteRepair",
        json!({ "ticketId": t1, "amount": 15000, "description": "Power board and labour" }),
    )
    .await?;
    send(&service, &admin, "ApproveQuote", json!({ "ticketId": t1 })).await?;
    send(
        &service,
        &admin,
        "UsePart",
        json!({ "ticketId": t1, "partId": part, "quantity": 1 }),
    )
    .await?;
    let t2 = id(
        &send(
            &service,
            &admin,
            "RaiseTicket",
            raise(&customers[1], "Phone screen cracked", "major", 2),
        )
        .await?,
        "ticketId",
    )?;
    send(
        &service,
        &admin,
        "AssignTechnician",
        json!({ "ticketId": t2, "technicianId": technicians[1] }),
    )
    .await?;
    send(
        &service,
        &admin,
        "RaiseTicket",
        raise(&customers[2], "Printer jams", "minor", 1),
    )
    .await?;
    send(
        &service,
        &admin,
        "RaiseTicket",
        raise(&customers[0], "Second monitor flickers", "major", 3),
    )
    .await?;

    let mut accounts = Vec::new();
    for (role, email, link) in [
        (
            "customer",
            "ana.user@demo.example",
            json!({ "customerId": customers[0] }),
        ),
        (
            "technician",
            "ravi.user@demo.example",
            json!({ "technicianId": technicians[0] }),
        ),
        ("auditor", "auditor@demo.example", json!({})),
    ] {
        let password = command_api::generate_password();
        let mut body = json!({ "email": email, "name": email, "role": role, "password": password });
        if let (Some(body), Value::Object(link)) = (body.as_object_mut(), link) {
            body.extend(link);
        }
        send(&service, &admin, "RegisterUser", body).await?;
        accounts.push((role.to_owned(), email.to_owned(), password));
    }
    let done = domain::ReservationEvent::KeyReserved {
        key: "demo".into(),
        owner: "ledger".into(),
        reserved_at: chrono::Utc::now(),
    };
    let meta = stream_store::CommandMetadata {
        command_id: uuid::Uuid::new_v4(),
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: uuid::Uuid::new_v4(),
        actor: stream_store::Actor {
            id: "system".into(),
            role: "system".into(),
        },
        recorded_at: chrono::Utc::now(),
    };
    use domain::EventPayload as _;
    let event = stream_store::NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: done.event_type().into(),
        schema_version: 1,
        data: done.to_data(),
    };
    db.store
        .append(
            &marker,
            stream_store::ExpectedVersion::NoStream,
            vec![event],
            &meta,
        )
        .await?;
    Ok(Some(accounts))
}
