/*
 * 08_api.sql: the public wf_* functions and the SECURITY DEFINER functions behind them.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

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

