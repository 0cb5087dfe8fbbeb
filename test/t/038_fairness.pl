# Copyright (c) pg_workflow authors

# Fair share between owners: one role's flood of runs does not starve
# another role's.  Alice starts 3,000 runs at once; Bob then starts a
# trickle of five, one after the other.  Each of Bob's runs completes while
# most of Alice's are still to run: his first steps take their place in the
# claim order by his own virtual clock, not behind her backlog.  The same
# holds for a map's items, which take their turn in their owner's share.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('fairness', workers => 2);

$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	SELECT wf_define('work', '{"steps": [{"name": "a", "sql": "SELECT 1"}, {"name": "b", "sql": "SELECT 2"}, {"name": "c", "sql": "SELECT 3"}]}');
	SELECT wf_define('fan', '{"steps": [{"name": "each", "map": {"over": "$.input.items", "step": {"name": "one", "sql": "SELECT 1"}}}]}');
});

sub alice_done_before
{
	my ($run) = @_;
	return $node->safe_psql(
		'postgres', qq{
		SELECT count(*) FROM wf.run a, wf.run b
		 WHERE b.id = $run AND a.owner = 'alice'::regrole AND a.workflow = 'work'
		   AND a.finished_at < b.finished_at});
}

$node->safe_psql('postgres',
	q{SET ROLE alice; SELECT count(wf_start('work')) FROM generate_series(1, 3000)});

my @bob;
for my $i (1 .. 5)
{
	my $id = $node->safe_psql('postgres', q{SET ROLE bob; SELECT wf_start('work')});
	is(wf_wait($node, $id), 'completed', "bob's run $i completes");
	push @bob, $id;
}
my $before = alice_done_before($bob[-1]);
cmp_ok($before, '<', 1500,
	"bob's last run completed before half of alice's backlog ($before of 3000 done)");

# A map of 3,000 items is alice's share too.
my $fan = $node->safe_psql('postgres',
	q{SET ROLE alice; SELECT wf_start('fan', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 3000) g)))});
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM wf.step WHERE run_id = $fan AND parent = 'each'")
  or die "the map did not expand";
my $bob_map = $node->safe_psql('postgres', q{SET ROLE bob; SELECT wf_start('work')});
is(wf_wait($node, $bob_map), 'completed', "bob's run completes during alice's map");
my $items_before = $node->safe_psql(
	'postgres', qq{
	SELECT count(*) FROM wf.step s, wf.run b
	 WHERE s.run_id = $fan AND s.parent = 'each' AND b.id = $bob_map
	   AND s.finished_at < b.finished_at});
cmp_ok($items_before, '<', 1500,
	"bob's run completed before half of the map's items ($items_before of 3000 done)");

is(wf_wait($node, $fan), 'completed', "alice's map completes");
ok( $node->poll_query_until(
		'postgres', q{SELECT count(*) FROM wf.run WHERE status <> 'completed'}, '0'),
	"all of alice's runs complete too");

done_testing();
