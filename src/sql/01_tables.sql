/*
 * 01_tables.sql: the tables, their indexes, and what pg_dump and pg_restore need of them.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/* ---------------------------------------------------------------------
 * Tables
 * ---------------------------------------------------------------------
 */

/*
 * The states of runs, steps and agents' tasks, which the CHECK constraints
 * of their state columns name (the list is states.c's): a function call is
 * cheaper for every statement writing these tables to read back than an IN
 * list of strings.
 */
CREATE FUNCTION wf._run_status_ok(text) RETURNS boolean
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'wf_run_status_ok';
CREATE FUNCTION wf._step_status_ok(text) RETURNS boolean
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'wf_step_status_ok';
CREATE FUNCTION wf._task_state_ok(text) RETURNS boolean
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'wf_task_state_ok';

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
	status		text NOT NULL CONSTRAINT run_status_check CHECK (wf._run_status_ok(status)),
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
	status		text NOT NULL CONSTRAINT step_status_check CHECK (wf._step_status_ok(status)),
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
 * The named steps of a run that have ended, from which its context is
 * built: a map's items have no name, so the context of a step costs what
 * it holds, not the size of its run.  A step enters it once, as it ends,
 * rather than with each version of its row on the way.
 */
CREATE INDEX step_context ON wf.step (run_id)
	WHERE label IS NOT NULL
	  AND status IN ('completed', 'failed', 'skipped', 'escalated', 'compensated', 'cancelled');
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
	id			bigint GENERATED ALWAYS AS IDENTITY,
	run_id		bigint NOT NULL,
	step		text,
	status		text NOT NULL,
	attempt		int,
	detail		jsonb,
	actor		regrole NOT NULL,
	at			timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	/*
	 * One index: a run's history in order, which is how it is read and
	 * removed (and the replica identity for logical replication).
	 */
	CONSTRAINT history_log_pkey PRIMARY KEY (run_id, id)
);

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

