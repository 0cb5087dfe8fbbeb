--
-- Runs of sql steps: outputs, the context, DAGs, options, control.
--
CREATE TABLE effects (run_id bigint, step text, at timestamptz DEFAULT clock_timestamp());

SELECT wf_define('seq', '{
  "description": "three steps passing values along",
  "steps": [
    {"name": "double", "sql": "SELECT ($1->''input''->>''n'')::int * 2"},
    {"name": "label", "sql": "SELECT jsonb_build_object(''n'', $1->''steps''->''double'', ''run'', $1->''run''->''workflow'')"},
    {"name": "record", "sql": "INSERT INTO effects (run_id, step) VALUES (($1->''run''->>''id'')::bigint, ''record'') RETURNING step"}
  ]}');
-- Defining the same document again keeps the version; a new one adds one.
SELECT wf_define('seq', wf_export('seq'));
SELECT version, description FROM wf.workflows WHERE name = 'seq';

SELECT wf_start('seq', '{"n": 21}') AS r \gset
SELECT wf_wait(:r, '60 s');
SELECT workflow, version, status, input, output, error FROM wf.runs WHERE id = :r;
SELECT step, kind, status, attempt, output, error, duration >= '0' AS timed
  FROM wf.steps WHERE run_id = :r ORDER BY ord;
SELECT step, status FROM wf.history WHERE run_id = :r ORDER BY id;
SELECT count(*) FROM effects WHERE run_id = :r;

-- A diamond: b and c depend on a, d on both.
SELECT wf_define('diamond', '{"steps": [
  {"name": "a", "sql": "SELECT 1"},
  {"name": "b", "dependencies": ["a"], "sql": "SELECT ($1->''steps''->>''a'')::int + 10"},
  {"name": "c", "dependencies": ["a"], "sql": "SELECT ($1->''steps''->>''a'')::int + 100"},
  {"name": "d", "dependencies": ["b", "c"], "sql": "SELECT ($1->''steps''->>''b'')::int + ($1->''steps''->>''c'')::int"}
]}');
SELECT wf_start('diamond') AS r \gset
SELECT wf_wait(:r, '60 s');
SELECT output FROM wf.runs WHERE id = :r;
SELECT step, output FROM wf.steps WHERE run_id = :r ORDER BY ord;

-- "when": a false predicate skips the step, the run goes on.
SELECT wf_define('when', '{"steps": [
  {"name": "big", "when": "$.input.n > 10", "sql": "SELECT ''big''"},
  {"name": "small", "when": "$.input.n <= 10", "sql": "SELECT ''small''"}
]}');
SELECT wf_start('when', '{"n": 3}') AS r \gset
SELECT wf_wait(:r, '60 s');
SELECT step, status, attempt, output FROM wf.steps WHERE run_id = :r ORDER BY ord;

-- A permanent error fails the step and the run; later steps never run.
SELECT wf_define('broken', '{"steps": [
  {"name": "ok", "sql": "SELECT 1"},
  {"name": "bad", "sql": "SELECT 1 / (SELECT 0)"},
  {"name": "never", "sql": "INSERT INTO effects VALUES (0, ''never'') RETURNING 1"}
]}');
SELECT wf_start('broken') AS r \gset
SELECT wf_wait(:r, '60 s');
SELECT status, error->>'step' AS step, error->>'message' AS message,
       error->>'sqlstate' AS sqlstate, error->>'class' AS class
  FROM wf.runs WHERE id = :r;
SELECT step, status, attempt FROM wf.steps WHERE run_id = :r ORDER BY ord;
SELECT count(*) FROM effects WHERE step = 'never';

-- on_error skip: the failed step is skipped with its error kept.
SELECT wf_define('skipper', '{"steps": [
  {"name": "bad", "on_error": "skip", "sql": "SELECT 1 / (SELECT 0)"},
  {"name": "after", "sql": "SELECT ''went on''"}
]}');
SELECT wf_start('skipper') AS r \gset
SELECT wf_wait(:r, '60 s');
SELECT step, status, error->>'message' AS error, output FROM wf.steps WHERE run_id = :r ORDER BY ord;

-- A business error: the step returns {"error": ...}.
SELECT wf_define('business', '{"steps": [
  {"name": "check", "sql": "SELECT jsonb_build_object(''error'', ''ticket has no priority'')"}
]}');
SELECT wf_start('business') AS r \gset
SELECT wf_wait(:r, '60 s');
SELECT error->>'message' AS message, error->>'class' AS class FROM wf.runs WHERE id = :r;

-- Idempotency keys return the first run.
SELECT wf_start('seq', '{"n": 1}', '{"idempotency_key": "ticket-42"}') AS k1 \gset
SELECT wf_start('seq', '{"n": 2}', '{"idempotency_key": "ticket-42"}') = :k1 AS same_run;

-- A start in a rolled-back transaction never exists.
BEGIN;
SELECT wf_start('seq', '{"n": 5}') AS rolled_back \gset
ROLLBACK;
SELECT count(*) FROM wf.runs WHERE id = :rolled_back;

-- Waiting in the starting transaction is refused, not a silent timeout.
BEGIN;
SELECT wf_start('seq', '{"n": 5}') AS same_xact \gset
SELECT wf_wait(:same_xact);
ROLLBACK;

-- A run for later stays pending until cancelled.
SELECT wf_start('seq', '{"n": 1}', '{"start_at": "2999-01-01 00:00:00+00"}') AS later \gset
SELECT wf_wait(:later, '0.1 s');
SELECT wf_cancel(:later, 'not needed');
SELECT wf_cancel(:later);
SELECT status, error FROM wf.runs WHERE id = :later;
SELECT step, status FROM wf.steps WHERE run_id = :later ORDER BY ord;

-- wf_retry resumes a failed run once the cause is fixed.
CREATE TABLE gate (divisor int);
INSERT INTO gate VALUES (0);
SELECT wf_define('gated', '{"steps": [
  {"name": "first", "sql": "INSERT INTO effects (run_id, step) VALUES (($1->''run''->>''id'')::bigint, ''first'') RETURNING 1"},
  {"name": "divide", "sql": "SELECT 10 / divisor FROM gate"}
]}');
SELECT wf_start('gated') AS g \gset
SELECT wf_wait(:g, '60 s');
-- Retrying without a fix fails again, at the same step.
SELECT wf_retry(:g);
SELECT wf_wait(:g, '60 s');
UPDATE gate SET divisor = 5;
SELECT wf_retry(:g);
SELECT wf_wait(:g, '60 s');
SELECT step, status, output FROM wf.steps WHERE run_id = :g ORDER BY ord;
SELECT count(*) AS first_effects FROM effects WHERE run_id = :g;
SELECT wf_retry(:g) AS retry_completed_run;

-- wf_rewind re-runs a step and what depends on it.
SELECT wf_start('seq', '{"n": 4}') AS w \gset
SELECT wf_wait(:w, '60 s');
SELECT wf_rewind(:w, 'label');
SELECT wf_wait(:w, '60 s');
SELECT count(*) AS record_effects FROM effects WHERE run_id = :w;
SELECT step, status FROM wf.history WHERE run_id = :w AND step IS NOT NULL ORDER BY id;

-- Bad input: clear errors, nothing written.
SELECT count(*) AS runs_before FROM wf.runs \gset
SELECT wf_start('no-such-workflow');
SELECT wf_start(NULL);
SELECT wf_start('seq', '{}', '{"priority": "high"}');
SELECT wf_start('seq', '{}', '{"version": 99}');
SELECT wf_start('seq', '{}', '{"colour": "red"}');
SELECT wf_start('seq', '{}', '[1]');
SELECT wf_start('seq', jsonb_build_object('blob', repeat('x', 2000000)));
SELECT wf_wait(-1);
SELECT wf_wait(NULL);
SELECT wf_wait(:w, '-1 s');
SELECT wf_cancel(123456789);
SELECT wf_rewind(:w, 'no-such-step');
SELECT wf_export('no-such-workflow');
SELECT wf_export('seq', 42);
SELECT count(*) = :runs_before AS nothing_written FROM wf.runs;

-- Durable waits: a signal sent before the wait is kept, one sent after wakes it.
CREATE FUNCTION wait_until_step(run bigint, step_name text, wanted text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1..1200 LOOP
		EXIT WHEN (SELECT status FROM wf.steps WHERE run_id = run AND step = step_name) = wanted;
		PERFORM pg_sleep(0.05);
	END LOOP;
END
$$;
CREATE FUNCTION wait_until_waiting(run bigint, step_name text) RETURNS void
	LANGUAGE sql AS $$ SELECT wait_until_step(run, step_name, 'waiting') $$;
SELECT wf_define('approval', '{"steps": [
  {"name": "approve", "wait_for": {"signal": "decision", "timeout": "1 hour"}},
  {"name": "act", "sql": "SELECT $1->''steps''->''approve''->>''decision''"}
]}');
SELECT wf_start('approval') AS early \gset
SELECT wf_signal(:early, 'decision', '{"decision": "yes"}');
SELECT wf_wait(:early, '60 s');
SELECT wf_start('approval') AS late \gset
SELECT wait_until_waiting(:late, 'approve');
SELECT status FROM wf.runs WHERE id = :late;
SELECT wf_signal(:late, 'decision', '{"decision": "no"}');
SELECT wf_wait(:late, '60 s');
SELECT run_id, step, status, output FROM wf.steps WHERE run_id IN (:early, :late) ORDER BY run_id, ord;
SELECT wf_signal(:late, 'decision');
SELECT wf_signal(:late, '');

-- Events: subscriptions start runs; waiting steps wake on their key.
SELECT wf_define('on-order', '{"steps": [{"name": "seen", "sql": "SELECT $1->''input''->>''order''"}]}');
SELECT wf_on_event('order.paid', 'on-order', '$.amount > 100');
SELECT wf_define('ship', '{"steps": [
  {"name": "paid", "wait_for": {"event": "order.paid", "key": "{{$.input.order}}"}},
  {"name": "label", "sql": "SELECT ''ship '' || ($1->''steps''->''paid''->>''amount'')"}
]}');
SELECT wf_start('ship', '{"order": "A-1"}') AS ship \gset
SELECT wait_until_waiting(:ship, 'paid');
BEGIN;
SELECT wf_emit('order.paid', '{"order": "A-1", "amount": 500}', 'A-1');
ROLLBACK;
SELECT count(*) AS started_by_rolled_back_emit FROM wf.runs WHERE workflow = 'on-order';
SELECT wf_emit('order.paid', '{"order": "B-2", "amount": 5}', 'B-2') AS nothing;
SELECT wf_emit('order.paid', '{"order": "A-1", "amount": 500}', 'A-1') AS started_and_woken;
SELECT wf_wait(:ship, '60 s');
SELECT output FROM wf.runs WHERE id = :ship;
SELECT wf_on_event('order.paid', 'no-such-workflow');
SELECT wf_emit(NULL);

-- A workflow timeout fails the run; a wait's timeout fails its step.
SELECT wf_define('too-slow', '{"timeout": "200ms", "steps": [{"name": "nap", "sleep": "1 hour"}]}');
SELECT wf_define('no-answer', '{"steps": [{"name": "ask", "wait_for": {"signal": "never", "timeout": "200ms"}}]}');
SELECT wf_start('too-slow') AS ts, wf_start('no-answer') AS na \gset
SELECT wf_wait(:ts, '60 s'), wf_wait(:na, '60 s');
SELECT error->>'message' AS run_error FROM wf.runs WHERE id = :ts;
SELECT step, status, error->>'message' AS message FROM wf.steps WHERE run_id IN (:ts, :na) ORDER BY run_id;

-- Human approval: assignee, decision by wf_signal; escalation, then on_timeout.
SELECT wf_define('ticket-approval', '{"steps": [
  {"name": "analyse", "sql": "SELECT jsonb_build_object(''risk'', ''high'')"},
  {"name": "manager-approval", "human": {"assignee": "manager", "title": "Approve the change",
     "timeout": "300ms", "escalation": {"timeout": "300ms", "escalate_to": "director"},
     "on_timeout": {"decision": "rejected", "reason": "nobody answered"}}},
  {"name": "implement", "when": "$.steps.\"manager-approval\".decision == \"approved\"",
   "sql": "SELECT ''implemented''"},
  {"name": "notify-rejection", "when": "$.steps.\"manager-approval\".decision != \"approved\"",
   "sql": "SELECT ''told the requester''"}
]}');
SELECT wf_start('ticket-approval') AS yes, wf_start('ticket-approval') AS silence \gset
SELECT wait_until_waiting(:yes, 'manager-approval');
SELECT step, assignee, title, escalated FROM wf.human_tasks WHERE run_id = :yes;
SELECT wf_signal(:yes, 'manager-approval', '{"decision": "approved"}');
SELECT wf_wait(:yes, '60 s'), wf_wait(:silence, '60 s');
SELECT run_id = :yes AS answered, step, status, output FROM wf.steps
 WHERE run_id IN (:yes, :silence) ORDER BY run_id, ord;
SELECT step, kind, message FROM wf.alerts WHERE run_id = :silence;

-- on_error escalate parks the step for an operator's wf_resolve.
CREATE TABLE switch (on_ boolean);
INSERT INTO switch VALUES (false);
SELECT wf_define('needs-operator', '{"steps": [
  {"name": "check", "on_error": "escalate", "sql": "SELECT CASE WHEN on_ THEN 1 ELSE 1 / (SELECT 0) END FROM switch"},
  {"name": "after", "sql": "SELECT 2"}
]}');
SELECT wf_start('needs-operator') AS r1, wf_start('needs-operator') AS r2,
       wf_start('needs-operator') AS r3 \gset
SELECT wait_until_step(:r1, 'check', 'escalated'), wait_until_step(:r2, 'check', 'escalated'),
       wait_until_step(:r3, 'check', 'escalated');
SELECT id, status FROM wf.runs WHERE id IN (:r1, :r2, :r3) ORDER BY id;
SELECT count(*) AS open_escalations FROM wf.alerts
 WHERE run_id IN (:r1, :r2, :r3) AND kind = 'escalation' AND resolved_at IS NULL;
UPDATE switch SET on_ = true;
SELECT wf_resolve(:r1, 'check', 'retry') AS retried,
       wf_resolve(:r2, 'check', 'skip', '{"by": "operator"}') AS skipped,
       wf_resolve(:r3, 'check', 'fail') AS failed;
SELECT wf_wait(:r1, '60 s'), wf_wait(:r2, '60 s'), wf_wait(:r3, '60 s');
SELECT run_id, step, status, output FROM wf.steps WHERE run_id IN (:r1, :r2, :r3) ORDER BY run_id, ord;
SELECT wf_resolve(:r1, 'check', 'retry') AS not_escalated_any_more;
SELECT wf_resolve(:r1, 'check', 'shrug');
SELECT wf_resolve(:r1, 'nope', 'retry');

-- Sagas: step 4 of 5 fails, the compensate actions of 3, 2, 1 run in that order.
CREATE TABLE ledger (n serial, entry text);
SELECT wf_define('saga', '{"steps": [
  {"name": "s1", "sql": "INSERT INTO ledger (entry) VALUES (''do s1'') RETURNING 1",
   "compensate": {"sql": "INSERT INTO ledger (entry) VALUES (''undo s1'') RETURNING 1"}},
  {"name": "s2", "sql": "INSERT INTO ledger (entry) VALUES (''do s2'') RETURNING 2",
   "compensate": {"sql": "INSERT INTO ledger (entry) VALUES (''undo s2'') RETURNING 2"}},
  {"name": "s3", "sql": "INSERT INTO ledger (entry) VALUES (''do s3'') RETURNING 3",
   "compensate": {"sql": "INSERT INTO ledger (entry) VALUES (''undo s3'') RETURNING 3"}},
  {"name": "s4", "on_error": "compensate", "sql": "SELECT 1 / (SELECT 0)"},
  {"name": "s5", "sql": "INSERT INTO ledger (entry) VALUES (''do s5'') RETURNING 5"}
]}');
SELECT wf_start('saga') AS saga \gset
SELECT wf_wait(:saga, '60 s');
SELECT error->>'step' AS failed_step, error->'compensated' AS compensated FROM wf.runs WHERE id = :saga;
SELECT step, status FROM wf.steps WHERE run_id = :saga ORDER BY ord;
SELECT entry FROM ledger ORDER BY n;
SELECT wf_retry(:saga);
-- Cancelling compensates what was done.
SELECT wf_define('saga-cancel', '{"steps": [
  {"name": "book", "sql": "INSERT INTO ledger (entry) VALUES (''book'') RETURNING 1",
   "compensate": {"sql": "INSERT INTO ledger (entry) VALUES (''unbook'') RETURNING 1"}},
  {"name": "confirm", "wait_for": {"signal": "confirmed"}}
]}');
SELECT wf_start('saga-cancel') AS sc \gset
SELECT wait_until_waiting(:sc, 'confirm');
SELECT wf_cancel(:sc, 'customer left');
SELECT wf_wait(:sc, '60 s');
SELECT error FROM wf.runs WHERE id = :sc;
SELECT entry FROM ledger WHERE entry LIKE '%book' ORDER BY n;

-- Nesting, five levels: parallel > map > if > parallel > sql, with a child run.
SELECT wf_define('child-run', '{"steps": [{"name": "times100", "sql": "SELECT ($1->''input''->>''n'')::int * 100"}]}');
SELECT wf_define('five-levels', '{"steps": [
  {"name": "items", "sql": "SELECT jsonb_build_array(1, 2, 3)"},
  {"name": "fan", "parallel": [
    {"name": "mapped", "steps": [
      {"name": "each", "map": {"over": "$.steps.items", "concurrency": 2, "step":
        {"name": "pick", "if": "$.item > 1",
         "then": [{"name": "both", "parallel": [
            {"name": "a", "steps": [{"name": "ten", "sql": "SELECT ($1->>''item'')::int * 10"}]},
            {"name": "b", "steps": [{"name": "idx", "sql": "SELECT ($1->>''index'')::int"}]}]}],
         "else": [{"name": "small", "sql": "SELECT ''small''"}]}}}]},
    {"name": "child", "steps": [
      {"name": "sub", "workflow": "child-run", "input": {"n": "{{$.steps.items[2]}}"}}]}]},
  {"name": "summary", "sql": "SELECT $1->''steps''->''fan''"}
]}');
SELECT wf_start('five-levels') AS nest \gset
SELECT wf_wait(:nest, '60 s');
SELECT output FROM wf.runs WHERE id = :nest;
SELECT step, kind, status FROM wf.steps WHERE run_id = :nest ORDER BY step;
SELECT workflow, parent_step, status, output FROM wf.runs WHERE parent_run = :nest;

-- A map over something that is not an array fails the step.
SELECT wf_define('bad-map', '{"steps": [{"name": "m", "map": {"over": "$.input.x",
  "step": {"name": "one", "sql": "SELECT 1"}}}]}');
SELECT wf_start('bad-map', '{"x": 5}') AS bm \gset
SELECT wf_wait(:bm, '60 s');
SELECT error->>'message' AS message FROM wf.runs WHERE id = :bm;
-- An empty map completes with [].
SELECT wf_start('bad-map', '{"x": []}') AS em \gset
SELECT wf_wait(:em, '60 s'), (SELECT 1);
SELECT output FROM wf.runs WHERE id = :em;

-- A child's failure fails its step; cancelling the parent cancels the child.
SELECT wf_define('child-fails', '{"steps": [{"name": "boom", "sql": "SELECT 1 / (SELECT 0)"}]}');
SELECT wf_define('parent-of-failure', '{"steps": [{"name": "call", "workflow": "child-fails"}]}');
SELECT wf_start('parent-of-failure') AS pf \gset
SELECT wf_wait(:pf, '60 s');
SELECT error->>'step' AS step, error->>'message' AS message FROM wf.runs WHERE id = :pf;
SELECT wf_define('child-waits', '{"steps": [{"name": "hold", "wait_for": {"signal": "never"}}]}');
SELECT wf_define('parent-of-waiter', '{"steps": [{"name": "call", "workflow": "child-waits"}]}');
SELECT wf_start('parent-of-waiter') AS pw \gset
SELECT wait_until_waiting(:pw, 'call');
SELECT id AS cw FROM wf.runs WHERE parent_run = :pw \gset
SELECT wait_until_waiting(:cw, 'hold');
SELECT wf_cancel(:pw);
SELECT wf_wait(:pw, '60 s'), wf_wait(:cw, '60 s');

-- Schedules: cron or "every N unit", in the caller's time zone.
SET TimeZone = 'Europe/Paris';
SELECT wf_schedule('nightly-sync', 'seq', '30 12 * * *', '{"n": 1}');
SELECT wf_schedule('weekday-mornings', 'seq', '*/15 9-17 * * MON-FRI', '{"n": 2}');
SELECT wf_schedule('often', 'seq', 'every 10 minutes', '{"n": 3}');
SELECT name, workflow, schedule, timezone, input, next_at > now() AS in_future
  FROM wf.schedules ORDER BY name;
SELECT extract(hour FROM next_at AT TIME ZONE 'Europe/Paris') AS local_hour,
       extract(minute FROM next_at AT TIME ZONE 'Europe/Paris') AS local_minute
  FROM wf.schedules WHERE name = 'nightly-sync';
RESET TimeZone;
SELECT wf_schedule('broken', 'seq', '61 * * * *');
SELECT wf_schedule('broken', 'seq', 'every 0 minutes');
SELECT wf_schedule('broken', 'seq', '0 0 30 2 *');
SELECT wf_schedule('broken', 'no-such-workflow', '* * * * *');
SELECT wf_unschedule('nightly-sync'), wf_unschedule('weekday-mornings'),
       wf_unschedule('often'), wf_unschedule('never-was');
SELECT count(*) AS schedules_left FROM wf.schedules;
