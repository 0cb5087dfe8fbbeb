
# Copyright (c) pg_workflow authors

# Durable waits: sleep timers, signals and events.
#  - 10,000 runs of a one-step workflow {"sleep": {"until": "{{$.input.at}}"}}
#    whose "at" values are spread from 20 s to 30 s ahead, started in one
#    transaction: all of them wait; while they do, the executors are idle
#    (wait_event Extension, no query running); the server restarts while
#    they sleep; afterwards every run completes and no step finished before
#    its "at" (never early), each at its first attempt;
#  - wait_for signal: a signal sent before the step waits (in the very
#    transaction that starts the run) is kept and taken; one sent after the
#    step waits wakes it; both complete with the signal's payload;
#  - wait_for event with a key: an event with the wrong key does not wake
#    the step (it stays waiting), the right key does; wf_emit in a
#    rolled-back transaction starts nothing and wakes nothing; a workflow
#    subscribed with wf_on_event starts once per matching emit and not when
#    its condition is false; an emit committed after an executor put the
#    step to wait (without waiting for the emitter) wakes it;
#  - no lost wake-up: 50 concurrent pgbench clients each start a run and
#    signal it at once (after a random 0-60 ms), racing the executors that
#    are putting the step to wait; every run completes with its payload;
#    no wf_signal and no step attempt fails with a deadlock meanwhile.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('waits', workers => 2);
my $nruns = 10000;

# -------------------------------------------------------------------------
# 10,000 durable timers across a restart.
# -------------------------------------------------------------------------
wf_define($node, 'nap',
	{ steps => [ { name => 'nap', sleep => { until => '{{$.input.at}}' } } ] });

# The timers fire from 20 s to 30 s after the start, one every millisecond:
# the first fires well after all of them have started waiting (which takes
# about 10 s on two busy cores).
$node->safe_psql(
	'postgres', qq{
	SELECT count(wf_start('nap', jsonb_build_object('i', g, 'at',
			clock_timestamp() + interval '20 s' + (g - 1) * interval '1 ms')))
	  FROM generate_series(1, $nruns) g});
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.runs WHERE workflow = 'nap'}),
	$nruns, "$nruns sleeping runs started in one transaction");

ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FILTER (WHERE status = 'waiting') FROM wf.runs WHERE workflow = 'nap'},
		$nruns),
	"all $nruns runs are waiting");
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FILTER (WHERE s.status = 'waiting' AND s.ready_at = (r.input->>'at')::timestamptz)
	  FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id
	 WHERE r.workflow = 'nap'}),
	$nruns,
	'each waiting step has its timer in ready_at, equal to its input "at"');

# While every run sleeps, the executors sleep too: idle, in their wait
# event, running no statement.  Sampled a few times.
foreach my $sample (1 .. 3)
{
	ok( $node->poll_query_until(
			'postgres', q{
		SELECT count(*) FILTER (WHERE state = 'idle' AND wait_event_type = 'Extension'
								  AND wait_event = 'Extension')
			   || '/' || count(*)
		  FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'},
			'2/2'),
		"sample $sample: both executors idle in wait event Extension");
}
# Where the runs were when the server went down (not asserted: timing).
my $sleeping = $node->safe_psql('postgres',
	q{SELECT count(*) FROM wf.runs WHERE workflow = 'nap' AND status = 'waiting'});
note "$sleeping runs still sleeping at the restart";
cmp_ok($sleeping, '>', 0, 'runs were sleeping when the server restarted');

$node->restart;
ok(wf_wait_for_executors($node, 2), 'two executors after the restart');

ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FROM wf.runs WHERE workflow = 'nap' AND status IN ('pending', 'running', 'waiting')},
		'0'),
	'every sleeping run has ended after the restart');
is( $node->safe_psql(
		'postgres',
		q{SELECT status, count(*) FROM wf.runs WHERE workflow = 'nap' GROUP BY status}),
	"completed|$nruns",
	"all $nruns runs completed");
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*),
		   count(*) FILTER (WHERE s.status = 'completed' AND s.attempt = 1),
		   count(*) FILTER (WHERE s.finished_at < (r.input->>'at')::timestamptz),
		   count(*) FILTER (WHERE r.finished_at < (r.input->>'at')::timestamptz)
	  FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id
	 WHERE r.workflow = 'nap'}),
	"$nruns|$nruns|0|0",
	'every step completed at its first attempt, none before its "at"');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (
		SELECT h.run_id, string_agg(h.status, ' ' ORDER BY h.id) AS steps
		  FROM wf.history h JOIN wf.runs r ON r.id = h.run_id
		 WHERE r.workflow = 'nap' AND h.step = 'nap' GROUP BY h.run_id) x
	 WHERE steps = 'waiting completed'}),
	$nruns,
	'each step waited once and completed once');

# -------------------------------------------------------------------------
# Signals: kept when sent before the step waits, waking it when sent after.
# -------------------------------------------------------------------------
wf_define(
	$node, 'approval',
	{
		steps => [
			{
				name => 'approve',
				wait_for => { signal => 'decision', timeout => '1 hour' }
			},
			{ name => 'act', sql => q{SELECT $1->'steps'->'approve'->'decision'} },
		]
	});

# The signal commits with the start of the run: it is there before the step
# can possibly wait.
my ($sent, $early) = split /\n/, $node->safe_psql(
	'postgres', q{
	BEGIN;
	SELECT wf_start('approval') AS r \gset
	SELECT wf_signal(:r, 'decision', '{"decision": "early"}');
	COMMIT;
	SELECT :r;});
is($sent, 't', 'wf_signal before the step waits returns true');
is(wf_wait($node, $early), 'completed', 'run signalled before the wait completed');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || '=' || output::text, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $early"
	),
	'approve={"decision": "early"} act="early"',
	'the early signal\'s payload is the step output');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(status, ' ' ORDER BY id) FROM wf.history WHERE run_id = $early AND step = 'approve'"
	),
	'completed',
	'the step took the kept signal without ever waiting');

my $late = wf_start($node, 'approval');
ok( $node->poll_query_until(
		'postgres',
		"SELECT status FROM wf.steps WHERE run_id = $late AND step = 'approve'",
		'waiting'),
	'second run is waiting for its signal');
is($node->safe_psql('postgres', "SELECT status FROM wf.runs WHERE id = $late"),
	'waiting', 'the run is waiting');
is( $node->safe_psql(
		'postgres',
		"SELECT wf_signal($late, 'decision', '{\"decision\": \"late\"}')"),
	't',
	'wf_signal to the waiting step returns true');
is(wf_wait($node, $late), 'completed', 'run signalled after the wait completed');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || '=' || output::text, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $late"
	),
	'approve={"decision": "late"} act="late"',
	'the late signal\'s payload is the step output');
is( $node->safe_psql(
		'postgres',
		"SELECT wf_signal($late, 'decision', '{\"decision\": \"too late\"}')"),
	'f',
	'a signal to an ended run returns false');

# -------------------------------------------------------------------------
# Events: keys, rolled-back emits, subscriptions.
# -------------------------------------------------------------------------
wf_define($node, 'on-order',
	{ steps => [ { name => 'seen', sql => q{SELECT $1->'input'} } ] });
$node->safe_psql('postgres',
	q{SELECT wf_on_event('order.paid', 'on-order', '$.amount > 100')});
wf_define(
	$node, 'ship',
	{
		steps => [
			{
				name => 'paid',
				wait_for => { event => 'order.paid', key => '{{$.input.order}}' }
			},
			{ name => 'label', sql => q{SELECT 'ship ' || ($1->'steps'->'paid'->>'tag')} },
		]
	});
my $ship = wf_start($node, 'ship', { order => 'A-1' });
ok( $node->poll_query_until(
		'postgres',
		"SELECT status FROM wf.steps WHERE run_id = $ship AND step = 'paid'",
		'waiting'),
	'the ship run waits for its event');

# Subscribed runs started so far, as "input tags".
sub subscribed
{
	return $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(input->>'tag', ',' ORDER BY id), '') FROM wf.runs WHERE workflow = 'on-order'}
	);
}

# A rolled-back emit, with the right key and a matching condition.
$node->safe_psql(
	'postgres', q{
	BEGIN;
	SELECT wf_emit('order.paid', '{"order": "A-1", "amount": 900, "tag": "rolled-back"}', 'A-1');
	ROLLBACK;});
is(subscribed(), '', 'a rolled-back wf_emit started no subscribed run');
is($node->safe_psql('postgres', "SELECT status FROM wf.steps WHERE run_id = $ship AND step = 'paid'"),
	'waiting', 'a rolled-back wf_emit woke nothing');

# The wrong key: starts the subscribed workflow (amount > 100), wakes nothing.
is( $node->safe_psql(
		'postgres',
		q{SELECT wf_emit('order.paid', '{"order": "B-2", "amount": 500, "tag": "wrong-key"}', 'B-2')}
	),
	'1',
	'wf_emit with another key: one run started, none woken');
my ($wrong_run) = split /\n/, $node->safe_psql('postgres',
	q{SELECT id FROM wf.runs WHERE workflow = 'on-order' ORDER BY id});
# Once the run that emit started has completed, the executors have seen the
# emit's commit: the ship step is still waiting.
is(wf_wait($node, $wrong_run), 'completed', 'the subscribed run completed');
is($node->safe_psql('postgres', "SELECT status FROM wf.steps WHERE run_id = $ship AND step = 'paid'"),
	'waiting', 'the step waiting for key A-1 still waits after an event for B-2');

# A condition that does not hold: nothing started.
is( $node->safe_psql(
		'postgres',
		q{SELECT wf_emit('order.paid', '{"order": "C-3", "amount": 5, "tag": "cheap"}', 'C-3')}),
	'0',
	'wf_emit whose payload fails the condition starts nothing');

# The right key: starts one and wakes one.
is( $node->safe_psql(
		'postgres',
		q{SELECT wf_emit('order.paid', '{"order": "A-1", "amount": 200, "tag": "right-key"}', 'A-1')}
	),
	'2',
	'wf_emit with the right key: one run started, one woken');
is(wf_wait($node, $ship), 'completed', 'the ship run completed');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || '=' || output::text, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $ship"
	),
	'paid={"tag": "right-key", "order": "A-1", "amount": 200} label="ship right-key"',
	'the step output is the payload of the right event, not of the rolled-back one');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FROM wf.runs WHERE workflow = 'on-order' AND status = 'completed'},
		'2'),
	'both subscribed runs completed');
is(subscribed(), 'wrong-key,right-key',
	'the subscribed workflow started once per matching emit, with the payload as input');

# An emit whose statement runs before the step starts but that commits
# after the executor has put the step to wait: the executor does not wait
# for the emitter (it holds the wait's lock, see wf._step_wait) but looks
# again shortly, and must then see the event.
my $emitter = $node->background_psql('postgres');
$emitter->query_safe(
	q{BEGIN; SELECT wf_emit('order.paid', '{"order": "D-4", "amount": 1, "tag": "slow-commit"}', 'D-4')}
);
my $slow = wf_start($node, 'ship', { order => 'D-4' });
ok( $node->poll_query_until(
		'postgres',
		"SELECT status = 'waiting' AND ready_at IS NOT NULL FROM wf.steps WHERE run_id = $slow AND step = 'paid'"),
	'the executor puts the step to wait, to look again shortly, while the emit is not committed');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND wait_event_type = 'Lock'}
	),
	'0',
	'no executor waits for the emitting transaction');
$emitter->query_safe('COMMIT');
$emitter->quit;
is(wf_wait($node, $slow), 'completed',
	'the event committed after the step was put to wait wakes it: the run waiting for D-4 completed');

# -------------------------------------------------------------------------
# A wake-up for a step whose row another transaction holds (an executor's
# claim keeps the lock of a row that changed under it) is not waited for,
# which could deadlock, nor lost: it is delivered once the row is free.
# -------------------------------------------------------------------------
wf_define(
	$node, 'held',
	{
		steps => [
			{ name => 'sig', wait_for => { signal => 'go' } },
			{ name => 'evt', wait_for => { event => 'held.evt', key => '{{$.input.k}}' } },
			{ name => 'out', sql => q{SELECT jsonb_build_array($1->'steps'->'sig', $1->'steps'->'evt')} },
		]
	});
my $held = wf_start($node, 'held', { k => 'H-1' });
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $held AND step = 'sig'", 'waiting'),
	'the held run waits for its signal');
my $holder = $node->background_psql('postgres');
$holder->query_safe(
	"BEGIN; SELECT 1 FROM wf.step WHERE run_id = $held AND step = 'sig' FOR UPDATE");
is($node->safe_psql('postgres', "SELECT wf_signal($held, 'go', '{\"s\": 1}')"),
	't', 'wf_signal does not wait for the row another transaction holds');
is( $node->safe_psql('postgres',
		"SELECT step || ' ' || wait_key FROM wf.deferred WHERE run_id = $held"),
	'sig signal:go',
	'the wake-up it could not deliver is pending');
$holder->query_safe('COMMIT');
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $held AND step = 'evt'", 'waiting'),
	'once the row is free the step is woken and takes the signal');
$holder->query_safe(
	"BEGIN; SELECT 1 FROM wf.step WHERE run_id = $held AND step = 'evt' FOR UPDATE");
is($node->safe_psql('postgres', q{SELECT wf_emit('held.evt', '{"e": 2}', 'H-1')}),
	'1', 'wf_emit counts the step whose row is held as woken');
is( $node->safe_psql('postgres',
		"SELECT step || ' ' || wait_key || ' ' || (payload->'payload')::text FROM wf.deferred WHERE run_id = $held"),
	'evt event:held.evt:H-1 {"e": 2}',
	'the event for it is pending');
$holder->query_safe('COMMIT');
$holder->quit;
is(wf_wait($node, $held), 'completed', 'the held run completed');
is($node->safe_psql('postgres', "SELECT output::text FROM wf.runs WHERE id = $held"),
	'[{"s": 1}, {"e": 2}]', 'with the signal and the event it was sent');
is($node->safe_psql('postgres', 'SELECT count(*) FROM wf.deferred'),
	'0', 'nothing is left pending');

# -------------------------------------------------------------------------
# No lost wake-up: 50 clients start runs and signal them at once.
# -------------------------------------------------------------------------
wf_define(
	$node, 'race',
	{
		steps => [
			{ name => 'go', wait_for => { signal => 'go' } },
			{ name => 'out', sql => q{SELECT $1->'steps'->'go'->'n'} },
		]
	});
# The clients retry a wf_signal that fails with a deadlock, as clients of
# PostgreSQL do, and count those failures: a deadlock is an error the client
# sees, not a lost wake-up; it is checked separately below.
$node->safe_psql(
	'postgres', q{
	CREATE TABLE signal_log (run bigint, deadlocks int);
	CREATE FUNCTION signal_retrying(run bigint, payload jsonb) RETURNS boolean
	LANGUAGE plpgsql AS $$
	DECLARE
		n	int := 0;
		ok	boolean;
	BEGIN
		LOOP
			BEGIN
				ok := wf_signal(run, 'go', payload);
				INSERT INTO signal_log VALUES (run, n);
				RETURN ok;
			EXCEPTION WHEN deadlock_detected THEN
				n := n + 1;
			END;
		END LOOP;
	END
	$$;});
my $clients = 50;
my $rounds = 4;
my $nrace = $clients * $rounds;
$node->pgbench(
	"--no-vacuum --client=$clients --jobs=2 --transactions=$rounds",
	0,
	[qr{actually processed: $nrace/$nrace}],
	[],
	'50 clients start and signal runs concurrently',
	{
		'020_race' => q{
SELECT wf_start('race', jsonb_build_object('client', :client_id)) AS r \gset
\set delay random(0, 60000)
\sleep :delay us
SELECT signal_retrying(:r, jsonb_build_object('n', :r));
}
	},
	'postgres');
is($node->safe_psql('postgres', q{SELECT count(*), count(DISTINCT run) FROM signal_log}),
	"$nrace|$nrace", 'every run was signalled once');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FILTER (WHERE status NOT IN ('pending', 'running', 'waiting')) || '/' || count(*) FROM wf.runs WHERE workflow = 'race'},
		"$nrace/$nrace"),
	'every raced run has ended (no lost wake-up)');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FILTER (WHERE status = 'completed' AND output = to_jsonb(id)) FROM wf.runs WHERE workflow = 'race'}
	),
	$nrace,
	'every raced run completed with its own signal payload');
note 'raced runs whose signal came after the step waited: '
  . $node->safe_psql(
	'postgres', q{
	SELECT count(*) FROM wf.runs r
	 WHERE r.workflow = 'race'
	   AND EXISTS (SELECT 1 FROM wf.history h WHERE h.run_id = r.id AND h.step = 'go' AND h.status = 'waiting')});
is($node->safe_psql('postgres', q{SELECT coalesce(sum(deadlocks), 0) FROM signal_log}),
	'0', 'no wf_signal failed with a deadlock');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM wf.steps s JOIN wf.runs r ON r.id = s.run_id
	 WHERE r.workflow = 'race' AND s.step = 'go' AND s.attempt > 1}),
	'0',
	'no wait_for step attempt failed with a deadlock');

# -------------------------------------------------------------------------
# A statement waiting in wf_wait that reads no table holds back no cleanup
# (no backend_xmin while it sleeps); one that does keeps its snapshot.
# -------------------------------------------------------------------------
wf_define($node, 'held-open',
	{ steps => [ { name => 'go', wait_for => { signal => 'go' } } ] });
my $ho = wf_start($node, 'held-open');
my ($ho_out1, $ho_out2, $ho_err) = ('', '', '');
my $w1 = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', "SELECT wf_wait($ho, '300 s') /* w1 */" ],
	'>', \$ho_out1, '2>', \$ho_err);
my $w2 = IPC::Run::start(
	[
		'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
		"SELECT wf_wait(r.id, '300 s') FROM wf.runs r WHERE r.id = $ho /* w2 */"
	],
	'>', \$ho_out2, '2>', \$ho_err);
ok( $node->poll_query_until(
		'postgres', q{
	SELECT count(*) = 2 FROM pg_stat_activity
	 WHERE wait_event = 'Extension' AND query LIKE '%wf_wait%/* w_ */'}),
	'two statements wait in wf_wait');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(substring(query from '/\* (w.) \*/') || '=' || (backend_xmin IS NULL), ',' ORDER BY query)
	  FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%wf_wait%/* w_ */'}),
	'w1=true,w2=false',
	'SELECT wf_wait(...) alone holds no xmin while it sleeps; one reading wf.runs keeps it');
$node->safe_psql('postgres', "SELECT wf_signal($ho, 'go')");
$w1->finish;
$w2->finish;
chomp($ho_out1, $ho_out2);
is("$ho_out1|$ho_out2", 'completed|completed', 'both see the run end');

$node->stop;
done_testing();
