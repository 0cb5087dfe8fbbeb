
# Copyright (c) pg_workflow authors

# A database using pg_workflow, dumped with pg_dump and restored into a new
# cluster whose roles were created by pg_dumpall --globals-only in another
# order (so that every role has another OID there).  Cluster A has roles
# alice and bob (LOGIN, CREATE on public) with runs in every state:
# completed (one with an idempotency key, one started by a trigger on bob's
# table), failed, cancelled, waiting for a signal, for an event, for a
# person (human step), escalated (on_error escalate), sleeping for hours,
# pending until a start_at hours ahead, and an http step whose request is in
# flight at the mock server when the dump is taken; a schedule of alice's,
# a subscription of bob's, and an old event emitted after thousands of
# transactions (so that its xid is ahead of the new cluster's).  After the
# restore into B (pg_restore --single-transaction):
#  - runs, workflows, schedules, subscriptions and the history belong to
#    the same roles by name as in A; alice sees exactly her runs;
#  - the restored runs go on: wf_signal completes the run waiting for it,
#    wf_emit the one waiting for the event, wf_resolve the escalated step,
#    the human step's signal its run; the http step left running is
#    requeued and sent again with the same Idempotency-Key (as after a
#    crash); the sleeping and the pending run keep their times;
#  - new work does not clash with restored rows: wf_start (run_pkey),
#    wf_signal (history_log_pkey, signal_pkey), a failure's alert
#    (alert_pkey), wf_emit (event_pkey) starting bob's subscribed
#    workflow; the idempotency key still returns A's run;
#  - nothing fired twice: the restore of bob's table started no run, the
#    schedule did not fire; the old event does not wake a new wait for it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use HttpTestServer;
use Test::More;

my $srv = HttpTestServer->new(name => 'dump');
my $a = wf_node('dump_a', workers => 2);

# psql as one of the test roles.
sub as_role
{
	my ($node, $role, $sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $role ]);
}

$a->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	GRANT CREATE ON SCHEMA public TO alice, bob;
});

my $who = q{SELECT current_user::text AS who};
my %defs = (
	alice => {
		a_ok => { steps => [ { name => 'x', sql => $who } ] },
		a_fail => {
			steps => [ { name => 'x', sql => 'SELECT 1/0', retry => { max_attempts => 1 } } ]
		},
		a_wait => {
			steps => [
				{ name => 'w', wait_for => { signal => 'go' } },
				{ name => 'after', sql => $who }
			]
		},
		a_evt => {
			steps => [
				{ name => 'e', wait_for => { event => 'a.evt', key => '{{$.input.k}}' } },
				{ name => 'after', sql => $who }
			]
		},
		a_old => {
			steps => [ { name => 'e', wait_for => { event => 'old.evt', key => 'x' } } ]
		},
		a_sleep => { steps => [ { name => 'nap', sleep => '3 hours' } ] },
	},
	bob => {
		b_ok => { steps => [ { name => 'x', sql => $who } ] },
		b_esc => {
			steps => [
				{
					name => 'e',
					sql => 'SELECT 1/0',
					retry => { max_attempts => 1 },
					on_error => 'escalate'
				},
				{ name => 'after', sql => $who }
			]
		},
		b_human => {
			steps => [
				{ name => 'approve', human => { assignee => 'manager', title => 'Ship it?' } }
			]
		},
		b_http => {
			steps => [
				{
					name => 'fetch',
					http => {
						url => $srv->url('/slow?ms=7200000&run={{$.run.id}}'),
						timeout => '3 hours'
					},
					retry => { max_attempts => 1 }
				}
			]
		},
	});
foreach my $role (sort keys %defs)
{
	foreach my $name (sort keys %{ $defs{$role} })
	{
		as_role($a, $role,
			    'SELECT wf_define('
			  . wf_sql_quote($name) . ', '
			  . wf_sql_quote(wf_json($defs{$role}{$name}))
			  . '::jsonb)');
	}
}

sub start_as
{
	my ($node, $role, $name, $input, $options) = @_;
	return as_role($node, $role,
		    'SELECT wf_start('
		  . wf_sql_quote($name) . ', '
		  . wf_sql_quote(wf_json($input // {}))
		  . '::jsonb, '
		  . wf_sql_quote(wf_json($options // {}))
		  . '::jsonb)');
}

# Alice's runs.
my %run;
$run{ok} = start_as($a, 'alice', 'a_ok');
$run{key} = start_as($a, 'alice', 'a_ok', {}, { idempotency_key => 'k1' });
$run{fail} = start_as($a, 'alice', 'a_fail');
$run{cancel} = start_as($a, 'alice', 'a_wait');
$run{wait} = start_as($a, 'alice', 'a_wait');
$run{evt} = start_as($a, 'alice', 'a_evt', { k => 'k' });
$run{sleep} = start_as($a, 'alice', 'a_sleep');
$run{pending} = as_role($a, 'alice',
	q{SELECT wf_start('a_ok', '{}', jsonb_build_object('start_at', now() + interval '3 hours'))});
as_role($a, 'alice', q{SELECT wf_schedule('a_hourly', 'a_ok', 'every 1 hour')});

# Bob's.
$run{esc} = start_as($a, 'bob', 'b_esc');
$run{human} = start_as($a, 'bob', 'b_human');
$run{http} = start_as($a, 'bob', 'b_http');
as_role($a, 'bob', q{SELECT wf_on_event('b.evt', 'b_ok')});
as_role(
	$a, 'bob', q{
	CREATE TABLE orders (id int PRIMARY KEY);
	CREATE TRIGGER orders_start AFTER INSERT ON orders
		FOR EACH ROW EXECUTE FUNCTION wf_start_trigger('b_ok');
	INSERT INTO orders VALUES (1);
});

is(wf_wait($a, $run{ok}), 'completed', 'A: a run completed');
is(wf_wait($a, $run{key}), 'completed', 'A: a run with an idempotency key completed');
is(wf_wait($a, $run{fail}), 'failed', 'A: a run failed');
ok( $a->poll_query_until(
		'postgres', "SELECT status = 'waiting' FROM wf.runs WHERE id = $run{cancel}"),
	'A: the run to cancel waits');
is(as_role($a, 'alice', "SELECT wf_cancel($run{cancel})"), 't', 'A: wf_cancel');
is(wf_wait($a, $run{cancel}), 'cancelled', 'A: a run cancelled');
ok( $a->poll_query_until(
		'postgres', qq{
	SELECT count(*) FROM wf.steps
	 WHERE (run_id, step, status) IN (($run{wait}, 'w', 'waiting'), ($run{evt}, 'e', 'waiting'),
		($run{sleep}, 'nap', 'waiting'), ($run{esc}, 'e', 'escalated'),
		($run{human}, 'approve', 'waiting'), ($run{http}, 'fetch', 'running'))}, '6'),
	'A: steps wait for a signal, an event, a timer, an operator, a person; one http step is running'
);
ok( poll_until(sub { scalar $srv->requests_with_key("wf-$run{http}-fetch") }, 'request in flight'),
	'A: the http request is at the server');
ok( $a->poll_query_until(
		'postgres',
		"SELECT count(*) FROM wf.runs WHERE workflow = 'b_ok' AND status = 'completed'", '1'),
	'A: the trigger on bob\'s table started a run, which completed');
is($a->safe_psql('postgres', "SELECT status FROM wf.runs WHERE id = $run{pending}"),
	'pending', 'A: a run is pending until its start_at');

# An old event, emitted once A's transaction ids are well ahead of any that
# a new cluster has: a wait for it that starts after the restore must not
# take it for a new one.
$a->safe_psql(
	'postgres', q{
	DO $$ BEGIN
		FOR i IN 1 .. 3000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP;
	END $$});
is(as_role($a, 'bob', q{SELECT wf_emit('old.evt', '{}', 'x')}), '0', 'A: an old event');

# What A shows, to compare with B (whose executors add to the history as
# soon as the restore commits: the http step is claimed again).
my $last_history = $a->safe_psql('postgres', 'SELECT max(id) FROM wf.history');
my %q = (
	runs => 'SELECT id, workflow, version, status, owner, start_at FROM wf.runs ORDER BY id',
	workflows => 'SELECT name, version, created_by FROM wf.workflows ORDER BY name, version',
	schedules => 'SELECT name, workflow, owner, next_at FROM wf.schedules ORDER BY name',
	subscriptions =>
	  'SELECT event, workflow, created_by::regrole FROM wf.subscription ORDER BY event',
	history =>
	  "SELECT id, run_id, step, status, actor FROM wf.history WHERE id <= $last_history ORDER BY id",
	timers => "SELECT run_id, step, status, ready_at FROM wf.steps WHERE run_id = $run{sleep}",
	alerts => 'SELECT id, run_id, kind FROM wf.alerts ORDER BY id',);
my %in_a = map { $_ => $a->safe_psql('postgres', $q{$_}) } keys %q;
my $alice_runs_a =
  as_role($a, 'alice', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM wf.runs');
my $bob_runs_a = as_role($a, 'bob', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM wf.runs');
like($in_a{runs}, qr/\|alice\|/, 'A: runs show their owner by name');

# -------------------------------------------------------------------------
# Dump A; B creates other roles first, then A's, then restores the dump.
# -------------------------------------------------------------------------
my $tmp = PostgreSQL::Test::Utils::tempdir('dump');
$a->command_ok(
	[ 'pg_dumpall', '--globals-only', '-f', "$tmp/globals.sql", '-d', $a->connstr('postgres') ],
	'pg_dumpall --globals-only of A');
$a->command_ok([ 'pg_dump', '-Fc', '-f', "$tmp/db.dump", '-d', $a->connstr('postgres') ],
	'pg_dump -Fc of A');
$a->stop;

my $b = wf_node('dump_b', workers => 2, create => 0);
$b->safe_psql('postgres', 'CREATE ROLE dummy1; CREATE ROLE dummy2; CREATE ROLE dummy3');
# "role postgres already exists" is expected: psql goes on.
$b->psql('postgres', undef, extra_params => [ '-f', "$tmp/globals.sql" ]);
isnt($b->safe_psql('postgres', q{SELECT 'alice'::regrole::oid}),
	'', 'B: alice exists, under another OID than in A');
$b->command_ok(
	[
		'pg_restore', '--single-transaction', '--exit-on-error',
		'-d', $b->connstr('postgres'), "$tmp/db.dump"
	],
	'pg_restore --single-transaction into B');

is($b->safe_psql('postgres', $q{runs}), $in_a{runs},
	'B: the runs have the same owners (by name), statuses and times as in A');
is($b->safe_psql('postgres', $q{workflows}), $in_a{workflows},
	'B: the workflows have the same owners');
is($b->safe_psql('postgres', $q{schedules}), $in_a{schedules},
	'B: the schedule has the same owner and next time');
is($b->safe_psql('postgres', $q{subscriptions}), $in_a{subscriptions},
	'B: the subscription has the same owner');
is($b->safe_psql('postgres', $q{history}), $in_a{history},
	'B: the history has the same actors');
is($b->safe_psql('postgres', $q{alerts}), $in_a{alerts}, 'B: the same alerts');
is(as_role($b, 'alice', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM wf.runs'),
	$alice_runs_a, 'B: alice sees exactly her runs');
is(as_role($b, 'bob', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM wf.runs'),
	$bob_runs_a, 'B: bob sees exactly his runs');
is($b->safe_psql('postgres', "SELECT count(*) FROM wf.runs WHERE workflow = 'b_ok'"),
	'1', 'B: restoring bob\'s table started no run');

# The restored runs go on.
is(as_role($b, 'alice', "SELECT wf_signal($run{wait}, 'go', '{}')"),
	't', 'B: wf_signal to the waiting run');
is(wf_wait($b, $run{wait}), 'completed', 'B: the signalled run completed');
is( $b->safe_psql(
		'postgres', "SELECT output #>> '{}' FROM wf.steps WHERE run_id = $run{wait} AND step = 'after'"),
	'alice',
	'B: its next step ran as alice');
is(as_role($b, 'alice', q{SELECT wf_emit('a.evt', '{}', 'k')}), '1',
	'B: wf_emit wakes the run waiting for the event');
is(wf_wait($b, $run{evt}), 'completed', 'B: and it completed');
is(as_role($b, 'bob', qq{SELECT wf_resolve($run{esc}, 'e', 'skip', '{"skipped": true}')}),
	't', 'B: wf_resolve of the escalated step');
is(wf_wait($b, $run{esc}), 'completed', 'B: the escalated run completed');
is(as_role($b, 'bob', qq{SELECT wf_signal($run{human}, 'approve', '{"ok": true}')}),
	't', 'B: the decision of the human step');
is(wf_wait($b, $run{human}), 'completed', 'B: the human step\'s run completed');

# The request in flight at the dump is sent again by B, with the same key.
ok( poll_until(sub { scalar($srv->requests_with_key("wf-$run{http}-fetch")) >= 2 }, 'resent'),
	'B: the http request in flight at the dump is sent again with the same Idempotency-Key');
is( $b->safe_psql(
		'postgres', "SELECT status, attempt FROM wf.steps WHERE run_id = $run{http}"),
	'running|1',
	'B: the http step is running, still at attempt 1');
is(as_role($b, 'bob', "SELECT wf_cancel($run{http})"), 't', 'B: wf_cancel of the http run');
is(wf_wait($b, $run{http}), 'cancelled', 'B: cancelled');

# New work next to the restored rows.
my $new = start_as($b, 'alice', 'a_ok');
cmp_ok($new, '>', $run{pending}, 'B: wf_start gives a new run id');
is(wf_wait($b, $new), 'completed', 'B: the new run completed');
is($b->safe_psql('postgres', "SELECT owner FROM wf.runs WHERE id = $new"),
	'alice', 'B: it belongs to alice');
my $failed = start_as($b, 'alice', 'a_fail');
is(wf_wait($b, $failed), 'failed', 'B: a new run failed');
is($b->safe_psql('postgres', "SELECT count(*) FROM wf.alerts WHERE run_id = $failed"),
	'1', 'B: with its alert');
is(as_role($b, 'bob', q{SELECT wf_emit('b.evt', '{}')}), '1',
	'B: wf_emit starts bob\'s subscribed workflow');
my $emitted = $b->safe_psql('postgres',
	"SELECT max(id) FROM wf.runs WHERE workflow = 'b_ok'");
is(wf_wait($b, $emitted), 'completed', 'B: the run started by the event completed');
is(start_as($b, 'alice', 'a_ok', {}, { idempotency_key => 'k1' }),
	$run{key}, 'B: the idempotency key still returns the run started in A');

# What waits for time keeps its time; the schedule did not fire.
is($b->safe_psql('postgres', $q{timers}), $in_a{timers},
	'B: the sleeping run keeps its timer');
is($b->safe_psql('postgres', "SELECT status FROM wf.runs WHERE id = $run{pending}"),
	'pending', 'B: the pending run still waits for its start_at');
is( $b->safe_psql(
		'postgres', "SELECT count(*) FROM wf.runs WHERE workflow = 'a_ok' AND input ? 'scheduled_at'"),
	'0',
	'B: the schedule did not fire');

# The old event is old: a wait that starts now does not take it.
my $old = start_as($b, 'alice', 'a_old');
ok( $b->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $old AND step = 'e'", 'waiting'),
	'B: a new wait for the old event waits');
is( $b->safe_psql('postgres',
		"SELECT ready_at IS NULL AND output IS NULL FROM wf.steps WHERE run_id = $old"),
	't',
	'B: the old event did not wake it');

$b->stop;
done_testing();
