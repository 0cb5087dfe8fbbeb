
# Copyright (c) pg_workflow authors

# A dropped role leaves nothing acting as a dangling OID.  Alice (LOGIN,
# CREATE on public) owns a schedule firing every second, a subscription, a
# run waiting for a signal and one sleeping for hours; bob owns a schedule
# firing every second too.
#  - a step whose owner is gone fails its run at once, whatever its
#    on_error says (skip here) and without retry;
#  - DROP ROLE alice waits for a transaction of alice's that started a run
#    (the role is locked as PostgreSQL locks the roles its catalogs depend
#    on); once both commit, the executors fail every unfinished run of
#    hers, that one included, with the error "role with OID N that owned
#    run M was dropped" (SQLSTATE 42704), disable her schedule and her
#    subscription, and raise one alert per object (in wf.alerts, and on
#    NOTIFY wf_alerts); everything she owned passes to no role ('-');
#  - her schedule does not fire again (while bob's keeps firing), an event
#    she subscribed to starts nothing, bob's runs complete, and her session,
#    still open, can start no run;
#  - a role dropped while no executor runs is swept when they start.

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

my $node = wf_node('drop_role', workers => 2);

sub as_role
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $role ]);
}

sub define_as
{
	my ($role, $name, $def) = @_;
	return as_role($role,
		    'SELECT wf_define('
		  . wf_sql_quote($name) . ', '
		  . wf_sql_quote(wf_json($def))
		  . '::jsonb)');
}

sub start_as
{
	my ($role, $name, $options) = @_;
	return as_role($role,
		"SELECT wf_start('$name', '{}', " . wf_sql_quote(wf_json($options // {})) . ')');
}

$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE carol LOGIN;
	GRANT CREATE ON SCHEMA public TO alice, bob;
});
my $alice_oid = $node->safe_psql('postgres', q{SELECT 'alice'::regrole::oid});

define_as('alice', 'a_tick', { steps => [ { name => 'x', sql => 'SELECT 1' } ] });
define_as('alice', 'a_on_evt', { steps => [ { name => 'x', sql => 'SELECT 1' } ] });
define_as('alice', 'a_wait',
	{ steps => [ { name => 'w', wait_for => { signal => 'go' } }, { name => 'x', sql => 'SELECT 1' } ] });
define_as('alice', 'a_sleep', { steps => [ { name => 'nap', sleep => '3 hours' } ] });
define_as('bob', 'b_ok', { steps => [ { name => 'x', sql => 'SELECT current_user::text' } ] });
define_as('bob', 'b_tick', { steps => [ { name => 'x', sql => 'SELECT 1' } ] });
define_as(
	'bob', 'b_skip',
	{
		steps => [
			{ name => 'x', sql => 'SELECT 1', on_error => 'skip', retry => { max_attempts => 3 } },
			{ name => 'y', sql => 'SELECT 2' }
		]
	});
define_as('carol', 'c_wait', { steps => [ { name => 'w', wait_for => { signal => 'go' } } ] });

# -------------------------------------------------------------------------
# A step whose owner is gone fails its run, on_error notwithstanding.  The
# owner is made to vanish by hand, once both executors have swept (at their
# start: they are idle then) and while no role changes, so that no sweep
# gets to the run first.
# -------------------------------------------------------------------------
$node->restart;
ok( $node->poll_query_until(
		'postgres', q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type = 'pg_workflow executor' AND state = 'idle'
	   AND wait_event_type = 'Extension' AND wait_event = 'Extension'}, '2'),
	'both executors started, swept and went idle');
my $ghost = start_as('bob', 'b_skip', { start_at => '2999-01-01' });
$node->safe_psql(
	'postgres', qq{
	UPDATE wf.run SET owner = 424242 WHERE id = $ghost;
	UPDATE wf.step SET ready_at = now() WHERE run_id = $ghost AND step = 'x';
	SELECT wf._wake();
});
is(wf_wait($node, $ghost), 'failed', 'a run whose owner is gone fails');
is( $node->safe_psql(
		'postgres', "SELECT error->>'message', error->>'sqlstate' FROM wf.runs WHERE id = $ghost"),
	"role with OID 424242 that owned run $ghost was dropped|42704",
	'with the error naming the role');
is( $node->safe_psql(
		'postgres', "SELECT step, status, attempt FROM wf.steps WHERE run_id = $ghost ORDER BY step"),
	"x|failed|1\ny|cancelled|0",
	'its step failed at its first attempt, neither retried nor skipped');

# -------------------------------------------------------------------------
# Alice's objects, and bob's schedule.
# -------------------------------------------------------------------------
as_role('alice', q{SELECT wf_schedule('a_every', 'a_tick', 'every 1 second')});
as_role('alice', q{SELECT wf_on_event('a.evt', 'a_on_evt')});
my $wait = start_as('alice', 'a_wait');
my $sleep = start_as('alice', 'a_sleep');
as_role('bob', q{SELECT wf_schedule('b_every', 'b_tick', 'every 1 second')});
as_role('alice', q{SELECT wf_set_secret('a_tok', 'alice-token'), wf_grant_secret('a_tok', 'bob')});
as_role('bob', q{SELECT wf_set_secret('b_tok', 'bob-token'), wf_grant_secret('b_tok', 'alice')});

ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) > 0 FROM wf.runs WHERE workflow = 'a_tick' AND status = 'completed'"),
	'alice\'s schedule fires');
is(as_role('bob', q{SELECT wf_emit('a.evt')}), '1', 'her subscription starts a run');
ok( $node->poll_query_until(
		'postgres', qq{
	SELECT count(*) FROM wf.steps
	 WHERE (run_id, step, status) IN (($wait, 'w', 'waiting'), ($sleep, 'nap', 'waiting'))}, '2'),
	'her runs wait for a signal and a timer');

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN wf_alerts');

# -------------------------------------------------------------------------
# DROP ROLE waits for alice's transaction that starts a run.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', 'DROP OWNED BY alice');
my $alice = $node->background_psql('postgres',
	extra_params => [ '-U', 'alice' ], on_error_stop => 0);
$alice->query_safe('BEGIN');
my $late = $alice->query_safe(q{SELECT wf_start('a_wait')});
my $dropper = $node->background_psql('postgres');
$dropper->query_until(qr/dropping/, "\\echo dropping\nDROP ROLE alice;\n");
ok( $node->poll_query_until(
		'postgres', q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE query LIKE 'DROP ROLE alice%' AND wait_event_type = 'Lock'}, '1'),
	'DROP ROLE waits for the transaction that started a run as alice');
$alice->query_safe('COMMIT');
$dropper->query_safe('SELECT 1');
$dropper->quit;
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_roles WHERE rolname = 'alice'}),
	'0', 'alice is dropped');

ok( $node->poll_query_until(
		'postgres', qq{
	SELECT count(*) FROM wf.runs
	 WHERE workflow LIKE 'a\\_%' AND status IN ('pending', 'running', 'waiting')}, '0'),
	'no run of hers is left unfinished');
is( $node->safe_psql(
		'postgres', qq{
	SELECT id, status, error->>'message', error->>'sqlstate', owner FROM wf.runs
	 WHERE id IN ($wait, $sleep, $late) ORDER BY id}),
	join("\n",
		map { "$_|failed|role with OID $alice_oid that owned run $_ was dropped|42704|-" }
		  sort { $a <=> $b } ($wait, $sleep, $late)),
	'her waiting, sleeping and last runs failed with the error; they belong to no role now');
is( $node->safe_psql(
		'postgres', qq{
	SELECT status, actor FROM wf.history WHERE run_id = $wait ORDER BY id DESC LIMIT 1}),
	'failed|-',
	'the history records the failure');
is( $node->safe_psql(
		'postgres', qq{
	SELECT count(*) FROM wf.steps
	 WHERE run_id IN ($wait, $sleep, $late) AND status NOT IN ('cancelled', 'failed')}),
	'0',
	'their steps ended');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM wf.runs WHERE owner::oid = $alice_oid"
		  . " OR (workflow IN ('a_tick', 'a_wait', 'a_sleep') AND owner <> 0)"
	),
	'0',
	'no run is hers any more');
is( $node->safe_psql(
		'postgres', qq{
	SELECT count(*) FROM wf.alerts
	 WHERE kind = 'failure' AND run_id IN ($wait, $sleep, $late)}),
	'3',
	'an alert for each of her unfinished runs');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(message, E'\n' ORDER BY message) FROM wf.alerts WHERE kind = 'owner_dropped'}),
	"schedule \"a_every\" was disabled: role with OID $alice_oid that owned it was dropped\n"
	  . "secret \"a_tok\" is owned by no role: role with OID $alice_oid that owned it was dropped\n"
	  . "subscription of workflow \"a_on_evt\" to event \"a.evt\" was disabled: role with OID $alice_oid that subscribed was dropped",
	'an alert for her schedule, her secret and her subscription');
is( $node->safe_psql(
		'postgres', q{SELECT name, owner, grantees FROM wf.secrets ORDER BY name}),
	"a_tok|-|{bob}\nb_tok|bob|{}",
	"her secret is no role's and still bob's to use; bob's grant to her is gone");
is( $node->safe_psql(
		'postgres',
		q{SELECT owner, next_at, disabled_at IS NOT NULL FROM wf.schedules WHERE name = 'a_every'}),
	'-|infinity|t',
	'her schedule is disabled');
is( $node->safe_psql(
		'postgres',
		q{SELECT created_by, disabled_at IS NOT NULL FROM wf.subscription WHERE event = 'a.evt'}),
	'-|t',
	'her subscription is disabled');
is( $node->safe_psql(
		'postgres', q{SELECT DISTINCT created_by FROM wf.workflows WHERE name LIKE 'a\_%'}),
	'-', 'her workflows belong to no role');

# NOTIFY wf_alerts announced them.
my ($notified, $out) = (0, '');
foreach my $i (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	$out .= $listener->query_safe('SELECT 1');
	$notified = () = $out =~ /"kind" : "owner_dropped"/g;
	last if $notified >= 3;
	usleep(100_000);
}
is($notified, 3, 'NOTIFY wf_alerts announced the disabled schedule, secret and subscription');
$listener->quit;

# Her schedule fires no more, while bob's does.
sub b_last { $node->safe_psql('postgres', q{SELECT coalesce(last_run_id, 0) FROM wf.schedules WHERE name = 'b_every'}) }

sub b_fires
{
	my $last = b_last();
	return $node->poll_query_until('postgres',
		"SELECT last_run_id > $last FROM wf.schedules WHERE name = 'b_every'");
}
ok(b_fires(), 'bob\'s schedule fires after the drop');
my $ticks = $node->safe_psql('postgres', q{SELECT count(*) FROM wf.runs WHERE workflow = 'a_tick'});
ok(b_fires() && b_fires(), 'bob\'s schedule fires twice more');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.runs WHERE workflow = 'a_tick'}),
	$ticks, 'alice\'s schedule did not fire meanwhile');

# Her subscription starts nothing; bob's runs go on.
is(as_role('bob', q{SELECT wf_emit('a.evt')}), '0', 'wf_emit of her event starts nothing');
is($node->safe_psql('postgres', q{SELECT wf_emit('a.evt')}), '0', 'not even as a superuser');
my $bob_run = start_as('bob', 'b_ok');
is(wf_wait($node, $bob_run), 'completed', 'bob\'s run completes');
is($node->safe_psql('postgres', "SELECT output #>> '{}' FROM wf.steps WHERE run_id = $bob_run"),
	'bob', 'as bob');

# Her session, still open, starts nothing.
$alice->query(q{SELECT wf_start('b_ok')});
like($alice->{stderr}, qr/ERROR:  role with OID $alice_oid does not exist/,
	'her session left open cannot start a run');
$alice->quit;
is($node->safe_psql('postgres', "SELECT count(*) FROM wf.runs WHERE owner::oid = $alice_oid"),
	'0', 'and started none');

# -------------------------------------------------------------------------
# A role dropped while no executor runs.
# -------------------------------------------------------------------------
my $carol_oid = $node->safe_psql('postgres', q{SELECT 'carol'::regrole::oid});
my $carol_run = start_as('carol', 'c_wait');
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.runs WHERE id = $carol_run", 'waiting'),
	'carol\'s run waits');
my @before = wf_executor_pids($node);
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'"
);
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'", '0'),
	'the executors stopped (they restart after 5 s)');
my $none = $node->safe_psql(
	'postgres', q{
	DROP ROLE carol;
	SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'});
SKIP:
{
	skip 'the executors restarted before DROP ROLE committed', 2 unless $none eq '0';
	ok(wf_wait_for_executors($node, 2, \@before), 'new executors started');
	ok( $node->poll_query_until(
			'postgres', qq{
		SELECT status || ' ' || (error->>'message') FROM wf.runs WHERE id = $carol_run},
			"failed role with OID $carol_oid that owned run $carol_run was dropped"),
		'they failed the run of the role dropped while none ran');
}

done_testing();
