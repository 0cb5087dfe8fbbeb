-- bench/setup.sql -- objects the pg_workflow benchmark needs in database
-- postgres (run once by bench/run.sh on a fresh throwaway cluster).
\set ON_ERROR_STOP on

CREATE EXTENSION IF NOT EXISTS pg_workflow;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- Throughput: three no-op SQL steps, run in order.
SELECT wf_define('noop3', '{
  "description": "benchmark: three no-op steps",
  "steps": [
    {"name": "a", "sql": "SELECT 1"},
    {"name": "b", "sql": "SELECT 2"},
    {"name": "c", "sql": "SELECT 3"}
  ]}') AS noop3_version;

-- Latency: one no-op SQL step.
SELECT wf_define('noop1', '{
  "description": "benchmark: one no-op step",
  "steps": [
    {"name": "a", "sql": "SELECT 1"}
  ]}') AS noop1_version;

-- Yardstick: what pgbench inserts, one row per transaction.
CREATE TABLE IF NOT EXISTS pgwf_bench_insert (
	id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	v		int NOT NULL,
	at		timestamptz NOT NULL DEFAULT now()
);
