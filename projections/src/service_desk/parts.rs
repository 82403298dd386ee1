//! Parts and their stock.

use domain::PartEvent;
use sqlx::PgConnection;
use stream_store::RecordedEvent;
use uuid::Uuid;

use super::money;
use crate::ProjectionError;

pub(super) async fn apply_part(
    tx: &mut PgConnection,
    e: &RecordedEvent,
    id: Uuid,
    event: PartEvent,
) -> Result<(), ProjectionError> {
    let delta: i64 = match event {
        PartEvent::PartAdded {
            name,
            sku,
            unit_cost,
            initial_stock,
            added_at,
            ..
        } => {
            sqlx::query!(
                "INSERT INTO parts (part_id, name, sku, unit_cost, stock, added_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                id,
                name.as_str(),
                sku.as_ref().map(|s| s.as_str()),
                money(unit_cost),
                i64::from(initial_stock),
                added_at
            )
            .execute(tx)
            .await?;
            return Ok(());
        }
        PartEvent::StockReceived { quantity, .. } | PartEvent::StockReturned { quantity, .. } => {
            i64::from(quantity)
        }
        PartEvent::StockAdjusted { delta, .. } => delta,
        PartEvent::StockUsed { quantity, .. } => -i64::from(quantity),
    };
    sqlx::query!(
        "UPDATE parts SET stock = stock + $2, updated_at = $3 WHERE part_id = $1",
        id,
        delta,
        e.recorded_at
    )
    .execute(tx)
    .await?;
    Ok(())
}
