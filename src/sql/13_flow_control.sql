/*
 * 13_flow_control.sql: flow control across runs: concurrency keys, rate limits, debounce.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

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
 * A flow-control key: the template rendered from p_ctx ({"input": ...},
 * and a map item's "item" and "index" for a step's key), each "{{ PATH }}"
 * replaced by the first match of the JSON path in it (a string by its
 * text, any other value by its JSON text), as step templates are rendered.
 * Paths are evaluated by jsonpath alone, which reaches no user code.  The key must come out non-empty and short
 * enough for an index.
 */
CREATE FUNCTION wf._render_key(p_template text, p_ctx jsonb, p_what text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
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
			v := jsonb_path_query_first(p_ctx, expr::jsonpath);
		EXCEPTION WHEN syntax_error OR data_exception THEN
			RAISE EXCEPTION 'invalid % template "{{%}}"', p_what, expr
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'A key may use JSON paths into the run''s input ($.input) and, in a map''s item, $.item and $.index; nothing else.';
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

/* A key rendered from a run's input alone (workflow concurrency, debounce). */
CREATE FUNCTION wf._flow_key(p_template text, p_input jsonb, p_what text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN wf._render_key(p_template, jsonb_build_object('input', p_input), p_what);
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
	/*
	 * Under its own limit: keys are global, and another workflow's larger
	 * limit for the same key (the row's lim, the latest) must not raise it.
	 */
	IF s.active < (p_conc->>'limit')::int THEN
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
	SELECT p_run_id, 'pending', jsonb_build_object('waiting_for', k, 'limit', (p_conc->>'limit')::int),
		   r.owner
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
	SELECT active INTO n FROM wf.concurrency_slot WHERE key = h.key FOR UPDATE;
	/*
	 * The first waiting run that its own workflow's limit lets in beside the
	 * n - 1 others still holding the key (keys are global: another
	 * workflow's larger limit must not let it in); one being cancelled
	 * meanwhile is skipped once its cancellation commits (a locking SELECT
	 * with LIMIT then finds no row, hence the loop).
	 */
	LOOP
		SELECT w.* INTO nxt FROM wf.concurrency_hold w
		  JOIN wf.run x ON x.id = w.run_id
		  JOIN wf.workflow_def d ON d.name = x.workflow AND d.version = x.version
		 WHERE w.key = h.key AND w.waiting
		   AND (d.definition->'concurrency'->>'limit')::int > n - 1
		 ORDER BY w.priority DESC, w.run_id LIMIT 1 FOR UPDATE OF w;
		EXIT WHEN FOUND OR NOT EXISTS (
			SELECT 1 FROM wf.concurrency_hold w
			  JOIN wf.run x ON x.id = w.run_id
			  JOIN wf.workflow_def d ON d.name = x.workflow AND d.version = x.version
			 WHERE w.key = h.key AND w.waiting
			   AND (d.definition->'concurrency'->>'limit')::int > n - 1);
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
		   AND NOT EXISTS (SELECT 1 FROM wf.step
							WHERE run_id = r.id
							  AND (attempt > 0 OR slot_key IS NOT NULL
								   OR (status = 'pending' AND wait_key LIKE 'slot:%'))) THEN
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
 * Step concurrency keys.  A step with "concurrency": {"key", "limit"} is
 * active (ready to run again, running, waiting, retrying) only while it
 * holds a slot of its rendered key (without a key: one key per step of the
 * workflow): it may take one while fewer than its limit are held.
 * wf.step_slot counts the slots of each key in use, wf.step.slot_key names
 * the key a step holds, and wf.step_slot_wait queues the steps waiting for
 * one.
 *
 * The rows of wf.step_slot are locked by the executors only, each in one
 * phase of a transaction, keys in order, and for no longer than that
 * transaction's commit: no two of them wait for each other, and no user
 * transaction can hold a key up.
 *	- A slot is taken when an executor first claims the step: wf._step_load
 *	  returns the rendered key instead of loading the step (nothing of the
 *	  step is changed), and the executor, once its batch has committed,
 *	  calls wf._slot_take for the steps that asked, in a transaction that
 *	  does nothing else (src/slots.c).  The step runs at its next claim, or
 *	  waits (pending, out of the executors' queue, wait_key "slot:KEY") until
 *	  a slot is passed to it.  No slot row stays locked while a step runs.
 *	- A slot is released when its step leaves the active states (completed,
 *	  skipped, failed, escalated, cancelled, or pending again through
 *	  wf_rewind), whatever statement does it: a trigger, after the
 *	  statement, clears the row's slot_key and has the release made at the
 *	  end of the executor's batch (wf._slot_defer), or, in any other
 *	  transaction (wf_cancel, an agent's completion), queues it in
 *	  wf.step_slot_release for the executors (wf._run_deferred).  After the
 *	  statement, so that a statement ending several steps of a run (a
 *	  cancellation) never passes a slot to one that it ends too; an AFTER
 *	  trigger only, because a BEFORE trigger would lock every step row that
 *	  any statement updates, before the update.  Step rows are deleted only
 *	  with their ended runs, which hold no slot.
 *	- wf._slot_release passes the freed slot on (wf._slot_fill): to the
 *	  first waiting step of the key, highest priority first, then in the
 *	  order they came, which becomes ready, and wakes the executors at
 *	  commit.  A waiting entry whose step no longer waits for the key is
 *	  dropped; one whose step another transaction holds is left for a fill
 *	  queued for later, so that the fill never waits for a step's lock while
 *	  it holds the key's.
 * ---------------------------------------------------------------------
 */

/* The step concurrency key whose slot a step holds, if any. */
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

/*
 * The key of a step's "concurrency" (p_conc): its template rendered from
 * the run's input and, in a map item, its item and index; without one,
 * the workflow's name and the step's (a map's items share their map's).
 */
CREATE FUNCTION wf._step_slot_key(p_run wf.run, p_step text, p_conc jsonb, p_item jsonb)
RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF p_conc ? 'key' THEN
		RETURN wf._render_key(p_conc->>'key',
							  jsonb_build_object('input', p_run.input) || coalesce(p_item, '{}'),
							  'concurrency key');
	END IF;
	RETURN p_run.workflow || ':' || regexp_replace(p_step, '\[[0-9]+\]', '[]', 'g');
END
$$;

/*
 * Takes a slot of key p_key for a ready step that holds none, or queues it
 * until one is passed to it.  Called by an executor in a transaction of its
 * own (see above); a step that another transaction holds, or that has
 * moved on meanwhile, is left as it is.
 */
CREATE FUNCTION wf._slot_take(p_run_id bigint, p_step text, p_key text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	st	wf.step;
	lim	int;
BEGIN
	SELECT * INTO st FROM wf.step
	 WHERE run_id = p_run_id AND step = p_step AND status = 'ready' AND slot_key IS NULL
	   FOR UPDATE SKIP LOCKED;
	IF NOT FOUND OR NOT st.spec ? 'concurrency' THEN
		RETURN;
	END IF;
	lim := (st.spec->'concurrency'->>'limit')::int;
	/*
	 * One statement: the key's row is locked whether or not a slot is
	 * free (ON CONFLICT locks the row it updates before its WHERE).
	 */
	INSERT INTO wf.step_slot AS s (key, lim, active)
	VALUES (p_key, lim, 1)
	ON CONFLICT (key) DO UPDATE SET lim = excluded.lim, active = s.active + 1
	 WHERE s.active < excluded.lim;
	IF FOUND THEN			-- inserted, or updated: a slot was free
		UPDATE wf.step SET slot_key = p_key, wait_key = NULL
		 WHERE run_id = p_run_id AND step = p_step;
		IF st.wait_key LIKE 'slot:%' THEN
			DELETE FROM wf.step_slot_wait WHERE run_id = p_run_id AND step = p_step;
		END IF;
		PERFORM wf._wake();
		RETURN;
	END IF;
	INSERT INTO wf.step_slot_wait (run_id, step, key, priority, queued_at, lim)
	VALUES (p_run_id, p_step, p_key, st.priority, clock_timestamp(), lim)
	ON CONFLICT (run_id, step) DO UPDATE
	   SET key = excluded.key, priority = excluded.priority, queued_at = excluded.queued_at,
		   lim = excluded.lim;
	UPDATE wf.step SET status = 'pending', ready_at = NULL, wait_key = 'slot:' || p_key
	 WHERE run_id = p_run_id AND step = p_step;
	INSERT INTO wf.history_log (run_id, step, status, detail, actor)
	SELECT p_run_id, p_step, 'pending', jsonb_build_object('waiting_for', p_key, 'limit', lim),
		   r.owner
	  FROM wf.run r WHERE r.id = p_run_id;
END
$$;

/*
 * Passes the free slots of p_key (the key's row locked) to the steps
 * waiting for them, in their order, while each one's limit allows; drops
 * the key once nothing holds or waits for it.
 */
CREATE FUNCTION wf._slot_fill(p_key text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	w		wf.step_slot_wait;
	st		wf.step;
	n		int;
	top		int;
	held	boolean := false;
BEGIN
	SELECT active INTO n FROM wf.step_slot WHERE key = p_key;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT max(x.lim) INTO top FROM wf.step_slot_wait x WHERE x.key = p_key;
	FOR w IN SELECT * FROM wf.step_slot_wait WHERE key = p_key
			  ORDER BY priority DESC, queued_at, run_id, step
			  FOR UPDATE SKIP LOCKED LOOP
		EXIT WHEN n >= top;		-- no waiting step's limit lets one more in
		SELECT * INTO st FROM wf.step WHERE run_id = w.run_id AND step = w.step
		   FOR UPDATE SKIP LOCKED;
		IF NOT FOUND AND EXISTS (SELECT 1 FROM wf.step WHERE run_id = w.run_id AND step = w.step) THEN
			held := true;		-- another transaction holds it: a later fill
			CONTINUE;
		END IF;
		IF NOT FOUND OR st.status <> 'pending' OR st.wait_key IS DISTINCT FROM 'slot:' || p_key THEN
			/* It no longer waits for the key. */
			DELETE FROM wf.step_slot_wait WHERE run_id = w.run_id AND step = w.step;
			CONTINUE;
		END IF;
		CONTINUE WHEN n >= w.lim;	-- its own limit keeps it waiting; others may go
		DELETE FROM wf.step_slot_wait WHERE run_id = w.run_id AND step = w.step;
		UPDATE wf.step SET status = 'ready', wait_key = NULL, slot_key = p_key,
			   ready_at = greatest(clock_timestamp(),
								   (SELECT r.start_at FROM wf.run r WHERE r.id = w.run_id))
		 WHERE run_id = w.run_id AND step = w.step;
		n := n + 1;
		INSERT INTO wf.history_log (run_id, step, status, detail, actor)
		SELECT w.run_id, w.step, 'pending', jsonb_build_object('admitted', p_key), r.owner
		  FROM wf.run r WHERE r.id = w.run_id;
		PERFORM wf._wake();
	END LOOP;
	IF held THEN
		INSERT INTO wf.step_slot_release (key, release) VALUES (p_key, false);
		PERFORM wf._defer();
	END IF;
	IF n <= 0 AND NOT held AND NOT EXISTS (SELECT 1 FROM wf.step_slot_wait WHERE key = p_key) THEN
		DELETE FROM wf.step_slot WHERE key = p_key;
	ELSE
		UPDATE wf.step_slot SET active = n WHERE key = p_key AND active <> n;
	END IF;
END
$$;

/*
 * A step gave up its slot of p_key (p_release), or the key's free slots
 * are to be passed on again (not p_release).  Called by the executors only,
 * at the end of a batch, keys in order (src/slots.c).
 */
CREATE FUNCTION wf._slot_release(p_key text, p_release boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF p_release THEN
		UPDATE wf.step_slot SET active = greatest(active - 1, 0) WHERE key = p_key;
	ELSE
		PERFORM 1 FROM wf.step_slot WHERE key = p_key FOR UPDATE;
	END IF;
	PERFORM wf._slot_fill(p_key);
END
$$;

/*
 * True when the release (or fill) of key is put off to the end of the
 * executor's batch (src/slots.c), false outside a batch.
 */
CREATE FUNCTION wf._slot_defer(key text, release boolean) RETURNS boolean
	LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'wf_slot_defer';

/* The releases and fills queued by other transactions, for this batch. */
CREATE FUNCTION wf._slot_queued() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	q	wf.step_slot_release;
BEGIN
	FOR q IN WITH d AS (SELECT id FROM wf.step_slot_release ORDER BY id
						 FOR UPDATE SKIP LOCKED)
			 DELETE FROM wf.step_slot_release x USING d WHERE x.id = d.id
			 RETURNING x.* LOOP
		IF NOT wf._slot_defer(q.key, q.release) THEN
			PERFORM wf._slot_release(q.key, q.release);
		END IF;
	END LOOP;
END
$$;

/*
 * After the statement that made a step leave the active states: it holds
 * no slot any more, and the slot is released (see above).  (The WHEN
 * clause is a single test, read back by every statement that sets a
 * status; the rest is here.)
 */
CREATE FUNCTION wf._step_slot_released() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF OLD.slot_key IS NULL OR NEW.status IN ('ready', 'running', 'waiting') THEN
		RETURN NULL;
	END IF;
	UPDATE wf.step SET slot_key = NULL WHERE run_id = OLD.run_id AND step = OLD.step;
	IF NOT wf._slot_defer(OLD.slot_key, true) THEN
		INSERT INTO wf.step_slot_release (key, release) VALUES (OLD.slot_key, true);
		PERFORM wf._defer();
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER step_slot_released AFTER UPDATE OF status ON wf.step
	FOR EACH ROW
	WHEN (NEW.slot_key IS NOT NULL)
	EXECUTE FUNCTION wf._step_slot_released();

/*
 * The concurrency keys in use, of runs (scope "run") and of steps ("step"):
 * a role sees the keys its runs hold or wait for (a key is rendered from a
 * run's input), wf_admin all of them.  Waiting steps are counted by their
 * steps, which a stale entry of the queue no longer names.
 */
CREATE VIEW wf.concurrency WITH (security_barrier) AS
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
