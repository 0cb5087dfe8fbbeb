# Copyright (c) pg_workflow authors

# Engine-side faults are confined to the step being handled.  A trigger on
# wf.step (the test's own fault injector, created by the superuser) makes
# the engine's handling of chosen steps fail: while loading the step, at its
# checkpoint, while recording its failure, and everywhere (even recording
# the internal error).  Each such step's run fails with the internal error
# and an alert, or is left alone with a WARNING when not even that can be
# recorded; the executors never stop, and every other run completes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('faults', workers => 2);

$node->safe_psql(
	'postgres', q{
	CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.step = 'poison-load' AND NEW.attempt > OLD.attempt THEN
			RAISE EXCEPTION 'injected fault: load';
		END IF;
		IF NEW.step = 'poison-checkpoint' AND NEW.status = 'completed' THEN
			RAISE EXCEPTION 'injected fault: checkpoint';
		END IF;
		IF NEW.step = 'poison-failure' AND NEW.status = 'failed'
		   AND NEW.error->>'class' IS DISTINCT FROM 'internal' THEN
			RAISE EXCEPTION 'injected fault: failure recording';
		END IF;
		IF NEW.step = 'poison-all' THEN
			RAISE EXCEPTION 'injected fault: everywhere';
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER inject_fault BEFORE UPDATE ON wf.step
		FOR EACH ROW EXECUTE FUNCTION inject_fault();
});

for my $poison ('poison-load', 'poison-checkpoint', 'poison-failure', 'poison-all')
{
	my $sql = $poison eq 'poison-failure' ? 'SELECT 1/0' : 'SELECT 1';
	wf_define($node, $poison,
		{ retry => { max_attempts => 1 }, steps => [ { name => $poison, sql => $sql } ] });
}
wf_define($node, 'plain',
	{ steps => [ { name => 'a', sql => 'SELECT 1' }, { name => 'b', sql => 'SELECT 2' } ] });

my %run;
$run{$_} = wf_start($node, $_)
  for ('poison-load', 'poison-checkpoint', 'poison-failure', 'poison-all');
my @plain = wf_start_many($node, 'plain', 20);

is(wf_wait_all($node, @plain), join(',', ('completed') x 20),
	'20 unrelated runs started after the faulty ones all complete');

for my $poison ('poison-load', 'poison-checkpoint', 'poison-failure')
{
	is(wf_wait($node, $run{$poison}), 'failed', "$poison: its run fails");
	is( $node->safe_psql(
			'postgres',
			"SELECT error->>'class' || ': ' || (error->>'message' LIKE '%injected fault%')::text
			   FROM wf.steps WHERE run_id = $run{$poison}"),
		# Each happens in the engine's handling of the step, outside the
		# attempt's subtransaction (an executor checkpoints in its batch's
		# transaction, see wf_exec_checkpoint): an internal error.
		'internal: true',
		"$poison: the step records the error");
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM wf.alerts WHERE run_id = $run{$poison} AND kind = 'failure'"),
		'1',
		"$poison: an alert is raised");
}

# Not even the internal error could be recorded: a WARNING, and the run is
# left alone (by each executor that met it) instead of being retried in a
# loop.
ok( $node->wait_for_log(
		qr/WARNING:  could not record the internal error of step "poison-all" of run $run{'poison-all'}/),
	'poison-all: a WARNING says the internal error could not be recorded');

# The executors keep working.
my @more = wf_start_many($node, 'plain', 5);
is(wf_wait_all($node, @more), join(',', ('completed') x 5),
	'runs started afterwards complete too');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'}),
	'2',
	'both executors are alive');

# Once the fault is gone, wf_retry resumes the failed runs normally.
$node->safe_psql('postgres', 'DROP TRIGGER inject_fault ON wf.step');
ok($node->safe_psql('postgres', "SELECT wf_retry($run{'poison-checkpoint'})") eq 't',
	'wf_retry accepts a run failed by an internal error');
is(wf_wait($node, $run{'poison-checkpoint'}), 'completed',
	'the retried run completes once the fault is gone');

done_testing();
