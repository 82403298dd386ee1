//! Devices: registered with their warranty, checked in, made ready, delivered, closed.

use chrono::NaiveDate;
use domain::access::Action;
use domain::{CheckInDevice as CheckIn, CustomerId, Device, DeviceCommand, DeviceId, SerialNumber};
use domain::{TechnicianId, ValueError};
use stream_store::AppendOutcome;
use uuid::Uuid;

use super::fields::{
    expected, money, new_id, optional_text, technician_facts, text, MAX_ACCESSORIES, MAX_LONG_TEXT,
    MAX_NAME,
};
use super::{command, Access, Context};
use crate::ApiError;

/// Sends `command` to the device `id`.
async fn device(
    cx: &Context<'_>,
    id: Uuid,
    command: DeviceCommand,
    expected_version: Option<i64>,
) -> Result<AppendOutcome, ApiError> {
    cx.service
        .send::<Device>(id, command, expected(expected_version)?, cx.meta)
        .await
}

command!(
    /// Registers a customer's device. The serial number must be unique; the purchase date not in
    /// the future; the warranty runs `warrantyMonths` (0 to 1200) from the purchase date.
    RegisterDevice {
        device_id: Option<Uuid>,
        customer_id: Uuid,
        #[schema(min_length = 1, max_length = 200, example = "ThinkPad X1")]
        name: String,
        #[schema(max_length = 200)]
        brand: Option<String>,
        #[schema(max_length = 200)]
        model: Option<String>,
        #[schema(min_length = 1, max_length = 64, example = "PF-2X9K3")]
        serial_number: String,
        #[schema(max_length = 200, example = "laptop")]
        category: Option<String>,
        purchase_date: NaiveDate,
        warranty_months: i64,
        #[schema(max_length = 200)]
        invoice_ref: Option<String>,
    }
    summary: "Register a device and its warranty",
    access: Access::Targeted("the customer, for themselves"),
    run(self, cx) {
        let customer_id = CustomerId::from_uuid(self.customer_id);
        cx.allow(
            Action::RegisterDeviceFor(customer_id),
            None,
            "register a device for this customer",
        )?;
        let command = domain::RegisterDevice {
            device_id: DeviceId::from_uuid(new_id(self.device_id)),
            customer_id,
            customer: None,
            name: text("name", &self.name, MAX_NAME)?,
            brand: optional_text("brand", self.brand.as_deref(), MAX_NAME)?,
            model: optional_text("model", self.model.as_deref(), MAX_NAME)?,
            serial_number: SerialNumber::parse("serialNumber", &self.serial_number)?,
            category: optional_text("category", self.category.as_deref(), MAX_NAME)?,
            purchase_date: self.purchase_date,
            warranty_months: self.warranty_months,
            invoice_ref: optional_text("invoiceRef", self.invoice_ref.as_deref(), MAX_NAME)?,
        };
        cx.service
            .register_device(command, expected(self.expected_version)?, cx.meta)
            .await
    }
);

command!(
    /// Extends a device's warranty by 1 to 1200 months.
    ExtendWarranty {
        device_id: Uuid,
        months: i64,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
    summary: "Extend a device's warranty",
    access: Access::Admins,
    run(self, cx) {
        let command = DeviceCommand::ExtendWarranty {
            months: self.months,
            reason: optional_text("reason", self.reason.as_deref(), MAX_LONG_TEXT)?,
        };
        device(cx, self.device_id, command, self.expected_version).await
    }
);

command!(
    /// Checks a device in at the service center.
    CheckInDevice {
        device_id: Uuid,
        #[schema(min_length = 1, max_length = 5000, example = "Scratched lid")]
        condition: String,
        /// What came with the device (charger, bag, ...); at most 50.
        accessories: Option<Vec<String>>,
        #[schema(min_length = 1, max_length = 5000, example = "Does not power on")]
        reported_issue: String,
        /// Not in the past.
        expected_delivery_date: NaiveDate,
        /// Integer minor units (cents).
        #[schema(minimum = 0)]
        expected_budget: Option<i64>,
        /// An active technician to take the device.
        technician_id: Option<Uuid>,
    }
    summary: "Check a device in",
    access: Access::Admins,
    run(self, cx) {
        let accessories = self.accessories.unwrap_or_default();
        if accessories.len() > MAX_ACCESSORIES {
            return Err(ApiError::InvalidField(ValueError {
                field: "accessories",
                reason: format!("at most {MAX_ACCESSORIES}"),
            }));
        }
        let technician_id = self.technician_id.map(TechnicianId::from_uuid);
        let command = DeviceCommand::CheckIn(CheckIn {
            condition: text("condition", &self.condition, MAX_LONG_TEXT)?,
            accessories: accessories
                .iter()
                .map(|a| text("accessories", a, MAX_NAME))
                .collect::<Result<_, _>>()?,
            reported_issue: text("reportedIssue", &self.reported_issue, MAX_LONG_TEXT)?,
            expected_delivery_date: self.expected_delivery_date,
            expected_budget: self
                .expected_budget
                .map(|m| money("expectedBudget", m))
                .transpose()?,
            technician_id,
            technician: technician_facts(cx.service, technician_id).await?,
        });
        device(cx, self.device_id, command, self.expected_version).await
    }
);

command!(
    /// The repair is done: the device waits for its customer.
    MarkReadyForDelivery { device_id: Uuid }
    summary: "Mark a device ready for delivery",
    access: Access::Admins,
    run(self, cx) {
        let command = DeviceCommand::MarkReadyForDelivery;
        device(cx, self.device_id, command, self.expected_version).await
    }
);

command!(
    /// The customer took the device.
    DeliverDevice { device_id: Uuid }
    summary: "Deliver a device",
    access: Access::Admins,
    run(self, cx) {
        device(cx, self.device_id, DeviceCommand::Deliver, self.expected_version).await
    }
);

command!(
    /// Closes a delivered device's service visit; its tickets' bills must be settled.
    CloseDevice { device_id: Uuid }
    summary: "Close a device's service visit",
    access: Access::Admins,
    run(self, cx) {
        cx.service
            .close_device(
                DeviceId::from_uuid(self.device_id),
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);

command!(
    /// Sets a new deadline for an overdue device, optionally with another technician.
    RescheduleDelivery {
        device_id: Uuid,
        expected_delivery_date: NaiveDate,
        technician_id: Option<Uuid>,
    }
    summary: "Reschedule an overdue delivery",
    access: Access::Admins,
    run(self, cx) {
        let technician_id = self.technician_id.map(TechnicianId::from_uuid);
        let command = DeviceCommand::RescheduleDelivery {
            expected_delivery_date: self.expected_delivery_date,
            technician_id,
            technician: technician_facts(cx.service, technician_id).await?,
        };
        device(cx, self.device_id, command, self.expected_version).await
    }
);
