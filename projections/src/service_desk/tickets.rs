//! Tickets: each batch folds the tickets it touches once and writes their rows and children.

use std::collections::HashMap;
use std::sync::Mutex;

use lru::LruCache;

use domain::{Aggregate, Money, Ticket, TicketEvent, TicketState};
use futures::{StreamExt, TryStreamExt};
use sqlx::PgConnection;
use stream_store::{EventStore, RecordedEvent, StreamId};
use uuid::Uuid;

use super::{decode, label, money};
use crate::{ProjectionError, Write};

/// The ticket events of one batch. Writing a batch takes four statements however many
/// events it holds: evolve the touched tickets in memory with the domain's own code (so bill,
/// coverage and balance are exactly the domain's), then insert the notes, parts and payments
/// and upsert every touched ticket, each statement taking one array per column. A ticket the
/// batch continues starts from memory when the projector last left it right before; otherwise
/// from the fold of its stream's earlier events, read from the log (a few events, one index
/// range): the row keeps no copy of the state, which would be most of its width.
pub(super) struct TicketBatch<'a> {
    pub(super) events: Vec<(&'a RecordedEvent, Uuid, TicketEvent)>,
}

/// A ticket as the batch evolves it.
#[derive(Clone)]
pub(super) struct Evolving {
    pub(super) ticket: Ticket,
    pub(super) settled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(super) raised_position: i64,
    /// The last event applied to it, which the row records as its version and update time.
    pub(super) last: Option<(i64, chrono::DateTime<chrono::Utc>)>,
}

/// Applies one event of a ticket's stream to what the projector knows of the ticket (nothing
/// before its raise); returns whether the event changed the ticket's row. The one rule for
/// every event, whether it is in a batch or folded from the stream.
fn evolve_row(slot: &mut Option<Evolving>, e: &RecordedEvent, event: &TicketEvent) -> bool {
    if matches!(event, TicketEvent::TicketRaised { .. }) {
        // A raise starts from nothing (as the domain's own fold does).
        let last = slot.as_ref().and_then(|t| t.last);
        *slot = Some(Evolving {
            ticket: Ticket::default(),
            settled_at: None,
            raised_position: e.position,
            last,
        });
    }
    // An event for a ticket that was never raised changes nothing.
    let Some(entry) = slot.as_mut() else {
        return false;
    };
    let owed_before = entry
        .ticket
        .state()
        .is_some_and(|b| b.balance() > Money::ZERO);
    let ticket = std::mem::take(&mut entry.ticket).evolve(event);
    let Some(s) = ticket.state() else {
        entry.ticket = ticket;
        return false;
    };
    entry.settled_at = if s.balance() > Money::ZERO {
        None
    } else if owed_before {
        Some(e.recorded_at)
    } else {
        entry.settled_at
    };
    entry.last = Some((e.version, e.recorded_at));
    entry.ticket = ticket;
    true
}

/// Streams read at once when a batch continues tickets the projector does not remember.
const STREAM_READS_AT_ONCE: usize = 8;

/// The ticket `id` as its stream's first `before` events leave it (none when they hold no
/// raise). `position` is the batch's event that continues it, for the error of a stream cut
/// short.
async fn fold_stream(
    log: &dyn EventStore,
    id: Uuid,
    (before, position): (i64, i64),
) -> Result<Option<Evolving>, ProjectionError> {
    let stream = StreamId::for_aggregate(Ticket::STREAM_PREFIX, id);
    let events = log.read_stream_through(&stream, before).await?;
    let version = events.last().map_or(0, |e| e.version);
    if version != before {
        return Err(ProjectionError::Corrupt {
            position,
            reason: format!(
                "stream {} ends at version {version}, not {before}",
                stream.as_str()
            ),
        });
    }
    let mut slot = None;
    for e in &events {
        if let Some(event) = decode::<TicketEvent>(e)? {
            evolve_row(&mut slot, e, &event);
        }
    }
    if let Some(entry) = slot.as_mut() {
        entry.last = None;
    }
    Ok(slot)
}

impl<'a> TicketBatch<'a> {
    pub(super) fn push(&mut self, e: &'a RecordedEvent, id: Uuid, event: TicketEvent) {
        self.events.push((e, id, event));
    }

    /// The notes, parts and payments the batch adds and the rows of the tickets it changes.
    /// Remembers the tickets as the batch leaves them: an entry is a pure function of its
    /// stream's events, so it is right even if the batch is never written.
    pub(super) async fn rows(
        self,
        log: &dyn EventStore,
        recent: &Mutex<LruCache<Uuid, Evolving>>,
    ) -> Result<(Children, TicketRows), ProjectionError> {
        let mut rows = TicketRows::default();
        let mut children = Children::default();
        if self.events.is_empty() {
            return Ok((children, rows));
        }
        // Each ticket is evolved in place, event after event: an entry is large (the whole
        // ticket state), and moving it out of the map and back for every event was a tenth
        // of a rebuild's CPU in this process (memcpy, perf).
        let mut tickets: HashMap<Uuid, Option<Evolving>> =
            HashMap::with_capacity(self.events.len());
        // Tickets whose first event here is not their raise: taken from memory when it holds
        // the version right before, else folded from their streams.
        let mut continued = Vec::new();
        {
            let mut recent = recent.lock().unwrap_or_else(|p| p.into_inner());
            let mut seen = std::collections::HashSet::new();
            for (e, id, event) in &self.events {
                if !seen.insert(*id) || matches!(event, TicketEvent::TicketRaised { .. }) {
                    continue;
                }
                match recent.get(id) {
                    Some(known) if known.last.map(|(v, _)| v) == Some(e.version - 1) => {
                        let continued = Evolving {
                            last: None,
                            ..known.clone()
                        };
                        tickets.insert(*id, Some(continued));
                    }
                    _ => continued.push((*id, (e.version - 1, e.position))),
                }
            }
        }
        let folded: Vec<(Uuid, Option<Evolving>)> = futures::stream::iter(continued)
            .map(|(id, at)| async move {
                Ok::<_, ProjectionError>((id, fold_stream(log, id, at).await?))
            })
            .buffer_unordered(STREAM_READS_AT_ONCE)
            .try_collect()
            .await?;
        tickets.extend(folded);

        let mut order: Vec<Uuid> = Vec::with_capacity(self.events.len());
        for (e, id, event) in &self.events {
            let slot = tickets.entry(*id).or_default();
            let first = slot.as_ref().is_none_or(|t| t.last.is_none());
            if evolve_row(slot, e, event) {
                if first {
                    order.push(*id);
                }
                children.push(e, *id, event);
            }
        }

        for id in &order {
            if let Some(Some(entry)) = tickets.get(id) {
                if let (Some(s), Some((version, at))) = (entry.ticket.state(), entry.last) {
                    rows.push(s, entry, version, at);
                }
            }
        }
        let mut recent = recent.lock().unwrap_or_else(|p| p.into_inner());
        for (id, entry) in tickets {
            if let Some(entry) = entry.filter(|e| e.ticket.state().is_some() && e.last.is_some()) {
                recent.put(id, entry);
            }
        }
        Ok((children, rows))
    }
}

/// Notes, parts and payments of one batch, column by column.
#[derive(Default)]
pub(super) struct Children {
    pub(super) note_id: Vec<Uuid>,
    pub(super) note_ticket: Vec<Uuid>,
    pub(super) note_position: Vec<i64>,
    pub(super) note_text: Vec<String>,
    pub(super) note_visibility: Vec<String>,
    pub(super) note_actor: Vec<String>,
    pub(super) note_added_at: Vec<chrono::DateTime<chrono::Utc>>,
    pub(super) part_ticket: Vec<Uuid>,
    pub(super) part_position: Vec<i64>,
    pub(super) part_id: Vec<Uuid>,
    pub(super) part_quantity: Vec<i32>,
    pub(super) part_unit_cost: Vec<i64>,
    pub(super) part_used_at: Vec<chrono::DateTime<chrono::Utc>>,
    pub(super) payment_id: Vec<Uuid>,
    pub(super) payment_ticket: Vec<Uuid>,
    pub(super) payment_position: Vec<i64>,
    pub(super) payment_amount: Vec<i64>,
    pub(super) payment_method: Vec<String>,
    pub(super) payment_paid_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Children {
    pub(super) fn push(&mut self, e: &RecordedEvent, id: Uuid, event: &TicketEvent) {
        match event {
            TicketEvent::NoteAdded {
                note_id,
                text,
                visibility,
                added_at,
            } => {
                self.note_id.push(note_id.as_uuid());
                self.note_ticket.push(id);
                self.note_position.push(e.position);
                self.note_text.push(text.as_str().to_owned());
                self.note_visibility.push(label(visibility));
                self.note_actor.push(e.actor.id.clone());
                self.note_added_at.push(*added_at);
            }
            TicketEvent::PartUsed {
                part_id,
                quantity,
                unit_cost,
                used_at,
            } => {
                self.part_ticket.push(id);
                self.part_position.push(e.position);
                self.part_id.push(part_id.as_uuid());
                self.part_quantity
                    .push(i32::try_from(*quantity).unwrap_or(i32::MAX));
                self.part_unit_cost.push(money(*unit_cost));
                self.part_used_at.push(*used_at);
            }
            TicketEvent::PaymentRecorded {
                payment_id,
                amount,
                method,
                paid_at,
            } => {
                self.payment_id.push(payment_id.as_uuid());
                self.payment_ticket.push(id);
                self.payment_position.push(e.position);
                self.payment_amount.push(money(*amount));
                self.payment_method.push(label(method));
                self.payment_paid_at.push(*paid_at);
            }
            _ => {}
        }
    }

    pub(super) async fn insert(&self, tx: &mut PgConnection) -> Result<(), ProjectionError> {
        if !self.note_id.is_empty() {
            sqlx::query!(
                "INSERT INTO ticket_notes (note_id, ticket_id, position, text, visibility,
                                           actor_id, added_at)
                 SELECT unnest($1::uuid[]), unnest($2::uuid[]), unnest($3::bigint[]),
                        unnest($4::text[]), unnest($5::text[]), unnest($6::text[]),
                        unnest($7::timestamptz[])",
                &self.note_id,
                &self.note_ticket,
                &self.note_position,
                &self.note_text,
                &self.note_visibility,
                &self.note_actor,
                &self.note_added_at
            )
            .execute(&mut *tx)
            .await?;
        }
        if !self.part_id.is_empty() {
            sqlx::query!(
                "INSERT INTO ticket_parts (ticket_id, position, part_id, quantity, unit_cost,
                                           used_at)
                 SELECT unnest($1::uuid[]), unnest($2::bigint[]), unnest($3::uuid[]),
                        unnest($4::int[]), unnest($5::bigint[]), unnest($6::timestamptz[])",
                &self.part_ticket,
                &self.part_position,
                &self.part_id,
                &self.part_quantity,
                &self.part_unit_cost,
                &self.part_used_at
            )
            .execute(&mut *tx)
            .await?;
        }
        if !self.payment_id.is_empty() {
            sqlx::query!(
                "INSERT INTO ticket_payments (payment_id, ticket_id, position, amount, method,
                                              paid_at)
                 SELECT unnest($1::uuid[]), unnest($2::uuid[]), unnest($3::bigint[]),
                        unnest($4::bigint[]), unnest($5::text[]), unnest($6::timestamptz[])",
                &self.payment_id,
                &self.payment_ticket,
                &self.payment_position,
                &self.payment_amount,
                &self.payment_method,
                &self.payment_paid_at
            )
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

type Time = chrono::DateTime<chrono::Utc>;

/// One statement for all the batch's tickets, the rows travelling as one array per column;
/// `$tail` says what a row whose ticket is already there does. The arrays are unnested in the
/// select list, where they advance in lockstep row by row: `FROM UNNEST(a, b, …)` first copies
/// each array into a tuplestore of its own and then zips them (about 3 µs more per row of 43
/// columns; the same holds for every batch insert of the projections).
macro_rules! insert_ticket_rows {
    ($rows:expr, $tail:literal) => {
        sqlx::query!(
            "INSERT INTO tickets (ticket_id, number, raised_position, status, category, subject,
                     description, severity, impact, customer_id, customer_tier, device_id, assignee_id,
                     priority_score_at_raise, priority_level_at_raise, notes, quote_amount,
                     quote_description, quote_decision, approved_quote, final_cost, repair_summary,
                     parts_cost, paid, bill, covered, balance, claim_decision, claim_reason, rating,
                     feedback_comment, resolution, raised_at, assigned_at, started_at, completed_at,
                     resolved_at, closed_at, cancelled_at, reopened_at, settled_at, updated_at,
                     version)
                 SELECT unnest($1::uuid[]), unnest($2::text[]), unnest($3::bigint[]),
                        unnest($4::text[]), unnest($5::text[]), unnest($6::text[]),
                        unnest($7::text[]), unnest($8::text[]), unnest($9::smallint[]),
                        unnest($10::uuid[]), unnest($11::text[]), unnest($12::uuid[]),
                        unnest($13::uuid[]), unnest($14::int[]), unnest($15::text[]),
                        unnest($16::int[]), unnest($17::bigint[]), unnest($18::text[]),
                        unnest($19::text[]), unnest($20::bigint[]), unnest($21::bigint[]),
                        unnest($22::text[]), unnest($23::bigint[]), unnest($24::bigint[]),
                        unnest($25::bigint[]), unnest($26::bigint[]), unnest($27::bigint[]),
                        unnest($28::text[]), unnest($29::text[]), unnest($30::smallint[]),
                        unnest($31::text[]), unnest($32::text[]), unnest($33::timestamptz[]),
                        unnest($34::timestamptz[]), unnest($35::timestamptz[]),
                        unnest($36::timestamptz[]), unnest($37::timestamptz[]),
                        unnest($38::timestamptz[]), unnest($39::timestamptz[]),
                        unnest($40::timestamptz[]), unnest($41::timestamptz[]),
                        unnest($42::timestamptz[]), unnest($43::bigint[])" + $tail,
            &$rows.ticket_id,
            &$rows.number,
            &$rows.raised_position,
            &$rows.status,
            &$rows.category,
            &$rows.subject,
            &$rows.description,
            &$rows.severity,
            &$rows.impact,
            &$rows.customer_id,
            &$rows.customer_tier,
            &$rows.device_id as &[Option<Uuid>],
            &$rows.assignee_id as &[Option<Uuid>],
            &$rows.priority_score_at_raise,
            &$rows.priority_level_at_raise,
            &$rows.notes,
            &$rows.quote_amount as &[Option<i64>],
            &$rows.quote_description as &[Option<String>],
            &$rows.quote_decision as &[Option<String>],
            &$rows.approved_quote as &[Option<i64>],
            &$rows.final_cost as &[Option<i64>],
            &$rows.repair_summary as &[Option<String>],
            &$rows.parts_cost,
            &$rows.paid,
            &$rows.bill,
            &$rows.covered,
            &$rows.balance,
            &$rows.claim_decision as &[Option<String>],
            &$rows.claim_reason as &[Option<String>],
            &$rows.rating as &[Option<i16>],
            &$rows.feedback_comment as &[Option<String>],
            &$rows.resolution as &[Option<String>],
            &$rows.raised_at,
            &$rows.assigned_at as &[Option<Time>],
            &$rows.started_at as &[Option<Time>],
            &$rows.completed_at as &[Option<Time>],
            &$rows.resolved_at as &[Option<Time>],
            &$rows.closed_at as &[Option<Time>],
            &$rows.cancelled_at as &[Option<Time>],
            &$rows.reopened_at as &[Option<Time>],
            &$rows.settled_at as &[Option<Time>],
            &$rows.updated_at,
            &$rows.version
        )
    };
}

/// Ticket rows of one batch, column by column (one entry per touched ticket).
#[derive(Default)]
pub(super) struct TicketRows {
    pub(super) ticket_id: Vec<Uuid>,
    pub(super) number: Vec<String>,
    pub(super) raised_position: Vec<i64>,
    pub(super) status: Vec<String>,
    pub(super) category: Vec<String>,
    pub(super) subject: Vec<String>,
    pub(super) description: Vec<String>,
    pub(super) severity: Vec<String>,
    pub(super) impact: Vec<i16>,
    pub(super) customer_id: Vec<Uuid>,
    pub(super) customer_tier: Vec<String>,
    pub(super) device_id: Vec<Option<Uuid>>,
    pub(super) assignee_id: Vec<Option<Uuid>>,
    pub(super) priority_score_at_raise: Vec<i32>,
    pub(super) priority_level_at_raise: Vec<String>,
    pub(super) notes: Vec<i32>,
    pub(super) quote_amount: Vec<Option<i64>>,
    pub(super) quote_description: Vec<Option<String>>,
    pub(super) quote_decision: Vec<Option<String>>,
    pub(super) approved_quote: Vec<Option<i64>>,
    pub(super) final_cost: Vec<Option<i64>>,
    pub(super) repair_summary: Vec<Option<String>>,
    pub(super) parts_cost: Vec<i64>,
    pub(super) paid: Vec<i64>,
    pub(super) bill: Vec<i64>,
    pub(super) covered: Vec<i64>,
    pub(super) balance: Vec<i64>,
    pub(super) claim_decision: Vec<Option<String>>,
    pub(super) claim_reason: Vec<Option<String>>,
    pub(super) rating: Vec<Option<i16>>,
    pub(super) feedback_comment: Vec<Option<String>>,
    pub(super) resolution: Vec<Option<String>>,
    pub(super) raised_at: Vec<Time>,
    pub(super) assigned_at: Vec<Option<Time>>,
    pub(super) started_at: Vec<Option<Time>>,
    pub(super) completed_at: Vec<Option<Time>>,
    pub(super) resolved_at: Vec<Option<Time>>,
    pub(super) closed_at: Vec<Option<Time>>,
    pub(super) cancelled_at: Vec<Option<Time>>,
    pub(super) reopened_at: Vec<Option<Time>>,
    pub(super) settled_at: Vec<Option<Time>>,
    pub(super) updated_at: Vec<Time>,
    pub(super) version: Vec<i64>,
}

impl TicketRows {
    pub(super) fn push(
        &mut self,
        s: &TicketState,
        entry: &Evolving,
        version: i64,
        updated_at: Time,
    ) {
        let claim = s.warranty_claim.as_ref();
        self.ticket_id.push(s.id.as_uuid());
        self.number.push(s.number.as_str().to_owned());
        self.raised_position.push(entry.raised_position);
        self.status.push(s.status.label().to_owned());
        self.category.push(label(&s.category));
        self.subject.push(s.subject.as_str().to_owned());
        self.description.push(s.description.as_str().to_owned());
        self.severity.push(label(&s.severity));
        self.impact.push(i16::from(s.impact.get()));
        self.customer_id.push(s.customer_id.as_uuid());
        self.customer_tier.push(label(&s.customer_tier));
        self.device_id.push(s.device_id.map(|d| d.as_uuid()));
        self.assignee_id.push(s.assignee.map(|a| a.as_uuid()));
        self.priority_score_at_raise
            .push(i32::try_from(s.priority_score).unwrap_or(i32::MAX));
        self.priority_level_at_raise.push(label(&s.priority_level));
        self.notes.push(i32::try_from(s.notes).unwrap_or(i32::MAX));
        self.quote_amount
            .push(s.quote.as_ref().map(|q| money(q.amount)));
        self.quote_description
            .push(s.quote.as_ref().map(|q| q.description.as_str().to_owned()));
        self.quote_decision
            .push(s.quote.as_ref().map(|q| label(&q.decision)));
        self.approved_quote.push(s.approved_quote.map(money));
        self.final_cost.push(s.final_cost.map(money));
        self.repair_summary
            .push(s.repair_summary.as_ref().map(|r| r.as_str().to_owned()));
        self.parts_cost.push(
            s.parts
                .iter()
                .map(|p| money(p.unit_cost.times(p.quantity)))
                .sum(),
        );
        self.paid.push(money(s.paid));
        self.bill.push(money(s.bill()));
        self.covered.push(money(s.covered()));
        self.balance.push(money(s.balance()));
        self.claim_decision.push(claim.map(|c| label(&c.decision)));
        self.claim_reason.push(
            claim
                .and_then(|c| c.reason.as_ref())
                .map(|r| r.as_str().to_owned()),
        );
        self.rating
            .push(s.feedback.as_ref().map(|f| i16::from(f.rating)));
        self.feedback_comment.push(
            s.feedback
                .as_ref()
                .and_then(|f| f.comment.as_ref())
                .map(|c| c.as_str().to_owned()),
        );
        self.resolution
            .push(s.resolution.as_ref().map(|r| r.as_str().to_owned()));
        self.raised_at.push(s.raised_at);
        self.assigned_at.push(s.assigned_at);
        self.started_at.push(s.started_at);
        self.completed_at.push(s.completed_at);
        self.resolved_at.push(s.resolved_at);
        self.closed_at.push(s.closed_at);
        self.cancelled_at.push(s.cancelled_at);
        self.reopened_at.push(s.reopened_at);
        self.settled_at.push(entry.settled_at);
        self.updated_at.push(updated_at);
        self.version.push(version);
    }

    pub(super) async fn write(
        self,
        tx: &mut PgConnection,
        how: Write,
    ) -> Result<(), ProjectionError> {
        if self.ticket_id.is_empty() {
            return Ok(());
        }
        let insert = match how {
            // A rebuild's load keeps every version; the newest is kept once loaded.
            Write::Appending => insert_ticket_rows!(self, ""),
            Write::InPlace => insert_ticket_rows!(
                self,
                " ON CONFLICT (ticket_id) DO UPDATE SET
                     status = EXCLUDED.status, assignee_id = EXCLUDED.assignee_id,
                     notes = EXCLUDED.notes, quote_amount = EXCLUDED.quote_amount,
                     quote_description = EXCLUDED.quote_description,
                     quote_decision = EXCLUDED.quote_decision,
                     approved_quote = EXCLUDED.approved_quote, final_cost = EXCLUDED.final_cost,
                     repair_summary = EXCLUDED.repair_summary, parts_cost = EXCLUDED.parts_cost,
                     paid = EXCLUDED.paid, bill = EXCLUDED.bill, covered = EXCLUDED.covered,
                     balance = EXCLUDED.balance, claim_decision = EXCLUDED.claim_decision,
                     claim_reason = EXCLUDED.claim_reason, rating = EXCLUDED.rating,
                     feedback_comment = EXCLUDED.feedback_comment,
                     resolution = EXCLUDED.resolution, assigned_at = EXCLUDED.assigned_at,
                     started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at,
                     resolved_at = EXCLUDED.resolved_at, closed_at = EXCLUDED.closed_at,
                     cancelled_at = EXCLUDED.cancelled_at, reopened_at = EXCLUDED.reopened_at,
                     settled_at = EXCLUDED.settled_at, updated_at = EXCLUDED.updated_at,
                     version = EXCLUDED.version
                 WHERE tickets.version < EXCLUDED.version"
            ),
        };
        insert.execute(tx).await?;
        Ok(())
    }
}
