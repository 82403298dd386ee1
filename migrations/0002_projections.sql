-- Projector checkpoints and the read models. Only the projections crate writes here; every
-- row is derived from events and can be rebuilt (`ledger rebuild`).

CREATE TABLE projection_checkpoints (
    name       TEXT        PRIMARY KEY,
    position   BIGINT      NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- ---- projection "service_desk" ------------------------------------------------------------

CREATE TABLE customers (
    customer_id   UUID        PRIMARY KEY,
    name          TEXT        NOT NULL,
    email         TEXT        NOT NULL,
    phone         TEXT,
    location      TEXT,
    tier          TEXT        NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE technicians (
    technician_id  UUID        PRIMARY KEY,
    name           TEXT        NOT NULL,
    email          TEXT        NOT NULL,
    active         BOOLEAN     NOT NULL,
    onboarded_at   TIMESTAMPTZ NOT NULL,
    deactivated_at TIMESTAMPTZ
);

CREATE TABLE parts (
    part_id    UUID        PRIMARY KEY,
    name       TEXT        NOT NULL,
    sku        TEXT,
    unit_cost  BIGINT      NOT NULL,
    stock      BIGINT      NOT NULL,
    added_at   TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE devices (
    device_id              UUID        PRIMARY KEY,
    customer_id            UUID        NOT NULL,
    name                   TEXT        NOT NULL,
    brand                  TEXT,
    model                  TEXT,
    serial_number          TEXT        NOT NULL,
    category               TEXT,
    purchase_date          DATE        NOT NULL,
    warranty_months        INTEGER     NOT NULL,
    warranty_expires_on    DATE        NOT NULL,
    invoice_ref            TEXT,
    service_status         TEXT        NOT NULL,
    -- The service visit new tickets belong to; a closed visit's number is `visit - 1`.
    visit                  INTEGER     NOT NULL DEFAULT 1,
    condition              TEXT,
    accessories            JSONB       NOT NULL DEFAULT '[]',
    reported_issue         TEXT,
    expected_delivery_date DATE,
    expected_budget        BIGINT,
    technician_id          UUID,
    checked_in_at          TIMESTAMPTZ,
    ready_at               TIMESTAMPTZ,
    delivered_at           TIMESTAMPTZ,
    closed_at              TIMESTAMPTZ,
    rescheduled_at         TIMESTAMPTZ,
    registered_at          TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL,
    version                BIGINT      NOT NULL
);

CREATE INDEX devices_customer_idx ON devices (customer_id);
CREATE INDEX devices_expiry_idx ON devices (warranty_expires_on);
CREATE INDEX devices_status_idx ON devices (service_status);

CREATE TABLE device_visit_tickets (
    device_id UUID    NOT NULL,
    visit     INTEGER NOT NULL,
    ticket_id UUID    NOT NULL,
    PRIMARY KEY (device_id, visit, ticket_id)
);

CREATE TABLE tickets (
    ticket_id               UUID        PRIMARY KEY,
    -- Unique by construction (reservation streams on the write side); no constraint here, so a
    -- read model can never wedge on an event the write side accepted.
    number                  TEXT        NOT NULL,
    raised_position         BIGINT      NOT NULL UNIQUE,
    status                  TEXT        NOT NULL,
    category                TEXT        NOT NULL,
    subject                 TEXT        NOT NULL,
    description             TEXT        NOT NULL,
    severity                TEXT        NOT NULL,
    impact                  SMALLINT    NOT NULL,
    customer_id             UUID        NOT NULL,
    customer_tier           TEXT        NOT NULL,
    device_id               UUID,
    assignee_id             UUID,
    priority_score_at_raise INTEGER     NOT NULL,
    priority_level_at_raise TEXT        NOT NULL,
    notes                   INTEGER     NOT NULL,
    quote_amount            BIGINT,
    quote_description       TEXT,
    quote_decision          TEXT,
    approved_quote          BIGINT,
    final_cost              BIGINT,
    repair_summary          TEXT,
    parts_cost              BIGINT      NOT NULL,
    paid                    BIGINT      NOT NULL,
    bill                    BIGINT      NOT NULL,
    covered                 BIGINT      NOT NULL,
    balance                 BIGINT      NOT NULL,
    claim_decision          TEXT,
    claim_reason            TEXT,
    rating                  SMALLINT,
    feedback_comment        TEXT,
    resolution              TEXT,
    raised_at               TIMESTAMPTZ NOT NULL,
    assigned_at             TIMESTAMPTZ,
    started_at              TIMESTAMPTZ,
    completed_at            TIMESTAMPTZ,
    resolved_at             TIMESTAMPTZ,
    closed_at               TIMESTAMPTZ,
    cancelled_at            TIMESTAMPTZ,
    reopened_at             TIMESTAMPTZ,
    -- When the balance last went from owed to zero (NULL while something is owed).
    settled_at              TIMESTAMPTZ,
    updated_at              TIMESTAMPTZ NOT NULL,
    version                 BIGINT      NOT NULL,
    -- The domain's own state of the ticket, evolved by the domain's code on each event.
    state                   JSONB       NOT NULL
);

CREATE INDEX tickets_number_idx ON tickets (number);
CREATE INDEX tickets_status_idx ON tickets (status, raised_position);
CREATE INDEX tickets_assignee_idx ON tickets (assignee_id, raised_position);
CREATE INDEX tickets_customer_idx ON tickets (customer_id);
CREATE INDEX tickets_device_idx ON tickets (device_id);
CREATE INDEX tickets_raised_at_idx ON tickets (raised_at);

CREATE TABLE ticket_notes (
    note_id    UUID        PRIMARY KEY,
    ticket_id  UUID        NOT NULL,
    position   BIGINT      NOT NULL,
    text       TEXT        NOT NULL,
    visibility TEXT        NOT NULL,
    actor_id   TEXT        NOT NULL,
    added_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX ticket_notes_ticket_idx ON ticket_notes (ticket_id, position);

CREATE TABLE ticket_parts (
    ticket_id UUID        NOT NULL,
    position  BIGINT      NOT NULL,
    part_id   UUID        NOT NULL,
    quantity  INTEGER     NOT NULL,
    unit_cost BIGINT      NOT NULL,
    used_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (ticket_id, position)
);

CREATE TABLE ticket_payments (
    payment_id UUID        PRIMARY KEY,
    ticket_id  UUID        NOT NULL,
    position   BIGINT      NOT NULL,
    amount     BIGINT      NOT NULL,
    method     TEXT        NOT NULL,
    paid_at    TIMESTAMPTZ NOT NULL
);

CREATE INDEX ticket_payments_ticket_idx ON ticket_payments (ticket_id, position);

-- ---- projection "audit_log" ---------------------------------------------------------------

CREATE TABLE audit_log (
    position       BIGINT      PRIMARY KEY,
    stream_id      TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    event_id       UUID        NOT NULL,
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    actor_id       TEXT        NOT NULL,
    actor_role     TEXT        NOT NULL,
    command_id     UUID        NOT NULL,
    correlation_id UUID        NOT NULL,
    causation_id   UUID        NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    data           JSONB       NOT NULL
);

CREATE INDEX audit_log_stream_idx ON audit_log (stream_id, position);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, position);
CREATE INDEX audit_log_type_idx ON audit_log (event_type, position);
CREATE INDEX audit_log_time_idx ON audit_log (recorded_at);
