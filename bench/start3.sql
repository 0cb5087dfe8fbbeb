-- bench/start3.sql -- pgbench script: one autocommit wf_start of the
-- 3-step no-op workflow, without waiting for it (bench/starts.sh runs it
-- from 10 clients at once).
SELECT wf_start('noop3');
