-- A command id names one request. `ledger_append` answered an append whose command id the log
-- already held 'duplicate', whatever request wrote it: one Idempotency-Key sent at the same
-- time with two bodies let the loser's chain go on past the winner's step (a ticket number's
-- claim, say) to a step of its own (its device's link to a ticket it never raised). Now a
-- command id already written by another request (another causation id) is answered 'reused':
-- nothing is written and, like a conflict, the chain's later steps are skipped. An exact repeat
-- (same command id, same causation id) stays a 'duplicate'.
--
-- The command-api gives every append of a request its causation id, the ones it derives (a
-- key's claim, a stock take) included. Appends derived by the previous release carry the
-- command id as causation instead, so a retry that spans the upgrade of a request left half
-- done is answered as a reuse of its key (the client retries with a new key); a request that
-- finished is answered from the log, as before, before anything is appended.
--
-- The json[] overload is replaced in place (its callers are this release and the previous
-- one, which reads 'reused' as an error it does not know); the older overloads stay as they
-- are for processes two releases back.
CREATE OR REPLACE FUNCTION ledger_append(
    j_stream      TEXT[],
    j_expected    BIGINT[],
    j_count       INTEGER[],
    j_command     UUID[],
    j_correlation UUID[],
    j_causation   UUID[],
    j_actor_id    TEXT[],
    j_actor_role  TEXT[],
    j_recorded_at TIMESTAMPTZ[],
    j_after       INTEGER[],
    e_job         INTEGER[],
    e_offset      INTEGER[],
    e_event_id    UUID[],
    e_type        TEXT[],
    e_schema      INTEGER[],
    e_data        JSON[]
) RETURNS TABLE (job INTEGER, status TEXT, version BIGINT, last_position BIGINT)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET plan_cache_mode = force_generic_plan
    SET search_path = public, pg_temp AS $$
DECLARE
    head      BIGINT;
    pos       BIGINT;
    done      UUID[];
    done_by   UUID[];
    streams   TEXT[];
    versions  BIGINT[];
    base_pos  BIGINT[] := array_fill(NULL::BIGINT, ARRAY[cardinality(j_stream)]);
    base_ver  BIGINT[] := array_fill(NULL::BIGINT, ARRAY[cardinality(j_stream)]);
    idx       INTEGER;
    actual    BIGINT;
    statuses  TEXT[] := array_fill(NULL::TEXT, ARRAY[cardinality(j_stream)]);
BEGIN
    -- The key is "LEDGER" in ASCII, as in the stream-store crate.
    PERFORM pg_advisory_xact_lock(83860381975890);
    SELECT COALESCE(MAX(events.position), 0) INTO head FROM events;
    pos := head;
    -- The command ids already in the log, each with the request (causation id) that wrote it:
    -- one per event, all of a command's events being written by one append of one request.
    SELECT COALESCE(array_agg(events.command_id), '{}'),
           COALESCE(array_agg(events.causation_id), '{}')
      INTO done, done_by
      FROM events WHERE events.command_id = ANY(j_command);
    -- One backward index probe per stream (MAX(version) ... GROUP BY would scan every
    -- version of every stream in the batch).
    SELECT COALESCE(array_agg(s.name), '{}'), COALESCE(array_agg(last.version), '{}')
      INTO streams, versions
      FROM (SELECT DISTINCT name FROM unnest(j_stream) AS u(name)) s,
           LATERAL (SELECT events.version FROM events WHERE events.stream_id = s.name
                     ORDER BY events.version DESC LIMIT 1) last;

    FOR j IN 1 .. cardinality(j_stream) LOOP
        job := j;
        IF j_after[j] IS NOT NULL
           AND statuses[j_after[j]] IS DISTINCT FROM 'appended'
           AND statuses[j_after[j]] IS DISTINCT FROM 'duplicate' THEN
            status := 'skipped'; version := NULL; last_position := NULL;
        ELSIF j_command[j] = ANY(done) THEN
            IF done_by[array_position(done, j_command[j])] = j_causation[j] THEN
                status := 'duplicate';
            ELSE
                status := 'reused';
            END IF;
            version := NULL; last_position := NULL;
        ELSE
            idx := array_position(streams, j_stream[j]);
            actual := CASE WHEN idx IS NULL THEN 0 ELSE versions[idx] END;
            IF j_expected[j] IS NOT NULL AND j_expected[j] <> actual THEN
                status := 'conflict'; version := actual; last_position := NULL;
            ELSE
                base_pos[j] := pos;
                base_ver[j] := actual;
                pos := pos + j_count[j];
                IF idx IS NULL THEN
                    streams := streams || j_stream[j];
                    versions := versions || (actual + j_count[j]);
                ELSE
                    versions[idx] := actual + j_count[j];
                END IF;
                done := done || j_command[j];
                done_by := done_by || j_causation[j];
                status := 'appended'; version := actual + j_count[j]; last_position := pos;
            END IF;
        END IF;
        statuses[j] := status;
        RETURN NEXT;
    END LOOP;

    IF pos > head THEN
        INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                            data, command_id, correlation_id, causation_id, actor_id,
                            actor_role, recorded_at)
        SELECT base_pos[e.j] + e.k, j_stream[e.j], base_ver[e.j] + e.k, e.id, e.t, e.s, e.d,
               j_command[e.j], j_correlation[e.j], j_causation[e.j], j_actor_id[e.j],
               j_actor_role[e.j], j_recorded_at[e.j]
          FROM UNNEST(e_job, e_offset, e_event_id, e_type, e_schema, e_data) AS e(j, k, id, t, s, d)
         WHERE base_pos[e.j] IS NOT NULL;
    END IF;
END;
$$;
