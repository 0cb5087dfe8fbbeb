# Copyright (c) pg_workflow authors

# The run context a step is given (src/context.c assembles it from the
# stored values' binary form) is exactly the document the specification
# describes: {"input", "steps": {name: output of each named step done},
# "run": {"id", "workflow", "version", "attempt"}}, and in a map item also
# "item" and "index".  Checked against the same document built with
# jsonb_build_object() and jsonb_object_agg(), with values of every jsonb
# type, more than 32 named steps (jsonb stores an offset every 32 entries),
# out-of-line (toasted, compressed) outputs and inputs, and map items of
# every type; lookups, containment and jsonpath must work on it, not only
# its text.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('context', workers => 2);

# 40 named steps of every kind of value, one skipped, then one returning
# its context.
my @values = (
	q{SELECT '1'::jsonb},
	q{SELECT '-2.5e-3'::jsonb},
	q{SELECT '123456789012345678901234567890.5'::jsonb},
	q{SELECT '""'::jsonb},
	q{SELECT to_jsonb('été ☃ "quoted" \\ back'::text)},
	q{SELECT 'true'::jsonb},
	q{SELECT 'false'::jsonb},
	q{SELECT 'null'::jsonb},
	q{SELECT NULL::jsonb},
	q{SELECT '{}'::jsonb},
	q{SELECT '[]'::jsonb},
	q{SELECT '{"a": {"b": [1, "x", null, {"c": 2.25}]}, "": 0}'::jsonb},
	q{SELECT jsonb_agg(g) FROM generate_series(1, 5000) g},
	q{SELECT to_jsonb(repeat('abc', 30000))},
	q{SELECT jsonb_object_agg('k' || g, g * 1.5) FROM generate_series(1, 100) g},
);
my @steps;
for my $i (1 .. 40)
{
	my $name = sprintf('s%02d', $i);
	my $sql = $values[ $i % scalar(@values) ];
	push @steps, { name => $name, sql => $sql };
}
$steps[6]{when} = '$.input.never == true';
push @steps, { name => 'ctx', sql => 'SELECT $1' };
wf_define($node, 'ctx-wide', { steps => \@steps });

my $input = q{jsonb_build_object('big', (SELECT jsonb_agg(g::text) FROM generate_series(1, 20000) g), 'n', 7)};
my $run = $node->safe_psql('postgres', "SELECT wf_start('ctx-wide', $input)");
is(wf_wait($node, $run), 'completed', 'the run with 40 named steps completes');
is($node->safe_psql('postgres', "SELECT status FROM wf.steps WHERE run_id = $run AND step = 's07'"),
	'skipped', 'one of them was skipped');

my $expected = qq{
	SELECT jsonb_build_object(
		'input', r.input,
		'steps', (SELECT jsonb_object_agg(s.label, s.output) FROM wf.step s
				   WHERE s.run_id = r.id AND s.label IS NOT NULL AND s.label <> 'ctx'
					 AND s.status IN ('completed', 'skipped')),
		'run', jsonb_build_object('id', r.id, 'workflow', r.workflow,
								  'version', r.version, 'attempt', 1))
	  FROM wf.run r WHERE r.id = $run};
my $got = "(SELECT output FROM wf.step WHERE run_id = $run AND step = 'ctx')";

is($node->safe_psql('postgres', "SELECT ($expected) = $got"), 't',
	'the context equals the one built with jsonb_build_object');
is($node->safe_psql('postgres', "SELECT ($expected)::text = $got\::text"), 't',
	'and prints the same');
is($node->safe_psql('postgres', "SELECT ($got\::text)::jsonb = $got"), 't',
	'and reads back the same');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s=%s', k, c->'steps'->k = x.output), ',' ORDER BY k)
	  FROM (SELECT output AS c FROM wf.step WHERE run_id = $run AND step = 'ctx') g,
		   LATERAL jsonb_object_keys(g.c->'steps') k
	  JOIN wf.step x ON x.run_id = $run AND x.label = k
	 WHERE c->'steps'->k IS DISTINCT FROM coalesce(x.output, 'null')}),
	'', 'every named step is found by key, after the 32nd too');
is( $node->safe_psql(
		'postgres', qq{
	SELECT c \@> jsonb_build_object('steps', jsonb_build_object('s11', (SELECT output FROM wf.step WHERE run_id = $run AND step = 's11')))
	   AND jsonb_path_match(c, '\$.steps.s12.size() == 5000 && \$.input.n == 7 && \$.steps.s29.k100 == 150 && \$.steps.s11.a.b[3].c == 2.25')
	   AND jsonb_path_query_first(c, '\$.steps.s13') = to_jsonb(repeat('abc', 30000))
	   AND c->'steps'->'s08' = 'null' AND c->'steps' ? 's07' AND NOT c->'steps' ? 'ctx'
	   AND c->'run'->>'workflow' = 'ctx-wide' AND (c->'run'->>'id')::bigint = $run
	  FROM (SELECT output AS c FROM wf.step WHERE run_id = $run AND step = 'ctx') g}),
	't', 'containment, jsonpath and lookups work on it');

# A map over items of every type: each item also sees its item and index.
wf_define(
	$node, 'ctx-map',
	{
		steps => [
			{ name => 'gen', sql => q{SELECT '[{"k": 1}, {"k": "two", "item": 0}, [1, [2]], null, 3.5, "s", true, ""]'::jsonb} },
			{ name => 'each', map => { over => '$.steps.gen', step => { name => 'one', sql => 'SELECT $1' } } },
		]
	});
my $mrun = wf_start($node, 'ctx-map', { x => [ 1, 2 ] });
is(wf_wait($node, $mrun), 'completed', 'the map completes');
is( $node->safe_psql(
		'postgres', qq{
	SELECT count(*) FILTER (WHERE s.output = jsonb_build_object(
		'input', r.input,
		'steps', jsonb_build_object('gen', g.output),
		'run', jsonb_build_object('id', r.id, 'workflow', r.workflow, 'version', r.version, 'attempt', 1))
		|| s.item)
	  || '/' || count(*)
	  FROM wf.run r JOIN wf.step s ON s.run_id = r.id AND s.parent = 'each'
	  JOIN wf.step g ON g.run_id = r.id AND g.step = 'gen'
	 WHERE r.id = $mrun}),
	'8/8', 'every item saw the context with its item and index');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(s.output->>'index' || ':' || coalesce(s.output->'item', 'null')::text, ' ' ORDER BY s.ord)
	  FROM wf.step s WHERE s.run_id = $mrun AND s.parent = 'each'}),
	'0:{"k": 1} 1:{"k": "two", "item": 0} 2:[1, [2]] 3:null 4:3.5 5:"s" 6:true 7:""',
	'in order, each its own');

done_testing();
