--
-- Validation of workflow definitions: wf_validate() lists every problem,
-- wf._check_definition() raises the first one (what wf_define does).
--

-- valid definitions: no rows
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
SELECT * FROM wf_validate('{
  "description": "all supported keys",
  "retry": {"max_attempts": 3, "backoff": "exponential",
            "initial_interval": "1s", "max_interval": "5m", "jitter": 0.5},
  "on_error": "fail",
  "steps": [
    {"name": "validate-ticket",
     "sql": "SELECT jsonb_build_object(''ok'', ($1->''input''->>''priority'') IS NOT NULL)"},
    {"name": "load_1", "sql": "SELECT 1; SELECT 2", "dependencies": [],
     "when": "$.steps.\"validate-ticket\".ok == true", "timeout": "3 minutes",
     "retry": {"max_attempts": 1, "jitter": true}, "on_error": {"strategy": "skip"}},
    {"name": "load.2", "sql": "SELECT 2", "timeout": "00:00:05", "on_error": "retry"},
    {"name": "join", "sql": "SELECT 3", "dependencies": ["load_1", "load.2"]}
  ]}');

-- the document itself
SELECT * FROM wf_validate(NULL);
SELECT * FROM wf_validate('[]');
SELECT * FROM wf_validate('"steps"');
SELECT * FROM wf_validate('{}');
SELECT * FROM wf_validate('{"steps": [], "stpes": 1, "description": 3}');
SELECT * FROM wf_validate('{"steps": {}, "timeout": "1 hour"}');

-- step names
SELECT * FROM wf_validate('{"steps": [1, {"sql": "SELECT 1"}, {"name": 3, "sql": "SELECT 1"},
  {"name": "a b", "sql": "SELECT 1"}, {"name": "", "sql": "SELECT 1"},
  {"name": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "sql": "SELECT 1"}]}');
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1"}, {"name": "a", "sql": "SELECT 2"}]}');

-- actions: none, several, unknown keys, companions without their action
SELECT * FROM wf_validate('{"steps": [{"name": "x"}]}');
SELECT * FROM wf_validate('{"steps": [{"name": "x", "sql": "SELECT 1", "http": {}, "agent": "p"}]}');
SELECT * FROM wf_validate('{"steps": [{"name": "fetch", "sql": "SELECT 1", "timeot": "1s"}]}');
SELECT * FROM wf_validate('{"steps": [{"name": "x", "sql": "SELECT 1", "payload": {}, "then": []}]}');

-- actions and policies not supported yet
SELECT * FROM wf_validate('{"steps": [
  {"name": "g", "agent": "pool"},
  {"name": "c", "workflow": "child"},
  {"name": "i", "if": "$.a", "then": [{"name": "i1", "sql": "SELECT 1"}]},
  {"name": "p", "parallel": [{"name": "b", "steps": [{"name": "p1", "sql": "SELECT 1"}]}]},
  {"name": "m", "map": {"over": "$.input[*]", "step": {"name": "m1", "sql": "SELECT 1"}}}]}');
SELECT * FROM wf_validate('{"steps": [{"name": "x", "sql": "SELECT 1",
  "compensate": {"sql": "SELECT 2"}, "circuit_breaker": {"failures": 3, "reset_after": "1m"},
  "on_error": "compensate"}, {"name": "y", "sql": "SELECT 1", "compensate": {"name": "z"}},
  {"name": "z", "sql": "SELECT 1", "compensate": {"sql": "SELEC 2", "http": {"url": "http://h/"}}}]}');

-- containers: if, parallel, map, workflow; names unique across levels
SELECT * FROM wf_validate('{"steps": [
  {"name": "i", "if": "$.input.n > 1", "then": [{"name": "i1", "sql": "SELECT 1"}],
   "else": [{"name": "i2", "sql": "SELECT 2"}]},
  {"name": "p", "parallel": [{"name": "x", "steps": [{"name": "p1", "sql": "SELECT 1"}]},
                             {"name": "y", "steps": [{"name": "p2", "sql": "SELECT 2"}]}]},
  {"name": "m", "map": {"over": "$.input.items", "concurrency": 4,
                        "step": {"name": "m1", "sql": "SELECT $1->''item''"}}},
  {"name": "w", "workflow": "child", "input": {"n": "{{$.input.n}}"}}]}');
SELECT * FROM wf_validate('{"steps": [
  {"name": "i", "if": "$.input.n >", "then": []},
  {"name": "p", "parallel": [{"name": "x", "steps": [{"name": "i", "sql": "SELECT 1"}]},
                             {"name": "x", "steps": []}]},
  {"name": "m", "map": {"over": 3, "concurrency": 0}},
  {"name": "w", "workflow": ""}]}');

-- durable waits: sleep, until, wait_for
SELECT * FROM wf_validate('{"timeout": "1 day", "steps": [
  {"name": "s", "sleep": "5 minutes"}, {"name": "t", "until": "{{$.input.at}}"},
  {"name": "u", "sleep": {"until": "{{$.input.at}}"}},
  {"name": "w", "wait_for": {"signal": "go", "timeout": "1 hour"}},
  {"name": "e", "wait_for": {"event": "payment", "key": "{{$.input.order}}"}}]}');
SELECT * FROM wf_validate('{"timeout": "soon", "steps": [
  {"name": "s", "sleep": "-5 minutes"}, {"name": "t", "sleep": {"at": "x"}},
  {"name": "w", "wait_for": {"signal": "go", "event": "e"}},
  {"name": "e", "wait_for": {"signal": "go", "key": "k"}},
  {"name": "f", "wait_for": {}}]}');

-- http: the request, templates, the circuit breaker
SELECT * FROM wf_validate('{"steps": [
  {"name": "ok", "http": {"method": "POST", "url": "https://api.example.com/t/{{$.input.id}}",
   "headers": {"Authorization": "Bearer {{secret.token}}"}, "body": {"name": "{{$.input.name}}"},
   "timeout": "10s", "ok_status": [200, 201]},
   "circuit_breaker": {"failures": 3, "reset_after": "1 minute"}},
  {"name": "range", "http": {"url": "http://h/x", "ok_status": "200-299"}}]}');
SELECT * FROM wf_validate('{"steps": [
  {"name": "a", "http": {}},
  {"name": "b", "http": {"url": "ftp://example.com/f", "method": "FETCH"}},
  {"name": "c", "http": {"url": "http://h/{{$.input.id", "headers": {"X": 1}}},
  {"name": "d", "http": {"url": "http://h/{{secret.}}", "ok_status": 700, "verbose": true}},
  {"name": "e", "http": {"url": "http://h/"}, "circuit_breaker": {"failures": 0}}]}');

-- human, agent, limits: each key of their objects, and the keys only an action allows
SELECT * FROM wf_validate('{"steps": [
  {"name": "h", "human": {"title": 3, "escalation": {"timeout": "1h", "to": "x"}, "due": 1}},
  {"name": "a", "agent": "bad pool!", "requires": ["x", ""], "payload": {"t": "{{$.input"}},
  {"name": "r", "agent": "p", "rate_limit": {"limit": 20000, "per": "1 minute", "key": ""}},
  {"name": "c", "sql": "SELECT 1", "concurrency": {"limit": 0, "max": 1}, "input": {}},
  {"name": "m", "map": {"over": "$.input.x", "step": {"name": "m1", "sql": "SELECT 1"}, "each": 1}}]}');

-- sql
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": ""}, {"name": "b", "sql": "SELEC 1"},
  {"name": "c", "sql": "SELECT 1 FORM t"}, {"name": "d", "sql": " -- nothing"},
  {"name": "e", "sql": "BEGIN; SELECT 1; COMMIT"}, {"name": "f", "sql": "SAVEPOINT s"},
  {"name": "g", "sql": 42}]}');

-- intervals
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1", "timeout": "abc"},
  {"name": "b", "sql": "SELECT 1", "timeout": "-1s"}, {"name": "c", "sql": "SELECT 1", "timeout": "0"},
  {"name": "d", "sql": "SELECT 1", "timeout": 5}, {"name": "e", "sql": "SELECT 1", "timeout": "1s"}]}');

-- JSON path predicates (a step name with "-" or "." must be quoted in a path)
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1", "when": "$.a >"},
  {"name": "b", "sql": "SELECT 1", "when": "$$"}, {"name": "c", "sql": "SELECT 1", "when": true},
  {"name": "d", "sql": "SELECT 1", "when": "$.steps.my-step.ok"},
  {"name": "e", "sql": "SELECT 1", "when": "$.steps.\"my-step\".ok"}]}');

-- retry
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1", "retry": {"max_attempts": 0,
  "backoff": "quadratic", "initial_interval": "5m", "max_interval": "1s", "jitter": 2, "tries": 1}}]}');
SELECT * FROM wf_validate('{"retry": {"max_attempts": 1.5, "jitter": "yes"}, "steps": [
  {"name": "a", "sql": "SELECT 1", "retry": {"max_attempts": 1001, "initial_interval": "x"}},
  {"name": "b", "sql": "SELECT 1", "retry": 3}]}');

-- on_error
SELECT * FROM wf_validate('{"on_error": "ignore", "steps": [
  {"name": "a", "sql": "SELECT 1", "on_error": {}},
  {"name": "b", "sql": "SELECT 1", "on_error": {"strategy": "skip", "output": 1}},
  {"name": "c", "sql": "SELECT 1", "on_error": 1}]}');

-- dependencies
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1"},
  {"name": "b", "sql": "SELECT 1", "dependencies": ["zz", "a", "a", "b", 3]},
  {"name": "c", "sql": "SELECT 1", "dependencies": "a"}]}');

-- dependency cycles, with the implicit dependency on the previous step
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1", "dependencies": ["b"]},
  {"name": "b", "sql": "SELECT 1"}]}');
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1", "dependencies": ["c"]},
  {"name": "b", "sql": "SELECT 1", "dependencies": ["a"]},
  {"name": "c", "sql": "SELECT 1", "dependencies": ["b"]},
  {"name": "d", "sql": "SELECT 1", "dependencies": ["e"]},
  {"name": "e", "sql": "SELECT 1", "dependencies": ["d"]}]}');
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1", "dependencies": []},
  {"name": "b", "sql": "SELECT 1", "dependencies": []},
  {"name": "c", "sql": "SELECT 1", "dependencies": ["b", "a"]}]}');

-- limits: 1000 steps at most
SELECT count(*) FROM wf_validate((SELECT jsonb_build_object('steps', jsonb_agg(
  jsonb_build_object('name', 's' || i, 'sql', 'SELECT 1'))) FROM generate_series(1, 1000) i));
SELECT * FROM wf_validate((SELECT jsonb_build_object('steps', jsonb_agg(
  jsonb_build_object('name', 's' || i, 'sql', 'SELECT 1'))) FROM generate_series(1, 1001) i));

-- the raising path
\set VERBOSITY default
SELECT wf._check_definition('{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
SELECT wf._check_definition(NULL);
SELECT wf._check_definition('{"steps": [{"name": "a", "sql": "SELEC 1"}]}');
SELECT wf._check_definition('{"stpes": [], "steps": [{"name": "a", "sql": "SELECT 1", "timeot": "1s"},
  {"name": "b", "sql": "SELECT 1", "dependencies": ["zz"]}, {"name": "c", "http": {}}]}');

-- the SQLSTATE of each kind of problem
\set VERBOSITY sqlstate
SELECT wf._check_definition(NULL);
SELECT wf._check_definition('{"steps": [{"name": "a", "sql": "SELECT 1", "timeout": "x"}]}');
SELECT wf._check_definition('{"steps": [{"name": "a", "sql": "SELEC 1"}]}');
SELECT wf._check_definition('{"steps": [{"name": "a", "agent": "pool"}]}');
SELECT wf._check_definition('{"steps": [{"name": "a", "sql": "SELECT 1"}, {"name": "a", "sql": "SELECT 1"}]}');
SELECT wf._check_definition('{"steps": [{"name": "a", "sql": "SELECT 1", "dependencies": ["b"]},
  {"name": "b", "sql": "SELECT 1"}]}');
SELECT wf._check_definition('{"steps": [{"name": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "sql": "SELECT 1"}]}');
\set VERBOSITY default

-- a rejected definition is a normal error: the transaction can go on
BEGIN;
SAVEPOINT s;
SELECT wf._check_definition('{"steps": [{"name": "a", "sql": "SELEC 1", "when": "$$"}]}');
ROLLBACK TO SAVEPOINT s;
SELECT * FROM wf_validate('{"steps": [{"name": "a", "sql": "SELECT 1", "when": "$$"}]}');
COMMIT;

-- step concurrency keys: every problem of a step's "concurrency" at once
SELECT * FROM wf_validate('{"steps": [
  {"name": "a", "sql": "SELECT 1", "concurrency": {"key": "t-{{$.input.id}}", "limit": 2}},
  {"name": "b", "sql": "SELECT 1", "concurrency": {"limit": 1}},
  {"name": "c", "sql": "SELECT 1", "concurrency": {"key": "", "limit": 0, "max": 1}},
  {"name": "d", "sql": "SELECT 1", "concurrency": {"key": "{{$.input.x", "limit": 1.5}},
  {"name": "e", "sql": "SELECT 1", "concurrency": 3},
  {"name": "f", "sql": "SELECT 1", "concurrency": {"key": 7}}]}');

-- wf_define: the same checks, and nothing is stored when they fail
SELECT count(*) AS defs_before FROM wf.workflows \gset
SELECT wf_define('bad', '{"steps": [{"name": "a", "sql": "SELEC 1"}]}');
SELECT wf_define('bad name', '{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
SELECT wf_define(NULL, '{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
SELECT wf_define('bad', NULL);
SELECT wf_define('huge', jsonb_build_object('description', repeat('x', 2000000),
  'steps', '[{"name": "a", "sql": "SELECT 1"}]'::jsonb));
SELECT count(*) = :defs_before AS nothing_stored FROM wf.workflows;
-- versions: the same document keeps its version, a new one adds one
SELECT wf_define('versioned', '{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
SELECT wf_define('versioned', '{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
SELECT wf_define('versioned', '{"steps": [{"name": "a", "sql": "SELECT 2"}]}');
SELECT wf_export('versioned', 1), wf_export('versioned');
SELECT name, version, created_by FROM wf.workflows WHERE name = 'versioned' ORDER BY version;
