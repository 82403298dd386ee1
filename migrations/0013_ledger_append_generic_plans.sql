-- `ledger_append` plans its statements once per session instead of at every call. They take
-- the call's arrays as parameters, and PL/pgSQL's plan cache kept planning them anew with each
-- call's values (custom plans), which no value changes: every statement is an index probe or
-- the batch's insert, sequential scans being off for the function (0005). Measured with
-- pg_stat_statements over `ledger bench --only commands --seconds 5` (dev cluster, alternated
-- three times with the setting made cluster-wide): 0.61 / 0.57 / 0.61 ms per call of about
-- ten events with custom plans, 0.46 / 0.46 / 0.46 ms with the generic ones.
-- Both overloads: the 15-argument one of 0009 still serves processes of the previous release.
ALTER FUNCTION ledger_append(TEXT[], BIGINT[], INTEGER[], UUID[], UUID[], UUID[], TEXT[], TEXT[],
                             TIMESTAMPTZ[], INTEGER[], INTEGER[], INTEGER[], UUID[], TEXT[],
                             INTEGER[], JSONB[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION ledger_append(TEXT[], BIGINT[], INTEGER[], UUID[], UUID[], UUID[], TEXT[], TEXT[],
                             TIMESTAMPTZ[], INTEGER[], INTEGER[], UUID[], TEXT[], INTEGER[],
                             JSONB[])
    SET plan_cache_mode = force_generic_plan;
