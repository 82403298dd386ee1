//! One test per rule of the customer, technician, device and part aggregates, and the part's
//! stock invariant under random sequences.

use chrono::{Duration, NaiveDate};
use proptest::prelude::*;
use uuid::Uuid;

use crate::testing::{given_commands, now};
use crate::*;

fn today() -> NaiveDate {
    now().date_naive()
}

fn text(s: &str) -> Text {
    Text::parse("text", s, 500).unwrap()
}

fn customer_id() -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(1))
}

fn register_customer() -> CustomerCommand {
    CustomerCommand::Register(RegisterCustomer {
        customer_id: customer_id(),
        name: text("Ana"),
        email: Email::parse("email", "ana@example.com").unwrap(),
        phone: None,
        location: None,
        tier: Tier::Free,
    })
}

#[test]
fn customer_rules() {
    given_commands::<Customer>(vec![register_customer()])
        .when(register_customer())
        .then_refused("CUSTOMER_ALREADY_REGISTERED");
    given_commands::<Customer>(vec![])
        .when(CustomerCommand::ChangeTier { tier: Tier::Paid })
        .then_refused("NOT_FOUND");
    given_commands::<Customer>(vec![register_customer()])
        .when(CustomerCommand::ChangeTier { tier: Tier::Free })
        .then_refused("NOTHING_TO_CHANGE");
    let same_name = UpdateCustomer {
        name: Some(text("Ana")),
        ..Default::default()
    };
    given_commands::<Customer>(vec![register_customer()])
        .when(CustomerCommand::Update(same_name))
        .then_refused("NOTHING_TO_CHANGE");
    let events = given_commands::<Customer>(vec![register_customer()])
        .when(CustomerCommand::Update(UpdateCustomer {
            name: Some(text("Ana Souza")),
            location: Some(text("Recife")),
            ..Default::default()
        }))
        .events();
    let CustomerEvent::CustomerUpdated {
        name,
        email,
        location,
        ..
    } = &events[0]
    else {
        panic!()
    };
    assert_eq!(
        (
            name.as_ref().map(Text::as_str),
            email,
            location.as_ref().map(Text::as_str)
        ),
        (Some("Ana Souza"), &None, Some("Recife"))
    );
}

fn onboard() -> TechnicianCommand {
    TechnicianCommand::Onboard(OnboardTechnician {
        technician_id: TechnicianId::from_uuid(Uuid::from_u128(2)),
        name: text("Ravi"),
        email: Email::parse("email", "ravi@example.com").unwrap(),
    })
}

#[test]
fn technician_rules() {
    given_commands::<Technician>(vec![onboard()])
        .when(onboard())
        .then_refused("TECHNICIAN_ALREADY_ONBOARDED");
    given_commands::<Technician>(vec![])
        .when(TechnicianCommand::Deactivate { reason: None })
        .then_refused("NOT_FOUND");
    let deactivate = || TechnicianCommand::Deactivate { reason: None };
    given_commands::<Technician>(vec![onboard(), deactivate()])
        .when(deactivate())
        .then_refused("TECHNICIAN_ALREADY_INACTIVE");
}

fn register_device(purchase: NaiveDate, months: i64) -> DeviceCommand {
    DeviceCommand::Register(RegisterDevice {
        device_id: DeviceId::from_uuid(Uuid::from_u128(3)),
        customer_id: customer_id(),
        customer: Some(CustomerFacts {
            id: customer_id(),
            tier: Tier::Free,
        }),
        name: text("Laptop"),
        brand: Some(text("Acme")),
        model: Some(text("X1")),
        serial_number: SerialNumber::parse("serial", "sn-1").unwrap(),
        category: None,
        purchase_date: purchase,
        warranty_months: months,
        invoice_ref: None,
    })
}

fn check_in(expected: NaiveDate, technician: Option<TechnicianFacts>) -> DeviceCommand {
    DeviceCommand::CheckIn(CheckInDevice {
        condition: text("Scratched lid"),
        accessories: vec![text("Charger")],
        reported_issue: text("No power"),
        expected_delivery_date: expected,
        expected_budget: None,
        technician_id: technician.map(|t| t.id),
        technician,
    })
}

#[test]
fn device_rules() {
    let registered = || register_device(today() - Duration::days(30), 12);
    let mut no_customer = registered();
    if let DeviceCommand::Register(r) = &mut no_customer {
        r.customer = None;
    }
    given_commands::<Device>(vec![registered()])
        .when(registered())
        .then_refused("DEVICE_ALREADY_REGISTERED");
    given_commands::<Device>(vec![])
        .when(no_customer)
        .then_refused("UNKNOWN_CUSTOMER");
    given_commands::<Device>(vec![])
        .when(register_device(today() + Duration::days(1), 12))
        .then_refused("PURCHASE_DATE_IN_FUTURE");
    given_commands::<Device>(vec![])
        .when(register_device(today(), -1))
        .then_refused("INVALID_WARRANTY_MONTHS");
    given_commands::<Device>(vec![registered()])
        .when(DeviceCommand::ExtendWarranty {
            months: 0,
            reason: None,
        })
        .then_refused("INVALID_WARRANTY_EXTENSION");
    given_commands::<Device>(vec![])
        .when(DeviceCommand::Deliver)
        .then_refused("NOT_FOUND");
    given_commands::<Device>(vec![registered()])
        .when(check_in(today() - Duration::days(1), None))
        .then_refused("DELIVERY_DATE_IN_PAST");
    let inactive = TechnicianFacts {
        id: TechnicianId::from_uuid(Uuid::from_u128(2)),
        active: false,
    };
    given_commands::<Device>(vec![registered()])
        .when(check_in(today(), Some(inactive)))
        .then_refused("TECHNICIAN_INACTIVE");
    given_commands::<Device>(vec![registered(), check_in(today(), None)])
        .when(DeviceCommand::Deliver)
        .then_refused("INVALID_TRANSITION");
    given_commands::<Device>(vec![registered(), check_in(today(), None)])
        .when(check_in(today(), None))
        .then_refused("INVALID_TRANSITION");
    let delivered = vec![
        registered(),
        check_in(today(), None),
        DeviceCommand::MarkReadyForDelivery,
        DeviceCommand::Deliver,
    ];
    given_commands::<Device>(delivered.clone())
        .when(DeviceCommand::Close {
            outstanding: Money::parse("x", 1).unwrap(),
        })
        .then_refused("BILL_NOT_SETTLED");
    assert!(given_commands::<Device>(delivered)
        .when(DeviceCommand::Close {
            outstanding: Money::ZERO
        })
        .0
        .is_ok());
    let reschedule = DeviceCommand::RescheduleDelivery {
        expected_delivery_date: today() + Duration::days(2),
        technician_id: None,
        technician: None,
    };
    given_commands::<Device>(vec![registered(), check_in(today(), None)])
        .when(reschedule)
        .then_refused("DELIVERY_NOT_OVERDUE");
}

#[test]
fn warranty_expiry_is_purchase_plus_months_and_extends() {
    let purchase = NaiveDate::from_ymd_opt(2025, 1, 31).unwrap();
    assert_eq!(
        warranty_expiry(purchase, 1),
        NaiveDate::from_ymd_opt(2025, 2, 28).unwrap()
    );
    assert_eq!(warranty_expiry(purchase, 0), purchase);
    let events = given_commands::<Device>(vec![register_device(purchase, 12)])
        .when(DeviceCommand::ExtendWarranty {
            months: 6,
            reason: None,
        })
        .events();
    let DeviceEvent::WarrantyExtended {
        warranty_expires_on,
        ..
    } = &events[0]
    else {
        panic!()
    };
    assert_eq!(
        *warranty_expires_on,
        NaiveDate::from_ymd_opt(2026, 7, 31).unwrap()
    );
}

fn add_part(stock: u32) -> PartCommand {
    PartCommand::Add(AddPart {
        part_id: PartId::from_uuid(Uuid::from_u128(4)),
        name: text("Charging port"),
        sku: None,
        unit_cost: Money::parse("cost", 250).unwrap(),
        initial_stock: stock,
    })
}

fn units(n: u32) -> crate::Quantity {
    crate::Quantity::parse("quantity", i64::from(n)).unwrap()
}

fn use_part(quantity: u32) -> PartCommand {
    PartCommand::Use {
        ticket_id: TicketId::from_uuid(Uuid::from_u128(5)),
        quantity: units(quantity),
    }
}

/// A quantity is 1 to 1,000,000 units, a rating 1 to 5 stars and a payment at least one minor
/// unit before any command holds one.
#[test]
fn quantities_and_ratings_are_in_range_by_construction() {
    for bad in [0, -1, 1_000_001, i64::MAX] {
        assert!(crate::Quantity::parse("quantity", bad).is_err(), "{bad}");
    }
    assert_eq!(units(1_000_000).get(), 1_000_000);
    for bad in [0, 6, -1, 256] {
        assert_eq!(
            crate::Rating::parse(bad).map_err(|e| e.code()),
            Err("RATING_OUT_OF_RANGE"),
            "{bad}"
        );
    }
    assert_eq!(crate::Rating::parse(5).map(crate::Rating::get), Ok(5));
    for bad in [0, -5] {
        assert!(
            crate::Money::parse_positive("amount", bad).is_err(),
            "{bad}"
        );
    }
    let one = crate::Money::parse_positive("amount", 1).map(|p| p.get().minor_units());
    assert_eq!(one.ok(), Some(1));
}

#[test]
fn part_rules() {
    given_commands::<Part>(vec![add_part(1)])
        .when(add_part(1))
        .then_refused("PART_ALREADY_ADDED");
    given_commands::<Part>(vec![])
        .when(use_part(1))
        .then_refused("NOT_FOUND");
    given_commands::<Part>(vec![add_part(1)])
        .when(use_part(2))
        .then_refused("INSUFFICIENT_STOCK");
    given_commands::<Part>(vec![add_part(1)])
        .when(PartCommand::AdjustStock {
            delta: -2,
            reason: text("count"),
        })
        .then_refused("INSUFFICIENT_STOCK");
    given_commands::<Part>(vec![add_part(1)])
        .when(PartCommand::AdjustStock {
            delta: 0,
            reason: text("count"),
        })
        .then_refused("NOTHING_TO_CHANGE");
    assert!(given_commands::<Part>(vec![add_part(1)])
        .when(use_part(1))
        .0
        .is_ok());
}

fn any_part_command() -> impl Strategy<Value = PartCommand> {
    prop_oneof![
        (1u32..5).prop_map(|q| PartCommand::ReceiveStock {
            quantity: units(q),
            reference: None
        }),
        (-6i64..6).prop_map(|d| PartCommand::AdjustStock {
            delta: d,
            reason: Text::parse("r", "count", 10).unwrap()
        }),
        (1u32..6).prop_map(use_part),
        (1u32..3).prop_map(|q| PartCommand::Return {
            ticket_id: TicketId::from_uuid(Uuid::from_u128(5)),
            quantity: units(q)
        }),
    ]
}

proptest! {
    /// Stock never goes below zero, equals what the accepted events add up to, and replays.
    #[test]
    fn stock_never_goes_negative(initial in 0u32..5, commands in proptest::collection::vec(any_part_command(), 0..40)) {
        let mut events = replay::<Part>(&[]).decide(add_part(initial), now()).unwrap();
        let mut expected = i64::from(initial);
        for c in commands {
            if let Ok(new) = replay::<Part>(&events).decide(c, now()) {
                for e in &new {
                    expected += match e {
                        PartEvent::StockReceived { quantity, .. } | PartEvent::StockReturned { quantity, .. } => i64::from(*quantity),
                        PartEvent::StockAdjusted { delta, .. } => *delta,
                        PartEvent::StockUsed { quantity, .. } => -i64::from(*quantity),
                        PartEvent::PartAdded { .. } => 0,
                    };
                }
                events.extend(new);
            }
            prop_assert!(expected >= 0);
            prop_assert_eq!(replay::<Part>(&events).state().map(|p| i64::from(p.stock)), Some(expected));
        }
    }
}
