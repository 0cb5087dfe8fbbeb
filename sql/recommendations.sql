--
-- wf_patch (RFC 6902 JSON Patch, RFC 6901 JSON Pointer) and what
-- wf_recommendations reads of a definition: the steps each step reads and
-- where each step is.  (test/t/061_recommendations.pl has the runs.)
--

-- An ERROR's SQLSTATE and message.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Every operation.
SELECT wf_patch('{"a": 1}', '[{"op": "add", "path": "/b", "value": [1, 2]}]');
SELECT wf_patch('{"a": [1, 3]}', '[{"op": "add", "path": "/a/1", "value": 2}]');
SELECT wf_patch('{"a": [1, 2]}', '[{"op": "add", "path": "/a/2", "value": 3}, {"op": "add", "path": "/a/-", "value": 4}]');
SELECT wf_patch('{"a": []}', '[{"op": "add", "path": "/a/-", "value": 1}]');
SELECT wf_patch('{"a": 1}', '[{"op": "add", "path": "/a", "value": 2}]');
SELECT wf_patch('{"a": 1, "b": 2}', '[{"op": "remove", "path": "/a"}]');
SELECT wf_patch('{"a": [1, 2, 3]}', '[{"op": "remove", "path": "/a/0"}]');
SELECT wf_patch('{"a": {"b": 1}}', '[{"op": "replace", "path": "/a/b", "value": null}]');
SELECT wf_patch('{"a": {"b": 1}, "c": {}}', '[{"op": "move", "from": "/a/b", "path": "/c/d"}]');
SELECT wf_patch('{"a": [1]}', '[{"op": "copy", "from": "/a/0", "path": "/a/-"}]');
SELECT wf_patch('{"a": {"b": 1}}', '[{"op": "test", "path": "/a", "value": {"b": 1}}]');
SELECT wf_patch('{"a/b": {"m~n": 1}}', '[{"op": "replace", "path": "/a~1b/m~0n", "value": 2}]');
SELECT wf_patch('{"": 1}', '[{"op": "replace", "path": "/", "value": 2}]');
SELECT wf_patch('{"a": 1}', '[{"op": "replace", "path": "", "value": [true]}]');
SELECT wf_patch('{"a": 1}', '[]');

-- Bad patches: an ERROR naming the operation, and nothing applied.
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '{"op": "add", "path": "/b", "value": 2}')$$);
SELECT pg_temp.err($$SELECT wf_patch(NULL, '[]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "add", "path": "/b", "value": 2}, "remove"]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "add", "path": "b", "value": 2}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "add", "path": "/b~2", "value": 2}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "add", "path": "/b"}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "frob", "path": "/a"}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "add", "path": "/x/y", "value": 1}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "add", "path": "/a/y", "value": 1}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": [1]}', '[{"op": "add", "path": "/a/2", "value": 1}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": [1]}', '[{"op": "add", "path": "/a/x", "value": 1}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": [1, 2]}', '[{"op": "replace", "path": "/a/01", "value": 1}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": [1, 2]}', '[{"op": "remove", "path": "/a/-1"}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "remove", "path": "/b"}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "remove", "path": ""}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "replace", "path": "/b", "value": 1}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "test", "path": "/a", "value": 2}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "move", "path": "/b"}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": 1}', '[{"op": "copy", "from": "/c", "path": "/b"}]')$$);
SELECT pg_temp.err($$SELECT wf_patch('{"a": {"b": 1}}', '[{"op": "move", "from": "/a", "path": "/a/c"}]')$$);

-- The steps a step reads: SQL through $1, templates, JSON paths.
SELECT * FROM wf._spec_reads($j${"name": "x",
	"sql": "SELECT $1->'steps'->'a'->>'id', $1 #>> '{steps,b,body}', $1->'input', $1->>'run', $10"}$j$);
SELECT * FROM wf._spec_reads('{"name": "x", "sql": "SELECT f($1)"}');
SELECT * FROM wf._spec_reads($j${"name": "x", "sql": "SELECT $1->'steps'"}$j$);
SELECT * FROM wf._spec_reads($j${"name": "x", "sql": "SELECT $1 #> '{steps}'"}$j$);
SELECT * FROM wf._spec_reads($j${"name": "x", "when": "$.steps.d.ok == true",
	"http": {"url": "http://h/{{$.steps.a.body.id}}/{{ $.input.x }}", "body": {"k": "{{$.steps.\"b-c\".v}}"}}}$j$);
SELECT * FROM wf._spec_reads('{"name": "x", "http": {"url": "http://h/{{$}}"}}');
SELECT * FROM wf._spec_reads('{"name": "x", "http": {"url": "http://h/", "body": {"price": "$5"}}}');
SELECT * FROM wf._spec_reads('{"name": "x", "http": {"url": "http://h/", "body": {"sql": "$1"}}}');
SELECT * FROM wf._spec_reads('{"name": "x", "when": "$.steps.* > 1", "sql": "SELECT 1"}');
SELECT * FROM wf._spec_reads('{"name": "x", "when": "$.input.n > 1 && $.run.attempt == 1", "sql": "SELECT 1"}');
SELECT * FROM wf._spec_reads('{"name": "x", "sql": "SELECT 1", "compensate": {"sql": "SELECT $1"}}');
-- Reads written in ways that are not understood read everything: $01 is
-- $1, a name with spaces or escapes, a template whose path holds a "}".
SELECT * FROM wf._spec_reads($j${"name": "x", "sql": "SELECT $01->'steps'->'a'"}$j$);
SELECT * FROM wf._spec_reads($j${"name": "x", "sql": "SELECT $1 #> '{steps, a }'"}$j$);
SELECT * FROM wf._spec_reads($j${"name": "x", "when": "$.steps.\"\\u0061\".ok", "sql": "SELECT 1"}$j$);
SELECT * FROM wf._spec_reads($j${"name": "x", "http": {"url": "http://h/{{$.steps.a ? (@ like_regex \"a{1}\")}}"}}$j$);
SELECT * FROM wf._spec_reads($j${"name": "p", "parallel": [{"name": "b1",
	"steps": [{"name": "s1", "sql": "SELECT $1->'steps'->'a'"}]}]}$j$);
SELECT * FROM wf._spec_reads($j${"name": "m", "map": {"over": "$.steps.list.items",
	"step": {"name": "i", "sql": "SELECT $1->'item', $1->>'index'"}}}$j$);

-- Where each step is, and what it waits for.
SELECT name, label, ptr, list, pos, deps FROM wf._def_steps($j$[
	{"name": "a", "sql": "SELECT 1"},
	{"name": "b", "if": "$.steps.a == 1", "then": [{"name": "t1", "sql": "SELECT 1"}, {"name": "t2", "sql": "SELECT 2"}],
	 "else": [{"name": "e1", "sql": "SELECT 3"}]},
	{"name": "p", "dependencies": [], "parallel": [{"name": "l", "steps": [{"name": "l1", "sql": "SELECT 1"}]},
												   {"name": "r", "steps": [{"name": "r1", "sql": "SELECT 1"}]}]},
	{"name": "m", "map": {"over": "$.input.xs", "step": {"name": "i", "if": "true",
	 "then": [{"name": "deep", "sql": "SELECT 1"}]}}}]$j$, '/steps');

-- wf_patch is anybody's.
CREATE ROLE wf_rec_plain;
SET ROLE wf_rec_plain;
SELECT wf_patch('{"a": [1]}', '[{"op": "test", "path": "/a/0", "value": 1}, {"op": "add", "path": "/a/-", "value": 2}]');
RESET ROLE;
DROP ROLE wf_rec_plain;

-- wf_recommendations: its arguments.
SELECT wf_define('wf_rec_none', '{"steps": [{"name": "a", "sql": "SELECT 1"}]}');
SELECT * FROM wf_recommendations('wf_rec_none');
SELECT pg_temp.err($$SELECT * FROM wf_recommendations('wf_rec_nope')$$);
SELECT pg_temp.err($$SELECT * FROM wf_recommendations(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM wf_recommendations('wf_rec_none', '-1 day')$$);
SELECT pg_temp.err($$SELECT * FROM wf_recommendations('wf_rec_none', NULL)$$);
SELECT pg_temp.err($$SELECT * FROM wf_recommendations('wf_rec_none', '1001 years')$$);
SELECT count(*) FROM wf_recommendations('wf_rec_none', '0');

-- The caller's standard_conforming_strings changes nothing of the engine's
-- SQL (whose literals hold backslashes), in a session that has not run it.
\c
SET standard_conforming_strings = off;
SELECT wf_graph('wf_rec_none') LIKE '%flowchart TD%' AS graph;
SELECT count(*) FROM wf_recommendations('wf_rec_none');
RESET standard_conforming_strings;
