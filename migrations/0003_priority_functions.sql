-- The priority engine's arithmetic for queries that order or filter by the current priority.
-- It mirrors domain/src/priority.rs (a test checks both agree); `policy` is the JSON of
-- `PriorityPolicy`, passed by the caller so that configuration changes apply at once.

CREATE FUNCTION priority_base_score(severity TEXT, tier TEXT, impact INTEGER, policy JSONB)
RETURNS INTEGER LANGUAGE sql IMMUTABLE AS $$
    SELECT (policy->>'severity_weight')::int
             * CASE severity WHEN 'critical' THEN 5 WHEN 'major' THEN 3 ELSE 1 END
         + (policy->>'tier_weight')::int
             * CASE tier WHEN 'enterprise' THEN 5 WHEN 'paid' THEN 3 ELSE 1 END
         + (policy->>'impact_weight')::int * impact
$$;

CREATE FUNCTION priority_score(severity TEXT, tier TEXT, impact INTEGER, raised_at TIMESTAMPTZ,
                               at TIMESTAMPTZ, policy JSONB)
RETURNS INTEGER LANGUAGE sql IMMUTABLE AS $$
    SELECT priority_base_score(severity, tier, impact, policy)
         + CASE WHEN (policy->>'age_step_hours')::int = 0 THEN 0
                ELSE LEAST((policy->>'max_age_points')::bigint,
                           GREATEST(0, floor(extract(epoch FROM (at - raised_at)) / 3600)::bigint
                                       / (policy->>'age_step_hours')::int))::int
           END
$$;

CREATE FUNCTION priority_level(score INTEGER, policy JSONB)
RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN score >= (policy->>'p0_from')::int THEN 'P0'
                WHEN score >= (policy->>'p1_from')::int THEN 'P1'
                WHEN score >= (policy->>'p2_from')::int THEN 'P2'
                ELSE 'P3' END
$$;

-- When a ticket is due: its raise time plus the SLA hours of the level it was raised at.
CREATE FUNCTION ticket_due_at(severity TEXT, tier TEXT, impact INTEGER, raised_at TIMESTAMPTZ,
                              policy JSONB)
RETURNS TIMESTAMPTZ LANGUAGE sql IMMUTABLE AS $$
    SELECT raised_at + make_interval(hours =>
        (policy->>('sla_hours_' || lower(priority_level(
            priority_base_score(severity, tier, impact, policy), policy))))::int)
$$;
