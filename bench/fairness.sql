-- bench/fairness.sql -- objects of bench/fairness.sh, after bench/setup.sql,
-- in database postgres of its throwaway cluster.  psql variable: sleep, the
-- seconds a long step sleeps.
\set ON_ERROR_STOP on

-- Two roles of the flood-vs-trickle measurement.
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

-- A long step: one sql step that sleeps, with a timeout well above it.
SELECT wf_define('long', jsonb_build_object(
	'description', 'benchmark: one long sql step',
	'steps', jsonb_build_array(jsonb_build_object(
		'name', 'sleep',
		'sql', format('SELECT pg_sleep(%s)', :sleep),
		'timeout', format('%s seconds', greatest(60, 3 * :sleep)))))) AS long_version;

-- What runs the long steps, sampled while they run.
CREATE TABLE pgwf_bench_sample (
	at			timestamptz NOT NULL,
	long_workers int NOT NULL,	-- backends of type 'pg_workflow long-step worker'
	sleeping	int NOT NULL,	-- engine backends in pg_sleep (a long step)
	exec_sleeping int NOT NULL	-- of which executors
);

/*
 * Samples pg_stat_activity every 100 ms, one transaction per sample, until
 * no run with lo < id <= hi is unfinished, or for limit_s seconds.
 */
CREATE PROCEDURE pgwf_bench_sampler(lo bigint, hi bigint, limit_s int)
LANGUAGE plpgsql AS $$
DECLARE
	t0	timestamptz := clock_timestamp();
BEGIN
	LOOP
		PERFORM pg_stat_clear_snapshot();
		INSERT INTO pgwf_bench_sample
		SELECT clock_timestamp(),
			   count(*) FILTER (WHERE backend_type = 'pg_workflow long-step worker'),
			   count(*) FILTER (WHERE wait_event = 'PgSleep'
								  AND backend_type LIKE 'pg_workflow%'),
			   count(*) FILTER (WHERE wait_event = 'PgSleep'
								  AND backend_type = 'pg_workflow executor')
		  FROM pg_stat_activity;
		COMMIT;
		EXIT WHEN clock_timestamp() > t0 + limit_s * interval '1 second'
			OR NOT EXISTS (SELECT 1 FROM wf.run
							WHERE id > lo AND id <= hi
							  AND status IN ('pending', 'running', 'waiting'));
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
