-- bench/trickle.sql -- pgbench script: one autocommit wf_start of the 3-step
-- no-op workflow, then wait for the run to end before the next transaction
-- (bench/fairness.sh: bob's trickle during alice's flood).
SELECT wf_start('noop3') AS run_id \gset
SELECT wf_wait(:run_id, '5 minutes');
