/*
 * 14_descriptions.sql: the descriptions shown by \df+, \dv+ and \dx+.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/* ---------------------------------------------------------------------
 * Descriptions, for \df+, \dv+ and \dx+ pg_workflow (sql/init.sql checks
 * that every public function and view has one)
 * ---------------------------------------------------------------------
 */
COMMENT ON SCHEMA wf IS 'pg_workflow: the engine''s tables (its owner''s only) and the views users read';
COMMENT ON FUNCTION @extschema@.wf_validate(jsonb) IS 'every problem of a workflow definition, one per row; none when it is valid';
COMMENT ON FUNCTION @extschema@.wf_define(text, jsonb) IS 'validate and store a definition as the workflow''s next version; returns the version';
COMMENT ON FUNCTION @extschema@.wf_export(text, int) IS 'the stored definition of a workflow (latest version by default)';
COMMENT ON FUNCTION @extschema@.wf_start(text, jsonb, jsonb) IS 'start a run when the calling transaction commits; returns its id (options: idempotency_key, version, start_at, priority)';
COMMENT ON FUNCTION @extschema@.wf_wait(bigint, interval) IS 'wait until a run ends or the timeout passes; returns its status';
COMMENT ON FUNCTION @extschema@.wf_cancel(bigint, text) IS 'cancel a run: its running step is interrupted, compensations run';
COMMENT ON FUNCTION @extschema@.wf_retry(bigint) IS 'resume a failed run: failed steps run again, completed ones keep their checkpoints';
COMMENT ON FUNCTION @extschema@.wf_rewind(bigint, text) IS 'restore a run to its checkpoint before a step and run from there';
COMMENT ON FUNCTION @extschema@.wf_signal(bigint, text, jsonb) IS 'deliver a signal (or a human step''s decision) to a run; kept if its step is not waiting yet';
COMMENT ON FUNCTION @extschema@.wf_emit(text, jsonb, text) IS 'emit a durable event: starts the subscribed workflows (as their subscribers) and wakes the runs waiting for it';
COMMENT ON FUNCTION @extschema@.wf_on_event(text, text, jsonpath) IS 'subscribe a workflow to an event; its runs belong to the subscriber';
COMMENT ON FUNCTION @extschema@.wf_start_trigger() IS 'row trigger: wf_start_trigger(''workflow'' [, ''options'']) starts a run with the row as input, owned by the table''s owner';
COMMENT ON FUNCTION @extschema@.wf_resolve(bigint, text, text, jsonb) IS 'an operator''s answer to an escalated step: retry, skip (with output) or fail';
COMMENT ON FUNCTION @extschema@.wf_schedule(text, text, text, jsonb) IS 'start a workflow on a schedule: cron (''0 * * * *'') or ''every N unit''';
COMMENT ON FUNCTION @extschema@.wf_unschedule(text) IS 'remove a schedule; false if there was none';
COMMENT ON FUNCTION @extschema@.wf_set_secret(text, text, text) IS 'store (NULL value: delete) a secret owned by the caller, optionally bound to hosts; readable by no one through SQL';
COMMENT ON FUNCTION @extschema@.wf_grant_secret(text, regrole) IS 'let a role''s runs use a secret (its owner or wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_revoke_secret(text, regrole) IS 'take back a secret''s grant; runs already started stop using it';
COMMENT ON VIEW wf.workflows IS 'workflow definitions, every version';
COMMENT ON VIEW wf.runs IS 'runs the current role may see (its own; all for wf_admin)';
COMMENT ON VIEW wf.steps IS 'the steps of the runs the current role may see, with status, attempt, output, error and duration';
COMMENT ON VIEW wf.history IS 'the append-only audit log of every run and step transition';
COMMENT ON VIEW wf.alerts IS 'failures, escalations, dropped owners: what an operator should look at';
COMMENT ON VIEW wf.human_tasks IS 'open approvals, for their assignees and the runs'' owners';
COMMENT ON VIEW wf.schedules IS 'schedules the current role may see, with their next and last runs';
COMMENT ON VIEW wf.circuit_breakers IS 'the circuit breakers of http hosts and agent pools: state, failures, when they close again';
COMMENT ON VIEW wf.secrets IS 'the secrets a role may use or manage, never their values';
COMMENT ON FUNCTION @extschema@.wf_explain(bigint) IS 'a run as an indented tree, one line per step: status, attempt, duration, error (like EXPLAIN ANALYZE)';
COMMENT ON FUNCTION @extschema@.wf_graph(text, text) IS 'a workflow as a Mermaid flowchart or Graphviz DOT graph';
COMMENT ON FUNCTION @extschema@.wf_graph(bigint, text) IS 'a run''s graph, coloured by step status, with durations and attempts';
COMMENT ON FUNCTION @extschema@.wf_metrics(text, interval) IS 'executions, success, error and skip rates, duration percentiles of a workflow and of each of its steps, and the bottleneck steps of their critical paths';
COMMENT ON FUNCTION @extschema@.wf_ack_alert(bigint) IS 'an operator acknowledges an alert';
COMMENT ON VIEW wf.metrics IS 'every workflow''s figures of the last hour, one row per workflow and measure (for a Prometheus SQL exporter): runs ended, completed, failed, cancelled, success and error ratios, run duration mean and percentiles in seconds, runs pending, running and waiting now';
COMMENT ON VIEW wf.progress IS 'unfinished runs: steps done of total, percent, what runs or waits now, elapsed time and an estimate of the time left';
COMMENT ON FUNCTION @extschema@.wf_claim(text, int, interval, text, text[], interval, int) IS 'an agent claims up to max tasks of a pool that its capabilities cover (and its capacity leaves room for), under a lease; with wait, blocks until one arrives, the least loaded waiters woken first';
COMMENT ON FUNCTION @extschema@.wf_heartbeat(bigint, interval, jsonb) IS 'extend a claimed task''s lease, optionally with progress';
COMMENT ON FUNCTION @extschema@.wf_complete(bigint, jsonb) IS 'complete a claimed task: its output is the agent step''s; false if the lease was lost';
COMMENT ON FUNCTION @extschema@.wf_fail(bigint, text, boolean) IS 'fail a claimed task, retryable (transient) or not (business)';
COMMENT ON FUNCTION @extschema@.wf_grant_pool(text, regrole) IS 'let a role claim the tasks of an agent pool (wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_revoke_pool(text, regrole) IS 'take back a role''s right to claim from an agent pool (wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_pool_pause(text) IS 'stop handing out the tasks of an agent pool (wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_pool_resume(text) IS 'hand out the tasks of a paused agent pool again (wf_admin)';
COMMENT ON FUNCTION @extschema@.wf_pool_limit(text, int) IS 'at most max_in_flight tasks of an agent pool claimed at once, across its agents; NULL: no limit (wf_admin)';
COMMENT ON VIEW wf.agents IS 'the agents of each pool: capabilities, first and last seen, state, tasks in flight, completed and failed, completed in the last minute and hour, p50 and p95 task duration';
COMMENT ON VIEW wf.concurrency IS 'concurrency keys in use, of runs and of steps: limit, active and waiting';
COMMENT ON VIEW wf.rate_limits IS 'rate limits of http steps: limit, tokens left, next token (wf_admin)';
