//! Tickets by id: a cache of recent rows and a DataLoader.

use super::*;

/// Most ticket rows kept by `TicketCache` (a row is about a kilobyte).
pub(super) const CACHED_TICKETS: usize = 20_000;

/// Ticket rows by id for `ticket(id:)`, so that reading a ticket again costs no round trip.
/// A row is served only while the `Freshness` generation it was read under is current: any
/// projection commit (heard, or found by a reload) ends it, and nothing is served while the
/// listener is not listening. Read-your-writes holds: a wait that saw position P also saw
/// the generation move past every row read before P. Least recently used rows go first.
pub(crate) struct TicketCache {
    pub(super) rows: std::sync::Mutex<lru::LruCache<Uuid, (u64, TicketRow)>>,
}

impl Default for TicketCache {
    fn default() -> Self {
        let capacity =
            std::num::NonZeroUsize::new(CACHED_TICKETS).unwrap_or(std::num::NonZeroUsize::MIN);
        TicketCache {
            rows: std::sync::Mutex::new(lru::LruCache::new(capacity)),
        }
    }
}

impl TicketCache {
    pub(super) fn get(&self, id: Uuid, now: crate::freshness::Progress) -> Option<TicketRow> {
        if !now.listening {
            return None;
        }
        let mut rows = self.rows.lock().ok()?;
        match rows.get(&id) {
            Some((generation, row)) if *generation == now.generation => Some(row.clone()),
            _ => None,
        }
    }

    /// `read_under`: the progress taken before the row was read.
    pub(super) fn put(&self, id: Uuid, read_under: crate::freshness::Progress, row: &TicketRow) {
        if !read_under.listening {
            return;
        }
        if let Ok(mut rows) = self.rows.lock() {
            rows.put(id, (read_under.generation, row.clone()));
        }
    }
}

/// One ticket by id or number, outside of a request's context (subscriptions).
pub(crate) async fn load(
    pool: &PgPool,
    settings: &Settings,
    id: Option<Uuid>,
    number: Option<String>,
) -> Result<Option<Ticket>> {
    fetch(pool, id, number)
        .await?
        .map(|row| with_priority(row, settings))
        .transpose()
}

/// One ticket row by id or number, as stored (the priority is computed when it is served).
pub(super) async fn fetch(
    pool: &PgPool,
    id: Option<Uuid>,
    number: Option<String>,
) -> Result<Option<TicketRow>> {
    let id = match (id, number) {
        (Some(id), _) => id,
        (None, Some(number)) => {
            // Unique by construction; the first raised should a duplicate ever appear.
            let id = sqlx::query_scalar!(
                "SELECT ticket_id FROM tickets WHERE number = $1 ORDER BY raised_position LIMIT 1",
                number
            )
            .fetch_optional(pool)
            .await
            .map_err(gql)?;
            match id {
                Some(id) => id,
                None => return Ok(None),
            }
        }
        (None, None) => return Ok(None),
    };
    Ok(rows_by_id(pool, &[id]).await.map_err(gql)?.pop())
}

/// Ticket rows by id, in one query.
pub(crate) async fn rows_by_id(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<TicketRow>, sqlx::Error> {
    sqlx::query_as!(
        TicketRow,
        r#"SELECT t.ticket_id, t.number, t.status, t.category, t.subject, t.description,
                  t.severity, t.impact, t.customer_id, COALESCE(c.name, '') AS "customer_name!",
                  t.customer_tier, t.device_id, t.assignee_id, te.name AS "assignee_name?",
                  t.priority_score_at_raise, t.priority_level_at_raise,
                  t.notes, t.quote_amount, t.quote_description, t.quote_decision, t.approved_quote,
                  t.final_cost, t.repair_summary, t.parts_cost, t.paid, t.bill, t.covered,
                  t.balance, t.claim_decision, t.claim_reason, t.rating, t.feedback_comment,
                  t.resolution, t.version, t.raised_at, t.assigned_at, t.started_at,
                  t.completed_at, t.resolved_at, t.closed_at, t.cancelled_at, t.reopened_at,
                  t.settled_at, t.updated_at
           FROM tickets t
           LEFT JOIN customers c ON c.customer_id = t.customer_id
           LEFT JOIN technicians te ON te.technician_id = t.assignee_id
           WHERE t.ticket_id = ANY($1)"#,
        ids
    )
    .fetch_all(pool)
    .await
}

/// Batches the `ticket(id:)` reads of concurrent requests into one query (a `DataLoader` in
/// the schema's data, shared by every request): under load one round trip serves several
/// requests, and the pool's connections are taken and released once per batch.
pub(crate) struct TicketLoader(pub(crate) PgPool);

impl async_graphql::dataloader::Loader<Uuid> for TicketLoader {
    type Value = TicketRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, TicketRow>, Self::Error> {
        let rows = rows_by_id(&self.0, ids).await.map_err(Arc::new)?;
        Ok(rows.into_iter().map(|r| (r.ticket_id, r)).collect())
    }
}
