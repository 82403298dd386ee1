use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::event::event_payload;
use crate::{
    Aggregate, CustomerFacts, CustomerId, DeviceFacts, DeviceId, DomainError, Money, SerialNumber,
    TechnicianFacts, TechnicianId, Text, TicketId,
};

/// Longest warranty, and longest single extension, in months (100 years).
const MAX_WARRANTY_MONTHS: i64 = 1200;

#[derive(Debug, Clone)]
pub struct RegisterDevice {
    pub device_id: DeviceId,
    pub customer_id: CustomerId,
    /// `None` when no such customer is registered.
    pub customer: Option<CustomerFacts>,
    pub name: Text,
    pub brand: Option<Text>,
    pub model: Option<Text>,
    pub serial_number: SerialNumber,
    pub category: Option<Text>,
    pub purchase_date: NaiveDate,
    pub warranty_months: i64,
    pub invoice_ref: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct CheckInDevice {
    pub condition: Text,
    pub accessories: Vec<Text>,
    pub reported_issue: Text,
    pub expected_delivery_date: NaiveDate,
    pub expected_budget: Option<Money>,
    pub technician_id: Option<TechnicianId>,
    /// Facts about `technician_id`, when given.
    pub technician: Option<TechnicianFacts>,
}

#[derive(Debug, Clone)]
pub enum DeviceCommand {
    Register(RegisterDevice),
    ExtendWarranty {
        months: i64,
        reason: Option<Text>,
    },
    CheckIn(CheckInDevice),
    /// Records that a ticket was raised for the device (its bill counts when closing).
    LinkTicket {
        ticket_id: TicketId,
    },
    MarkReadyForDelivery,
    Deliver,
    Close {
        /// What the tickets of this service visit still owe, summed by the caller.
        outstanding: Money,
    },
    RescheduleDelivery {
        expected_delivery_date: NaiveDate,
        technician_id: Option<TechnicianId>,
        technician: Option<TechnicianFacts>,
    },
}

impl DeviceCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Register(_) => "register",
            Self::ExtendWarranty { .. } => "extend the warranty of",
            Self::CheckIn(_) => "check in",
            Self::LinkTicket { .. } => "link a ticket to",
            Self::MarkReadyForDelivery => "mark ready for delivery",
            Self::Deliver => "deliver",
            Self::Close { .. } => "close",
            Self::RescheduleDelivery { .. } => "reschedule the delivery of",
        }
    }
}

/// Where a device is in the service center's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Registered, not at the service center.
    Registered,
    CheckedIn,
    ReadyForDelivery,
    Delivered,
    Closed,
}

impl ServiceStatus {
    pub fn label(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::CheckedIn => "checked_in",
            Self::ReadyForDelivery => "ready_for_delivery",
            Self::Delivered => "delivered",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
pub enum DeviceEvent {
    DeviceRegistered {
        device_id: DeviceId,
        customer_id: CustomerId,
        name: Text,
        brand: Option<Text>,
        model: Option<Text>,
        serial_number: SerialNumber,
        category: Option<Text>,
        purchase_date: NaiveDate,
        warranty_months: u32,
        warranty_expires_on: NaiveDate,
        invoice_ref: Option<Text>,
        registered_at: DateTime<Utc>,
    },
    WarrantyExtended {
        months: u32,
        warranty_expires_on: NaiveDate,
        reason: Option<Text>,
        extended_at: DateTime<Utc>,
    },
    DeviceCheckedIn {
        condition: Text,
        accessories: Vec<Text>,
        reported_issue: Text,
        expected_delivery_date: NaiveDate,
        expected_budget: Option<Money>,
        technician_id: Option<TechnicianId>,
        checked_in_at: DateTime<Utc>,
    },
    TicketLinked {
        ticket_id: TicketId,
        linked_at: DateTime<Utc>,
    },
    DeviceReadyForDelivery {
        ready_at: DateTime<Utc>,
    },
    DeviceDelivered {
        delivered_at: DateTime<Utc>,
    },
    DeviceClosed {
        closed_at: DateTime<Utc>,
    },
    DeliveryRescheduled {
        previous_date: NaiveDate,
        expected_delivery_date: NaiveDate,
        technician_id: Option<TechnicianId>,
        rescheduled_at: DateTime<Utc>,
    },
}
event_payload!(DeviceEvent {
    DeviceRegistered,
    WarrantyExtended,
    DeviceCheckedIn,
    TicketLinked,
    DeviceReadyForDelivery,
    DeviceDelivered,
    DeviceClosed,
    DeliveryRescheduled,
});

/// A customer's device (product). `None` until registered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Device(Option<DeviceState>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceState {
    pub id: DeviceId,
    pub customer_id: CustomerId,
    pub serial_number: SerialNumber,
    pub purchase_date: NaiveDate,
    pub warranty_months: u32,
    pub warranty_expires_on: NaiveDate,
    pub status: ServiceStatus,
    pub expected_delivery_date: Option<NaiveDate>,
    pub technician_id: Option<TechnicianId>,
    /// Tickets raised since the device was last closed: their bills must be settled to close.
    pub open_tickets: Vec<TicketId>,
}

impl Device {
    pub fn state(&self) -> Option<&DeviceState> {
        self.0.as_ref()
    }

    /// The device whose events so far produced `state`.
    pub fn from_state(state: DeviceState) -> Self {
        Device(Some(state))
    }

    /// Facts other aggregates' decisions need.
    pub fn facts(&self) -> Option<DeviceFacts> {
        self.0.as_ref().map(|d| DeviceFacts {
            id: d.id,
            customer_id: d.customer_id,
            warranty_expires_on: d.warranty_expires_on,
        })
    }
}

/// The last day a warranty of `months` from `purchase` covers (`purchase` itself for 0).
pub fn warranty_expiry(purchase: NaiveDate, months: u32) -> NaiveDate {
    purchase
        .checked_add_months(Months::new(months))
        .unwrap_or(NaiveDate::MAX)
}

fn check_technician(
    technician_id: Option<TechnicianId>,
    technician: Option<TechnicianFacts>,
) -> Result<(), DomainError> {
    let Some(id) = technician_id else {
        return Ok(());
    };
    let facts = technician
        .filter(|t| t.id == id)
        .ok_or(DomainError::UnknownTechnician)?;
    if !facts.active {
        return Err(DomainError::TechnicianInactive);
    }
    Ok(())
}

impl Aggregate for Device {
    type Command = DeviceCommand;
    type Event = DeviceEvent;
    const STREAM_PREFIX: &'static str = "device";

    fn decide(
        &self,
        command: DeviceCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<DeviceEvent>, DomainError> {
        let today = now.date_naive();
        let state = match (command, &self.0) {
            (DeviceCommand::Register(_), Some(_)) => {
                return Err(DomainError::DeviceAlreadyRegistered)
            }
            (DeviceCommand::Register(r), None) => return decide_register(r, now),
            (_, None) => return Err(DomainError::NotFound { kind: "device" }),
            (command, Some(state)) => (command, state),
        };
        let (command, d) = state;
        let refuse = DomainError::InvalidTransition {
            from: d.status.label(),
            action: command.name(),
        };
        use ServiceStatus::*;
        let event = match command {
            DeviceCommand::Register(_) => return Err(DomainError::DeviceAlreadyRegistered),
            DeviceCommand::ExtendWarranty { months, reason } => {
                let months = u32::try_from(months)
                    .ok()
                    .filter(|m| (1..=MAX_WARRANTY_MONTHS as u32).contains(m))
                    .ok_or(DomainError::InvalidWarrantyExtension)?;
                let total = d.warranty_months.saturating_add(months);
                DeviceEvent::WarrantyExtended {
                    months,
                    warranty_expires_on: warranty_expiry(d.purchase_date, total),
                    reason,
                    extended_at: now,
                }
            }
            DeviceCommand::CheckIn(c) => {
                if !matches!(d.status, Registered | Closed) {
                    return Err(refuse);
                }
                if c.expected_delivery_date < today {
                    return Err(DomainError::DeliveryDateInPast);
                }
                check_technician(c.technician_id, c.technician)?;
                DeviceEvent::DeviceCheckedIn {
                    condition: c.condition,
                    accessories: c.accessories,
                    reported_issue: c.reported_issue,
                    expected_delivery_date: c.expected_delivery_date,
                    expected_budget: c.expected_budget,
                    technician_id: c.technician_id,
                    checked_in_at: now,
                }
            }
            DeviceCommand::LinkTicket { ticket_id } => DeviceEvent::TicketLinked {
                ticket_id,
                linked_at: now,
            },
            DeviceCommand::MarkReadyForDelivery => {
                if d.status != CheckedIn {
                    return Err(refuse);
                }
                DeviceEvent::DeviceReadyForDelivery { ready_at: now }
            }
            DeviceCommand::Deliver => {
                if d.status != ReadyForDelivery {
                    return Err(refuse);
                }
                DeviceEvent::DeviceDelivered { delivered_at: now }
            }
            DeviceCommand::Close { outstanding } => {
                if d.status != Delivered {
                    return Err(refuse);
                }
                if outstanding > Money::ZERO {
                    return Err(DomainError::BillNotSettled {
                        outstanding: outstanding.to_string(),
                    });
                }
                DeviceEvent::DeviceClosed { closed_at: now }
            }
            DeviceCommand::RescheduleDelivery {
                expected_delivery_date,
                technician_id,
                technician,
            } => {
                let (CheckedIn | ReadyForDelivery, Some(previous)) =
                    (d.status, d.expected_delivery_date)
                else {
                    return Err(refuse);
                };
                if previous >= today {
                    return Err(DomainError::DeliveryNotOverdue);
                }
                if expected_delivery_date < today {
                    return Err(DomainError::DeliveryDateInPast);
                }
                check_technician(technician_id, technician)?;
                DeviceEvent::DeliveryRescheduled {
                    previous_date: previous,
                    expected_delivery_date,
                    technician_id: technician_id.or(d.technician_id),
                    rescheduled_at: now,
                }
            }
        };
        Ok(vec![event])
    }

    fn evolve(self, event: &DeviceEvent) -> Self {
        match (event.clone(), self.0) {
            (
                DeviceEvent::DeviceRegistered {
                    device_id,
                    customer_id,
                    serial_number,
                    purchase_date,
                    warranty_months,
                    warranty_expires_on,
                    ..
                },
                _,
            ) => Device(Some(DeviceState {
                id: device_id,
                customer_id,
                serial_number,
                purchase_date,
                warranty_months,
                warranty_expires_on,
                status: ServiceStatus::Registered,
                expected_delivery_date: None,
                technician_id: None,
                open_tickets: Vec::new(),
            })),
            (_, None) => Device(None),
            (event, Some(mut d)) => {
                match event {
                    DeviceEvent::DeviceRegistered { .. } => {}
                    DeviceEvent::WarrantyExtended {
                        months,
                        warranty_expires_on,
                        ..
                    } => {
                        d.warranty_months = d.warranty_months.saturating_add(months);
                        d.warranty_expires_on = warranty_expires_on;
                    }
                    DeviceEvent::DeviceCheckedIn {
                        expected_delivery_date,
                        technician_id,
                        ..
                    } => {
                        d.status = ServiceStatus::CheckedIn;
                        d.expected_delivery_date = Some(expected_delivery_date);
                        d.technician_id = technician_id;
                    }
                    DeviceEvent::TicketLinked { ticket_id, .. } => {
                        if !d.open_tickets.contains(&ticket_id) {
                            d.open_tickets.push(ticket_id);
                        }
                    }
                    DeviceEvent::DeviceReadyForDelivery { .. } => {
                        d.status = ServiceStatus::ReadyForDelivery
                    }
                    DeviceEvent::DeviceDelivered { .. } => d.status = ServiceStatus::Delivered,
                    DeviceEvent::DeviceClosed { .. } => {
                        d.status = ServiceStatus::Closed;
                        d.open_tickets.clear();
                    }
                    DeviceEvent::DeliveryRescheduled {
                        expected_delivery_date,
                        technician_id,
                        ..
                    } => {
                        d.expected_delivery_date = Some(expected_delivery_date);
                        d.technician_id = technician_id;
                    }
                }
                Device(Some(d))
            }
        }
    }
}

fn decide_register(r: RegisterDevice, now: DateTime<Utc>) -> Result<Vec<DeviceEvent>, DomainError> {
    let customer = r
        .customer
        .filter(|c| c.id == r.customer_id)
        .ok_or(DomainError::UnknownCustomer)?;
    if r.purchase_date > now.date_naive() {
        return Err(DomainError::PurchaseDateInFuture);
    }
    let months = u32::try_from(r.warranty_months)
        .ok()
        .filter(|m| i64::from(*m) <= MAX_WARRANTY_MONTHS)
        .ok_or(DomainError::InvalidWarrantyMonths)?;
    Ok(vec![DeviceEvent::DeviceRegistered {
        device_id: r.device_id,
        customer_id: customer.id,
        name: r.name,
        brand: r.brand,
        model: r.model,
        serial_number: r.serial_number,
        category: r.category,
        purchase_date: r.purchase_date,
        warranty_months: months,
        warranty_expires_on: warranty_expiry(r.purchase_date, months),
        invoice_ref: r.invoice_ref,
        registered_at: now,
    }])
}
