/*
 * 09_schedules.sql: schedules (cron and "every N unit").
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

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

