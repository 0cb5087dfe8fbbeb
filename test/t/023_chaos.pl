
# Copyright (c) pg_workflow authors

# Concurrency: 20 clients start runs with parallel branches (one that may
# fail, one waiting for a signal, one calling a child workflow that waits
# too) and, at random moments, cancel or signal them, while 2 executors run
# them.  Whatever the interleaving, once everything is signalled:
#  - every run ends, as its input and the client's action say (cancelled
#    when wf_cancel said so, else failed or completed);
#  - no step of an ended run is left unfinished, no child outlives its
#    parent, wf.deferred is empty;
#  - the server log has no error but the expected ones (the failing branch,
#    interrupted statements): no deadlock, no failing internal statement.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('chaos', workers => 2);

wf_define(
	$node, 'chaos-child',
	{
		steps => [
			{ name => 'k1', sql => 'SELECT pg_sleep(random() * 0.02)' },
			{ name => 'k2', wait_for => { signal => 'go' } },
		]
	});
wf_define(
	$node, 'chaos',
	{
		steps => [
			{
				name => 'fan',
				parallel => [
					{
						name => 'a',
						steps => [
							{ name => 'a1', sql => 'SELECT pg_sleep(random() * 0.02)' },
							{
								name => 'a2',
								sql =>
								  q{SELECT 1 / CASE WHEN ($1->'input'->>'f')::int = 1 THEN 0 ELSE 1 END}
							},
						]
					},
					{ name => 'b', steps => [ { name => 'b1', wait_for => { signal => 'go' } } ] },
					{ name => 'c', steps => [ { name => 'c1', workflow => 'chaos-child' } ] },
				]
			}
		]
	});
$node->safe_psql(
	'postgres', q{
	CREATE TABLE actions (run bigint PRIMARY KEY, f int, act int, result boolean);
	-- Signals the active runs that wait for "go" without one pending;
	-- returns how many runs are still active.
	CREATE FUNCTION nudge() RETURNS bigint LANGUAGE sql AS $$
		SELECT count(wf_signal(r.id, 'go')) FROM wf.runs r
		 WHERE r.status IN ('pending', 'running', 'waiting')
		   AND EXISTS (SELECT 1 FROM wf.steps s
						WHERE s.run_id = r.id AND s.status = 'waiting')
		   AND NOT EXISTS (SELECT 1 FROM wf.signal g
							WHERE g.run_id = r.id AND g.taken_at IS NULL);
		SELECT count(*) FROM wf.runs WHERE status IN ('pending', 'running', 'waiting');
	$$;});

my $clients = 20;
my $rounds = 15;
my $nruns = $clients * $rounds;
$node->pgbench(
	"--no-vacuum --client=$clients --jobs=2 --transactions=$rounds",
	0,
	[qr{actually processed: $nruns/$nruns}],
	[],
	'20 clients start, cancel and signal runs concurrently',
	{
		'023_chaos' => q{
\set f random(0, 2)
\set act random(0, 2)
SELECT wf_start('chaos', jsonb_build_object('f', :f)) AS r \gset
\set delay random(0, 30000)
\sleep :delay us
INSERT INTO actions SELECT :r, :f, :act, CASE WHEN :act = 0 THEN wf_cancel(:r) ELSE wf_signal(:r, 'go') END;
}
	},
	'postgres');

ok($node->poll_query_until('postgres', 'SELECT nudge()', '0'), 'every run ended');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM actions a JOIN wf.runs r ON r.id = a.run
	 WHERE r.status <> CASE WHEN a.act = 0 AND a.result THEN 'cancelled'
							WHEN a.act = 0 THEN 'failed'
							WHEN a.f = 1 THEN 'failed'
							ELSE 'completed' END}),
	'0',
	'each run ended as its input and its client said');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM wf.steps s JOIN wf.runs r ON r.id = s.run_id
	 WHERE s.status IN ('pending', 'ready', 'running', 'waiting')}),
	'0',
	'no step of an ended run is left unfinished');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM wf.runs c JOIN wf.runs p ON p.id = c.parent_run
	 WHERE p.status = 'cancelled' AND c.status <> 'cancelled'}),
	'0',
	'the children of cancelled runs are cancelled');
is($node->safe_psql('postgres', 'SELECT count(*) FROM wf.deferred'),
	'0', 'nothing is left deferred');

my @errors = grep {
	/\b(ERROR|FATAL|PANIC):/
	  && !/division by zero|canceling statement due to user request/
} split /\n/, slurp_file($node->logfile);
is(scalar(@errors), 0, 'no unexpected error in the server log')
  or diag(join("\n", @errors[ 0 .. ($#errors < 9 ? $#errors : 9) ]));

# A deferred change that fails (here a made-up row whose actor is not an
# oid) is reported and tried again later; it does not stop the executors.
my $victim = wf_start($node, 'chaos-child');
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $victim AND step = 'k2'",
		'waiting'),
	'a run waits');
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	qq{INSERT INTO wf.deferred (run_id, action, payload) VALUES ($victim, 'cancel', '{"actor": "nobody"}');
	   SELECT wf._defer();});
ok( $node->wait_for_log(qr/WARNING:  could not make deferred change \d+ \(cancel of run $victim\)/,
		$log_offset),
	'the failing deferred change is reported');
my $after = wf_start($node, 'chaos', { f => 1 });
is(wf_wait($node, $after), 'failed', 'the executors go on with other work');
is($node->safe_psql('postgres', "SELECT status FROM wf.runs WHERE id = $victim"),
	'waiting', 'the change was not made');
$node->safe_psql('postgres', "DELETE FROM wf.deferred WHERE run_id = $victim");

$node->stop;
done_testing();
