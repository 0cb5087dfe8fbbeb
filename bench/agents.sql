-- bench/agents.sql -- objects of bench/agents.sh, in database postgres of
-- its throwaway cluster.
\set ON_ERROR_STOP on

CREATE EXTENSION IF NOT EXISTS pg_workflow;

DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_agent') THEN
		CREATE ROLE bench_agent LOGIN;
	END IF;
END
$$;
SELECT wf_grant_pool('bench', 'bench_agent');

-- Throughput: three agent steps in a row, each echoed by the agent.
SELECT wf_define('agents3', '{
  "description": "benchmark: three agent steps",
  "steps": [
    {"name": "a", "agent": "bench"},
    {"name": "b", "agent": "bench"},
    {"name": "c", "agent": "bench"}
  ]}') AS agents3_version;

-- Balance: one agent step of 50 ms of work.
SELECT wf_define('agents1', '{
  "description": "benchmark: one agent step of 50 ms",
  "steps": [
    {"name": "a", "agent": "bench", "payload": {"work_s": 0.05}}
  ]}') AS agents1_version;
