-- Projector checkpoints and the first read models. Only the projections crate writes here.

CREATE TABLE projection_checkpoints (
    name       TEXT        PRIMARY KEY,
    position   BIGINT      NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Ticket queue: one row per ticket, with the names it shows denormalised.
CREATE TABLE ticket_queue_customers (
    customer_id UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    tier        TEXT NOT NULL
);

CREATE TABLE ticket_queue_technicians (
    technician_id UUID    PRIMARY KEY,
    name          TEXT    NOT NULL,
    active        BOOLEAN NOT NULL
);

CREATE TABLE ticket_queue (
    ticket_id       UUID        PRIMARY KEY,
    number          TEXT        NOT NULL UNIQUE,
    raised_position BIGINT      NOT NULL UNIQUE,
    status          TEXT        NOT NULL,
    category        TEXT        NOT NULL,
    subject         TEXT        NOT NULL,
    severity        TEXT        NOT NULL,
    impact          SMALLINT    NOT NULL,
    customer_id     UUID        NOT NULL,
    customer_name   TEXT        NOT NULL,
    customer_tier   TEXT        NOT NULL,
    assignee_id     UUID,
    assignee_name   TEXT,
    version         BIGINT      NOT NULL,
    raised_at       TIMESTAMPTZ NOT NULL,
    assigned_at     TIMESTAMPTZ,
    started_at      TIMESTAMPTZ,
    resolved_at     TIMESTAMPTZ,
    closed_at       TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX ticket_queue_status_idx ON ticket_queue (status, raised_position);
CREATE INDEX ticket_queue_assignee_idx ON ticket_queue (assignee_id, raised_position);
CREATE INDEX ticket_queue_customer_idx ON ticket_queue (customer_id);

-- Audit log: every event of the store, as auditors read it.
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
