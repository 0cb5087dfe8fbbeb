
# Copyright (c) pg_workflow authors

# Events and history at scale.
#  - wf_emit of 100,000 distinct keys in one transaction succeeds (the
#    wake-up locks are a bounded number of buckets, not one per key), and a
#    run waiting for one of those keys is woken by it;
#  - wf.event is indexed for the lookups of waiting steps, and its rows older
#    than pg_workflow.event_retention are removed by the executors;
#  - pg_workflow.retention: finished runs older than it disappear with all
#    their rows (steps, signals, history, alerts), more than one batch of
#    them; unfinished runs and recent ones stay; 0 keeps everything.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('retention', workers => 2);

# The output of a query, or its error: each part fails on its own.
sub query
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	return $ret == 0 ? $out : "ERROR: $err";
}

# -------------------------------------------------------------------------
# 100,000 emits in one transaction.
# -------------------------------------------------------------------------
wf_define($node, 'await',
	{ steps => [ { name => 'w', wait_for => { event => 'bulk', key => '{{$.input.k}}' } } ] });
my $waiter = wf_start($node, 'await', { k => 'k77777' });
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $waiter", 'waiting'),
	'a run waits for event "bulk" with key k77777');

is( query(
		q{SELECT sum(wf_emit('bulk', jsonb_build_object('g', g), 'k' || g)) FROM generate_series(1, 100000) g}
	),
	'1',
	'100,000 wf_emit with distinct keys in one transaction succeed, one woke a run');
is(wf_wait($node, $waiter), 'completed', 'the waiting run was woken by its key');
is($node->safe_psql('postgres', "SELECT output FROM wf.runs WHERE id = $waiter"),
	'{"g": 77777}', 'with that event\'s payload');
is( $node->safe_psql('postgres', q{SELECT count(*) FROM wf.event WHERE event = 'bulk'}),
	'100000', 'the events are stored');

# With 100,000 events stored, waits still find the ones they are for.
my @waits = map { wf_start($node, 'await', { k => "late$_" }) } 1 .. 20;
ok( $node->poll_query_until(
		'postgres',
		'SELECT count(*) FROM wf.steps WHERE status = \'waiting\' AND run_id IN (' . join(',', @waits) . ')',
		'20'),
	'20 more runs wait');
$node->safe_psql('postgres',
	q{SELECT wf_emit('bulk', jsonb_build_object('late', g), 'late' || g) FROM generate_series(1, 20) g});
is(wf_wait_all($node, @waits), join(',', ('completed') x 20), 'each is woken by its event');

like(
	query(q{SELECT string_agg(indexdef, E'\n') FROM pg_indexes WHERE schemaname = 'wf' AND tablename = 'event'}),
	qr/\(event, emitted_xid\)/,
	'wf.event has an index on (event, emitted_xid) for the waits');

# -------------------------------------------------------------------------
# Event retention.
# -------------------------------------------------------------------------
like(query(q{SELECT current_setting('pg_workflow.event_retention')}),
	qr/^7d$/, 'pg_workflow.event_retention is 7 days by default');
# Emitted two hours ago (the executors look when a setting changes, and
# then when the oldest event is due); one hour kept.
$node->safe_psql('postgres',
	q{UPDATE wf.event SET emitted_at = emitted_at - interval '2 hours' WHERE key NOT LIKE 'late%'});
query(q{ALTER SYSTEM SET pg_workflow.event_retention = '1h'});
$node->reload;
ok( $node->poll_query_until(
		'postgres', q{SELECT count(*) FROM wf.event WHERE event = 'bulk'}, '20'),
	'events older than pg_workflow.event_retention are removed');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM wf.event WHERE key LIKE 'late%'}),
	'20', 'recent events stay');

# -------------------------------------------------------------------------
# Retention of finished runs.
# -------------------------------------------------------------------------
like(query(q{SELECT current_setting('pg_workflow.retention')}),
	qr/^30d$/, 'pg_workflow.retention is 30 days by default');

wf_define($node, 'two',
	{ steps => [ { name => 'a', sql => 'SELECT 1' }, { name => 'b', sql => 'SELECT 2' } ] });
wf_define($node, 'boom', { steps => [ { name => 'a', sql => 'SELECT 1 / 0' } ] });
wf_define($node, 'sig', { steps => [ { name => 'w', wait_for => { signal => 'go' } } ] });

my @old = wf_start_many($node, 'two', 2500);
my $old_failed = wf_start($node, 'boom');
my $old_sig = wf_start($node, 'sig');
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $old_sig", 'waiting'),
	'a run waits for a signal');
$node->safe_psql('postgres', "SELECT wf_signal($old_sig, 'go', '{}'), wf_signal($old_sig, 'extra', '{}')");
is(wf_wait_all($node, @old, $old_failed, $old_sig),
	join(',', ('completed') x 2500, 'failed', 'completed'),
	'2,502 runs have finished');
my $recent = wf_start($node, 'two');
is(wf_wait($node, $recent), 'completed', 'one more, recent');
my $unfinished = wf_start($node, 'sig');
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $unfinished", 'waiting'),
	'and one that has not finished');

my $old_ids = join(',', @old, $old_failed, $old_sig);
my $rows = sub {
	my ($ids) = @_;
	return query(
		"SELECT (SELECT count(*) FROM wf.run WHERE id IN ($ids)) || ' ' ||
		        (SELECT count(*) FROM wf.step WHERE run_id IN ($ids)) || ' ' ||
		        (SELECT count(*) FROM wf.history_log WHERE run_id IN ($ids)) || ' ' ||
		        (SELECT count(*) FROM wf.signal WHERE run_id IN ($ids)) || ' ' ||
		        (SELECT count(*) FROM wf.alert WHERE run_id IN ($ids))");
};
like($rows->($old_ids), qr/^2502 5002 \d+ 2 1$/, 'the old runs have steps, history, signals and an alert');

# Finished two hours ago, and the unfinished one created then; 1 hour kept.
$node->safe_psql(
	'postgres', qq{
	UPDATE wf.run SET finished_at = finished_at - interval '2 hours',
		   created_at = created_at - interval '2 hours'
	 WHERE id IN ($old_ids);
	UPDATE wf.run SET created_at = created_at - interval '2 hours' WHERE id = $unfinished;
});
query(q{ALTER SYSTEM SET pg_workflow.retention = '1h'});
$node->reload;
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) FROM wf.run WHERE id IN ($old_ids)", '0'),
	'finished runs older than pg_workflow.retention are removed, in batches');
is($rows->($old_ids), '0 0 0 0 0', 'with all their rows');
like($rows->("$recent, $unfinished"), qr/^2 3 \d+ 0 0$/,
	'the recent run and the unfinished one stay, with their rows');
is(query("SELECT wf_signal($unfinished, 'go', '{}')"), 't', 'the unfinished run goes on');
is(wf_wait($node, $unfinished), 'completed', 'and completes');

# 0 keeps finished runs forever.
query(q{ALTER SYSTEM SET pg_workflow.retention = 0});
$node->reload;
$node->safe_psql('postgres',
	"UPDATE wf.run SET finished_at = finished_at - interval '2 hours' WHERE id IN ($recent, $unfinished)");
my $marker = wf_start($node, 'two');
is(wf_wait($node, $marker), 'completed', 'a run completes after retention is set to 0');
is($node->safe_psql('postgres', "SELECT count(*) FROM wf.run WHERE id IN ($recent, $unfinished)"),
	'2', 'with pg_workflow.retention = 0, old finished runs stay');

done_testing();
