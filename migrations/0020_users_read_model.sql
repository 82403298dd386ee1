-- The users as the read side shows them (the `users` projection): who an actor id is (a note's
-- author, an event's actor) by name and role, and the accounts admins manage. Until now each
-- lookup folded the user's whole stream, which grows with every sign-in. The projection starts
-- at position 0 on its own checkpoint, so a deployed database fills the table as it catches up.
CREATE TABLE users (
    user_id              UUID        PRIMARY KEY,
    email                TEXT        NOT NULL,
    name                 TEXT        NOT NULL,
    role                 TEXT        NOT NULL,
    customer_id          UUID,
    technician_id        UUID,
    active               BOOLEAN     NOT NULL,
    must_change_password BOOLEAN     NOT NULL,
    registered_at        TIMESTAMPTZ NOT NULL,
    last_signed_in_at    TIMESTAMPTZ,
    updated_at           TIMESTAMPTZ NOT NULL
);
