/*
 * 11_agents.sql: external agents: pools, claims, leases and the registry.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/* ---------------------------------------------------------------------
 * External agents
 *
 * An attempt of an agent step is a row of wf.task (src/agent.c), which an
 * agent claims with wf_claim under a lease and ends with wf_complete or
 * wf_fail; wf._agent_finish checkpoints the attempt as the executor does
 * any step's.  A lease or timeout that expires fails the attempt
 * (transient): the retry policy's next attempt is a new task.  Claiming
 * from a pool is granted by members of wf_admin (wf.pool_grant).
 * ---------------------------------------------------------------------
 */

CREATE TABLE wf.task (
	id			bigserial PRIMARY KEY,
	run_id		bigint NOT NULL,
	step		text NOT NULL,
	attempt		int NOT NULL,		-- with started_at, the step's attempt
	started_at	timestamptz NOT NULL,
	pool		text NOT NULL,
	payload		jsonb,				-- rendered as the run's owner
	requires	text[] NOT NULL,	-- capabilities a claimer must declare
	priority	int NOT NULL,
	state		text NOT NULL DEFAULT 'ready'
				CONSTRAINT task_state_check CHECK (wf._task_state_ok(state)),
	created_at	timestamptz NOT NULL DEFAULT clock_timestamp(),
	deadline	timestamptz,		-- the step's timeout
	claimed_by	regrole,			-- the role holding the lease
	agent		text,
	claimed_at	timestamptz,
	lease_until	timestamptz,
	seen_at		timestamptz,		-- the holder's last claim, heartbeat or end
	progress	jsonb,
	finished_at	timestamptz,
	fair_at		timestamptz NOT NULL	-- its step's place in the claim order
);
/*
 * The claim order: highest priority first, then by the place of the task's
 * step in the executors' claim order (its owner's fair share, wf._fair_at),
 * so that one owner's backlog of tasks does not hold another's behind it.
 */
CREATE INDEX task_ready ON wf.task (pool, priority DESC, fair_at, id) WHERE state = 'ready';
CREATE INDEX task_open ON wf.task (run_id) WHERE state IN ('ready', 'claimed');
CREATE INDEX task_due ON wf.task ((LEAST(lease_until, deadline)))
	WHERE state IN ('ready', 'claimed');
CREATE INDEX task_run ON wf.task (run_id, step);
/* An agent's tasks, its last contact first (wf.agents, lost agents). */
CREATE INDEX task_agent ON wf.task (pool, agent, seen_at);
/*
 * Tasks in flight: per pool for its limit, per agent for its load (not
 * through task_agent, which holds all its tasks ever), by last contact for
 * lost agents.
 */
CREATE INDEX task_in_flight ON wf.task (pool, agent) WHERE state = 'claimed';
CREATE INDEX task_seen ON wf.task (seen_at) WHERE state = 'claimed';

/* Pools an operator paused or limited (a pool needs no row to exist). */
CREATE TABLE wf.pool (
	pool		text PRIMARY KEY,
	paused		boolean NOT NULL DEFAULT false,
	max_in_flight int CHECK (max_in_flight > 0)	-- NULL: no limit
);

/* Roles that may claim the tasks of a pool. */
CREATE TABLE wf.pool_grant (
	pool		text NOT NULL,
	grantee		regrole NOT NULL,
	PRIMARY KEY (pool, grantee)
);

/*
 * The agents seen claiming from each pool, written only when wf_claim
 * returns: a claim waiting in the server holds no lock on its row.  Their
 * other contacts (heartbeats, ends) are on their tasks' rows.
 */
CREATE TABLE wf.agent (
	pool		text NOT NULL,
	agent		text NOT NULL,
	role		regrole NOT NULL,
	capabilities text[] NOT NULL,
	first_seen	timestamptz NOT NULL,
	last_seen	timestamptz NOT NULL,
	PRIMARY KEY (pool, agent)
);

REVOKE ALL ON wf.task, wf.pool, wf.pool_grant, wf.agent FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('wf.task', '');
SELECT pg_catalog.pg_extension_config_dump('wf.task_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wf.pool', '');
SELECT pg_catalog.pg_extension_config_dump('wf.pool_grant', '');
SELECT pg_catalog.pg_extension_config_dump('wf.agent', '');

CREATE FUNCTION wf._tasks_ready(pool text) RETURNS void
	LANGUAGE C STRICT SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'wf_tasks_ready';

CREATE FUNCTION wf._agent_finish(p_run_id bigint, p_step text, p_attempt int,
								 p_started_at timestamptz, p_output jsonb,
								 p_error text, p_retryable boolean, p_timed_out boolean)
RETURNS boolean
	LANGUAGE C SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'wf_agent_finish';

/*
 * The task of the attempt of an agent step that is starting (its step row
 * says which attempt), called by the executor in the step's
 * subtransaction: claimable once that commits.
 */
CREATE FUNCTION wf._task_create(p_run_id bigint, p_step text, p_pool text,
								p_payload jsonb, p_requires text[], p_timeout_ms int)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v_id	bigint;
BEGIN
	INSERT INTO wf.task (run_id, step, attempt, started_at, pool, payload,
						 requires, priority, deadline, fair_at)
	SELECT s.run_id, s.step, s.attempt, s.started_at, p_pool, p_payload,
		   p_requires, s.priority,
		   CASE WHEN p_timeout_ms > 0
				THEN clock_timestamp() + p_timeout_ms * interval '1 millisecond' END,
		   coalesce(s.fair_at, s.ready_at, clock_timestamp())
	  FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_step
	RETURNING id INTO v_id;
	PERFORM wf._tasks_ready(p_pool);
	/* A pool that had nothing to claim has a task now. */
	IF NOT EXISTS (SELECT 1 FROM wf.task t
					WHERE t.pool = p_pool AND t.state = 'ready' AND t.id <> v_id) THEN
		PERFORM wf._pool_notify(p_pool);
	END IF;
END
$$;

/*
 * NOTIFY wf_pool_<pool>, payload the pool's name: for agents that LISTEN
 * rather than wait in wf_claim.  PostgreSQL sends one such notification
 * per transaction however often it is asked to.
 */
CREATE FUNCTION wf._pool_notify(p_pool text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
	SELECT pg_notify('wf_pool_' || p_pool, p_pool)
	 WHERE octet_length('wf_pool_' || p_pool) < 64 AND wf._listened()
$$;

/* May role caller claim the tasks of pool p_pool? */
CREATE FUNCTION wf._may_claim(caller oid, p_pool text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN pg_has_role(caller, 'wf_admin', 'MEMBER')
		OR EXISTS (SELECT 1 FROM wf.pool_grant g
					WHERE g.pool = p_pool AND pg_has_role(caller, g.grantee::oid, 'MEMBER'));
END
$$;

/* Raises unless caller may grant, pause and resume pools. */
CREATE FUNCTION wf._check_pool_admin(caller oid, p_pool text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF p_pool IS NULL THEN
		RAISE EXCEPTION 'pool must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT pg_has_role(caller, 'wf_admin', 'MEMBER') THEN
		RAISE EXCEPTION 'permission denied for pool "%"', p_pool
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only members of wf_admin manage pools.';
	END IF;
END
$$;

/* The name an agent claims under: its own, the session's application_name, or its role's. */
CREATE FUNCTION wf._agent_name(caller oid, p_agent text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN coalesce(p_agent, nullif(current_setting('application_name'), ''),
					caller::regrole::text);
END
$$;

/* The tasks of the pool that the agent holds now (index task_in_flight). */
CREATE FUNCTION wf._agent_in_flight(p_pool text, p_agent text) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN (SELECT count(*) FROM wf.task t
			 WHERE t.pool = p_pool AND t.agent = p_agent AND t.state = 'claimed');
END
$$;

/*
 * Up to p_max ready tasks of the pool whose requirements p_caps cover,
 * highest priority first, then oldest; claimed for the caller under a
 * lease of p_lease.  Tasks whose attempt is no longer the step's running
 * one (the run was cancelled) are never handed out.
 */
CREATE FUNCTION wf._claim(caller oid, caller_path text, p_pool text, p_max int,
						  p_lease interval, p_agent text, p_caps text[], p_capacity int)
RETURNS TABLE (task_id bigint, run_id bigint, step text, payload jsonb,
			   attempt int, lease_until timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
/*
 * The claim reads task_ready in order, whatever the statistics say (see
 * wf_exec_claim); without JIT, which the cost of the sort left (ordering
 * what is returned) would otherwise buy at 250 ms a claim.
 */
SET enable_sort = off SET jit = off AS $$
#variable_conflict use_column
DECLARE
	v_agent	text := wf._agent_name(caller, p_agent);
	v_paused boolean;
	v_limit	int;
	v_max	int := p_max;
	v_over	bigint;
	v_ids	bigint[];
BEGIN
	IF p_pool IS NULL THEN
		RAISE EXCEPTION 'pool must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_max IS NULL OR p_max < 1 OR p_max > 1000 THEN
		RAISE EXCEPTION 'max must be between 1 and 1000' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF p_lease IS NULL OR p_lease <= interval '0' THEN
		RAISE EXCEPTION 'lease must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF p_caps IS NULL OR array_position(p_caps, NULL) IS NOT NULL THEN
		RAISE EXCEPTION 'capabilities must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_capacity IS NOT NULL AND p_capacity < 1 THEN
		RAISE EXCEPTION 'capacity must be at least 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT wf._may_claim(caller, p_pool) THEN
		RAISE EXCEPTION 'permission denied for pool "%"', p_pool
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'A member of wf_admin grants it with wf_grant_pool.';
	END IF;
	SELECT p.paused, p.max_in_flight INTO v_paused, v_limit FROM wf.pool p WHERE p.pool = p_pool;
	IF v_paused THEN
		RETURN;
	END IF;
	IF p_capacity IS NOT NULL THEN
		/* An agent holds at most the capacity it declares. */
		v_max := LEAST(v_max, p_capacity - wf._agent_in_flight(p_pool, v_agent));
		IF v_max <= 0 THEN
			RETURN;
		END IF;
	END IF;
	IF v_limit IS NOT NULL THEN
		/* No lock yet: a claim that finds no room locks nothing. */
		v_max := LEAST(v_max, v_limit - (SELECT count(*) FROM wf.task t
										  WHERE t.pool = p_pool AND t.state = 'claimed'));
		IF v_max <= 0 THEN
			RETURN;
		END IF;
	END IF;
	WITH c AS (
		SELECT t.id FROM wf.task t
			   /* Its step, by its key (never a join reading wf.step whole). */
			   CROSS JOIN LATERAL (SELECT FROM wf.step s
									WHERE s.run_id = t.run_id AND s.step = t.step
									  AND s.status = 'running' AND s.attempt = t.attempt
									  AND s.started_at = t.started_at
									LIMIT 1) s
		 WHERE t.pool = p_pool AND t.state = 'ready' AND t.requires <@ p_caps
		 ORDER BY t.priority DESC, t.fair_at, t.id
		 LIMIT v_max
		   FOR UPDATE OF t SKIP LOCKED
	), u AS (
		UPDATE wf.task t
		   SET state = 'claimed', claimed_by = caller, agent = v_agent,
			   claimed_at = clock_timestamp(), seen_at = clock_timestamp(),
			   lease_until = clock_timestamp() + p_lease
		  FROM c WHERE t.id = c.id
		RETURNING t.id, t.priority, t.fair_at
	)
	SELECT array_agg(u.id ORDER BY u.priority DESC, u.fair_at, u.id) INTO v_ids FROM u;
	IF v_ids IS NULL THEN
		RETURN;
	END IF;
	IF v_limit IS NOT NULL THEN
		/*
		 * The claims of a limited pool that found room take turns here, each
		 * counting again once the one before has committed: what is over
		 * the limit (the lowest in the order) goes back.  Only a claim that
		 * returns tasks holds the pool's row, never one that waits.
		 */
		SELECT p.max_in_flight INTO v_limit FROM wf.pool p WHERE p.pool = p_pool FOR UPDATE;
		v_over := LEAST((SELECT count(*) FROM wf.task t
						  WHERE t.pool = p_pool AND t.state = 'claimed') - coalesce(v_limit, 0),
						cardinality(v_ids));
		IF v_limit IS NULL THEN
			v_over := 0;		/* the limit was removed meanwhile */
		END IF;
		IF v_over > 0 THEN
			UPDATE wf.task t
			   SET state = 'ready', claimed_by = NULL, agent = NULL, claimed_at = NULL,
				   seen_at = NULL, lease_until = NULL
			 WHERE t.id = ANY (v_ids[cardinality(v_ids) - v_over + 1:]);
			v_ids := v_ids[1:cardinality(v_ids) - v_over];
			IF cardinality(v_ids) = 0 THEN
				RETURN;
			END IF;
		END IF;
	END IF;
	PERFORM wf._agent_note(caller, p_pool, v_agent, p_caps);
	/* The executors' next look at expired leases must come in time. */
	PERFORM wf._wake();
	RETURN QUERY
	SELECT t.id, t.run_id, t.step, t.payload, t.attempt, t.lease_until
	  FROM wf.task t WHERE t.id = ANY (v_ids)
	 ORDER BY t.priority DESC, t.fair_at, t.id;
END
$$;

/*
 * The load of an agent about to wait in wf_claim: its tasks in flight in
 * the pool over the capacity it declared (by default, the max it claims).
 * Of the agents waiting, a commit that makes tasks ready wakes the least
 * loaded first.
 */
CREATE FUNCTION wf._agent_load(caller oid, caller_path text, p_pool text, p_max int,
							   p_lease interval, p_agent text, p_caps text[], p_capacity int)
RETURNS float4
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN (wf._agent_in_flight(p_pool, wf._agent_name(caller, p_agent))
			/ coalesce(p_capacity, greatest(p_max, 1))::float8)::float4;
END
$$;

/*
 * The claim of an agent returns: it is seen now, with its capabilities
 * (by wf._claim when it hands out tasks, else by wf._agent_seen).
 */
CREATE FUNCTION wf._agent_note(caller oid, p_pool text, p_agent text, p_caps text[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO wf.agent AS a (pool, agent, role, capabilities, first_seen, last_seen)
	VALUES (p_pool, p_agent, caller, p_caps, clock_timestamp(), clock_timestamp())
	ON CONFLICT (pool, agent) DO UPDATE
	   SET role = EXCLUDED.role, capabilities = EXCLUDED.capabilities,
		   last_seen = EXCLUDED.last_seen;
END
$$;

/* The claim of wf_claim that returns nothing (see wf._agent_note). */
CREATE FUNCTION wf._agent_seen(caller oid, caller_path text, p_pool text, p_max int,
							   p_lease interval, p_agent text, p_caps text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM wf._agent_note(caller, p_pool, wf._agent_name(caller, p_agent), p_caps);
END
$$;

CREATE FUNCTION @extschema@.wf_claim(pool text, max int DEFAULT 1,
									 lease interval DEFAULT '5 minutes',
									 agent text DEFAULT NULL,
									 capabilities text[] DEFAULT '{}',
									 wait interval DEFAULT NULL,
									 capacity int DEFAULT NULL)
RETURNS TABLE (task_id bigint, run_id bigint, step text, payload jsonb,
			   attempt int, lease_until timestamptz)
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_claim';

/*
 * The task p_task_id, locked, after checking that caller holds its lease
 * (or is a member of wf_admin).  A task that was never claimed has no
 * holder: only wf_admin may touch it.
 */
CREATE FUNCTION wf._task_for_update(caller oid, p_task_id bigint) RETURNS wf.task
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	t	wf.task;
BEGIN
	IF p_task_id IS NULL THEN
		RAISE EXCEPTION 'task id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO t FROM wf.task WHERE id = p_task_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'task % does not exist', p_task_id USING ERRCODE = 'undefined_object';
	END IF;
	IF NOT pg_has_role(caller, 'wf_admin', 'MEMBER')
	   AND (t.claimed_by IS NULL OR t.claimed_by::oid = 0
			OR NOT pg_has_role(caller, t.claimed_by::oid, 'MEMBER')) THEN
		RAISE EXCEPTION 'permission denied for task %', p_task_id
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only the role that claimed a task and members of wf_admin may heartbeat, complete or fail it.';
	END IF;
	RETURN t;
END
$$;

/* Is the lease of t still held (claimed, not expired)? */
CREATE FUNCTION wf._task_held(t wf.task) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN t.state = 'claimed' AND t.lease_until >= clock_timestamp();
END
$$;

CREATE FUNCTION wf._heartbeat(caller oid, caller_path text, p_task_id bigint,
							  p_lease interval, p_progress jsonb)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	t	wf.task := wf._task_for_update(caller, p_task_id);
BEGIN
	IF p_lease IS NULL OR p_lease <= interval '0' THEN
		RAISE EXCEPTION 'lease must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT wf._task_held(t) THEN
		RETURN false;
	END IF;
	UPDATE wf.task SET lease_until = clock_timestamp() + p_lease,
		   seen_at = clock_timestamp(), progress = coalesce(p_progress, progress)
	 WHERE id = t.id;
	RETURN true;
END
$$;

CREATE FUNCTION @extschema@.wf_heartbeat(task_id bigint, lease interval DEFAULT '5 minutes',
										 progress jsonb DEFAULT NULL)
RETURNS boolean
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * Ends a task whose lease the caller holds: completed with p_output
 * (p_error NULL) or failed.  False, and nothing changed, when the lease is
 * not held (ended, expired) or the attempt is no longer the step's.
 */
CREATE FUNCTION wf._task_end(caller oid, p_task_id bigint, p_output jsonb,
							 p_error text, p_retryable boolean)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	t	wf.task := wf._task_for_update(caller, p_task_id);
	ok	boolean;
BEGIN
	IF NOT wf._task_held(t) THEN
		RETURN false;
	END IF;
	ok := wf._agent_finish(t.run_id, t.step, t.attempt, t.started_at, p_output,
						   p_error, p_retryable, false);
	UPDATE wf.task
	   SET state = CASE WHEN NOT ok THEN 'cancelled'
						WHEN p_error IS NULL THEN 'completed' ELSE 'failed' END,
		   finished_at = clock_timestamp(), seen_at = clock_timestamp()
	 WHERE id = t.id;
	PERFORM wf._pool_room(t.pool);
	RETURN ok;
END
$$;

CREATE FUNCTION wf._complete(caller oid, caller_path text, p_task_id bigint, p_output jsonb)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN wf._task_end(caller, p_task_id, p_output, NULL, NULL);
END
$$;

CREATE FUNCTION @extschema@.wf_complete(task_id bigint, output jsonb DEFAULT NULL)
RETURNS boolean
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION wf._fail(caller oid, caller_path text, p_task_id bigint, p_error text,
						 p_retryable boolean)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF p_error IS NULL THEN
		RAISE EXCEPTION 'error must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN wf._task_end(caller, p_task_id, NULL, p_error, coalesce(p_retryable, true));
END
$$;

CREATE FUNCTION @extschema@.wf_fail(task_id bigint, error text, retryable boolean DEFAULT true)
RETURNS boolean
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * Called by every executor's periodic look (with wf._expire_runs): tasks
 * whose lease or step timeout passed fail their attempt, transiently (if
 * it is still the step's: wf._agent_finish).  Returns when the next lease
 * or timeout passes.  One probe of index task_due when none is due.
 */
CREATE FUNCTION wf._expire_tasks() RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v		wf.task;
	late	boolean;
	lost	interval := current_setting('pg_workflow.agent_lost_after')::interval;
	/* A variable, not clock_timestamp() in the queries: an index bound. */
	t		timestamptz := clock_timestamp();
BEGIN
	FOR v IN SELECT * FROM wf.task o
			  WHERE o.state IN ('ready', 'claimed')
				AND LEAST(o.lease_until, o.deadline) < t
			  FOR UPDATE SKIP LOCKED LOOP
		late := coalesce(v.deadline < clock_timestamp(), false);
		UPDATE wf.task SET state = 'expired', finished_at = clock_timestamp()
		 WHERE id = v.id;
		PERFORM wf._pool_room(v.pool);
		PERFORM wf._agent_finish(v.run_id, v.step, v.attempt, v.started_at, NULL,
								 CASE WHEN late THEN format('agent step timed out after %s',
															v.deadline - v.created_at)
									  ELSE format('lease of task %s by agent "%s" expired',
												  v.id, v.agent) END,
								 true, late);
	END LOOP;
	/*
	 * The tasks of a lost agent (no claim, heartbeat or end of any of its
	 * tasks for pg_workflow.agent_lost_after) go back at once, not when
	 * their leases expire.
	 */
	FOR v IN SELECT * FROM wf.task o
			  WHERE o.state = 'claimed' AND o.seen_at < t - lost
				AND NOT EXISTS (SELECT 1 FROM wf.agent a
								 WHERE a.pool = o.pool AND a.agent = o.agent
								   AND a.last_seen >= t - lost)
				AND NOT EXISTS (SELECT 1 FROM wf.task x
								 WHERE x.pool = o.pool AND x.agent = o.agent
								   AND x.seen_at >= t - lost)
			  FOR UPDATE OF o SKIP LOCKED LOOP
		UPDATE wf.task SET state = 'expired', finished_at = clock_timestamp()
		 WHERE id = v.id;
		PERFORM wf._pool_room(v.pool);
		PERFORM wf._agent_finish(v.run_id, v.step, v.attempt, v.started_at, NULL,
								 format('agent "%s" holding task %s was lost (nothing heard from it for %s)',
										v.agent, v.id, lost),
								 true, false);
	END LOOP;
	RETURN LEAST((SELECT LEAST(o.lease_until, o.deadline) FROM wf.task o
				   WHERE o.state IN ('ready', 'claimed')
					 AND LEAST(o.lease_until, o.deadline) IS NOT NULL
				   ORDER BY LEAST(o.lease_until, o.deadline) LIMIT 1),
				 (SELECT o.seen_at + lost FROM wf.task o
				   WHERE o.state = 'claimed' ORDER BY o.seen_at LIMIT 1));
END
$$;

/*
 * A pool resumed, or its limit raised: as many claims waiting as it has
 * tasks ready (up to 1,000) look again, and its listeners are told.
 */
CREATE FUNCTION wf._pool_opened(p_pool text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	n	int;
BEGIN
	SELECT count(*) INTO n
	  FROM (SELECT 1 FROM wf.task t WHERE t.pool = p_pool AND t.state = 'ready' LIMIT 1000) x;
	FOR i IN 1 .. n LOOP
		PERFORM wf._tasks_ready(p_pool);
	END LOOP;
	IF n > 0 THEN
		PERFORM wf._pool_notify(p_pool);
	END IF;
END
$$;

/* A task of a limited pool left flight: claims waiting for room look again. */
CREATE FUNCTION wf._pool_room(p_pool text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM wf.pool p WHERE p.pool = p_pool AND p.max_in_flight IS NOT NULL) THEN
		PERFORM wf._tasks_ready(p_pool);
		PERFORM wf._pool_notify(p_pool)
		  WHERE EXISTS (SELECT 1 FROM wf.task t WHERE t.pool = p_pool AND t.state = 'ready');
	END IF;
END
$$;

CREATE FUNCTION wf._grant_pool(caller oid, caller_path text, p_pool text, p_role regrole)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM wf._check_pool_admin(caller, p_pool);
	IF p_role IS NULL THEN
		RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	INSERT INTO wf.pool_grant (pool, grantee) VALUES (p_pool, p_role)
	ON CONFLICT DO NOTHING;
END
$$;

CREATE FUNCTION @extschema@.wf_grant_pool(pool text, role regrole) RETURNS void
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

/* Takes a grant back; leases already held run on until they end. */
CREATE FUNCTION wf._revoke_pool(caller oid, caller_path text, p_pool text, p_role regrole)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM wf._check_pool_admin(caller, p_pool);
	DELETE FROM wf.pool_grant g WHERE g.pool = p_pool AND g.grantee = p_role;
END
$$;

CREATE FUNCTION @extschema@.wf_revoke_pool(pool text, role regrole) RETURNS void
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

/* Pauses or resumes claims from a pool; true when that changed its state. */
CREATE FUNCTION wf._pool_set_paused(caller oid, p_pool text, p_paused boolean)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	was	boolean;
BEGIN
	PERFORM wf._check_pool_admin(caller, p_pool);
	SELECT p.paused INTO was FROM wf.pool p WHERE p.pool = p_pool FOR UPDATE;
	IF coalesce(was, false) = p_paused THEN
		RETURN false;
	END IF;
	INSERT INTO wf.pool (pool, paused) VALUES (p_pool, p_paused)
	ON CONFLICT (pool) DO UPDATE SET paused = EXCLUDED.paused;
	IF NOT p_paused THEN
		PERFORM wf._pool_opened(p_pool);
	END IF;
	RETURN true;
END
$$;

CREATE FUNCTION wf._pool_pause(caller oid, caller_path text, p_pool text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	SELECT wf._pool_set_paused(caller, p_pool, true)
$$;

CREATE FUNCTION @extschema@.wf_pool_pause(pool text) RETURNS boolean
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION wf._pool_resume(caller oid, caller_path text, p_pool text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	SELECT wf._pool_set_paused(caller, p_pool, false)
$$;

CREATE FUNCTION @extschema@.wf_pool_resume(pool text) RETURNS boolean
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

/* At most p_max tasks of the pool in flight across all its agents (NULL: no limit). */
CREATE FUNCTION wf._pool_limit(caller oid, caller_path text, p_pool text, p_max int)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM wf._check_pool_admin(caller, p_pool);
	IF p_max IS NOT NULL AND p_max < 1 THEN
		RAISE EXCEPTION 'max_in_flight must be at least 1' USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Pause the pool with wf_pool_pause to hand out nothing.';
	END IF;
	INSERT INTO wf.pool (pool, max_in_flight) VALUES (p_pool, p_max)
	ON CONFLICT (pool) DO UPDATE SET max_in_flight = EXCLUDED.max_in_flight;
	/* A limit raised or removed: claims waiting for room look again. */
	PERFORM wf._pool_opened(p_pool);
END
$$;

CREATE FUNCTION @extschema@.wf_pool_limit(pool text, max_in_flight int) RETURNS void
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * Each pool's agents, for the roles they claim as and for wf_admin: lost
 * after pg_workflow.agent_lost_after without a claim or a heartbeat,
 * active while they hold a lease, idle otherwise.
 */
CREATE VIEW wf.agents WITH (security_barrier) AS
	SELECT a.pool, a.agent, a.role, a.capabilities, a.first_seen,
		   GREATEST(a.last_seen, f.seen) AS last_seen,
		   CASE WHEN GREATEST(a.last_seen, f.seen) < pg_catalog.clock_timestamp() -
					 pg_catalog.current_setting('pg_workflow.agent_lost_after')::interval
				THEN 'lost'
				WHEN f.in_flight > 0 THEN 'active'
				ELSE 'idle' END AS state,
		   f.in_flight, f.completed, f.failed,
		   h.per_minute AS completed_last_minute, h.per_hour AS completed_last_hour,
		   h.p50 AS p50_duration, h.p95 AS p95_duration
	  FROM wf.agent a
		   CROSS JOIN LATERAL (
			SELECT pg_catalog.max(t.seen_at) AS seen,
				   pg_catalog.count(*) FILTER (WHERE t.state OPERATOR(pg_catalog.=) 'claimed') AS in_flight,
				   pg_catalog.count(*) FILTER (WHERE t.state OPERATOR(pg_catalog.=) 'completed') AS completed,
				   pg_catalog.count(*) FILTER (WHERE t.state OPERATOR(pg_catalog.=) ANY ('{failed,expired}')) AS failed
			  FROM wf.task t
			 WHERE t.pool OPERATOR(pg_catalog.=) a.pool
			   AND t.agent OPERATOR(pg_catalog.=) a.agent) f
		   /* The tasks it completed in the last hour: claim to completion. */
		   CROSS JOIN LATERAL (
			SELECT pg_catalog.count(*) FILTER (
					 WHERE t.finished_at OPERATOR(pg_catalog.>=)
						   (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) interval '1 minute')) AS per_minute,
				   pg_catalog.count(*) AS per_hour,
				   pg_catalog.percentile_cont(0.5) WITHIN GROUP (
					 ORDER BY t.finished_at OPERATOR(pg_catalog.-) t.claimed_at) AS p50,
				   pg_catalog.percentile_cont(0.95) WITHIN GROUP (
					 ORDER BY t.finished_at OPERATOR(pg_catalog.-) t.claimed_at) AS p95
			  FROM wf.task t
			 WHERE t.pool OPERATOR(pg_catalog.=) a.pool
			   AND t.agent OPERATOR(pg_catalog.=) a.agent
			   AND t.seen_at OPERATOR(pg_catalog.>=)
				   (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) interval '1 hour')
			   AND t.state OPERATOR(pg_catalog.=) 'completed') h
	 WHERE pg_catalog.pg_has_role(a.role::oid, 'MEMBER')
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

GRANT SELECT ON wf.agents TO PUBLIC;

