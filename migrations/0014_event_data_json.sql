-- Event payloads are stored as `json`, the text the writer sent, instead of `jsonb`.
--
-- Nothing in the database looks inside a payload: the log is read back whole, by stream or by
-- position, and decoded by the application. `jsonb` made every read convert the binary form
-- back to text (jsonb_out), which was the largest single cost of a projection rebuild:
-- pg_stat_statements over `ledger rebuild service_desk` on one million generated events gave
-- 2.07 s of database time to the log reads, about 1.65 us per event of it in jsonb_out. `json`
-- is checked to be JSON when written and sent back as it was stored.
--
-- `json` accepts the escape \u0000, which `jsonb` and `text` refuse: the stream store refuses
-- such a payload before it reaches the database (PendingEvent::new), so every stored payload
-- still converts to `jsonb` (the audit log page does, for the events its projection did not
-- copy).
--
-- The ALTER rewrites the table under an exclusive lock: appends wait for it, once.
ALTER TABLE events ALTER COLUMN data TYPE json USING data::json;

-- A new overload taking the payloads as `json`. The ones taking `jsonb[]` (0009, 0011) stay,
-- for a process of the previous release during an upgrade: jsonb converts to json on
-- assignment. All take the same advisory lock, so positions stay dense whichever writes.
CREATE FUNCTION ledger_append(
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
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    head      BIGINT;
    pos       BIGINT;
    done      UUID[];
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
    SELECT COALESCE(array_agg(DISTINCT events.command_id), '{}') INTO done
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
            status := 'duplicate'; version := NULL; last_position := NULL;
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
