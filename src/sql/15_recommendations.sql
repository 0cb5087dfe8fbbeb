/*
 * 15_recommendations.sql: wf_recommendations, the advice computed from the
 * measured runs of a workflow's latest version, each with the JSON patch
 * (RFC 6902) of its definition that applies it, and wf_patch, which
 * applies such a patch to a document.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/* ---------------------------------------------------------------------
 * JSON Patch (RFC 6902) and JSON Pointer (RFC 6901)
 * ---------------------------------------------------------------------
 */

/* A JSON pointer as a path for #> and jsonb_set: '/steps/0/a~1b' is {steps,0,a/b}. */
CREATE FUNCTION wf._pointer_path(p_pointer text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF p_pointer IS NULL OR (p_pointer <> '' AND left(p_pointer, 1) <> '/')
	   OR p_pointer ~ '~([^01]|$)' THEN
		RAISE EXCEPTION 'invalid JSON pointer "%"', p_pointer
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A JSON pointer is empty or a list of "/" and a name, with "~" written "~0" and "/" written "~1".';
	END IF;
	IF p_pointer = '' THEN
		RETURN '{}';
	END IF;
	RETURN ARRAY(SELECT replace(replace(t, '~1', '/'), '~0', '~')
				   FROM unnest(regexp_split_to_array(substr(p_pointer, 2), '/'))
						WITH ORDINALITY AS u(t, i)
				  ORDER BY i);
END
$$;

/*
 * Does p_path lead to a value of p_doc?  Array positions must be written
 * as RFC 6901 has them (0, 1, ...: no sign, no leading zero).
 */
CREATE FUNCTION wf._pointer_exists(p_doc jsonb, p_path text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	FOR i IN 1 .. coalesce(cardinality(p_path), 0) LOOP
		IF jsonb_typeof(p_doc #> p_path[1:i - 1]) = 'array'
		   AND p_path[i] !~ '^(0|[1-9][0-9]{0,8})$' THEN
			RETURN false;
		END IF;
	END LOOP;
	RETURN p_doc #> p_path IS NOT NULL;
END
$$;

/* One operation of a patch, the p_n-th. */
CREATE FUNCTION wf._patch_op(p_doc jsonb, p_op jsonb, p_n int) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	op		text;
	path	text[];
	from_	text[];
	val		jsonb;
	parent	jsonb;
	last	text;
	len		int;
BEGIN
	IF jsonb_typeof(p_op) IS DISTINCT FROM 'object' OR jsonb_typeof(p_op->'op') IS DISTINCT FROM 'string'
	   OR jsonb_typeof(p_op->'path') IS DISTINCT FROM 'string' THEN
		RAISE EXCEPTION 'operation % of the JSON patch is not an object with "op" and "path" strings', p_n
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	op := p_op->>'op';
	path := wf._pointer_path(p_op->>'path');
	IF op IN ('move', 'copy') THEN
		IF jsonb_typeof(p_op->'from') IS DISTINCT FROM 'string' THEN
			RAISE EXCEPTION 'operation % of the JSON patch ("%") has no "from"', p_n, op
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		from_ := wf._pointer_path(p_op->>'from');
		IF NOT wf._pointer_exists(p_doc, from_) THEN
			RAISE EXCEPTION 'operation % of the JSON patch: "%" does not exist', p_n, p_op->>'from'
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		val := p_doc #> from_;
		IF op = 'move' THEN
			IF path[1:cardinality(from_)] = from_ AND path <> from_ THEN
				RAISE EXCEPTION 'operation % of the JSON patch moves "%" into itself', p_n, p_op->>'from'
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			p_doc := p_doc #- from_;
		END IF;
		op := 'add';
	ELSIF op IN ('add', 'replace', 'test') THEN
		IF NOT p_op ? 'value' THEN
			RAISE EXCEPTION 'operation % of the JSON patch ("%") has no "value"', p_n, op
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		val := p_op->'value';
	ELSIF op <> 'remove' THEN
		RAISE EXCEPTION 'operation % of the JSON patch has an unknown "op": "%"', p_n, op
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The operations are add, remove, replace, move, copy and test.';
	END IF;

	IF op = 'add' THEN
		IF cardinality(path) = 0 THEN
			RETURN val;
		END IF;
		IF NOT wf._pointer_exists(p_doc, path[1:cardinality(path) - 1]) THEN
			RAISE EXCEPTION 'operation % of the JSON patch: the parent of "%" does not exist', p_n, p_op->>'path'
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		parent := p_doc #> path[1:cardinality(path) - 1];
		last := path[cardinality(path)];
		IF jsonb_typeof(parent) = 'object' THEN
			RETURN jsonb_set(p_doc, path, val, true);
		ELSIF jsonb_typeof(parent) = 'array' THEN
			len := jsonb_array_length(parent);
			IF last = '-' THEN
				last := len::text;
			END IF;
			IF last !~ '^(0|[1-9][0-9]{0,8})$' OR last::int > len THEN
				RAISE EXCEPTION 'operation % of the JSON patch: "%" is not a position in its array', p_n, p_op->>'path'
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			IF last::int = len AND len > 0 THEN
				RETURN jsonb_insert(p_doc, path[1:cardinality(path) - 1] || (len - 1)::text, val, true);
			END IF;
			RETURN jsonb_insert(p_doc, path[1:cardinality(path) - 1] || last, val);
		END IF;
		RAISE EXCEPTION 'operation % of the JSON patch: the parent of "%" is neither an object nor an array', p_n, p_op->>'path'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	IF NOT wf._pointer_exists(p_doc, path) THEN
		RAISE EXCEPTION 'operation % of the JSON patch: "%" does not exist', p_n, p_op->>'path'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF op = 'remove' THEN
		IF cardinality(path) = 0 THEN
			RAISE EXCEPTION 'operation % of the JSON patch removes the whole document', p_n
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		RETURN p_doc #- path;
	ELSIF op = 'replace' THEN
		IF cardinality(path) = 0 THEN
			RETURN val;
		END IF;
		RETURN jsonb_set(p_doc, path, val, false);
	END IF;
	/* test */
	IF p_doc #> path IS DISTINCT FROM val THEN
		RAISE EXCEPTION 'operation % of the JSON patch: "%" is not %', p_n, p_op->>'path', val
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('It is %s.', p_doc #> path);
	END IF;
	RETURN p_doc;
END
$$;

/*
 * wf_patch(document, patch): the document with a JSON patch applied, all
 * of its operations or none (an ERROR names the one that does not apply).
 */
CREATE FUNCTION @extschema@.wf_patch(document jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	doc		jsonb := document;
	n		int := 0;
	op		jsonb;
BEGIN
	IF jsonb_typeof(patch) IS DISTINCT FROM 'array' THEN
		RAISE EXCEPTION 'a JSON patch must be an array of operations'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF doc IS NULL THEN
		RAISE EXCEPTION 'the document to patch must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	FOR op IN SELECT e FROM jsonb_array_elements(patch) AS e LOOP
		n := n + 1;
		doc := wf._patch_op(doc, op, n);
	END LOOP;
	RETURN doc;
END
$$;

/* ---------------------------------------------------------------------
 * What a step reads from the run context
 * ---------------------------------------------------------------------
 */

/*
 * The steps a text names, and whether it may read any of them (reads_all),
 * added to those given.  Every string is read as a template (the paths in
 * its {{ }}), as SQL (its uses of $1) and, for p_path, as a JSON path (a
 * "when", an "if", a map's "over").  Only plain references are understood:
 * $.steps.NAME, $."steps"."NAME", $1->'steps'->'NAME' and
 * $1 #> '{steps,NAME}', and the same of "input", "run", "item" and "index",
 * with a NAME of the characters of step names; any other use of $ in a
 * path or of $1 (or $01) in SQL may read every step.
 */
CREATE FUNCTION wf._text_reads(p_text text, p_path boolean,
							   INOUT reads text[], INOUT reads_all boolean)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	paths	text[];
	t		text;
	n_all	int;
	n_known	int;
	n_steps	int;
	names	text[];
BEGIN
	IF p_text IS NULL THEN
		RETURN;
	END IF;
	/* SQL */
	n_all := (SELECT count(*) FROM regexp_matches(p_text, $re$\$0*1(?![0-9])$re$, 'g'));
	IF n_all > 0 THEN
		names := ARRAY(SELECT coalesce(m[1], m[2])
						 FROM regexp_matches(p_text,
							$re$\$0*1\s*->\s*'steps'\s*->>?\s*'([^']*)'|\$0*1\s*#>>?\s*'\{\s*"?steps"?\s*,\s*"?([^,}"]*)$re$,
							'g') AS m);
		n_known := cardinality(names)
			+ (SELECT count(*) FROM regexp_matches(p_text,
				$re$\$0*1\s*(->>?\s*'(input|run|item|index)'|#>>?\s*'\{\s*"?(input|run|item|index)"?\s*[,}])$re$,
				'g'));
		reads := reads || names;
		/* A name written with escapes or spaces is not understood. */
		reads_all := reads_all OR n_known < n_all
			OR EXISTS (SELECT 1 FROM unnest(names) AS x WHERE x IS NULL OR x !~ '^[A-Za-z0-9_.-]+$');
	END IF;
	/*
	 * Paths: the text itself, or the insides of its {{ }}; a {{ whose
	 * path holds a "}" is not understood.
	 */
	paths := ARRAY(SELECT m[1] FROM regexp_matches(p_text, $re$\{\{([^}]*)\}\}$re$, 'g') AS m);
	reads_all := reads_all
		OR cardinality(paths) < (SELECT count(*) FROM regexp_matches(p_text, $re$\{\{$re$, 'g'));
	IF p_path THEN
		paths := paths || p_text;
	END IF;
	FOREACH t IN ARRAY paths LOOP
		n_all := (SELECT count(*) FROM regexp_matches(t, '[$]', 'g'));
		CONTINUE WHEN n_all = 0;
		names := ARRAY(SELECT coalesce(m[1], m[2])
						 FROM regexp_matches(t,
							$re$\$\s*\.\s*"?steps"?\s*\.\s*(?:"([^"]*)"|([A-Za-z0-9_-]+))$re$,
							'g') AS m);
		n_known := cardinality(names)
			+ (SELECT count(*) FROM regexp_matches(t,
				$re$\$\s*\.\s*"?(input|run|item|index)(?![A-Za-z0-9_])$re$, 'g'));
		reads := reads || names;
		/* A name written with escapes or spaces is not understood. */
		reads_all := reads_all OR n_known < n_all
			OR EXISTS (SELECT 1 FROM unnest(names) AS x WHERE x IS NULL OR x !~ '^[A-Za-z0-9_.-]+$');
	END LOOP;
END
$$;

/*
 * What a step, with everything nested in it, reads of the run context
 * (its compensation, which runs once it has completed, aside).
 */
CREATE FUNCTION wf._spec_reads(p_value jsonb, p_key text DEFAULT NULL,
							   INOUT reads text[] DEFAULT '{}', INOUT reads_all boolean DEFAULT false)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	e		record;
BEGIN
	CASE jsonb_typeof(p_value)
	WHEN 'string' THEN
		SELECT * INTO reads, reads_all
		  FROM wf._text_reads(p_value #>> '{}', p_key IN ('when', 'if', 'over'), reads, reads_all);
	WHEN 'object' THEN
		FOR e IN SELECT * FROM jsonb_each(p_value) LOOP
			CONTINUE WHEN e.key IN ('name', 'dependencies', 'compensate', 'description');
			SELECT * INTO reads, reads_all FROM wf._spec_reads(e.value, e.key, reads, reads_all);
		END LOOP;
	WHEN 'array' THEN
		FOR e IN SELECT * FROM jsonb_array_elements(p_value) LOOP
			SELECT * INTO reads, reads_all FROM wf._spec_reads(e.value, NULL, reads, reads_all);
		END LOOP;
	ELSE
		NULL;
	END CASE;
END
$$;

/*
 * The steps of a definition, nested ones included, with where they are:
 * name, as wf.step and wf_metrics name it (a child under its container,
 * "route/review", a parallel's under its branch, "notify/mail/send", a
 * map's items as one, "price[*]"); label, its name in the definition (and
 * in the run context); ptr, its JSON pointer; list, that of the list it is
 * in (NULL for a map's item step); pos, its place in that list; deps, the
 * labels of the steps of its list it waits for (its "dependencies", or the
 * step before it).
 */
CREATE FUNCTION wf._def_steps(p_list jsonb, p_ptr text, p_prefix text DEFAULT '')
RETURNS TABLE (name text, label text, ptr text, list text, pos int, spec jsonb, deps jsonb)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	e		jsonb;
	p		text;
BEGIN
	IF jsonb_typeof(p_list) IS DISTINCT FROM 'array' THEN
		RETURN;
	END IF;
	/* Names and dependencies as the runs have them (wf._plan_list). */
	FOR e IN SELECT x FROM jsonb_array_elements(wf._plan_list(p_list, p_prefix)) x LOOP
		p := p_ptr || '/' || ((e->>'ord')::int - 1);
		RETURN QUERY SELECT e->>'name', e->>'label', p, p_ptr, (e->>'ord')::int - 1, e->'spec',
							(SELECT coalesce(jsonb_agg(substr(d, length(p_prefix) + 1)), '[]')
							   FROM jsonb_array_elements_text(e->'deps') d);
		RETURN QUERY SELECT * FROM wf._def_children(e->'spec', p, e->>'name');
	END LOOP;
END
$$;

/* The steps nested in step p_step (at p_ptr, named p_name), as wf._def_steps. */
CREATE FUNCTION wf._def_children(p_step jsonb, p_ptr text, p_name text)
RETURNS TABLE (name text, label text, ptr text, list text, pos int, spec jsonb, deps jsonb)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN QUERY SELECT * FROM wf._def_steps(p_step->'then', p_ptr || '/then', p_name || '/');
	RETURN QUERY SELECT * FROM wf._def_steps(p_step->'else', p_ptr || '/else', p_name || '/');
	IF jsonb_typeof(p_step->'parallel') = 'array' THEN
		FOR j IN 0 .. jsonb_array_length(p_step->'parallel') - 1 LOOP
			RETURN QUERY SELECT * FROM wf._def_steps(p_step->'parallel'->j->'steps',
													 p_ptr || '/parallel/' || j || '/steps',
													 p_name || '/' || (p_step->'parallel'->j->>'name') || '/');
		END LOOP;
	END IF;
	IF jsonb_typeof(p_step->'map'->'step') = 'object' THEN
		RETURN QUERY SELECT p_name || '[*]', p_step->'map'->'step'->>'name', p_ptr || '/map/step',
							NULL::text, 0, p_step->'map'->'step', '[]'::jsonb;
		RETURN QUERY SELECT * FROM wf._def_children(p_step->'map'->'step', p_ptr || '/map/step',
													 p_name || '[*]');
	END IF;
END
$$;

/* ---------------------------------------------------------------------
 * wf_recommendations
 * ---------------------------------------------------------------------
 */

/* An interval of at least p_ms milliseconds, rounded up to a plain figure. */
CREATE FUNCTION wf._interval_text(p_ms float8) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN p_ms > 1000 THEN ceil(p_ms / 1000)::bigint || ' seconds'
				WHEN p_ms > 900 THEN '1 second'
				ELSE (ceil(greatest(p_ms, 1) / 100) * 100)::bigint || ' milliseconds' END
$$;

/* A row of wf_recommendations, kept until they are sorted. */
CREATE FUNCTION wf._rec_row(p_kind text, p_priority int, p_steps text[], p_evidence jsonb,
							p_patch jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT jsonb_build_array(jsonb_build_object('kind', p_kind, 'priority', p_priority,
												'steps', to_jsonb(p_steps), 'evidence', p_evidence,
												'patch', p_patch))
$$;

/*
 * Can step p_step run while another step of its run runs?  An executor
 * runs a run's sql steps one after the other in its transaction; one that
 * outlasts pg_workflow.batch_time while other steps of its run are ready
 * (p_long_ms: the smaller of the two settings; 0: never) goes on in a
 * long-step worker beside them, and http, agent and child-run steps wait
 * without holding the executor.  A container can when a step in it can.
 */
CREATE FUNCTION wf._rec_overlaps(p_info jsonb, p_step jsonb, p_long_ms float8) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT EXISTS (SELECT 1 FROM jsonb_each(p_info) e
					WHERE (e.key = p_step->>'name' OR e.value->>'ptr' LIKE (p_step->>'ptr') || '/%')
					  AND (e.value->>'kind' IN ('http', 'agent', 'workflow')
						   OR (e.value->>'kind' = 'sql' AND p_long_ms > 0
							   AND (e.value->>'mean')::float8 * 1000 >= p_long_ms)))
$$;

/*
 * A patch that first tests that each step concerned is where it was
 * (its "name" at its pointer): applied to another version, where the
 * steps have moved, it fails rather than change another step.
 */
CREATE FUNCTION wf._rec_guard(p_info jsonb, p_steps text[], p_patch jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN p_patch IS NOT NULL THEN
		coalesce((SELECT jsonb_agg(jsonb_build_object('op', 'test',
													  'path', (p_info->n->>'ptr') || '/name',
													  'value', p_info->n->'label') ORDER BY i)
					FROM unnest(p_steps) WITH ORDINALITY AS u(n, i)
				   WHERE p_info->n->>'label' IS NOT NULL), '[]') || p_patch END
$$;

/*
 * wf_recommendations(workflow, since): advice from the caller's finished
 * runs of the workflow's latest version that ended in the last "since"
 * (every role's for wf_admin, the rule of wf.runs; the 10,000 most recent
 * at most), none below 10 runs.  Each row: its kind, a priority (0-100,
 * the share of run time at stake where it can be measured), the steps
 * concerned, the figures it rests on, and a JSON patch of the definition
 * that applies it (NULL where the fix is not in the definition).  The
 * rules, and the thresholds that keep them quiet on a healthy workflow,
 * are in the README ("Watching and improving workflows").
 */
CREATE FUNCTION wf._recommendations(caller oid, caller_path text, p_workflow text, p_since interval,
									OUT kind text, OUT priority int, OUT steps text[],
									OUT evidence jsonb, OUT patch jsonb)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET work_mem = '64MB' SET jit = off AS $$
DECLARE
	admin		boolean := pg_has_role(caller, 'wf_admin', 'MEMBER');
	min_runs	constant int := 10;
	d			wf.workflow_def;
	ids			bigint[];
	run_mean	float8;			-- seconds
	work_total	float8;			-- the time the steps that work took
	default_ms	float8 := (SELECT setting::float8 FROM pg_settings
							WHERE name = 'pg_workflow.step_timeout');
	/*
	 * The time after which an sql step beside ready ones is handed over
	 * (0: never, without long-step workers).
	 */
	long_ms		float8 := (SELECT CASE WHEN l.setting::float8 = 0 OR w.setting::int = 0 THEN 0
									   ELSE least(l.setting::float8, greatest(b.setting::float8, 1)) END
							 FROM pg_settings l, pg_settings b, pg_settings w
							WHERE l.name = 'pg_workflow.long_step_threshold'
							  AND b.name = 'pg_workflow.batch_time'
							  AND w.name = 'pg_workflow.max_long_workers');
	info		jsonb;
	names		text[];
	nm			text;
	s			jsonb;
	a			jsonb;
	c			jsonb;
	gates		constant text[] := '{human,wait_for,sleep}';
	work		constant text[] := '{sql,http,agent}';
	saving		float8;
	runner_up	float8;
	cur_ms		float8;
	new_ms		float8;
	a_names		text[];
	new_deps	jsonb;
	ops			jsonb;
	refs		text[];
	items		float8;
	conc		int;
	failed_share float8;
	out			jsonb := '[]';
BEGIN
	PERFORM wf._check_window(p_workflow, p_since);
	SELECT * INTO d FROM wf.workflow_def x WHERE x.name = p_workflow ORDER BY x.version DESC LIMIT 1;
	/* The runs measured, and their mean duration, in one read. */
	SELECT coalesce(array_agg(x.id), '{}'), avg(x.dur)
	  INTO ids, run_mean
	  FROM (SELECT r.id, extract(epoch FROM r.finished_at - r.started_at) AS dur
			  FROM wf.run r
			 WHERE r.workflow = p_workflow AND r.version = d.version
			   AND r.status IN ('completed', 'failed', 'cancelled')
			   AND r.finished_at >= clock_timestamp() - p_since
			   AND (admin OR r.owner = caller)
			 ORDER BY r.finished_at DESC LIMIT 10000) x;
	IF cardinality(ids) < min_runs OR NOT run_mean > 0 THEN
		RETURN;
	END IF;

	/*
	 * Each step of the definition (in its order) with what it reads and
	 * its measures: its rows that ended (a map's items are one step,
	 * "MAP[*]"), their durations (of the attempt that ended), the
	 * attempts made, and from the history the failed attempts, the
	 * timeouts and the openings of a circuit breaker they caused.
	 */
	WITH st AS (
		SELECT wf._step_family(x.step) AS name,
			   x.run_id, x.parent, x.item IS NOT NULL AS is_item,
			   x.status, x.status IN ('completed', 'compensated') AS done,
			   x.status = 'skipped' AND x.error IS NULL AS skipped, x.attempt,
			   extract(epoch FROM x.finished_at - x.started_at) AS dur
		  FROM wf.step x
		 WHERE x.run_id = ANY (ids)
		   AND x.status IN ('completed', 'failed', 'skipped', 'compensated', 'escalated')
		   AND x.step NOT LIKE 'compensate:%'
	), agg AS (
		SELECT st.name, count(*) AS n, count(*) FILTER (WHERE st.done) AS n_done,
			   count(*) FILTER (WHERE st.status IN ('failed', 'escalated')) AS n_failed,
			   count(*) FILTER (WHERE st.skipped) AS n_skipped,
			   sum(greatest(st.attempt, 0)) AS n_attempts,
			   avg(st.dur) FILTER (WHERE st.done) AS mean,
			   percentile_cont(0.5) WITHIN GROUP (ORDER BY st.dur) FILTER (WHERE st.done) AS p50,
			   percentile_cont(0.99) WITHIN GROUP (ORDER BY st.dur) FILTER (WHERE st.done) AS p99,
			   coalesce(sum(st.dur) FILTER (WHERE NOT st.skipped), 0) AS spent
		  FROM st GROUP BY st.name
	), per_map AS (
		SELECT m.parent, avg(m.c) AS items_mean, max(m.c) AS items_max
		  FROM (SELECT st.parent, st.run_id, count(*) AS c FROM st
				 WHERE st.is_item GROUP BY st.parent, st.run_id) m
		 GROUP BY m.parent
	), hist AS (
		SELECT wf._step_family(h.step) AS name,
			   count(*) FILTER (WHERE h.detail->>'timeout' = 'true') AS n_timeouts,
			   count(*) AS n_failed_attempts,
			   count(*) FILTER (WHERE h.status = 'retrying') AS n_retried,
			   count(*) FILTER (WHERE h.status = 'retrying' AND h.detail->>'timeout' = 'true')
				   AS n_retried_timeouts,
			   count(*) FILTER (WHERE h.detail->>'breaker_opened' = 'true') AS n_openings,
			   mode() WITHIN GROUP (ORDER BY h.detail->>'message')
				   FILTER (WHERE h.detail->>'timeout' IS DISTINCT FROM 'true') AS top_error
		  FROM wf.history_log h
		 WHERE h.run_id = ANY (ids) AND h.step IS NOT NULL
		   AND h.status IN ('retrying', 'failed', 'escalated')
		   AND h.step NOT LIKE 'compensate:%'
		 GROUP BY 1
	)
	SELECT jsonb_object_agg(q.name, to_jsonb(q)), array_agg(q.name ORDER BY q.ord)
	  INTO info, names
	  FROM (SELECT ds.name, ds.label, ds.ptr, ds.list, ds.pos, ds.deps, ds.ord,
				   /* Its own keys: what is nested in it has rows of its own. */
				   CASE WHEN ds.spec ? 'map'
						THEN jsonb_set(ds.spec, '{map}', (ds.spec->'map') - 'step')
						ELSE ds.spec END - 'then' - 'else' - 'parallel' AS spec,
				   ds.spec::text LIKE '%"sql":%' AS has_sql,
				   wf._step_kind(ds.spec) AS kind, rd.reads, rd.reads_all,
				   lag(ds.name) OVER w AS prev, lead(ds.name) OVER w AS next,
				   count(*) OVER (PARTITION BY ds.list) AS list_len,
				   coalesce(g.n, 0) AS n, coalesce(g.n_done, 0) AS n_done,
				   coalesce(g.n_failed, 0) AS n_failed,
				   coalesce(g.n_skipped, 0) AS n_skipped, coalesce(g.n_attempts, 0) AS n_attempts,
				   g.mean, g.p50, g.p99, coalesce(g.spent, 0) AS spent,
				   coalesce(h.n_timeouts, 0) AS n_timeouts,
				   coalesce(h.n_failed_attempts, 0) AS n_failed_attempts,
				   coalesce(h.n_retried, 0) AS n_retried,
				   coalesce(h.n_retried_timeouts, 0) AS n_retried_timeouts,
				   coalesce(h.n_openings, 0) AS n_openings, h.top_error,
				   pm.items_mean, pm.items_max
			  FROM wf._def_steps(d.definition->'steps', '/steps')
				   WITH ORDINALITY AS ds(name, label, ptr, list, pos, spec, deps, ord)
			  CROSS JOIN LATERAL wf._spec_reads(ds.spec) AS rd
			  LEFT JOIN agg g ON g.name = ds.name
			  LEFT JOIN hist h ON h.name = ds.name
			  LEFT JOIN per_map pm ON pm.parent = ds.name
			WINDOW w AS (PARTITION BY ds.list ORDER BY ds.pos)) q;

	/*
	 * What the steps that work (sql, http, agent; a map's items included)
	 * took, the yardstick of the rules: a run's own duration also counts
	 * the time its steps queued for an executor, which says more about
	 * the load than about the workflow.
	 */
	work_total := (SELECT sum((e.value->>'spent')::float8) FROM jsonb_each(info) e
					WHERE e.value->>'kind' = ANY (work));
	IF NOT work_total > 0 THEN
		RETURN;
	END IF;

	/* The second longest mean of the steps that work, for "slow_step". */
	runner_up := (SELECT (e.value->>'mean')::float8 FROM jsonb_each(info) e
				WHERE e.value->>'kind' = ANY (work) AND e.value->>'list' IS NOT NULL
				  AND e.value->>'mean' IS NOT NULL
				ORDER BY (e.value->>'mean')::float8 DESC OFFSET 1 LIMIT 1);

	FOREACH nm IN ARRAY names LOOP
		s := info->nm;
		CONTINUE WHEN (s->>'n')::int = 0;

		/*
		 * parallel: a step that waits for the one before it without
		 * reading its output (or that of a step nested in it) could run
		 * beside it, when the shorter of the two takes 10 ms and 10% of
		 * the work of a run or more.
		 * Neither may be a wait (human, wait_for, sleep), whose place in
		 * the list is the point, and the step before must not have failed
		 * in the runs measured: it stopped the runs before the step ran,
		 * a gate, as a validation is (the evidence says that a failure of
		 * the step before no longer keeps the step from running).  And
		 * one of the two must be able to run while the other does: an
		 * executor runs the quick sql steps of a run one after the other
		 * whatever their dependencies (wf._rec_overlaps).  The patch makes it wait for what the
		 * step before waits for, and for the steps of its list it reads;
		 * the step after it, and any that names it in its dependencies,
		 * go on waiting for both.
		 */
		IF s->>'list' IS NOT NULL AND s->>'prev' IS NOT NULL AND NOT s->'spec' ? 'dependencies'
		   AND NOT (s->>'reads_all')::boolean THEN
			a := info->(s->>'prev');
			a_names := ARRAY(SELECT e.value->>'label' FROM jsonb_each(info) e
							  WHERE e.key = a->>'name' OR e.value->>'ptr' LIKE (a->>'ptr') || '/%');
			saving := CASE WHEN a->>'mean' IS NOT NULL AND s->>'mean' IS NOT NULL
						   THEN least((a->>'mean')::float8, (s->>'mean')::float8) END;
			IF NOT (a->>'kind' = ANY (gates) OR s->>'kind' = ANY (gates)) AND (a->>'n_failed')::int = 0
			   AND (wf._rec_overlaps(info, a, long_ms) OR wf._rec_overlaps(info, s, long_ms))
			   AND NOT ARRAY(SELECT jsonb_array_elements_text(s->'reads')) && a_names
			   AND saving >= 0.01 AND saving >= 0.1 * work_total / cardinality(ids) THEN
				refs := ARRAY(SELECT DISTINCT e.value->>'label' FROM jsonb_each(info) e
							   WHERE e.value->>'list' = s->>'list'
								 AND (e.value->>'pos')::int < (s->>'pos')::int
								 AND s->'reads' ? (e.value->>'label'));
				new_deps := (SELECT coalesce(jsonb_agg(DISTINCT x), '[]')
							   FROM (SELECT jsonb_array_elements_text(a->'deps') AS x
									 UNION SELECT unnest(refs)) u);
				ops := jsonb_build_array(jsonb_build_object('op', 'add',
									'path', (s->>'ptr') || '/dependencies', 'value', new_deps));
				IF s->>'next' IS NOT NULL AND NOT info->(s->>'next')->'spec' ? 'dependencies' THEN
					ops := ops || jsonb_build_object('op', 'add',
									'path', (info->(s->>'next')->>'ptr') || '/dependencies',
									'value', jsonb_build_array(a->>'label', s->>'label'));
				END IF;
				ops := ops || coalesce((SELECT jsonb_agg(jsonb_build_object('op', 'add',
												'path', (e.value->>'ptr') || '/dependencies',
												'value', (e.value->'spec'->'dependencies') || to_jsonb(a->>'label')))
										  FROM jsonb_each(info) e
										 WHERE e.value->>'list' = s->>'list'
										   AND e.value->'spec'->'dependencies' ? (s->>'label')
										   AND NOT e.value->'spec'->'dependencies' ? (a->>'label')), '[]');
				kind := 'parallel';
				priority := least(100, round(100 * saving * cardinality(ids) / work_total));
				steps := ARRAY[a->>'name', nm];
				evidence := jsonb_build_object(
					'runs', cardinality(ids), 'run_mean_ms', round((run_mean * 1000)::numeric, 1),
					'work_mean_ms', round((work_total / cardinality(ids) * 1000)::numeric, 1),
					'mean_ms', jsonb_build_object(a->>'name', round(((a->>'mean')::float8 * 1000)::numeric, 1),
												  nm, round(((s->>'mean')::float8 * 1000)::numeric, 1)),
					'saving_ms', round((saving * 1000)::numeric, 1),
					'decided_from', CASE WHEN (s->>'has_sql')::boolean
										 THEN 'the SQL text''s use of $1 (what the statements do to tables is not seen)'
										 ELSE 'templates and JSON paths' END,
					'reads', s->'reads',
					'caution', format('%s would no longer wait for %s: when %s fails, %s may have run already',
									  s->>'label', a->>'label', a->>'label', s->>'label'));
				patch := ops;
				out := out || wf._rec_row(kind, priority, steps, evidence, wf._rec_guard(info, steps, patch));
			END IF;
		END IF;

		/*
		 * slow_step: a step that works (sql, http, agent) taking half the
		 * work of the runs or more, with a mean of 50 ms or more and at least
		 * twice that of any other such step (of which there is one at
		 * least: the only step of a workflow is no bottleneck of it, just
		 * the workflow itself).  The fix is in the step
		 * itself: no patch.  (A map's items are the map's, whose rule is
		 * map_concurrency.)
		 */
		IF s->>'kind' = ANY (work) AND s->>'list' IS NOT NULL
		   AND (s->>'spent')::float8 >= 0.5 * work_total
		   AND (s->>'mean')::float8 >= 0.05
		   AND (s->>'mean')::float8 >= 2 * runner_up THEN
			kind := 'slow_step';
			priority := least(100, round(100 * (s->>'spent')::float8 / work_total));
			steps := ARRAY[nm];
			evidence := jsonb_build_object(
				'runs', cardinality(ids), 'executions', (s->>'n')::int,
				'share_of_work', round(((s->>'spent')::float8 / work_total)::numeric, 3),
				'mean_ms', round(((s->>'mean')::float8 * 1000)::numeric, 1),
				'p50_ms', round(((s->>'p50')::float8 * 1000)::numeric, 1),
				'p99_ms', round(((s->>'p99')::float8 * 1000)::numeric, 1),
				'next_longest_mean_ms', round((runner_up * 1000)::numeric, 1));
			patch := NULL;
			out := out || wf._rec_row(kind, priority, steps, evidence, wf._rec_guard(info, steps, patch));
		END IF;

		/*
		 * Timeouts: "timeout_tight" when 5% or more of the executions
		 * had an attempt time out (2 at least) while the p99 of those
		 * that completed reaches half the timeout: the timeout cuts into
		 * the step's normal durations.  The patch doubles it (to twice
		 * the p99 at least).  Timeouts far above every completed
		 * duration are hangs, counted as errors below.
		 */
		cur_ms := coalesce(extract(epoch FROM (s->'spec'->>'timeout')::interval) * 1000, default_ms);
		IF s->>'kind' = ANY (work) AND (s->>'n_timeouts')::int >= 2
		   AND (s->>'n_timeouts')::int * 20 >= (s->>'n')::int
		   AND (s->>'p99')::float8 * 1000 >= 0.5 * cur_ms THEN
			new_ms := greatest(2 * cur_ms, 2 * (s->>'p99')::float8 * 1000);
			kind := 'timeout_tight';
			priority := least(100, round(100 * (s->>'n_timeouts')::float8 / (s->>'n')::float8));
			steps := ARRAY[nm];
			evidence := jsonb_build_object(
				'runs', cardinality(ids), 'executions', (s->>'n')::int,
				'timeouts', (s->>'n_timeouts')::int,
				'timeout', coalesce(s->'spec'->>'timeout', wf._interval_text(cur_ms) || ' (pg_workflow.step_timeout)'),
				'p99_ms', round(((s->>'p99')::float8 * 1000)::numeric, 1));
			patch := jsonb_build_array(jsonb_build_object('op', 'add', 'path', (s->>'ptr') || '/timeout',
														  'value', wf._interval_text(new_ms)));
			out := out || wf._rec_row(kind, priority, steps, evidence, wf._rec_guard(info, steps, patch));
			/* Its retries are the timeout's, not retry_heavy's. */
			s := s || jsonb_build_object('n_retried', (s->>'n_retried')::int - (s->>'n_retried_timeouts')::int);
		ELSIF s->>'kind' = ANY (work) AND s->'spec' ? 'timeout' AND (s->>'n_timeouts')::int = 0
			  AND (s->>'n_done')::int >= min_runs
			  AND cur_ms >= 100 * (s->>'p99')::float8 * 1000
			  AND cur_ms - (s->>'p99')::float8 * 1000 >= 10000 THEN
			/*
			 * "timeout_loose": a timeout of its own 100 times the p99 or
			 * more (and 10 s above it): a hung attempt holds the run that
			 * long before its retry.  The patch sets ten times the p99,
			 * a second at least.
			 */
			new_ms := greatest(1000, 10 * (s->>'p99')::float8 * 1000);
			kind := 'timeout_loose';
			priority := 5;
			steps := ARRAY[nm];
			evidence := jsonb_build_object(
				'runs', cardinality(ids), 'executions', (s->>'n')::int, 'timeouts', 0,
				'timeout', s->'spec'->>'timeout',
				'p99_ms', round(((s->>'p99')::float8 * 1000)::numeric, 1));
			patch := jsonb_build_array(jsonb_build_object('op', 'replace', 'path', (s->>'ptr') || '/timeout',
														  'value', wf._interval_text(new_ms)));
			out := out || wf._rec_row(kind, priority, steps, evidence, wf._rec_guard(info, steps, patch));
		END IF;

		/*
		 * retry_heavy: attempts that failed and were retried (timeouts
		 * included, unless the timeout is the tight one above) in 20% of
		 * the executions or more (a step that fails for good without
		 * retries is counted in wf_metrics, not here).  The errors are to be fixed where they come from: no
		 * patch; the most frequent message is in the evidence.
		 */
		IF (s->>'n')::int >= min_runs
		   AND (s->>'n_retried')::int >= 0.2 * (s->>'n')::int THEN
			kind := 'retry_heavy';
			priority := least(100, round(100 * (s->>'n_retried')::float8 / (s->>'n')::float8));
			steps := ARRAY[nm];
			evidence := jsonb_build_object(
				'runs', cardinality(ids), 'executions', (s->>'n')::int,
				'retried_attempts', (s->>'n_retried')::int,
				'failed_executions', (s->>'n_failed')::int,
				'attempts_per_execution', round(((s->>'n_attempts')::float8 / (s->>'n')::float8)::numeric, 2),
				'top_error', s->>'top_error');
			patch := NULL;
			out := out || wf._rec_row(kind, priority, steps, evidence, wf._rec_guard(info, steps, patch));
		END IF;

		/*
		 * always_skipped: a step whose "when" was false in every one of
		 * its executions (10 at least).  The patch removes it, when no
		 * other step names it or may read it and it is not the last of its
		 * list (whose output is the list's); the step after it, when it
		 * has no "dependencies" of its own, is given those of the step
		 * removed.
		 */
		IF s->'spec' ? 'when' AND (s->>'n')::int >= min_runs AND (s->>'n_skipped')::int = (s->>'n')::int THEN
			kind := 'always_skipped';
			priority := 10;
			steps := ARRAY[nm];
			evidence := jsonb_build_object('runs', cardinality(ids), 'executions', (s->>'n')::int,
										   'skipped', (s->>'n_skipped')::int, 'when', s->'spec'->'when');
			patch := NULL;
			IF s->>'list' IS NOT NULL AND s->>'next' IS NOT NULL
			   AND NOT EXISTS (SELECT 1 FROM jsonb_each(info) e
								WHERE e.key <> nm
								  AND (e.value->'reads' ? (s->>'label') OR (e.value->>'reads_all')::boolean
									   OR (e.value->>'list' = s->>'list'
										   AND e.value->'spec'->'dependencies' ? (s->>'label')))) THEN
				patch := jsonb_build_array(jsonb_build_object('op', 'remove', 'path', s->>'ptr'));
				/* The step after it waits for what it waited for. */
				IF s->'spec' ? 'dependencies' AND NOT info->(s->>'next')->'spec' ? 'dependencies' THEN
					patch := jsonb_build_object('op', 'add',
												'path', (info->(s->>'next')->>'ptr') || '/dependencies',
												'value', s->'deps') || patch;
				END IF;
			END IF;
			out := out || wf._rec_row(kind, priority, steps, evidence, wf._rec_guard(info, steps, patch));
		END IF;

		/*
		 * map_concurrency: a map of concurrency N over more than N items
		 * that takes twice as long as an item, its items 10% of the work
		 * or more: the items wait for each other.  The patch raises the
		 * concurrency to the most items a run had (100 at most).
		 */
		IF s->>'kind' = 'map' AND s->'spec'->'map' ? 'concurrency' THEN
			c := info->(nm || '[*]');
			conc := (s->'spec'->'map'->>'concurrency')::numeric::int;
			items := (s->>'items_mean')::float8;
			IF c IS NOT NULL AND items > conc AND (s->>'mean')::float8 >= 2 * (c->>'mean')::float8
			   AND (c->>'spent')::float8 >= 0.1 * work_total
			   AND least((s->>'items_max')::int, 100) > conc THEN
				kind := 'map_concurrency';
				saving := (s->>'mean')::float8 - (c->>'mean')::float8
					* ceil(items / least((s->>'items_max')::int, 100));
				priority := least(100, greatest(1, round(100 * saving / run_mean)));
				steps := ARRAY[nm];
				evidence := jsonb_build_object(
					'runs', cardinality(ids), 'concurrency', conc,
					'items_mean', round(items::numeric, 1), 'items_max', (s->>'items_max')::int,
					'map_mean_ms', round(((s->>'mean')::float8 * 1000)::numeric, 1),
					'item_mean_ms', round(((c->>'mean')::float8 * 1000)::numeric, 1),
					'run_mean_ms', round((run_mean * 1000)::numeric, 1));
				patch := jsonb_build_array(jsonb_build_object('op', 'replace',
								'path', (s->>'ptr') || '/map/concurrency',
								'value', least((s->>'items_max')::int, 100)));
				out := out || wf._rec_row(kind, priority, steps, evidence, wf._rec_guard(info, steps, patch));
			END IF;
		END IF;

		/*
		 * circuit_breaker: the step's breaker opened 3 times or more, in
		 * one run in 10 or more.  When no more than half of its attempts
		 * failed, the breaker trips on bursts its retries get through:
		 * the patch doubles "failures".  When most failed, the host is
		 * down and the breaker is right: no patch.
		 */
		IF s->'spec' ? 'circuit_breaker' AND (s->>'n_openings')::int >= 3
		   AND (s->>'n_openings')::int * 10 >= cardinality(ids) THEN
			failed_share := (s->>'n_failed_attempts')::float8 / greatest((s->>'n_attempts')::float8, 1);
			kind := 'circuit_breaker';
			priority := least(100, round(100 * (s->>'n_openings')::float8 / cardinality(ids)));
			steps := ARRAY[nm];
			evidence := jsonb_build_object(
				'runs', cardinality(ids), 'openings', (s->>'n_openings')::int,
				'attempts', (s->>'n_attempts')::int,
				'failed_attempts', (s->>'n_failed_attempts')::int,
				'failures', coalesce((s->'spec'->'circuit_breaker'->>'failures')::numeric::int, 5));
			patch := CASE WHEN failed_share <= 0.5 THEN
				jsonb_build_array(jsonb_build_object('op', 'add',
					'path', (s->>'ptr') || '/circuit_breaker/failures',
					'value', 2 * coalesce((s->'spec'->'circuit_breaker'->>'failures')::numeric::int, 5))) END;
			out := out || wf._rec_row(kind, priority, steps, evidence, wf._rec_guard(info, steps, patch));
		END IF;
	END LOOP;
	RETURN QUERY
	SELECT e->>'kind', (e->>'priority')::int, ARRAY(SELECT jsonb_array_elements_text(e->'steps')),
		   e->'evidence', nullif(e->'patch', 'null')
	  FROM jsonb_array_elements(out) WITH ORDINALITY AS x(e, i)
	 ORDER BY (e->>'priority')::int DESC, i;
END
$$;

CREATE FUNCTION @extschema@.wf_recommendations(workflow text, since interval DEFAULT '7 days')
RETURNS TABLE (kind text, priority int, steps text[], evidence jsonb, patch jsonb)
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

COMMENT ON FUNCTION @extschema@.wf_recommendations(text, interval) IS 'advice from the measured runs of a workflow''s latest version, each with the JSON patch of its definition that applies it';
COMMENT ON FUNCTION @extschema@.wf_patch(jsonb, jsonb) IS 'a JSON document with a JSON patch (RFC 6902) applied: wf_define(name, wf_patch(wf_export(name), patch))';
