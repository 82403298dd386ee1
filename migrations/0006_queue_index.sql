-- The work queue (`ticketQueue`, `nextTicket`) reads a technician's (or the unassigned) active
-- tickets group by group — one group per (severity, tier, impact) — oldest first. Within a
-- group the current priority only grows with age, so the head of the queue is among the
-- groups' oldest tickets, and no query has to score every open ticket. The nil UUID stands for
-- "unassigned" so that one plan serves both kinds of queue; the included columns let the
-- queue's count and its candidates come from the index alone.
CREATE INDEX tickets_active_queue_idx
    ON tickets ((COALESCE(assignee_id, '00000000-0000-0000-0000-000000000000'::uuid)),
                severity, customer_tier, impact, raised_at, raised_position)
    INCLUDE (assignee_id, status, ticket_id)
    WHERE status IN ('open', 'in_progress');

-- The oldest `per_group` tickets of each group of a queue (`assignee` NULL: the unassigned),
-- with what their current priority is computed from, read from the index alone. Bitmap scans
-- are off while it runs: with the actual values the planner expects few rows per group and
-- reads the whole group to sort it, where the index hands it over in order.
CREATE FUNCTION queue_candidates(assignee UUID, statuses TEXT[], severities TEXT[],
                                 tiers TEXT[], impacts SMALLINT[], per_group BIGINT)
RETURNS TABLE (candidate UUID, severity TEXT, tier TEXT, impact SMALLINT,
               raised_at TIMESTAMPTZ, raised_position BIGINT)
LANGUAGE sql STABLE ROWS 500
SET enable_bitmapscan = off
AS $$
    SELECT g.ticket_id, g.severity, g.customer_tier, g.impact, g.raised_at, g.raised_position
    FROM unnest(severities) AS s (value)
    CROSS JOIN unnest(tiers) AS r (value)
    CROSS JOIN unnest(impacts) AS i (value)
    CROSS JOIN LATERAL (
        SELECT q.ticket_id, q.severity, q.customer_tier, q.impact, q.raised_at,
               q.raised_position
        FROM tickets q
        WHERE q.status IN ('open', 'in_progress') AND q.status = ANY(statuses)
          AND COALESCE(q.assignee_id, '00000000-0000-0000-0000-000000000000'::uuid)
              = COALESCE(assignee, '00000000-0000-0000-0000-000000000000'::uuid)
          AND q.severity = s.value AND q.customer_tier = r.value AND q.impact = i.value
        ORDER BY q.raised_at, q.raised_position
        LIMIT per_group) g
$$;
