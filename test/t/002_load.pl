
# Copyright (c) pg_workflow authors

# Load with four executors: 1,000 runs of a 3-step workflow whose steps each
# INSERT (run_id, step, pid) into a table without a unique constraint, all
# started in a few transactions.  Every run completes, every (run, step) row
# exists exactly once (exactly-once execution under concurrent executors),
# the history is complete, and all four executors took part.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $nruns = 1000;
my $node = wf_node('load', workers => 4);

ok(wf_wait_for_executors($node, 4), 'four executors are running');
my @executors = wf_executor_pids($node);

# No unique constraint: a step executed twice would show as a duplicate.
$node->safe_psql('postgres', q{
	CREATE TABLE effects (run_id bigint, step text, pid int);
	GRANT INSERT ON effects TO PUBLIC;});

my $insert = q{INSERT INTO effects VALUES (($1->'run'->>'id')::bigint, '%s', pg_backend_pid()) RETURNING jsonb_build_object('step', '%s', 'i', $1->'input'->'i')};
wf_define(
	$node, 'load',
	{
		steps => [
			map { { name => $_, sql => sprintf($insert, $_, $_) } }
			  qw(one two three)
		]
	});

# Four transactions of 250 wf_start calls each.
foreach my $batch (0 .. 3)
{
	my $from = $batch * 250 + 1;
	my $to = $from + 249;
	is( $node->safe_psql(
			'postgres', qq{
		SELECT count(wf_start('load', jsonb_build_object('i', g)))
		  FROM generate_series($from, $to) g}),
		'250',
		"batch $batch of runs started");
}

ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FROM wf.runs WHERE status IN ('pending', 'running', 'waiting')},
		'0'),
	'all runs have ended');

is( $node->safe_psql(
		'postgres',
		q{SELECT status, count(*) FROM wf.runs GROUP BY status ORDER BY status}),
	"completed|$nruns",
	'every run completed, none failed');

is( $node->safe_psql(
		'postgres',
		q{SELECT count(*), count(DISTINCT (run_id, step)) FROM effects}),
	"3000|3000",
	'every (run, step) effect exists exactly once');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM wf.runs r
	 WHERE (SELECT count(*) FROM effects e WHERE e.run_id = r.id) <> 3}),
	'0',
	'every run has its three effects');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*), count(*) FILTER (WHERE status = 'completed' AND attempt = 1)
	  FROM wf.steps}),
	"3000|3000",
	'every step completed at its first attempt');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM wf.runs r
	 WHERE r.output <> jsonb_build_object('step', 'three', 'i', r.input->'i')}),
	'0',
	'every run output is its last step output, for its own input');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (
		SELECT run_id, string_agg(coalesce(step, '-') || ':' || status, ' ' ORDER BY id) AS h
		  FROM wf.history GROUP BY run_id) x
	 WHERE h = '-:pending -:running one:completed two:completed three:completed -:completed'}),
	$nruns,
	'every run has the complete history in order');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM wf.history WHERE actor::text <> current_user}),
	'0',
	'history actor is the role that started the runs');

# The steps ran in the executors: pg_backend_pid() of each step is one of
# the four executors, and each of them ran some.
my $pids = join(',', @executors);
is( $node->safe_psql(
		'postgres', qq{
	SELECT count(DISTINCT pid), count(*) FILTER (WHERE pid NOT IN ($pids))
	  FROM effects}),
	'4|0',
	'all four executors took part, and only they ran steps');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'}),
	'4',
	'the four executors are still there');

unlike(
	slurp_file($node->logfile),
	qr/\b(?:ERROR|PANIC|FATAL):|TRAP:|terminated by signal|exited with exit code/,
	'no error in the server log');

$node->stop;
done_testing();
