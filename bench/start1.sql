-- bench/start1.sql -- pgbench script: one autocommit wf_start of the 1-step
-- no-op workflow, without waiting for it (bench/fairness.sh starts its
-- trivial runs with it, at a fixed rate: pgbench -R).
SELECT wf_start('noop1');
