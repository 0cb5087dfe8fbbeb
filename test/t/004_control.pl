
# Copyright (c) pg_workflow authors

# Controlling runs:
#  - wf_cancel interrupts a step running pg_sleep(60): the step and the run
#    end cancelled, the step's INSERT before the sleep never commits, the
#    executor is free again; cancelling one of several runs an executor has
#    claimed in one transaction leaves the others alone; wf_cancel of a
#    finished run returns false, of a run not started yet (start_at) true;
#  - wf_retry resumes a failed run once the cause is fixed: the failed and
#    cancelled steps run again, completed steps keep their checkpoints (their
#    effects exactly once); wf_retry of a non-failed run returns false;
#  - wf_rewind(run, 'b') of a completed a -> b -> c run runs b and c again,
#    a is kept; wf_rewind of a run whose step c is executing interrupts c
#    and runs b and c again, without a deadlock with the executor;
#  - wf_wait returns the status at its timeout and refuses REPEATABLE READ;
#  - permissions: a second role can neither see nor cancel, retry, rewind or
#    wait for another role's run (ERROR 42501); a member of wf_admin can.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('control', workers => 2);

$node->safe_psql(
	'postgres', q{
	CREATE TABLE marks (run_id bigint, step text, pid int DEFAULT pg_backend_pid());
	CREATE TABLE gate (x int);
	INSERT INTO gate VALUES (0);
	GRANT ALL ON marks, gate TO PUBLIC;});

# A step that records that it ran, then runs "then" (FROM the insert).
sub marking_step
{
	my ($name, $then, %extra) = @_;
	return {
		name => $name,
		sql => qq{WITH i AS (INSERT INTO marks (run_id, step) VALUES ((\$1->'run'->>'id')::bigint, '$name') RETURNING 1)
			SELECT $then FROM i},
		%extra
	};
}

sub marks_of
{
	my ($run) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(string_agg(step || '=' || n, ' ' ORDER BY step), '') FROM (SELECT step, count(*) AS n FROM marks WHERE run_id = $run GROUP BY step) x"
	);
}

sub steps_of
{
	my ($run) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(format('%s|%s|%s|%s', step, status, attempt, coalesce(output::text, 'null')), E'\\n' ORDER BY ord) FROM wf.steps WHERE run_id = $run"
	);
}

# -------------------------------------------------------------------------
# wf_cancel interrupts a running step.
# -------------------------------------------------------------------------
wf_define(
	$node, 'sleeper',
	{
		steps => [
			marking_step('nap', 'pg_sleep(60)'),
			marking_step('after', '1'),
		]
	});
my $sleeper = wf_start($node, 'sleeper');
ok( $node->poll_query_until(
		'postgres', qq{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND wait_event = 'PgSleep'
	   AND query = 'run $sleeper step nap'}, '1'),
	'an executor is sleeping in the step');

is($node->safe_psql('postgres', "SELECT wf_cancel($sleeper, 'changed my mind')"),
	't', 'wf_cancel of the running run returns true');
is(wf_wait($node, $sleeper), 'cancelled', 'the run is cancelled');
is( $node->safe_psql(
		'postgres', qq{
	SELECT status, error->>'message', error->>'cancelled_by' = current_user, finished_at IS NOT NULL
	  FROM wf.runs WHERE id = $sleeper}),
	'cancelled|changed my mind|t|t',
	'the run records the reason and who cancelled');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || ':' || status, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $sleeper"
	),
	'nap:cancelled after:cancelled',
	'the interrupted step and its successor are cancelled');
is(marks_of($sleeper), '', 'the INSERT before the sleep did not commit');
is( $node->safe_psql(
		'postgres', qq{
	SELECT status FROM wf.history WHERE run_id = $sleeper AND step IS NULL ORDER BY id DESC LIMIT 1}),
	'cancelled',
	'the cancellation is recorded in wf.history');
ok( $node->poll_query_until(
		'postgres', q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND wait_event = 'PgSleep'}, '0'),
	'no executor sleeps in the step any more');

# Cancelling one run among several that an executor has claimed in one
# transaction: the others complete, the cancelled one leaves nothing.
wf_define($node, 'batchy',
	{ steps => [ marking_step('slow', 'pg_sleep(0.3)') ] });
my @batch = wf_start_many($node, 'batchy', 6);
ok( $node->poll_query_until(
		'postgres', qq{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND wait_event = 'PgSleep'
	   AND query = 'run $batch[0] step slow'}, '1'),
	'an executor is running the first run of the batch');
is($node->safe_psql('postgres', "SELECT wf_cancel($batch[5], 'batch')"),
	't', 'wf_cancel of a claimed run returns true');
is( wf_wait_all($node, @batch),
	'completed,completed,completed,completed,completed,cancelled',
	'the other runs of the batch completed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(coalesce(m.n, 0)::text, ',' ORDER BY r)
	  FROM unnest(ARRAY[@{[ join(',', @batch) ]}]::bigint[]) r
	  LEFT JOIN (SELECT run_id, count(*) AS n FROM marks GROUP BY run_id) m ON m.run_id = r}),
	'1,1,1,1,1,0',
	'each completed run had its effect once, the cancelled one none');
note 'executors of the batch: '
  . $node->safe_psql('postgres',
	"SELECT string_agg(run_id || ':' || pid, ' ' ORDER BY run_id) FROM marks WHERE run_id IN (@{[ join(',', @batch) ]})");

# The executors are free for other runs.
wf_define($node, 'quick', { steps => [ marking_step('only', q{'done'}) ] });
my $quick = wf_start($node, 'quick');
is(wf_wait($node, $quick), 'completed', 'a later run completes');
is(marks_of($quick), 'only=1', 'the later run ran once');

is($node->safe_psql('postgres', "SELECT wf_cancel($quick)"),
	'f', 'wf_cancel of a completed run returns false');
is($node->safe_psql('postgres', "SELECT wf_cancel($sleeper)"),
	'f', 'wf_cancel of a cancelled run returns false');
is($node->safe_psql('postgres', "SELECT status FROM wf.runs WHERE id = $quick"),
	'completed', 'the completed run stays completed');

# A run that has not started yet.
my $later = wf_start($node, 'quick', {},
	{ start_at => '2999-01-01 00:00:00+00' });
is($node->safe_psql('postgres', "SELECT wf_wait($later, '10ms')"),
	'pending', 'wf_wait returns the current status at its timeout');
{
	my ($r, $o, $e) = $node->psql('postgres', qq{
		BEGIN ISOLATION LEVEL REPEATABLE READ;
		SELECT wf_wait($later, '60s');
		COMMIT;});
	like($e, qr/wf_wait cannot wait in a REPEATABLE READ or SERIALIZABLE transaction/,
		'wf_wait refuses to wait under a snapshot that would never change');
}
is($node->safe_psql('postgres', "SELECT wf_cancel($later, 'not needed')"),
	't', 'wf_cancel of a run waiting for start_at returns true');
is(wf_wait($node, $later), 'cancelled', 'that run is cancelled');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || ':' || status || ':' || attempt, ' ') FROM wf.steps WHERE run_id = $later"
	),
	'only:cancelled:0',
	'its step never ran');

my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT wf_cancel(999999)");
like($stderr, qr/ERROR:  42704: run 999999 does not exist/,
	'wf_cancel of an unknown run raises undefined_object');

# -------------------------------------------------------------------------
# wf_retry of a failed run after the cause is fixed.
# -------------------------------------------------------------------------
wf_define(
	$node, 'gated',
	{
		steps => [
			marking_step('a', q{'a'}),
			marking_step('b', q{10 / (SELECT x FROM gate)}),
			marking_step('c', q{($1->'steps'->>'b')::int + 1}),
		]
	});
my $gated = wf_start($node, 'gated');
is(wf_wait($node, $gated), 'failed', 'the gated run failed');
is(steps_of($gated), "a|completed|1|\"a\"\nb|failed|1|null\nc|cancelled|0|null",
	'a completed, b failed, c cancelled');
is(marks_of($gated), 'a=1', 'only a left an effect');

$node->safe_psql('postgres', 'UPDATE gate SET x = 2');
is($node->safe_psql('postgres', "SELECT wf_retry($gated)"),
	't', 'wf_retry of the failed run returns true');
is(wf_wait($node, $gated), 'completed', 'the retried run completed');
is( steps_of($gated), "a|completed|1|\"a\"\nb|completed|1|5\nc|completed|1|6",
	'b and c ran again, a kept its checkpoint');
is(marks_of($gated), 'a=1 b=1 c=1',
	'every step had its effect exactly once');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(coalesce(step, '-') || ':' || status, ' ' ORDER BY id)
	  FROM wf.history WHERE run_id = $gated}),
	'-:pending -:running a:completed b:failed -:failed -:running b:completed c:completed -:completed',
	'the retry is recorded in wf.history');
is( $node->safe_psql(
		'postgres', qq{
	SELECT detail->>'retried' FROM wf.history
	 WHERE run_id = $gated AND step IS NULL AND status = 'running' ORDER BY id DESC LIMIT 1}),
	'true',
	'the history row of the retry says so');
is( $node->safe_psql(
		'postgres',
		"SELECT status, output, error IS NULL FROM wf.runs WHERE id = $gated"),
	'completed|6|t',
	'the run output is the new last output, the error is gone');
is($node->safe_psql('postgres', "SELECT wf_retry($gated)"),
	'f', 'wf_retry of a completed run returns false');
is($node->safe_psql('postgres', "SELECT wf_retry($sleeper)"),
	'f', 'wf_retry of a cancelled run returns false');

# -------------------------------------------------------------------------
# wf_rewind of a completed run.
# -------------------------------------------------------------------------
wf_define(
	$node, 'abc',
	{
		steps => [
			marking_step('a', q{(SELECT count(*) FROM marks WHERE run_id = ($1->'run'->>'id')::bigint AND step = 'a')}),
			marking_step('b', q{(SELECT count(*) FROM marks WHERE run_id = ($1->'run'->>'id')::bigint AND step = 'b')}),
			marking_step('c', q{jsonb_build_object('b', $1->'steps'->'b', 'n', (SELECT count(*) FROM marks WHERE run_id = ($1->'run'->>'id')::bigint AND step = 'c'))}),
		]
	});
my $abc = wf_start($node, 'abc');
is(wf_wait($node, $abc), 'completed', 'the a-b-c run completed');
# The INSERT of a step is not visible to its own count: first runs count 0.
is(steps_of($abc), "a|completed|1|0\nb|completed|1|0\nc|completed|1|{\"b\": 0, \"n\": 0}",
	'each step ran once');
is($node->safe_psql('postgres', "SELECT wf_rewind($abc, 'b')"),
	't', 'wf_rewind to b returns true');
is(wf_wait($node, $abc), 'completed', 'the rewound run completed again');
is(marks_of($abc), 'a=1 b=2 c=2', 'b and c ran again, a did not');
is(steps_of($abc), "a|completed|1|0\nb|completed|1|1\nc|completed|1|{\"b\": 1, \"n\": 1}",
	'b and c have new outputs, a kept its checkpoint');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(coalesce(step, '-') || ':' || status, ' ' ORDER BY id)
	  FROM wf.history WHERE run_id = $abc}),
	'-:pending -:running a:completed b:completed c:completed -:completed '
	  . 'b:rewound -:running b:completed c:completed -:completed',
	'the rewind is recorded in wf.history');
is( $node->safe_psql('postgres', "SELECT output FROM wf.runs WHERE id = $abc"),
	'{"b": 1, "n": 1}',
	'the run output is the new output of c');
($ret, $stdout, $stderr) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT wf_rewind($abc, 'nosuch')");
like($stderr, qr/ERROR:  42704: run $abc has no step ["']nosuch["']/,
	'wf_rewind to an unknown step raises undefined_object');

# wf_rewind of a run whose step c is executing right now, in an executor
# transaction of its own (b is slower than pg_workflow.batch_time, so the
# batch that ran a and b has committed before c starts).  c cleans up for a
# moment when it is cancelled, as a step may.
$node->safe_psql(
	'postgres', q{
	CREATE TABLE nap (secs float8);
	INSERT INTO nap VALUES (60);
	CREATE FUNCTION nap_with_cleanup(secs float8) RETURNS int
	LANGUAGE plpgsql AS $f$
	BEGIN
		PERFORM pg_sleep(secs);
		RETURN 1;
	EXCEPTION WHEN query_canceled THEN
		PERFORM pg_sleep(0.2);
		RAISE;
	END
	$f$;});
wf_define(
	$node, 'rewind_running',
	{
		steps => [
			marking_step('a', '1'),
			marking_step('b', '(SELECT 2 FROM pg_sleep(0.1))'),
			marking_step('c', 'nap_with_cleanup((SELECT secs FROM nap))'),
		]
	});
my $rr = wf_start($node, 'rewind_running');
ok( $node->poll_query_until(
		'postgres', qq{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND wait_event = 'PgSleep'
	   AND query = 'run $rr step c'}, '1'),
	'an executor is running step c');
$node->safe_psql('postgres', 'UPDATE nap SET secs = 0');
my $log_offset = -s $node->logfile;
($ret, $stdout, $stderr) =
  $node->psql('postgres', "SELECT wf_rewind($rr, 'b')");
is(wf_wait($node, $rr), 'completed', 'the run being rewound completes');
# The rewinder interrupts c, then locks the run, which waits for the
# executor's transaction (its claim holds the run KEY SHARE): the two never
# wait for each other's rows in opposite orders.
is($stdout, 't', 'wf_rewind of a running run returns true');
is(marks_of($rr), 'a=1 b=2 c=1', 'b ran again, c ran to its end once');
unlike(slurp_file($node->logfile, $log_offset),
	qr/deadlock detected/, 'no deadlock');

# -------------------------------------------------------------------------
# Permissions.
# -------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE carol LOGIN IN ROLE wf_admin;
	UPDATE gate SET x = 0;});

# Runs SQL as a role; returns (stdout, stderr) with SQLSTATEs in errors.
sub as_role
{
	my ($role, $sql) = @_;
	my ($r, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET ROLE $role;\n$sql");
	return ($out, $err);
}

my ($out, $err) = as_role(
	'alice', q{
	SELECT wf_define('alice_wf', '{"steps": [
		{"name": "who", "sql": "SELECT current_user::text"},
		{"name": "b", "sql": "SELECT 10 / (SELECT x FROM gate)"}]}');
	SELECT wf_start('alice_wf');});
my ($alice_version, $alice_run) = split /\n/, $out;
is($err, '', 'alice defined and started a workflow');
is(wf_wait($node, $alice_run), 'failed', "alice's run failed at b");
is( $node->safe_psql(
		'postgres',
		"SELECT output #>> '{}' FROM wf.steps WHERE run_id = $alice_run AND step = 'who'"),
	'alice',
	"alice's step ran as alice");
is( $node->safe_psql(
		'postgres', "SELECT owner FROM wf.runs WHERE id = $alice_run"),
	'alice', 'the run belongs to alice');

($out, $err) = as_role('bob',
	"SELECT count(*) FROM wf.runs WHERE id = $alice_run;"
	  . "SELECT count(*) FROM wf.steps WHERE run_id = $alice_run;"
	  . "SELECT count(*) FROM wf.history WHERE run_id = $alice_run;");
is($out, "0\n0\n0", "bob sees nothing of alice's run");

$node->safe_psql('postgres', 'UPDATE gate SET x = 5');
foreach my $call ("wf_retry($alice_run)", "wf_rewind($alice_run, 'b')",
	"wf_cancel($alice_run)", "wf_wait($alice_run, '1s')")
{
	($out, $err) = as_role('bob', "SELECT $call");
	like(
		$err,
		qr/ERROR:  42501: permission denied for run $alice_run/,
		"bob cannot $call");
}
is( $node->safe_psql(
		'postgres',
		"SELECT status, (SELECT count(*) FROM wf.history WHERE run_id = $alice_run) FROM wf.runs WHERE id = $alice_run"
	),
	'failed|5',
	"alice's run is untouched");

# carol, a member of wf_admin, may.
($out, $err) = as_role('carol',
	"SELECT count(*) FROM wf.runs WHERE id = $alice_run; SELECT wf_retry($alice_run)");
is($out, "1\nt", 'carol (wf_admin) sees the run and retries it');
is($err, '', 'without error');
is(wf_wait($node, $alice_run), 'completed', "alice's run completed after carol's retry");
is( $node->safe_psql(
		'postgres',
		"SELECT output FROM wf.steps WHERE run_id = $alice_run AND step = 'b'"),
	'2',
	'the retried step ran');
is( $node->safe_psql(
		'postgres', qq{
	SELECT actor FROM wf.history WHERE run_id = $alice_run AND detail->>'retried' = 'true'}),
	'carol',
	'the retry is attributed to carol');

($out, $err) = as_role('carol', "SELECT wf_rewind($alice_run, 'b')");
is($out, 't', 'carol rewinds alice\'s run');
is(wf_wait($node, $alice_run), 'completed', 'the rewound run completed');

($out, $err) = as_role('alice',
	"SELECT wf_start('alice_wf', '{}', '{\"start_at\": \"2999-01-01\"}')");
my $alice_later = $out;
($out, $err) = as_role('bob', "SELECT wf_cancel($alice_later)");
like($err, qr/ERROR:  42501: permission denied for run $alice_later/,
	'bob cannot cancel a pending run of alice');
($out, $err) = as_role('carol', "SELECT wf_cancel($alice_later, 'admin')");
is($out, 't', 'carol cancels it');
is(wf_wait($node, $alice_later), 'cancelled', 'the run is cancelled');

# alice herself controls her runs.
($out, $err) = as_role('alice',
	"SELECT wf_start('alice_wf', '{}', '{\"start_at\": \"2999-01-01\"}')");
($out, $err) = as_role('alice', "SELECT wf_cancel($out)");
is($out, 't', 'alice cancels her own run');

$node->stop;
done_testing();
