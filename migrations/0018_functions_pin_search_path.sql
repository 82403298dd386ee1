-- Functions that PostgreSQL runs as a unit (plpgsql, or SQL with settings, which are never
-- inlined) resolve names with a fixed search_path, not the caller's: a caller that put a schema
-- of its own first could otherwise put its tables or operators in their place. The priority
-- functions are left as they are: plain SQL functions the planner inlines into the queries that
-- sort and filter by them (a setting would stop that), touching no table.
ALTER FUNCTION events_are_immutable() SET search_path = public, pg_temp;
ALTER FUNCTION queue_candidates(uuid, text[], text[], text[], smallint[], bigint)
    SET search_path = public, pg_temp;
ALTER FUNCTION ledger_append(text[], bigint[], integer[], uuid[], uuid[], uuid[], text[], text[],
                             timestamp with time zone[], integer[], integer[], uuid[], text[],
                             integer[], jsonb[])
    SET search_path = public, pg_temp;
ALTER FUNCTION ledger_append(text[], bigint[], integer[], uuid[], uuid[], uuid[], text[], text[],
                             timestamp with time zone[], integer[], integer[], integer[], uuid[],
                             text[], integer[], jsonb[])
    SET search_path = public, pg_temp;
ALTER FUNCTION ledger_append(text[], bigint[], integer[], uuid[], uuid[], uuid[], text[], text[],
                             timestamp with time zone[], integer[], integer[], integer[], uuid[],
                             text[], integer[], json[])
    SET search_path = public, pg_temp;
