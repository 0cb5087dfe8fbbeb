/*
 * 04_runs.sql: starting, ending and cancelling runs.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

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
	IF opt_key IS NULL THEN
		/*
		 * No key, no ON CONFLICT: a speculative insertion checks the
		 * arbiter index first and writes a WAL record more to confirm.
		 */
		INSERT INTO wf.run (workflow, version, status, input, owner, search_path,
							priority, steps_left, start_at, depth, origin_run)
		VALUES (def.name, def.version, 'pending', p_input, caller,
				coalesce(caller_path, ''), opt_prio,
				jsonb_array_length(def.plan), opt_start, v_depth, origin)
		RETURNING id INTO rid;
	ELSE
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

