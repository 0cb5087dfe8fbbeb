/*
 * pg_workflow--0.1--0.2.sql: from version 0.1 to 0.2 (ALTER EXTENSION
 * pg_workflow UPDATE).
 *
 * Its changes, then the parts new in 0.2 (src/sql/15_recommendations.sql)
 * and src/sql/99_finish.sql, appended by the Makefile.  TAP
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
CREATE OR REPLACE FUNCTION wf._next_deadline() RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN (SELECT deadline FROM wf.run
			 WHERE status IN ('pending', 'running', 'waiting') AND deadline IS NOT NULL
			 ORDER BY deadline LIMIT 1);
END
$$;

CREATE OR REPLACE FUNCTION wf._may_claim(caller oid, p_pool text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN pg_has_role(caller, 'wf_admin', 'MEMBER')
		OR EXISTS (SELECT 1 FROM wf.pool_grant g
					WHERE g.pool = p_pool AND pg_has_role(caller, g.grantee::oid, 'MEMBER'));
END
$$;

CREATE OR REPLACE FUNCTION wf._agent_name(caller oid, p_agent text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN coalesce(p_agent, nullif(current_setting('application_name'), ''),
					caller::regrole::text);
END
$$;

CREATE OR REPLACE FUNCTION wf._agent_in_flight(p_pool text, p_agent text) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN (SELECT count(*) FROM wf.task t
			 WHERE t.pool = p_pool AND t.agent = p_agent AND t.state = 'claimed');
END
$$;

CREATE OR REPLACE FUNCTION wf._agent_load(caller oid, caller_path text, p_pool text, p_max int,
							   p_lease interval, p_agent text, p_caps text[], p_capacity int)
RETURNS float4
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN (wf._agent_in_flight(p_pool, wf._agent_name(caller, p_agent))
			/ coalesce(p_capacity, greatest(p_max, 1))::float8)::float4;
END
$$;

CREATE OR REPLACE FUNCTION wf._task_held(t wf.task) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN t.state = 'claimed' AND t.lease_until >= clock_timestamp();
END
$$;


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

CREATE OR REPLACE FUNCTION wf._flow_key(p_template text, p_input jsonb, p_what text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN wf._render_key(p_template, jsonb_build_object('input', p_input), p_what);
END
$$;

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

CREATE FUNCTION wf._slot_defer(key text, release boolean) RETURNS boolean
	LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'wf_slot_defer';

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

CREATE FUNCTION wf._step_slot_released() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	UPDATE wf.step SET slot_key = NULL WHERE run_id = OLD.run_id AND step = OLD.step;
	IF NOT wf._slot_defer(OLD.slot_key, true) THEN
		INSERT INTO wf.step_slot_release (key, release) VALUES (OLD.slot_key, true);
		PERFORM wf._defer();
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER step_slot_released AFTER UPDATE ON wf.step
	FOR EACH ROW
	WHEN (OLD.slot_key IS NOT NULL AND NEW.slot_key IS NOT NULL
		  AND NEW.status IN ('pending', 'completed', 'failed', 'skipped', 'escalated',
							 'compensated', 'cancelled'))
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

CREATE FUNCTION wf._step_load(p_run_id bigint, p_step text, p_worker int,
	OUT kind text, OUT spec jsonb, OUT owner oid, OUT search_path text,
	OUT attempt int, OUT defaults jsonb,
	OUT started_at timestamptz, OUT resuming boolean, OUT payload jsonb,
	OUT wait_key text, OUT escalated_at timestamptz, OUT parent_run bigint,
	OUT slot_wanted text, OUT slot_error text)
RETURNS SETOF record
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r		wf.run;
	t		timestamptz := clock_timestamp();
	conc	jsonb;
	held	text;
	v_item	jsonb;
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
	SELECT s.status = 'waiting', s.spec->'concurrency', s.slot_key, s.item
	  INTO resuming, conc, held, v_item
	  FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_step;
	IF conc IS NOT NULL AND held IS NULL AND NOT resuming THEN
		/*
		 * It needs a slot of its step concurrency key first: nothing is
		 * loaded or changed, the executor takes one after its commit (see
		 * wf._slot_take).  A key that cannot be rendered fails the attempt.
		 */
		BEGIN
			slot_wanted := wf._step_slot_key(r, p_step, conc, v_item);
			RETURN NEXT;
			RETURN;
		EXCEPTION WHEN invalid_parameter_value OR program_limit_exceeded THEN
			slot_error := SQLERRM;
		END;
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

CREATE OR REPLACE FUNCTION wf._run_deferred()
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	p		wf.deferred;
	held	int := 0;
BEGIN
	/* Slots released by other transactions (13_flow_control.sql). */
	PERFORM wf._slot_queued();
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

CREATE OR REPLACE FUNCTION wf._rewind(caller oid, caller_path text, p_run_id bigint, p_step text) RETURNS boolean
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
		   error = NULL, started_at = NULL, finished_at = NULL, wait_key = NULL
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

CREATE OR REPLACE FUNCTION wf._recompute(p_run_id bigint) RETURNS void
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

/* A run is admitted under its own limit, not the latest one of its key. */
CREATE OR REPLACE FUNCTION wf._flow_admit(p_run_id bigint, p_workflow text, p_conc jsonb,
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

/* A freed slot of a run key goes to a waiting run its own limit lets in. */
CREATE OR REPLACE FUNCTION wf._flow_release(p_run_id bigint) RETURNS void
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

/* Debounce does not fold into a run whose first step holds or waits for a step slot. */
CREATE OR REPLACE FUNCTION wf._flow_gate(caller oid, p_workflow text, p_input jsonb, p_options jsonb)
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

/*
 * The name of a step's family: a map's items are one, "price[*]" for
 * "price[0]", "price[1]"... (also below an item: "m[*]/deep").  Plain SQL
 * with qualified names, so that it is inlined into the queries over many
 * step rows that call it (wf_metrics, wf_recommendations).
 */
CREATE FUNCTION wf._step_family(step text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT CASE WHEN pg_catalog.strpos(step, '[') > 0
				THEN pg_catalog.regexp_replace(step, '\[[0-9]+\]', '[*]', 'g')
				ELSE step END
$$;

/*
 * The arguments of wf_metrics and wf_recommendations: a workflow that
 * exists and a window that is not negative.
 */
CREATE FUNCTION wf._check_window(p_workflow text, p_since interval) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF p_workflow IS NULL THEN
		RAISE EXCEPTION 'workflow name must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM wf.workflow_def d WHERE d.name = p_workflow) THEN
		RAISE EXCEPTION 'workflow "%" does not exist', p_workflow USING ERRCODE = 'undefined_object';
	END IF;
	IF p_since IS NULL OR p_since < '0' THEN
		RAISE EXCEPTION 'since must be a positive interval'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
END
$$;

/*
 * wf_metrics without JIT (which cost more than it saved on a million steps),
 * reaching the steps by the plan the planner picks and renaming only the
 * steps of a map.
 */
CREATE OR REPLACE FUNCTION wf._metrics(caller oid, caller_path text, p_workflow text, p_since interval,
							OUT scope text, OUT step text, OUT executions bigint,
							OUT completed bigint, OUT failed bigint, OUT cancelled bigint,
							OUT skipped bigint, OUT success_rate numeric, OUT error_rate numeric,
							OUT mean interval, OUT p50 interval, OUT p95 interval,
							OUT p99 interval, OUT attempts numeric, OUT share numeric,
							OUT bottleneck boolean)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET work_mem = '64MB' SET jit = off AS $$
DECLARE
	admin	boolean := pg_has_role(caller, 'wf_admin', 'MEMBER');
BEGIN
	PERFORM wf._check_window(p_workflow, p_since);
	/*
	 * Planned with the values: which runs to read (the index on finished
	 * runs by workflow and end time) and how to reach their steps depend
	 * on how many there are.
	 */
	RETURN QUERY EXECUTE $q$
	WITH runs AS MATERIALIZED (
		SELECT r.id, r.status, date_part('epoch', r.finished_at - r.started_at) AS dur
		  FROM wf.run r
		 WHERE r.workflow = $1
		   AND r.status IN ('completed', 'failed', 'cancelled')
		   AND r.finished_at >= $2
		   AND ($3 OR r.owner = $4)
	), total AS (
		SELECT sum(runs.dur) AS t FROM runs
	), steps AS (
		/*
		 * The runs again rather than the CTE, which no parallel plan
		 * may read: the scan of wf.step, the join and the sort by step
		 * are shared with parallel workers.  Narrow rows (an outcome
		 * code, seconds as float8, which sorts and sums faster than
		 * interval and numeric) pass from them faster.
		 */
		SELECT wf._step_family(s.step) COLLATE "C" AS name,
			   s.kind IN ('if', 'parallel', 'map') AS container,
			   CASE WHEN s.status IN ('completed', 'compensated') THEN 0
					WHEN s.status IN ('failed', 'escalated') THEN 1 ELSE 2 END AS outcome,
			   s.attempt::float8 AS attempt,
			   date_part('epoch', s.finished_at - s.started_at) AS dur,
			   date_part('epoch', s.started_at - r.started_at) AS offset_
		  FROM wf.run r JOIN wf.step s ON s.run_id = r.id
		 WHERE r.workflow = $1
		   AND r.status IN ('completed', 'failed', 'cancelled')
		   AND r.finished_at >= $2
		   AND ($3 OR r.owner = $4)
		   AND s.status IN ('completed', 'failed', 'skipped', 'compensated', 'escalated')
	), per_step AS (
		SELECT st.name, bool_or(st.container) AS container, count(*) AS n,
			   count(*) FILTER (WHERE st.outcome = 0) AS n_completed,
			   count(*) FILTER (WHERE st.outcome = 1) AS n_failed,
			   count(*) FILTER (WHERE st.outcome = 2) AS n_skipped,
			   avg(st.dur) AS mean,
			   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY st.dur) AS pct,
			   avg(st.attempt) FILTER (WHERE st.attempt > 0) AS attempts,
			   sum(st.dur) AS spent, avg(st.offset_) AS starts
		  FROM steps st
		 GROUP BY st.name
	), ranked AS (
		SELECT p.*,
			   CASE WHEN total.t > 0 THEN round((p.spent / total.t)::numeric, 3) END AS share_,
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
				   make_interval(secs => avg(runs.dur)) AS mean,
				   make_interval(secs => (percentile_cont(ARRAY[0.5, 0.95, 0.99])
										  WITHIN GROUP (ORDER BY runs.dur))[1]) AS p50,
				   make_interval(secs => (percentile_cont(ARRAY[0.5, 0.95, 0.99])
										  WITHIN GROUP (ORDER BY runs.dur))[2]) AS p95,
				   make_interval(secs => (percentile_cont(ARRAY[0.5, 0.95, 0.99])
										  WITHIN GROUP (ORDER BY runs.dur))[3]) AS p99,
				   NULL::numeric AS attempts, CASE WHEN count(*) > 0 THEN 1.000 END AS share,
				   false AS bottleneck, 0 AS o1, NULL::float8 AS o2
			  FROM runs
			UNION ALL
			SELECT 'step', k.name, k.n, k.n_completed, k.n_failed, NULL, k.n_skipped,
				   round(k.n_completed::numeric / k.n, 3), round(k.n_failed::numeric / k.n, 3),
				   make_interval(secs => k.mean), make_interval(secs => k.pct[1]),
				   make_interval(secs => k.pct[2]), make_interval(secs => k.pct[3]),
				   round(k.attempts::numeric, 2), k.share_,
				   coalesce(k.r <= 3, false), 1, k.starts
			  FROM ranked k) u
	 ORDER BY u.o1, u.o2 NULLS LAST, u.step
	$q$ USING p_workflow, clock_timestamp() - p_since, admin, caller;
END
$$;

/* A breaker's record says when a failure opened it (wf_recommendations). */
DROP FUNCTION wf._breaker_record(text, boolean, int, interval);

/*
 * Counts a request's outcome on its host's breaker; true if this failure
 * opened it (the step's error says so, for wf_recommendations).
 */
CREATE FUNCTION wf._breaker_record(p_key text, p_ok boolean, p_failures int,
								   p_reset_after interval)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	was		text;
	now_	text;
BEGIN
	IF p_ok THEN
		UPDATE wf.circuit_breaker
		   SET state = 'closed', failures = 0, opened_at = NULL, probe_at = NULL,
			   updated_at = clock_timestamp()
		 WHERE key = p_key AND state <> 'closed';
		IF NOT FOUND THEN
			UPDATE wf.circuit_breaker SET failures = 0, updated_at = clock_timestamp()
			 WHERE key = p_key AND failures <> 0;
			RETURN false;
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
		RETURN false;
	END IF;
	INSERT INTO wf.circuit_breaker (key, state, failures, reset_after)
	VALUES (p_key, 'closed', 0, p_reset_after)
	ON CONFLICT (key) DO NOTHING;
	SELECT b.state INTO was FROM wf.circuit_breaker b WHERE b.key = p_key FOR UPDATE;
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
	 WHERE key = p_key
	RETURNING b.state INTO now_;
	RETURN was <> 'open' AND now_ = 'open';
END
$$;
