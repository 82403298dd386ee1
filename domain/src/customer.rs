use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::event_payload;
use crate::{Aggregate, CustomerId, DomainError, Email, Phone, Text, Tier};

#[derive(Debug, Clone)]
pub struct RegisterCustomer {
    pub customer_id: CustomerId,
    pub name: Text,
    pub email: Email,
    pub phone: Option<Phone>,
    pub location: Option<Text>,
    pub tier: Tier,
}

/// New values for a customer's details; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UpdateCustomer {
    pub name: Option<Text>,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub location: Option<Text>,
}

#[derive(Debug, Clone)]
pub enum CustomerCommand {
    Register(RegisterCustomer),
    Update(UpdateCustomer),
    ChangeTier { tier: Tier },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
pub enum CustomerEvent {
    CustomerRegistered {
        customer_id: CustomerId,
        name: Text,
        email: Email,
        phone: Option<Phone>,
        location: Option<Text>,
        tier: Tier,
        registered_at: DateTime<Utc>,
    },
    /// Only the fields that changed are present.
    CustomerUpdated {
        customer_id: CustomerId,
        name: Option<Text>,
        email: Option<Email>,
        phone: Option<Phone>,
        location: Option<Text>,
        updated_at: DateTime<Utc>,
    },
    CustomerTierChanged {
        customer_id: CustomerId,
        from: Tier,
        to: Tier,
        changed_at: DateTime<Utc>,
    },
}
event_payload!(CustomerEvent {
    CustomerRegistered,
    CustomerUpdated,
    CustomerTierChanged
});

/// A customer of the service center. `None` until registered.
#[derive(Debug, Clone, Default)]
pub struct Customer(Option<CustomerState>);

#[derive(Debug, Clone, PartialEq)]
pub struct CustomerState {
    pub id: CustomerId,
    pub name: Text,
    pub email: Email,
    pub phone: Option<Phone>,
    pub location: Option<Text>,
    pub tier: Tier,
}

impl Customer {
    pub fn state(&self) -> Option<&CustomerState> {
        self.0.as_ref()
    }
}

/// `new` when it differs from `current`.
fn changed<T: PartialEq>(new: Option<T>, current: Option<&T>) -> Option<T> {
    new.filter(|n| Some(n) != current)
}

impl Aggregate for Customer {
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    const STREAM_PREFIX: &'static str = "customer";

    fn decide(
        &self,
        command: CustomerCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<CustomerEvent>, DomainError> {
        match (command, &self.0) {
            (CustomerCommand::Register(_), Some(_)) => Err(DomainError::CustomerAlreadyRegistered),
            (CustomerCommand::Register(c), None) => Ok(vec![CustomerEvent::CustomerRegistered {
                customer_id: c.customer_id,
                name: c.name,
                email: c.email,
                phone: c.phone,
                location: c.location,
                tier: c.tier,
                registered_at: now,
            }]),
            (_, None) => Err(DomainError::NotFound { kind: "customer" }),
            (CustomerCommand::Update(u), Some(c)) => {
                let name = changed(u.name, Some(&c.name));
                let email = changed(u.email, Some(&c.email));
                let phone = changed(u.phone, c.phone.as_ref());
                let location = changed(u.location, c.location.as_ref());
                if name.is_none() && email.is_none() && phone.is_none() && location.is_none() {
                    return Err(DomainError::NothingToChange);
                }
                Ok(vec![CustomerEvent::CustomerUpdated {
                    customer_id: c.id,
                    name,
                    email,
                    phone,
                    location,
                    updated_at: now,
                }])
            }
            (CustomerCommand::ChangeTier { tier }, Some(c)) => {
                if tier == c.tier {
                    return Err(DomainError::NothingToChange);
                }
                Ok(vec![CustomerEvent::CustomerTierChanged {
                    customer_id: c.id,
                    from: c.tier,
                    to: tier,
                    changed_at: now,
                }])
            }
        }
    }

    fn evolve(self, event: &CustomerEvent) -> Self {
        match (event.clone(), self.0) {
            (
                CustomerEvent::CustomerRegistered {
                    customer_id,
                    name,
                    email,
                    phone,
                    location,
                    tier,
                    ..
                },
                _,
            ) => Customer(Some(CustomerState {
                id: customer_id,
                name,
                email,
                phone,
                location,
                tier,
            })),
            (_, None) => Customer(None),
            (
                CustomerEvent::CustomerUpdated {
                    name,
                    email,
                    phone,
                    location,
                    ..
                },
                Some(mut c),
            ) => {
                c.name = name.unwrap_or(c.name);
                c.email = email.unwrap_or(c.email);
                c.phone = phone.or(c.phone);
                c.location = location.or(c.location);
                Customer(Some(c))
            }
            (CustomerEvent::CustomerTierChanged { to, .. }, Some(mut c)) => {
                c.tier = to;
                Customer(Some(c))
            }
        }
    }
}
