
# Copyright (c) pg_workflow authors

# Basic execution of sql steps by the executors:
#  - a 3-step sequential workflow whose outputs feed the next step: outputs,
#    wf.steps, the order of wf.history, the run's output and context;
#  - a diamond DAG a -> (b, c) -> d with two executors, d combining b and c;
#  - "when" skipping a step while its successors still run;
#  - a permanent error failing the step and the run (SQLSTATE recorded,
#    later steps cancelled), on_error "skip" (step-level and workflow-level),
#    a business error ({"error": ...}), a step timeout;
#  - wf_wait refusing to wait in the transaction that started the run;
#  - LISTEN wf_events: run transitions, and step transitions once
#    pg_workflow.notify = 'steps' is reloaded; the engine notifies only
#    while a session listens to one of its channels.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;
use Time::HiRes qw(usleep);

# A small batch size makes executors hand work over to each other, so that
# the branches of a DAG run in different executors and transactions.
my $node = wf_node('basic', workers => 2, conf => "pg_workflow.batch_size = 1\n");

$node->safe_psql('postgres',
	'CREATE TABLE side_effect (run_id bigint, step text)');

# -------------------------------------------------------------------------
# A sequential workflow: each step reads the previous one's output.
# -------------------------------------------------------------------------
is( wf_define(
		$node, 'seq',
		{
			steps => [
				{
					name => 'a',
					sql =>
					  q{SELECT jsonb_build_object('n', ($1->'input'->>'n')::int + 1)}
				},
				{
					name => 'b',
					sql =>
					  q{SELECT jsonb_build_object('n', ($1->'steps'->'a'->>'n')::int * 10)}
				},
				{
					name => 'c',
					sql =>
					  q{SELECT jsonb_build_object('n', ($1->'steps'->'b'->>'n')::int + 5, 'run', $1->'run')}
				},
			]
		}),
	'1',
	'wf_define returns version 1');

my $run = wf_start($node, 'seq', { n => 4 });
like($run, qr/^\d+$/, 'wf_start returns a run id');
is(wf_wait($node, $run), 'completed', 'sequential run completed');

is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s|%s|%s|%s|%s', step, kind, status, attempt, output::text), E'\n' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $run}),
	qq{a|sql|completed|1|{"n": 5}
b|sql|completed|1|{"n": 50}
c|sql|completed|1|{"n": 55, "run": {"id": $run, "attempt": 1, "version": 1, "workflow": "seq"}}},
	'each step saw the previous output and the run context');

is( $node->safe_psql(
		'postgres', qq{
	SELECT bool_and(s.started_at IS NOT NULL AND s.finished_at >= s.started_at
					AND s.duration = s.finished_at - s.started_at AND s.error IS NULL)
	  FROM wf.steps s WHERE run_id = $run}),
	't',
	'steps have started_at, finished_at and duration');

is( $node->safe_psql(
		'postgres', qq{
	SELECT bool_and(prev.finished_at <= s.started_at)
	  FROM wf.steps s JOIN wf.steps prev ON prev.run_id = s.run_id AND prev.ord = s.ord - 1
	 WHERE s.run_id = $run}),
	't',
	'each step started after its predecessor finished');

is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(coalesce(step, '-') || ':' || status || ':' || coalesce(attempt::text, '-'), ' ' ORDER BY id)
	  FROM wf.history WHERE run_id = $run}),
	'-:pending:- -:running:- a:completed:1 b:completed:1 c:completed:1 -:completed:-',
	'wf.history records every transition in order');

is( $node->safe_psql(
		'postgres', qq{
	SELECT bool_and(actor::text = current_user) AND count(*) = 6
	       AND bool_and(at IS NOT NULL)
	  FROM wf.history WHERE run_id = $run}),
	't',
	'history rows are attributed to the role that started the run');

is( $node->safe_psql(
		'postgres', qq{
	SELECT r.status, r.workflow, r.version, r.owner::text = current_user,
	       r.output = (SELECT output FROM wf.steps WHERE run_id = r.id AND step = 'c'),
	       r.error IS NULL, r.started_at <= r.finished_at, r.created_at <= r.started_at
	  FROM wf.runs r WHERE id = $run}),
	'completed|seq|1|t|t|t|t|t',
	'run output is the last step output');

# wf_wait cannot wait for a run started in its own transaction.
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{
	BEGIN;
	SELECT wf_wait(wf_start('seq', '{"n": 1}'), '1s');
	COMMIT;});
like(
	$stderr,
	qr/cannot wait for run \d+ in the transaction that started it/,
	'wf_wait refuses to wait in the starting transaction');

# -------------------------------------------------------------------------
# A diamond: a -> (b, c) -> d, d combines b and c.
# -------------------------------------------------------------------------
wf_define(
	$node, 'diamond',
	{
		steps => [
			{
				name => 'a',
				sql => q{SELECT jsonb_build_object('x', ($1->'input'->>'i')::int)}
			},
			{
				name => 'b',
				dependencies => ['a'],
				sql =>
				  q{SELECT jsonb_build_object('b', ($1->'steps'->'a'->>'x')::int * 2, 'pid', pg_backend_pid())}
			},
			{
				name => 'c',
				dependencies => ['a'],
				sql =>
				  q{SELECT jsonb_build_object('c', ($1->'steps'->'a'->>'x')::int + 100, 'pid', pg_backend_pid())}
			},
			{
				name => 'd',
				dependencies => [ 'b', 'c' ],
				sql =>
				  q{SELECT jsonb_build_object('sum', ($1->'steps'->'b'->>'b')::int + ($1->'steps'->'c'->>'c')::int, 'seen', (SELECT jsonb_agg(k ORDER BY k) FROM jsonb_object_keys($1->'steps') k))}
			},
		]
	});

my $ndiamond = 30;
my @diamond = wf_start_many($node, 'diamond', $ndiamond);
is( wf_wait_all($node, @diamond),
	join(',', ('completed') x $ndiamond),
	'diamond runs completed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(output::text, ',' ORDER BY run_id) FROM wf.steps
	 WHERE run_id IN (@{[ join(',', @diamond) ]}) AND step = 'd'}),
	join(',',
		map { qq({"sum": @{[ 2 * $_ + $_ + 100 ]}, "seen": ["a", "b", "c"]}) }
		  (1 .. $ndiamond)),
	'd combined the outputs of b and c');
is( $node->safe_psql(
		'postgres', qq{
	SELECT count(*) FROM wf.steps d
	  JOIN wf.steps b ON b.run_id = d.run_id AND b.step = 'b'
	  JOIN wf.steps c ON c.run_id = d.run_id AND c.step = 'c'
	  JOIN wf.steps a ON a.run_id = d.run_id AND a.step = 'a'
	 WHERE d.run_id IN (@{[ join(',', @diamond) ]}) AND d.step = 'd'
	   AND d.started_at >= greatest(b.finished_at, c.finished_at)
	   AND least(b.started_at, c.started_at) >= a.finished_at}),
	$ndiamond,
	'd started after b and c finished, b and c after a');
note 'diamond runs whose b and c ran in different executors: '
  . $node->safe_psql(
	'postgres', qq{
	SELECT count(*) FROM wf.steps b JOIN wf.steps c USING (run_id)
	 WHERE b.step = 'b' AND c.step = 'c' AND b.output->'pid' <> c.output->'pid'
	   AND run_id IN (@{[ join(',', @diamond) ]})});
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(DISTINCT output::text, ',') FROM wf.runs
	 WHERE id = $diamond[0]}),
	'{"sum": 103, "seen": ["a", "b", "c"]}',
	'diamond run output is the output of d');

# -------------------------------------------------------------------------
# "when": a false predicate skips the step, its successor still runs.
# -------------------------------------------------------------------------
wf_define(
	$node, 'cond',
	{
		steps => [
			{
				name => 'a',
				sql =>
				  q{SELECT jsonb_build_object('flag', ($1->'input'->>'flag')::boolean)}
			},
			{
				name => 'b',
				when => '$.steps.a.flag == true',
				sql =>
				  q{INSERT INTO side_effect VALUES (($1->'run'->>'id')::bigint, 'b') RETURNING 'b ran'}
			},
			{
				name => 'c',
				sql =>
				  q{SELECT jsonb_build_object('b', $1->'steps'->'b', 'has_b', $1->'steps' ? 'b')}
			},
		]
	});
my $skip_run = wf_start($node, 'cond', { flag => JSON::PP::false });
my $take_run = wf_start($node, 'cond', { flag => JSON::PP::true });
is(wf_wait($node, $skip_run), 'completed', 'run with a skipped step completed');
is(wf_wait($node, $take_run), 'completed', 'run with a taken step completed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s|%s|%s|%s', step, status, attempt, coalesce(output::text, 'null')), E'\n' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $skip_run}),
	qq{a|completed|1|{"flag": false}
b|skipped|0|null
c|completed|1|{"b": null, "has_b": true}},
	'false "when" skips the step, the next step runs');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s|%s|%s', step, status, coalesce(output::text, 'null')), E'\n' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $take_run}),
	qq{a|completed|{"flag": true}
b|completed|"b ran"
c|completed|{"b": "b ran", "has_b": true}},
	'true "when" runs the step');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(run_id::text, ',' ORDER BY run_id) FROM side_effect}),
	$take_run,
	'only the taken step had an effect');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(coalesce(step, '-') || ':' || status, ' ' ORDER BY id)
	  FROM wf.history WHERE run_id = $skip_run}),
	'-:pending -:running a:completed b:skipped c:completed -:completed',
	'the skip is recorded in wf.history');

# -------------------------------------------------------------------------
# A permanent error fails the step and the run; later steps are cancelled.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', 'TRUNCATE side_effect');
wf_define(
	$node, 'broken',
	{
		steps => [
			{
				name => 'a',
				sql =>
				  q{INSERT INTO side_effect VALUES (($1->'run'->>'id')::bigint, 'a') RETURNING 1}
			},
			{
				name => 'b',
				sql =>
				  q{WITH i AS (INSERT INTO side_effect VALUES (($1->'run'->>'id')::bigint, 'b') RETURNING 1)
					SELECT 10 / ($1->'input'->>'zero')::int FROM i}
			},
			{
				name => 'c',
				sql =>
				  q{INSERT INTO side_effect VALUES (($1->'run'->>'id')::bigint, 'c') RETURNING 1}
			},
		]
	});
my $broken = wf_start($node, 'broken', { zero => 0 });
is(wf_wait($node, $broken), 'failed', 'run with a permanent error failed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s', step, status, attempt,
							 error->>'sqlstate', error->>'class', error->>'message'), E'\n' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $broken}),
	qq{a|completed|1|||
b|failed|1|22012|permanent|division by zero
c|cancelled|0|||},
	'the failing step is failed with its SQLSTATE, the next one cancelled');
is( $node->safe_psql(
		'postgres', qq{
	SELECT error->>'step', error->>'sqlstate', error->>'class', error->>'message',
	       output IS NULL, finished_at IS NOT NULL
	  FROM wf.runs WHERE id = $broken}),
	'b|22012|permanent|division by zero|t|t',
	'wf.runs.error names the step, SQLSTATE and class');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(step, ',' ORDER BY step) FROM side_effect WHERE run_id = $broken}),
	'a',
	'the failed step left no effect, the cancelled one never ran');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(coalesce(step, '-') || ':' || status, ' ' ORDER BY id)
	  FROM wf.history WHERE run_id = $broken}),
	'-:pending -:running a:completed b:failed -:failed',
	'the failure is recorded in wf.history');

# -------------------------------------------------------------------------
# on_error "skip": the failed step is skipped (error kept) and the run goes on.
# -------------------------------------------------------------------------
my $skipdef = {
	steps => [
		{ name => 'a', sql => q{SELECT 1} },
		{
			name => 'b',
			on_error => 'skip',
			sql => q{SELECT 10 / ($1->'input'->>'zero')::int}
		},
		{ name => 'c', sql => q{SELECT jsonb_build_object('b', $1->'steps'->'b')} },
	]
};
wf_define($node, 'skipper', $skipdef);
my $skipper = wf_start($node, 'skipper', { zero => 0 });
is(wf_wait($node, $skipper), 'completed',
	'run with on_error skip completed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s|%s|%s|%s|%s', step, status, attempt,
							 coalesce(output::text, 'null'), coalesce(error->>'sqlstate', '')), E'\n' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $skipper}),
	qq{a|completed|1|1|
b|skipped|1|null|22012
c|completed|1|{"b": null}|},
	'on_error skip: the step is skipped with its error kept');

# The same as the workflow's default, in the object form.
delete $skipdef->{steps}[1]{on_error};
$skipdef->{on_error} = { strategy => 'skip' };
wf_define($node, 'skipper2', $skipdef);
my $skipper2 = wf_start($node, 'skipper2', { zero => 0 });
is(wf_wait($node, $skipper2), 'completed',
	'run with workflow-level on_error skip completed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(step || ':' || status, ' ' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $skipper2}),
	'a:completed b:skipped c:completed',
	'workflow-level on_error applies to the steps');

# -------------------------------------------------------------------------
# A business error: the step returns {"error": ...}.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', 'TRUNCATE side_effect');
wf_define(
	$node, 'business',
	{
		steps => [
			{
				name => 'charge',
				sql =>
				  q{WITH i AS (INSERT INTO side_effect VALUES (($1->'run'->>'id')::bigint, 'charge') RETURNING 1)
					SELECT jsonb_build_object('error', 'insufficient funds', 'balance', 3) FROM i}
			},
			{ name => 'ship', sql => q{SELECT 1} },
		]
	});
my $business = wf_start($node, 'business');
is(wf_wait($node, $business), 'failed', 'business error fails the run');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s|%s|%s|%s|%s', step, status, attempt,
							 error->>'class', error->>'message'), E'\n' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $business}),
	qq{charge|failed|1|business|insufficient funds
ship|cancelled|0||},
	'business error: step failed with class business, not retried');
is( $node->safe_psql(
		'postgres', qq{
	SELECT error->>'step', error->>'class' FROM wf.runs WHERE id = $business}),
	'charge|business',
	'business error recorded on the run');
is($node->safe_psql('postgres', 'SELECT count(*) FROM side_effect'),
	'0', 'the effects of a step with a business error are rolled back');

# -------------------------------------------------------------------------
# A step timeout cancels the statement; its effects roll back.
# -------------------------------------------------------------------------
wf_define(
	$node, 'slow',
	{
		steps => [
			{
				name => 'sleepy',
				timeout => '200ms',
				retry => { max_attempts => 1 },
				sql =>
				  q{WITH i AS (INSERT INTO side_effect VALUES (($1->'run'->>'id')::bigint, 'sleepy') RETURNING 1)
					SELECT pg_sleep(60) FROM i}
			},
			{ name => 'after', sql => q{SELECT 1} },
		]
	});
my $slow = wf_start($node, 'slow');
is(wf_wait($node, $slow), 'failed', 'timed-out run failed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT status, attempt, error->>'sqlstate', error->>'class', error->>'timeout',
	       error->>'message' ~ 'timed out'
	  FROM wf.steps WHERE run_id = $slow AND step = 'sleepy'}),
	'failed|1|57014|transient|true|t',
	'the step failed as a timeout');
is( $node->safe_psql(
		'postgres', qq{
	SELECT (SELECT status FROM wf.steps WHERE run_id = $slow AND step = 'after'),
	       (SELECT error->>'step' FROM wf.runs WHERE id = $slow),
	       (SELECT count(*) FROM side_effect WHERE run_id = $slow)}),
	'cancelled|sleepy|0',
	'the timed-out attempt left no effect, its successor was cancelled');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND query ~ 'pg_sleep' AND state = 'active'}),
	'0',
	'no executor is still sleeping in the step');

# -------------------------------------------------------------------------
# NOTIFY wf_events.
# -------------------------------------------------------------------------

# Notifications psql printed in $out, as decoded payloads.
sub payloads
{
	my ($out) = @_;
	my @p;
	while ($out =~
		/Asynchronous notification "wf_events" with payload "(.*)" received from server process/g
	  )
	{
		push @p, decode_json($1);
	}
	return @p;
}

# Waits until the listening session has received the notification of the
# end of $run; returns the payloads about $run, in the order received.
sub events_of
{
	my ($listener, $run, $final) = @_;
	my $out = '';
	my @events;
	foreach my $i (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		$out .= $listener->query_safe('SELECT 1');
		@events = grep { $_->{run} == $run } payloads($out);
		last
		  if grep { !defined $_->{step} && $_->{status} eq $final } @events;
		usleep(100_000);
	}
	return @events;
}

sub event_list
{
	return join(' ', map { ($_->{step} // '-') . ':' . $_->{status} } @_);
}

# The engine notifies only while a session listens to one of its channels
# (PostgreSQL serialises the commits of all transactions that notify).
is($node->safe_psql('postgres', 'SELECT wf._listened()'), 'f', 'nobody listens yet');
my $other_listener = $node->background_psql('postgres');
$other_listener->query_safe('LISTEN not_ours');
is($node->safe_psql('postgres', 'SELECT wf._listened()'), 'f',
	'a LISTEN of a channel that is not the engine\'s does not count');
$other_listener->query_safe(q{DO $$ BEGIN EXECUTE 'LISTEN wf_alerts'; END $$});
is($node->safe_psql('postgres', 'SELECT wf._listened()'), 't',
	'a LISTEN of wf_alerts, even from PL/pgSQL, counts');
$other_listener->quit;
ok($node->poll_query_until('postgres', 'SELECT NOT wf._listened()'),
	'and no longer once its session has ended');

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN wf_events');

my $notified = wf_start($node, 'seq', { n => 1 });
is(wf_wait($node, $notified), 'completed', 'run for notifications completed');
my @ev = events_of($listener, $notified, 'completed');
is(event_list(@ev), '-:pending -:running -:completed',
	'wf_events announces run transitions only by default');
is( scalar(
		grep {
			join(',', sort keys %$_) ne 'run,status,step,workflow'
			  || $_->{workflow} ne 'seq'
		} @ev),
	0,
	'payloads have keys run, workflow, step, status');

my $notified_fail = wf_start($node, 'broken', { zero => 0 });
is(wf_wait($node, $notified_fail), 'failed', 'failing run for notifications');
is(event_list(events_of($listener, $notified_fail, 'failed')),
	'-:pending -:running -:failed',
	'wf_events announces a failed run');

# Step events once pg_workflow.notify = 'steps' is reloaded.
wf_define(
	$node, 'notify_probe',
	{
		steps => [
			{ name => 'one', sql => q{SELECT current_setting('pg_workflow.notify')} },
			{ name => 'two', sql => q{SELECT current_setting('pg_workflow.notify')} },
		]
	});
$node->append_conf('postgresql.conf', "pg_workflow.notify = 'steps'\n");
$node->reload;
ok( $node->poll_query_until(
		'postgres', q{SELECT current_setting('pg_workflow.notify')}, 'steps'),
	'new sessions see pg_workflow.notify = steps');

# Runs until one whose steps both ran in executors that have reloaded.
my $steps_run;
foreach my $i (1 .. $PostgreSQL::Test::Utils::timeout_default)
{
	my $r = wf_start($node, 'notify_probe');
	wf_wait($node, $r);
	if ($node->safe_psql('postgres',
		"SELECT bool_and(output #>> '{}' = 'steps') FROM wf.steps WHERE run_id = $r") eq 't')
	{
		$steps_run = $r;
		last;
	}
}
ok(defined $steps_run, 'executors picked up pg_workflow.notify = steps');
is(event_list(events_of($listener, $steps_run, 'completed')),
	'-:pending -:running one:completed two:completed -:completed',
	'with notify = steps, wf_events announces step transitions too');

$listener->quit;

# Nothing went wrong in the executors.
unlike(
	slurp_file($node->logfile),
	qr/TRAP:|terminated by signal|server process .* exited with exit code/,
	'no executor crashed');

$node->stop;
done_testing();
