/*
 * 02_helpers.sql: internal helpers shared by the other parts (owner only).
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/* ---------------------------------------------------------------------
 * Internal helpers (owner only)
 * ---------------------------------------------------------------------
 */

/* Asks the executors to look for work when the current transaction commits. */
CREATE FUNCTION wf._wake() RETURNS void
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_wake';

/*
 * Asks the executors to make the changes queued in wf.deferred when the
 * current transaction commits.
 */
CREATE FUNCTION wf._defer() RETURNS void
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_defer';

/* Wakes the run's wf_wait callers when the current transaction commits. */
/*
 * The engine's own transaction-level locks (api.c): advisory locks in a key
 * space that pg_advisory_* cannot reach, so that no user code can hold one.
 */
CREATE FUNCTION wf._xact_lock(key1 int, key2 int, shared boolean, try boolean)
RETURNS boolean
	LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'wf_xact_lock';

CREATE FUNCTION wf._fair_at(owner oid) RETURNS timestamptz
	LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'wf_fair_at';

CREATE FUNCTION wf._run_ended(run_id bigint) RETURNS void
	LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'wf_run_ended';

CREATE FUNCTION wf._xid_is_current(xid) RETURNS boolean
	LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'wf_xid_is_current';

/*
 * The run whose step the calling executor is executing, or NULL (not in an
 * executor, or not inside a step): a run started from there is its child
 * for the depth limit.
 */
CREATE FUNCTION wf._current_run() RETURNS bigint
	LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'wf_current_run';

/*
 * Warns when no executor would run a run started now (api.c): once per
 * transaction, from wf_start.
 */
CREATE FUNCTION wf._check_executors() RETURNS void
	LANGUAGE C SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'wf_check_executors';

/* Interrupts a step of the run that an executor is running right now. */
CREATE FUNCTION wf._interrupt(run_id bigint) RETURNS void
	LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'wf_interrupt';

CREATE FUNCTION wf._check_definition(definition jsonb) RETURNS void
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_check_definition';

/*
 * Raises 22023 unless hosts is a list in the syntax of
 * pg_workflow.http_allowed_hosts (http.c, where the matcher is).
 */
CREATE FUNCTION wf._check_hosts(hosts text) RETURNS void
	LANGUAGE C STRICT SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'wf_check_hosts';

/*
 * The kind of a step given by its object (its action key), from the one
 * table of step kinds (kinds.c); NULL unless it has exactly one action, of
 * a kind the engine runs and, with compensate, one that may undo a step.
 */
CREATE FUNCTION wf._step_kind(spec jsonb, compensate boolean DEFAULT false) RETURNS text
	LANGUAGE C IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'wf_step_kind';

/*
 * Does any session LISTEN to one of the engine's channels (wf_events,
 * wf_alerts, wf_pool_<pool>)?  The engine notifies only then: PostgreSQL
 * serialises the commits of all transactions that notify (src/listen.c).
 */
CREATE FUNCTION wf._listened() RETURNS boolean
	LANGUAGE C PARALLEL SAFE AS 'MODULE_PATHNAME', 'wf_listened';

/* Announces a run transition on channel wf_events, as configured. */
CREATE FUNCTION wf._notify(run_id bigint, workflow text, step text, status text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF ((step IS NULL AND current_setting('pg_workflow.notify') <> 'off')
		OR current_setting('pg_workflow.notify') = 'steps')
	   AND wf._listened() THEN
		PERFORM pg_notify('wf_events',
						  json_build_object('run', run_id, 'workflow', workflow,
											'step', step, 'status', status)::text);
	END IF;
END
$$;

/* Is a jsonb value an integer that fits in int4? */
CREATE FUNCTION wf._is_integer(v jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT jsonb_typeof(v) = 'number'
	   AND (v::text)::numeric = trunc((v::text)::numeric)
	   AND abs((v::text)::numeric) <= 2147483647
$$;

/* May role "caller" see and control runs of role "owner"? */
CREATE FUNCTION wf._may_control(caller oid, owner oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT caller = owner
		OR pg_has_role(caller, 'wf_admin', 'MEMBER')
		OR (owner <> 0 AND pg_has_role(caller, owner, 'MEMBER'))
$$;

/*
 * Locks a run the caller controls, or raises the right error.
 */
CREATE FUNCTION wf._lock_run(caller oid, p_run_id bigint) RETURNS wf.run
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
BEGIN
	IF p_run_id IS NULL THEN
		RAISE EXCEPTION 'run id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO r FROM wf.run WHERE id = p_run_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'run % does not exist', p_run_id USING ERRCODE = 'undefined_object';
	END IF;
	IF NOT wf._may_control(caller, r.owner) THEN
		RAISE EXCEPTION 'permission denied for run %', p_run_id
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only the role that started a run and members of wf_admin may control it.';
	END IF;
	RETURN r;
END
$$;

/*
 * Brings a run's bookkeeping back in line with its steps after a structural
 * change (retry, rewind): deps_left and readiness of every unfinished step,
 * and the run's count of unfinished steps.
 */
CREATE FUNCTION wf._recompute(p_run_id bigint) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
	UPDATE wf.step s
	   SET deps_left = d.n,
		   status = CASE WHEN d.n = 0 THEN 'ready' ELSE 'pending' END,
		   ready_at = CASE WHEN d.n = 0 THEN clock_timestamp() END
	  FROM (SELECT s2.step,
				   (SELECT count(*) FROM wf.step p
					 WHERE p.run_id = s2.run_id AND p.step = ANY (s2.deps)
					   AND p.status NOT IN ('completed', 'skipped'))::int AS n
			  FROM wf.step s2
			 WHERE s2.run_id = p_run_id
			   AND s2.status IN ('pending', 'ready', 'failed', 'cancelled')
			   -- waiting for a slot of its step concurrency key: it keeps its place
			   AND (s2.status <> 'pending' OR coalesce(s2.wait_key, '') NOT LIKE 'slot:%')) d
	 WHERE s.run_id = p_run_id AND s.step = d.step;
	UPDATE wf.run r
	   SET steps_left = (SELECT count(*) FROM wf.step s
						  WHERE s.run_id = r.id
							AND s.status NOT IN ('completed', 'skipped'))
	 WHERE r.id = p_run_id;
$$;

/*
 * Compiles a validated definition into its plan: the top-level steps with
 * their kind, explicit or implicit dependencies and successors.
 */
CREATE FUNCTION wf._plan_list(steps jsonb, prefix text) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	WITH s AS (
		SELECT e.ord::int AS ord, e.spec, prefix || (e.spec->>'name') AS name,
			   e.spec->>'name' AS label,
			   CASE WHEN e.spec ? 'dependencies'
					THEN ARRAY(SELECT prefix || d FROM jsonb_array_elements_text(e.spec->'dependencies') d)
					WHEN e.ord = 1 THEN '{}'::text[]
					ELSE ARRAY[prefix || (steps->(e.ord::int - 2)->>'name')]
			   END AS deps,
			   wf._step_kind(e.spec) AS kind
		  FROM jsonb_array_elements(steps) WITH ORDINALITY AS e(spec, ord)
	)
	SELECT jsonb_agg(jsonb_build_object(
			'name', s.name, 'label', s.label, 'ord', s.ord, 'kind', s.kind, 'spec', s.spec,
			'deps', to_jsonb(s.deps),
			'successors', to_jsonb(ARRAY(SELECT o.name FROM s o
										  WHERE s.name = ANY (o.deps)
										  ORDER BY o.ord)))
		   ORDER BY s.ord)
	  FROM s
$$;

CREATE FUNCTION wf._plan(definition jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT wf._plan_list(definition->'steps', '')
$$;

/*
 * The name of a step's family: a map's items are one, "price[*]" for
 * "price[0]", "price[1]"... (also below an item: "m[*]/deep").  Plain SQL
 * with qualified names, so that it is inlined into the queries over many
 * step rows that call it (wf_metrics, wf_recommendations); the pattern an
 * escape string, the same whatever the caller's standard_conforming_strings.
 */
CREATE FUNCTION wf._step_family(step text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT CASE WHEN pg_catalog.strpos(step, '[') > 0
				THEN pg_catalog.regexp_replace(step, E'\\[[0-9]+\\]', '[*]', 'g')
				ELSE step END
$$;

/*
 * Does the role exist?  Locks it until the end of the transaction, as
 * PostgreSQL does for the roles its catalogs depend on, so that it is not
 * dropped before what is being recorded for it has committed (DROP ROLE
 * waits, and the executors' sweep, wf._sweep_dropped_roles, then sees it).
 * A missing role is an error unless missing_ok.
 */
CREATE FUNCTION wf._lock_role(role oid, missing_ok boolean) RETURNS boolean
	LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'wf_lock_role';

