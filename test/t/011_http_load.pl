
# Copyright (c) pg_workflow authors

# 1,000 concurrent http steps, with 2 executors:
#  (a) pg_workflow.http_max_concurrency = 600: 1,000 runs of a one-step
#      workflow calling /slow?ms=500, started in one transaction, all
#      complete; the mock server saw at least 300 requests at once (they
#      really ran concurrently, not one executor transaction at a time) and
#      exactly one request per run (1,000 distinct Idempotency-Keys);
#  (b) after a reload with http_max_concurrency = 50: the same, and the
#      server never saw more than 2 executors x 50 requests at once.
# Synchronisation is on polled conditions only; no timing is asserted.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use HttpTestServer;
use Test::More;

my $nruns = 1000;
my $srv = HttpTestServer->new(name => 'load');
my $node = wf_node('http_load', workers => 2,
	conf => "pg_workflow.http_max_concurrency = 600\n");

wf_define(
	$node, 'slow',
	{
		steps => [
			{
				name => 'wait',
				http => {
					method => 'GET',
					url => $srv->url('/slow?ms=500&phase={{$.input.phase}}&i={{$.input.i}}'),
					timeout => '2 minutes'
				},
				retry => { max_attempts => 1 }
			}
		]
	});

# Starts the phase's runs in one transaction, waits until all of them have
# ended; returns the server's statistics of the phase.
sub run_phase
{
	my ($phase) = @_;

	$srv->reset;
	is( $node->safe_psql(
			'postgres', qq{
		SELECT count(wf_start('slow', jsonb_build_object('phase', '$phase', 'i', g)))
		  FROM generate_series(1, $nruns) g}),
		$nruns,
		"$phase: $nruns runs started in one transaction");
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) FROM wf.runs WHERE input->>'phase' = '$phase' AND status IN ('pending', 'running', 'waiting')",
			'0'),
		"$phase: every run has ended");
	is( $node->safe_psql(
			'postgres',
			"SELECT status, count(*) FROM wf.runs WHERE input->>'phase' = '$phase' GROUP BY status"
		),
		"completed|$nruns",
		"$phase: every run completed");
	is( $node->safe_psql(
			'postgres', qq{
		SELECT count(*) FROM wf.steps s JOIN wf.runs r ON r.id = s.run_id
		 WHERE r.input->>'phase' = '$phase' AND s.status = 'completed' AND s.attempt = 1
		   AND (s.output->'body'->>'slept')::int = 500}),
		$nruns,
		"$phase: every step completed at its first attempt with /slow's answer");

	my $stats = $srv->stats;
	my @reqs = $srv->requests(sub { $_[0]{path} eq '/slow' });
	my %keys;
	$keys{ $_->{headers}{'idempotency-key'} // '' }++ foreach @reqs;
	is(scalar @reqs, $nruns, "$phase: the server got $nruns requests");
	is($stats->{requests} - 1, $nruns,
		"$phase: and no other (the server counts the /_stats request too)");
	is(scalar(grep { /^wf-\d+-wait$/ } keys %keys),
		$nruns, "$phase: $nruns distinct Idempotency-Keys");
	is(scalar(grep { $_ != 1 } values %keys), 0, "$phase: each key exactly once");
	is(scalar(grep { $_->{query}{phase} ne $phase } @reqs),
		0, "$phase: all requests were the phase's");
	note "$phase: max_in_flight = $stats->{max_in_flight}";
	return $stats;
}

ok(wf_wait_for_executors($node, 2), 'two executors are running');

# -------------------------------------------------------------------------
# (a) 600 per executor
# -------------------------------------------------------------------------
my $stats = run_phase('wide');
cmp_ok($stats->{max_in_flight}, '>=', 300,
	'wide: at least 300 requests were in flight at once');

# -------------------------------------------------------------------------
# (b) 50 per executor, after a reload
# -------------------------------------------------------------------------
$node->safe_psql('postgres',
	'ALTER SYSTEM SET pg_workflow.http_max_concurrency = 50');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( $node->poll_query_until(
		'postgres', 'SHOW pg_workflow.http_max_concurrency', '50'),
	'http_max_concurrency = 50 after the reload');

$stats = run_phase('narrow');
cmp_ok($stats->{max_in_flight}, '<=', 100,
	'narrow: at most 2 executors x 50 requests in flight at once');
cmp_ok($stats->{max_in_flight}, '>', 1,
	'narrow: requests still went concurrently');

$node->stop;
$srv->stop;
done_testing();
