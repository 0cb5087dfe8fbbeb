-- bench/latency.sql -- pgbench script of the latency measurement: one
-- autocommit wf_start of the 1-step no-op workflow, then wait for the run
-- to end before the next transaction. Run with 1 client, -t N.
SELECT wf_start('noop1') AS run_id \gset
SELECT wf_wait(:run_id, '30 seconds');
