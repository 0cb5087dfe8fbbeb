
# Copyright (c) pg_workflow authors

# A crash while http requests are in flight.  200 runs of a workflow whose
# http step POSTs a JSON body to /slow?ms=3000 (so that requests surely are
# in flight: we wait until the mock server has some) and whose sql step
# records the step's output in a table.  Then kill -9 of an executor: the
# postmaster resets every process, the requests in flight are lost, and
# after the restart the steps left running are requeued and sent again
# with the same Idempotency-Key.  Afterwards:
#  - every run completed, its http step completed once (one 'completed'
#    history row) at attempt 1 (the lost attempt does not count);
#  - the server saw each run's key wf-<run>-post at least once, some of
#    them more than once (the resent ones), and every request of a run
#    carried that same key and the same body;
#  - the results table has exactly one row per run.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use HttpTestServer;
use Test::More;

my $nruns = 200;
my $json = JSON::PP->new->canonical(1);
my $srv = HttpTestServer->new(name => 'crash');
# The test framework turns restart_after_crash off; the engine relies on it.
my $node = wf_node('http_crash', workers => 2,
	conf => "restart_after_crash = on\n");

$node->safe_psql('postgres',
	'CREATE TABLE results (run_id bigint, status int, slept int)');
wf_define(
	$node, 'post-slow',
	{
		steps => [
			{
				name => 'post',
				http => {
					method => 'POST',
					url => $srv->url('/slow?ms=3000&run={{$.run.id}}'),
					body => {
						name => 'task of run {{$.run.id}}',
						run => '{{$.run.id}}',
						input => '{{$.input}}'
					},
					timeout => '1 minute'
				},
				retry => { max_attempts => 1 }
			},
			{
				name => 'record',
				sql => q{INSERT INTO results VALUES (($1->'run'->>'id')::bigint,
					($1->'steps'->'post'->>'status')::int,
					($1->'steps'->'post'->'body'->>'slept')::int) RETURNING run_id}
			}
		]
	});

ok(wf_wait_for_executors($node, 2), 'two executors are running');
my @before = wf_executor_pids($node);

$node->safe_psql(
	'postgres', qq{
	SELECT count(wf_start('post-slow', jsonb_build_object('i', g)))
	  FROM generate_series(1, $nruns) g});

# Requests in flight, seen from both ends.
ok(poll_until(sub { $srv->in_flight > 0 }, 'requests in flight'),
	'the server has requests in flight');
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) > 0 FROM wf.steps WHERE step = 'post' AND status = 'running'"),
	'http steps are running');
my $in_flight = $srv->in_flight;
my $log_offset = -s $node->logfile;
is(kill('KILL', $before[0]), 1, "executor $before[0] killed with SIGKILL");
note "$in_flight requests were in flight at the server";

ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
	'the server accepts connections again');
ok(wf_wait_for_executors($node, 2, \@before), 'two new executors are running');

ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM wf.runs WHERE status IN ('pending', 'running', 'waiting')",
		'0'),
	'every run has ended');
is($node->safe_psql('postgres', 'SELECT status, count(*) FROM wf.runs GROUP BY status'),
	"completed|$nruns", 'every run completed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT count(*) FROM wf.steps
	 WHERE step = 'post' AND status = 'completed' AND (output->>'status')::int = 200}),
	$nruns,
	'every http step completed');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM wf.steps WHERE step = 'post' AND attempt = 1"),
	$nruns,
	'every http step at attempt 1: the attempt lost in the crash did not count');
is( $node->safe_psql(
		'postgres', qq{
	SELECT count(*) FROM (
		SELECT run_id FROM wf.history WHERE step = 'post' AND status = 'completed'
		 GROUP BY run_id HAVING count(*) = 1) x}),
	$nruns,
	'every http step was recorded completed exactly once');
is( $node->safe_psql(
		'postgres', qq{
	SELECT count(*) FROM wf.steps WHERE step = 'record' AND status = 'completed' AND attempt = 1}),
	$nruns,
	'every sql step completed once');
is( $node->safe_psql(
		'postgres',
		'SELECT count(*), count(DISTINCT run_id), count(*) FILTER (WHERE status = 200 AND slept = 3000) FROM results'
	),
	"$nruns|$nruns|$nruns",
	'the results table has exactly one row per run');
is( $node->safe_psql(
		'postgres',
		'SELECT count(*) FROM results x LEFT JOIN wf.runs r ON r.id = x.run_id WHERE r.id IS NULL'),
	'0',
	'every result belongs to a run');

# What the server saw, per run (the run id is in the URL).
my %by_run;
push @{ $by_run{ $_->{query}{run} } }, $_
  foreach $srv->requests(sub { $_[0]{path} eq '/slow' });
my @runs = split /\n/, $node->safe_psql('postgres', 'SELECT id FROM wf.runs ORDER BY id');
is(scalar(grep { !$by_run{$_} } @runs), 0,
	'the server saw a request of every run');
is(scalar(keys %by_run), $nruns, 'and of no other run');
my ($resent, $bad) = (0, 0);
foreach my $run (@runs)
{
	my @reqs = @{ $by_run{$run} // [] };
	$resent++ if @reqs > 1;
	foreach my $req (@reqs)
	{
		my $key = $req->{headers}{'idempotency-key'} // '';
		my $body = eval { $json->decode($req->{body}) } // {};
		if ($key ne "wf-$run-post"
			|| $req->{body} ne $reqs[0]{body}
			|| ($body->{run} // '') ne $run
			|| $req->{method} ne 'POST')
		{
			$bad++;
			diag "run $run: request with key '$key', body $req->{body}";
		}
	}
}
is($bad, 0,
	'every request of a run carried the key wf-<run>-post and the same body');
cmp_ok($resent, '>', 0, "some runs' requests were sent again ($resent)");
my $requeued = $node->safe_psql('postgres',
	"SELECT count(*) FROM wf.history WHERE step = 'post' AND status = 'ready' AND detail ? 'requeued'"
);
cmp_ok($requeued, '>=', $resent,
	"every resent step had been requeued ($requeued requeued)");

my $log = slurp_file($node->logfile, $log_offset);
like(
	$log,
	qr/background worker "pg_workflow executor" \(PID $before[0]\) was terminated by signal 9/,
	'the postmaster saw the executor die');
like($log, qr/all server processes terminated; reinitializing/,
	'the postmaster reset all processes');

$node->stop;
$srv->stop;
done_testing();
