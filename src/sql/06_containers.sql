/*
 * 06_containers.sql: sagas, containers (parallel, map, if), child runs and failed attempts.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

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
 * in a row, see exec_contain.c): the step and its run fail with the internal
 * error, which wf._finish_run raises as an alert.  Kept minimal, since the
 * failing handling may be any other function of this script.
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

