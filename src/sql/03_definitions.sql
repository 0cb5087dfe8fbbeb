/*
 * 03_definitions.sql: storing and compiling workflow definitions.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

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

