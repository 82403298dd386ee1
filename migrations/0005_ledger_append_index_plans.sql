-- The writer's session keeps ledger_append's statement plans. A plan made while `events` was
-- still small (a fresh database) reads the whole table for the command-id check
-- (`command_id = ANY(...)`), and keeps doing so until the next ANALYZE invalidates it: measured
-- at 1.0 ms of a 1.8 ms call on a 40k-event log. Every statement in the function is meant to be
-- an index probe (head, command ids, stream versions), so sequential scans are switched off for
-- its duration; the setting is restored when it returns.
ALTER FUNCTION ledger_append(TEXT[], BIGINT[], INTEGER[], UUID[], UUID[], UUID[], TEXT[], TEXT[],
                             TIMESTAMPTZ[], INTEGER[], INTEGER[], UUID[], TEXT[], INTEGER[],
                             JSONB[])
    SET enable_seqscan = off;
