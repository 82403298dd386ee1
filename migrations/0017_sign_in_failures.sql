-- Failed password checks per key (an account at an address, an account, an address), shared
-- by every process (command-api/src/throttle.rs). Not derived from events: sign-ins and their
-- failures are not history; rows idle past the window (15 minutes) are deleted now and then.
CREATE TABLE sign_in_failures (
    key           TEXT        PRIMARY KEY,
    failures      INTEGER     NOT NULL,
    last_at       TIMESTAMPTZ NOT NULL,
    blocked_until TIMESTAMPTZ
);

CREATE INDEX sign_in_failures_last_at_idx ON sign_in_failures (last_at);
