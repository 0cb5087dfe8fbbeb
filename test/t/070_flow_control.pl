# Copyright (c) pg_workflow authors

# Flow control across runs.
#
# Concurrency keys: ten pgbench clients race to start 100 runs over two
# keys with a limit of 2; sampled while they run, and checked afterwards by
# the overlap of the runs' started_at/finished_at, never more than 2 runs
# of a key are active; all of them complete.  Waiting runs start in
# priority, then start order; a cancelled waiting run leaves the queue; runs
# waiting on a key survive a restart and start when the slot frees.
#
# Rate limits: 15 http steps under a limit of 5 per 2 s never take more
# than 5 tokens within any 2 s (the grant times are the steps' started_at),
# every request is sent once, with no attempt burnt by waiting; a 429 with
# Retry-After empties the bucket until then.
#
# Debounce and throttle: a ticket table whose row is updated ten times in a
# row by separate transactions starts one run through wf_start_trigger,
# with the latest row; the replaced inputs are in the run's history.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use HttpTestServer;
use Test::More;

my $node = wf_node('flow_control', workers => 4);

# ---- definition checks ---------------------------------------------------

my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_define('bad', '{"concurrency": {"limit": 0}, "steps": [{"name": "a", "sql": "SELECT 1"}]}')});
like($err, qr/"concurrency\.limit"/, 'a limit of 0 is rejected, naming its path');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_define('bad', '{"concurrency": {"key": 3, "limit": 1}, "steps": [{"name": "a", "sql": "SELECT 1"}]}')});
like($err, qr/"concurrency\.key"/, 'a key that is not a string is rejected, naming its path');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_define('bad', '{"concurrency": {"limit": 1, "max": 2}, "steps": [{"name": "a", "sql": "SELECT 1"}]}')});
like($err, qr/unknown key "max" in "concurrency"/, 'an unknown key of concurrency is rejected');
($ret, $out, $err) = $node->psql('postgres',
	q|SELECT wf_define('bad', '{"concurrency": {"key": "{{$.input.x", "limit": 1}, "steps": [{"name": "a", "sql": "SELECT 1"}]}')|);
like($err, qr/invalid template in "concurrency\.key"/, 'a bad key template is rejected');

# ---- racing starters -----------------------------------------------------

wf_define($node, 'conc',
	{
		concurrency => { key => 'ticket-{{$.input.ticket}}', limit => 2 },
		steps => [
			{ name => 'a', sql => 'SELECT pg_sleep(0.1)' },
			{ name => 'b', sql => 'SELECT pg_sleep(0.1)' },
		]
	});

my $script = "${PostgreSQL::Test::Utils::tmp_check}/flow_start.sql";
PostgreSQL::Test::Utils::append_to_file($script,
	q{SELECT wf_start('conc', jsonb_build_object('ticket', 1 + (random() < 0.5)::int));});
my $h = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '10', '-j', '2', '-t', '10', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \my $pgb_out, '2>', \my $pgb_err);

my $max = 0;
my $samples = 0;
while (1)
{
	my ($active, $left) = split /\|/, $node->safe_psql('postgres',
		q{SELECT coalesce(max(n), 0), (SELECT count(*) FROM wf.run WHERE workflow = 'conc' AND status NOT IN ('completed', 'failed', 'cancelled'))
		    FROM (SELECT count(*) n FROM wf.run WHERE workflow = 'conc' AND status IN ('running', 'waiting')
				   GROUP BY input->>'ticket') s});
	$samples++;
	$max = $active if $active > $max;
	last if !$h->pumpable && $left == 0;
	$h->pump_nb if $h->pumpable;
}
$h->finish;
is($?, 0, 'pgbench started the runs') or diag($pgb_err);
cmp_ok($max, '<=', 2, "never more than 2 runs of a key active in $samples samples (max $max)");
is($node->safe_psql('postgres',
		q{SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'completed') FROM wf.run WHERE workflow = 'conc'}),
	'100 100', 'all 100 runs completed');
is($node->safe_psql('postgres', q{
	SELECT coalesce(max(n), 0) FROM (
		SELECT (SELECT count(*) FROM wf.run b
				 WHERE b.workflow = 'conc' AND b.input->'ticket' = a.input->'ticket'
				   AND b.started_at <= a.started_at AND b.finished_at > a.started_at) n
		  FROM wf.run a WHERE a.workflow = 'conc') s}),
	'2', 'the runs of a key overlap at most 2 at a time (started_at/finished_at)');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM wf.concurrency_slot}) . '/'
	  . $node->safe_psql('postgres', q{SELECT count(*) FROM wf.concurrency_hold}),
	'0/0', 'no slot is left held');

# ---- priority, start order, cancellation ---------------------------------

wf_define($node, 'gate',
	{
		concurrency => { limit => 1 },
		steps => [ { name => 'w', wait_for => { signal => 'go' } } ]
	});
my $first = wf_start($node, 'gate');
$node->poll_query_until('postgres',
	"SELECT status = 'waiting' FROM wf.run WHERE id = $first")
  or die 'the first run did not start waiting';
my $low1 = wf_start($node, 'gate');
my $low2 = wf_start($node, 'gate');
my $high = wf_start($node, 'gate', {}, { priority => 5 });
my $gone = wf_start($node, 'gate');
is($node->safe_psql('postgres',
		qq{SELECT string_agg(status, ',' ORDER BY id) FROM wf.run WHERE id IN ($low1, $low2, $high, $gone)}),
	'pending,pending,pending,pending', 'the runs over the limit stay pending');
is($node->safe_psql('postgres',
		q{SELECT key || ' ' || "limit" || ' ' || active || ' ' || waiting FROM wf.concurrency}),
	'gate 1 1 4', 'wf.concurrency shows the key, its limit, the active and the waiting runs');
$node->safe_psql('postgres', "SELECT wf_cancel($gone)");

# each run, once waiting, is let go; the order in which they wait is recorded
my @order;
my $cur = $first;
for my $i (1 .. 4)
{
	$node->safe_psql('postgres', "SELECT wf_signal($cur, 'go')");
	is(wf_wait($node, $cur), 'completed', "run $cur completes");
	last if $i == 4;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM wf.run WHERE workflow = 'gate' AND status = 'waiting'")
	  or die 'no next run';
	$cur = $node->safe_psql('postgres',
		q{SELECT id FROM wf.run WHERE workflow = 'gate' AND status = 'waiting'});
	push @order, $cur;
}
is(join(',', @order), "$high,$low1,$low2", 'waiting runs start by priority, then in start order');
is($node->safe_psql('postgres', "SELECT status FROM wf.run WHERE id = $gone"),
	'cancelled', 'the cancelled waiting run did not start');

# ---- a restart with runs waiting on a key --------------------------------

$first = wf_start($node, 'gate');
$node->poll_query_until('postgres',
	"SELECT status = 'waiting' FROM wf.run WHERE id = $first")
  or die 'the first run did not start waiting';
my @waiting = map { wf_start($node, 'gate') } 1 .. 2;
$node->restart;
is($node->safe_psql('postgres',
		q{SELECT active || ' ' || waiting FROM wf.concurrency WHERE key = 'gate'}),
	'1 2', 'after a restart, the key still has one active and two waiting runs');
for my $r ($first, @waiting)
{
	$node->poll_query_until('postgres',
		"SELECT status = 'waiting' FROM wf.run WHERE id = $r")
	  or die "run $r did not start";
	$node->safe_psql('postgres', "SELECT wf_signal($r, 'go')");
	is(wf_wait($node, $r), 'completed', "run $r completes after the restart");
}

# ---- wf_retry of a failed run takes a slot again -------------------------

wf_define($node, 'flaky',
	{
		concurrency => { limit => 1 },
		retry => { max_attempts => 1 },
		steps => [ { name => 'a', sql => q{SELECT 1 / (nextval('flaky_seq') - 1)} } ]
	});
$node->safe_psql('postgres', 'CREATE SEQUENCE flaky_seq');
my $f = wf_start($node, 'flaky');
is(wf_wait($node, $f), 'failed', 'the flaky run fails');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.concurrency WHERE key = 'flaky'}),
	'0', 'a failed run holds no slot');
$node->safe_psql('postgres', "SELECT wf_retry($f)");
is(wf_wait($node, $f), 'completed', 'the retried run completes');

# ---- another workflow's larger limit for the same key does not raise ours -

wf_define($node, 'hog', { concurrency => { key => 'tracker', limit => 1000 },
		steps => [ { name => 'w', wait_for => { signal => 'go' } } ] });
wf_define($node, 'one', { concurrency => { key => 'tracker', limit => 1 },
		steps => [ { name => 'w', wait_for => { signal => 'go' } } ] });
my @hogs = map { wf_start($node, 'hog') } 1 .. 2;
$node->poll_query_until('postgres', "SELECT count(*) = 2 FROM wf.run WHERE id IN ($hogs[0], $hogs[1]) AND status = 'waiting'")
  or die 'the hogs did not start';
my $one = wf_start($node, 'one');
is($node->safe_psql('postgres', "SELECT status FROM wf.run WHERE id = $one"),
	'pending', 'a run with limit 1 waits while the key is held, whatever limit the other workflow has');
$node->safe_psql('postgres', "SELECT wf_cancel($hogs[0])");
is($node->safe_psql('postgres', "SELECT status FROM wf.run WHERE id = $one"),
	'pending', 'a slot freed while another run holds the key is not passed to it: its limit is 1');
$node->safe_psql('postgres', "SELECT wf_cancel($hogs[1])");
$node->poll_query_until('postgres', "SELECT status = 'waiting' FROM wf.run WHERE id = $one")
  or die 'the run did not start once the key was free';
$node->safe_psql('postgres', "SELECT wf_signal($one, 'go')");
is(wf_wait($node, $one), 'completed', 'then it runs and completes');

# ---- rate limits of http steps -------------------------------------------

($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_define('bad', '{"steps": [{"name": "a", "sql": "SELECT 1", "rate_limit": {"limit": 1, "per": "1 s"}}]}')});
like($err, qr/"a\.rate_limit" is only allowed on http and agent steps|"rate_limit" is only allowed on http and agent steps/,
	'a rate limit on an sql step is rejected');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_define('bad', '{"steps": [{"name": "a", "http": {"url": "http://localhost/"}, "rate_limit": {"limit": 0, "per": "1 s"}}]}')});
like($err, qr/rate_limit\.limit/, 'a rate limit of 0 is rejected, naming its path');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_define('bad', '{"steps": [{"name": "a", "http": {"url": "http://localhost/"}, "rate_limit": {"limit": 1}}]}')});
like($err, qr/rate_limit\.per/, 'a rate limit without "per" is rejected');

my $srv = HttpTestServer->new(name => 'flow');
wf_define($node, 'rl',
	{
		steps => [
			{
				name => 'call',
				http => { url => $srv->url('/echo?i={{$.input.i}}') },
				rate_limit => { limit => 5, per => '2 seconds' }
			}
		]
	});
my @rl = wf_start_many($node, 'rl', 15);
is(wf_wait_all($node, @rl), join(',', ('completed') x 15), 'the 15 rate-limited runs complete');
my $rl_list = join(',', @rl);
is(scalar($srv->requests(sub { $_[0]{path} eq '/echo' })), 15, 'each request was sent once');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM wf.steps WHERE run_id IN ($rl_list) AND attempt = 1"),
	'15', 'waiting for a token burnt no attempt');
is($node->safe_psql('postgres', qq{
	SELECT max(n) FROM (
		SELECT (SELECT count(*) FROM wf.steps b
				 WHERE b.run_id IN ($rl_list)
				   AND b.started_at >= a.started_at
				   AND b.started_at < a.started_at + interval '2 seconds') n
		  FROM wf.steps a WHERE a.run_id IN ($rl_list)) s}),
	'5', 'never more than 5 requests within any 2 seconds');
my @at = sort { $a <=> $b } map { $_->{at} } $srv->requests(sub { $_[0]{path} eq '/echo' });
my $srv_max = 0;
for my $i (0 .. $#at)
{
	my $n = grep { $_ >= $at[$i] && $_ < $at[$i] + 2 } @at;
	$srv_max = $n if $n > $srv_max;
}
cmp_ok($srv_max, '<=', 5, "never more than 5 requests within any 2 s by the server's clock ($srv_max)");
is($node->safe_psql('postgres',
		q{SELECT key || ' ' || "limit" || ' ' || per FROM wf.rate_limits}),
	$srv->host . ' 5 00:00:02', 'wf.rate_limits shows the bucket of the host');

# a 429 with Retry-After empties the bucket until then
wf_define($node, 'rl429',
	{
		retry => { max_attempts => 3, initial_interval => '1s' },
		steps => [
			{
				name => 'call',
				http => { url => $srv->url('/flaky?key={{$.input.k}}&fail={{$.input.fail}}&code=429&retry_after=3') },
				rate_limit => { key => 'api-token-1', limit => 100, per => '1 minute' }
			}
		]
	});
my $r429 = wf_start($node, 'rl429', { k => 'a', fail => 1 });
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM wf.history WHERE run_id = $r429 AND status = 'retrying'")
  or die 'the 429 was not recorded';
my $after = wf_start($node, 'rl429', { k => 'b', fail => 0 });
is(wf_wait($node, $after), 'completed', 'a step of the same key completes');
is(wf_wait($node, $r429), 'completed', 'the step that got the 429 completes');
is($node->safe_psql('postgres', qq{
	SELECT s.started_at >= b.blocked_until AND b.blocked_until >= h.at + interval '2 seconds'
	  FROM wf.steps s, wf.history h, wf.rate_limits b
	 WHERE s.run_id = $after AND h.run_id = $r429 AND h.status = 'retrying'
	   AND b.key = 'api-token-1'}),
	't', 'no token was taken until the Retry-After (3 s) of the 429 had passed');
is($node->safe_psql('postgres', "SELECT attempt FROM wf.steps WHERE run_id = $after"),
	'1', 'the step that waited for the bucket burnt no attempt');
$srv->stop;

# ---- rate limits of agent steps: by pool, no task without a token --------

wf_define($node, 'rl-agent',
	{ steps => [ { name => 'work', agent => 'rl-pool', rate_limit => { limit => 2, per => '1 hour' } } ] });
my @ra = wf_start_many($node, 'rl-agent', 3);
my $ra_list = join(',', @ra);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM wf.task WHERE pool = 'rl-pool'"),
	'two of three agent steps under a limit of 2 an hour get their task');
ok( $node->poll_query_until('postgres', qq{
	SELECT count(*) = 1 FROM wf.step s
	 WHERE s.run_id IN ($ra_list) AND s.status = 'ready' AND s.attempt = 0
	   AND s.ready_at > now() + interval '50 minutes'
	   AND NOT EXISTS (SELECT 1 FROM wf.task t WHERE t.run_id = s.run_id)}),
	'the third waits for the next token, with no task and no attempt burnt');
is($node->safe_psql('postgres',
		q{SELECT "limit" || ' ' || per FROM wf.rate_limits WHERE key = 'rl-pool'}),
	'2 01:00:00', 'wf.rate_limits shows the bucket of the pool');

# ---- debounce from a trigger ---------------------------------------------

wf_define($node, 'sync',
	{ steps => [ { name => 'a', sql => q{SELECT $1->'input'->>'title' AS title} } ] });
$node->safe_psql(
	'postgres', q{
	CREATE TABLE ticket (id int PRIMARY KEY, title text);
	CREATE TRIGGER ticket_sync AFTER INSERT OR UPDATE ON ticket
		FOR EACH ROW EXECUTE FUNCTION wf_start_trigger('sync',
			'{"debounce": "3 seconds", "debounce_key": "ticket-{{$.input.id}}"}');
});
$node->safe_psql('postgres',
	"INSERT INTO ticket VALUES (1, 'v0');\n"
	  . join("\n", map { "UPDATE ticket SET title = 'v$_' WHERE id = 1;" } 1 .. 9)
	  . "\nINSERT INTO ticket VALUES (2, 'other');");
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.run WHERE workflow = 'sync'}),
	'2', 'ten changes of one ticket and one of another start two runs');
my $sync = $node->safe_psql('postgres',
	q{SELECT id FROM wf.run WHERE workflow = 'sync' AND input->>'id' = '1'});
is(wf_wait($node, $sync), 'completed', 'the debounced run completes');
is($node->safe_psql('postgres', "SELECT output #>> '{}' FROM wf.run WHERE id = $sync"),
	'v9', 'with the latest row');
is($node->safe_psql('postgres',
		"SELECT string_agg(detail->'replaced_input'->>'title', ',' ORDER BY id) FROM wf.history WHERE run_id = $sync AND status = 'debounced'"),
	'v0,v1,v2,v3,v4,v5,v6,v7,v8', 'the replaced inputs are in its history');
cmp_ok($node->safe_psql('postgres',
		"SELECT started_at >= (SELECT max(at) FROM wf.history WHERE run_id = $sync AND status = 'debounced') + interval '3 seconds' FROM wf.run WHERE id = $sync"),
	'eq', 't', 'it started a quiet interval after the last change');
$node->safe_psql('postgres', q{UPDATE ticket SET title = 'later' WHERE id = 1});
my $later = $node->safe_psql('postgres',
	qq{SELECT id FROM wf.run WHERE workflow = 'sync' AND input->>'id' = '1' AND id <> $sync});
isnt($later, '', 'a change after the run started starts a new run');

# ---- debounce with idempotency_key, throttle -----------------------------

my @ids = map { wf_start($node, 'sync', { id => 9, title => "t$_" },
		{ debounce => '1 hour', idempotency_key => 'k9' }) } 1 .. 3;
is(scalar(keys %{ { map { $_ => 1 } @ids } }), 1, 'debounce with idempotency_key: one run');
is($node->safe_psql('postgres', "SELECT input->>'title' FROM wf.run WHERE id = $ids[0]"),
	't3', 'holding the latest input');
@ids = map { wf_start($node, 'sync', { id => 10, title => "t$_" },
		{ throttle => '1 hour', debounce_key => 'th' }) } 1 .. 3;
is(scalar(keys %{ { map { $_ => 1 } @ids } }), 1, 'throttle: the later starts return the first run');
is(wf_wait($node, $ids[0]), 'completed', 'the throttled run runs at once');
is($node->safe_psql('postgres', "SELECT output #>> '{}' FROM wf.run WHERE id = $ids[0]"),
	't1', 'with the first input');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM wf.history WHERE run_id = $ids[0] AND status = 'throttled'"),
	'2', 'the throttled inputs are in its history');

($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_start('sync', '{}', '{"debounce": "soon"}')});
like($err, qr/debounce is not an interval/, 'a bad debounce interval is rejected');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_start('sync', '{}', '{"debounce": "1 s", "throttle": "1 s"}')});
like($err, qr/cannot be combined/, 'debounce and throttle together are rejected');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_start('sync', '{}', '{"debounce_key": "x"}')});
like($err, qr/debounce_key needs debounce or throttle/, 'a debounce_key alone is rejected');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wf_start('sync', '{}', '{"debounce": "1 s", "debounce_key": "{{$.input.nope}}"}')});
like($err, qr/matched nothing in the run.s input/, 'a key template that matches nothing is rejected');

$node->stop;
done_testing();
