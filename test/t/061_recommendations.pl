# Copyright (c) pg_workflow authors

# wf_recommendations: each rule finds the problem planted in a workflow run
# a dozen times and nothing else, stays quiet where the problem is absent,
# and its patch, applied with wf_define(name, wf_patch(wf_export(name),
# patch)), removes the problem from the next runs (no timings asserted:
# what changed is read from the runs' steps).
#  - parallel: two independent http steps one after the other (with a
#    step that names the second in its dependencies, also in a
#    branch of an "if", named as wf.step names them), and sql steps of
#    150 ms; not for quick sql steps, which an executor runs one after the
#    other anyway; not when the
#    second reads the first ($1->'steps'->'a', a "when" on $.steps.b),
#    reads the whole context, follows a sleep, or follows a step that
#    failed (a gate);
#  - slow_step: one step with most of the work; not among equal steps;
#  - retry_heavy: a step that fails every other call;
#  - timeout_tight: attempts cut by a timeout near the step's p99;
#  - timeout_loose: a 1 hour timeout on a 1 ms step; not 5 seconds;
#  - always_skipped: a "when" never true (patch: removed; with
#    dependencies of its own, the next step inherits them); one true half
#    the time; one whose output another step reads (no patch);
#  - map_concurrency: 8 items 2 at a time; not 8 at a time;
#  - circuit_breaker: a breaker that opens in every run over one failure
#    (patch: more failures); over three failures in four attempts (no
#    patch: the host is down);
#  - runs of another role are not the caller's measure; fewer than 10
#    runs give no advice; the errors of bad arguments.

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

my $json = JSON::PP->new->utf8->canonical(1);
my $srv = HttpTestServer->new;
my $node = wf_node('recommend', workers => 2);

$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
});
wf_create_flaky($node);

# SQL of a step that sleeps (seconds) and returns a string.
sub nap { return "SELECT to_jsonb(pg_sleep($_[0])::text)"; }

# Starts n runs of each workflow (input {"n": i, "items": [1..8]}) in one
# transaction, then waits for all of them.
sub run_all
{
	my ($n, @wfs) = @_;
	my $list = join(',', @wfs);
	my $ids = $node->safe_psql('postgres',
		"SELECT string_agg(wf_start(w, jsonb_build_object('n', i, 'items', '[1,2,3,4,5,6,7,8]'::jsonb))::text, ',')"
		  . " FROM unnest('{$list}'::text[]) w, generate_series(1, $n) i");
	my @ids = split /,/, $ids;
	my $st = wf_wait_all($node, @ids);
	my %seen;
	$seen{$_}++ for split /,/, $st;
	return join(',', map { "$_=$seen{$_}" } sort keys %seen);
}

# The recommendations of a workflow: "kind steps" of each row, sorted and
# joined with ";", then the rows (by priority, then the definition's order).
sub recs
{
	my ($wf, $role) = @_;
	my $out = $node->safe_psql('postgres',
		($role ? "SET ROLE $role;\n" : '')
		  . "SELECT json_build_object('kind', kind, 'priority', priority, 'steps', steps,"
		  . " 'evidence', evidence, 'patch', patch) FROM wf_recommendations('$wf')");
	my @rows = map { $json->decode($_) } grep { $_ ne '' } split /\n/, $out;
	return (join(';', sort map { "$_->{kind} " . join(',', @{ $_->{steps} }) } @rows), @rows);
}

# Applies a row's patch; returns the new version.
sub apply
{
	my ($wf, $row) = @_;
	return $node->safe_psql('postgres',
		"SELECT wf_define('$wf', wf_patch(wf_export('$wf'), "
		  . wf_sql_quote($json->encode($row->{patch}))
		  . '::jsonb))');
}

wf_define(
	$node, 'seq',
	{
		steps => [
			{ name => 'a', http => { url => $srv->url('/slow?ms=100') } },
			{ name => 'b', http => { url => $srv->url('/slow?ms=100&n={{$.input.n}}') } },
			{ name => 'c', sql => q{SELECT jsonb_build_array($1->'steps'->'a', $1->'steps'->'b')} }
		]
	});
# The same, with a step that names b in its own dependencies: it goes on
# waiting for a too.
wf_define(
	$node, 'seqdeps',
	{
		steps => [
			{ name => 'a', http => { url => $srv->url('/slow?ms=100') } },
			{ name => 'b', http => { url => $srv->url('/slow?ms=100&n={{$.input.n}}') } },
			{ name => 'c', sql => q{SELECT jsonb_build_array($1->'steps'->'a', $1->'steps'->'b')} },
			{ name => 'd', dependencies => ['b'], sql => q{SELECT $1->'steps'->'b'} }
		]
	});
# A step never run that has dependencies of its own: removed, the step
# after it waits for them instead.
wf_define(
	$node, 'skipdeps',
	{
		steps => [
			{ name => 'a', sql => 'SELECT 1' },
			{ name => 'b', sql => 'SELECT 2' },
			{ name => 'never', when => '$.input.n < 0', dependencies => ['a'], sql => 'SELECT 3' },
			{ name => 'c', sql => 'SELECT 4' }
		]
	});
# The same with sql steps of 150 ms: over pg_workflow.batch_time, one is
# handed to a long-step worker when the other is ready beside it.
wf_define(
	$node, 'slowsql',
	{
		steps => [
			{ name => 'a', sql => nap(0.15) },
			{ name => 'b', sql => nap(0.15) },
			{ name => 'c', sql => q{SELECT jsonb_build_array($1->'steps'->'a', $1->'steps'->'b')} }
		]
	});
# The same with quick sql steps (20 ms, under pg_workflow.batch_time): an
# executor runs them one after the other whatever their dependencies, so
# there is nothing to gain.
wf_define(
	$node, 'serial',
	{
		steps => [
			{ name => 'a', sql => nap(0.02) },
			{ name => 'b', sql => nap(0.02) },
			{ name => 'c', sql => q{SELECT jsonb_build_array($1->'steps'->'a', $1->'steps'->'b')} }
		]
	});
wf_define(
	$node, 'slow',
	{
		steps => [
			{ name => 'x', sql => 'SELECT 1' },
			{ name => 'y', sql => nap(0.2) },
			{ name => 'z', sql => q{SELECT $1->'steps'->'y'} }
		]
	});
wf_define(
	$node, 'flaky',
	{
		steps => [
			{ name => 'f', sql => WF_FLAKY_SQL,
			  retry => { max_attempts => 5, backoff => 'fixed', initial_interval => '10ms' } },
			{ name => 'g', sql => 'SELECT 1' }
		]
	});
# Attempt 1 takes 50 to 170 ms by the run's input, later ones 50 ms.
wf_define(
	$node, 'tight',
	{
		steps => [
			{
				name => 't',
				timeout => '120 milliseconds',
				retry => { max_attempts => 3, backoff => 'fixed', initial_interval => '10ms' },
				sql => q{SELECT to_jsonb(pg_sleep(CASE WHEN ($1->'run'->>'attempt')::int = 1
						 THEN 0.05 + (($1->'input'->>'n')::int % 5) * 0.03 ELSE 0.05 END)::text)}
			}
		]
	});
wf_define($node, 'loose', { steps => [ { name => 'l', timeout => '1 hour', sql => 'SELECT 1' } ] });
wf_define(
	$node, 'skip',
	{
		steps => [
			{ name => 'a', sql => 'SELECT 1' },
			{ name => 'never', when => '$.input.n < 0', sql => 'SELECT 2' },
			{ name => 'half', when => '$.input.n % 2 == 0', sql => 'SELECT 3' },
			{ name => 'unused', when => '$.input.n > 100', sql => 'SELECT 4' },
			{ name => 'c', sql => q{SELECT $1->'steps'->'unused'} }
		]
	});
wf_define(
	$node, 'map',
	{
		steps => [
			{
				name => 'm',
				map => { over => '$.input.items', concurrency => 2, step => { name => 'item', sql => nap(0.03) } }
			}
		]
	});
# Independent steps in a branch: named as wf.step names them.
wf_define(
	$node, 'nested',
	{
		steps => [
			{ name => 'load', sql => 'SELECT 1' },
			{
				name => 'route',
				if => '$.steps.load == 1',
				then => [
					{ name => 'p1', http => { url => $srv->url('/slow?ms=60') } },
					{ name => 'p2', http => { url => $srv->url('/slow?ms=60') } }
				]
			}
		]
	});
# A validation that fails in a run in four keeps the next step from it: a
# gate, not a step to run beside.
wf_define(
	$node, 'gate',
	{
		steps => [
			{
				name => 'check',
				sql => q{SELECT CASE WHEN ($1->'input'->>'n')::int % 4 = 0 THEN jsonb_build_object('error', 'not valid')
						 ELSE jsonb_build_object('ok', pg_sleep(0.15)::text) END}
			},
			# 150 ms, as check: could run beside it but for the gate.  (An
			# http step's time would follow the mock server's load.)
			{ name => 'act', sql => nap(0.15) }
		]
	});
# Nothing to advise: each step reads the one before it (SQL, a "when", the
# whole context), or follows a sleep; equal steps, timeouts that fit.
wf_define(
	$node, 'clean',
	{
		steps => [
			{ name => 'a', timeout => '5 seconds', sql => nap(0.02) },
			{ name => 'b', sql => q{SELECT $1->'steps'->'a'} },
			{ name => 'c', when => '$.steps.b != null', sql => nap(0.02) },
			{ name => 'd', sql => q{SELECT jsonb_build_object('all', $1, 's', pg_sleep(0.02)::text)} },
			{ name => 'pause', sleep => '20 milliseconds' },
			{ name => 'e', sql => nap(0.02) }
		]
	});

is(run_all(12, qw(seq seqdeps skipdeps slowsql serial slow flaky tight loose skip map clean nested gate)),
	'completed=165,failed=3',
	'the runs complete (but those that gate stops)');

my ($got, @rows) = recs('seq');
is($got, 'parallel a,b', 'seq: a and b could run side by side, nothing else');
is_deeply(
	$rows[0]{patch},
	[
		{ op => 'test', path => '/steps/0/name', value => 'a' },
		{ op => 'test', path => '/steps/1/name', value => 'b' },
		{ op => 'add', path => '/steps/1/dependencies', value => [] },
		{ op => 'add', path => '/steps/2/dependencies', value => [ 'a', 'b' ] }
	],
	'seq: the patch tests that a and b are where they were, makes b a root and keeps c after both');
like($rows[0]{evidence}{decided_from}, qr/templates/, 'seq: the row says it read the templates');
($got, @rows) = recs('seqdeps');
is($got, 'parallel a,b', 'seqdeps: a and b could run side by side');
is_deeply(
	$rows[0]{patch},
	[
		{ op => 'test', path => '/steps/0/name', value => 'a' },
		{ op => 'test', path => '/steps/1/name', value => 'b' },
		{ op => 'add', path => '/steps/1/dependencies', value => [] },
		{ op => 'add', path => '/steps/2/dependencies', value => [ 'a', 'b' ] },
		{ op => 'add', path => '/steps/3/dependencies', value => [ 'b', 'a' ] }
	],
	'seqdeps: the step that names b in its dependencies waits for a too');
is(apply('seqdeps', $rows[0]), 2, 'seqdeps: the patch defines version 2');

($got, @rows) = recs('skipdeps');
is($got, 'always_skipped never', 'skipdeps: the step never run, nothing else');
is_deeply(
	$rows[0]{patch},
	[
		{ op => 'test', path => '/steps/2/name', value => 'never' },
		{ op => 'add', path => '/steps/3/dependencies', value => ['a'] },
		{ op => 'remove', path => '/steps/2' }
	],
	'skipdeps: removed, the step after it inherits its dependencies');
is(apply('skipdeps', $rows[0]), 2, 'skipdeps: the patch defines version 2');

($got, @rows) = recs('slowsql');
is($got, 'parallel a,b', 'slowsql: a and b of 150 ms could run side by side');
like($rows[0]{evidence}{decided_from}, qr/SQL text/, 'slowsql: the row says it read the SQL text');
my $slowsql = [@rows];
($got) = recs('serial');
is($got, '', 'serial: no advice to run quick sql steps side by side (an executor would not)');
my $seq = [@rows];

($got, @rows) = recs('nested');
is($got, 'parallel route/p1,route/p2', 'nested: p1 and p2 of the branch could run side by side');
is_deeply(
	$rows[0]{patch},
	[
		{ op => 'test', path => '/steps/1/then/0/name', value => 'p1' },
		{ op => 'test', path => '/steps/1/then/1/name', value => 'p2' },
		{ op => 'add', path => '/steps/1/then/1/dependencies', value => [] }
	],
	'nested: the patch points into the branch');
is($node->safe_psql('postgres', 'SELECT count(*) FROM wf_validate(wf_patch(wf_export(\'nested\'), '
	  . wf_sql_quote($json->encode($rows[0]{patch})) . '::jsonb))'), '0',
	'nested: the patched definition is valid');

($got, @rows) = recs('slow');
is($got, 'slow_step y', 'slow: y is the slow step, nothing else');
ok(!defined $rows[0]{patch}, 'slow: no patch (the fix is in the step)');
cmp_ok($rows[0]{evidence}{share_of_work}, '>=', 0.5, 'slow: y took half the work or more');

($got, @rows) = recs('flaky');
is($got, 'retry_heavy f', 'flaky: f is retry-heavy, nothing else');
is($rows[0]{evidence}{top_error}, 'could not serialize, try again', 'flaky: the error is in the evidence');

($got, @rows) = recs('tight');
is($got, 'timeout_tight t', 'tight: the timeout of t is too tight (and no retry_heavy)');
is_deeply(
	$rows[0]{patch},
	[
		{ op => 'test', path => '/steps/0/name', value => 't' },
		{ op => 'add', path => '/steps/0/timeout', value => '300 milliseconds' }
	],
	'tight: the patch doubles the timeout (240 ms, rounded up)');
my $tight = [@rows];

($got, @rows) = recs('loose');
is($got, 'timeout_loose l', 'loose: the 1 hour timeout is far too loose');
is_deeply(
	$rows[0]{patch},
	[
		{ op => 'test', path => '/steps/0/name', value => 'l' },
		{ op => 'replace', path => '/steps/0/timeout', value => '1 second' }
	],
	'loose: the patch sets ten times the p99, a second at least');
my $loose = [@rows];

($got, @rows) = recs('skip');
is($got, 'always_skipped never;always_skipped unused', 'skip: the steps never run, not the one run half the time');
is_deeply(
	$rows[0]{patch},
	[ { op => 'test', path => '/steps/1/name', value => 'never' }, { op => 'remove', path => '/steps/1' } ],
	'skip: the patch removes "never"');
ok(!defined $rows[1]{patch}, 'skip: no patch for "unused", which c reads');
my $skip = [@rows];

($got, @rows) = recs('map');
is($got, 'map_concurrency m', 'map: the concurrency leaves time on the table');
is_deeply(
	$rows[0]{patch},
	[
		{ op => 'test', path => '/steps/0/name', value => 'm' },
		{ op => 'replace', path => '/steps/0/map/concurrency', value => 8 }
	],
	'map: the patch runs the 8 items at once');
my $map = [@rows];

($got) = recs('clean');
is($got, '', 'clean: nothing to advise');
($got) = recs('gate');
is($got, '', 'gate: act is not to run beside check, which failed (and was not retried)');

# A patch applied to a version where its steps have moved fails whole.
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT wf_patch('{\"steps\": [{\"name\": \"x\", \"sql\": \"SELECT 1\"}]}', "
	  . wf_sql_quote($json->encode($loose->[0]{patch})) . '::jsonb)');
like($err, qr/operation 1 of the JSON patch: "\/steps\/0\/name" is not "l"/,
	'a stale patch: its test of the step fails');

# The patches apply, and the next runs no longer have the problem.
is(apply('seq', $seq->[0]), 2, 'seq: the patch defines version 2');
is(apply('slowsql', $slowsql->[0]), 2, 'slowsql: the patch defines version 2');
is(apply('tight', $tight->[0]), 2, 'tight: the patch defines version 2');
is(apply('loose', $loose->[0]), 2, 'loose: the patch defines version 2');
is(apply('skip', $skip->[0]), 2, 'skip: the patch defines version 2');
is(apply('map', $map->[0]), 2, 'map: the patch defines version 2');
is(run_all(12, qw(seq slowsql tight loose skip map)), 'completed=72', 'the runs of the patched versions complete');
# Whether a given run's a and b overlapped depends on what else the
# executors had to do; that some did shows the hand-over at work.
cmp_ok(
	$node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM wf.run r
	  JOIN wf.steps a ON a.run_id = r.id AND a.step = 'a'
	  JOIN wf.steps b ON b.run_id = r.id AND b.step = 'b'
	 WHERE r.workflow = 'slowsql' AND r.version = 2
	   AND a.started_at < b.finished_at AND b.started_at < a.finished_at}),
	'>', 0, 'slowsql v2: a and b ran side by side');
# (Whether they then overlap depends on the executors' other work: what
# the runs' steps waited for is what the patch changed.)
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(DISTINCT s.step || ':' || s.deps::text, ' ' ORDER BY s.step || ':' || s.deps::text)
	  FROM wf.step s JOIN wf.run r ON r.id = s.run_id
	 WHERE r.workflow = 'seq' AND r.version = 2}), 'a:{} b:{} c:{a,b}',
	'seq v2: b waits for nothing, c for a and b');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM wf.history h JOIN wf.run r ON r.id = h.run_id
	 WHERE r.workflow = 'tight' AND r.version = 2 AND h.status = 'retrying'}), '0',
	'tight v2: no attempt times out');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM wf.steps s JOIN wf.run r ON r.id = s.run_id
	 WHERE r.workflow = 'skip' AND r.version = 2 AND s.step = 'never'}), '0',
	'skip v2: "never" is gone');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FILTER (WHERE s.deps = '{}') || '/' || count(*)
	  FROM wf.step s JOIN wf.run r ON r.id = s.run_id
	 WHERE r.workflow = 'map' AND r.version = 2 AND s.parent = 'm'}), '96/96',
	'map v2: the 8 items of every run wait for none of the others');
for my $wf (qw(seq slowsql tight loose map))
{
	($got) = recs($wf);
	is($got, '', "$wf v2: nothing left to advise");
}
($got) = recs('skip');
is($got, 'always_skipped unused', 'skip v2: only "unused" is left');

# -------------------------------------------------------------------------
# Circuit breakers: runs one after the other, each failing once (then 3
# times) against the mock server, with a breaker that opens at 1 failure.
# -------------------------------------------------------------------------
sub breaker_wf
{
	my ($fail, $failures) = @_;
	return {
		steps => [
			{
				name => 'call',
				http => { url => $srv->url("/flaky?key=cb$fail-{{\$.run.id}}&fail=$fail&code=503") },
				retry => { max_attempts => 6, backoff => 'fixed', initial_interval => '10ms' },
				circuit_breaker => { failures => $failures, reset_after => '50 milliseconds' }
			}
		]
	};
}

sub run_one_by_one
{
	my ($wf, $n) = @_;
	my @st;
	push @st, wf_wait($node, wf_start($node, $wf, {})) for 1 .. $n;
	my %seen;
	$seen{$_}++ for @st;
	return join(',', map { "$_=$seen{$_}" } sort keys %seen);
}

wf_define($node, 'burst', breaker_wf(1, 1));
wf_define($node, 'down', breaker_wf(3, 1));
is(run_one_by_one('burst', 10), 'completed=10', 'burst: the runs complete');
is(run_one_by_one('down', 10), 'completed=10', 'down: the runs complete');
($got, @rows) = recs('burst');
is($got, 'circuit_breaker call;retry_heavy call', 'burst: the breaker opens often (and the step retries)');
my ($cb) = grep { $_->{kind} eq 'circuit_breaker' } @rows;
my $burst = $cb;
is($cb->{evidence}{openings}, 10, 'burst: one opening per run, counted from the history');
is_deeply(
	$cb->{patch},
	[
		{ op => 'test', path => '/steps/0/name', value => 'call' },
		{ op => 'add', path => '/steps/0/circuit_breaker/failures', value => 2 }
	],
	'burst: half the attempts failed: the patch doubles "failures"');
($got, @rows) = recs('down');
($cb) = grep { $_->{kind} eq 'circuit_breaker' } @rows;
ok(defined $cb && !defined $cb->{patch}, 'down: three attempts in four failed: a row without a patch');
is(apply('burst', $burst), 2, 'burst: the patch defines version 2');
is(run_one_by_one('burst', 10), 'completed=10', 'burst v2: the runs complete');
($got) = recs('burst');
is($got, 'retry_heavy call', 'burst v2: the breaker no longer opens (the retries remain)');

# -------------------------------------------------------------------------
# Whose runs, how many, bad arguments
# -------------------------------------------------------------------------
$node->safe_psql('postgres', 'GRANT wf_admin TO alice');
($got) = recs('slow', 'bob');
is($got, '', "bob: the superuser's runs are not his measure");
($got) = recs('slow', 'alice');
is($got, 'slow_step y', 'alice (wf_admin): every role\'s runs are');
wf_define($node, 'few', { steps => [ { name => 'a', sql => 'SELECT 1' }, { name => 'b', sql => nap(0.2) } ] });
run_all(9, 'few');
($got) = recs('few');
is($got, '', 'fewer than 10 runs: no advice');

($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT * FROM wf_recommendations('nope')");
like($err, qr/42704: workflow "nope" does not exist/, 'an unknown workflow: 42704');
($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT * FROM wf_recommendations('seq', '-1 day')");
like($err, qr/22023: since must be an interval from 0 to 1000 years/, 'a negative since: 22023');

$srv->stop;
done_testing();
