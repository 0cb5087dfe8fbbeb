
# Copyright (c) pg_workflow authors

# Schedules (wf_schedule, wf_unschedule, wf.schedules), with 3 executors:
#  - a cron schedule's next_at is its next slot; malformed schedules and
#    unknown workflows are errors that store nothing;
#  - 'every 1 second' starts runs; each due time starts at most one run
#    (distinct scheduled_at and idempotency keys across all runs, although
#    three executors look at the schedule), never before its time, on whole
#    seconds;
#  - the schedule survives an immediate shutdown: after ~3 s of downtime
#    (several missed slots) exactly one run is started for the missed slots,
#    then the schedule goes on at its next slots;
#  - wf_unschedule stops it: the row leaves wf.schedules and no run starts
#    after its next due time has passed (witnessed by a second schedule that
#    fired later).
# Skipped when the installed extension has no wf_schedule.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = wf_node('schedule', workers => 3);

if ($node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_proc WHERE proname = 'wf_schedule'}) eq '0')
{
	$node->stop;
	plan skip_all => 'wf_schedule is not available';
}

wf_define($node, 'noop',
	{ steps => [ { name => 'at', sql => q{SELECT $1->'input'->'scheduled_at'} } ] });
wf_define($node, 'witness', { steps => [ { name => 'one', sql => 'SELECT 1' } ] });
wf_define($node, 'hourly', { steps => [ { name => 'one', sql => 'SELECT 1' } ] });

# -------------------------------------------------------------------------
# Cron syntax and errors.
# -------------------------------------------------------------------------
# In one transaction, so that now() is the time the schedule was computed at.
is( $node->safe_psql(
		'postgres', q{
	BEGIN;
	SELECT wf_schedule('top-of-hour', 'hourly', '0 * * * *');
	SELECT workflow, schedule, next_at = date_trunc('hour', now()) + interval '1 hour',
		   last_at IS NULL, last_run_id IS NULL
	  FROM wf.schedules WHERE name = 'top-of-hour';
	ROLLBACK;}),
	"\nhourly|0 * * * *|t|t|t",
	"cron '0 * * * *': next_at is the next full hour, nothing fired yet");

foreach my $bad (
	[ q{'bad', 'noop', 'every 0 seconds'}, '22023', 'every 0 seconds' ],
	[ q{'bad', 'noop', 'sometimes'},       '22023', 'a malformed schedule' ],
	[ q{'bad', 'noop', '61 * * * *'},      '22023', 'a cron minute out of range' ],
	[ q{'bad', 'no-such-workflow', 'every 1 second'}, '42704', 'an unknown workflow' ])
{
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY sqlstate\nSELECT wf_schedule($bad->[0])");
	isnt($ret, 0, "wf_schedule with $bad->[2] fails");
	like($err, qr/\b$bad->[1]\b/, "... with SQLSTATE $bad->[1]");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM wf.schedules'),
	'0', 'the failed calls stored no schedule');

# -------------------------------------------------------------------------
# Every second.
# -------------------------------------------------------------------------
$node->safe_psql('postgres',
	q{SELECT wf_schedule('tick', 'noop', 'every 1 second', '{"from": "tick"}')});
is( $node->safe_psql(
		'postgres',
		q{SELECT workflow, schedule, next_at > now() - interval '1 second' FROM wf.schedules WHERE name = 'tick'}
	),
	'noop|every 1 second|t',
	'wf.schedules shows the schedule and its next time');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) >= 2 FROM wf.runs WHERE workflow = 'noop' AND status = 'completed'}),
	'the schedule started runs');
is( $node->safe_psql(
		'postgres', q{
	SELECT bool_and(input->>'from' = 'tick'), bool_and(idempotency_key LIKE 'schedule:tick:%'),
		   bool_and(output = input->'scheduled_at')
	  FROM wf.runs WHERE workflow = 'noop'}),
	't|t|t',
	'the runs have the schedule input with scheduled_at added, and a slot idempotency key');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT last_run_id IS NOT NULL AND last_at IS NOT NULL AND last_error IS NULL FROM wf.schedules WHERE name = 'tick'}
	),
	'wf.schedules shows the last run');

# -------------------------------------------------------------------------
# Downtime: the missed slots start one run.
# -------------------------------------------------------------------------
$node->stop('immediate');
# This is the downtime under test (several missed slots), not a wait for
# anything.
my $down_until = time() + 3;
usleep(100_000) while time() < $down_until;
$node->start;
ok(wf_wait_for_executors($node, 3), 'three executors after the restart');

# Runs whose slot came after the restart show the schedule went on.
ok( $node->poll_query_until(
		'postgres', q{
	SELECT count(*) >= 2 FROM wf.runs
	 WHERE workflow = 'noop' AND (input->>'scheduled_at')::timestamptz >= pg_postmaster_start_time()}
	),
	'the schedule goes on after the restart');

# The last slot fired before the shutdown, and the runs of the slots
# between it and the restart.
my $missed_sql = q{
	WITH r AS (SELECT id, created_at, (input->>'scheduled_at')::timestamptz AS at
				 FROM wf.runs WHERE workflow = 'noop'),
		 last AS (SELECT max(at) AS at FROM r WHERE created_at < pg_postmaster_start_time())
};
cmp_ok(
	$node->safe_psql(
		'postgres',
		$missed_sql
		  . q{SELECT extract(epoch FROM pg_postmaster_start_time() - at)::int FROM last}),
	'>=', 3,
	'the server was down across several slots');
is( $node->safe_psql(
		'postgres',
		$missed_sql . q{
	SELECT count(*), bool_and(r.created_at >= pg_postmaster_start_time())
	  FROM r, last WHERE r.at > last.at AND r.at < pg_postmaster_start_time()}),
	'1|t',
	'exactly one run was started, after the restart, for the missed slots');

# -------------------------------------------------------------------------
# Each due time at most once, never early, with three executors.
# -------------------------------------------------------------------------
my ($n, $n_at, $n_key, $whole, $early) = split /\|/, $node->safe_psql(
	'postgres', q{
	SELECT count(*), count(DISTINCT (input->>'scheduled_at')::timestamptz),
		   count(DISTINCT idempotency_key),
		   count(*) FILTER (WHERE date_trunc('second', (input->>'scheduled_at')::timestamptz)
								  = (input->>'scheduled_at')::timestamptz),
		   count(*) FILTER (WHERE created_at < (input->>'scheduled_at')::timestamptz)
	  FROM wf.runs WHERE workflow = 'noop'});
note "$n scheduled runs";
cmp_ok($n, '>=', 5, 'several slots fired');
is($n_at, $n, 'no due time started two runs (distinct scheduled_at)');
is($n_key, $n, 'distinct idempotency keys');
is($whole, $n, "'every 1 second' slots are whole seconds");
is($early, '0', 'no run started before its due time');

# -------------------------------------------------------------------------
# wf_unschedule.
# -------------------------------------------------------------------------
is($node->safe_psql('postgres', q{SELECT wf_unschedule('tick')}),
	't', 'wf_unschedule returns true');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.schedules WHERE name = 'tick'}),
	'0', 'the schedule left wf.schedules');
my ($after, $stopped_at) = split /\|/, $node->safe_psql('postgres',
	q{SELECT count(*), now() FROM wf.runs WHERE workflow = 'noop'});

# Another schedule firing at a slot more than a second later shows the
# executors have looked at the schedules after tick's next due time.
$node->safe_psql('postgres',
	q{SELECT wf_schedule('witness', 'witness', 'every 1 second')});
ok( $node->poll_query_until(
		'postgres', qq{
	SELECT count(*) > 0 FROM wf.runs
	 WHERE workflow = 'witness'
	   AND (input->>'scheduled_at')::timestamptz > '$stopped_at'::timestamptz + interval '1 second'}
	),
	'a later schedule fired past the removed schedule\'s next due time');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wf.runs WHERE workflow = 'noop'}),
	$after, 'the removed schedule started no more runs');
is($node->safe_psql('postgres', q{SELECT wf_unschedule('tick')}),
	'f', 'wf_unschedule of a missing schedule returns false');
is($node->safe_psql('postgres', q{SELECT wf_unschedule('witness')}),
	't', 'the witness schedule is removed too');

$node->stop;
done_testing();
