-- Events a projection could not apply and set aside so that it could go on (poison events).
-- `ledger projections` and `/health` show the open ones; `ledger projections retry NAME`
-- applies them again and marks them resolved. Not a read model: no rebuild touches it.
CREATE TABLE projection_dead_letters (
    projection     TEXT        NOT NULL,
    position       BIGINT      NOT NULL,
    event_id       UUID        NOT NULL,
    stream_id      TEXT        NOT NULL,
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    error          TEXT        NOT NULL,
    attempts       INTEGER     NOT NULL,
    first_seen     TIMESTAMPTZ NOT NULL,
    last_seen      TIMESTAMPTZ NOT NULL,
    resolved_at    TIMESTAMPTZ,
    PRIMARY KEY (projection, position)
);
