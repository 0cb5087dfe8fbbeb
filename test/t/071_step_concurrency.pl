# Copyright (c) pg_workflow authors
#
# Step concurrency keys: "concurrency": {"key", "limit"} on a step.
#
# Fifty pgbench clients race to start 100 runs whose middle step holds a
# key of two tickets with a limit of 2, on 4 executors, with an executor
# killed (kill -9) and an immediate shutdown in the middle; sampled while they run (the steps holding a slot,
# and the counts of wf.step_slot), and checked afterwards by the overlap of
# the steps' started_at/finished_at, never more than 2 steps of a key are
# active; every run completes and no slot is left.  The items of a map
# share their step's key (sleeping items, which hold their slot while they
# wait).  Waiting steps get their slot by priority, then in
# the order they came; a cancelled waiting run leaves the queue; a container
# holds its slot while its children run; steps waiting on a key survive a
# restart.  A retried step keeps its slot, a
# failed or rewound one gives it up.  A transaction left open after it
# cancelled a run holding a slot holds up no executor (its release is made
# by the executors after it commits).  A key that cannot be rendered fails
# the step, not the executor.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

# The test framework turns restart_after_crash off; the engine relies on it.
my $node = wf_node('step_concurrency', workers => 4, conf => "restart_after_crash = on\n");

# ---- definition checks ---------------------------------------------------

my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_define('bad', '{"steps": [{"name": "a", "sql": "SELECT 1", "concurrency": {"limit": 0}}]}')});
like($err, qr/concurrency\.limit/, 'a step limit of 0 is rejected, naming its path');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_define('bad', '{"steps": [{"name": "a", "sql": "SELECT 1", "concurrency": {"key": "x"}}]}')});
like($err, qr/concurrency\.limit/, 'a step concurrency without a limit is rejected');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_define('bad', '{"steps": [{"name": "a", "sql": "SELECT 1", "concurrency": {"limit": 1, "per": "1 s"}}]}')});
like($err, qr/unknown key "per"/, 'an unknown key of a step concurrency is rejected');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.workflows WHERE name = 'bad'}),
	'0', 'nothing of the rejected definitions was written');

# ---- 50 racing starters, an executor killed, an immediate shutdown --------

wf_define($node, 'sync',
	{
		steps => [
			{ name => 'a', sql => 'SELECT 1' },
			{
				name => 'b',
				sql => 'SELECT pg_sleep(0.05)',
				concurrency => { key => 'ticket-{{$.input.ticket}}', limit => 2 }
			},
			{ name => 'c', sql => 'SELECT 3' },
		]
	});

my $script = "${PostgreSQL::Test::Utils::tmp_check}/step_conc_start.sql";
PostgreSQL::Test::Utils::append_to_file($script,
	q{SELECT wf_start('sync', jsonb_build_object('ticket', 1 + (random() < 0.5)::int));});

my $sample_sql = q{
	SELECT coalesce(max(n), 0),
		   (SELECT coalesce(max(active), 0) FROM wf.step_slot),
		   (SELECT count(*) FROM wf.run WHERE workflow = 'sync' AND status NOT IN ('completed', 'failed', 'cancelled'))
	  FROM (SELECT count(*) n FROM wf.step WHERE slot_key IS NOT NULL GROUP BY slot_key) s};
my ($max, $max_counted, $samples) = (0, 0, 0);
my $restarted = 0;
my $h = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '50', '-j', '2', '-t', '2', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \my $pgb_out, '2>', \my $pgb_err);
while (1)
{
	my ($holding, $counted, $left) = split /\|/, $node->safe_psql('postgres', $sample_sql);
	$samples++;
	$max = $holding if $holding > $max;
	$max_counted = $counted if $counted > $max_counted;
	$h->pump_nb if $h->pumpable;
	if (!$h->pumpable && !$restarted)
	{
		$h->finish;
		is($?, 0, 'pgbench started the runs') or diag($pgb_err);
		# the runs are under way: kill an executor in the middle of them
		# (the postmaster restarts every process), then stop the server
		my ($victim) = wf_executor_pids($node);
		kill 'KILL', $victim;
		$node->poll_query_until('postgres', 'SELECT true')
		  or die 'the server did not come back after the executor was killed';
		wf_wait_for_executors($node, 4, [$victim])
		  or die 'the executors did not come back';
		$node->stop('immediate');
		$node->start;
		$restarted = 1;
		next;
	}
	last if $restarted && $left == 0;
}
cmp_ok($max, '<=', 2, "never more than 2 steps of a key hold a slot in $samples samples (max $max)");
cmp_ok($max_counted, '<=', 2, "no key ever counted more than 2 active steps (max $max_counted)");
is($node->safe_psql('postgres',
		q{SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'completed') FROM wf.run WHERE workflow = 'sync'}),
	'100 100', 'all 100 runs completed across an executor killed and an immediate shutdown');
is($node->safe_psql('postgres', q{
	SELECT coalesce(max(n), 0) <= 2 FROM (
		SELECT (SELECT count(*) FROM wf.step b JOIN wf.run rb ON rb.id = b.run_id
				 WHERE rb.workflow = 'sync' AND b.step = 'b'
				   AND rb.input->'ticket' = ra.input->'ticket'
				   AND b.started_at <= a.started_at AND b.finished_at > a.started_at) n
		  FROM wf.step a JOIN wf.run ra ON ra.id = a.run_id
		 WHERE ra.workflow = 'sync' AND a.step = 'b') s}),
	't', 'the steps of a key overlap at most 2 at a time (started_at/finished_at)');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM wf.step_slot}) . '/'
	  . $node->safe_psql('postgres', q{SELECT count(*) FROM wf.step WHERE slot_key IS NOT NULL}),
	'0/0', 'no slot is left held');

# ---- the items of a map share their step's key ---------------------------

wf_define($node, 'fan',
	{
		steps => [
			{
				name => 'each',
				map => {
					over => '$.input.items',
					step => {
						name => 'item',
						sleep => '200 ms',
						concurrency => { limit => 2 }
					}
				}
			}
		]
	});
my $fan = $node->safe_psql('postgres',
	q{SELECT wf_start('fan', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 12) g)))});
is(wf_wait($node, $fan), 'completed', 'the map over 12 sleeping items completes');
is($node->safe_psql('postgres', qq{
	SELECT max(n) FROM (
		SELECT (SELECT count(*) FROM wf.step b
				 WHERE b.run_id = $fan AND b.parent = 'each'
				   AND b.started_at <= a.started_at AND b.finished_at > a.started_at) n
		  FROM wf.step a WHERE a.run_id = $fan AND a.parent = 'each') s}),
	'2', 'its items slept 2 at a time, as the step key allows');
is($node->safe_psql('postgres', qq{
	SELECT count(DISTINCT detail->>'waiting_for') || ' ' || min(detail->>'waiting_for')
	  FROM wf.history_log WHERE run_id = $fan AND detail ? 'waiting_for'}),
	'1 fan:each[]', 'without a key, the items wait for one key: the workflow\'s and the step\'s');

# ---- priority, order, cancellation ----------------------------------------

wf_define($node, 'gate',
	{
		steps => [
			{ name => 'start', sql => 'SELECT 1' },
			{
				name => 'w',
				wait_for => { signal => 'go' },
				concurrency => { key => 'gate', limit => 1 }
			},
		]
	});
my $first = wf_start($node, 'gate');
$node->poll_query_until('postgres',
	"SELECT status = 'waiting' FROM wf.step WHERE run_id = $first AND step = 'w'")
  or die 'the first step did not start waiting';
my @runs;
for my $opt ({}, {}, { priority => 5 }, {})
{
	my $r = wf_start($node, 'gate', {}, $opt);
	$node->poll_query_until('postgres',
		"SELECT wait_key = 'slot:gate' FROM wf.step WHERE run_id = $r AND step = 'w'")
	  or die "the step of run $r did not queue";
	push @runs, $r;
}
my ($low1, $low2, $high, $gone) = @runs;
is($node->safe_psql('postgres',
		q{SELECT key || ' ' || "limit" || ' ' || active || ' ' || waiting || ' ' || scope FROM wf.concurrency}),
	'gate 1 1 4 step', 'wf.concurrency shows the step key, its limit, the active and the waiting steps');
is($node->safe_psql('postgres',
		qq{SELECT string_agg(status, ',' ORDER BY run_id) FROM wf.step WHERE step = 'w' AND run_id IN ($low1, $low2, $high, $gone)}),
	'pending,pending,pending,pending', 'the steps over the limit are pending');
$node->safe_psql('postgres', "SELECT wf_cancel($gone)");
is($node->safe_psql('postgres', q{SELECT waiting FROM wf.concurrency WHERE key = 'gate'}),
	'3', 'a cancelled run\'s step no longer counts as waiting');

my @order;
my $cur = $first;
for my $i (1 .. 4)
{
	$node->safe_psql('postgres', "SELECT wf_signal($cur, 'go')");
	is(wf_wait($node, $cur), 'completed', "run $cur completes");
	last if $i == 4;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM wf.step s JOIN wf.run r ON r.id = s.run_id WHERE r.workflow = 'gate' AND s.step = 'w' AND s.status = 'waiting'")
	  or die 'no next step';
	$cur = $node->safe_psql('postgres',
		q{SELECT s.run_id FROM wf.step s JOIN wf.run r ON r.id = s.run_id WHERE r.workflow = 'gate' AND s.step = 'w' AND s.status = 'waiting'});
	push @order, $cur;
}
is(join(',', @order), "$high,$low1,$low2", 'waiting steps get the slot by priority, then in the order they came');
is($node->safe_psql('postgres', qq{
	SELECT string_agg(detail::text, ' ' ORDER BY id) FROM wf.history_log
	 WHERE run_id = $high AND step = 'w' AND status = 'pending'}),
	'{"limit": 1, "waiting_for": "gate"} {"admitted": "gate"}',
	'a waiting step\'s history says what it waited for, then that it got the slot');
is($node->safe_psql('postgres', "SELECT status FROM wf.run WHERE id = $gone"),
	'cancelled', 'the cancelled run did not go on');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.step_slot}) . '/'
	  . $node->safe_psql('postgres', q{SELECT count(*) FROM wf.concurrency WHERE key = 'gate'}),
	'0/0', 'the key is gone once its last step ended');

# ---- a container holds its slot while its children run -------------------

wf_define($node, 'box',
	{
		steps => [
			{
				name => 'p',
				parallel => [ { name => 'x', steps => [ { name => 'w', wait_for => { signal => 'go' } } ] } ],
				concurrency => { key => 'box', limit => 1 }
			}
		]
	});
my $b1 = wf_start($node, 'box');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM wf.step WHERE run_id = $b1 AND status = 'waiting' AND kind = 'wait_for'")
  or die 'the first container\'s child did not start waiting';
my $b2 = wf_start($node, 'box');
$node->poll_query_until('postgres', "SELECT wait_key = 'slot:box' FROM wf.step WHERE run_id = $b2 AND step = 'p'")
  or die 'the second container did not queue';
is($node->safe_psql('postgres', "SELECT slot_key FROM wf.step WHERE run_id = $b1 AND step = 'p'"),
	'box', 'a container holds its slot while its child waits');
$node->safe_psql('postgres', "SELECT wf_signal($b1, 'go')");
is(wf_wait($node, $b1), 'completed', 'the first container completes');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM wf.step WHERE run_id = $b2 AND status = 'waiting' AND kind = 'wait_for'")
  or die 'the second container did not get the slot';
$node->safe_psql('postgres', "SELECT wf_signal($b2, 'go')");
is(wf_wait($node, $b2), 'completed', 'then the second one gets the slot and completes');

# ---- a restart with steps waiting on a key --------------------------------

$first = wf_start($node, 'gate');
$node->poll_query_until('postgres',
	"SELECT status = 'waiting' FROM wf.step WHERE run_id = $first AND step = 'w'")
  or die 'the first step did not start waiting';
my @waiting = map { wf_start($node, 'gate') } 1 .. 2;
$node->poll_query_until('postgres',
	q{SELECT waiting = 2 FROM wf.concurrency WHERE key = 'gate'})
  or die 'the steps did not queue';
$node->restart;
is($node->safe_psql('postgres',
		q{SELECT active || ' ' || waiting FROM wf.concurrency WHERE key = 'gate'}),
	'1 2', 'after a restart, the key still has one active and two waiting steps');
for my $r ($first, @waiting)
{
	$node->poll_query_until('postgres',
		"SELECT status = 'waiting' FROM wf.step WHERE run_id = $r AND step = 'w'")
	  or die "the step of run $r did not start";
	$node->safe_psql('postgres', "SELECT wf_signal($r, 'go')");
	is(wf_wait($node, $r), 'completed', "run $r completes after the restart");
}

# ---- retries keep the slot; failure and rewind give it up -----------------

$node->safe_psql('postgres', q{
	CREATE SEQUENCE flaky_seq;
	CREATE FUNCTION fail_first(n bigint) RETURNS bigint LANGUAGE plpgsql AS $f$
	BEGIN
		IF n < 3 THEN
			RAISE EXCEPTION 'attempt failed on purpose' USING ERRCODE = '40001';
		END IF;
		RETURN n;
	END
	$f$;});
wf_define($node, 'flaky',
	{
		steps => [
			{
				name => 'a',
				sql => q{SELECT fail_first(nextval('flaky_seq'))},
				retry => { max_attempts => 2, backoff => 'fixed', initial_interval => '2s' },
				concurrency => { key => 'flaky', limit => 1 }
			},
			{ name => 'b', wait_for => { signal => 'go' } },
		]
	});
my $f = wf_start($node, 'flaky');
$node->poll_query_until('postgres',
	"SELECT EXISTS (SELECT 1 FROM wf.history_log WHERE run_id = $f AND step = 'a' AND status = 'retrying')")
  or die 'the step was not retried';
is($node->safe_psql('postgres', "SELECT status || ' ' || slot_key FROM wf.step WHERE run_id = $f AND step = 'a'"),
	'ready flaky', 'between its attempts, the step keeps its slot');
is($node->safe_psql('postgres', q{SELECT active FROM wf.step_slot WHERE key = 'flaky'}),
	'1', 'and the key counts it');
is(wf_wait($node, $f), 'failed', 'a step failing its two attempts fails its run');
is($node->safe_psql('postgres', qq{
	SELECT string_agg(status, ',' ORDER BY id) FROM wf.history_log
	 WHERE run_id = $f AND step = 'a' AND status NOT IN ('running')}),
	'retrying,failed', 'it was retried once, never waiting for a slot in between');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.step_slot}),
	'0', 'the failed step gave its slot up');
$node->safe_psql('postgres', "SELECT wf_retry($f)");
$node->poll_query_until('postgres',
	"SELECT status = 'waiting' FROM wf.step WHERE run_id = $f AND step = 'b'")
  or die 'the retried run did not get to b';
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.step_slot}),
	'0', 'a completed step holds no slot');
$node->safe_psql('postgres', "SELECT wf_rewind($f, 'a')");
$node->poll_query_until('postgres',
	"SELECT status = 'waiting' FROM wf.step WHERE run_id = $f AND step = 'b'")
  or die 'the rewound run did not get to b again';
is($node->safe_psql('postgres', "SELECT attempt FROM wf.step WHERE run_id = $f AND step = 'a'"),
	'1', 'the rewound step ran again, taking its slot again');
$node->safe_psql('postgres', "SELECT wf_signal($f, 'go')");
is(wf_wait($node, $f), 'completed', 'the run completes');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.step_slot}) . '/'
	  . $node->safe_psql('postgres', q{SELECT count(*) FROM wf.step_slot_wait}),
	'0/0', 'nothing is left of the key');

# ---- a user's open transaction holds no key up ----------------------------

wf_define($node, 'held',
	{
		steps => [
			{
				name => 'w',
				wait_for => { signal => 'go' },
				concurrency => { key => 'shared', limit => 2 }
			}
		]
	});
my @h = map { wf_start($node, 'held') } 1 .. 3;
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM wf.step WHERE run_id IN ($h[0], $h[1]) AND status = 'waiting'")
  or die 'the first two steps did not start waiting';
$node->poll_query_until('postgres',
	"SELECT wait_key = 'slot:shared' FROM wf.step WHERE run_id = $h[2]")
  or die 'the third step did not queue';
my $canceller = $node->background_psql('postgres');
$canceller->query_safe("BEGIN; SELECT wf_cancel($h[0])");
$node->safe_psql('postgres', "SELECT wf_signal($h[1], 'go')");
is(wf_wait($node, $h[1]), 'completed',
	'a step of the key completes while a transaction that cancelled another is open');
ok($node->poll_query_until('postgres',
		"SELECT status = 'waiting' FROM wf.step WHERE run_id = $h[2]"),
	'and its slot went to the waiting step: nothing waited for the open transaction');
$canceller->query_safe('COMMIT');
$canceller->quit;
my $h4 = wf_start($node, 'held');
ok($node->poll_query_until('postgres',
		"SELECT status = 'waiting' FROM wf.step WHERE run_id = $h4"),
	'once committed, the cancelled run\'s slot was released for the next step');
is($node->safe_psql('postgres', q{SELECT active || ' ' || waiting FROM wf.concurrency WHERE key = 'shared'}),
	'2 0', 'the key counts the two steps holding it, none waiting');
$node->safe_psql('postgres', "SELECT wf_signal($_, 'go')") for ($h[2], $h4);
is(wf_wait_all($node, $h[2], $h4), 'completed,completed', 'both complete');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.step_slot}) . '/'
	  . $node->safe_psql('postgres', q{SELECT count(*) FROM wf.step_slot_release}),
	'0/0', 'nothing is left of the key, nothing queued');

# ---- another role's larger limit for the same key does not raise ours ----

$node->safe_psql('postgres', q{
	CREATE ROLE victim LOGIN;
	CREATE ROLE mallory LOGIN;});
$node->safe_psql('postgres', q{SET ROLE mallory; SELECT wf_define('hog', '{"steps": [
	{"name": "w", "wait_for": {"signal": "go"}, "concurrency": {"key": "tracker", "limit": 1000}}]}')});
$node->safe_psql('postgres', q{SET ROLE victim; SELECT wf_define('sync1', '{"steps": [
	{"name": "w", "wait_for": {"signal": "go"}, "concurrency": {"key": "tracker", "limit": 1}}]}')});
my $hog = $node->safe_psql('postgres', q{SET ROLE mallory; SELECT wf_start('hog')});
$node->poll_query_until('postgres', "SELECT status = 'waiting' FROM wf.step WHERE run_id = $hog")
  or die 'the hog did not take its slot';
my $v1 = $node->safe_psql('postgres', q{SET ROLE victim; SELECT wf_start('sync1')});
$node->poll_query_until('postgres', "SELECT wait_key = 'slot:tracker' FROM wf.step WHERE run_id = $v1")
  or die 'the victim\'s step did not queue';
my $hog2 = $node->safe_psql('postgres', q{SET ROLE mallory; SELECT wf_start('hog')});
$node->poll_query_until('postgres', "SELECT status = 'waiting' FROM wf.step WHERE run_id = $hog2")
  or die 'the second hog did not take its slot';
is($node->safe_psql('postgres', "SELECT status || ' ' || wait_key FROM wf.step WHERE run_id = $v1"),
	'pending slot:tracker',
	'a step with limit 1 waits while the key is held, whatever limit the other role\'s steps have');
$node->safe_psql('postgres', "SELECT wf_cancel($hog), wf_cancel($hog2)");
ok($node->poll_query_until('postgres', "SELECT status = 'waiting' FROM wf.step WHERE run_id = $v1"),
	'once the key is free, the step takes its slot');
$node->safe_psql('postgres', "SELECT wf_signal($v1, 'go')");
is(wf_wait($node, $v1), 'completed', 'and completes');

# ---- a debounced start does not fold into a run already waiting for a slot

wf_define($node, 'deb',
	{
		steps => [
			{
				name => 'w',
				wait_for => { signal => 'go' },
				concurrency => { key => 'deb', limit => 1 }
			}
		]
	});
my $dfirst = wf_start($node, 'deb');
$node->poll_query_until('postgres', "SELECT status = 'waiting' FROM wf.step WHERE run_id = $dfirst")
  or die 'the first run did not take the slot';
my $dopt = { debounce => '200 ms', debounce_key => 'ticket' };
my $db = wf_start($node, 'deb', { v => 1 }, $dopt);
$node->poll_query_until('postgres', "SELECT wait_key = 'slot:deb' FROM wf.step WHERE run_id = $db")
  or die 'the debounced run did not queue for the slot';
my $dc = wf_start($node, 'deb', { v => 2 }, $dopt);
isnt($dc, $db, 'a debounced start after the run began (its step waits for a slot) makes a new run');
is($node->safe_psql('postgres', "SELECT input->>'v' FROM wf.run WHERE id = $db"),
	'1', 'the waiting run keeps its input');
$node->safe_psql('postgres', "SELECT wf_cancel($_)") for ($dfirst, $db, $dc);

# ---- a key that cannot be rendered fails the step -------------------------

wf_define($node, 'nokey',
	{
		steps => [
			{
				name => 'a',
				sql => 'SELECT 1',
				concurrency => { key => '{{$.input.missing}}', limit => 1 }
			}
		]
	});
my $nk = wf_start($node, 'nokey', { other => 1 });
is(wf_wait($node, $nk), 'failed', 'a step whose key matches nothing fails its run');
like($node->safe_psql('postgres', "SELECT error->>'message' FROM wf.run WHERE id = $nk"),
	qr/concurrency key template "\{\{\$\.input\.missing\}\}" matched nothing/,
	'with the reason');
is($node->safe_psql('postgres', "SELECT error->>'sqlstate' FROM wf.step WHERE run_id = $nk AND step = 'a'"),
	'22023', 'and SQLSTATE 22023');
my $ok = wf_start($node, 'sync', { ticket => 3 });
is(wf_wait($node, $ok), 'completed', 'and the executors go on with other runs');

done_testing();
