-- The PostgreSQL stream store. Only the stream-store crate reads or writes these tables.
--
-- Positions are dense (1, 2, 3, ...) and assigned in commit order: every append transaction
-- takes one transaction-scoped advisory lock before it reads the head, so no transaction can
-- commit a position lower than one already visible. A reader that has seen position P will
-- therefore never later find a committed event at or below P (see ARCHITECTURE.md).
CREATE TABLE events (
    position       BIGINT      PRIMARY KEY CHECK (position > 0),
    stream_id      TEXT        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version > 0),
    event_id       UUID        NOT NULL UNIQUE,
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    data           JSONB       NOT NULL,
    command_id     UUID        NOT NULL,
    correlation_id UUID        NOT NULL,
    causation_id   UUID        NOT NULL,
    actor_id       TEXT        NOT NULL,
    actor_role     TEXT        NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- Idempotency: the events a command id already produced.
CREATE INDEX events_command_id_idx ON events (command_id);

-- The log is append-only: nothing may update or delete an event, whatever the client.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % is not allowed', TG_OP;
END;
$$;

CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();
