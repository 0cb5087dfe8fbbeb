-- bench/scale.sql -- objects of bench/scale.sh, after bench/setup.sql, in
-- database postgres of its throwaway cluster.
\set ON_ERROR_STOP on

-- alice owns the maps; bob's trivial runs go on meanwhile.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'alice') THEN
		CREATE ROLE alice LOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bob') THEN
		CREATE ROLE bob LOGIN;
	END IF;
END
$$;

/*
 * Map size: one sql step makes an array of input.n items, a map runs a
 * trivial sql step for each.  The items are booleans, the smallest jsonb
 * value (4 bytes each: 100,000 items make 400 kB, within
 * pg_workflow.max_output_size's 1 MB; numbers take 15 bytes each).
 */
SELECT wf_define('map', '{
  "description": "benchmark: a map of input.n trivial items",
  "steps": [
    {"name": "gen", "sql": "SELECT jsonb_agg(true) FROM generate_series(1, ($1->''input''->>''n'')::int)"},
    {"name": "each", "map": {"over": "$.steps.gen",
                             "step": {"name": "one", "sql": "SELECT 1"}}}
  ]}') AS map_version;

/*
 * History size: n copies of the finished run template (a completed run of
 * noop3), each with the template's steps and history, as superuser, in one
 * transaction.  Every column is copied but the ids; the timestamps are
 * moved back by a day and a millisecond per copy.  The column lists are
 * read from the catalog, so that this works on every version of the
 * tables.  The copies take the next n ids of wf.run's identity.  Returns
 * the last id.
 */
CREATE FUNCTION pgwf_bench_fake_runs(template bigint, n int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	seq		text := pg_get_serial_sequence('wf.run', 'id');
	lo		bigint;
	hi		bigint;
	t		text;
	cols	text;
	sel		text;
BEGIN
	lo := nextval(seq);
	hi := lo + n - 1;
	PERFORM setval(seq, hi);
	FOREACH t IN ARRAY ARRAY['wf.run', 'wf.step', 'wf.history_log'] LOOP
		SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
			   string_agg(CASE
							WHEN t = 'wf.run' AND a.attname = 'id' THEN 'g.id'
							WHEN a.attname = 'run_id' THEN 'g.id'
							WHEN a.atttypid = 'timestamptz'::regtype
							THEN format('x.%I - g.back', a.attname)
							ELSE format('x.%I', a.attname) END,
						  ', ' ORDER BY a.attnum)
		  INTO cols, sel
		  FROM pg_attribute a
		 WHERE a.attrelid = t::regclass AND a.attnum > 0 AND NOT a.attisdropped
		   AND NOT (t = 'wf.history_log' AND a.attname = 'id');
		EXECUTE format('INSERT INTO %s (%s) %s SELECT %s FROM %s x,
							   (SELECT i AS id, interval ''1 day'' + ($2 - i) * interval ''1 ms'' AS back
								  FROM generate_series($1, $2) i) g
						 WHERE x.%I = $3',
					   t, cols, CASE WHEN t = 'wf.run' THEN 'OVERRIDING SYSTEM VALUE' ELSE '' END,
					   sel, t, CASE WHEN t = 'wf.run' THEN 'id' ELSE 'run_id' END)
			USING lo, hi, template;
	END LOOP;
	RETURN hi;
END
$$;

/*
 * Empties the engine's run tables (runs, steps, history, signals, alerts,
 * deferred changes), as superuser: session_replication_role = replica
 * silences the triggers that keep the history append-only.
 */
CREATE PROCEDURE pgwf_bench_empty()
LANGUAGE plpgsql AS $$
BEGIN
	SET LOCAL session_replication_role = replica;
	TRUNCATE wf.run, wf.step, wf.history_log, wf.signal, wf.alert, wf.deferred;
END
$$;

/*
 * Flow control: noop3 with a workflow concurrency key (input.k, 100 keys in
 * the benchmark) and a limit it never reaches: what the admission and the
 * release of a slot cost each run.
 */
SELECT wf_define('noop3k', '{
  "description": "benchmark: three no-op steps, a concurrency key",
  "concurrency": {"key": "{{$.input.k}}", "limit": 10000},
  "steps": [
    {"name": "a", "sql": "SELECT 1"},
    {"name": "b", "sql": "SELECT 2"},
    {"name": "c", "sql": "SELECT 3"}
  ]}') AS noop3k_version;

/*
 * The same with a step concurrency key on its middle step instead: what
 * taking a slot (one transaction of its own and a claim more) and
 * releasing it cost each step.
 */
SELECT wf_define('noop3s', '{
  "description": "benchmark: three no-op steps, the middle one with a step concurrency key",
  "steps": [
    {"name": "a", "sql": "SELECT 1"},
    {"name": "b", "sql": "SELECT 2", "concurrency": {"key": "{{$.input.k}}", "limit": 10000}},
    {"name": "c", "sql": "SELECT 3"}
  ]}') AS noop3s_version;
