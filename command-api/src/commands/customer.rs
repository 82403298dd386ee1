//! Customers: registered, their details changed, moved to another tier.

use domain::access::Action;
use domain::{CustomerCommand, CustomerId, Email, Phone, UpdateCustomer as Update};
use uuid::Uuid;

use super::fields::{expected, new_id, optional_text, text, MAX_NAME};
use super::{command, Access};
use crate::dto::Tier;
use crate::ApiError;

fn phone(raw: Option<&str>) -> Result<Option<Phone>, ApiError> {
    Ok(raw.map(|p| Phone::parse("phone", p)).transpose()?)
}

command!(
    /// Registers a customer. `customerId` is generated when absent. The e-mail must be unique.
    RegisterCustomer {
        customer_id: Option<Uuid>,
        #[schema(min_length = 1, max_length = 200, example = "Ana Souza")]
        name: String,
        #[schema(min_length = 1, example = "ana@example.com")]
        email: String,
        /// Phone or WhatsApp number.
        #[schema(example = "+55 11 91234-5678")]
        phone: Option<String>,
        #[schema(max_length = 200)]
        location: Option<String>,
        /// Defaults to `free`.
        tier: Option<Tier>,
    }
    summary: "Register a customer",
    access: Access::Admins,
    run(self, cx) {
        let command = domain::RegisterCustomer {
            customer_id: CustomerId::from_uuid(new_id(self.customer_id)),
            name: text("name", &self.name, MAX_NAME)?,
            email: Email::parse("email", &self.email)?,
            phone: phone(self.phone.as_deref())?,
            location: optional_text("location", self.location.as_deref(), MAX_NAME)?,
            tier: self.tier.map_or(domain::Tier::Free, Into::into),
        };
        let (id, email) = (command.customer_id, command.email.clone());
        cx.service
            .register_with_email::<domain::Customer>(
                id,
                CustomerCommand::Register(command),
                &email,
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);

command!(
    /// Changes a customer's details; absent fields stay as they are. A new e-mail must be unique.
    UpdateCustomer {
        customer_id: Uuid,
        #[schema(max_length = 200)]
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        #[schema(max_length = 200)]
        location: Option<String>,
    }
    summary: "Change a customer's details",
    access: Access::Targeted("the customer themselves"),
    run(self, cx) {
        let id = CustomerId::from_uuid(self.customer_id);
        cx.allow(Action::UpdateCustomer(id), None, "change this customer")?;
        let update = Update {
            name: optional_text("name", self.name.as_deref(), MAX_NAME)?,
            email: self
                .email
                .as_deref()
                .map(|e| Email::parse("email", e))
                .transpose()?,
            phone: phone(self.phone.as_deref())?,
            location: optional_text("location", self.location.as_deref(), MAX_NAME)?,
        };
        cx.service
            .update_customer(id, update, expected(self.expected_version)?, cx.meta)
            .await
    }
);

command!(
    /// Moves a customer to another tier (it feeds the priority of new tickets).
    ChangeCustomerTier { customer_id: Uuid, tier: Tier }
    summary: "Change a customer's tier",
    access: Access::Admins,
    run(self, cx) {
        let command = CustomerCommand::ChangeTier {
            tier: self.tier.into(),
        };
        cx.service
            .send::<domain::Customer>(
                self.customer_id,
                command,
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);
