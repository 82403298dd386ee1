-- A note's or a payment's id is chosen by the client and only the ticket's own rules keep it
-- unique, within that ticket. The read model must never refuse what the log holds (a log
-- written before the domain checked it may repeat an id), so the rows are keyed by what the
-- log itself guarantees: the event's position. The old keys' `(ticket_id, position)` indexes
-- become the keys.
ALTER TABLE ticket_notes DROP CONSTRAINT ticket_notes_pkey;
DROP INDEX ticket_notes_ticket_idx;
ALTER TABLE ticket_notes ADD CONSTRAINT ticket_notes_pkey PRIMARY KEY (ticket_id, position);

ALTER TABLE ticket_payments DROP CONSTRAINT ticket_payments_pkey;
DROP INDEX ticket_payments_ticket_idx;
ALTER TABLE ticket_payments ADD CONSTRAINT ticket_payments_pkey PRIMARY KEY (ticket_id, position);
