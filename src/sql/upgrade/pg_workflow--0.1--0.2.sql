/*
 * pg_workflow--0.1--0.2.sql: from version 0.1 to 0.2 (ALTER EXTENSION
 * pg_workflow UPDATE).
 *
 * Its changes, then the parts new in 0.2 (src/sql/15_recommendations.sql)
 * and src/sql/99_finish.sql, appended by the Makefile.  A function that
 * 0.2 changes or adds is named here by a line "-- @function NAME", which
 * the Makefile (scripts/sql-upgrade.awk) replaces with its definition in
 * the parts: it is written once.  TAP
 * test 044_upgrade checks that a database updated from 0.1 has exactly the
 * objects of one where 0.2 was installed, and that the runs in flight
 * during the update go on.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_workflow UPDATE TO '0.2'" to load this file. \quit

/*
 * Small functions of the executors' and agents' hot paths, in PL/pgSQL
 * rather than SQL: a SQL function with a SET clause is never inlined and
 * is parsed and planned again in every transaction that calls it (246 us a
 * call for wf._next_deadline, called before every batch); PL/pgSQL keeps
 * its plans for the session.
 */
-- @function wf._next_deadline

-- @function wf._may_claim

-- @function wf._agent_name

-- @function wf._agent_in_flight

-- @function wf._agent_load

/*
 * Tasks are claimed in their steps' fair order (wf.task.fair_at): those
 * made before the update take their creation time.
 */
ALTER TABLE wf.task ADD COLUMN fair_at timestamptz;
UPDATE wf.task SET fair_at = created_at;
ALTER TABLE wf.task ALTER COLUMN fair_at SET NOT NULL;
DROP INDEX wf.task_ready;
CREATE INDEX task_ready ON wf.task (pool, priority DESC, fair_at, id) WHERE state = 'ready';
-- @function wf._task_create

/* A claim that hands out tasks notes the agent itself (wf._agent_note). */
-- @function wf._agent_note

-- @function wf._agent_seen

-- @function wf._claim

-- @function wf._task_held


/*
 * Step concurrency keys (see src/sql/13_flow_control.sql).
 */

ALTER TABLE wf.step ADD COLUMN slot_key text;
CREATE INDEX step_slot_key ON wf.step (slot_key) WHERE slot_key IS NOT NULL;

CREATE TABLE wf.step_slot (
	key			text PRIMARY KEY,
	lim			int NOT NULL,			-- the limit of the latest take
	active		int NOT NULL			-- steps holding a slot
);

CREATE TABLE wf.step_slot_wait (
	run_id		bigint NOT NULL,
	step		text NOT NULL,
	key			text NOT NULL,
	priority	int NOT NULL,
	queued_at	timestamptz NOT NULL,
	lim			int NOT NULL,			-- the step's own limit
	PRIMARY KEY (run_id, step)
);
CREATE INDEX step_slot_wait_next ON wf.step_slot_wait (key, priority DESC, queued_at, run_id, step);

/* Releases (release) and fills (not release) for the executors to make. */
CREATE TABLE wf.step_slot_release (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	key			text NOT NULL,
	release		boolean NOT NULL
);

REVOKE ALL ON wf.step_slot, wf.step_slot_wait, wf.step_slot_release FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('wf.step_slot', '');
SELECT pg_catalog.pg_extension_config_dump('wf.step_slot_wait', '');
SELECT pg_catalog.pg_extension_config_dump('wf.step_slot_release', '');

-- @function wf._render_key

-- @function wf._flow_key

-- @function wf._step_slot_key

-- @function wf._slot_take

-- @function wf._slot_fill

-- @function wf._slot_release

-- @function wf._slot_defer

-- @function wf._slot_queued

-- @function wf._step_slot_released

CREATE TRIGGER step_slot_released AFTER UPDATE OF status ON wf.step
	FOR EACH ROW
	WHEN (NEW.slot_key IS NOT NULL)
	EXECUTE FUNCTION wf._step_slot_released();

CREATE OR REPLACE VIEW wf.concurrency WITH (security_barrier) AS
	SELECT c.key, c.lim AS "limit", c.active,
		   (SELECT count(*) FROM wf.concurrency_hold h
			 WHERE h.key OPERATOR(pg_catalog.=) c.key AND h.waiting)::int AS waiting,
		   'run'::text AS scope
	  FROM wf.concurrency_slot c
	 WHERE (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'))
		OR EXISTS (SELECT 1 FROM wf.concurrency_hold h JOIN wf.run r ON r.id OPERATOR(pg_catalog.=) h.run_id
					WHERE h.key OPERATOR(pg_catalog.=) c.key
					  AND r.owner OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles
														   WHERE rolname OPERATOR(pg_catalog.=) current_user))
	UNION ALL
	SELECT c.key, c.lim, c.active,
		   (SELECT count(*) FROM wf.step_slot_wait w JOIN wf.step s
				ON s.run_id OPERATOR(pg_catalog.=) w.run_id AND s.step OPERATOR(pg_catalog.=) w.step
			 WHERE w.key OPERATOR(pg_catalog.=) c.key
			   AND s.status OPERATOR(pg_catalog.=) 'pending'
			   AND s.wait_key OPERATOR(pg_catalog.=) ('slot:' OPERATOR(pg_catalog.||) c.key))::int,
		   'step'::text
	  FROM wf.step_slot c
	 WHERE (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'))
		OR EXISTS (SELECT 1 FROM wf.step s JOIN wf.run r ON r.id OPERATOR(pg_catalog.=) s.run_id
					WHERE s.slot_key OPERATOR(pg_catalog.=) c.key
					  AND r.owner OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles
														   WHERE rolname OPERATOR(pg_catalog.=) current_user))
		OR EXISTS (SELECT 1 FROM wf.step_slot_wait w JOIN wf.run r ON r.id OPERATOR(pg_catalog.=) w.run_id
					WHERE w.key OPERATOR(pg_catalog.=) c.key
					  AND r.owner OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles
														   WHERE rolname OPERATOR(pg_catalog.=) current_user));

COMMENT ON VIEW wf.concurrency IS 'concurrency keys in use, of runs and of steps: limit, active and waiting';

DROP FUNCTION wf._step_load(bigint, text, int);

-- @function wf._step_load

-- @function wf._run_deferred

-- @function wf._rewind

-- @function wf._recompute

/* A run is admitted under its own limit, not the latest one of its key. */
-- @function wf._flow_admit

/* A freed slot of a run key goes to a waiting run its own limit lets in. */
-- @function wf._flow_release

/* Debounce does not fold into a run whose first step holds or waits for a step slot. */
-- @function wf._flow_gate

/*
 * The name of a step's family: a map's items are one, "price[*]" for
 * "price[0]", "price[1]"... (also below an item: "m[*]/deep").  Plain SQL
 * with qualified names, so that it is inlined into the queries over many
 * step rows that call it (wf_metrics, wf_recommendations).
 */
-- @function wf._step_family

/*
 * The arguments of wf_metrics and wf_recommendations: a workflow that
 * exists and a window that is not negative.
 */
-- @function wf._check_window

/*
 * wf_metrics without JIT (which cost more than it saved on a million steps),
 * reaching the steps by the plan the planner picks and renaming only the
 * steps of a map.
 */
/*
 * wf_metrics has a column more (skip_rate): its functions and the view over
 * it are made anew.
 */
DROP VIEW wf.metrics;
DROP FUNCTION @extschema@.wf_metrics(text, interval);
DROP FUNCTION wf._metrics(oid, text, text, interval);
-- @function wf._metrics
-- @function @extschema@.wf_metrics
-- @view wf.metrics
GRANT SELECT ON wf.metrics TO PUBLIC;
COMMENT ON FUNCTION @extschema@.wf_metrics(text, interval) IS 'executions, success, error and skip rates, duration percentiles of a workflow and of each of its steps, and the bottleneck steps of their critical paths';
COMMENT ON VIEW wf.metrics IS 'every workflow''s figures of the last hour, one row per workflow and measure (for a Prometheus SQL exporter): runs ended, completed, failed, cancelled, success and error ratios, run duration mean and percentiles in seconds, runs pending, running and waiting now';

/* A breaker's record says when a failure opened it (wf_recommendations). */
DROP FUNCTION wf._breaker_record(text, boolean, int, interval);

/*
 * Counts a request's outcome on its host's breaker; true if this failure
 * opened it (the step's error says so, for wf_recommendations).
 */
-- @function wf._breaker_record

/* The breakers of agent pools: wf.circuit_breakers has a column more. */
DROP VIEW wf.circuit_breakers;
-- @view wf.circuit_breakers
GRANT SELECT ON wf.circuit_breakers TO PUBLIC;
COMMENT ON VIEW wf.circuit_breakers IS 'the circuit breakers of http hosts and agent pools: state, failures, when they close again';

/*
 * The engine notifies only while a session listens to one of its channels
 * (src/listen.c): PostgreSQL serialises the commits of all transactions
 * that notify.
 */
-- @function wf._listened
-- @function wf._notify
-- @function wf._pool_notify
-- @function wf._alert

/*
 * A top-level step's checkpoint locks its run by the update that counts it
 * done, not by a lock of its own first (one statement less a step).
 */
DROP FUNCTION wf._step_done(bigint, text, text, jsonb, boolean);
-- @function wf._step_done

/*
 * The state columns are checked by a function (src/states.c) rather than
 * an IN list, which every statement writing the table read back and
 * simplified again.
 */
-- @function wf._run_status_ok
-- @function wf._step_status_ok
-- @function wf._task_state_ok
ALTER TABLE wf.run DROP CONSTRAINT run_status_check,
	ADD CONSTRAINT run_status_check CHECK (wf._run_status_ok(status));
ALTER TABLE wf.step DROP CONSTRAINT step_status_check,
	ADD CONSTRAINT step_status_check CHECK (wf._step_status_ok(status));
ALTER TABLE wf.task DROP CONSTRAINT task_state_check,
	ADD CONSTRAINT task_state_check CHECK (wf._task_state_ok(state));

/*
 * Fewer index entries a step: the history has one index, by run, and a
 * step enters step_context once, as it ends.
 */
ALTER TABLE wf.history_log DROP CONSTRAINT history_log_pkey,
	ADD CONSTRAINT history_log_pkey PRIMARY KEY (run_id, id);
DROP INDEX wf.history_log_run;
DROP INDEX wf.step_context;
CREATE INDEX step_context ON wf.step (run_id)
	WHERE label IS NOT NULL
	  AND status IN ('completed', 'failed', 'skipped', 'escalated', 'compensated', 'cancelled');

/*
 * SLAs: AFTER triggers instead of BEFORE ones, under which every update of
 * a run or a step locked its row first (a WAL record each); the sla_at of
 * a run and of a step are set at their start by wf._step_load.
 */
DROP TRIGGER run_sla ON wf.run;
DROP TRIGGER step_sla ON wf.step;
-- @function wf._run_sla
-- @function wf._step_sla
CREATE TRIGGER run_sla AFTER UPDATE OF status ON wf.run
	FOR EACH ROW
	WHEN (NEW.sla_at IS NOT NULL)
	EXECUTE FUNCTION wf._run_sla();
CREATE TRIGGER step_sla AFTER UPDATE OF status ON wf.step
	FOR EACH ROW
	WHEN (NEW.sla_at IS NOT NULL)
	EXECUTE FUNCTION wf._step_sla();

/* A start without an idempotency key inserts its run without ON CONFLICT. */
-- @function wf._start
