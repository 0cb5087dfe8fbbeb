-- bench/agents_start.sql -- pgbench script of bench/agents.sh's balance
-- part: one autocommit start of a run of one 50 ms agent step.
SELECT wf_start('agents1');
