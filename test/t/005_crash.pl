
# Copyright (c) pg_workflow authors

# Crash recovery under load, twice:
#  (a) kill -9 of one executor while 2,000 runs of a 3-step workflow are
#      executing: the postmaster resets every process, the executors come
#      back, every run completes;
#  (b) the same with an immediate shutdown (simulated power loss) and a
#      restart in the middle.
# Every step INSERTs (run_id, step) into a table without a unique
# constraint: after each crash the table has exactly one row per (run, step)
# (6,000 rows, 6,000 distinct), every step completed at its first attempt
# (the interrupted attempts left nothing behind) and every run has its full
# history.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $nruns = 2000;
# The test framework turns restart_after_crash off; the engine relies on it.
my $node = wf_node('crash', workers => 2, conf => "restart_after_crash = on\n");

$node->safe_psql('postgres',
	'CREATE TABLE effects (phase text, run_id bigint, step text)');

# The middle step is slow enough that the crash lands while runs are in
# flight.
my $insert = q{INSERT INTO effects VALUES ($1->'input'->>'phase', ($1->'run'->>'id')::bigint, '%s') RETURNING %s};
wf_define(
	$node, 'crashy',
	{
		steps => [
			{ name => 'one', sql => sprintf($insert, 'one', q{1}) },
			{
				name => 'two',
				sql => sprintf($insert, 'two', q{(SELECT 2 FROM pg_sleep(0.001))})
			},
			{ name => 'three', sql => sprintf($insert, 'three', q{3}) },
		]
	});

# Starts the phase's runs in four transactions.
sub start_runs
{
	my ($phase) = @_;
	foreach my $batch (1 .. 4)
	{
		$node->safe_psql(
			'postgres', qq{
		SELECT count(wf_start('crashy', jsonb_build_object('phase', '$phase', 'i', g)))
		  FROM generate_series(1, @{[ $nruns / 4 ]}) g});
	}
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM wf.runs WHERE input->>'phase' = '$phase'"),
		$nruns,
		"$phase: $nruns runs started");
}

# Waits until some runs of the phase have completed; returns how many.
sub wait_some_completed
{
	my ($phase) = @_;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) >= 50 FROM wf.runs WHERE input->>'phase' = '$phase' AND status = 'completed'"
		),
		"$phase: runs are completing");
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM wf.runs WHERE input->>'phase' = '$phase' AND status = 'completed'"
	);
}

sub check_phase
{
	my ($phase) = @_;

	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) FROM wf.runs WHERE input->>'phase' = '$phase' AND status IN ('pending', 'running', 'waiting')",
			'0'),
		"$phase: all runs have ended after the crash");
	is( $node->safe_psql(
			'postgres',
			"SELECT status, count(*) FROM wf.runs WHERE input->>'phase' = '$phase' GROUP BY status"
		),
		"completed|$nruns",
		"$phase: every run completed");
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*), count(DISTINCT (run_id, step)) FROM effects WHERE phase = '$phase'"
		),
		'6000|6000',
		"$phase: every step had its effect exactly once");
	is( $node->safe_psql(
			'postgres', qq{
		SELECT count(*), count(*) FILTER (WHERE s.status = 'completed' AND s.attempt = 1)
		  FROM wf.steps s JOIN wf.runs r ON r.id = s.run_id
		 WHERE r.input->>'phase' = '$phase'}),
		'6000|6000',
		"$phase: every step completed at attempt 1, nothing of the lost attempts remains"
	);
	is( $node->safe_psql(
			'postgres', qq{
		SELECT count(*) FROM (
			SELECT h.run_id, string_agg(coalesce(h.step, '-') || ':' || h.status, ' ' ORDER BY h.id) AS hist
			  FROM wf.history h JOIN wf.runs r ON r.id = h.run_id
			 WHERE r.input->>'phase' = '$phase' GROUP BY h.run_id) x
		 WHERE hist = '-:pending -:running one:completed two:completed three:completed -:completed'}),
		$nruns,
		"$phase: every run has exactly its history");
	is( $node->safe_psql(
			'postgres', qq{
		SELECT count(*) FROM wf.runs WHERE input->>'phase' = '$phase' AND output <> '3'}),
		'0',
		"$phase: every run output is the last step's");
}

# -------------------------------------------------------------------------
# (a) kill -9 of an executor.
# -------------------------------------------------------------------------
ok(wf_wait_for_executors($node, 2), 'two executors are running');
my @before = wf_executor_pids($node);

start_runs('kill9');
my $done = wait_some_completed('kill9');
my $log_offset = -s $node->logfile;
is(kill('KILL', $before[0]), 1, "executor $before[0] killed with SIGKILL");
cmp_ok($done, '<', $nruns, "kill9: the crash landed mid-load ($done done)");

ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
	'the server accepts connections again');
ok(wf_wait_for_executors($node, 2, \@before),
	'two new executors are running');
check_phase('kill9');

my $log = slurp_file($node->logfile, $log_offset);
like(
	$log,
	qr/background worker "pg_workflow executor" \(PID $before[0]\) was terminated by signal 9/,
	'the postmaster saw the executor die');
like($log, qr/all server processes terminated; reinitializing/,
	'the postmaster reset all processes');
like($log, qr/database system was not properly shut down; automatic recovery in progress/,
	'crash recovery ran');

# -------------------------------------------------------------------------
# (b) immediate shutdown and restart.
# -------------------------------------------------------------------------
@before = wf_executor_pids($node);
start_runs('immediate');
$done = wait_some_completed('immediate');
$log_offset = -s $node->logfile;
$node->stop('immediate');
cmp_ok($done, '<', $nruns, "immediate: the stop landed mid-load ($done done)");
$node->start;
ok(wf_wait_for_executors($node, 2, \@before),
	'two executors are running after the restart');
check_phase('immediate');
like(
	slurp_file($node->logfile, $log_offset),
	qr/database system was interrupted; last known up at|automatic recovery in progress/,
	'the restart recovered from the immediate shutdown');

is( $node->safe_psql('postgres',
		'SELECT count(*), count(DISTINCT (run_id, step)) FROM effects'),
	'12000|12000',
	'both phases together: 12,000 effects, all distinct');

$node->stop;
done_testing();
