# Copyright (c) pg_workflow authors

# Bounded cost: the limits that keep one run from taking an executor's time
# or memory from the others, each a clear error on the run it concerns.
#  - pg_workflow.step_timeout applies to sql steps that set no timeout;
#  - wf_wait cannot be called from a step (it would hold up its executor);
#  - pg_workflow.max_map_items and pg_workflow.max_context_size;
#  - a map's items do not enter its steps' contexts: a map of 3,000 items
#    completes with its outputs in order while a plain run goes through.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('limits', workers => 2,
	conf => "pg_workflow.step_timeout = '300ms'\n"
	  . "pg_workflow.max_map_items = 5000\n"
	  . "pg_workflow.max_context_size = '512kB'\n");

sub step_error
{
	my ($run, $step) = @_;
	return $node->safe_psql('postgres',
		"SELECT error->>'sqlstate' || ' ' || (error->>'message') FROM wf.steps WHERE run_id = $run AND step = '$step'"
	);
}

# The default step timeout, and a step's own timeout above it.
wf_define($node, 'slow',
	{ retry => { max_attempts => 1 }, steps => [ { name => 's', sql => 'SELECT pg_sleep(30)' } ] });
wf_define($node, 'slow-own-timeout',
	{ steps => [ { name => 's', sql => 'SELECT pg_sleep(0.5)', timeout => '20s' } ] });
my $slow = wf_start($node, 'slow');
my $own = wf_start($node, 'slow-own-timeout');
is(wf_wait($node, $slow), 'failed', 'a step past pg_workflow.step_timeout fails');
like(step_error($slow, 's'), qr/^57014 step timed out after 300 ms/,
	'it fails as a timeout');
is(wf_wait($node, $own), 'completed', "a step's own timeout replaces the default");

# wf_wait from inside a step.
wf_define($node, 'self-wait',
	{ retry => { max_attempts => 1 }, steps => [ { name => 'w', sql => q{SELECT wf_wait(($1->'run'->>'id')::bigint, '1 hour')} } ] });
my $sw = wf_start($node, 'self-wait');
is(wf_wait($node, $sw), 'failed', 'a step calling wf_wait fails');
like(step_error($sw, 'w'), qr/^0A000 wf_wait cannot be called from a step/,
	'with a clear error');

# Too many map items.
wf_define(
	$node, 'big-map',
	{
		steps => [
			{ name => 'items', sql => q{SELECT to_jsonb(array(SELECT generate_series(1, 6000)))} },
			{ name => 'each', map => { over => '$.steps.items', step => { name => 'one', sql => 'SELECT 1' } } },
		]
	});
my $bm = wf_start($node, 'big-map');
is(wf_wait($node, $bm), 'failed', 'a map over more than max_map_items items fails');
like(step_error($bm, 'each'),
	qr/^54000 map step "each" has 6000 items, more than pg_workflow.max_map_items \(5000\)/,
	'naming the limit');
is($node->safe_psql('postgres', "SELECT count(*) FROM wf.step WHERE run_id = $bm"),
	'2', 'and creates no item');

# Too large a context.
wf_define(
	$node, 'big-context',
	{
		steps => [
			{ name => 'a', sql => q{SELECT to_jsonb(repeat('x', 1000000))} },
			{ name => 'b', sql => 'SELECT 1' },
		]
	});
my $bc = wf_start($node, 'big-context');
is(wf_wait($node, $bc), 'failed', 'a step whose context is too large fails');
like(step_error($bc, 'b'),
	qr/^54000 run context of \d+ bytes exceeds pg_workflow.max_context_size/,
	'naming the limit');

# A map of 3,000 items: each item's context holds no other item's output.
wf_define(
	$node, 'wide-map',
	{
		steps => [
			{ name => 'items', sql => q{SELECT to_jsonb(array(SELECT generate_series(1, 3000)))} },
			{
				name => 'each',
				map => {
					over => '$.steps.items',
					step => { name => 'one', sql => q{SELECT jsonb_build_object('i', $1->'item', 'seen', (SELECT count(*) FROM jsonb_object_keys($1->'steps')))} }
				}
			},
			{ name => 'sum', sql => q{SELECT jsonb_build_object('n', jsonb_array_length($1->'steps'->'each'), 'first', $1->'steps'->'each'->0, 'last', $1->'steps'->'each'->2999)} },
		]
	});
wf_define($node, 'plain', { steps => [ { name => 'p', sql => 'SELECT 1' } ] });
my $wm = wf_start($node, 'wide-map');
my $plain = wf_start($node, 'plain');
is(wf_wait($node, $plain), 'completed', 'a plain run completes during the map');
is(wf_wait($node, $wm), 'completed', 'the 3,000-item map completes');
is( $node->safe_psql('postgres', "SELECT output::text FROM wf.steps WHERE run_id = $wm AND step = 'sum'"),
	'{"n": 3000, "last": {"i": 3000, "seen": 1}, "first": {"i": 1, "seen": 1}}',
	"the map's outputs are in order, and each item saw one named step");

done_testing();
