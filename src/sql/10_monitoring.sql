/*
 * 10_monitoring.sql: progress, metrics, graphs, explain and SLA alerts.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/* ---------------------------------------------------------------------
 * Monitoring
 *
 * wf_explain, wf_graph, wf_metrics and the wf.progress view (with the
 * views below).  wf_explain and wf_graph of a run refuse a run the caller
 * may not see, with wf_wait's error; wf_metrics and wf.progress count the
 * runs the caller sees in wf.runs.
 * ---------------------------------------------------------------------
 */

/* Finished runs of a workflow by end time, for wf_metrics and wf.progress's estimates. */
CREATE INDEX run_workflow_finished ON wf.run (workflow, finished_at)
	WHERE status IN ('completed', 'failed', 'cancelled');

/* A duration for people: "12.345 ms", "3.210 s", "4 min 12 s", "2 days 03:04:05". */
CREATE FUNCTION wf._fmt_duration(d interval) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE
		WHEN d IS NULL THEN NULL
		WHEN extract(epoch FROM d) < 1
			THEN to_char(extract(epoch FROM d) * 1000, 'FM9990.000') || ' ms'
		WHEN extract(epoch FROM d) < 60
			THEN to_char(extract(epoch FROM d), 'FM90.000') || ' s'
		WHEN extract(epoch FROM d) < 3600
			THEN format('%s min %s s', floor(extract(epoch FROM d) / 60),
						floor(mod(extract(epoch FROM d), 60)))
		ELSE justify_interval(date_trunc('second', d))::text
	END
$$;

/* A step's name under its container: "a/ten" in a parallel, "[3]" in a map. */
CREATE FUNCTION wf._step_tail(p_step text, p_parent text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE
		WHEN p_parent IS NULL THEN p_step
		WHEN left(p_step, length(p_parent) + 1) = p_parent || '/'
			THEN substr(p_step, length(p_parent) + 2)
		WHEN left(p_step, length(p_parent)) = p_parent
			THEN substr(p_step, length(p_parent) + 1)
		ELSE p_step
	END
$$;

/*
 * wf_explain(run_id): the run as an indented tree, a header line and one
 * line per step, children under their container in definition order
 * (parallel branches one after the other, map items by index).
 */
CREATE FUNCTION wf._explain(caller oid, caller_path text, p_run_id bigint) RETURNS SETOF text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r		wf.run;
	t_now	timestamptz := clock_timestamp();
BEGIN
	PERFORM wf._run_status(caller, caller_path, p_run_id);
	SELECT * INTO r FROM wf.run WHERE id = p_run_id;
	RETURN NEXT format('Run %s: workflow "%s" version %s, %s', r.id, r.workflow, r.version, r.status)
		|| CASE WHEN r.started_at IS NULL THEN ''
				WHEN r.finished_at IS NULL
					THEN format(', elapsed %s', wf._fmt_duration(t_now - r.started_at))
				ELSE format(', took %s', wf._fmt_duration(r.finished_at - r.started_at)) END
		|| CASE WHEN r.error ? 'message'
				THEN format(', error: %s', wf._clip(r.error->>'message', 80)) ELSE '' END;
	RETURN QUERY
	WITH RECURSIVE t AS (
		SELECT s.step, s.kind, s.spec, 0 AS depth,
			   ARRAY[lpad(s.ord::text, 10, '0') || s.step] AS sortkey
		  FROM wf.step s
		 WHERE s.run_id = p_run_id AND s.parent IS NULL
		UNION ALL
		SELECT s.step, s.kind, s.spec, t.depth + 1,
			   t.sortkey || (lpad(coalesce((SELECT b.i FROM jsonb_array_elements(t.spec->'parallel')
												  WITH ORDINALITY AS b(branch, i)
											 WHERE t.kind = 'parallel'
											   AND b.branch->>'name' =
												   split_part(wf._step_tail(s.step, s.parent), '/', 1)),
										   0)::text, 10, '0')
							 || lpad(s.ord::text, 10, '0') || s.step)
		  FROM t JOIN wf.step s ON s.run_id = p_run_id AND s.parent = t.step
	)
	SELECT repeat('      ', t.depth) || '->  '
		   || format('%s (%s) %s', wf._step_tail(s.step, s.parent), s.kind, s.status)
		   || CASE WHEN s.started_at IS NULL THEN ''
				   ELSE format(' (attempt=%s %s=%s%s)', s.attempt,
							   CASE WHEN s.finished_at IS NULL THEN 'running' ELSE 'time' END,
							   wf._fmt_duration(coalesce(s.finished_at, t_now) - s.started_at),
							   CASE WHEN s.children_left IS NOT NULL
									THEN format(' children=%s',
												(SELECT count(*) FROM wf.step c
												  WHERE c.run_id = p_run_id AND c.parent = s.step))
									ELSE '' END) END
		   || CASE WHEN s.error ? 'message'
				   THEN format(' error: %s', wf._clip(s.error->>'message', 80)) ELSE '' END
	  FROM t JOIN wf.step s ON s.run_id = p_run_id AND s.step = t.step
	 ORDER BY t.sortkey;
END
$$;

/* Text cut to n characters, with an ellipsis when cut; one line. */
CREATE FUNCTION wf._clip(p_text text, n int) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN length(x) > n THEN left(x, n - 1) || '…' ELSE x END
	  FROM (SELECT regexp_replace(p_text, '\s+', ' ', 'g') AS x) c
$$;

/* A graph node's identifier: letters, digits and "_", one per path. */
CREATE FUNCTION wf._graph_id(p_path text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT 'n_' || regexp_replace(p_path, '[^A-Za-z0-9]', '_', 'g') || '_' || left(md5(p_path), 6)
$$;

/*
 * A quoted label: the parts that are not NULL, one per line.  DOT escapes
 * backslashes and quotes; Mermaid takes entity codes for what its parser
 * would read ("#", quotes, angle brackets).
 */
CREATE FUNCTION wf._graph_label(p_parts text[], p_fmt text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT '"' || array_to_string(ARRAY(
			SELECT CASE WHEN p_fmt = 'dot'
						THEN replace(replace(x, '\', '\\'), '"', '\"')
						ELSE replace(replace(replace(replace(replace(x, '#', '#35;'), '&', '#38;'),
								'"', '#quot;'), '<', '#lt;'), '>', '#gt;') END
			  FROM unnest(p_parts) WITH ORDINALITY AS u(part, i),
				   LATERAL (SELECT regexp_replace(u.part, '\s+', ' ', 'g') AS x) c
			 WHERE u.part IS NOT NULL
			 ORDER BY u.i),
		   CASE WHEN p_fmt = 'dot' THEN '\n' ELSE '<br/>' END) || '"'
$$;

/* An edge between two nodes, dashed or not, with an optional label. */
CREATE FUNCTION wf._graph_edge(p_from text, p_to text, p_label text, p_dashed boolean,
							   p_fmt text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE
		WHEN p_fmt = 'dot' THEN
			format('  %s -> %s', p_from, p_to)
			|| CASE WHEN p_label IS NOT NULL OR p_dashed THEN
					' [' || array_to_string(ARRAY[
						CASE WHEN p_label IS NOT NULL
							 THEN 'label=' || wf._graph_label(ARRAY[p_label], p_fmt) END,
						CASE WHEN p_dashed THEN 'style=dashed' END], ', ') || ']'
				ELSE '' END || ';'
		WHEN p_label IS NULL THEN
			format('  %s %s %s', p_from, CASE WHEN p_dashed THEN '-.->' ELSE '-->' END, p_to)
		ELSE
			format('  %s %s %s %s %s', p_from, CASE WHEN p_dashed THEN '-.' ELSE '--' END,
				   wf._graph_label(ARRAY[p_label], p_fmt),
				   CASE WHEN p_dashed THEN '.->' ELSE '-->' END, p_to)
	END
$$;

/*
 * What a run's graph says of a node: its status (the most telling one of a
 * map's items, for the node standing for them) and a line of figures.
 * NULL status: no such step in the run (not reached).
 */
CREATE FUNCTION wf._graph_state(p_run_id bigint, p_path text, OUT status text, OUT info text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	pattern	text;
BEGIN
	IF strpos(p_path, '[*]') = 0 THEN
		SELECT s.status,
			   CASE WHEN s.started_at IS NOT NULL THEN
					format('%s, attempt %s',
						   wf._fmt_duration(coalesce(s.finished_at, clock_timestamp()) - s.started_at),
						   s.attempt) END
		  INTO status, info
		  FROM wf.step s WHERE s.run_id = p_run_id AND s.step = p_path;
		RETURN;
	END IF;
	pattern := '^' || replace(regexp_replace(p_path, '([.^$*+?()[\]{}|\\])', '\\\1', 'g'),
							  '\[\*\]', '\[[0-9]+\]') || '$';
	SELECT (array_agg(x.status ORDER BY array_position(ARRAY['failed', 'escalated', 'running',
					'waiting', 'ready', 'pending', 'compensated', 'cancelled', 'skipped',
					'completed'], x.status)))[1],
		   format('%s items: %s', sum(x.n), string_agg(format('%s %s', x.n, x.status), ', '
														ORDER BY x.n DESC, x.status))
	  INTO status, info
	  FROM (SELECT s.status, count(*) AS n FROM wf.step s
			 WHERE s.run_id = p_run_id AND s.step ~ pattern
			 GROUP BY s.status) x;
END
$$;

/* One node: its shape by kind, its label, and in a run's graph its status. */
CREATE FUNCTION wf._graph_node(p_id text, p_path text, p_label text, p_kind text, p_fmt text,
							   p_run_id bigint, p_indent text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	st		record;
	label	text;
	class	text;
BEGIN
	IF p_run_id IS NOT NULL THEN
		st := wf._graph_state(p_run_id, p_path);
		class := coalesce(st.status, 'unreached');
		label := wf._graph_label(ARRAY[p_label, p_kind || ' ' || coalesce(st.status, 'not reached'),
									   st.info], p_fmt);
	ELSE
		label := wf._graph_label(ARRAY[p_label, p_kind], p_fmt);
	END IF;
	IF p_fmt = 'dot' THEN
		RETURN format('%s%s [label=%s%s%s];', p_indent, p_id, label,
					  CASE p_kind WHEN 'if' THEN ', shape=diamond'
								  WHEN 'parallel' THEN ', shape=trapezium'
								  WHEN 'map' THEN ', shape=parallelogram'
								  WHEN 'compensate' THEN ', shape=box, style="rounded,dashed,filled"'
								  ELSE '' END,
					  CASE class
						WHEN 'completed' THEN ', fillcolor="#c8e6c9"'
						WHEN 'failed' THEN ', fillcolor="#ffcdd2"'
						WHEN 'running' THEN ', fillcolor="#fff59d"'
						WHEN 'waiting' THEN ', fillcolor="#fff59d"'
						WHEN 'escalated' THEN ', fillcolor="#e1bee7"'
						WHEN 'compensated' THEN ', fillcolor="#ffe0b2"'
						WHEN 'skipped' THEN ', fillcolor="#eeeeee"'
						WHEN 'cancelled' THEN ', fillcolor="#e0e0e0"'
						WHEN 'unreached' THEN ', fontcolor="#9e9e9e", color="#9e9e9e"'
						ELSE '' END);
	END IF;
	RETURN p_indent || p_id
		|| CASE p_kind WHEN 'if' THEN '{' || label || '}'
					   WHEN 'parallel' THEN '[[' || label || ']]'
					   WHEN 'map' THEN '[/' || label || '/]'
					   WHEN 'compensate' THEN '([' || label || '])'
					   ELSE '[' || label || ']' END
		|| CASE WHEN class IS NOT NULL THEN ':::' || class ELSE '' END;
END
$$;

/*
 * The nodes (in their subgraphs) and edges of a list of steps whose paths
 * begin with p_prefix; p_idprefix names their nodes (an if's two branches
 * share the prefix of their paths, not that of their nodes).  The steps
 * that depend on nothing get an edge from p_from labelled p_from_label.
 */
CREATE FUNCTION wf._graph_list(p_steps jsonb, p_prefix text, p_idprefix text, p_fmt text,
							   p_run_id bigint, p_depth int, p_from text, p_from_label text,
							   INOUT nodes text[], INOUT edges text[])
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	e		jsonb;
	spec	jsonb;
	kind	text;
	path	text;
	id		text;
	ind		text := repeat('  ', p_depth + 1);
	d		text;
	b		jsonb;
	cond	text;
	tmpl	jsonb;
BEGIN
	FOR e IN SELECT x FROM jsonb_array_elements(wf._plan_list(p_steps, p_prefix)) x LOOP
		spec := e->'spec';
		kind := e->>'kind';
		path := e->>'name';
		id := wf._graph_id(p_idprefix || (e->>'label'));
		cond := CASE WHEN spec ? 'when' THEN 'when ' || wf._clip(spec->>'when', 40) END;
		IF jsonb_array_length(e->'deps') = 0 THEN
			edges := edges || wf._graph_edge(p_from, id,
											 nullif(concat_ws(', ', p_from_label, cond), ''),
											 false, p_fmt);
		END IF;
		FOR d IN SELECT jsonb_array_elements_text(e->'deps') LOOP
			edges := edges || wf._graph_edge(wf._graph_id(p_idprefix || substr(d, length(p_prefix) + 1)),
											 id, cond, false, p_fmt);
		END LOOP;
		IF kind IN ('if', 'parallel', 'map') THEN
			nodes := nodes || CASE WHEN p_fmt = 'dot'
								   THEN format('%ssubgraph cluster_%s {', ind, id)
								   ELSE format('%ssubgraph g_%s [%s]', ind, id,
											   wf._graph_label(ARRAY[e->>'label'], p_fmt)) END;
			IF p_fmt = 'dot' THEN
				nodes := nodes || format('%s  label=%s; style=rounded; color="#90a4ae";', ind,
										 wf._graph_label(ARRAY[e->>'label'], p_fmt));
			END IF;
			nodes := nodes || wf._graph_node(id, path, e->>'label', kind, p_fmt, p_run_id, ind || '  ');
			IF kind = 'if' THEN
				SELECT * INTO nodes, edges
				  FROM wf._graph_list(coalesce(spec->'then', '[]'), path || '/',
									  p_idprefix || (e->>'label') || '/then/', p_fmt, p_run_id,
									  p_depth + 1, id, wf._clip(spec->>'if', 40), nodes, edges);
				SELECT * INTO nodes, edges
				  FROM wf._graph_list(coalesce(spec->'else', '[]'), path || '/',
									  p_idprefix || (e->>'label') || '/else/', p_fmt, p_run_id,
									  p_depth + 1, id, 'else', nodes, edges);
			ELSIF kind = 'parallel' THEN
				FOR b IN SELECT jsonb_array_elements(spec->'parallel') LOOP
					nodes := nodes || CASE WHEN p_fmt = 'dot'
										   THEN format('%s  subgraph cluster_%s {', ind,
													   wf._graph_id(path || '/' || (b->>'name')))
										   ELSE format('%s  subgraph g_%s [%s]', ind,
													   wf._graph_id(path || '/' || (b->>'name')),
													   wf._graph_label(ARRAY[b->>'name'], p_fmt)) END;
					IF p_fmt = 'dot' THEN
						nodes := nodes || format('%s    label=%s; style=dashed; color="#b0bec5";', ind,
												 wf._graph_label(ARRAY[b->>'name'], p_fmt));
					END IF;
					SELECT * INTO nodes, edges
					  FROM wf._graph_list(coalesce(b->'steps', '[]'), path || '/' || (b->>'name') || '/',
										  p_idprefix || (e->>'label') || '/' || (b->>'name') || '/',
										  p_fmt, p_run_id, p_depth + 2, id, NULL, nodes, edges);
					nodes := nodes || (ind || '  ' || CASE WHEN p_fmt = 'dot' THEN '}' ELSE 'end' END);
				END LOOP;
			ELSE
				/* The map's items stand as one node, path[*]. */
				tmpl := spec->'map'->'step' || '{"name": "[*]"}';
				tmpl := tmpl - 'dependencies';
				SELECT * INTO nodes, edges
				  FROM wf._graph_list(jsonb_build_array(tmpl), path, p_idprefix || (e->>'label'),
									  p_fmt, p_run_id, p_depth + 1, id,
									  'each of ' || wf._clip(spec->'map'->>'over', 30)
									  || coalesce(', ' || (spec->'map'->>'concurrency') || ' at a time', ''),
									  nodes, edges);
			END IF;
			nodes := nodes || (ind || CASE WHEN p_fmt = 'dot' THEN '}' ELSE 'end' END);
		ELSE
			nodes := nodes || wf._graph_node(id, path, e->>'label', kind, p_fmt, p_run_id, ind);
		END IF;
		IF spec ? 'compensate' THEN
			nodes := nodes || wf._graph_node(wf._graph_id('compensate:' || p_idprefix || (e->>'label')),
											 'compensate:' || path,
											 'undo ' || (e->>'label'), 'compensate', p_fmt,
											 p_run_id, ind);
			edges := edges || wf._graph_edge(id, wf._graph_id('compensate:' || p_idprefix || (e->>'label')),
											 'undo', true, p_fmt);
		END IF;
	END LOOP;
END
$$;

/* The whole graph of a definition, of a run's when p_run_id is set. */
CREATE FUNCTION wf._graph_text(p_title text, p_definition jsonb, p_fmt text, p_run_id bigint)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	nodes	text[] := '{}';
	edges	text[] := '{}';
	head	text[];
BEGIN
	IF p_fmt IS NULL OR p_fmt NOT IN ('mermaid', 'dot') THEN
		RAISE EXCEPTION 'unknown graph format "%"', p_fmt
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The formats are "mermaid" and "dot".';
	END IF;
	SELECT * INTO nodes, edges
	  FROM wf._graph_list(p_definition->'steps', '', '', p_fmt, p_run_id, 0, 'start', NULL,
						  nodes, edges);
	IF p_fmt = 'dot' THEN
		head := ARRAY[format('digraph %s {', wf._graph_label(ARRAY[p_title], p_fmt)),
					  format('  label=%s; labelloc=t; rankdir=TB; compound=true;',
							 wf._graph_label(ARRAY[p_title], p_fmt)),
					  '  node [shape=box, style="rounded,filled", fillcolor="white", fontname="Helvetica"];',
					  '  edge [fontname="Helvetica", fontsize=10];',
					  '  start [label="start", shape=circle, fillcolor="#eceff1"];'];
		RETURN array_to_string(head || nodes || edges || '}'::text, E'\n');
	END IF;
	head := ARRAY['---', 'title: ' || wf._graph_label(ARRAY[p_title], p_fmt), '---', 'flowchart TD'];
	IF p_run_id IS NOT NULL THEN
		head := head || ARRAY[
			'  classDef completed fill:#c8e6c9,stroke:#2e7d32',
			'  classDef failed fill:#ffcdd2,stroke:#c62828',
			'  classDef running fill:#fff59d,stroke:#f9a825',
			'  classDef waiting fill:#fff59d,stroke:#f9a825',
			'  classDef ready fill:#ffffff,stroke:#616161',
			'  classDef pending fill:#ffffff,stroke:#616161',
			'  classDef escalated fill:#e1bee7,stroke:#6a1b9a',
			'  classDef compensated fill:#ffe0b2,stroke:#ef6c00',
			'  classDef skipped fill:#eeeeee,stroke:#9e9e9e',
			'  classDef cancelled fill:#e0e0e0,stroke:#616161',
			'  classDef unreached fill:#ffffff,stroke:#bdbdbd,color:#9e9e9e,stroke-dasharray:3 3'];
	END IF;
	RETURN array_to_string(head || '  start(("start"))'::text || nodes || edges, E'\n');
END
$$;

/* wf_graph(workflow, format): the last version of the workflow. */
CREATE FUNCTION wf._graph(caller oid, caller_path text, p_workflow text, p_format text)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	d	wf.workflow_def;
BEGIN
	SELECT * INTO d FROM wf.workflow_def WHERE name = p_workflow ORDER BY version DESC LIMIT 1;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'workflow "%" does not exist', p_workflow USING ERRCODE = 'undefined_object';
	END IF;
	RETURN wf._graph_text(format('%s v%s', d.name, d.version), d.definition, p_format, NULL);
END
$$;

/* wf_graph(run_id, format): the run's workflow version, coloured by its steps. */
CREATE FUNCTION wf._graph(caller oid, caller_path text, p_run_id bigint, p_format text)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r	wf.run;
BEGIN
	PERFORM wf._run_status(caller, caller_path, p_run_id);
	SELECT * INTO r FROM wf.run WHERE id = p_run_id;
	RETURN wf._graph_text(format('run %s: %s v%s, %s', r.id, r.workflow, r.version, r.status),
						  (SELECT d.definition FROM wf.workflow_def d
							WHERE d.name = r.workflow AND d.version = r.version),
						  p_format, p_run_id);
END
$$;

/*
 * The arguments of wf_metrics and wf_recommendations: a workflow that
 * exists and a window that is not negative (nor so long that its start is
 * out of the range of timestamps).
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
	IF p_since IS NULL OR p_since < '0' OR p_since > '1000 years' THEN
		RAISE EXCEPTION 'since must be an interval from 0 to 1000 years'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
END
$$;

/*
 * wf_metrics(workflow, since): the caller's runs of the workflow that ended
 * in the last "since" (every role's for wf_admin, the rule of wf.runs),
 * one row for the runs and one per step; a map's items are one step,
 * "map[*]".  A step's executions are its rows that ended (not those
 * cancelled before they ran); its share is the time it took on the
 * critical paths of the 1,000 most recent of the runs, of the time they
 * took; the bottlenecks are the three steps other than containers with
 * the largest share, when it is 10% or more.
 */
CREATE FUNCTION wf._metrics(caller oid, caller_path text, p_workflow text, p_since interval,
							OUT scope text, OUT step text, OUT executions bigint,
							OUT completed bigint, OUT failed bigint, OUT cancelled bigint,
							OUT skipped bigint, OUT success_rate numeric, OUT error_rate numeric,
							OUT skip_rate numeric,
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
	WITH RECURSIVE runs AS MATERIALIZED (
		SELECT r.id, r.status, r.finished_at, date_part('epoch', r.finished_at - r.started_at) AS dur
		  FROM wf.run r
		 WHERE r.workflow = $1
		   AND r.status IN ('completed', 'failed', 'cancelled')
		   AND r.finished_at >= $2
		   AND ($3 OR r.owner = $4)
	), sample AS (
		SELECT runs.id, runs.dur FROM runs
		 WHERE runs.dur IS NOT NULL
		 ORDER BY runs.finished_at DESC LIMIT 1000
	), path AS (
		/*
		 * The critical path of each sampled run: from its top-level step
		 * that ended last, back through the dependency that ended last,
		 * into an "if" or a "parallel" by its child that ended last.  The
		 * named steps only (index step_context): a map's items are not
		 * followed, the map is one step of the path.
		 */
		SELECT l.run_id, l.step, l.deps, l.kind, l.dur
		  FROM sample CROSS JOIN LATERAL (
				SELECT s.run_id, s.step, s.deps, s.kind,
					   date_part('epoch', s.finished_at - s.started_at) AS dur
				  FROM wf.step s
				 WHERE s.run_id = sample.id AND s.label IS NOT NULL AND s.parent IS NULL
				   AND s.finished_at IS NOT NULL
				   AND s.status IN ('completed', 'failed', 'skipped', 'compensated', 'escalated')
				 ORDER BY s.finished_at DESC LIMIT 1) l
		UNION ALL
		SELECT n.run_id, n.step, n.deps, n.kind, n.dur
		  FROM path p CROSS JOIN LATERAL (
				(SELECT s.run_id, s.step, s.deps, s.kind,
						date_part('epoch', s.finished_at - s.started_at) AS dur
				   FROM wf.step s
				  WHERE s.run_id = p.run_id AND s.step = ANY (p.deps) AND s.finished_at IS NOT NULL
				  ORDER BY s.finished_at DESC LIMIT 1)
				UNION ALL
				(SELECT s.run_id, s.step, s.deps, s.kind,
						date_part('epoch', s.finished_at - s.started_at) AS dur
				   FROM wf.step s
				  WHERE p.kind IN ('if', 'parallel') AND s.run_id = p.run_id
					AND s.label IS NOT NULL AND s.parent = p.step AND s.finished_at IS NOT NULL
					AND s.status IN ('completed', 'failed', 'skipped', 'escalated',
									 'compensated', 'cancelled')
				  ORDER BY s.finished_at DESC LIMIT 1)) n
	), on_path AS (
		SELECT path.step COLLATE "C" AS name, sum(path.dur) AS t
		  FROM path GROUP BY path.step
	), sampled AS (
		SELECT sum(sample.dur) AS t FROM sample
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
		 /*
		  * By duration within each step too: the percentiles' own sort
		  * then finds each step's values in order, which it checks
		  * first and takes as they are (700 ms instead of 1 s on a
		  * million steps).
		  */
		 ORDER BY 1, dur
	), per_step AS (
		SELECT st.name, bool_or(st.container) AS container, count(*) AS n,
			   count(*) FILTER (WHERE st.outcome = 0) AS n_completed,
			   count(*) FILTER (WHERE st.outcome = 1) AS n_failed,
			   count(*) FILTER (WHERE st.outcome = 2) AS n_skipped,
			   avg(st.dur) AS mean,
			   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY st.dur) AS pct,
			   avg(st.attempt) FILTER (WHERE st.attempt > 0) AS attempts,
			   avg(st.offset_) AS starts
		  FROM steps st
		 GROUP BY st.name
	), ranked AS (
		/*
		 * share: of the time the sampled runs took, what the step took
		 * on their critical paths (none for a map's items, which are
		 * not followed).
		 */
		SELECT p.*, x.share_,
			   CASE WHEN NOT p.container AND x.share_ >= 0.1
					THEN rank() OVER (PARTITION BY NOT p.container AND x.share_ >= 0.1
									  ORDER BY x.share_ DESC) END AS r
		  FROM per_step p
		  LEFT JOIN on_path o ON o.name = p.name
		  CROSS JOIN sampled
		  CROSS JOIN LATERAL (
				SELECT CASE WHEN strpos(p.name, '[*]') > 0 THEN NULL
							WHEN sampled.t > 0
							THEN round((coalesce(o.t, 0) / sampled.t)::numeric, 3)
					   END AS share_) x
	)
	SELECT u.scope, u.step, u.executions, u.completed, u.failed, u.cancelled, u.skipped,
		   u.success_rate, u.error_rate, u.skip_rate, u.mean, u.p50, u.p95, u.p99, u.attempts,
		   u.share,
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
				   NULL::numeric AS skip_rate,
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
				   round(k.n_skipped::numeric / k.n, 3),
				   make_interval(secs => k.mean), make_interval(secs => k.pct[1]),
				   make_interval(secs => k.pct[2]), make_interval(secs => k.pct[3]),
				   round(k.attempts::numeric, 2), k.share_,
				   coalesce(k.r <= 3, false), 1, k.starts
			  FROM ranked k) u
	 ORDER BY u.o1, u.o2 NULLS LAST, u.step
	$q$ USING p_workflow, clock_timestamp() - p_since, admin, caller;
END
$$;

CREATE FUNCTION @extschema@.wf_metrics(workflow text, since interval DEFAULT '1 day')
RETURNS TABLE (scope text, step text, executions bigint, completed bigint, failed bigint,
			   cancelled bigint, skipped bigint, success_rate numeric, error_rate numeric,
			   skip_rate numeric, mean interval, p50 interval, p95 interval, p99 interval,
			   attempts numeric, share numeric, bottleneck boolean)
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

/*
 * SLAs: the "sla" of a definition counts from its run's start, the "sla"
 * of a step from the start of its first attempt.  sla_at is when it
 * passes, set by the triggers below; wf._check_slas, which the executors
 * call, raises its alert (one per run or step) and sets it to infinity;
 * when the run or step ends, the triggers clear it and resolve the alert.
 */
ALTER TABLE wf.run ADD COLUMN sla_at timestamptz;
ALTER TABLE wf.step ADD COLUMN sla_at timestamptz;
ALTER TABLE wf.alert ADD COLUMN acknowledged_by regrole,
	ADD COLUMN acknowledged_at timestamptz;
CREATE INDEX run_sla ON wf.run (sla_at) WHERE sla_at IS NOT NULL;
CREATE INDEX step_sla ON wf.step (sla_at) WHERE sla_at IS NOT NULL;

/*
 * A run's sla_at is set at its start, with its deadline, and a step's at
 * its first attempt's start, by wf._step_load; at the end of the run or
 * step the triggers below clear it and resolve its alert.
 *
 * AFTER triggers, which write the rare row with an SLA once more, rather
 * than BEFORE triggers, which would change the row being written: a table
 * with a BEFORE UPDATE row trigger has each row locked before every update
 * of it (for the trigger to see the version it updates), one WAL record
 * and a buffer write more on every update of every run and step.  Their
 * WHEN clauses are a single test: every statement that sets a status
 * reads them back.
 */
CREATE FUNCTION wf._run_sla() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NEW.status IN ('completed', 'failed', 'cancelled') THEN
		IF NEW.sla_at = 'infinity' THEN
			UPDATE wf.alert SET resolved_at = clock_timestamp()
			 WHERE run_id = NEW.id AND step IS NULL AND kind = 'sla'
			   AND resolved_at IS NULL;
		END IF;
		UPDATE wf.run SET sla_at = NULL WHERE id = NEW.id;
	END IF;
	RETURN NULL;
END
$$;

/* Its sla_at only: it does not fire again. */
CREATE TRIGGER run_sla AFTER UPDATE OF status ON wf.run
	FOR EACH ROW
	WHEN (NEW.sla_at IS NOT NULL)
	EXECUTE FUNCTION wf._run_sla();

CREATE FUNCTION wf._step_sla() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NEW.status IN ('completed', 'failed', 'skipped', 'compensated', 'cancelled') THEN
		IF NEW.sla_at = 'infinity' THEN
			UPDATE wf.alert SET resolved_at = clock_timestamp()
			 WHERE run_id = NEW.run_id AND step = NEW.step AND kind = 'sla'
			   AND resolved_at IS NULL;
		END IF;
		UPDATE wf.step SET sla_at = NULL WHERE run_id = NEW.run_id AND step = NEW.step;
	END IF;
	RETURN NULL;
END
$$;

/* Its sla_at only: it does not fire again, nor step_slot_released. */
CREATE TRIGGER step_sla AFTER UPDATE OF status ON wf.step
	FOR EACH ROW
	WHEN (NEW.sla_at IS NOT NULL)
	EXECUTE FUNCTION wf._step_sla();

/*
 * Raises the alerts of the SLAs that have passed; returns when the next
 * one passes, for the executors' sleep.  Rows another transaction holds
 * are left for the next call.
 */
CREATE FUNCTION wf._check_slas() RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r		record;
	v_wf	text;
	v_sla	text;
	/*
	 * Called before every batch: the loops read only the (nearly empty)
	 * partial indexes run_sla and step_sla, with a value rather than
	 * clock_timestamp() and no join, so that no plan ever scans wf.run or
	 * wf.step; what an alert needs is looked up for the rare row due.
	 */
	t		timestamptz := clock_timestamp();
	next_run	timestamptz := (SELECT min(sla_at) FROM wf.run WHERE sla_at < 'infinity');
	next_step	timestamptz := (SELECT min(sla_at) FROM wf.step WHERE sla_at < 'infinity');
BEGIN
	/* min() reads the first entry of its index: this is all a batch pays. */
	IF next_run <= t THEN
	FOR r IN SELECT u.id, u.workflow, u.version, u.sla_at FROM wf.run u
			  WHERE u.sla_at <= t
			  ORDER BY u.sla_at LIMIT 1000
			  FOR UPDATE SKIP LOCKED LOOP
		SELECT d.definition->>'sla' INTO v_sla FROM wf.workflow_def d
		 WHERE d.name = r.workflow AND d.version = r.version;
		UPDATE wf.run SET sla_at = 'infinity' WHERE id = r.id;
		PERFORM wf._alert(r.id, NULL, 'sla',
						  format('run %s of workflow "%s" has not ended within its SLA of %s',
								 r.id, r.workflow, v_sla),
						  jsonb_build_object('workflow', r.workflow, 'sla', v_sla,
											 'due', r.sla_at));
	END LOOP;
	next_run := (SELECT min(sla_at) FROM wf.run WHERE sla_at < 'infinity');
	END IF;
	IF next_step <= t THEN
	FOR r IN SELECT s.run_id, s.step, s.sla_at, s.spec->>'sla' AS sla FROM wf.step s
			  WHERE s.sla_at <= t
			  ORDER BY s.sla_at LIMIT 1000
			  FOR UPDATE SKIP LOCKED LOOP
		SELECT u.workflow INTO v_wf FROM wf.run u WHERE u.id = r.run_id;
		UPDATE wf.step SET sla_at = 'infinity' WHERE run_id = r.run_id AND step = r.step;
		PERFORM wf._alert(r.run_id, r.step, 'sla',
						  format('step "%s" of run %s of workflow "%s" has not ended within its SLA of %s',
								 r.step, r.run_id, v_wf, r.sla),
						  jsonb_build_object('workflow', v_wf, 'sla', r.sla,
											 'due', r.sla_at));
	END LOOP;
	next_step := (SELECT min(sla_at) FROM wf.step WHERE sla_at < 'infinity');
	END IF;
	RETURN LEAST(next_run, next_step);
END
$$;

/*
 * wf_ack_alert(alert_id): the caller acknowledges an alert of a run it
 * controls (any alert, for wf_admin); false if it was acknowledged already.
 */
CREATE FUNCTION wf._ack_alert(caller oid, caller_path text, p_alert_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	a		wf.alert;
	run_owner	oid;
BEGIN
	IF p_alert_id IS NULL THEN
		RAISE EXCEPTION 'alert id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO a FROM wf.alert WHERE id = p_alert_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'alert % does not exist', p_alert_id USING ERRCODE = 'undefined_object';
	END IF;
	SELECT r.owner INTO run_owner FROM wf.run r WHERE r.id = a.run_id;
	IF NOT (pg_has_role(caller, 'wf_admin', 'MEMBER')
			OR (run_owner IS NOT NULL AND wf._may_control(caller, run_owner))) THEN
		RAISE EXCEPTION 'permission denied for alert %', p_alert_id
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only the role that started the run and members of wf_admin may acknowledge its alerts.';
	END IF;
	IF a.acknowledged_at IS NOT NULL THEN
		RETURN false;
	END IF;
	UPDATE wf.alert SET acknowledged_by = caller, acknowledged_at = clock_timestamp()
	 WHERE id = p_alert_id;
	RETURN true;
END
$$;

CREATE FUNCTION @extschema@.wf_ack_alert(alert_id bigint) RETURNS boolean
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_explain(run_id bigint) RETURNS SETOF text
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_graph(workflow text, format text DEFAULT 'mermaid') RETURNS text
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';

CREATE FUNCTION @extschema@.wf_graph(run_id bigint, format text DEFAULT 'mermaid') RETURNS text
	LANGUAGE C AS 'MODULE_PATHNAME', 'wf_api_call';


