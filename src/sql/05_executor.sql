/*
 * 05_executor.sql: the executors' side: loading and checkpointing steps, breakers, waits, deferred changes, alerts, timeouts, retention.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/* ---------------------------------------------------------------------
 * Executor side: called by the background workers only
 *
 * Like every function of this script, they pin search_path to pg_catalog,
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
		/* The workflow's timeout and its SLA count from here. */
		UPDATE wf.run SET status = 'running', started_at = t,
			   (deadline, sla_at) = (SELECT t + (d.definition->>'timeout')::interval,
											t + (d.definition->>'sla')::interval
									   FROM wf.workflow_def d
									  WHERE d.name = r.workflow AND d.version = r.version)
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
			   /* A step's SLA counts from its first attempt's start. */
			   sla_at = CASE WHEN s.attempt = 0 AND s.spec ? 'sla'
							 THEN clock_timestamp() + (s.spec->>'sla')::interval
							 ELSE s.sla_at END,
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
 * (the caller then rolls the step back).  With p_hold, the caller (an
 * executor) runs the step's one successor next in its transaction, if it
 * becomes ready, and has no other step of the run at hand: its row stays
 * "pending", with no dependency left (held), and the executor writes
 * "ready" should it not run it after all (see WfWorkItem.held).
 */
CREATE FUNCTION wf._step_done(p_run_id bigint, p_step text, p_status text,
							  p_output jsonb, p_defer boolean DEFAULT false,
							  p_hold boolean DEFAULT false,
							  OUT ok boolean, OUT ready text[], OUT done_in text,
							  OUT held boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r			wf.run;
	st			wf.step;
	v_parent	text;
BEGIN
	/*
	 * The run, locked: by the update that counts a top-level step done (one
	 * statement, not a lock and then the update), else FOR NO KEY UPDATE.
	 * Too late once the run has ended, or has started undoing what was done
	 * (its saga's list of steps to compensate is made): the step is rolled
	 * back, and then cancelled (see wf._cancel_steps).
	 */
	SELECT s.parent INTO v_parent FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_step;
	IF v_parent IS NULL THEN
		UPDATE wf.run SET steps_left = steps_left - 1
		 WHERE id = p_run_id AND status IN ('pending', 'running', 'waiting')
		   AND (compensating IS NULL OR p_step LIKE 'compensate:%')
		RETURNING * INTO r;
	ELSE
		SELECT * INTO r FROM wf.run
		 WHERE id = p_run_id AND status IN ('pending', 'running', 'waiting')
		   AND (compensating IS NULL OR p_step LIKE 'compensate:%')
		   FOR NO KEY UPDATE;
	END IF;
	IF NOT FOUND THEN
		/*
		 * Unless this very transaction did it: then the step itself ended
		 * its run (or started its undoing), calling wf_cancel on it or on an
		 * ancestor, and was cancelled with it.  What it did stays.
		 */
		ok := coalesce(wf._xid_is_current((SELECT xmin FROM wf.run WHERE id = p_run_id)), false);
		RETURN;
	END IF;
	ok := true;
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
		held := p_hold AND cardinality(st.successors) = 1;
		WITH u AS (
			UPDATE wf.step s
			   SET deps_left = s.deps_left - 1,
				   status = CASE WHEN s.deps_left = 1 AND NOT held THEN 'ready' ELSE s.status END,
				   ready_at = CASE WHEN s.deps_left = 1 AND NOT held THEN clock_timestamp() END
			 WHERE s.run_id = p_run_id AND s.step = ANY (st.successors)
			   AND s.status = 'pending'
			RETURNING s.step, s.deps_left
		)
		SELECT array_agg(u.step) INTO ready FROM u WHERE u.deps_left = 0;
		held := held AND ready IS NOT NULL;
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
		/* Most runs hold no concurrency key: the call costs, not the look. */
		IF EXISTS (SELECT FROM wf.concurrency_hold h WHERE h.run_id = p_run_id) THEN
			PERFORM wf._flow_release(p_run_id);
		END IF;
		PERFORM wf._notify(p_run_id, r.workflow, NULL, 'completed');
		PERFORM wf._run_ended(p_run_id);
		IF r.parent_run IS NOT NULL THEN
			PERFORM wf._child_ended(p_run_id);
		END IF;
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
										'kind', p_kind, 'message', left(p_message, 200))::text)
	  WHERE wf._listened();
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
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN (SELECT deadline FROM wf.run
			 WHERE status IN ('pending', 'running', 'waiting') AND deadline IS NOT NULL
			 ORDER BY deadline LIMIT 1);
END
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

