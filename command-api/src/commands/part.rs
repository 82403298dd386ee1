//! Spare parts: added to the inventory, stock received and corrected.

use domain::{Part, PartCommand, PartId, ValueError};
use stream_store::AppendOutcome;
use uuid::Uuid;

use super::fields::{
    expected, money, new_id, optional_text, quantity, text, MAX_LONG_TEXT, MAX_NAME, MAX_QUANTITY,
};
use super::{command, Access, Context};
use crate::ApiError;

async fn part(
    cx: &Context<'_>,
    id: Uuid,
    command: PartCommand,
    expected_version: Option<i64>,
) -> Result<AppendOutcome, ApiError> {
    cx.service
        .send::<Part>(id, command, expected(expected_version)?, cx.meta)
        .await
}

command!(
    /// Adds a spare part to the inventory.
    AddPart {
        part_id: Option<Uuid>,
        #[schema(min_length = 1, max_length = 200, example = "USB-C charging port")]
        name: String,
        #[schema(max_length = 200)]
        sku: Option<String>,
        /// Integer minor units (cents).
        #[schema(minimum = 0)]
        unit_cost: i64,
        #[schema(minimum = 0, maximum = 1000000)]
        initial_stock: Option<i64>,
    }
    summary: "Add a spare part",
    access: Access::Admins,
    run(self, cx) {
        let initial_stock = match self.initial_stock {
            None | Some(0) => 0,
            Some(n) => quantity("initialStock", n)?.get(),
        };
        let part_id = new_id(self.part_id);
        let command = PartCommand::Add(domain::AddPart {
            part_id: PartId::from_uuid(part_id),
            name: text("name", &self.name, MAX_NAME)?,
            sku: optional_text("sku", self.sku.as_deref(), MAX_NAME)?,
            unit_cost: money("unitCost", self.unit_cost)?,
            initial_stock,
        });
        part(cx, part_id, command, self.expected_version).await
    }
);

command!(
    /// Receives units of a part into stock.
    ReceiveStock {
        part_id: Uuid,
        #[schema(minimum = 1, maximum = 1000000)]
        quantity: i64,
        #[schema(max_length = 200)]
        reference: Option<String>,
    }
    summary: "Receive stock",
    access: Access::Admins,
    run(self, cx) {
        let command = PartCommand::ReceiveStock {
            quantity: quantity("quantity", self.quantity)?,
            reference: optional_text("reference", self.reference.as_deref(), MAX_NAME)?,
        };
        part(cx, self.part_id, command, self.expected_version).await
    }
);

command!(
    /// Corrects a part's stock after a count; the result never goes below zero.
    AdjustStock {
        part_id: Uuid,
        #[schema(minimum = -1000000, maximum = 1000000)]
        delta: i64,
        #[schema(min_length = 1, max_length = 5000)]
        reason: String,
    }
    summary: "Adjust stock",
    access: Access::Admins,
    run(self, cx) {
        if self.delta.unsigned_abs() > u64::from(MAX_QUANTITY) {
            return Err(ApiError::InvalidField(ValueError {
                field: "delta",
                reason: format!("must be within ±{MAX_QUANTITY}"),
            }));
        }
        let command = PartCommand::AdjustStock {
            delta: self.delta,
            reason: text("reason", &self.reason, MAX_LONG_TEXT)?,
        };
        part(cx, self.part_id, command, self.expected_version).await
    }
);
