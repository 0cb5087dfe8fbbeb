--
-- Installation: settings, executors, where the extension may be created.
--
CREATE EXTENSION pg_workflow;
SELECT extname, extversion, extnamespace::regnamespace AS schema
  FROM pg_extension WHERE extname = 'pg_workflow';

-- The settings, with their defaults (the test instance runs 2 executors).
SELECT name, setting, unit, context FROM pg_settings
 WHERE name LIKE 'pg_workflow.%' ORDER BY name;

-- The prefix is reserved: a misspelt setting is an error, not a placeholder.
SET pg_workflow.wokers = 4;

-- The executors are up and connected to this database.
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT count(*) FROM pg_stat_activity
					WHERE backend_type = 'pg_workflow executor'
					  AND datname = current_database()) = 2;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT backend_type, application_name, datname
  FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'
 ORDER BY application_name;

-- wf_admin exists; the tables are private, the views public.
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'wf_admin';
SELECT c.relname, c.relkind, has_table_privilege('public', c.oid, 'SELECT') AS public_select
  FROM pg_class c WHERE c.relnamespace = 'wf'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY c.relkind, c.relname;

-- The hot tables of the executors and agents carry no BEFORE UPDATE row
-- trigger, under which every update locks its row first (a WAL record
-- each), and check their states with a function call, which a statement
-- reads back in a few words, rather than an IN list of strings.
SELECT tgrelid::regclass, tgname FROM pg_trigger
 WHERE tgrelid IN ('wf.run'::regclass, 'wf.step'::regclass, 'wf.task'::regclass)
   AND NOT tgisinternal AND (tgtype & 2) <> 0 AND (tgtype & 16) <> 0;
SELECT conrelid::regclass, conname, pg_get_constraintdef(oid) AS definition
  FROM pg_constraint
 WHERE conrelid IN ('wf.run'::regclass, 'wf.step'::regclass, 'wf.task'::regclass)
   AND contype = 'c'
 ORDER BY 1, 2;
SELECT s AS state, wf._run_status_ok(s) AS run, wf._step_status_ok(s) AS step,
	   wf._task_state_ok(s) AS task
  FROM unnest(ARRAY['pending', 'ready', 'running', 'waiting', 'claimed', 'expired',
					'completed', 'failed', 'skipped', 'escalated', 'compensated',
					'cancelled', 'Completed', 'done', '']) s;

-- Every public function and view says what it is for (\df+, \dv+).
SELECT p.oid::regprocedure::text AS undescribed
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_workflow')
   AND p.proname LIKE 'wf\_%' AND obj_description(p.oid, 'pg_proc') IS NULL
UNION ALL
SELECT c.oid::regclass::text
  FROM pg_class c WHERE c.relnamespace = 'wf'::regnamespace AND c.relkind = 'v'
   AND obj_description(c.oid, 'pg_class') IS NULL;

-- Only the database the executors serve can hold the extension.
CREATE DATABASE wf_other;
\c wf_other
CREATE EXTENSION pg_workflow;
\c postgres
DROP DATABASE wf_other;
