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

#[derive(Debug, Clone)]
pub enum CustomerCommand {
    Register(RegisterCustomer),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}
event_payload!(CustomerEvent { CustomerRegistered });

/// A customer of the service center. `None` until registered.
#[derive(Debug, Clone, Default)]
pub struct Customer(Option<CustomerState>);

#[derive(Debug, Clone, PartialEq)]
pub struct CustomerState {
    pub id: CustomerId,
    pub name: Text,
    pub email: Email,
    pub tier: Tier,
}

impl Customer {
    pub fn state(&self) -> Option<&CustomerState> {
        self.0.as_ref()
    }
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
        match command {
            CustomerCommand::Register(c) => {
                if self.0.is_some() {
                    return Err(DomainError::CustomerAlreadyRegistered);
                }
                Ok(vec![CustomerEvent::CustomerRegistered {
                    customer_id: c.customer_id,
                    name: c.name,
                    email: c.email,
                    phone: c.phone,
                    location: c.location,
                    tier: c.tier,
                    registered_at: now,
                }])
            }
        }
    }

    fn evolve(self, event: &CustomerEvent) -> Self {
        match event {
            CustomerEvent::CustomerRegistered {
                customer_id,
                name,
                email,
                tier,
                ..
            } => Customer(Some(CustomerState {
                id: *customer_id,
                name: name.clone(),
                email: email.clone(),
                tier: *tier,
            })),
        }
    }
}
