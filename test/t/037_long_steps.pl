# Copyright (c) pg_workflow authors

# A long step holds up no other run.  Six runs whose sql step blocks (on an
# advisory lock this test holds, so that "long" needs no clock) outlast
# pg_workflow.long_step_threshold in the executors: each attempt is rolled
# back and handed to a long-step worker, four at most at once.  Meanwhile:
#  - 50 trivial runs all complete, though every long step is still blocked;
#  - wf_cancel interrupts a step running in a long-step worker;
# and once the lock is released every long run completes, its step's effect
# made once and its attempt counted once.  At a handover the same step of
# the other runs goes to long-step workers too: there are fewer handovers
# than long steps.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('long', workers => 2,
	conf => "pg_workflow.long_step_threshold = '200ms'\n"
	  . "pg_workflow.max_long_workers = 4\n"
	  . "log_min_messages = debug1\n");	# each handover is logged at DEBUG1

$node->safe_psql('postgres', 'CREATE TABLE effects (run_id bigint)');
wf_define(
	$node, 'long',
	{
		steps => [
			{
				name => 'wait',
				sql => q{INSERT INTO effects VALUES (($1->'run'->>'id')::bigint); SELECT pg_advisory_xact_lock_shared(4711) IS NOT NULL},
				timeout => '5 min'
			}
		]
	});
wf_define($node, 'quick',
	{ steps => [ { name => 'a', sql => 'SELECT 1' }, { name => 'b', sql => 'SELECT 2' } ] });

# Hold the lock in a session of our own.
my $holder = $node->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(4711)');

my @long = map { wf_start($node, 'long') } 1 .. 6;

# Four long-step workers end up blocked on the lock, the other two long
# steps waiting for a worker.
ok( $node->poll_query_until(
		'postgres', q{
		SELECT count(*) FROM pg_stat_activity
		 WHERE backend_type = 'pg_workflow long-step worker'
		   AND wait_event_type = 'Lock'},
		'4'),
	'four long-step workers run blocked steps');
ok( $node->poll_query_until(
		'postgres', q{SELECT count(*) FROM wf.step WHERE solo AND step = 'wait'}, '6'),
	'all six long steps were handed over');
my $handovers = () = slurp_file($node->logfile) =~ /outlasted pg_workflow\.long_step_threshold: handed to a long-step worker/g;
cmp_ok($handovers, '<=', 3,
	"the steps like one handed over went to long-step workers without outlasting the threshold in an executor first ($handovers handovers for six steps)");

my @quick = wf_start_many($node, 'quick', 50);
is(wf_wait_all($node, @quick), join(',', ('completed') x 50),
	'50 trivial runs complete while every long step is blocked');
is( $node->safe_psql('postgres',
		'SELECT count(*) FROM wf.run WHERE workflow = \'long\' AND status IN (\'pending\', \'running\')'),
	'6',
	'the long runs are still running (or, those whose step went to a long-step worker at once, pending)');

# wf_cancel reaches a step in a long-step worker.
my $victim = $long[0];
$node->poll_query_until(
	'postgres', qq{
	SELECT count(*) FROM pg_stat_activity a
	 WHERE a.backend_type = 'pg_workflow long-step worker'
	   AND a.query LIKE 'run $victim step %'}, '1')
  or $victim = $long[1];
is($node->safe_psql('postgres', "SELECT wf_cancel($victim)"), 't',
	'wf_cancel of a run whose step a long-step worker runs');
is(wf_wait($node, $victim), 'cancelled', 'it is cancelled while the lock is still held');

$holder->query_safe('SELECT pg_advisory_unlock(4711)');
$holder->quit;

my @rest = grep { $_ != $victim } @long;
is(wf_wait_all($node, @rest), join(',', ('completed') x 5),
	'the other long runs complete once the lock is free');
is( $node->safe_psql(
		'postgres',
		'SELECT count(*) FROM effects WHERE run_id IN (' . join(',', @rest) . ')'),
	'5',
	"each long step's effect happened once");
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(DISTINCT attempt::text, ',') FROM wf.steps WHERE step = 'wait' AND status = 'completed'}),
	'1',
	'and counts one attempt');
is($node->safe_psql('postgres', "SELECT count(*) FROM effects WHERE run_id = $victim"),
	'0', 'the cancelled step left nothing');

# With nothing left to do, the long-step workers exit.
ok( $node->poll_query_until(
		'postgres', q{
		SELECT count(*) FROM pg_stat_activity
		 WHERE backend_type = 'pg_workflow long-step worker'},
		'0'),
	'the long-step workers exit when idle');

done_testing();
