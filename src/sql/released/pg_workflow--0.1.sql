/* pg_workflow--0.1.sql: schema, views and SQL API of pg_workflow */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_workflow" to load this file. \quit

/*
 * Integrity
 *
 * The tables below are written only by the functions of this file, which
 * keep them consistent (a run's steps are created with it; runs and
 * definitions are never deleted).  They carry no foreign keys: the
 * executors update a step several times per transaction, and every such
 * update would re-check the keys of a row the same transaction inserted or
 * changed before.
 *
 * Layout
 *
 * Everything the engine stores lives in schema wf, in tables no role but
 * the extension's owner can touch.  Users read them through the views at
 * the end of this file, which show each role its own runs (all of them to
 * members of wf_admin), and change them only through the wf_* functions.
 *
 * Each public wf_* function that writes is a C shim (api.c) that calls the
 * SECURITY DEFINER function wf._NAME with the caller's role prepended: the
 * caller cannot be forged, because nobody but the owner may execute
 * wf._NAME directly.
 */
CREATE SCHEMA wf;
REVOKE ALL ON SCHEMA wf FROM PUBLIC;
GRANT USAGE ON SCHEMA wf TO PUBLIC;

CREATE FUNCTION wf._check_database() RETURNS void
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_check_database';
SELECT wf._check_database();

DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'wf_admin') THEN
		CREATE ROLE wf_admin NOLOGIN;
	END IF;
END
$$;

/* ---------------------------------------------------------------------
 * Tables
 * ---------------------------------------------------------------------
 */

CREATE TABLE wf.workflow_def (
	name		text NOT NULL,
	version		int NOT NULL,
	definition	jsonb NOT NULL,
	plan		jsonb NOT NULL,		-- top-level steps with deps and successors
	defaults	jsonb NOT NULL,		-- workflow-level retry and on_error
	description	text,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	created_by	regrole NOT NULL,
	PRIMARY KEY (name, version)
);

CREATE TABLE wf.run (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	workflow	text NOT NULL,
	version		int NOT NULL,
	status		text NOT NULL CHECK (status IN ('pending', 'running', 'waiting',
						'completed', 'failed', 'cancelled')),
	input		jsonb NOT NULL,
	output		jsonb,
	error		jsonb,
	owner		regrole NOT NULL,
	search_path	text NOT NULL,
	priority	int NOT NULL DEFAULT 0,
	idempotency_key text,
	steps_left	int NOT NULL,		-- top-level steps not yet finished
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	start_at	timestamptz,
	started_at	timestamptz,
	finished_at	timestamptz,
	deadline	timestamptz,		-- the workflow's "timeout", from the start
	compensating jsonb,				-- while a saga undoes: why, and what is undone
	parent_run	bigint,				-- a child run: the run and step waiting for it
	parent_step	text,
	depth		int NOT NULL DEFAULT 0,	-- 0, or origin_run's depth + 1
	origin_run	bigint				-- the run whose step started this one
);
CREATE UNIQUE INDEX run_idempotency_key ON wf.run (workflow, idempotency_key)
	WHERE idempotency_key IS NOT NULL;
CREATE INDEX run_owner ON wf.run (owner, id);
CREATE INDEX run_unfinished ON wf.run (id)
	WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX run_deadline ON wf.run (deadline)
	WHERE status IN ('pending', 'running', 'waiting') AND deadline IS NOT NULL;
/* A run's unfinished child runs, which end with it (see wf._finish_run). */
CREATE INDEX run_parent ON wf.run (parent_run)
	WHERE parent_run IS NOT NULL AND status IN ('pending', 'running', 'waiting');
/* Finished runs, oldest first, for pg_workflow.retention. */
CREATE INDEX run_finished ON wf.run (finished_at)
	WHERE status IN ('completed', 'failed', 'cancelled');

CREATE TABLE wf.step (
	run_id		bigint NOT NULL,		-- a wf.run; see below on integrity
	step		text NOT NULL,
	ord			int NOT NULL,		-- position in the definition
	kind		text NOT NULL,		-- the action key, e.g. 'sql'
	spec		jsonb NOT NULL,		-- the step's definition
	status		text NOT NULL CHECK (status IN ('pending', 'ready', 'running',
						'waiting', 'completed', 'failed', 'skipped',
						'escalated', 'compensated', 'cancelled')),
	deps		text[] NOT NULL,
	successors	text[] NOT NULL,
	deps_left	int NOT NULL,
	priority	int NOT NULL,
	attempt		int NOT NULL DEFAULT 0,
	ready_at	timestamptz,		-- when a ready step may run (retry backoff)
	output		jsonb,
	error		jsonb,
	started_at	timestamptz,
	finished_at	timestamptz,
	running_by	int,				-- executor slot of a running http step
	wait_key	text,				-- what a waiting step waits for
	payload		jsonb,				-- the event that woke a waiting step
	wait_snapshot pg_snapshot,		-- what a waiting step's start saw committed
	assignee	text,				-- a human step's current assignee
	title		text,				-- a human step's rendered title
	escalated_at timestamptz,		-- when a human step was escalated
	label		text,				-- name in the context's "steps" (NULL: map item)
	parent		text,				-- the if/parallel/map step holding this one
	children_left int,				-- a container's unfinished children
	item		jsonb,				-- {"item", "index"} of a map item and its children
	solo		boolean NOT NULL DEFAULT false,	-- run by long-step workers only
	fair_at		timestamptz,		-- a first step's place in the claim order
	PRIMARY KEY (run_id, step)
) WITH (fillfactor = 80);	/* room on each page for the updates of its rows (HOT) */
/*
 * The executors' queue: ready steps, and waiting steps whose timer is set
 * (ready_at), in the order they are claimed.
 */
CREATE INDEX step_ready ON wf.step (priority DESC, (coalesce(fair_at, ready_at)))
	WHERE status IN ('ready', 'waiting');
/* The next time anything becomes due, for the executors' sleep. */
CREATE INDEX step_ready_at ON wf.step (ready_at) WHERE status IN ('ready', 'waiting');
/* Waiting steps by what they wait for, for wf_signal and wf_emit. */
CREATE INDEX step_waiting ON wf.step (wait_key) WHERE status = 'waiting';
/*
 * The named steps of a run, from which its context is built: a map's items
 * have no name, so the context of a step costs what it holds, not the size
 * of its run.
 */
CREATE INDEX step_context ON wf.step (run_id) WHERE label IS NOT NULL;
CREATE INDEX step_solo ON wf.step (ready_at) WHERE solo AND status = 'ready';
/* Ready steps deferred by an open circuit breaker, woken when it closes. */
CREATE INDEX step_deferred ON wf.step (wait_key) WHERE status = 'ready' AND wait_key IS NOT NULL;

/* Signals sent to runs, kept until a step takes them. */
CREATE TABLE wf.signal (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	run_id		bigint NOT NULL,
	name		text NOT NULL,
	payload		jsonb NOT NULL,
	sent_by		regrole NOT NULL,
	sent_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	taken_by	text,				-- the step that took it
	taken_at	timestamptz
);
CREATE INDEX signal_pending ON wf.signal (run_id, name, id) WHERE taken_at IS NULL;
CREATE INDEX signal_run ON wf.signal (run_id);

/* Durable events, as emitted. */
CREATE TABLE wf.event (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	emitted_xid	xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
	event		text NOT NULL,
	key			text,
	payload		jsonb NOT NULL,
	emitted_by	regrole NOT NULL,
	emitted_at	timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	started		int NOT NULL,		-- runs started by subscriptions
	woken		int NOT NULL		-- waiting steps woken
);
/*
 * A step that starts waiting looks for the events its start did not see
 * committed: those of its name emitted by transactions that were still in
 * progress then, or later (see wf._step_wait).
 */
CREATE INDEX event_recent ON wf.event (event, emitted_xid);
/* The oldest events, for pg_workflow.event_retention. */
CREATE INDEX event_emitted ON wf.event (emitted_at);

/*
 * Changes to a step or a run that could not be made at once because another
 * transaction held its row: an executor's claim keeps the lock of a row that
 * changed under it, and one executing a child run's step holds that run.
 * Waiting for such a lock could deadlock, so these are queued here in the
 * same transaction, and the executors make them once the row is free:
 *   wake    the step waits for wait_key and must be woken (payload: the
 *           event it receives; NULL for a signal);
 *   cancel  the step (step NULL: the run) must be cancelled, its run having
 *           ended or started compensating (payload: the run's error and the
 *           actor).
 */
CREATE TABLE wf.deferred (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	run_id		bigint NOT NULL,
	step		text,
	action		text NOT NULL CHECK (action IN ('wake', 'cancel')),
	wait_key	text,
	payload		jsonb,
	sent_xid	xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
	CHECK (action = 'cancel' OR (step IS NOT NULL AND wait_key IS NOT NULL))
);

/* Failures, escalations and SLA breaches, for people to look at. */
CREATE TABLE wf.alert (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	run_id		bigint,				-- NULL: about a schedule or a subscription
	step		text,
	kind		text NOT NULL,		-- failure, escalation, sla, owner_dropped
	message		text NOT NULL,
	detail		jsonb,
	raised_at	timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	resolved_at	timestamptz,
	resolved_by	regrole
);
CREATE INDEX alert_open ON wf.alert (run_id) WHERE resolved_at IS NULL;
CREATE INDEX alert_run ON wf.alert (run_id);

/*
 * Workflows started by events.  The runs an event starts belong to the
 * subscriber (created_by) and use its search_path of wf_on_event time, never
 * the emitter's: emitting is like calling a SECURITY DEFINER function of the
 * subscriber's, with the payload as the argument.
 */
CREATE TABLE wf.subscription (
	event		text NOT NULL,
	workflow	text NOT NULL,
	condition	jsonpath,
	created_by	regrole NOT NULL,
	search_path	text NOT NULL,		-- the subscriber's, for the runs
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	disabled_at	timestamptz,		-- set: starts nothing (its role was dropped)
	disabled_reason text,
	PRIMARY KEY (event, workflow)
);

CREATE TABLE wf.history_log (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	run_id		bigint NOT NULL,
	step		text,
	status		text NOT NULL,
	attempt		int,
	detail		jsonb,
	actor		regrole NOT NULL,
	at			timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
CREATE INDEX history_log_run ON wf.history_log (run_id, id);

/*
 * The history of a run is append-only for as long as the run exists: only
 * the engine removes runs (pg_workflow.retention, see wf._prune), and their
 * history goes with them.
 */
CREATE FUNCTION wf._history_is_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF TG_OP = 'DELETE' AND TG_LEVEL = 'ROW'
	   AND NOT EXISTS (SELECT 1 FROM wf.run WHERE id = OLD.run_id) THEN
		RETURN OLD;
	END IF;
	RAISE EXCEPTION 'wf.history is append-only'
		USING ERRCODE = 'insufficient_privilege',
			  DETAIL = 'Rows of the workflow audit log cannot be updated or deleted.';
END
$$;
CREATE TRIGGER history_log_append_only
	BEFORE UPDATE OR DELETE ON wf.history_log
	FOR EACH ROW EXECUTE FUNCTION wf._history_is_append_only();
CREATE TRIGGER history_log_no_truncate
	BEFORE TRUNCATE ON wf.history_log
	FOR EACH STATEMENT EXECUTE FUNCTION wf._history_is_append_only();

/*
 * Secrets for {{secret.NAME}} templates: nobody but the extension's owner
 * reads them.  A secret belongs to the role that first set it; its owner
 * (or wf_admin) changes, deletes and grants it.  A run renders it only if
 * the run's owner has the privileges of the secret's owner or of a grantee
 * (pg_has_role USAGE), and only towards its hosts (NULL: every host
 * pg_workflow.http_allowed_hosts allows).  Roles are regrole so that a
 * dump carries them by name.
 */
CREATE TABLE wf.secret (
	name		text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]+$'),
	value		text NOT NULL,
	owner		regrole NOT NULL,
	hosts		text,				-- allowed-hosts syntax; NULL: any host
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_by	regrole NOT NULL
);

/* Who else may use a secret: one row per grant. */
CREATE TABLE wf.secret_grant (
	name		text NOT NULL,		-- a wf.secret; removed with it
	grantee		regrole NOT NULL,
	PRIMARY KEY (name, grantee)
);

/* Circuit breakers of http steps, one per host, shared by every run. */
CREATE TABLE wf.circuit_breaker (
	key			text PRIMARY KEY,		-- the host
	state		text NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
	failures	int NOT NULL,			-- consecutive failures
	opened_at	timestamptz,
	reset_after	interval,
	probe_at	timestamptz,			-- when the half-open probe was sent
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);

REVOKE ALL ON ALL TABLES IN SCHEMA wf FROM PUBLIC;

/*
 * Dumps
 *
 * pg_dump dumps the rows of these tables and the position of their
 * sequences (wf.schedule's is registered with it, below); roles are stored
 * as regrole, so that a dump names them and a restore maps the names to the
 * new cluster's roles.  wf.circuit_breaker is not dumped: it is the recent
 * health of remote hosts, which a restored database learns anew.
 *
 * Some of what is dumped describes the executors of the dumped cluster, and
 * is made right by the triggers below as pg_restore copies it in, so that
 * the restored database recovers exactly as the dumped one would have after
 * a crash: an http step that was running (its request in flight) becomes
 * ready again, to be sent anew with the same Idempotency-Key, as
 * wf._requeue_orphans does at an executor's start; transaction ids, which
 * mean nothing in another cluster, are replaced by ones that compare the
 * same way (see wf._restored_step).  The triggers fire for no row that the
 * engine inserts itself.  Nothing is started by a restore: the rows of a
 * user's table are restored before its triggers are created.
 */
SELECT pg_catalog.pg_extension_config_dump('wf.workflow_def', '');
SELECT pg_catalog.pg_extension_config_dump('wf.run', '');
SELECT pg_catalog.pg_extension_config_dump('wf.step', '');
SELECT pg_catalog.pg_extension_config_dump('wf.history_log', '');
SELECT pg_catalog.pg_extension_config_dump('wf.secret', '');
SELECT pg_catalog.pg_extension_config_dump('wf.secret_grant', '');
SELECT pg_catalog.pg_extension_config_dump('wf.signal', '');
SELECT pg_catalog.pg_extension_config_dump('wf.event', '');
SELECT pg_catalog.pg_extension_config_dump('wf.deferred', '');
SELECT pg_catalog.pg_extension_config_dump('wf.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('wf.alert', '');
SELECT pg_catalog.pg_extension_config_dump('wf.run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wf.signal_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wf.event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wf.deferred_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wf.alert_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wf.history_log_id_seq', '');

/*
 * A step copied in by pg_restore.  Its running http attempt was lost with
 * the dumped cluster's executors: it is ready again, at the same attempt.
 * Its wait_snapshot, taken in the dumped cluster, becomes the snapshot
 * '3:3:', in which the events and deferred wake-ups of the dumped cluster
 * (rewritten to xids 2 and 3, see wf._restored_xid) compare as they did
 * against the original: an event is one the wait saw committed, a pending
 * wake-up is not.  Every transaction of the new cluster is newer than
 * both.
 */
CREATE FUNCTION wf._restored_step() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NEW.status = 'running' AND NEW.kind = 'http' THEN
		NEW.status := 'ready';
		NEW.ready_at := clock_timestamp();
		NEW.attempt := greatest(NEW.attempt - 1, 0);
	END IF;
	NEW.running_by := NULL;
	IF NEW.wait_snapshot IS NOT NULL THEN
		NEW.wait_snapshot := '3:3:';
	END IF;
	PERFORM wf._wake();
	RETURN NEW;
END
$$;
CREATE TRIGGER step_restored BEFORE INSERT ON wf.step
	FOR EACH ROW WHEN (NEW.running_by IS NOT NULL OR NEW.wait_snapshot IS NOT NULL)
	EXECUTE FUNCTION wf._restored_step();

/*
 * An event or a deferred change copied in by pg_restore: its xid is the
 * dumped cluster's (see wf._restored_step).  A deferred change is made by
 * the executors once the restore commits.
 */
CREATE FUNCTION wf._restored_xid() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF TG_TABLE_NAME = 'event' THEN
		NEW.emitted_xid := '2';
	ELSE
		NEW.sent_xid := '3';
		PERFORM wf._defer();
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER event_restored BEFORE INSERT ON wf.event
	FOR EACH ROW WHEN (NEW.emitted_xid <> pg_catalog.pg_current_xact_id())
	EXECUTE FUNCTION wf._restored_xid();
CREATE TRIGGER deferred_restored BEFORE INSERT ON wf.deferred
	FOR EACH ROW WHEN (NEW.sent_xid <> pg_catalog.pg_current_xact_id())
	EXECUTE FUNCTION wf._restored_xid();

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

/* Announces a run transition on channel wf_events, as configured. */
CREATE FUNCTION wf._notify(run_id bigint, workflow text, step text, status text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF (step IS NULL AND current_setting('pg_workflow.notify') <> 'off')
	   OR current_setting('pg_workflow.notify') = 'steps' THEN
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
			   AND s2.status IN ('pending', 'ready', 'failed', 'cancelled')) d
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
 * Does the role exist?  Locks it until the end of the transaction, as
 * PostgreSQL does for the roles its catalogs depend on, so that it is not
 * dropped before what is being recorded for it has committed (DROP ROLE
 * waits, and the executors' sweep, wf._sweep_dropped_roles, then sees it).
 * A missing role is an error unless missing_ok.
 */
CREATE FUNCTION wf._lock_role(role oid, missing_ok boolean) RETURNS boolean
	LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'wf_lock_role';

/* ---------------------------------------------------------------------
 * Definitions
 * ---------------------------------------------------------------------
 */

CREATE FUNCTION wf._define(caller oid, caller_path text, p_name text, p_definition jsonb) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	latest	wf.workflow_def;
	v		int;
BEGIN
	IF p_name IS NULL THEN
		RAISE EXCEPTION 'workflow name must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_name !~ '^[A-Za-z0-9_.-]+$' OR octet_length(p_name) > 63 THEN
		RAISE EXCEPTION 'invalid workflow name "%"', p_name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A workflow name is 1 to 63 characters among letters, digits, "_", "." and "-".';
	END IF;
	IF octet_length(p_definition::text) > pg_size_bytes(current_setting('pg_workflow.max_definition_size')) THEN
		RAISE EXCEPTION 'workflow definition is too large'
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('The definition has %s bytes; the limit is pg_workflow.max_definition_size = %s.',
								  octet_length(p_definition::text),
								  current_setting('pg_workflow.max_definition_size'));
	END IF;
	PERFORM wf._check_definition(p_definition);

	/* One definer at a time per name, so that versions stay dense. */
	PERFORM wf._xact_lock(hashtext('pg_workflow.define'), hashtext(p_name), false, false);
	SELECT * INTO latest FROM wf.workflow_def
	 WHERE name = p_name ORDER BY version DESC LIMIT 1;
	/*
	 * A workflow belongs to the role that defined its first version: another
	 * role's new version would run its SQL with the owner's privileges.
	 */
	IF FOUND AND NOT wf._may_control(caller, (SELECT created_by FROM wf.workflow_def
											  WHERE name = p_name AND version = 1)) THEN
		RAISE EXCEPTION 'permission denied for workflow "%"', p_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Only the role that defined the first version of a workflow, its members and members of wf_admin may define new versions.';
	END IF;
	IF FOUND AND latest.definition = p_definition THEN
		RETURN latest.version;
	END IF;
	v := coalesce(latest.version, 0) + 1;
	PERFORM wf._lock_role(caller, false);
	INSERT INTO wf.workflow_def (name, version, definition, plan, defaults,
								 description, created_by)
	VALUES (p_name, v, p_definition, wf._plan(p_definition),
			jsonb_strip_nulls(jsonb_build_object('retry', p_definition->'retry',
												 'on_error', p_definition->'on_error')),
			p_definition->>'description', caller);
	RETURN v;
END
$$;

CREATE FUNCTION wf._export(caller oid, caller_path text, p_name text, p_version int) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	d	jsonb;
BEGIN
	SELECT definition INTO d FROM wf.workflow_def
	 WHERE name = p_name AND (p_version IS NULL OR version = p_version)
	 ORDER BY version DESC LIMIT 1;
	IF NOT FOUND THEN
		IF p_version IS NULL THEN
			RAISE EXCEPTION 'workflow "%" does not exist', p_name
				USING ERRCODE = 'undefined_object';
		END IF;
		RAISE EXCEPTION 'workflow "%" has no version %', p_name, p_version
			USING ERRCODE = 'undefined_object';
	END IF;
	RETURN d;
END
$$;

/* ---------------------------------------------------------------------
 * Runs
 * ---------------------------------------------------------------------
 */

CREATE FUNCTION wf._start(caller oid, caller_path text, p_name text, p_input jsonb, p_options jsonb)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	def			wf.workflow_def;
	opt_key		text;
	opt_version	int;
	opt_start	timestamptz;
	opt_prio	int;
	k			text;
	rid			bigint;
	origin		bigint := wf._current_run();
	v_depth		int := 0;
	gate		jsonb;
BEGIN
	IF p_name IS NULL THEN
		RAISE EXCEPTION 'workflow name must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	p_input := coalesce(p_input, '{}');
	p_options := coalesce(p_options, '{}');
	IF jsonb_typeof(p_options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR k IN SELECT jsonb_object_keys(p_options) LOOP
		IF k NOT IN ('idempotency_key', 'version', 'start_at', 'priority',
					 'debounce', 'throttle', 'debounce_key') THEN
			RAISE EXCEPTION 'unknown option "%"', k
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Valid options are idempotency_key, version, start_at, priority, debounce, throttle and debounce_key.';
		END IF;
	END LOOP;
	IF octet_length(p_input::text) > pg_size_bytes(current_setting('pg_workflow.max_input_size')) THEN
		RAISE EXCEPTION 'workflow input is too large'
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('The input has %s bytes; the limit is pg_workflow.max_input_size = %s.',
								  octet_length(p_input::text),
								  current_setting('pg_workflow.max_input_size'));
	END IF;

	/* Checked by type, so that a plain start opens no subtransaction. */
	IF (p_options ? 'idempotency_key' AND jsonb_typeof(p_options->'idempotency_key') <> 'string')
	   OR (p_options ? 'version' AND NOT wf._is_integer(p_options->'version'))
	   OR (p_options ? 'priority' AND NOT wf._is_integer(p_options->'priority'))
	   OR (p_options ? 'start_at' AND jsonb_typeof(p_options->'start_at') <> 'string')
	   OR (p_options ? 'debounce' AND jsonb_typeof(p_options->'debounce') <> 'string')
	   OR (p_options ? 'throttle' AND jsonb_typeof(p_options->'throttle') <> 'string')
	   OR (p_options ? 'debounce_key' AND jsonb_typeof(p_options->'debounce_key') <> 'string') THEN
		RAISE EXCEPTION 'invalid options: %', p_options::text
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'idempotency_key and debounce_key are strings, version and priority are integers, start_at is a timestamp, debounce and throttle are intervals.';
	END IF;
	IF p_options ? 'debounce_key' AND NOT p_options ?| array['debounce', 'throttle'] THEN
		RAISE EXCEPTION 'option debounce_key needs debounce or throttle'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	opt_key := p_options->>'idempotency_key';
	opt_version := (p_options->>'version')::int;
	opt_prio := coalesce((p_options->>'priority')::int, 0);
	IF opt_prio > current_setting('pg_workflow.max_user_priority')::int
	   AND NOT pg_has_role(caller, 'wf_admin', 'MEMBER') THEN
		RAISE EXCEPTION 'priority % is above pg_workflow.max_user_priority (%)',
			opt_prio, current_setting('pg_workflow.max_user_priority')
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only members of wf_admin may start runs at a higher priority.';
	END IF;
	/*
	 * A run started from inside a step (a workflow step, or wf_start or
	 * wf_emit in an sql step) is one level deeper than that step's run.
	 */
	IF origin IS NOT NULL THEN
		v_depth := coalesce((SELECT r.depth FROM wf.run r WHERE r.id = origin), 0) + 1;
		IF v_depth > current_setting('pg_workflow.max_depth')::int THEN
			RAISE EXCEPTION 'run would be % levels deep, more than pg_workflow.max_depth (%)',
				v_depth, current_setting('pg_workflow.max_depth')
				USING ERRCODE = 'program_limit_exceeded',
					  DETAIL = format('It would be started by a step of run %s, %s levels deep.',
									  origin, v_depth - 1),
					  HINT = 'A run started by a step (a "workflow" step, or wf_start or wf_emit in an sql step) is one level deeper than the step''s run: look for a workflow that starts itself.';
		END IF;
	END IF;
	IF p_options ? 'start_at' THEN
		BEGIN
			opt_start := (p_options->>'start_at')::timestamptz;
		EXCEPTION WHEN data_exception THEN
			RAISE EXCEPTION 'invalid options: start_at is not a timestamp: %', p_options->>'start_at'
				USING ERRCODE = 'invalid_parameter_value';
		END;
	END IF;

	SELECT * INTO def FROM wf.workflow_def
	 WHERE name = p_name AND (opt_version IS NULL OR version = opt_version)
	 ORDER BY version DESC LIMIT 1;
	IF NOT FOUND THEN
		IF opt_version IS NULL THEN
			RAISE EXCEPTION 'workflow "%" does not exist', p_name
				USING ERRCODE = 'undefined_object',
					  HINT = 'Define it first with wf_define().';
		END IF;
		RAISE EXCEPTION 'workflow "%" has no version %', p_name, opt_version
			USING ERRCODE = 'undefined_object';
	END IF;

	PERFORM wf._lock_role(caller, false);
	IF p_options ?| array['debounce', 'throttle'] THEN
		/* Flow control: the key is the gate's, not the run's idempotency key. */
		gate := wf._flow_gate(caller, def.name, p_input, p_options);
		IF gate ? 'run' THEN
			RETURN (gate->>'run')::bigint;
		END IF;
		opt_key := NULL;
		opt_start := greatest(opt_start, (gate->>'start_at')::timestamptz);
	END IF;
	INSERT INTO wf.run (workflow, version, status, input, owner, search_path,
						priority, idempotency_key, steps_left, start_at, depth, origin_run)
	VALUES (def.name, def.version, 'pending', p_input, caller,
			coalesce(caller_path, ''), opt_prio, opt_key,
			jsonb_array_length(def.plan), opt_start, v_depth, origin)
	ON CONFLICT (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL
	DO NOTHING
	RETURNING id INTO rid;

	IF rid IS NULL THEN
		/* The key was used before: hand back that run. */
		SELECT id INTO STRICT rid FROM wf.run
		 WHERE workflow = def.name AND idempotency_key = opt_key;
		RETURN rid;
	END IF;

	INSERT INTO wf.step (run_id, step, label, ord, kind, spec, status, deps, successors,
						 deps_left, priority, ready_at, fair_at)
	SELECT rid, p->>'name', p->>'label', (p->>'ord')::int, p->>'kind', p->'spec',
		   CASE WHEN jsonb_array_length(p->'deps') = 0 THEN 'ready' ELSE 'pending' END,
		   ARRAY(SELECT jsonb_array_elements_text(p->'deps')),
		   ARRAY(SELECT jsonb_array_elements_text(p->'successors')),
		   jsonb_array_length(p->'deps'), opt_prio,
		   CASE WHEN jsonb_array_length(p->'deps') = 0
				THEN greatest(coalesce(opt_start, '-infinity'), clock_timestamp()) END,
		   CASE WHEN jsonb_array_length(p->'deps') = 0
				THEN greatest(coalesce(opt_start, '-infinity'), fair) END
	  FROM jsonb_array_elements(def.plan) p, wf._fair_at(caller) fair;

	INSERT INTO wf.history_log (run_id, status, detail, actor)
	VALUES (rid, 'pending', jsonb_build_object('workflow', def.name, 'version', def.version), caller);
	IF gate IS NOT NULL THEN
		PERFORM wf._flow_gate_set(caller, def.name, gate, rid);
	END IF;
	IF def.definition ? 'concurrency' THEN
		PERFORM wf._flow_admit(rid, def.name, def.definition->'concurrency', p_input, opt_prio);
	END IF;
	PERFORM wf._notify(rid, def.name, NULL, 'pending');
	PERFORM wf._wake();
	PERFORM wf._check_executors();
	RETURN rid;
END
$$;

/* Status of a run the caller may see; raises otherwise.  Used by wf_wait. */
CREATE FUNCTION wf._run_status(caller oid, caller_path text, p_run_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	record;
BEGIN
	IF p_run_id IS NULL THEN
		RAISE EXCEPTION 'run id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT status, owner, xmin INTO r FROM wf.run WHERE id = p_run_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'run % does not exist', p_run_id USING ERRCODE = 'undefined_object';
	END IF;
	IF NOT wf._may_control(caller, r.owner) THEN
		RAISE EXCEPTION 'permission denied for run %', p_run_id
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only the role that started a run and members of wf_admin may control it.';
	END IF;
	RETURN r.status;
END
$$;

/* wf_wait's look at a run: refuses to wait for a run this transaction started. */
CREATE FUNCTION wf._wait_status(caller oid, caller_path text, p_run_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	st	text := wf._run_status(caller, caller_path, p_run_id);
BEGIN
	IF st = 'pending' AND wf._xid_is_current((SELECT xmin FROM wf.run WHERE id = p_run_id)) THEN
		RAISE EXCEPTION 'cannot wait for run % in the transaction that started it', p_run_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'A run starts when the transaction that called wf_start commits.',
				  HINT = 'Commit first, then call wf_wait.';
	END IF;
	RETURN st;
END
$$;

/*
 * Ends one run: cancels its unfinished steps (see wf._cancel_steps for
 * those another transaction holds), records and announces the transition.
 * Its child runs are wf._finish_run's.
 */
CREATE FUNCTION wf._end_run(p_run wf.run, p_status text, p_error jsonb, actor oid)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM wf._flow_release(p_run.id);
	UPDATE wf.run SET status = p_status, error = coalesce(p_error, error),
		   finished_at = clock_timestamp()
	 WHERE id = p_run.id;
	PERFORM wf._cancel_steps(p_run.id);
	INSERT INTO wf.history_log (run_id, status, detail, actor)
	VALUES (p_run.id, p_status, p_error, actor);
	PERFORM wf._notify(p_run.id, p_run.workflow, NULL, p_status);
	PERFORM wf._run_ended(p_run.id);
	PERFORM wf._child_ended(p_run.id);
	IF p_status = 'failed' THEN
		PERFORM wf._alert(p_run.id, p_error->>'step', 'failure',
						  format('run %s of workflow "%s" failed: %s', p_run.id, p_run.workflow,
								 coalesce(p_error->>'message', 'no message')),
						  p_error);
	END IF;
	/* What was open about the run is settled now. */
	UPDATE wf.alert SET resolved_at = clock_timestamp(), resolved_by = actor
	 WHERE run_id = p_run.id AND resolved_at IS NULL AND kind = 'escalation';
END
$$;

/*
 * Ends a run and, cancelled, its unfinished descendants: its child runs,
 * theirs, and so on, found level by level by one query, so that the depth
 * of the tree costs no recursion.  A descendant that an executor holds (it
 * is executing one of its steps) is cancelled once that executor commits.
 */
CREATE FUNCTION wf._finish_run(p_run wf.run, p_status text, p_error jsonb, actor oid)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	ids		bigint[];
	child	wf.run;
BEGIN
	PERFORM wf._end_run(p_run, p_status, p_error, actor);
	WITH RECURSIVE d(id, level) AS (
		SELECT c.id, 1 FROM wf.run c
		 WHERE c.parent_run = p_run.id AND c.status IN ('pending', 'running', 'waiting')
		UNION ALL
		SELECT c.id, d.level + 1 FROM d JOIN wf.run c ON c.parent_run = d.id
		 WHERE c.status IN ('pending', 'running', 'waiting')
	)
	SELECT array_agg(d.id ORDER BY d.level, d.id) INTO ids FROM d;
	IF ids IS NULL THEN
		RETURN;
	END IF;
	/* Parents first: a child's end then finds its parent's step cancelled. */
	FOR child IN SELECT r.* FROM unnest(ids) WITH ORDINALITY AS u(id, o)
						JOIN wf.run r ON r.id = u.id
				  WHERE r.status IN ('pending', 'running', 'waiting')
				  ORDER BY u.o
				  FOR UPDATE OF r SKIP LOCKED LOOP
		PERFORM wf._end_run(child, 'cancelled',
							jsonb_build_object('message',
											   format('parent run %s ended', child.parent_run)),
							actor);
	END LOOP;
	INSERT INTO wf.deferred (run_id, action, payload)
	SELECT r.id, 'cancel',
		   jsonb_build_object('error', jsonb_build_object('message',
														  format('parent run %s ended', r.parent_run)),
							  'actor', actor)
	  FROM wf.run r
	 WHERE r.id = ANY (ids) AND r.status IN ('pending', 'running', 'waiting');
	IF FOUND THEN
		PERFORM wf._defer();
	END IF;
END
$$;

CREATE FUNCTION wf._cancel(caller oid, caller_path text, p_run_id bigint, p_reason text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
BEGIN
	/* Interrupt first: a step that is executing holds a lock on the run. */
	PERFORM wf._run_status(caller, NULL, p_run_id);
	PERFORM wf._interrupt(p_run_id);
	r := wf._lock_run(caller, p_run_id);
	IF r.status IN ('completed', 'failed', 'cancelled') THEN
		RETURN false;
	END IF;
	IF r.compensating IS NOT NULL THEN
		RETURN false;			-- already undoing: let it finish
	END IF;
	PERFORM wf._compensate(r, 'cancelled',
						   jsonb_build_object('message', coalesce(p_reason, 'cancelled'),
											  'cancelled_by', caller::regrole::text),
						   caller);
	RETURN true;
END
$$;

CREATE FUNCTION wf._retry(caller oid, caller_path text, p_run_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
BEGIN
	r := wf._lock_run(caller, p_run_id);
	IF r.status <> 'failed' THEN
		RETURN false;
	END IF;
	IF r.compensating IS NOT NULL THEN
		RAISE EXCEPTION 'run % was compensated and cannot be retried', p_run_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Start a new run.';
	END IF;
	/* Failed and cancelled steps start over; completed ones keep their output. */
	UPDATE wf.step SET attempt = 0, error = NULL, output = NULL,
		   started_at = NULL, finished_at = NULL
	 WHERE run_id = p_run_id AND status IN ('failed', 'cancelled');
	PERFORM wf._recompute(p_run_id);
	UPDATE wf.run SET status = 'running', error = NULL, finished_at = NULL
	 WHERE id = p_run_id;
	INSERT INTO wf.history_log (run_id, status, detail, actor)
	VALUES (p_run_id, 'running', '{"retried": true}', caller);
	PERFORM wf._flow_readmit(p_run_id);
	PERFORM wf._notify(p_run_id, r.workflow, NULL, 'running');
	PERFORM wf._wake();
	RETURN true;
END
$$;

CREATE FUNCTION wf._rewind(caller oid, caller_path text, p_run_id bigint, p_step text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
BEGIN
	PERFORM wf._run_status(caller, NULL, p_run_id);
	PERFORM wf._interrupt(p_run_id);
	r := wf._lock_run(caller, p_run_id);
	IF p_step IS NULL OR NOT EXISTS (SELECT 1 FROM wf.step
									  WHERE run_id = p_run_id AND step = p_step) THEN
		RAISE EXCEPTION 'run % has no step "%"', p_run_id, p_step
			USING ERRCODE = 'undefined_object';
	END IF;
	/* The step and everything downstream of it start over. */
	WITH RECURSIVE down(step) AS (
		SELECT p_step
		UNION
		SELECT s.step FROM wf.step s JOIN down d ON d.step = ANY (s.deps)
		 WHERE s.run_id = p_run_id
	)
	UPDATE wf.step s SET status = 'pending', attempt = 0, output = NULL,
		   error = NULL, started_at = NULL, finished_at = NULL
	  FROM down d
	 WHERE s.run_id = p_run_id AND s.step = d.step;
	PERFORM wf._recompute(p_run_id);
	UPDATE wf.run SET status = 'running', output = NULL, error = NULL,
		   finished_at = NULL
	 WHERE id = p_run_id;
	INSERT INTO wf.history_log (run_id, step, status, detail, actor)
	VALUES (p_run_id, p_step, 'rewound', NULL, caller);
	INSERT INTO wf.history_log (run_id, status, detail, actor)
	VALUES (p_run_id, 'running', jsonb_build_object('rewound_to', p_step), caller);
	PERFORM wf._flow_readmit(p_run_id);
	PERFORM wf._notify(p_run_id, r.workflow, NULL, 'running');
	PERFORM wf._wake();
	RETURN true;
END
$$;

/* ---------------------------------------------------------------------
 * Executor side: called by the background workers only
 *
 * Like every function of this file, they pin search_path to pg_catalog,
 * pg_temp: no name they use resolves through a path a user controls, even
 * if a step changed the executor's own (the sandbox undoes that too).
 * ---------------------------------------------------------------------
 */

/*
 * Loads a claimed step: what to run, as whom, with which context.  Returns
 * no row if the run is no longer active (the step is then cancelled).
 */
CREATE FUNCTION wf._step_load(p_run_id bigint, p_step text, p_worker int,
	OUT kind text, OUT spec jsonb, OUT owner oid, OUT search_path text,
	OUT attempt int, OUT defaults jsonb,
	OUT started_at timestamptz, OUT resuming boolean, OUT payload jsonb,
	OUT wait_key text, OUT escalated_at timestamptz, OUT parent_run bigint)
RETURNS SETOF record
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
	t	timestamptz := clock_timestamp();
BEGIN
	SELECT * INTO r FROM wf.run WHERE id = p_run_id;
	IF r.status NOT IN ('pending', 'running', 'waiting')
	   OR (r.compensating IS NOT NULL AND p_step NOT LIKE 'compensate:%') THEN
		/* The run ended, or is undoing what was done: too late for this. */
		UPDATE wf.step s SET status = 'cancelled', finished_at = clock_timestamp()
		 WHERE s.run_id = p_run_id AND s.step = p_step
		   AND s.status IN ('pending', 'ready', 'running', 'waiting');
		RETURN;
	END IF;
	IF r.parent_run IS NOT NULL
	   AND (SELECT pr.status NOT IN ('pending', 'running', 'waiting')
			  FROM wf.run pr WHERE pr.id = r.parent_run) THEN
		/* Its parent ended while an executor held it (see wf._finish_run). */
		PERFORM wf._finish_run(r, 'cancelled',
							   jsonb_build_object('message',
												  format('parent run %s ended', r.parent_run)),
							   r.owner);
		RETURN;
	END IF;
	IF r.status = 'pending' THEN
		/* The workflow's timeout counts from here. */
		UPDATE wf.run SET status = 'running', started_at = t,
			   deadline = t + (SELECT (d.definition->>'timeout')::interval
												 FROM wf.workflow_def d
												WHERE d.name = r.workflow
												  AND d.version = r.version)
		 WHERE id = p_run_id;
		INSERT INTO wf.history_log (run_id, status, actor)
		VALUES (p_run_id, 'running', r.owner);
		PERFORM wf._notify(p_run_id, r.workflow, NULL, 'running');
	END IF;
	/*
	 * An http step is running from now on: its request leaves when this
	 * transaction commits.  (If preparing it fails, the failure is recorded
	 * over this in the same transaction.)
	 */
	IF r.status = 'waiting' THEN
		UPDATE wf.run SET status = 'running' WHERE id = p_run_id;
		INSERT INTO wf.history_log (run_id, status, actor) VALUES (p_run_id, 'running', r.owner);
		PERFORM wf._notify(p_run_id, r.workflow, NULL, 'running');
	END IF;
	SELECT s.status = 'waiting' INTO resuming FROM wf.step s
	 WHERE s.run_id = p_run_id AND s.step = p_step;
	IF resuming THEN
		/* A timer fired or a signal or event came: the same attempt goes on. */
		SELECT s.kind, s.spec, s.attempt, s.started_at, s.payload, s.wait_key,
			   s.escalated_at
		  INTO kind, spec, attempt, started_at, payload, wait_key, escalated_at
		  FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_step;
	ELSE
		/*
		 * Nothing indexed changes (fair_at stays the step's place in the
		 * claim order, should it be retried): a HOT update, which leaves no
		 * entry in step_ready for the claims to step over.
		 */
		UPDATE wf.step s SET attempt = s.attempt + 1, started_at = clock_timestamp(),
			   status = CASE WHEN s.kind IN ('http', 'agent') THEN 'running' ELSE s.status END,
			   running_by = CASE WHEN s.kind = 'http' THEN p_worker END,
			   wait_snapshot = CASE WHEN s.kind = 'wait_for' THEN pg_current_snapshot() END
		 WHERE s.run_id = p_run_id AND s.step = p_step
		RETURNING s.kind, s.spec, s.attempt, s.started_at
		INTO kind, spec, attempt, started_at;
	END IF;
	IF kind IN ('http', 'agent') THEN
		INSERT INTO wf.history_log (run_id, step, status, attempt, actor)
		VALUES (p_run_id, p_step, 'running', attempt, r.owner);
		IF current_setting('pg_workflow.notify') = 'steps' THEN
			PERFORM wf._notify(p_run_id, r.workflow, p_step, 'running');
		END IF;
	END IF;
	owner := r.owner;
	search_path := r.search_path;
	parent_run := r.parent_run;
	SELECT d.defaults INTO defaults FROM wf.workflow_def d
	 WHERE d.name = r.workflow AND d.version = r.version;
	/* Its run context is built by the executor (context.c). */
	RETURN NEXT;
END
$$;

/*
 * Checkpoints a finished step (completed or skipped): its output, the
 * successors that become ready, the run's completion, the history.  Returns
 * the steps that became ready, or nothing when the run had ended meanwhile
 * (the caller then rolls the step back).
 */
CREATE FUNCTION wf._step_done(p_run_id bigint, p_step text, p_status text,
							  p_output jsonb, p_defer boolean DEFAULT false,
							  OUT ok boolean, OUT ready text[], OUT done_in text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r			wf.run;
	st			wf.step;
	v_parent	text;
BEGIN
	SELECT * INTO r FROM wf.run
	 WHERE id = p_run_id AND status IN ('pending', 'running', 'waiting')
	   FOR NO KEY UPDATE;
	/*
	 * Too late once the run has ended, or has started undoing what was done
	 * (its saga's list of steps to compensate is made): the step is rolled
	 * back, and then cancelled (see wf._cancel_steps).
	 */
	IF NOT FOUND OR (r.compensating IS NOT NULL AND p_step NOT LIKE 'compensate:%') THEN
		/*
		 * Unless this very transaction did it: then the step itself ended
		 * its run (or started its undoing), calling wf_cancel on it or on an
		 * ancestor, and was cancelled with it.  What it did stays.
		 */
		ok := coalesce(wf._xid_is_current((SELECT xmin FROM wf.run WHERE id = p_run_id)), false);
		RETURN;
	END IF;
	ok := true;
	SELECT s.parent INTO v_parent FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_step;
	IF v_parent IS NULL THEN
		UPDATE wf.run SET steps_left = steps_left - 1 WHERE id = p_run_id
		RETURNING * INTO r;
	END IF;
	/* A step skipped by its "when" never ran; one skipped by on_error did. */
	UPDATE wf.step SET status = p_status, output = p_output,
		   error = CASE WHEN p_status = 'skipped' THEN error END,
		   finished_at = clock_timestamp(), running_by = NULL,
		   wait_key = NULL, payload = NULL,
		   started_at = CASE WHEN p_status = 'skipped' AND error IS NULL THEN NULL
							 ELSE started_at END,
		   attempt = CASE WHEN p_status = 'skipped' AND error IS NULL THEN 0 ELSE attempt END
	 WHERE run_id = p_run_id AND step = p_step
	RETURNING * INTO st;
	INSERT INTO wf.history_log (run_id, step, status, attempt, detail, actor)
	VALUES (p_run_id, p_step, p_status, st.attempt, st.error, r.owner);
	IF current_setting('pg_workflow.notify') = 'steps' THEN
		PERFORM wf._notify(p_run_id, r.workflow, p_step, p_status);
	END IF;

	IF cardinality(st.successors) > 0 THEN
		WITH u AS (
			UPDATE wf.step s
			   SET deps_left = s.deps_left - 1,
				   status = CASE WHEN s.deps_left = 1 THEN 'ready' ELSE s.status END,
				   ready_at = CASE WHEN s.deps_left = 1 THEN clock_timestamp() END
			 WHERE s.run_id = p_run_id AND s.step = ANY (st.successors)
			   AND s.status = 'pending'
			RETURNING s.step, s.status
		)
		SELECT array_agg(u.step) INTO ready FROM u WHERE u.status = 'ready';
	END IF;

	IF v_parent IS NOT NULL THEN
		IF p_defer AND (SELECT p.kind = 'map' FROM wf.step p
						 WHERE p.run_id = p_run_id AND p.step = v_parent) THEN
			/* A map item: the executor counts it done when its batch ends. */
			done_in := v_parent;
			RETURN;
		END IF;
		/* The last child done completes its container. */
		ready := coalesce(ready, '{}') || coalesce(wf._children_done(p_run_id, v_parent, 1), '{}');
		RETURN;
	END IF;

	IF p_step LIKE 'compensate:%' AND p_status = 'completed' THEN
		/* The saga undid a step. */
		UPDATE wf.step SET status = 'compensated'
		 WHERE run_id = p_run_id AND step = substr(p_step, 12);
		UPDATE wf.run
		   SET compensating = jsonb_set(compensating, '{compensated}',
										compensating->'compensated' || to_jsonb(substr(p_step, 12)))
		 WHERE id = p_run_id
		RETURNING * INTO r;
	END IF;

	IF r.steps_left = 0 AND r.compensating IS NOT NULL THEN
		PERFORM wf._finish_run(r, r.compensating->>'status',
							   (r.compensating->'error') ||
							   jsonb_build_object('compensated', r.compensating->'compensated'),
							   r.owner);
	ELSIF r.steps_left = 0 THEN
		UPDATE wf.run SET status = 'completed', finished_at = clock_timestamp(),
			   output = (SELECT s.output FROM wf.step s
						  WHERE s.run_id = p_run_id AND s.parent IS NULL
						  ORDER BY s.ord DESC LIMIT 1)
		 WHERE id = p_run_id;
		INSERT INTO wf.history_log (run_id, status, actor)
		VALUES (p_run_id, 'completed', r.owner);
		PERFORM wf._flow_release(p_run_id);
		PERFORM wf._notify(p_run_id, r.workflow, NULL, 'completed');
		PERFORM wf._run_ended(p_run_id);
		PERFORM wf._child_ended(p_run_id);
	END IF;
END
$$;

/*
 * n children of container p_step are done: one as it ends (wf._step_done),
 * or the items of a map counted by an executor at the end of its batch
 * (see wf._step_done's p_defer).  The container completes with its last.
 * Returns the steps that became ready, or nothing when the run has ended
 * since (in the same batch).
 */
CREATE FUNCTION wf._children_done(p_run_id bigint, p_step text, n int) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	pst		wf.step;
	d		record;
BEGIN
	PERFORM FROM wf.run WHERE id = p_run_id AND status IN ('pending', 'running', 'waiting')
	   FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	UPDATE wf.step SET children_left = children_left - n
	 WHERE run_id = p_run_id AND step = p_step
	RETURNING * INTO pst;
	IF NOT FOUND OR pst.children_left > 0 THEN
		RETURN NULL;
	END IF;
	SELECT * INTO d FROM wf._step_done(p_run_id, p_step, 'completed',
									   wf._container_output(p_run_id, pst));
	RETURN d.ready;
END
$$;

/*
 * The definition of a step whose asynchronous attempt just finished, if
 * that attempt is still the step's running one; no row otherwise (the run
 * was cancelled, rewound or retried meanwhile).
 */
CREATE FUNCTION wf._step_resume(p_run_id bigint, p_step text, p_attempt int,
								p_started_at timestamptz,
								OUT spec jsonb, OUT defaults jsonb)
RETURNS SETOF record
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	/* PL/pgSQL, not SQL: its plan is kept, and this runs once per response. */
	RETURN QUERY
	SELECT s.spec, d.defaults
	  FROM wf.step s JOIN wf.run r ON r.id = s.run_id
		   JOIN wf.workflow_def d ON d.name = r.workflow AND d.version = r.version
	 WHERE s.run_id = p_run_id AND s.step = p_step AND s.status = 'running'
	   AND s.attempt = p_attempt AND s.started_at = p_started_at
	   FOR NO KEY UPDATE OF s;
END
$$;

/*
 * Steps an executor left running when it died (its requests are lost with
 * it) become ready again, to be sent anew with the same idempotency key.
 * Executor p_worker calls this when it starts, for itself and for slots
 * beyond pg_workflow.workers.
 */
CREATE FUNCTION wf._requeue_orphans(p_worker int, p_nworkers int) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
	WITH o AS (
		UPDATE wf.step s
		   SET status = 'ready', ready_at = clock_timestamp(), running_by = NULL,
			   attempt = greatest(s.attempt - 1, 0)
		 WHERE s.status = 'running' AND s.kind = 'http'
		   AND (s.running_by = p_worker OR s.running_by >= p_nworkers
				OR s.running_by IS NULL)
		RETURNING s.run_id, s.step, s.attempt
	)
	INSERT INTO wf.history_log (run_id, step, status, attempt, detail, actor)
	SELECT o.run_id, o.step, 'ready', o.attempt,
		   '{"requeued": "the executor running it stopped"}', r.owner
	  FROM o JOIN wf.run r ON r.id = o.run_id;
$$;

/*
 * May a request to this breaker's host go now?  NULL: yes (closed, or the
 * probe of a breaker that has been open for reset_after); otherwise the
 * time to try again, the step waiting without burning an attempt.
 */
CREATE FUNCTION wf._breaker_admit(p_key text, p_reset_after interval)
RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b	wf.circuit_breaker;
	now	timestamptz := clock_timestamp();
BEGIN
	SELECT * INTO b FROM wf.circuit_breaker WHERE key = p_key;
	IF NOT FOUND OR b.state = 'closed' THEN
		RETURN NULL;
	END IF;
	IF b.state = 'open' AND now >= b.opened_at + p_reset_after THEN
		/* The first to get here sends the probe. */
		UPDATE wf.circuit_breaker SET state = 'half_open', probe_at = now,
			   updated_at = now
		 WHERE key = p_key AND state = 'open';
		IF FOUND THEN
			RETURN NULL;
		END IF;
	END IF;
	IF b.state = 'half_open' AND now >= b.probe_at + p_reset_after THEN
		/* The probe itself got lost: send another. */
		UPDATE wf.circuit_breaker SET probe_at = now, updated_at = now
		 WHERE key = p_key AND state = 'half_open' AND probe_at = b.probe_at;
		IF FOUND THEN
			RETURN NULL;
		END IF;
	END IF;
	IF b.state = 'open' THEN
		RETURN b.opened_at + p_reset_after;
	END IF;
	RETURN b.probe_at + p_reset_after;		-- half open: the probe decides
END
$$;

/* Counts a request's outcome on its host's breaker. */
CREATE FUNCTION wf._breaker_record(p_key text, p_ok boolean, p_failures int,
								   p_reset_after interval)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF p_ok THEN
		UPDATE wf.circuit_breaker
		   SET state = 'closed', failures = 0, opened_at = NULL, probe_at = NULL,
			   updated_at = clock_timestamp()
		 WHERE key = p_key AND state <> 'closed';
		IF NOT FOUND THEN
			UPDATE wf.circuit_breaker SET failures = 0, updated_at = clock_timestamp()
			 WHERE key = p_key AND failures <> 0;
			RETURN;
		END IF;
		/*
		 * Closed again: the steps it deferred go now rather than at their
		 * retry time (those another transaction holds keep that time).
		 */
		UPDATE wf.step SET ready_at = clock_timestamp()
		 WHERE (run_id, step) IN (SELECT s.run_id, s.step FROM wf.step s
								   WHERE s.status = 'ready' AND s.wait_key = 'breaker:' || p_key
									 AND s.ready_at > clock_timestamp()
								   FOR UPDATE SKIP LOCKED);
		IF FOUND THEN
			PERFORM wf._wake();
		END IF;
		RETURN;
	END IF;
	INSERT INTO wf.circuit_breaker (key, state, failures, reset_after)
	VALUES (p_key, 'closed', 0, p_reset_after)
	ON CONFLICT (key) DO NOTHING;
	/* Opens at the p_failures-th failure in a row, or when the probe fails. */
	UPDATE wf.circuit_breaker b
	   SET failures = b.failures + 1,
		   state = CASE WHEN b.state = 'half_open' OR b.failures + 1 >= p_failures
						THEN 'open' ELSE b.state END,
		   opened_at = CASE WHEN b.state = 'half_open'
								 OR (b.state = 'closed' AND b.failures + 1 >= p_failures)
							THEN clock_timestamp() ELSE b.opened_at END,
		   probe_at = NULL, reset_after = p_reset_after,
		   updated_at = clock_timestamp()
	 WHERE key = p_key;
END
$$;

/*
 * The advisory lock (with class hashtext('pg_workflow.wait')) that orders a
 * step starting to wait for a signal or an event and the wf_signal or
 * wf_emit that may concern it (see wf._step_wait): one of 1,024 buckets of
 * keys, so that a transaction sending many holds a bounded number of locks.
 * Keys that share a bucket only make a starting wait look again later.
 */
CREATE FUNCTION wf._wait_bucket(wait_key text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT hashtext(wait_key) & 1023
$$;

/*
 * A step starts (or goes on) waiting: for its timer p_wake_at (NULL: none)
 * and/or for what p_wait_key names ('signal:NAME' or 'event:NAME:KEY').  The
 * run is "waiting" while none of its steps is ready or running.
 */
CREATE FUNCTION wf._step_wait(p_run_id bigint, p_step text, p_wake_at timestamptz,
							  p_wait_key text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r		wf.run;
	was		text;
	v_event	text;
	v_key	text;
BEGIN
	SELECT status INTO was FROM wf.step WHERE run_id = p_run_id AND step = p_step;
	UPDATE wf.step SET status = 'waiting', ready_at = p_wake_at, wait_key = p_wait_key,
		   payload = NULL
	 WHERE run_id = p_run_id AND step = p_step;
	IF p_wait_key LIKE 'signal:%' OR p_wait_key LIKE 'event:%' THEN
		/*
		 * wf_signal and wf_emit take this lock in shared mode until they
		 * commit (a signal's for its run only).  Either we get it
		 * exclusively: then those that had it have committed, and we see
		 * what they sent (a signal not taken yet, or an event our start's
		 * snapshot did not see committed), and those that come later wait
		 * for our commit and then see the step waiting.  Or one of them
		 * holds it now: we do not wait for it (an executor waits for no
		 * user's transaction) but look again shortly.
		 */
		IF NOT wf._xact_lock(hashtext('pg_workflow.wait'),
							 wf._wait_bucket(CASE WHEN p_wait_key LIKE 'signal:%'
												  THEN p_run_id || ' ' || p_wait_key
												  ELSE p_wait_key END),
							 false, true) THEN
			UPDATE wf.step
			   SET ready_at = least(ready_at, clock_timestamp() + interval '200 ms')
			 WHERE run_id = p_run_id AND step = p_step;
		ELSIF p_wait_key LIKE 'signal:%' THEN
			UPDATE wf.step SET ready_at = clock_timestamp()
			 WHERE run_id = p_run_id AND step = p_step
			   AND EXISTS (SELECT 1 FROM wf.signal g
							WHERE g.run_id = p_run_id AND g.taken_at IS NULL
							  AND 'signal:' || g.name = p_wait_key);
		ELSE
			/*
			 * 'event:NAME:KEY' (KEY empty: any key).  Event names have no
			 * ":", and what the step's start saw committed is older than its
			 * snapshot's xmin or visible in it: event_recent finds the rest.
			 */
			v_event := split_part(substr(p_wait_key, 7), ':', 1);
			v_key := substr(p_wait_key, length(v_event) + 8);
			UPDATE wf.step s
			   SET ready_at = clock_timestamp(),
				   payload = (SELECT jsonb_build_object('event', e.event, 'key', e.key,
														'payload', e.payload)
								FROM wf.event e
							   WHERE e.event = v_event AND (v_key = '' OR e.key = v_key)
								 AND e.emitted_xid >= pg_snapshot_xmin(s.wait_snapshot)
								 AND NOT pg_visible_in_snapshot(e.emitted_xid, s.wait_snapshot)
							   ORDER BY e.id LIMIT 1)
			 WHERE s.run_id = p_run_id AND s.step = p_step
			   AND EXISTS (SELECT 1 FROM wf.event e
							WHERE e.event = v_event AND (v_key = '' OR e.key = v_key)
							  AND e.emitted_xid >= pg_snapshot_xmin(s.wait_snapshot)
							  AND NOT pg_visible_in_snapshot(e.emitted_xid, s.wait_snapshot));
		END IF;
	END IF;
	IF was <> 'waiting' THEN
		INSERT INTO wf.history_log (run_id, step, status, attempt, detail, actor)
		SELECT p_run_id, p_step, 'waiting', s.attempt,
			   jsonb_strip_nulls(jsonb_build_object('until', p_wake_at, 'for', p_wait_key)),
			   (SELECT owner FROM wf.run WHERE id = p_run_id)
		  FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_step;
	END IF;
	UPDATE wf.run SET status = 'waiting'
	 WHERE id = p_run_id AND status = 'running'
	   AND NOT EXISTS (SELECT 1 FROM wf.step s
						WHERE s.run_id = p_run_id
						  AND (s.status = 'running'
							   OR (s.status IN ('ready', 'waiting') AND s.ready_at <= clock_timestamp())))
	RETURNING * INTO r;
	IF FOUND THEN
		INSERT INTO wf.history_log (run_id, status, actor) VALUES (p_run_id, 'waiting', r.owner);
		PERFORM wf._notify(p_run_id, r.workflow, NULL, 'waiting');
	END IF;
END
$$;

/* Takes the oldest signal NAME sent to the run that no step has taken. */
CREATE FUNCTION wf._take_signal(p_run_id bigint, p_step text, p_name text,
								OUT taken boolean, OUT payload jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	sig	wf.signal;
BEGIN
	SELECT * INTO sig FROM wf.signal
	 WHERE run_id = p_run_id AND name = p_name AND taken_at IS NULL
	 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED;
	taken := FOUND;
	IF taken THEN
		UPDATE wf.signal SET taken_by = p_step, taken_at = clock_timestamp()
		 WHERE id = sig.id;
		payload := sig.payload;
	END IF;
END
$$;

/*
 * Makes one change of wf.deferred: false while its row is still locked.  A
 * change that no longer applies (the step was woken already, or ended; the
 * run ended) is dropped: true.
 */
CREATE FUNCTION wf._run_deferred_one(p wf.deferred)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r		wf.run;
BEGIN
	IF p.step IS NULL THEN
		/* A child run whose parent ended. */
		SELECT * INTO r FROM wf.run WHERE id = p.run_id FOR UPDATE SKIP LOCKED;
		IF NOT FOUND THEN
			RETURN NOT EXISTS (SELECT 1 FROM wf.run WHERE id = p.run_id);
		END IF;
		IF r.status IN ('pending', 'running', 'waiting') THEN
			PERFORM wf._finish_run(r, 'cancelled', p.payload->'error',
								   (p.payload->>'actor')::oid);
		END IF;
		RETURN true;
	END IF;
	PERFORM 1 FROM wf.step WHERE run_id = p.run_id AND step = p.step
	   FOR UPDATE SKIP LOCKED;
	IF NOT FOUND THEN
		RETURN NOT EXISTS (SELECT 1 FROM wf.step WHERE run_id = p.run_id AND step = p.step);
	END IF;
	IF p.action = 'cancel' THEN
		UPDATE wf.step s SET status = 'cancelled', finished_at = clock_timestamp(),
			   wait_key = NULL
		  FROM wf.run sr
		 WHERE s.run_id = p.run_id AND s.step = p.step AND sr.id = s.run_id
		   AND s.status IN ('pending', 'ready', 'running', 'waiting')
		   AND (sr.status NOT IN ('pending', 'running', 'waiting')
				OR (sr.compensating IS NOT NULL AND s.step NOT LIKE 'compensate:%'));
	ELSIF p.payload IS NULL THEN
		UPDATE wf.step SET ready_at = clock_timestamp()
		 WHERE run_id = p.run_id AND step = p.step AND status = 'waiting'
		   AND wait_key = p.wait_key
		   AND (ready_at IS NULL OR ready_at > clock_timestamp());
	ELSE
		/* An event the step's start saw committed is not for this wait. */
		UPDATE wf.step SET ready_at = clock_timestamp(), payload = p.payload
		 WHERE run_id = p.run_id AND step = p.step AND status = 'waiting'
		   AND wait_key = p.wait_key AND payload IS NULL
		   AND NOT pg_visible_in_snapshot(p.sent_xid, wait_snapshot);
	END IF;
	RETURN true;
END
$$;

/*
 * Makes the changes of wf.deferred whose rows are no longer locked; returns
 * how many must wait, for a lock still held or after an error (reported as
 * a warning: one change that fails does not hold up the others).
 */
CREATE FUNCTION wf._run_deferred()
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	p		wf.deferred;
	held	int := 0;
BEGIN
	FOR p IN SELECT * FROM wf.deferred ORDER BY id FOR UPDATE SKIP LOCKED LOOP
		BEGIN
			IF wf._run_deferred_one(p) THEN
				DELETE FROM wf.deferred WHERE id = p.id;
			ELSE
				held := held + 1;
			END IF;
		EXCEPTION WHEN OTHERS THEN
			RAISE WARNING 'could not make deferred change % (% of run %): %',
				p.id, p.action, p.run_id, SQLERRM
				USING HINT = 'It is tried again later; delete its row of wf.deferred to give it up.';
			held := held + 1;
		END;
	END LOOP;
	RETURN held;
END
$$;

/*
 * Cancels the run's unfinished steps that no other transaction holds, and
 * defers the cancellation of the others: an executor that holds one to
 * execute it discards it at its checkpoint, which finds the run over; any
 * other holder lets go soon.
 */
CREATE FUNCTION wf._cancel_steps(p_run_id bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	UPDATE wf.step SET status = 'cancelled', finished_at = clock_timestamp(),
		   wait_key = NULL
	 WHERE (run_id, step) IN (SELECT run_id, step FROM wf.step
							   WHERE run_id = p_run_id
								 AND status IN ('pending', 'ready', 'running', 'waiting')
							   FOR UPDATE SKIP LOCKED);
	/* Agents' open tasks end with the run: wf_complete returns false. */
	UPDATE wf.task SET state = 'cancelled', finished_at = clock_timestamp()
	 WHERE run_id = p_run_id AND state IN ('ready', 'claimed');
	INSERT INTO wf.deferred (run_id, step, action)
	SELECT run_id, step, 'cancel' FROM wf.step
	 WHERE run_id = p_run_id AND status IN ('pending', 'ready', 'running', 'waiting');
	IF FOUND THEN
		PERFORM wf._defer();
	END IF;
END
$$;

/* Raises an alert: a row in wf.alert and NOTIFY wf_alerts. */
CREATE FUNCTION wf._alert(p_run_id bigint, p_step text, p_kind text, p_message text,
						  p_detail jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	aid	bigint;
BEGIN
	INSERT INTO wf.alert (run_id, step, kind, message, detail)
	VALUES (p_run_id, p_step, p_kind, p_message, p_detail)
	RETURNING id INTO aid;
	PERFORM pg_notify('wf_alerts',
					  json_build_object('alert', aid, 'run', p_run_id, 'step', p_step,
										'kind', p_kind, 'message', left(p_message, 200))::text);
END
$$;

/*
 * A human step: (re)assigns it, and on escalation raises the alert.
 */
CREATE FUNCTION wf._human_task(p_run_id bigint, p_step text, p_assignee text,
							   p_escalate boolean, p_title text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	before	text;
BEGIN
	SELECT assignee INTO before FROM wf.step WHERE run_id = p_run_id AND step = p_step;
	UPDATE wf.step SET assignee = p_assignee, title = coalesce(p_title, title),
		   escalated_at = CASE WHEN p_escalate THEN clock_timestamp() ELSE escalated_at END
	 WHERE run_id = p_run_id AND step = p_step;
	IF p_escalate THEN
		INSERT INTO wf.history_log (run_id, step, status, detail, actor)
		SELECT p_run_id, p_step, 'escalated',
			   jsonb_build_object('from', before, 'to', p_assignee), r.owner
		  FROM wf.run r WHERE r.id = p_run_id;
		PERFORM wf._alert(p_run_id, p_step, 'escalation',
						  format('approval "%s" was not answered in time: escalated from %s to %s',
								 p_step, before, p_assignee),
						  jsonb_build_object('from', before, 'to', p_assignee));
	END IF;
END
$$;

/*
 * Fails the runs whose workflow timeout has passed; returns the next
 * deadline of an unfinished run, for the executors' sleep.
 */
/* The earliest deadline of an unfinished run, from index run_deadline. */
CREATE FUNCTION wf._next_deadline() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT deadline FROM wf.run
	 WHERE status IN ('pending', 'running', 'waiting') AND deadline IS NOT NULL
	 ORDER BY deadline LIMIT 1
$$;

CREATE FUNCTION wf._expire_runs() RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r		wf.run;
	/*
	 * Called before every batch, as wf._check_slas: a value rather than
	 * clock_timestamp(), and the order of index run_deadline, so that this
	 * reads the first entry of that index, never every unfinished run.
	 */
	t		timestamptz := clock_timestamp();
	next_at	timestamptz;
BEGIN
	next_at := wf._next_deadline();
	IF next_at <= t THEN
		FOR r IN SELECT * FROM wf.run
				  WHERE status IN ('pending', 'running', 'waiting')
					AND deadline IS NOT NULL AND deadline <= t
				  ORDER BY deadline LIMIT 1000
				  FOR UPDATE SKIP LOCKED LOOP
			PERFORM wf._finish_run(r, 'failed',
				jsonb_build_object('message', format('workflow timed out after %s',
													 r.deadline - r.started_at),
								   'class', 'transient', 'timeout', true),
				r.owner);
		END LOOP;
		next_at := wf._next_deadline();
	END IF;
	RETURN next_at;
END
$$;

/*
 * Removes, a batch at a time, what the retention settings no longer keep
 * (in seconds; 0 keeps everything): up to 1,000 finished runs that ended
 * more than p_retention_s ago, with all their rows (steps, signals, alerts,
 * deferred changes and history: the history of a removed run could be read
 * by nobody, the views showing it through its run), and up to 5,000 events
 * older than p_event_retention_s.  Runs another transaction holds are
 * skipped, and a row lock not granted at once makes the whole batch wait
 * for the next call: the executor calling this never waits for anyone.
 * Returns when there will be something to remove (now, while there is a
 * backlog; NULL for never).
 */
CREATE FUNCTION wf._prune(p_retention_s int, p_event_retention_s int)
RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '10ms' AS $$
DECLARE
	keep	interval := CASE WHEN p_retention_s > 0 THEN make_interval(secs => p_retention_s) END;
	keep_ev	interval := CASE WHEN p_event_retention_s > 0
							 THEN make_interval(secs => p_event_retention_s) END;
	ids		bigint[];
	nevents	int := 0;
	/* A variable, not clock_timestamp() in the queries: an index bound. */
	t		timestamptz := clock_timestamp();
BEGIN
	IF keep IS NOT NULL THEN
		SELECT array_agg(o.id) INTO ids
		  FROM (SELECT r.id FROM wf.run r
				 WHERE r.status IN ('completed', 'failed', 'cancelled')
				   AND r.finished_at < t - keep
				 ORDER BY r.finished_at LIMIT 1000
				   FOR UPDATE SKIP LOCKED) o;
		IF ids IS NOT NULL THEN
			/* The run first: its history may go once it is gone. */
			DELETE FROM wf.run WHERE id = ANY (ids);
			DELETE FROM wf.step WHERE run_id = ANY (ids);
			DELETE FROM wf.signal WHERE run_id = ANY (ids);
			DELETE FROM wf.alert WHERE run_id = ANY (ids);
			DELETE FROM wf.deferred WHERE run_id = ANY (ids);
			DELETE FROM wf.task WHERE run_id = ANY (ids);
			DELETE FROM wf.start_gate WHERE run_id = ANY (ids);
			DELETE FROM wf.history_log WHERE run_id = ANY (ids);
		END IF;
	END IF;
	IF keep_ev IS NOT NULL THEN
		DELETE FROM wf.event
		 WHERE id IN (SELECT e.id FROM wf.event e
					   WHERE e.emitted_at < t - keep_ev
					   ORDER BY e.emitted_at LIMIT 5000
						 FOR UPDATE SKIP LOCKED);
		GET DIAGNOSTICS nevents = ROW_COUNT;
	END IF;
	IF cardinality(ids) = 1000 OR nevents = 5000 THEN
		RETURN clock_timestamp();
	END IF;
	RETURN least((SELECT min(r.finished_at) FROM wf.run r
				   WHERE r.status IN ('completed', 'failed', 'cancelled')) + keep,
				 clock_timestamp() + keep,
				 (SELECT min(e.emitted_at) FROM wf.event e) + keep_ev,
				 clock_timestamp() + keep_ev);
EXCEPTION
	WHEN lock_not_available THEN
		/* A step of one of the runs is held (an executor is about to drop it). */
		RETURN clock_timestamp();
	WHEN OTHERS THEN
		RAISE WARNING 'could not remove old runs and events: %', SQLERRM
			USING HINT = 'It is tried again in a minute.';
		RETURN clock_timestamp() + interval '1 minute';
END
$$;

/*
 * Starts the saga's compensation of a run that failed or is cancelled: the
 * "compensate" actions of its completed steps become steps of their own,
 * named compensate:STEP, run one after the other in the reverse order of
 * completion, each checkpointed like any step.  The run ends (failed or
 * cancelled, with what was compensated) when the last one is done.  Without
 * anything to compensate, the run ends at once (with "compensated": [] when
 * some step has a compensate action).
 */
CREATE FUNCTION wf._compensate(p_run wf.run, p_status text, p_error jsonb, actor oid)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	n		int;
	bad		text;
	why		text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM wf.step
					WHERE run_id = p_run.id AND status = 'completed' AND spec ? 'compensate') THEN
		/* A saga that had nothing to undo yet says so. */
		IF EXISTS (SELECT 1 FROM wf.step WHERE run_id = p_run.id AND spec ? 'compensate') THEN
			p_error := p_error || jsonb_build_object('compensated', '[]'::jsonb);
		END IF;
		PERFORM wf._finish_run(p_run, p_status, p_error, actor);
		RETURN;
	END IF;
	/*
	 * wf_define accepts as compensate actions only single steps of a kind
	 * that may undo (kinds.c).  A definition written past it fails its own
	 * run here, saying why, rather than a step row without a kind failing
	 * the executor's whole transaction.
	 */
	SELECT s.step INTO bad FROM wf.step s
	 WHERE s.run_id = p_run.id AND s.status = 'completed' AND s.spec ? 'compensate'
	   AND wf._step_kind(s.spec->'compensate', true) IS NULL
	 ORDER BY s.finished_at DESC, s.ord DESC LIMIT 1;
	IF FOUND THEN
		why := format('step "%s" cannot be compensated: its compensate action is not one step of a kind that can undo',
					  bad);
		PERFORM wf._alert(p_run.id, bad, 'failure',
						  format('run %s of workflow "%s": %s', p_run.id, p_run.workflow, why),
						  jsonb_build_object('compensate', (SELECT s.spec->'compensate' FROM wf.step s
															 WHERE s.run_id = p_run.id AND s.step = bad)));
		PERFORM wf._finish_run(p_run, p_status,
							   p_error || jsonb_build_object('compensated', '[]'::jsonb,
															 'compensation_failed',
															 jsonb_build_object('step', bad, 'message', why)),
							   actor);
		RETURN;
	END IF;
	PERFORM wf._cancel_steps(p_run.id);
	WITH undo AS (
		SELECT s.step, s.spec->'compensate' AS action,
			   row_number() OVER (ORDER BY s.finished_at DESC, s.ord DESC) AS i
		  FROM wf.step s
		 WHERE s.run_id = p_run.id AND s.status = 'completed' AND s.spec ? 'compensate'
	)
	INSERT INTO wf.step (run_id, step, label, ord, kind, spec, status, deps, successors,
						 deps_left, priority, ready_at)
	SELECT p_run.id, 'compensate:' || t.step, 'compensate:' || t.step, 100000 + t.i::int,
		   wf._step_kind(t.action, true),
		   t.action || jsonb_build_object('name', 'compensate:' || t.step),
		   CASE WHEN t.i = 1 THEN 'ready' ELSE 'pending' END,
		   CASE WHEN t.i = 1 THEN '{}'::text[]
				ELSE ARRAY['compensate:' || (SELECT p.step FROM undo p WHERE p.i = t.i - 1)] END,
		   ARRAY(SELECT 'compensate:' || nx.step FROM undo nx WHERE nx.i = t.i + 1),
		   CASE WHEN t.i = 1 THEN 0 ELSE 1 END, p_run.priority,
		   CASE WHEN t.i = 1 THEN clock_timestamp() END
	  FROM undo t;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE wf.run SET steps_left = n, status = 'running',
		   compensating = jsonb_build_object('status', p_status, 'error', p_error,
											 'compensated', '[]'::jsonb)
	 WHERE id = p_run.id;
	INSERT INTO wf.history_log (run_id, status, detail, actor)
	VALUES (p_run.id, 'compensating', p_error, actor);
	PERFORM wf._wake();
END
$$;

/* The output of a container whose children are all done. */
CREATE FUNCTION wf._container_output(p_run_id bigint, c wf.step) RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE c.kind
		WHEN 'if' THEN
			(SELECT s.output FROM wf.step s WHERE s.run_id = p_run_id AND s.parent = c.step
			  ORDER BY s.ord DESC LIMIT 1)
		WHEN 'parallel' THEN
			(SELECT jsonb_object_agg(b.branch, b.output)
			   FROM (SELECT DISTINCT ON (split_part(substr(s.step, length(c.step) + 2), '/', 1))
							split_part(substr(s.step, length(c.step) + 2), '/', 1) AS branch,
							s.output
					   FROM wf.step s WHERE s.run_id = p_run_id AND s.parent = c.step
					  ORDER BY split_part(substr(s.step, length(c.step) + 2), '/', 1), s.ord DESC) b)
		WHEN 'map' THEN
			(SELECT coalesce(jsonb_agg(s.output ORDER BY (s.item->>'index')::int), '[]')
			   FROM wf.step s WHERE s.run_id = p_run_id AND s.parent = c.step)
	END
$$;

/*
 * Expands a container: p_groups is an array of {"steps": [...], "prefix":
 * "path/"} (if, parallel) whose steps become children of p_step, run in
 * their lists' order or dependencies.  Returns the children ready now; an
 * empty expansion completes the container at once.
 */
CREATE FUNCTION wf._expand(p_run_id bigint, p_step text, p_groups jsonb,
						   OUT ready text[])
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	c	wf.step;
	n	int;
	d	record;
BEGIN
	SELECT * INTO c FROM wf.step WHERE run_id = p_run_id AND step = p_step;
	WITH p AS (
		SELECT x.*
		  FROM jsonb_array_elements(p_groups) g,
			   LATERAL jsonb_array_elements(wf._plan_list(g->'steps', g->>'prefix')) x
	)
	INSERT INTO wf.step (run_id, step, label, parent, item, ord, kind, spec, status, deps,
						 successors, deps_left, priority, ready_at)
	SELECT p_run_id, p.value->>'name', p.value->>'label', p_step, c.item,
		   (p.value->>'ord')::int, p.value->>'kind', p.value->'spec',
		   CASE WHEN jsonb_array_length(p.value->'deps') = 0 THEN 'ready' ELSE 'pending' END,
		   ARRAY(SELECT jsonb_array_elements_text(p.value->'deps')),
		   ARRAY(SELECT jsonb_array_elements_text(p.value->'successors')),
		   jsonb_array_length(p.value->'deps'), c.priority,
		   CASE WHEN jsonb_array_length(p.value->'deps') = 0 THEN clock_timestamp() END
	  FROM p;
	GET DIAGNOSTICS n = ROW_COUNT;
	ready := wf._expanded(p_run_id, p_step, n);
END
$$;

/* Expands a map over p_items: one child per item, p_concurrency at a time. */
CREATE FUNCTION wf._expand_map(p_run_id bigint, p_step text, p_template jsonb,
							   p_items jsonb, p_concurrency int, OUT ready text[])
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	c	wf.step;
	n	int;
	k	text;
	run_owner	oid;
BEGIN
	SELECT * INTO c FROM wf.step WHERE run_id = p_run_id AND step = p_step;
	k := wf._step_kind(p_template);
	SELECT r.owner INTO run_owner FROM wf.run r WHERE r.id = p_run_id;
	/* Each item takes its turn in the owner's fair share (wf._start). */
	INSERT INTO wf.step (run_id, step, label, parent, item, ord, kind, spec, status, deps,
						 successors, deps_left, priority, ready_at, fair_at)
	SELECT p_run_id, format('%s[%s]', p_step, i - 1), NULL, p_step,
		   jsonb_build_object('item', e, 'index', i - 1), i::int, k,
		   p_template || jsonb_build_object('name', format('%s[%s]', p_step, i - 1)),
		   CASE WHEN p_concurrency IS NULL OR i <= p_concurrency THEN 'ready' ELSE 'pending' END,
		   CASE WHEN p_concurrency IS NULL OR i <= p_concurrency THEN '{}'::text[]
				ELSE ARRAY[format('%s[%s]', p_step, i - 1 - p_concurrency)] END,
		   CASE WHEN p_concurrency IS NULL OR i + p_concurrency > jsonb_array_length(p_items)
				THEN '{}'::text[]
				ELSE ARRAY[format('%s[%s]', p_step, i - 1 + p_concurrency)] END,
		   CASE WHEN p_concurrency IS NULL OR i <= p_concurrency THEN 0 ELSE 1 END,
		   c.priority,
		   CASE WHEN p_concurrency IS NULL OR i <= p_concurrency THEN clock_timestamp() END,
		   CASE WHEN p_concurrency IS NULL OR i <= p_concurrency THEN wf._fair_at(run_owner) END
	  FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(e, i);
	GET DIAGNOSTICS n = ROW_COUNT;
	ready := wf._expanded(p_run_id, p_step, n);
END
$$;

/* A container now holds n children: it runs until they are done. */
CREATE FUNCTION wf._expanded(p_run_id bigint, p_step text, n int) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	c	wf.step;
	d	record;
BEGIN
	SELECT * INTO c FROM wf.step WHERE run_id = p_run_id AND step = p_step;
	IF n = 0 THEN
		SELECT * INTO d FROM wf._step_done(p_run_id, p_step, 'completed',
										   CASE WHEN c.kind = 'map' THEN '[]'::jsonb END);
		RETURN d.ready;
	END IF;
	UPDATE wf.step SET status = 'running', children_left = n
	 WHERE run_id = p_run_id AND step = p_step;
	INSERT INTO wf.history_log (run_id, step, status, attempt, detail, actor)
	SELECT p_run_id, p_step, 'running', c.attempt, jsonb_build_object('children', n), r.owner
	  FROM wf.run r WHERE r.id = p_run_id;
	RETURN ARRAY(SELECT s.step FROM wf.step s
				  WHERE s.run_id = p_run_id AND s.parent = p_step AND s.status = 'ready'
				  ORDER BY s.ord);
END
$$;

/* A workflow step starts its child run, as the parent's owner. */
CREATE FUNCTION wf._start_child(p_run_id bigint, p_step text, p_workflow text, p_input jsonb)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
	cid	bigint;
BEGIN
	SELECT * INTO r FROM wf.run WHERE id = p_run_id;
	cid := wf._start(r.owner, r.search_path, p_workflow, coalesce(p_input, '{}'), '{}');
	/* At its parent's priority, which its owner may not be allowed to ask for. */
	UPDATE wf.run SET parent_run = p_run_id, parent_step = p_step, priority = r.priority
	 WHERE id = cid;
	IF r.priority <> 0 THEN
		UPDATE wf.step SET priority = r.priority WHERE run_id = cid;
	END IF;
	RETURN cid;
END
$$;

/* A child run ended: its parent's workflow step goes on. */
CREATE FUNCTION wf._child_ended(p_child_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	c	wf.run;
BEGIN
	SELECT * INTO c FROM wf.run WHERE id = p_child_id;
	IF c.parent_run IS NULL THEN
		RETURN;
	END IF;
	UPDATE wf.step SET ready_at = clock_timestamp(),
		   payload = jsonb_build_object('run', c.id, 'status', c.status, 'output', c.output,
										'error', c.error)
	 WHERE run_id = c.parent_run AND step = c.parent_step AND status = 'waiting';
	IF FOUND THEN
		PERFORM wf._wake();
	END IF;
END
$$;

/*
 * Records a failed attempt.  p_retry_at is the next attempt's time, or NULL
 * when no attempt is left; then the step fails (or is skipped, as its
 * on_error says) and a failed step fails the run.  p_again: the attempt did
 * not count (the executor was interrupted), run it again at once.
 */
/*
 * The engine could not handle a step (an error escaped its handling twice
 * in a row, see executor.c): the step and its run fail with the internal
 * error, which wf._finish_run raises as an alert.  Kept minimal, since the
 * failing handling may be any other function of this file.
 */
CREATE FUNCTION wf._step_internal_error(p_run_id bigint, p_step text, p_error jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
	n	int;
BEGIN
	SELECT * INTO r FROM wf.run WHERE id = p_run_id FOR UPDATE;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	UPDATE wf.step SET status = 'failed', error = p_error, finished_at = clock_timestamp(),
		   running_by = NULL
	 WHERE run_id = p_run_id AND step = p_step
	   AND status IN ('pending', 'ready', 'running', 'waiting');
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n > 0 THEN
		INSERT INTO wf.history_log (run_id, step, status, detail, actor)
		VALUES (p_run_id, p_step, 'failed', p_error, r.owner);
	END IF;
	IF r.status IN ('pending', 'running', 'waiting') THEN
		PERFORM wf._finish_run(r, 'failed', p_error || jsonb_build_object('step', p_step),
							   r.owner);
	END IF;
END
$$;

CREATE FUNCTION wf._step_failed(p_run_id bigint, p_step text, p_error jsonb,
								p_retry_at timestamptz, p_skip boolean,
								p_again boolean, p_escalate boolean, p_compensate boolean,
								p_wait_key text, OUT ready text[])
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
	d	record;
	res	record;
BEGIN
	SELECT * INTO r FROM wf.run WHERE id = p_run_id FOR NO KEY UPDATE;
	IF r.status NOT IN ('pending', 'running', 'waiting')
	   OR (r.compensating IS NOT NULL AND p_step NOT LIKE 'compensate:%') THEN
		/* As in wf._step_load: a step outside the saga's undoing ends here. */
		UPDATE wf.step SET status = 'cancelled', finished_at = clock_timestamp()
		 WHERE run_id = p_run_id AND step = p_step
		   AND status IN ('pending', 'ready', 'running', 'waiting');
		RETURN;
	END IF;
	IF p_again THEN
		/*
		 * Not counted: a waiting step keeps waiting, others run again (a
		 * step deferred by an open circuit breaker is woken when it closes:
		 * p_wait_key "breaker:HOST").
		 */
		UPDATE wf.step SET status = CASE WHEN status = 'waiting' THEN 'waiting' ELSE 'ready' END,
			   wait_key = CASE WHEN status = 'waiting' THEN wait_key ELSE p_wait_key END,
			   running_by = NULL,
			   attempt = CASE WHEN status = 'waiting' THEN attempt ELSE attempt - 1 END,
			   started_at = CASE WHEN status = 'waiting' THEN started_at END,
			   ready_at = coalesce(p_retry_at, clock_timestamp())
		 WHERE run_id = p_run_id AND step = p_step;
		RETURN;
	END IF;
	IF p_retry_at IS NOT NULL THEN
		UPDATE wf.step SET status = 'ready', running_by = NULL, error = p_error,
			   wait_key = NULL, payload = NULL,
			   ready_at = p_retry_at, finished_at = clock_timestamp()
		 WHERE run_id = p_run_id AND step = p_step;
		INSERT INTO wf.history_log (run_id, step, status, attempt, detail, actor)
		SELECT p_run_id, p_step, 'retrying', s.attempt,
			   p_error || jsonb_build_object('retry_at', p_retry_at), r.owner
		  FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_step;
		RETURN;
	END IF;
	IF p_skip THEN
		/* on_error: skip, with the error and the attempts kept for the record. */
		UPDATE wf.step SET error = p_error WHERE run_id = p_run_id AND step = p_step;
		SELECT * INTO res FROM wf._step_done(p_run_id, p_step, 'skipped', NULL);
		ready := res.ready;
		RETURN;
	END IF;
	IF p_escalate THEN
		/* on_error: escalate: parked until an operator calls wf_resolve. */
		UPDATE wf.step SET status = 'escalated', running_by = NULL, error = p_error,
			   wait_key = NULL, payload = NULL, ready_at = NULL,
			   finished_at = clock_timestamp()
		 WHERE run_id = p_run_id AND step = p_step;
		INSERT INTO wf.history_log (run_id, step, status, attempt, detail, actor)
		SELECT p_run_id, p_step, 'escalated', s.attempt, p_error, r.owner
		  FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_step;
		PERFORM wf._alert(p_run_id, p_step, 'escalation',
						  format('step "%s" failed and needs an operator: %s', p_step,
								 p_error->>'message'),
						  p_error);
		UPDATE wf.run SET status = 'waiting'
		 WHERE id = p_run_id AND status = 'running'
		   AND NOT EXISTS (SELECT 1 FROM wf.step s
							WHERE s.run_id = p_run_id AND s.status IN ('ready', 'running'));
		IF FOUND THEN
			INSERT INTO wf.history_log (run_id, status, actor) VALUES (p_run_id, 'waiting', r.owner);
			PERFORM wf._notify(p_run_id, r.workflow, NULL, 'waiting');
		END IF;
		RETURN;
	END IF;
	UPDATE wf.step SET status = 'failed', running_by = NULL, error = p_error,
		   wait_key = NULL, payload = NULL, finished_at = clock_timestamp()
	 WHERE run_id = p_run_id AND step = p_step;
	INSERT INTO wf.history_log (run_id, step, status, attempt, detail, actor)
	SELECT p_run_id, p_step, 'failed', s.attempt, p_error, r.owner
	  FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_step;
	PERFORM wf._notify(p_run_id, r.workflow, p_step, 'failed');
	IF p_compensate AND r.compensating IS NULL THEN
		PERFORM wf._compensate(r, 'failed', jsonb_build_object('step', p_step) || p_error, r.owner);
	ELSIF r.compensating IS NOT NULL THEN
		/* The saga could not undo everything: the first error stays. */
		PERFORM wf._finish_run(r, 'failed',
							   (r.compensating->'error') ||
							   jsonb_build_object('compensated', r.compensating->'compensated',
												  'compensation_failed',
												  jsonb_build_object('step', p_step) || p_error),
							   r.owner);
	ELSE
		PERFORM wf._finish_run(r, 'failed', jsonb_build_object('step', p_step) || p_error, r.owner);
	END IF;
END
$$;

/*
 * Executor side: nothing a dropped role owned goes on acting for it.  Its
 * unfinished runs fail (without compensation, which would run as that role
 * too), its schedules and subscriptions are disabled, with an alert each;
 * then everything it owned, finished runs and workflows included, passes
 * to no role (regrole '-', seen and controlled by wf_admin only), so that
 * its OID, which a new role may get one day, or another role in a cluster
 * this database is restored into, never owns them.  The history and the
 * signals, events and alerts keep the OID as it was: they say who did
 * what, and give nobody any right.
 *
 * DROP ROLE cannot be refused here: it is a command of the whole cluster,
 * which may run in a database without pg_workflow.  The executors call this
 * at their start and after every change of pg_authid (owners.c).  Returns
 * the number of rows it had to leave because another transaction held them
 * (an executor running a step of the run): the caller tries again soon.
 */
CREATE FUNCTION wf._sweep_dropped_roles() RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	dropped	oid;
	r		wf.run;
	o		record;
	msg		text;
	held	int := 0;
BEGIN
	/* One executor at a time: another would only find this one's rows held. */
	PERFORM wf._xact_lock(hashtext('pg_workflow.sweep'), 0, false, false);
	FOR dropped IN
		WITH RECURSIVE run_owner(owner) AS (
			/* The distinct owners of runs, one index probe each. */
			SELECT min(owner::oid) FROM wf.run WHERE owner::oid > 0
			UNION ALL
			SELECT (SELECT min(x.owner::oid) FROM wf.run x WHERE x.owner::oid > p.owner)
			  FROM run_owner p WHERE p.owner IS NOT NULL
		), owners(owner) AS (
			SELECT owner FROM run_owner WHERE owner IS NOT NULL
			UNION SELECT owner::oid FROM wf.schedule
			UNION SELECT created_by::oid FROM wf.subscription
			UNION SELECT created_by::oid FROM wf.workflow_def
			UNION SELECT owner::oid FROM wf.secret
			UNION SELECT grantee::oid FROM wf.secret_grant
			UNION SELECT grantee::oid FROM wf.pool_grant
			UNION SELECT role::oid FROM wf.agent
			UNION SELECT claimed_by::oid FROM wf.task WHERE state = 'claimed'
		)
		SELECT w.owner FROM owners w
		 WHERE w.owner <> 0
		   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_authid a WHERE a.oid = w.owner)
		 ORDER BY 1
	LOOP
		/* Parents first: their children end with them. */
		FOR r IN SELECT * FROM wf.run
				  WHERE owner = dropped AND status IN ('pending', 'running', 'waiting')
				  ORDER BY id FOR UPDATE SKIP LOCKED LOOP
			SELECT * INTO r FROM wf.run WHERE id = r.id;
			CONTINUE WHEN r.status NOT IN ('pending', 'running', 'waiting');
			msg := format('role with OID %s that owned run %s was dropped', dropped, r.id);
			PERFORM wf._finish_run(r, 'failed',
								   jsonb_build_object('message', msg, 'sqlstate', '42704',
													  'class', 'permanent',
													  'dropped_role', dropped),
								   0);
		END LOOP;
		UPDATE wf.run SET owner = 0
		 WHERE id IN (SELECT id FROM wf.run WHERE owner = dropped FOR UPDATE SKIP LOCKED);

		FOR o IN UPDATE wf.schedule
					SET owner = 0, next_at = 'infinity', disabled_at = clock_timestamp(),
						disabled_reason = format('role with OID %s that owned it was dropped',
												 dropped)
				  WHERE name IN (SELECT name FROM wf.schedule WHERE owner = dropped
								 FOR UPDATE SKIP LOCKED)
				RETURNING name, workflow LOOP
			PERFORM wf._alert(NULL, NULL, 'owner_dropped',
							  format('schedule "%s" was disabled: role with OID %s that owned it was dropped',
									 o.name, dropped),
							  jsonb_build_object('schedule', o.name, 'workflow', o.workflow,
												 'dropped_role', dropped));
		END LOOP;

		FOR o IN UPDATE wf.subscription
					SET created_by = 0, disabled_at = clock_timestamp(),
						disabled_reason = format('role with OID %s that subscribed was dropped',
												 dropped)
				  WHERE (event, workflow) IN (SELECT event, workflow FROM wf.subscription
											   WHERE created_by = dropped
											   FOR UPDATE SKIP LOCKED)
				RETURNING event, workflow LOOP
			PERFORM wf._alert(NULL, NULL, 'owner_dropped',
							  format('subscription of workflow "%s" to event "%s" was disabled: role with OID %s that subscribed was dropped',
									 o.workflow, o.event, dropped),
							  jsonb_build_object('event', o.event, 'workflow', o.workflow,
												 'dropped_role', dropped));
		END LOOP;

		UPDATE wf.workflow_def SET created_by = 0 WHERE created_by = dropped;

		/*
		 * Its grants go; its secrets stay usable by the roles they were
		 * granted to, owned by no role (wf_admin manages them), so that a
		 * role that later gets the same OID inherits nothing.
		 */
		DELETE FROM wf.secret_grant WHERE grantee = dropped;
		/* Its pools too; the leases it held expire and are handed out again. */
		DELETE FROM wf.pool_grant WHERE grantee = dropped;
		DELETE FROM wf.agent WHERE role = dropped;
		UPDATE wf.task SET claimed_by = 0 WHERE claimed_by = dropped;
		FOR o IN UPDATE wf.secret SET owner = 0
				  WHERE owner = dropped RETURNING name LOOP
			PERFORM wf._alert(NULL, NULL, 'owner_dropped',
							  format('secret "%s" is owned by no role: role with OID %s that owned it was dropped',
									 o.name, dropped),
							  jsonb_build_object('secret', o.name, 'dropped_role', dropped));
		END LOOP;

		held := held + (SELECT count(*) FROM wf.run WHERE owner = dropped)
			+ (SELECT count(*) FROM wf.schedule WHERE owner = dropped)
			+ (SELECT count(*) FROM wf.subscription WHERE created_by = dropped);
	END LOOP;
	RETURN held;
END
$$;

/* ---------------------------------------------------------------------
 * Public API
 * ---------------------------------------------------------------------
 */

CREATE FUNCTION @extschema@.wf_validate(definition jsonb) RETURNS SETOF text
	LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'wf_validate';

CREATE FUNCTION @extschema@.wf_define(name text, definition jsonb) RETURNS int
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_export(name text, version int DEFAULT NULL) RETURNS jsonb
	LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_start(name text, input jsonb DEFAULT '{}',
									 options jsonb DEFAULT '{}') RETURNS bigint
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_cancel(run_id bigint, reason text DEFAULT NULL) RETURNS boolean
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_retry(run_id bigint) RETURNS boolean
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_rewind(run_id bigint, step text) RETURNS boolean
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * The secret named p_name, locked, after checking that caller may manage
 * it (its owner's privileges, or wf_admin); NULL when there is none.
 */
CREATE FUNCTION wf._secret_for_update(caller oid, p_name text) RETURNS wf.secret
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s	wf.secret;
BEGIN
	SELECT * INTO s FROM wf.secret WHERE name OPERATOR(pg_catalog.=) p_name FOR UPDATE;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF NOT (pg_catalog.pg_has_role(caller, s.owner::oid, 'USAGE')
			OR pg_catalog.pg_has_role(caller, 'wf_admin', 'MEMBER')) THEN
		RAISE EXCEPTION 'permission denied for secret "%"', p_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('The secret is owned by role %s.', s.owner),
				  HINT = 'Only its owner and members of wf_admin may change, delete or grant a secret.';
	END IF;
	RETURN s;
END
$$;

/*
 * wf_set_secret: creates a secret owned by the caller, or changes (a NULL
 * value: deletes) an existing one, which only its owner or wf_admin may.
 * The value and the hosts are replaced together; grants are kept until
 * the secret is deleted.
 */
CREATE FUNCTION wf._set_secret(caller oid, caller_path text, p_name text, p_value text,
							   p_hosts text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s	wf.secret;
BEGIN
	IF p_name IS NULL OR p_name !~ '^[A-Za-z0-9_.-]+$' OR octet_length(p_name) > 63 THEN
		RAISE EXCEPTION 'invalid secret name "%"', coalesce(p_name, '')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A secret name is 1 to 63 characters among letters, digits, "_", "." and "-".';
	END IF;
	IF p_hosts IS NOT NULL THEN
		PERFORM wf._check_hosts(p_hosts);
	END IF;
	LOOP
		s := wf._secret_for_update(caller, p_name);
		IF s.name IS NOT NULL THEN
			IF p_value IS NULL THEN
				DELETE FROM wf.secret_grant WHERE name OPERATOR(pg_catalog.=) p_name;
				DELETE FROM wf.secret WHERE name OPERATOR(pg_catalog.=) p_name;
			ELSE
				UPDATE wf.secret
				   SET value = p_value, hosts = p_hosts,
					   updated_at = pg_catalog.now(), updated_by = caller::regrole
				 WHERE name OPERATOR(pg_catalog.=) p_name;
			END IF;
			RETURN;
		END IF;
		IF p_value IS NULL THEN
			RETURN;				-- nothing to delete
		END IF;
		INSERT INTO wf.secret (name, value, owner, hosts, updated_by)
		VALUES (p_name, p_value, caller::regrole, p_hosts, caller::regrole)
		ON CONFLICT (name) DO NOTHING;
		IF FOUND THEN
			RETURN;
		END IF;
		-- Created by a concurrent transaction since we looked: look again.
	END LOOP;
END
$$;

CREATE FUNCTION @extschema@.wf_set_secret(name text, value text, hosts text DEFAULT NULL)
RETURNS void
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

/* wf_grant_secret: lets p_role's runs (and its members') use the secret. */
CREATE FUNCTION wf._grant_secret(caller oid, caller_path text, p_name text, p_role regrole)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF (wf._secret_for_update(caller, p_name)).name IS NULL THEN
		RAISE EXCEPTION 'secret "%" does not exist', coalesce(p_name, '')
			USING ERRCODE = 'undefined_object';
	END IF;
	IF p_role IS NULL THEN
		RAISE EXCEPTION 'role must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	/* A grant to a role being dropped would outlive it. */
	PERFORM wf._lock_role(p_role, false);
	INSERT INTO wf.secret_grant (name, grantee) VALUES (p_name, p_role)
	ON CONFLICT DO NOTHING;
END
$$;

CREATE FUNCTION @extschema@.wf_grant_secret(name text, role regrole) RETURNS void
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * wf_revoke_secret: takes a grant back.  Runs already started stop using
 * the secret too: it is checked each time a request is rendered.
 */
CREATE FUNCTION wf._revoke_secret(caller oid, caller_path text, p_name text, p_role regrole)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF (wf._secret_for_update(caller, p_name)).name IS NULL THEN
		RAISE EXCEPTION 'secret "%" does not exist', coalesce(p_name, '')
			USING ERRCODE = 'undefined_object';
	END IF;
	DELETE FROM wf.secret_grant
	 WHERE name OPERATOR(pg_catalog.=) p_name AND grantee OPERATOR(pg_catalog.=) p_role;
END
$$;

CREATE FUNCTION @extschema@.wf_revoke_secret(name text, role regrole) RETURNS void
	LANGUAGE C SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * wf_resolve: an operator's answer to an escalated step: retry it, skip it
 * (with p_output as its output), or fail it (and the run).
 */
CREATE FUNCTION wf._resolve(caller oid, caller_path text, p_run_id bigint, p_step text,
							p_action text, p_output jsonb)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
	st	wf.step;
	d	record;
BEGIN
	PERFORM wf._run_status(caller, caller_path, p_run_id);
	IF p_action IS NULL OR p_action NOT IN ('retry', 'skip', 'fail') THEN
		RAISE EXCEPTION 'invalid action "%"', coalesce(p_action, '')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The action is retry, skip or fail.';
	END IF;
	r := wf._lock_run(caller, p_run_id);
	SELECT * INTO st FROM wf.step WHERE run_id = p_run_id AND step = p_step FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'run % has no step "%"', p_run_id, p_step
			USING ERRCODE = 'undefined_object';
	END IF;
	IF st.status <> 'escalated' OR r.status NOT IN ('running', 'waiting') THEN
		RETURN false;
	END IF;
	UPDATE wf.alert SET resolved_at = clock_timestamp(), resolved_by = caller
	 WHERE run_id = p_run_id AND step = p_step AND resolved_at IS NULL;
	INSERT INTO wf.history_log (run_id, step, status, detail, actor)
	VALUES (p_run_id, p_step, 'resolved', jsonb_build_object('action', p_action), caller);
	IF p_action = 'retry' THEN
		UPDATE wf.step SET status = 'ready', attempt = 0, ready_at = clock_timestamp(),
			   finished_at = NULL
		 WHERE run_id = p_run_id AND step = p_step;
		UPDATE wf.run SET status = 'running' WHERE id = p_run_id AND status = 'waiting';
		PERFORM wf._wake();
	ELSIF p_action = 'skip' THEN
		SELECT * INTO d FROM wf._step_done(p_run_id, p_step, 'skipped', p_output);
		UPDATE wf.run SET status = 'running' WHERE id = p_run_id AND status = 'waiting';
		PERFORM wf._wake();
	ELSE
		UPDATE wf.step SET status = 'failed' WHERE run_id = p_run_id AND step = p_step;
		PERFORM wf._finish_run(r, 'failed',
							   jsonb_build_object('step', p_step,
												  'message', 'failed by an operator')
							   || coalesce(st.error - 'message', '{}'), caller);
	END IF;
	RETURN true;
END
$$;

CREATE FUNCTION @extschema@.wf_resolve(run_id bigint, step text, action text,
									   output jsonb DEFAULT NULL)
RETURNS boolean
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * wf_signal: a signal for a run.  Kept until a step waiting for it (wait_for
 * {"signal": NAME}) takes it; a step waiting already is woken at commit.
 * False when the run has ended.
 */
CREATE FUNCTION wf._signal(caller oid, caller_path text, p_run_id bigint, p_name text,
						   p_payload jsonb)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	st	text := wf._run_status(caller, caller_path, p_run_id);
BEGIN
	IF p_name IS NULL OR p_name = '' THEN
		RAISE EXCEPTION 'signal name must not be empty' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF octet_length(coalesce(p_payload, '{}')::text) > pg_size_bytes(current_setting('pg_workflow.max_input_size')) THEN
		RAISE EXCEPTION 'signal payload is too large' USING ERRCODE = 'program_limit_exceeded';
	END IF;
	IF st NOT IN ('pending', 'running', 'waiting') THEN
		RETURN false;
	END IF;
	/* See wf._step_wait. */
	PERFORM wf._xact_lock(hashtext('pg_workflow.wait'),
						  wf._wait_bucket(p_run_id || ' signal:' || p_name), true, false);
	INSERT INTO wf.signal (run_id, name, payload, sent_by)
	VALUES (p_run_id, p_name, coalesce(p_payload, '{}'), caller);
	INSERT INTO wf.history_log (run_id, status, detail, actor)
	VALUES (p_run_id, 'signalled', jsonb_build_object('signal', p_name), caller);
	/*
	 * Rows another transaction holds are skipped, not waited for (that could
	 * deadlock): an executor putting the step to wait takes the advisory
	 * lock after its row lock and finds the signal itself; any other holder
	 * leaves the wake-up to wf.deferred.
	 */
	UPDATE wf.step SET ready_at = clock_timestamp()
	 WHERE (run_id, step) IN (SELECT s.run_id, s.step FROM wf.step s
							   WHERE s.run_id = p_run_id AND s.status = 'waiting'
								 AND s.wait_key = 'signal:' || p_name
								 AND (s.ready_at IS NULL OR s.ready_at > clock_timestamp())
							   FOR UPDATE SKIP LOCKED);
	IF FOUND THEN
		PERFORM wf._wake();
	END IF;
	INSERT INTO wf.deferred (run_id, step, action, wait_key)
	SELECT s.run_id, s.step, 'wake', s.wait_key FROM wf.step s
	 WHERE s.run_id = p_run_id AND s.status = 'waiting' AND s.wait_key = 'signal:' || p_name
	   AND (s.ready_at IS NULL OR s.ready_at > clock_timestamp());
	IF FOUND THEN
		PERFORM wf._defer();
	END IF;
	RETURN true;
END
$$;

CREATE FUNCTION @extschema@.wf_signal(run_id bigint, signal text, payload jsonb DEFAULT '{}')
RETURNS boolean
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * wf_emit: a durable event.  Starts the workflows subscribed to it whose
 * condition holds on the payload (as the emitting role), and wakes the steps
 * waiting for it (wait_for {"event": NAME, "key": ...} with the same key, or
 * any key when the step names none).  Returns how many runs it started or
 * woke.  All of it happens at the commit of the emitting transaction.
 */
CREATE FUNCTION wf._emit(caller oid, caller_path text, p_event text, p_payload jsonb,
						 p_key text)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	sub			wf.subscription;
	started		int := 0;
	woken		int := 0;
	deferred	int := 0;
BEGIN
	IF p_event IS NULL OR p_event = '' OR p_event LIKE '%:%' THEN
		RAISE EXCEPTION 'invalid event name "%"', coalesce(p_event, '')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'An event name is not empty and has no ":".';
	END IF;
	p_payload := coalesce(p_payload, '{}');
	IF octet_length(p_payload::text) > pg_size_bytes(current_setting('pg_workflow.max_input_size')) THEN
		RAISE EXCEPTION 'event payload is too large' USING ERRCODE = 'program_limit_exceeded';
	END IF;
	FOR sub IN SELECT * FROM wf.subscription WHERE event = p_event AND disabled_at IS NULL
				ORDER BY workflow LOOP
		/* Its role was dropped, and the executors have not disabled it yet. */
		CONTINUE WHEN NOT wf._lock_role(sub.created_by, true);
		IF sub.condition IS NULL OR coalesce(jsonb_path_match(p_payload, sub.condition, silent => true), false) THEN
			PERFORM wf._start(sub.created_by, sub.search_path, sub.workflow,
							  p_payload, '{}'::jsonb);
			started := started + 1;
		END IF;
	END LOOP;
	/* See wf._step_wait: shared, emits never wait for each other. */
	PERFORM wf._xact_lock(hashtext('pg_workflow.wait'), b, true, false)
	   FROM (SELECT DISTINCT wf._wait_bucket(w) AS b
			   FROM unnest(ARRAY['event:' || p_event || ':' || coalesce(p_key, ''),
								 'event:' || p_event || ':']) w) buckets;
	/*
	 * As in wf._signal, rows another transaction holds are skipped; a step
	 * that received an event already (payload set) keeps the first one.
	 */
	UPDATE wf.step SET ready_at = clock_timestamp(),
		   payload = jsonb_build_object('event', p_event, 'key', p_key, 'payload', p_payload)
	 WHERE (run_id, step) IN (SELECT s.run_id, s.step FROM wf.step s
							   WHERE s.status = 'waiting' AND s.payload IS NULL
								 AND s.wait_key IN ('event:' || p_event || ':' || coalesce(p_key, ''),
													'event:' || p_event || ':')
							   FOR UPDATE SKIP LOCKED);
	GET DIAGNOSTICS woken = ROW_COUNT;
	INSERT INTO wf.deferred (run_id, step, action, wait_key, payload)
	SELECT s.run_id, s.step, 'wake', s.wait_key,
		   jsonb_build_object('event', p_event, 'key', p_key, 'payload', p_payload)
	  FROM wf.step s
	 WHERE s.status = 'waiting' AND s.payload IS NULL
	   AND s.wait_key IN ('event:' || p_event || ':' || coalesce(p_key, ''),
						  'event:' || p_event || ':');
	GET DIAGNOSTICS deferred = ROW_COUNT;
	IF deferred > 0 THEN
		PERFORM wf._defer();
	END IF;
	woken := woken + deferred;
	INSERT INTO wf.event (event, key, payload, emitted_by, started, woken)
	VALUES (p_event, p_key, p_payload, caller, started, woken);
	IF woken > 0 THEN
		PERFORM wf._wake();
	END IF;
	RETURN started + woken;
END
$$;

CREATE FUNCTION @extschema@.wf_emit(event text, payload jsonb DEFAULT '{}', key text DEFAULT NULL)
RETURNS int
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

/* wf_on_event: subscribes a workflow to an event; NULL condition: always. */
CREATE FUNCTION wf._on_event(caller oid, caller_path text, p_event text, p_workflow text,
							 p_condition jsonpath)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	wf_owner	oid;
BEGIN
	IF p_event IS NULL OR p_event = '' OR p_event LIKE '%:%' THEN
		RAISE EXCEPTION 'invalid event name "%"', coalesce(p_event, '')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'An event name is not empty and has no ":".';
	END IF;
	SELECT created_by INTO wf_owner FROM wf.workflow_def WHERE name = p_workflow AND version = 1;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'workflow "%" does not exist', p_workflow USING ERRCODE = 'undefined_object';
	END IF;
	IF NOT wf._may_control(caller, wf_owner) THEN
		RAISE EXCEPTION 'permission denied for workflow "%"', p_workflow
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Only the owner of a workflow and members of wf_admin may subscribe it to events.';
	END IF;
	PERFORM wf._lock_role(caller, false);
	INSERT INTO wf.subscription (event, workflow, condition, created_by, search_path)
	VALUES (p_event, p_workflow, p_condition, caller, coalesce(caller_path, ''))
	ON CONFLICT (event, workflow) DO UPDATE
	   SET condition = excluded.condition, created_by = excluded.created_by,
		   search_path = excluded.search_path, created_at = now(),
		   disabled_at = NULL, disabled_reason = NULL;
END
$$;

CREATE FUNCTION @extschema@.wf_on_event(event text, workflow text, condition jsonpath DEFAULT NULL)
RETURNS void
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * The search_path a new session of role p_role would have in this database:
 * its ALTER ROLE ... [IN DATABASE] SET search_path, else the database's,
 * else the built-in default.
 */
CREATE FUNCTION wf._role_search_path(p_role oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT coalesce(
		(SELECT substr(c, length('search_path=') + 1)
		   FROM pg_db_role_setting s, unnest(s.setconfig) c,
				(SELECT oid FROM pg_database WHERE datname = current_database()) d
		  WHERE c LIKE 'search_path=%'
			AND ((s.setrole = p_role AND s.setdatabase IN (d.oid, 0))
				 OR (s.setrole = 0 AND s.setdatabase = d.oid))
		  ORDER BY s.setrole = 0, s.setdatabase = 0
		  LIMIT 1),
		(SELECT boot_val FROM pg_settings WHERE name = 'search_path'))
$$;

/*
 * Starts a run for wf_start_trigger (api.c), which has computed the row's
 * jsonb as the role that changed it.  The run belongs to the table's owner,
 * who set the trigger up (as a run started by an event belongs to its
 * subscriber), never to whoever happens to write the row; it uses the
 * owner's default search_path.
 */
CREATE FUNCTION wf._start_by_trigger(p_table oid, p_workflow text, p_row jsonb,
									 p_options jsonb)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	tab_owner	oid;
BEGIN
	SELECT relowner INTO STRICT tab_owner FROM pg_class WHERE oid = p_table;
	RETURN wf._start(tab_owner, wf._role_search_path(tab_owner), p_workflow,
					 p_row, p_options);
END
$$;

/*
 * Row trigger function: wf_start_trigger('workflow' [, 'options'])
 * starts the workflow with the row (NEW, or OLD for a DELETE) as input, in
 * the transaction that changed the row; options are wf_start's, as JSON
 * text.  Use it in AFTER triggers (a BEFORE trigger's row may still
 * change).
 */
CREATE FUNCTION @extschema@.wf_start_trigger() RETURNS trigger
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_start_trigger';

CREATE FUNCTION @extschema@.wf_wait(run_id bigint, timeout interval DEFAULT '30 seconds')
RETURNS text
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_wait';

/* ---------------------------------------------------------------------
 * Schedules
 *
 * The executors call wf._fire_schedules() in each transaction and sleep no
 * later than the time it returns.
 *
 * A schedule starts its workflow as the role that created it, with the
 * search_path and TimeZone of that role's session at wf_schedule() time;
 * cron fields are read in that time zone (src/schedule.c says how
 * transitions are handled).  Slots missed while no executor ran are not
 * made up one by one: a schedule found late fires once, and then at its
 * first slot after the present.
 * ---------------------------------------------------------------------
 */

CREATE TABLE wf.schedule (
	name		text PRIMARY KEY,
	workflow	text NOT NULL,
	schedule	text NOT NULL,
	input		jsonb NOT NULL,
	timezone	text NOT NULL,		-- the creator's TimeZone
	search_path	text NOT NULL,		-- the creator's search_path, for the runs
	owner		regrole NOT NULL,	-- the runs start as this role
	next_at		timestamptz NOT NULL,	-- infinity: cannot be computed, see last_error
	last_at		timestamptz,		-- when it last fired
	last_run_id	bigint,				-- the run it started then, NULL if it failed
	last_error	text,				-- why it failed then
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	disabled_at	timestamptz,		-- set: never fires (its role was dropped)
	disabled_reason text
);
CREATE INDEX schedule_next_at ON wf.schedule (next_at);
REVOKE ALL ON wf.schedule FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('wf.schedule', '');

/* The next slot of a schedule strictly after "after" (schedule.c). */
CREATE FUNCTION wf._schedule_next(schedule text, after timestamptz, tz text DEFAULT 'UTC')
RETURNS timestamptz
	LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'wf_schedule_next';

/* Raises an error saying what is wrong with a malformed schedule. */
CREATE FUNCTION wf._schedule_check(schedule text) RETURNS void
	LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'wf_schedule_check';

/*
 * Creates or replaces a schedule.  Replacing one requires controlling its
 * owner's runs; the caller becomes the owner of the new one.
 */
CREATE FUNCTION wf._schedule(caller oid, caller_path text, p_name text, p_workflow text,
							 p_schedule text, p_input jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	/* Only search_path is SET for this function: this is the session's. */
	tz		text := current_setting('TimeZone');
BEGIN
	IF p_name IS NULL THEN
		RAISE EXCEPTION 'schedule name must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_name !~ '^[A-Za-z0-9_.-]+$' OR octet_length(p_name) > 63 THEN
		RAISE EXCEPTION 'invalid schedule name "%"', p_name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A schedule name is 1 to 63 characters among letters, digits, "_", "." and "-".';
	END IF;
	IF p_workflow IS NULL THEN
		RAISE EXCEPTION 'workflow name must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_schedule IS NULL THEN
		RAISE EXCEPTION 'schedule must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM wf._schedule_check(p_schedule);
	p_input := coalesce(p_input, '{}');
	IF jsonb_typeof(p_input) <> 'object' THEN
		RAISE EXCEPTION 'schedule input must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Each run gets the input with the key "scheduled_at" added.';
	END IF;
	IF octet_length(p_input::text) > pg_size_bytes(current_setting('pg_workflow.max_input_size')) THEN
		RAISE EXCEPTION 'workflow input is too large'
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('The input has %s bytes; the limit is pg_workflow.max_input_size = %s.',
								  octet_length(p_input::text),
								  current_setting('pg_workflow.max_input_size'));
	END IF;
	IF NOT EXISTS (SELECT 1 FROM wf.workflow_def WHERE name = p_workflow) THEN
		RAISE EXCEPTION 'workflow "%" does not exist', p_workflow
			USING ERRCODE = 'undefined_object',
				  HINT = 'Define it first with wf_define().';
	END IF;

	PERFORM wf._lock_role(caller, false);
	/* The row lock taken by ON CONFLICT makes the permission check race-free. */
	INSERT INTO wf.schedule AS s (name, workflow, schedule, input, timezone,
								  search_path, owner, next_at)
	VALUES (p_name, p_workflow, p_schedule, p_input, tz, coalesce(caller_path, ''),
			caller, wf._schedule_next(p_schedule, now(), tz))
	ON CONFLICT (name) DO UPDATE
	   SET workflow = excluded.workflow, schedule = excluded.schedule,
		   input = excluded.input, timezone = excluded.timezone,
		   search_path = excluded.search_path, owner = excluded.owner,
		   next_at = excluded.next_at, last_error = NULL,
		   disabled_at = NULL, disabled_reason = NULL
	 WHERE wf._may_control(caller, s.owner);
	IF NOT FOUND THEN
		RAISE EXCEPTION 'permission denied for schedule "%"', p_name
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only the role that created a schedule, its members and members of wf_admin may replace or remove it.';
	END IF;
	/* The executors learn the new next_at when they look again. */
	PERFORM wf._wake();
END
$$;

CREATE FUNCTION wf._unschedule(caller oid, caller_path text, p_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s	wf.schedule;
BEGIN
	SELECT * INTO s FROM wf.schedule WHERE name = p_name FOR UPDATE;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF NOT wf._may_control(caller, s.owner) THEN
		RAISE EXCEPTION 'permission denied for schedule "%"', p_name
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only the role that created a schedule, its members and members of wf_admin may replace or remove it.';
	END IF;
	DELETE FROM wf.schedule WHERE name = p_name;
	RETURN true;
END
$$;

/*
 * Executor side: starts one run of every schedule that is due, and returns
 * the earliest next_at left (NULL if none), for the executors' sleep.
 *
 * Rows another executor is firing are skipped.  The idempotency key, built
 * from the slot in UTC so that it depends on no setting, keeps a slot from
 * starting two runs even if its schedule is replaced meanwhile.  A start
 * that fails (workflow dropped, input too large...) is recorded and the
 * schedule still moves on, so that it blocks neither itself nor the others.
 */
CREATE FUNCTION wf._fire_schedules() RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	t0		timestamptz := clock_timestamp();
	s		wf.schedule;
	rid		bigint;
	err		text;
	next_at_new timestamptz;
BEGIN
	FOR s IN SELECT * FROM wf.schedule WHERE next_at <= t0
			  ORDER BY next_at FOR UPDATE SKIP LOCKED LOOP
		rid := NULL;
		err := NULL;
		BEGIN
			rid := wf._start(s.owner, s.search_path, s.workflow,
							 s.input || jsonb_build_object('scheduled_at', s.next_at),
							 jsonb_build_object('idempotency_key',
									'schedule:' || s.name || ':' ||
									to_char(s.next_at AT TIME ZONE 'UTC',
											'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
		EXCEPTION WHEN OTHERS THEN
			err := SQLERRM;
		END;
		BEGIN
			next_at_new := wf._schedule_next(s.schedule, clock_timestamp(), s.timezone);
		EXCEPTION WHEN OTHERS THEN
			/* E.g. the time zone went away: the schedule stops, and says why. */
			next_at_new := 'infinity';
			err := concat_ws('; ', err, 'cannot compute the next time: ' || SQLERRM);
		END;
		UPDATE wf.schedule
		   SET next_at = next_at_new, last_at = clock_timestamp(), last_run_id = rid,
			   last_error = err
		 WHERE name = s.name;
	END LOOP;
	/*
	 * A row still due was locked by another transaction: an executor that
	 * fires it, or a session replacing it that may yet roll back.  Look
	 * again in a second rather than never.
	 */
	RETURN (SELECT min(CASE WHEN next_at > t0 THEN next_at
							ELSE t0 + interval '1 second' END)
			  FROM wf.schedule WHERE next_at < 'infinity');
END
$$;

CREATE FUNCTION @extschema@.wf_schedule(name text, workflow text, schedule text,
										input jsonb DEFAULT '{}') RETURNS void
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_unschedule(name text) RETURNS boolean
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE VIEW wf.schedules WITH (security_barrier) AS
	SELECT s.name, s.workflow, s.schedule, s.timezone, s.input,
		   s.owner, s.next_at, s.last_at, s.last_run_id,
		   s.last_error, s.disabled_at, s.disabled_reason
	  FROM wf.schedule s
	 WHERE s.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

GRANT SELECT ON wf.schedules TO PUBLIC;

/* Internal functions are the owner's; the wf_* shims call them. */
REVOKE ALL ON FUNCTION wf._schedule_next(text, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION wf._schedule_check(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION wf._schedule(oid, text, text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION wf._unschedule(oid, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION wf._fire_schedules() FROM PUBLIC;

/* ---------------------------------------------------------------------
 * Monitoring
 *
 * wf_explain, wf_graph, wf_metrics and the wf.progress view (with the
 * views below).  wf_explain and wf_graph of a run refuse a run the caller
 * may not see, with wf_wait's error; wf_metrics and wf.progress count the
 * runs the caller sees in wf.runs.
 * ---------------------------------------------------------------------
 */

/* Finished runs of a workflow by end time, for wf_metrics and wf.progress's estimates. */
CREATE INDEX run_workflow_finished ON wf.run (workflow, finished_at)
	WHERE status IN ('completed', 'failed', 'cancelled');

/* A duration for people: "12.345 ms", "3.210 s", "4 min 12 s", "2 days 03:04:05". */
CREATE FUNCTION wf._fmt_duration(d interval) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE
		WHEN d IS NULL THEN NULL
		WHEN extract(epoch FROM d) < 1
			THEN to_char(extract(epoch FROM d) * 1000, 'FM9990.000') || ' ms'
		WHEN extract(epoch FROM d) < 60
			THEN to_char(extract(epoch FROM d), 'FM90.000') || ' s'
		WHEN extract(epoch FROM d) < 3600
			THEN format('%s min %s s', floor(extract(epoch FROM d) / 60),
						floor(mod(extract(epoch FROM d), 60)))
		ELSE justify_interval(date_trunc('second', d))::text
	END
$$;

/* A step's name under its container: "a/ten" in a parallel, "[3]" in a map. */
CREATE FUNCTION wf._step_tail(p_step text, p_parent text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE
		WHEN p_parent IS NULL THEN p_step
		WHEN left(p_step, length(p_parent) + 1) = p_parent || '/'
			THEN substr(p_step, length(p_parent) + 2)
		WHEN left(p_step, length(p_parent)) = p_parent
			THEN substr(p_step, length(p_parent) + 1)
		ELSE p_step
	END
$$;

/*
 * wf_explain(run_id): the run as an indented tree, a header line and one
 * line per step, children under their container in definition order
 * (parallel branches one after the other, map items by index).
 */
CREATE FUNCTION wf._explain(caller oid, caller_path text, p_run_id bigint) RETURNS SETOF text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r		wf.run;
	t_now	timestamptz := clock_timestamp();
BEGIN
	PERFORM wf._run_status(caller, caller_path, p_run_id);
	SELECT * INTO r FROM wf.run WHERE id = p_run_id;
	RETURN NEXT format('Run %s: workflow "%s" version %s, %s', r.id, r.workflow, r.version, r.status)
		|| CASE WHEN r.started_at IS NULL THEN ''
				WHEN r.finished_at IS NULL
					THEN format(', elapsed %s', wf._fmt_duration(t_now - r.started_at))
				ELSE format(', took %s', wf._fmt_duration(r.finished_at - r.started_at)) END
		|| CASE WHEN r.error ? 'message'
				THEN format(', error: %s', wf._clip(r.error->>'message', 80)) ELSE '' END;
	RETURN QUERY
	WITH RECURSIVE t AS (
		SELECT s.step, s.kind, s.spec, 0 AS depth,
			   ARRAY[lpad(s.ord::text, 10, '0') || s.step] AS sortkey
		  FROM wf.step s
		 WHERE s.run_id = p_run_id AND s.parent IS NULL
		UNION ALL
		SELECT s.step, s.kind, s.spec, t.depth + 1,
			   t.sortkey || (lpad(coalesce((SELECT b.i FROM jsonb_array_elements(t.spec->'parallel')
												  WITH ORDINALITY AS b(branch, i)
											 WHERE t.kind = 'parallel'
											   AND b.branch->>'name' =
												   split_part(wf._step_tail(s.step, s.parent), '/', 1)),
										   0)::text, 10, '0')
							 || lpad(s.ord::text, 10, '0') || s.step)
		  FROM t JOIN wf.step s ON s.run_id = p_run_id AND s.parent = t.step
	)
	SELECT repeat('      ', t.depth) || '->  '
		   || format('%s (%s) %s', wf._step_tail(s.step, s.parent), s.kind, s.status)
		   || CASE WHEN s.started_at IS NULL THEN ''
				   ELSE format(' (attempt=%s %s=%s%s)', s.attempt,
							   CASE WHEN s.finished_at IS NULL THEN 'running' ELSE 'time' END,
							   wf._fmt_duration(coalesce(s.finished_at, t_now) - s.started_at),
							   CASE WHEN s.children_left IS NOT NULL
									THEN format(' children=%s',
												(SELECT count(*) FROM wf.step c
												  WHERE c.run_id = p_run_id AND c.parent = s.step))
									ELSE '' END) END
		   || CASE WHEN s.error ? 'message'
				   THEN format(' error: %s', wf._clip(s.error->>'message', 80)) ELSE '' END
	  FROM t JOIN wf.step s ON s.run_id = p_run_id AND s.step = t.step
	 ORDER BY t.sortkey;
END
$$;

/* Text cut to n characters, with an ellipsis when cut; one line. */
CREATE FUNCTION wf._clip(p_text text, n int) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN length(x) > n THEN left(x, n - 1) || '…' ELSE x END
	  FROM (SELECT regexp_replace(p_text, '\s+', ' ', 'g') AS x) c
$$;

/* A graph node's identifier: letters, digits and "_", one per path. */
CREATE FUNCTION wf._graph_id(p_path text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT 'n_' || regexp_replace(p_path, '[^A-Za-z0-9]', '_', 'g') || '_' || left(md5(p_path), 6)
$$;

/*
 * A quoted label: the parts that are not NULL, one per line.  DOT escapes
 * backslashes and quotes; Mermaid takes entity codes for what its parser
 * would read ("#", quotes, angle brackets).
 */
CREATE FUNCTION wf._graph_label(p_parts text[], p_fmt text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT '"' || array_to_string(ARRAY(
			SELECT CASE WHEN p_fmt = 'dot'
						THEN replace(replace(x, '\', '\\'), '"', '\"')
						ELSE replace(replace(replace(replace(replace(x, '#', '#35;'), '&', '#38;'),
								'"', '#quot;'), '<', '#lt;'), '>', '#gt;') END
			  FROM unnest(p_parts) WITH ORDINALITY AS u(part, i),
				   LATERAL (SELECT regexp_replace(u.part, '\s+', ' ', 'g') AS x) c
			 WHERE u.part IS NOT NULL
			 ORDER BY u.i),
		   CASE WHEN p_fmt = 'dot' THEN '\n' ELSE '<br/>' END) || '"'
$$;

/* An edge between two nodes, dashed or not, with an optional label. */
CREATE FUNCTION wf._graph_edge(p_from text, p_to text, p_label text, p_dashed boolean,
							   p_fmt text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE
		WHEN p_fmt = 'dot' THEN
			format('  %s -> %s', p_from, p_to)
			|| CASE WHEN p_label IS NOT NULL OR p_dashed THEN
					' [' || array_to_string(ARRAY[
						CASE WHEN p_label IS NOT NULL
							 THEN 'label=' || wf._graph_label(ARRAY[p_label], p_fmt) END,
						CASE WHEN p_dashed THEN 'style=dashed' END], ', ') || ']'
				ELSE '' END || ';'
		WHEN p_label IS NULL THEN
			format('  %s %s %s', p_from, CASE WHEN p_dashed THEN '-.->' ELSE '-->' END, p_to)
		ELSE
			format('  %s %s %s %s %s', p_from, CASE WHEN p_dashed THEN '-.' ELSE '--' END,
				   wf._graph_label(ARRAY[p_label], p_fmt),
				   CASE WHEN p_dashed THEN '.->' ELSE '-->' END, p_to)
	END
$$;

/*
 * What a run's graph says of a node: its status (the most telling one of a
 * map's items, for the node standing for them) and a line of figures.
 * NULL status: no such step in the run (not reached).
 */
CREATE FUNCTION wf._graph_state(p_run_id bigint, p_path text, OUT status text, OUT info text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	pattern	text;
BEGIN
	IF strpos(p_path, '[*]') = 0 THEN
		SELECT s.status,
			   CASE WHEN s.started_at IS NOT NULL THEN
					format('%s, attempt %s',
						   wf._fmt_duration(coalesce(s.finished_at, clock_timestamp()) - s.started_at),
						   s.attempt) END
		  INTO status, info
		  FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_path;
		RETURN;
	END IF;
	pattern := '^' || replace(regexp_replace(p_path, '([.^$*+?()[\]{}|\\])', '\\\1', 'g'),
							  '\[\*\]', '\[[0-9]+\]') || '$';
	SELECT (array_agg(x.status ORDER BY array_position(ARRAY['failed', 'escalated', 'running',
					'waiting', 'ready', 'pending', 'compensated', 'cancelled', 'skipped',
					'completed'], x.status)))[1],
		   format('%s items: %s', sum(x.n), string_agg(format('%s %s', x.n, x.status), ', '
														ORDER BY x.n DESC, x.status))
	  INTO status, info
	  FROM (SELECT s.status, count(*) AS n FROM wf.step s
			 WHERE s.run_id = p_run_id AND s.step ~ pattern
			 GROUP BY s.status) x;
END
$$;

/* One node: its shape by kind, its label, and in a run's graph its status. */
CREATE FUNCTION wf._graph_node(p_id text, p_path text, p_label text, p_kind text, p_fmt text,
							   p_run_id bigint, p_indent text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	st		record;
	label	text;
	class	text;
BEGIN
	IF p_run_id IS NOT NULL THEN
		st := wf._graph_state(p_run_id, p_path);
		class := coalesce(st.status, 'unreached');
		label := wf._graph_label(ARRAY[p_label, p_kind || ' ' || coalesce(st.status, 'not reached'),
									   st.info], p_fmt);
	ELSE
		label := wf._graph_label(ARRAY[p_label, p_kind], p_fmt);
	END IF;
	IF p_fmt = 'dot' THEN
		RETURN format('%s%s [label=%s%s%s];', p_indent, p_id, label,
					  CASE p_kind WHEN 'if' THEN ', shape=diamond'
								  WHEN 'parallel' THEN ', shape=trapezium'
								  WHEN 'map' THEN ', shape=parallelogram'
								  WHEN 'compensate' THEN ', shape=box, style="rounded,dashed,filled"'
								  ELSE '' END,
					  CASE class
						WHEN 'completed' THEN ', fillcolor="#c8e6c9"'
						WHEN 'failed' THEN ', fillcolor="#ffcdd2"'
						WHEN 'running' THEN ', fillcolor="#fff59d"'
						WHEN 'waiting' THEN ', fillcolor="#fff59d"'
						WHEN 'escalated' THEN ', fillcolor="#e1bee7"'
						WHEN 'compensated' THEN ', fillcolor="#ffe0b2"'
						WHEN 'skipped' THEN ', fillcolor="#eeeeee"'
						WHEN 'cancelled' THEN ', fillcolor="#e0e0e0"'
						WHEN 'unreached' THEN ', fontcolor="#9e9e9e", color="#9e9e9e"'
						ELSE '' END);
	END IF;
	RETURN p_indent || p_id
		|| CASE p_kind WHEN 'if' THEN '{' || label || '}'
					   WHEN 'parallel' THEN '[[' || label || ']]'
					   WHEN 'map' THEN '[/' || label || '/]'
					   WHEN 'compensate' THEN '([' || label || '])'
					   ELSE '[' || label || ']' END
		|| CASE WHEN class IS NOT NULL THEN ':::' || class ELSE '' END;
END
$$;

/*
 * The nodes (in their subgraphs) and edges of a list of steps whose paths
 * begin with p_prefix; p_idprefix names their nodes (an if's two branches
 * share the prefix of their paths, not that of their nodes).  The steps
 * that depend on nothing get an edge from p_from labelled p_from_label.
 */
CREATE FUNCTION wf._graph_list(p_steps jsonb, p_prefix text, p_idprefix text, p_fmt text,
							   p_run_id bigint, p_depth int, p_from text, p_from_label text,
							   INOUT nodes text[], INOUT edges text[])
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	e		jsonb;
	spec	jsonb;
	kind	text;
	path	text;
	id		text;
	ind		text := repeat('  ', p_depth + 1);
	d		text;
	b		jsonb;
	cond	text;
	tmpl	jsonb;
BEGIN
	FOR e IN SELECT x FROM jsonb_array_elements(wf._plan_list(p_steps, p_prefix)) x LOOP
		spec := e->'spec';
		kind := e->>'kind';
		path := e->>'name';
		id := wf._graph_id(p_idprefix || (e->>'label'));
		cond := CASE WHEN spec ? 'when' THEN 'when ' || wf._clip(spec->>'when', 40) END;
		IF jsonb_array_length(e->'deps') = 0 THEN
			edges := edges || wf._graph_edge(p_from, id,
											 nullif(concat_ws(', ', p_from_label, cond), ''),
											 false, p_fmt);
		END IF;
		FOR d IN SELECT jsonb_array_elements_text(e->'deps') LOOP
			edges := edges || wf._graph_edge(wf._graph_id(p_idprefix || substr(d, length(p_prefix) + 1)),
											 id, cond, false, p_fmt);
		END LOOP;
		IF kind IN ('if', 'parallel', 'map') THEN
			nodes := nodes || CASE WHEN p_fmt = 'dot'
								   THEN format('%ssubgraph cluster_%s {', ind, id)
								   ELSE format('%ssubgraph g_%s [%s]', ind, id,
											   wf._graph_label(ARRAY[e->>'label'], p_fmt)) END;
			IF p_fmt = 'dot' THEN
				nodes := nodes || format('%s  label=%s; style=rounded; color="#90a4ae";', ind,
										 wf._graph_label(ARRAY[e->>'label'], p_fmt));
			END IF;
			nodes := nodes || wf._graph_node(id, path, e->>'label', kind, p_fmt, p_run_id, ind || '  ');
			IF kind = 'if' THEN
				SELECT * INTO nodes, edges
				  FROM wf._graph_list(coalesce(spec->'then', '[]'), path || '/',
									  p_idprefix || (e->>'label') || '/then/', p_fmt, p_run_id,
									  p_depth + 1, id, wf._clip(spec->>'if', 40), nodes, edges);
				SELECT * INTO nodes, edges
				  FROM wf._graph_list(coalesce(spec->'else', '[]'), path || '/',
									  p_idprefix || (e->>'label') || '/else/', p_fmt, p_run_id,
									  p_depth + 1, id, 'else', nodes, edges);
			ELSIF kind = 'parallel' THEN
				FOR b IN SELECT jsonb_array_elements(spec->'parallel') LOOP
					nodes := nodes || CASE WHEN p_fmt = 'dot'
										   THEN format('%s  subgraph cluster_%s {', ind,
													   wf._graph_id(path || '/' || (b->>'name')))
										   ELSE format('%s  subgraph g_%s [%s]', ind,
													   wf._graph_id(path || '/' || (b->>'name')),
													   wf._graph_label(ARRAY[b->>'name'], p_fmt)) END;
					IF p_fmt = 'dot' THEN
						nodes := nodes || format('%s    label=%s; style=dashed; color="#b0bec5";', ind,
												 wf._graph_label(ARRAY[b->>'name'], p_fmt));
					END IF;
					SELECT * INTO nodes, edges
					  FROM wf._graph_list(coalesce(b->'steps', '[]'), path || '/' || (b->>'name') || '/',
										  p_idprefix || (e->>'label') || '/' || (b->>'name') || '/',
										  p_fmt, p_run_id, p_depth + 2, id, NULL, nodes, edges);
					nodes := nodes || (ind || '  ' || CASE WHEN p_fmt = 'dot' THEN '}' ELSE 'end' END);
				END LOOP;
			ELSE
				/* The map's items stand as one node, path[*]. */
				tmpl := spec->'map'->'step' || '{"name": "[*]"}';
				tmpl := tmpl - 'dependencies';
				SELECT * INTO nodes, edges
				  FROM wf._graph_list(jsonb_build_array(tmpl), path, p_idprefix || (e->>'label'),
									  p_fmt, p_run_id, p_depth + 1, id,
									  'each of ' || wf._clip(spec->'map'->>'over', 30)
									  || coalesce(', ' || (spec->'map'->>'concurrency') || ' at a time', ''),
									  nodes, edges);
			END IF;
			nodes := nodes || (ind || CASE WHEN p_fmt = 'dot' THEN '}' ELSE 'end' END);
		ELSE
			nodes := nodes || wf._graph_node(id, path, e->>'label', kind, p_fmt, p_run_id, ind);
		END IF;
		IF spec ? 'compensate' THEN
			nodes := nodes || wf._graph_node(wf._graph_id('compensate:' || p_idprefix || (e->>'label')),
											 'compensate:' || path,
											 'undo ' || (e->>'label'), 'compensate', p_fmt,
											 p_run_id, ind);
			edges := edges || wf._graph_edge(id, wf._graph_id('compensate:' || p_idprefix || (e->>'label')),
											 'undo', true, p_fmt);
		END IF;
	END LOOP;
END
$$;

/* The whole graph of a definition, of a run's when p_run_id is set. */
CREATE FUNCTION wf._graph_text(p_title text, p_definition jsonb, p_fmt text, p_run_id bigint)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	nodes	text[] := '{}';
	edges	text[] := '{}';
	head	text[];
BEGIN
	IF p_fmt IS NULL OR p_fmt NOT IN ('mermaid', 'dot') THEN
		RAISE EXCEPTION 'unknown graph format "%"', p_fmt
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The formats are "mermaid" and "dot".';
	END IF;
	SELECT * INTO nodes, edges
	  FROM wf._graph_list(p_definition->'steps', '', '', p_fmt, p_run_id, 0, 'start', NULL,
						  nodes, edges);
	IF p_fmt = 'dot' THEN
		head := ARRAY[format('digraph %s {', wf._graph_label(ARRAY[p_title], p_fmt)),
					  format('  label=%s; labelloc=t; rankdir=TB; compound=true;',
							 wf._graph_label(ARRAY[p_title], p_fmt)),
					  '  node [shape=box, style="rounded,filled", fillcolor="white", fontname="Helvetica"];',
					  '  edge [fontname="Helvetica", fontsize=10];',
					  '  start [label="start", shape=circle, fillcolor="#eceff1"];'];
		RETURN array_to_string(head || nodes || edges || '}'::text, E'\n');
	END IF;
	head := ARRAY['---', 'title: ' || wf._graph_label(ARRAY[p_title], p_fmt), '---', 'flowchart TD'];
	IF p_run_id IS NOT NULL THEN
		head := head || ARRAY[
			'  classDef completed fill:#c8e6c9,stroke:#2e7d32',
			'  classDef failed fill:#ffcdd2,stroke:#c62828',
			'  classDef running fill:#fff59d,stroke:#f9a825',
			'  classDef waiting fill:#fff59d,stroke:#f9a825',
			'  classDef ready fill:#ffffff,stroke:#616161',
			'  classDef pending fill:#ffffff,stroke:#616161',
			'  classDef escalated fill:#e1bee7,stroke:#6a1b9a',
			'  classDef compensated fill:#ffe0b2,stroke:#ef6c00',
			'  classDef skipped fill:#eeeeee,stroke:#9e9e9e',
			'  classDef cancelled fill:#e0e0e0,stroke:#616161',
			'  classDef unreached fill:#ffffff,stroke:#bdbdbd,color:#9e9e9e,stroke-dasharray:3 3'];
	END IF;
	RETURN array_to_string(head || '  start(("start"))'::text || nodes || edges, E'\n');
END
$$;

/* wf_graph(workflow, format): the last version of the workflow. */
CREATE FUNCTION wf._graph(caller oid, caller_path text, p_workflow text, p_format text)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	d	wf.workflow_def;
BEGIN
	SELECT * INTO d FROM wf.workflow_def WHERE name = p_workflow ORDER BY version DESC LIMIT 1;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'workflow "%" does not exist', p_workflow USING ERRCODE = 'undefined_object';
	END IF;
	RETURN wf._graph_text(format('%s v%s', d.name, d.version), d.definition, p_format, NULL);
END
$$;

/* wf_graph(run_id, format): the run's workflow version, coloured by its steps. */
CREATE FUNCTION wf._graph(caller oid, caller_path text, p_run_id bigint, p_format text)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
BEGIN
	PERFORM wf._run_status(caller, caller_path, p_run_id);
	SELECT * INTO r FROM wf.run WHERE id = p_run_id;
	RETURN wf._graph_text(format('run %s: %s v%s, %s', r.id, r.workflow, r.version, r.status),
						  (SELECT d.definition FROM wf.workflow_def d
							WHERE d.name = r.workflow AND d.version = r.version),
						  p_format, p_run_id);
END
$$;

/*
 * wf_metrics(workflow, since): the caller's runs of the workflow that ended
 * in the last "since" (every role's for wf_admin, the rule of wf.runs),
 * one row for the runs and one per step; a map's items are one step,
 * "map[*]".  A step's executions are its rows that ended (not those
 * cancelled before they ran); its share is the time it took of the time
 * the runs took; the bottlenecks are the three steps other than
 * containers with the largest share, when it is 10% or more.
 */
CREATE FUNCTION wf._metrics(caller oid, caller_path text, p_workflow text, p_since interval,
							OUT scope text, OUT step text, OUT executions bigint,
							OUT completed bigint, OUT failed bigint, OUT cancelled bigint,
							OUT skipped bigint, OUT success_rate numeric, OUT error_rate numeric,
							OUT mean interval, OUT p50 interval, OUT p95 interval,
							OUT p99 interval, OUT attempts numeric, OUT share numeric,
							OUT bottleneck boolean)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET work_mem = '32MB' AS $$
DECLARE
	admin	boolean := pg_has_role(caller, 'wf_admin', 'MEMBER');
BEGIN
	IF p_workflow IS NULL OR NOT EXISTS (SELECT 1 FROM wf.workflow_def d WHERE d.name = p_workflow) THEN
		RAISE EXCEPTION 'workflow "%" does not exist', p_workflow USING ERRCODE = 'undefined_object';
	END IF;
	IF p_since IS NULL OR p_since < '0' THEN
		RAISE EXCEPTION 'since must be a positive interval'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	/*
	 * Planned with the values: which runs to read (the index on finished
	 * runs by workflow and end time) and how to reach their steps depend
	 * on how many there are.
	 */
	RETURN QUERY EXECUTE $q$
	WITH runs AS MATERIALIZED (
		SELECT r.id, r.status, r.started_at, r.finished_at - r.started_at AS dur
		  FROM wf.run r
		 WHERE r.workflow = $1
		   AND r.status IN ('completed', 'failed', 'cancelled')
		   AND r.finished_at >= $2
		   AND ($3 OR r.owner = $4)
	), total AS (
		SELECT extract(epoch FROM sum(runs.dur)) AS t FROM runs
	), steps AS (
		SELECT regexp_replace(s.step, '\[[0-9]+\]', '[*]', 'g') COLLATE "C" AS name,
			   s.kind IN ('if', 'parallel', 'map') AS container, s.status, s.attempt,
			   s.finished_at - s.started_at AS dur, s.started_at - runs.started_at AS offset_
		  FROM runs,
			   /* Each run's steps by the primary key, however big wf.step is. */
			   LATERAL (SELECT * FROM wf.step s1 WHERE s1.run_id = runs.id OFFSET 0) s
		 WHERE s.status IN ('completed', 'failed', 'skipped', 'compensated', 'escalated')
	), per_step AS (
		SELECT st.name, bool_or(st.container) AS container, count(*) AS n,
			   count(*) FILTER (WHERE st.status IN ('completed', 'compensated')) AS n_completed,
			   count(*) FILTER (WHERE st.status IN ('failed', 'escalated')) AS n_failed,
			   count(*) FILTER (WHERE st.status = 'skipped') AS n_skipped,
			   avg(st.dur) AS mean,
			   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY st.dur) AS pct,
			   avg(st.attempt) FILTER (WHERE st.attempt > 0) AS attempts,
			   extract(epoch FROM sum(st.dur)) AS spent, avg(st.offset_) AS starts
		  FROM steps st
		 GROUP BY st.name
	), ranked AS (
		SELECT p.*,
			   CASE WHEN total.t > 0 THEN round(p.spent / total.t, 3) END AS share_,
			   CASE WHEN NOT p.container AND total.t > 0 AND p.spent / total.t >= 0.1
					THEN rank() OVER (PARTITION BY NOT p.container AND total.t > 0
											AND p.spent / total.t >= 0.1
									  ORDER BY p.spent DESC) END AS r
		  FROM per_step p, total
	)
	SELECT u.scope, u.step, u.executions, u.completed, u.failed, u.cancelled, u.skipped,
		   u.success_rate, u.error_rate, u.mean, u.p50, u.p95, u.p99, u.attempts, u.share,
		   u.bottleneck
	  FROM (SELECT 'run' AS scope, NULL::text AS step, count(*) AS executions,
				   count(*) FILTER (WHERE runs.status = 'completed') AS completed,
				   count(*) FILTER (WHERE runs.status = 'failed') AS failed,
				   count(*) FILTER (WHERE runs.status = 'cancelled') AS cancelled,
				   NULL::bigint AS skipped,
				   round(count(*) FILTER (WHERE runs.status = 'completed')::numeric
						 / nullif(count(*), 0), 3) AS success_rate,
				   round(count(*) FILTER (WHERE runs.status = 'failed')::numeric
						 / nullif(count(*), 0), 3) AS error_rate,
				   avg(runs.dur) AS mean,
				   (percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY runs.dur))[1] AS p50,
				   (percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY runs.dur))[2] AS p95,
				   (percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY runs.dur))[3] AS p99,
				   NULL::numeric AS attempts, CASE WHEN count(*) > 0 THEN 1.000 END AS share,
				   false AS bottleneck, 0 AS o1, NULL::interval AS o2
			  FROM runs
			UNION ALL
			SELECT 'step', k.name, k.n, k.n_completed, k.n_failed, NULL, k.n_skipped,
				   round(k.n_completed::numeric / k.n, 3), round(k.n_failed::numeric / k.n, 3),
				   k.mean, k.pct[1], k.pct[2], k.pct[3], round(k.attempts, 2), k.share_,
				   coalesce(k.r <= 3, false), 1, k.starts
			  FROM ranked k) u
	 ORDER BY u.o1, u.o2 NULLS LAST, u.step
	$q$ USING p_workflow, clock_timestamp() - p_since, admin, caller;
END
$$;

CREATE FUNCTION @extschema@.wf_metrics(workflow text, since interval DEFAULT '1 day')
RETURNS TABLE (scope text, step text, executions bigint, completed bigint, failed bigint,
			   cancelled bigint, skipped bigint, success_rate numeric, error_rate numeric,
			   mean interval, p50 interval, p95 interval, p99 interval, attempts numeric,
			   share numeric, bottleneck boolean)
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * SLAs: the "sla" of a definition counts from its run's start, the "sla"
 * of a step from the start of its first attempt.  sla_at is when it
 * passes, set by the triggers below; wf._check_slas, which the executors
 * call, raises its alert (one per run or step) and sets it to infinity;
 * when the run or step ends, the triggers clear it and resolve the alert.
 */
ALTER TABLE wf.run ADD COLUMN sla_at timestamptz;
ALTER TABLE wf.step ADD COLUMN sla_at timestamptz;
ALTER TABLE wf.alert ADD COLUMN acknowledged_by regrole,
	ADD COLUMN acknowledged_at timestamptz;
CREATE INDEX run_sla ON wf.run (sla_at) WHERE sla_at IS NOT NULL;
CREATE INDEX step_sla ON wf.step (sla_at) WHERE sla_at IS NOT NULL;

/* A run's sla_at: set at its start, cleared (its alert resolved) at its end. */
CREATE FUNCTION wf._run_sla() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NEW.status IN ('completed', 'failed', 'cancelled') THEN
		IF NEW.sla_at = 'infinity' THEN
			UPDATE wf.alert SET resolved_at = clock_timestamp()
			 WHERE run_id = NEW.id AND step IS NULL AND kind = 'sla'
			   AND resolved_at IS NULL;
		END IF;
		NEW.sla_at := NULL;
	ELSIF OLD.started_at IS NULL AND NEW.started_at IS NOT NULL THEN
		NEW.sla_at := NEW.started_at
			+ (SELECT (d.definition->>'sla')::interval FROM wf.workflow_def d
				WHERE d.name = NEW.workflow AND d.version = NEW.version);
	END IF;
	RETURN NEW;
END
$$;

CREATE TRIGGER run_sla BEFORE UPDATE OF status, started_at ON wf.run
	FOR EACH ROW
	WHEN ((OLD.started_at IS NULL AND NEW.started_at IS NOT NULL) OR NEW.sla_at IS NOT NULL)
	EXECUTE FUNCTION wf._run_sla();

/* A step's sla_at: set at its first start, cleared (its alert resolved) at its end. */
CREATE FUNCTION wf._step_sla() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NEW.status IN ('completed', 'failed', 'skipped', 'compensated', 'cancelled') THEN
		IF NEW.sla_at = 'infinity' THEN
			UPDATE wf.alert SET resolved_at = clock_timestamp()
			 WHERE run_id = NEW.run_id AND step = NEW.step AND kind = 'sla'
			   AND resolved_at IS NULL;
		END IF;
		NEW.sla_at := NULL;
	ELSIF OLD.started_at IS NULL AND NEW.started_at IS NOT NULL AND NEW.attempt = 1 THEN
		NEW.sla_at := NEW.started_at + (NEW.spec->>'sla')::interval;
	END IF;
	RETURN NEW;
END
$$;

CREATE TRIGGER step_sla BEFORE UPDATE OF status, started_at ON wf.step
	FOR EACH ROW
	WHEN (NEW.spec ? 'sla')
	EXECUTE FUNCTION wf._step_sla();

/*
 * Raises the alerts of the SLAs that have passed; returns when the next
 * one passes, for the executors' sleep.  Rows another transaction holds
 * are left for the next call.
 */
CREATE FUNCTION wf._check_slas() RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r		record;
	v_wf	text;
	v_sla	text;
	/*
	 * Called before every batch: the loops read only the (nearly empty)
	 * partial indexes run_sla and step_sla, with a value rather than
	 * clock_timestamp() and no join, so that no plan ever scans wf.run or
	 * wf.step; what an alert needs is looked up for the rare row due.
	 */
	t		timestamptz := clock_timestamp();
	next_run	timestamptz := (SELECT min(sla_at) FROM wf.run WHERE sla_at < 'infinity');
	next_step	timestamptz := (SELECT min(sla_at) FROM wf.step WHERE sla_at < 'infinity');
BEGIN
	/* min() reads the first entry of its index: this is all a batch pays. */
	IF next_run <= t THEN
	FOR r IN SELECT u.id, u.workflow, u.version, u.sla_at FROM wf.run u
			  WHERE u.sla_at <= t
			  ORDER BY u.sla_at LIMIT 1000
			  FOR UPDATE SKIP LOCKED LOOP
		SELECT d.definition->>'sla' INTO v_sla FROM wf.workflow_def d
		 WHERE d.name = r.workflow AND d.version = r.version;
		UPDATE wf.run SET sla_at = 'infinity' WHERE id = r.id;
		PERFORM wf._alert(r.id, NULL, 'sla',
						  format('run %s of workflow "%s" has not ended within its SLA of %s',
								 r.id, r.workflow, v_sla),
						  jsonb_build_object('workflow', r.workflow, 'sla', v_sla,
											 'due', r.sla_at));
	END LOOP;
	next_run := (SELECT min(sla_at) FROM wf.run WHERE sla_at < 'infinity');
	END IF;
	IF next_step <= t THEN
	FOR r IN SELECT s.run_id, s.step, s.sla_at, s.spec->>'sla' AS sla FROM wf.step s
			  WHERE s.sla_at <= t
			  ORDER BY s.sla_at LIMIT 1000
			  FOR UPDATE SKIP LOCKED LOOP
		SELECT u.workflow INTO v_wf FROM wf.run u WHERE u.id = r.run_id;
		UPDATE wf.step SET sla_at = 'infinity' WHERE run_id = r.run_id AND step = r.step;
		PERFORM wf._alert(r.run_id, r.step, 'sla',
						  format('step "%s" of run %s of workflow "%s" has not ended within its SLA of %s',
								 r.step, r.run_id, v_wf, r.sla),
						  jsonb_build_object('workflow', v_wf, 'sla', r.sla,
											 'due', r.sla_at));
	END LOOP;
	next_step := (SELECT min(sla_at) FROM wf.step WHERE sla_at < 'infinity');
	END IF;
	RETURN LEAST(next_run, next_step);
END
$$;

/*
 * wf_ack_alert(alert_id): the caller acknowledges an alert of a run it
 * controls (any alert, for wf_admin); false if it was acknowledged already.
 */
CREATE FUNCTION wf._ack_alert(caller oid, caller_path text, p_alert_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	a		wf.alert;
	run_owner	oid;
BEGIN
	IF p_alert_id IS NULL THEN
		RAISE EXCEPTION 'alert id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO a FROM wf.alert WHERE id = p_alert_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'alert % does not exist', p_alert_id USING ERRCODE = 'undefined_object';
	END IF;
	SELECT r.owner INTO run_owner FROM wf.run r WHERE r.id = a.run_id;
	IF NOT (pg_has_role(caller, 'wf_admin', 'MEMBER')
			OR (run_owner IS NOT NULL AND wf._may_control(caller, run_owner))) THEN
		RAISE EXCEPTION 'permission denied for alert %', p_alert_id
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only the role that started the run and members of wf_admin may acknowledge its alerts.';
	END IF;
	IF a.acknowledged_at IS NOT NULL THEN
		RETURN false;
	END IF;
	UPDATE wf.alert SET acknowledged_by = caller, acknowledged_at = clock_timestamp()
	 WHERE id = p_alert_id;
	RETURN true;
END
$$;

CREATE FUNCTION @extschema@.wf_ack_alert(alert_id bigint) RETURNS boolean
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_explain(run_id bigint) RETURNS SETOF text
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_graph(workflow text, format text DEFAULT 'mermaid') RETURNS text
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_graph(run_id bigint, format text DEFAULT 'mermaid') RETURNS text
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';


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
				CHECK (state IN ('ready', 'claimed', 'completed', 'failed',
								 'expired', 'cancelled')),
	created_at	timestamptz NOT NULL DEFAULT clock_timestamp(),
	deadline	timestamptz,		-- the step's timeout
	claimed_by	regrole,			-- the role holding the lease
	agent		text,
	claimed_at	timestamptz,
	lease_until	timestamptz,
	seen_at		timestamptz,		-- the holder's last claim, heartbeat or end
	progress	jsonb,
	finished_at	timestamptz
);
CREATE INDEX task_ready ON wf.task (pool, priority DESC, id) WHERE state = 'ready';
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
						 requires, priority, deadline)
	SELECT s.run_id, s.step, s.attempt, s.started_at, p_pool, p_payload,
		   p_requires, s.priority,
		   CASE WHEN p_timeout_ms > 0
				THEN clock_timestamp() + p_timeout_ms * interval '1 millisecond' END
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
	 WHERE octet_length('wf_pool_' || p_pool) < 64
$$;

/* May role caller claim the tasks of pool p_pool? */
CREATE FUNCTION wf._may_claim(caller oid, p_pool text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT pg_has_role(caller, 'wf_admin', 'MEMBER')
		OR EXISTS (SELECT 1 FROM wf.pool_grant g
					WHERE g.pool = p_pool AND pg_has_role(caller, g.grantee::oid, 'MEMBER'))
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
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT coalesce(p_agent, nullif(current_setting('application_name'), ''),
					caller::regrole::text)
$$;

/* The tasks of the pool that the agent holds now (index task_in_flight). */
CREATE FUNCTION wf._agent_in_flight(p_pool text, p_agent text) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT count(*) FROM wf.task t
	 WHERE t.pool = p_pool AND t.agent = p_agent AND t.state = 'claimed'
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
		 WHERE t.pool = p_pool AND t.state = 'ready' AND t.requires <@ p_caps
		   AND EXISTS (SELECT 1 FROM wf.step s
						WHERE s.run_id = t.run_id AND s.step = t.step
						  AND s.status = 'running' AND s.attempt = t.attempt
						  AND s.started_at = t.started_at)
		 ORDER BY t.priority DESC, t.id
		 LIMIT v_max
		   FOR UPDATE OF t SKIP LOCKED
	), u AS (
		UPDATE wf.task t
		   SET state = 'claimed', claimed_by = caller, agent = v_agent,
			   claimed_at = clock_timestamp(), seen_at = clock_timestamp(),
			   lease_until = clock_timestamp() + p_lease
		  FROM c WHERE t.id = c.id
		RETURNING t.id, t.priority
	)
	SELECT array_agg(u.id ORDER BY u.priority DESC, u.id) INTO v_ids FROM u;
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
	/* The executors' next look at expired leases must come in time. */
	PERFORM wf._wake();
	RETURN QUERY
	SELECT t.id, t.run_id, t.step, t.payload, t.attempt, t.lease_until
	  FROM wf.task t WHERE t.id = ANY (v_ids)
	 ORDER BY t.priority DESC, t.id;
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
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	SELECT (wf._agent_in_flight(p_pool, wf._agent_name(caller, p_agent))
			/ coalesce(p_capacity, greatest(p_max, 1))::float8)::float4
$$;

/* The claim of an agent returns: it is seen now, with its capabilities. */
CREATE FUNCTION wf._agent_seen(caller oid, caller_path text, p_pool text, p_max int,
							   p_lease interval, p_agent text, p_caps text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO wf.agent AS a (pool, agent, role, capabilities, first_seen, last_seen)
	VALUES (p_pool, wf._agent_name(caller, p_agent),
			caller, p_caps, clock_timestamp(), clock_timestamp())
	ON CONFLICT (pool, agent) DO UPDATE
	   SET role = EXCLUDED.role, capabilities = EXCLUDED.capabilities,
		   last_seen = EXCLUDED.last_seen;
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
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT t.state = 'claimed' AND t.lease_until >= clock_timestamp()
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

/* ---------------------------------------------------------------------
 * Views
 * ---------------------------------------------------------------------
 */

CREATE VIEW wf.workflows AS
	SELECT d.name, d.version, d.definition, d.description, d.created_at,
		   d.created_by
	  FROM wf.workflow_def d;

CREATE VIEW wf.runs WITH (security_barrier) AS
	SELECT r.id, r.workflow, r.version, r.status, r.input, r.output, r.error,
		   r.owner, r.priority, r.idempotency_key,
		   r.parent_run, r.parent_step, r.depth, r.origin_run,
		   r.created_at, r.start_at, r.started_at, r.finished_at
	  FROM wf.run r
	 WHERE r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

/*
 * wf.metrics: every workflow's figures of the last hour, one row per
 * workflow and measure, for a Prometheus SQL exporter (measure names in
 * its style; durations in seconds).  The runs that ended are those
 * wf_metrics(workflow, '1 hour') counts, so the caller sees its own runs'
 * (every role's for wf_admin); the unfinished runs are counted from
 * wf.runs, by the same rule.  Measures without a value (no run ended) are
 * left out.
 */
CREATE VIEW wf.metrics AS
	SELECT w.name AS workflow, m.measure, m.value
	  FROM (SELECT DISTINCT d.name FROM wf.workflow_def d) w
		   CROSS JOIN LATERAL (
			SELECT * FROM @extschema@.wf_metrics(w.name, interval '1 hour') x
			 WHERE x.scope OPERATOR(pg_catalog.=) 'run') r
		   CROSS JOIN LATERAL (
			VALUES ('runs_ended_total', r.executions::float8),
				   ('runs_completed_total', r.completed::float8),
				   ('runs_failed_total', r.failed::float8),
				   ('runs_cancelled_total', r.cancelled::float8),
				   ('run_success_ratio', r.success_rate::float8),
				   ('run_error_ratio', r.error_rate::float8),
				   ('run_duration_mean_seconds', pg_catalog.date_part('epoch', r.mean)),
				   ('run_duration_p50_seconds', pg_catalog.date_part('epoch', r.p50)),
				   ('run_duration_p95_seconds', pg_catalog.date_part('epoch', r.p95)),
				   ('run_duration_p99_seconds', pg_catalog.date_part('epoch', r.p99)),
				   ('runs_pending', (SELECT pg_catalog.count(*) FROM wf.runs u
									  WHERE u.workflow OPERATOR(pg_catalog.=) w.name
										AND u.status OPERATOR(pg_catalog.=) 'pending')::float8),
				   ('runs_running', (SELECT pg_catalog.count(*) FROM wf.runs u
									  WHERE u.workflow OPERATOR(pg_catalog.=) w.name
										AND u.status OPERATOR(pg_catalog.=) 'running')::float8),
				   ('runs_waiting', (SELECT pg_catalog.count(*) FROM wf.runs u
									  WHERE u.workflow OPERATOR(pg_catalog.=) w.name
										AND u.status OPERATOR(pg_catalog.=) 'waiting')::float8)
		   ) m (measure, value)
	 WHERE m.value IS NOT NULL;

GRANT SELECT ON wf.metrics TO PUBLIC;

CREATE VIEW wf.steps WITH (security_barrier) AS
	SELECT s.run_id, s.step, s.kind, s.status, s.attempt, s.output, s.error,
		   CASE WHEN s.status IN ('ready', 'waiting') THEN s.ready_at END AS ready_at,
		   s.started_at, s.finished_at,
		   s.finished_at - s.started_at AS duration, s.ord, s.parent
	  FROM wf.step s JOIN wf.run r ON r.id = s.run_id
	 WHERE r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

CREATE VIEW wf.history WITH (security_barrier) AS
	SELECT h.id, h.run_id, h.step, h.status, h.attempt, h.detail,
		   h.actor, h.at
	  FROM wf.history_log h JOIN wf.run r ON r.id = h.run_id
	 WHERE r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

CREATE VIEW wf.circuit_breakers AS
	SELECT b.key AS host, b.state, b.failures, b.opened_at, b.reset_after,
		   CASE WHEN b.state <> 'closed' THEN b.opened_at + b.reset_after END AS retry_at,
		   b.updated_at
	  FROM wf.circuit_breaker b;

CREATE VIEW wf.alerts WITH (security_barrier) AS
	SELECT a.id, a.run_id, coalesce(r.workflow, a.detail->>'workflow') AS workflow, a.step,
		   a.kind, a.message, a.detail, a.raised_at, a.resolved_at, a.resolved_by,
		   a.acknowledged_by, a.acknowledged_at
	  FROM wf.alert a LEFT JOIN wf.run r ON r.id = a.run_id
	 WHERE r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

/*
 * Unfinished runs: steps finished of the steps there are now (a container's
 * children count from its expansion), the steps running or waiting and
 * since when, and an estimate of the time left from this workflow
 * version's measured step durations: for each unfinished step (a running
 * container's children standing for it), the mean duration of the step of
 * the same path in the version's 20 last completed runs, less what it has
 * run already, summed as if they ran one after the other (an upper bound
 * for branches that run side by side); NULL without completed runs.
 */
CREATE VIEW wf.progress WITH (security_barrier) AS
	SELECT r.id AS run_id, r.workflow, r.version, r.status, r.owner,
		   p.done AS steps_done, p.total AS steps_total,
		   CASE WHEN p.total > 0 THEN round(100.0 * p.done / p.total, 1) END AS percent,
		   coalesce(p.active_steps, '{}') AS active_steps,
		   r.started_at, date_trunc('milliseconds', clock_timestamp() - r.started_at) AS elapsed,
		   date_trunc('milliseconds', e.time_left) AS estimated_left
	  FROM wf.run r
	 CROSS JOIN LATERAL (
			SELECT count(*) FILTER (WHERE s.status IN ('completed', 'skipped', 'failed',
													   'compensated', 'cancelled')) AS done,
				   count(*) AS total,
				   array_agg(format('%s %s since %s', s.step, s.status,
									to_char(coalesce(s.started_at, s.ready_at), 'HH24:MI:SS.MS'))
							 ORDER BY s.ord, s.step)
					 FILTER (WHERE s.status IN ('running', 'waiting', 'escalated')
							   AND s.children_left IS NULL) AS active_steps
			  FROM wf.step s WHERE s.run_id = r.id) p
	 CROSS JOIN LATERAL (
			WITH hist AS (
				SELECT h.id FROM wf.run h
				 WHERE h.workflow = r.workflow AND h.status = 'completed'
				   AND h.version = r.version
				 ORDER BY h.finished_at DESC LIMIT 20
			)
			SELECT CASE WHEN EXISTS (SELECT 1 FROM hist) THEN
					coalesce(sum(greatest(t.mean - coalesce(clock_timestamp() - t.started_at,
															'0'::interval), '0'::interval)),
							 '0'::interval) END AS time_left
			  FROM (SELECT s.started_at,
						   (SELECT avg(m.finished_at - m.started_at)
							  FROM hist JOIN wf.step m ON m.run_id = hist.id AND m.step = s.step
							 WHERE m.status = 'completed') AS mean
					  FROM wf.step s
					 WHERE s.run_id = r.id
					   AND s.status IN ('pending', 'ready', 'running', 'waiting', 'escalated')
					   AND s.children_left IS NULL) t) e
	 WHERE r.status IN ('pending', 'running', 'waiting')
	   AND (r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
			OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER')));

/* Open approvals, for their assignees. */
CREATE VIEW wf.human_tasks WITH (security_barrier) AS
	SELECT s.run_id, r.workflow, s.step, s.assignee,
		   coalesce(s.title, s.spec->'human'->>'title') AS title,
		   s.spec->'human'->>'description' AS description,
		   s.started_at AS opened_at, s.ready_at AS deadline,
		   s.escalated_at IS NOT NULL AS escalated, s.escalated_at
	  FROM wf.step s JOIN wf.run r ON r.id = s.run_id
	 WHERE s.kind = 'human' AND s.status = 'waiting'
	   AND (r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
			OR s.assignee = current_user
			OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER')));

/*
 * The secrets a role may use or manage, never their values: those whose
 * owner or a grantee it has the privileges of (all of them for wf_admin).
 */
CREATE VIEW wf.secrets WITH (security_barrier) AS
	SELECT s.name, s.owner, s.hosts,
		   ARRAY(SELECT g.grantee FROM wf.secret_grant g
				  WHERE g.name OPERATOR(pg_catalog.=) s.name
				  ORDER BY g.grantee::text) AS grantees,
		   s.created_at, s.updated_at, s.updated_by
	  FROM wf.secret s
	 WHERE pg_catalog.pg_has_role(s.owner::oid, 'USAGE')
		OR EXISTS (SELECT 1 FROM wf.secret_grant g
					WHERE g.name OPERATOR(pg_catalog.=) s.name
					  AND pg_catalog.pg_has_role(g.grantee::oid, 'USAGE'))
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

GRANT SELECT ON wf.workflows, wf.runs, wf.steps, wf.history, wf.secrets,
	wf.circuit_breakers, wf.alerts, wf.human_tasks, wf.progress TO PUBLIC;

/* ---------------------------------------------------------------------
 * Flow control
 *
 * Concurrency keys.  A workflow with "concurrency": {"key", "limit"} runs
 * at most "limit" runs with the same rendered key at once (without a key,
 * the key is the workflow's name).  wf.concurrency_slot has a row per key
 * in use: the count of runs holding it.  Every admission (wf._flow_admit,
 * from wf._start, wf._retry and wf._rewind) and every release
 * (wf._flow_release, from the end of a run) locks that row first, so that
 * the count and the runs waiting for the key change under one lock, by
 * any number of starters and executors: a row lock rather than an advisory
 * lock, because it is taken by the same statement that creates the row,
 * is released at commit or rollback with the rest, and the row is the
 * state that the lock protects.  A run that finds every slot taken is
 * admitted but held: it stays pending with its first steps pending (they
 * are not in the executors' queue at all), listed in wf.concurrency_hold;
 * the release that frees a slot passes it to the next waiting run,
 * highest priority first, then in start order, makes that run's steps
 * ready and wakes the executors at its commit.  No one polls.
 *
 * Lock order: a run's end holds its run (and step) rows, then the key's
 * slot row, then the next run's hold row and steps; a waiting run that is
 * cancelled deletes its own hold row without taking the slot row, so that
 * the two cannot wait for each other.
 *
 * Debounce and throttle.  wf._flow_gate decides, under the lock of the
 * wf.start_gate row of (workflow, owner, key, mode), whether a wf_start
 * makes a new run or is folded into the last one.
 * ---------------------------------------------------------------------
 */

CREATE TABLE wf.concurrency_slot (
	key			text PRIMARY KEY,
	lim			int NOT NULL,			-- the limit of the latest admission
	active		int NOT NULL			-- runs holding a slot
);

/* The runs of a concurrency key: those holding a slot, and those waiting. */
CREATE TABLE wf.concurrency_hold (
	run_id		bigint PRIMARY KEY,
	key			text NOT NULL,
	priority	int NOT NULL,
	waiting		boolean NOT NULL,
	held_steps	text[]					-- a waiting run's steps to make ready
);
CREATE INDEX concurrency_hold_waiting ON wf.concurrency_hold (key, priority DESC, run_id)
	WHERE waiting;

/* The last run started through debounce or throttle, per key. */
CREATE TABLE wf.start_gate (
	workflow	text NOT NULL,
	owner		regrole NOT NULL,
	key			text NOT NULL,
	mode		text NOT NULL CHECK (mode IN ('debounce', 'throttle')),
	run_id		bigint,
	until		timestamptz NOT NULL,	-- debounce: the run's start; throttle: the next start
	PRIMARY KEY (workflow, owner, key, mode)
);
CREATE INDEX start_gate_run ON wf.start_gate (run_id);

REVOKE ALL ON wf.concurrency_slot, wf.concurrency_hold, wf.start_gate FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('wf.concurrency_slot', '');
SELECT pg_catalog.pg_extension_config_dump('wf.concurrency_hold', '');
SELECT pg_catalog.pg_extension_config_dump('wf.start_gate', '');

/*
 * A flow-control key: the template rendered from a run's input, each
 * "{{ PATH }}" replaced by the first match of the JSON path in
 * {"input": ...} (a string by its text, any other value by its JSON text),
 * as step templates are rendered.  Paths are evaluated by jsonpath alone,
 * which reaches no user code.  The key must come out non-empty and short
 * enough for an index.
 */
CREATE FUNCTION wf._flow_key(p_template text, p_input jsonb, p_what text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	ctx		jsonb := jsonb_build_object('input', p_input);
	rest	text := p_template;
	k		text := '';
	i		int;
	j		int;
	expr	text;
	v		jsonb;
BEGIN
	LOOP
		i := position('{{' IN rest);
		EXIT WHEN i = 0;
		j := position('}}' IN substr(rest, i + 2));
		IF j = 0 THEN
			RAISE EXCEPTION 'invalid % template "%"', p_what, p_template
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = '"{{" is not closed by "}}".';
		END IF;
		expr := btrim(substr(rest, i + 2, j - 1));
		BEGIN
			v := jsonb_path_query_first(ctx, expr::jsonpath);
		EXCEPTION WHEN syntax_error OR data_exception THEN
			RAISE EXCEPTION 'invalid % template "{{%}}"', p_what, expr
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'A key may use JSON paths into the run''s input ($.input), nothing else.';
		END;
		IF v IS NULL THEN
			RAISE EXCEPTION '% template "{{%}}" matched nothing in the run''s input', p_what, expr
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		k := k || substr(rest, 1, i - 1)
			   || CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' ELSE v::text END;
		rest := substr(rest, i + 2 + j + 1);
	END LOOP;
	k := k || rest;
	IF k = '' THEN
		RAISE EXCEPTION '% is empty', p_what
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The template "%s" rendered an empty string from the run''s input.',
								  p_template);
	END IF;
	IF octet_length(k) > 1000 THEN
		RAISE EXCEPTION '% is too long', p_what
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('It has %s bytes; the limit is 1000.', octet_length(k));
	END IF;
	RETURN k;
END
$$;

/*
 * Admits a run to its workflow's concurrency key (p_conc, the definition's
 * "concurrency"), after its ready steps are in place: it takes a slot, or
 * its ready top-level steps are held (made pending) until a slot is passed
 * to it.  A run that holds a slot already keeps it; one that waits already
 * holds the steps that became ready meanwhile (wf_rewind) as well.
 */
CREATE FUNCTION wf._flow_admit(p_run_id bigint, p_workflow text, p_conc jsonb,
							   p_input jsonb, p_priority int)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	h	wf.concurrency_hold;
	s	wf.concurrency_slot;
	k	text;
BEGIN
	IF p_conc IS NULL THEN
		RETURN;
	END IF;
	SELECT * INTO h FROM wf.concurrency_hold WHERE run_id = p_run_id FOR UPDATE;
	IF FOUND THEN
		IF h.waiting THEN
			WITH held AS (
				UPDATE wf.step SET status = 'pending', ready_at = NULL, fair_at = NULL
				 WHERE run_id = p_run_id AND status = 'ready' AND parent IS NULL
				RETURNING step
			)
			UPDATE wf.concurrency_hold
			   SET held_steps = coalesce(held_steps, '{}') || ARRAY(SELECT step FROM held)
			 WHERE run_id = p_run_id;
		END IF;
		RETURN;
	END IF;
	k := CASE WHEN p_conc ? 'key'
			  THEN wf._flow_key(p_conc->>'key', p_input, 'concurrency key')
			  ELSE p_workflow END;
	INSERT INTO wf.concurrency_slot AS c (key, lim, active)
	VALUES (k, (p_conc->>'limit')::int, 0)
	ON CONFLICT (key) DO UPDATE SET lim = excluded.lim
	RETURNING * INTO s;
	IF s.active < s.lim THEN
		UPDATE wf.concurrency_slot SET active = active + 1 WHERE key = k;
		INSERT INTO wf.concurrency_hold (run_id, key, priority, waiting)
		VALUES (p_run_id, k, p_priority, false);
		RETURN;
	END IF;
	WITH held AS (
		UPDATE wf.step SET status = 'pending', ready_at = NULL, fair_at = NULL
		 WHERE run_id = p_run_id AND status = 'ready' AND parent IS NULL
		RETURNING step
	)
	INSERT INTO wf.concurrency_hold (run_id, key, priority, waiting, held_steps)
	SELECT p_run_id, k, p_priority, true, ARRAY(SELECT step FROM held);
	INSERT INTO wf.history_log (run_id, status, detail, actor)
	SELECT p_run_id, 'pending', jsonb_build_object('waiting_for', k, 'limit', s.lim), r.owner
	  FROM wf.run r WHERE r.id = p_run_id;
END
$$;

/* wf._flow_admit for a run made active again (wf_retry, wf_rewind). */
CREATE FUNCTION wf._flow_readmit(p_run_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v	record;
BEGIN
	SELECT x.workflow, x.input, x.priority, d.definition->'concurrency' AS conc INTO v
	  FROM wf.run x JOIN wf.workflow_def d ON d.name = x.workflow AND d.version = x.version
	 WHERE x.id = p_run_id;
	IF v.conc IS NOT NULL THEN
		PERFORM wf._flow_admit(p_run_id, v.workflow, v.conc, v.input, v.priority);
	END IF;
END
$$;

/*
 * A run ends: it leaves its concurrency key, and the slot it held goes to
 * the next waiting run, whose steps become ready (and the executors are
 * woken) when this transaction commits.
 */
CREATE FUNCTION wf._flow_release(p_run_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	h		wf.concurrency_hold;
	nxt		wf.concurrency_hold;
	r		wf.run;
	n		int;
BEGIN
	DELETE FROM wf.concurrency_hold WHERE run_id = p_run_id RETURNING * INTO h;
	IF NOT FOUND OR h.waiting THEN
		RETURN;
	END IF;
	PERFORM 1 FROM wf.concurrency_slot WHERE key = h.key FOR UPDATE;
	/*
	 * The first waiting run; one being cancelled meanwhile is skipped once
	 * its cancellation commits (a locking SELECT with LIMIT then finds no
	 * row, hence the loop).
	 */
	LOOP
		SELECT * INTO nxt FROM wf.concurrency_hold
		 WHERE key = h.key AND waiting
		 ORDER BY priority DESC, run_id LIMIT 1 FOR UPDATE;
		EXIT WHEN FOUND OR NOT EXISTS (SELECT 1 FROM wf.concurrency_hold
										WHERE key = h.key AND waiting);
	END LOOP;
	IF nxt.run_id IS NULL THEN
		UPDATE wf.concurrency_slot SET active = active - 1 WHERE key = h.key
		RETURNING active INTO n;
		IF n <= 0 THEN
			DELETE FROM wf.concurrency_slot WHERE key = h.key;
		END IF;
		RETURN;
	END IF;
	UPDATE wf.concurrency_hold SET waiting = false, held_steps = NULL
	 WHERE run_id = nxt.run_id;
	SELECT * INTO r FROM wf.run WHERE id = nxt.run_id;
	UPDATE wf.step
	   SET status = 'ready',
		   ready_at = greatest(coalesce(r.start_at, '-infinity'), clock_timestamp()),
		   fair_at = greatest(coalesce(r.start_at, '-infinity'), wf._fair_at(r.owner))
	 WHERE run_id = nxt.run_id AND step = ANY (nxt.held_steps) AND status = 'pending';
	INSERT INTO wf.history_log (run_id, status, detail, actor)
	VALUES (nxt.run_id, 'pending', jsonb_build_object('admitted', h.key, 'after', p_run_id),
			r.owner);
	PERFORM wf._wake();
END
$$;

/*
 * Debounce and throttle of wf._start: returns {"run": id} when this start
 * is folded into an existing run (whose id wf_start returns), otherwise
 * what the new run needs ({"mode", "key", "until", "start_at"}); the gate
 * row stays locked until commit, so that concurrent starts with the same
 * key are decided one after the other.
 *
 * debounce: a run not started yet takes the latest input and starts a
 * quiet interval after this start; the input it replaces is kept in its
 * history ("debounced").  throttle: a start within the interval after the
 * last run's start returns that run; its input is kept in that run's
 * history ("throttled").
 */
CREATE FUNCTION wf._flow_gate(caller oid, p_workflow text, p_input jsonb, p_options jsonb)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v_mode	text;
	ivl		interval;
	k		text;
	g		wf.start_gate;
	r		wf.run;
	t		timestamptz := clock_timestamp();
BEGIN
	IF p_options ? 'debounce' AND p_options ? 'throttle' THEN
		RAISE EXCEPTION 'options debounce and throttle cannot be combined'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	v_mode := CASE WHEN p_options ? 'debounce' THEN 'debounce' ELSE 'throttle' END;
	BEGIN
		ivl := (p_options->>v_mode)::interval;
	EXCEPTION WHEN data_exception OR syntax_error THEN
		RAISE EXCEPTION 'invalid options: % is not an interval: %', v_mode, p_options->>v_mode
			USING ERRCODE = 'invalid_parameter_value';
	END;
	IF ivl <= interval '0' THEN
		RAISE EXCEPTION 'invalid options: % must be a positive interval, not %', v_mode, p_options->>v_mode
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	k := wf._flow_key(coalesce(p_options->>'debounce_key', p_options->>'idempotency_key', p_workflow),
					  p_input, 'debounce key');
	INSERT INTO wf.start_gate AS sg (workflow, owner, key, mode, until)
	VALUES (p_workflow, caller, k, v_mode, '-infinity')
	ON CONFLICT (workflow, owner, key, mode) DO UPDATE SET until = sg.until
	RETURNING * INTO g;

	IF v_mode = 'throttle' THEN
		IF g.run_id IS NOT NULL AND g.until > t THEN
			INSERT INTO wf.history_log (run_id, status, detail, actor)
			VALUES (g.run_id, 'throttled', jsonb_build_object('input', p_input), caller);
			RETURN jsonb_build_object('run', g.run_id);
		END IF;
		RETURN jsonb_build_object('mode', v_mode, 'key', k, 'until', t + ivl);
	END IF;

	IF g.run_id IS NOT NULL THEN
		/* Its first steps first: an executor claiming one holds it. */
		PERFORM 1 FROM wf.step WHERE run_id = g.run_id AND deps = '{}' AND parent IS NULL
		 ORDER BY step FOR UPDATE;
		SELECT * INTO r FROM wf.run WHERE id = g.run_id FOR UPDATE;
		IF FOUND AND r.status = 'pending'
		   AND NOT EXISTS (SELECT 1 FROM wf.step WHERE run_id = r.id AND attempt > 0) THEN
			UPDATE wf.run SET input = p_input, start_at = t + ivl WHERE id = r.id;
			UPDATE wf.step
			   SET ready_at = t + ivl, fair_at = greatest(t + ivl, wf._fair_at(r.owner))
			 WHERE run_id = r.id AND status = 'ready';
			UPDATE wf.start_gate SET until = t + ivl
			 WHERE workflow = g.workflow AND owner = g.owner AND key = g.key AND mode = g.mode;
			INSERT INTO wf.history_log (run_id, status, detail, actor)
			VALUES (r.id, 'debounced',
					jsonb_build_object('replaced_input', r.input, 'start_at', t + ivl), caller);
			RETURN jsonb_build_object('run', r.id);
		END IF;
	END IF;
	RETURN jsonb_build_object('mode', v_mode, 'key', k, 'until', t + ivl, 'start_at', t + ivl);
END
$$;

/* The run that a start through wf._flow_gate made. */
CREATE FUNCTION wf._flow_gate_set(caller oid, p_workflow text, p_gate jsonb, p_run_id bigint)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
	UPDATE wf.start_gate SET run_id = p_run_id, until = (p_gate->>'until')::timestamptz
	 WHERE workflow = p_workflow AND owner = caller AND key = p_gate->>'key'
	   AND mode = p_gate->>'mode';
$$;

/*
 * The concurrency keys in use: a role sees the keys its runs hold or wait
 * for (a key is rendered from a run's input), wf_admin all of them.
 */
CREATE VIEW wf.concurrency WITH (security_barrier) AS
	SELECT c.key, c.lim AS "limit", c.active,
		   (SELECT count(*) FROM wf.concurrency_hold h
			 WHERE h.key OPERATOR(pg_catalog.=) c.key AND h.waiting)::int AS waiting
	  FROM wf.concurrency_slot c
	 WHERE (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'))
		OR EXISTS (SELECT 1 FROM wf.concurrency_hold h JOIN wf.run r ON r.id OPERATOR(pg_catalog.=) h.run_id
					WHERE h.key OPERATOR(pg_catalog.=) c.key
					  AND r.owner OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles
														   WHERE rolname OPERATOR(pg_catalog.=) current_user));

GRANT SELECT ON wf.concurrency TO PUBLIC;

/*
 * Rate limits.  A step with "rate_limit": {"key", "limit", "per"} takes a
 * token from the wf.rate_limit row of its key (by default the host of an
 * http step's url) in its executor's transaction, before its request is
 * prepared; without a token it is deferred (no attempt burnt) until the
 * next token, which is where the executors' sleep ends.  The row keeps the
 * times of the last "limit" grants: a grant is allowed when fewer than
 * "limit" were made in the last "per", so that no window of that length
 * ever holds more than "limit" requests, bursts included.  A 429 with
 * Retry-After empties the bucket until then (wf._rate_block).  Nothing in
 * it is specific to http: another kind (an agent pool) takes its tokens
 * the same way, with a key of its own.
 */
CREATE TABLE wf.rate_limit (
	key			text PRIMARY KEY,
	lim			int NOT NULL,			-- of the latest step that used it
	per			interval NOT NULL,
	grants		timestamptz[] NOT NULL,	-- the last lim grants, oldest first
	blocked_until timestamptz			-- a server's Retry-After
);
REVOKE ALL ON wf.rate_limit FROM PUBLIC;

/*
 * Takes a token of key p_key for a step of run p_run_id: granted_at is the
 * time of the grant, which becomes the step's started_at (the executor
 * identifies the attempt by it too); without a token, next_at is when the
 * next one comes.
 */
CREATE FUNCTION wf._rate_take(p_key text, p_limit int, p_per interval,
							  p_run_id bigint, p_step text,
							  OUT next_at timestamptz, OUT granted_at timestamptz)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b	wf.rate_limit;
	t	timestamptz;
	w	interval;
	g	timestamptz[];
BEGIN
	INSERT INTO wf.rate_limit AS rl (key, lim, per, grants)
	VALUES (p_key, p_limit, p_per, '{}')
	ON CONFLICT (key) DO UPDATE SET lim = excluded.lim, per = excluded.per
	RETURNING * INTO b;
	t := clock_timestamp();			-- after the lock: grants are ordered
	IF b.blocked_until > t THEN
		next_at := b.blocked_until;
		RETURN;
	END IF;
	/*
	 * The window is "per" plus a margin (2%, at most a second) for the time
	 * between a grant and its request leaving (commit, queueing), which
	 * varies from request to request.
	 */
	w := p_per + least(p_per * 0.02, interval '1 second');
	g := ARRAY(SELECT x FROM unnest(b.grants) x WHERE x > t - w ORDER BY x);
	IF cardinality(g) >= p_limit THEN
		next_at := g[cardinality(g) - p_limit + 1] + w;
		RETURN;
	END IF;
	UPDATE wf.rate_limit SET grants = g || t WHERE key = p_key;
	UPDATE wf.step SET started_at = t WHERE run_id = p_run_id AND step = p_step;
	granted_at := t;
END
$$;

/* A server answered 429 with Retry-After: no token for that key until then. */
CREATE FUNCTION wf._rate_block(p_key text, p_until timestamptz) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
	UPDATE wf.rate_limit SET blocked_until = greatest(blocked_until, p_until)
	 WHERE key = p_key;
$$;

/*
 * The rate limits in use.  Keys may be rendered from runs' inputs and are
 * not tied to an owner: members of wf_admin only.
 */
CREATE VIEW wf.rate_limits WITH (security_barrier) AS
	SELECT b.key, b.lim AS "limit", b.per,
		   greatest(b.lim - (SELECT count(*) FROM unnest(b.grants) x
							  WHERE x > pg_catalog.clock_timestamp() - (b.per + LEAST(b.per * 0.02, interval '1 second'))), 0)::int
		   * (coalesce(b.blocked_until, '-infinity') <= pg_catalog.clock_timestamp())::int AS tokens,
		   CASE WHEN b.blocked_until > pg_catalog.clock_timestamp() THEN b.blocked_until
				WHEN (SELECT count(*) FROM unnest(b.grants) x
					   WHERE x > pg_catalog.clock_timestamp() - (b.per + LEAST(b.per * 0.02, interval '1 second'))) >= b.lim
				THEN (SELECT x FROM unnest(b.grants) x
					   WHERE x > pg_catalog.clock_timestamp() - (b.per + LEAST(b.per * 0.02, interval '1 second'))
					   ORDER BY x DESC OFFSET b.lim - 1 LIMIT 1) + (b.per + LEAST(b.per * 0.02, interval '1 second'))
		   END AS next_token_at,
		   b.blocked_until
	  FROM wf.rate_limit b
	 WHERE (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

GRANT SELECT ON wf.rate_limits TO PUBLIC;

/* Internal functions are the owner's; the wf_* shims call them. */
DO $$
DECLARE
	f	regprocedure;
BEGIN
	FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
			  WHERE p.pronamespace = 'wf'::regnamespace LOOP
		EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
	END LOOP;
END
$$;

/* Workers waiting for the extension to appear start looking for work. */
SELECT wf._wake();

/* ---------------------------------------------------------------------
 * Descriptions, for \df+, \dv+ and \dx+ pg_workflow (sql/init.sql checks
 * that every public function and view has one)
 * ---------------------------------------------------------------------
 */
COMMENT ON SCHEMA wf IS 'pg_workflow: the engine''s tables (its owner''s only) and the views users read';
COMMENT ON FUNCTION @extschema@.wf_validate(jsonb) IS 'every problem of a workflow definition, one per row; none when it is valid';
COMMENT ON FUNCTION @extschema@.wf_define(text, jsonb) IS 'validate and store a definition as the workflow''s next version; returns the version';
COMMENT ON FUNCTION @extschema@.wf_export(text, int) IS 'the stored definition of a workflow (latest version by default)';
COMMENT ON FUNCTION @extschema@.wf_start(text, jsonb, jsonb) IS 'start a run when the calling transaction commits; returns its id (options: idempotency_key, version, start_at, priority)';
COMMENT ON FUNCTION @extschema@.wf_wait(bigint, interval) IS 'wait until a run ends or the timeout passes; returns its status';
COMMENT ON FUNCTION @extschema@.wf_cancel(bigint, text) IS 'cancel a run: its running step is interrupted, compensations run';
COMMENT ON FUNCTION @extschema@.wf_retry(bigint) IS 'resume a failed run: failed steps run again, completed ones keep their checkpoints';
COMMENT ON FUNCTION @extschema@.wf_rewind(bigint, text) IS 'restore a run to its checkpoint before a step and run from there';
COMMENT ON FUNCTION @extschema@.wf_signal(bigint, text, jsonb) IS 'deliver a signal (or a human step''s decision) to a run; kept if its step is not waiting yet';
COMMENT ON FUNCTION @extschema@.wf_emit(text, jsonb, text) IS 'emit a durable event: starts the subscribed workflows (as their subscribers) and wakes the runs waiting for it';
COMMENT ON FUNCTION @extschema@.wf_on_event(text, text, jsonpath) IS 'subscribe a workflow to an event; its runs belong to the subscriber';
COMMENT ON FUNCTION @extschema@.wf_start_trigger() IS 'row trigger: wf_start_trigger(''workflow'' [, ''options'']) starts a run with the row as input, owned by the table''s owner';
COMMENT ON FUNCTION @extschema@.wf_resolve(bigint, text, text, jsonb) IS 'an operator''s answer to an escalated step: retry, skip (with output) or fail';
COMMENT ON FUNCTION @extschema@.wf_schedule(text, text, text, jsonb) IS 'start a workflow on a schedule: cron (''0 * * * *'') or ''every N unit''';
COMMENT ON FUNCTION @extschema@.wf_unschedule(text) IS 'remove a schedule; false if there was none';
COMMENT ON FUNCTION @extschema@.wf_set_secret(text, text, text) IS 'store (NULL value: delete) a secret owned by the caller, optionally bound to hosts; readable by no one through SQL';
COMMENT ON FUNCTION @extschema@.wf_grant_secret(text, regrole) IS 'let a role''s runs use a secret (its owner or wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_revoke_secret(text, regrole) IS 'take back a secret''s grant; runs already started stop using it';
COMMENT ON VIEW wf.workflows IS 'workflow definitions, every version';
COMMENT ON VIEW wf.runs IS 'runs the current role may see (its own; all for wf_admin)';
COMMENT ON VIEW wf.steps IS 'the steps of the runs the current role may see, with status, attempt, output, error and duration';
COMMENT ON VIEW wf.history IS 'the append-only audit log of every run and step transition';
COMMENT ON VIEW wf.alerts IS 'failures, escalations, dropped owners: what an operator should look at';
COMMENT ON VIEW wf.human_tasks IS 'open approvals, for their assignees and the runs'' owners';
COMMENT ON VIEW wf.schedules IS 'schedules the current role may see, with their next and last runs';
COMMENT ON VIEW wf.circuit_breakers IS 'the circuit breakers of http hosts: state, failures, when they close again';
COMMENT ON VIEW wf.secrets IS 'the secrets a role may use or manage, never their values';
COMMENT ON FUNCTION @extschema@.wf_explain(bigint) IS 'a run as an indented tree, one line per step: status, attempt, duration, error (like EXPLAIN ANALYZE)';
COMMENT ON FUNCTION @extschema@.wf_graph(text, text) IS 'a workflow as a Mermaid flowchart or Graphviz DOT graph';
COMMENT ON FUNCTION @extschema@.wf_graph(bigint, text) IS 'a run''s graph, coloured by step status, with durations and attempts';
COMMENT ON FUNCTION @extschema@.wf_metrics(text, interval) IS 'executions, success and error rates, duration percentiles of a workflow and of each of its steps, and the bottleneck steps';
COMMENT ON FUNCTION @extschema@.wf_ack_alert(bigint) IS 'an operator acknowledges an alert';
COMMENT ON VIEW wf.metrics IS 'every workflow''s figures of the last hour, one row per workflow and measure (for a Prometheus SQL exporter): runs ended, completed, failed, cancelled, success and error ratios, run duration mean and percentiles in seconds, runs pending, running and waiting now';
COMMENT ON VIEW wf.progress IS 'unfinished runs: steps done of total, percent, what runs or waits now, elapsed time and an estimate of the time left';
COMMENT ON FUNCTION @extschema@.wf_claim(text, int, interval, text, text[], interval, int) IS 'an agent claims up to max tasks of a pool that its capabilities cover (and its capacity leaves room for), under a lease; with wait, blocks until one arrives, the least loaded waiters woken first';
COMMENT ON FUNCTION @extschema@.wf_heartbeat(bigint, interval, jsonb) IS 'extend a claimed task''s lease, optionally with progress';
COMMENT ON FUNCTION @extschema@.wf_complete(bigint, jsonb) IS 'complete a claimed task: its output is the agent step''s; false if the lease was lost';
COMMENT ON FUNCTION @extschema@.wf_fail(bigint, text, boolean) IS 'fail a claimed task, retryable (transient) or not (business)';
COMMENT ON FUNCTION @extschema@.wf_grant_pool(text, regrole) IS 'let a role claim the tasks of an agent pool (wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_revoke_pool(text, regrole) IS 'take back a role''s right to claim from an agent pool (wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_pool_pause(text) IS 'stop handing out the tasks of an agent pool (wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_pool_resume(text) IS 'hand out the tasks of a paused agent pool again (wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_pool_limit(text, int) IS 'at most max_in_flight tasks of an agent pool claimed at once, across its agents; NULL: no limit (wf_admin)';
COMMENT ON VIEW wf.agents IS 'the agents of each pool: capabilities, first and last seen, state, tasks in flight, completed and failed, completed in the last minute and hour, p50 and p95 task duration';
COMMENT ON VIEW wf.concurrency IS 'concurrency keys in use: limit, runs active and waiting';
COMMENT ON VIEW wf.rate_limits IS 'rate limits of http steps: limit, tokens left, next token (wf_admin)';
