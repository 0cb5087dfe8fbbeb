
# Copyright (c) pg_workflow authors

# One run never holds up the others: bad definitions, recursion, priority.
#  - a saga whose compensate action is a container (if, parallel, map) is
#    rejected by wf_define with a problem naming the path; one compensated by
#    an "until" timer runs its undo and fails cleanly;
#  - a definition with a bad compensate action written straight into
#    wf.workflow_def (bypassing wf_define) fails only its own run, with an
#    error and an alert, and 20 runs started after it all complete;
#  - priority: a role that is not a member of wf_admin cannot start runs
#    above pg_workflow.max_user_priority (42501, with a hint), a member of
#    wf_admin can, and a child run keeps its parent's priority;
#  - recursion: a workflow whose step is a child run of itself, and one whose
#    sql step calls wf_start of itself, stop at pg_workflow.max_depth with
#    a clear error (54000); the depth is recorded on each run;
#  - wf_cancel of a run with 10,000 descendants cancels all of them;
#  - a step calling wf_cancel on its own run ends the run cleanly, and what
#    the step did is done once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('contain', workers => 2);

# The output of a query, or its error (a failing query does not end the
# test, so that each part fails on its own).
sub query
{
	my ($sql, @params) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, @params);
	return $ret == 0 ? $out : "ERROR: $err";
}

# Runs a script with VERBOSITY verbose; returns (stdout, stderr).
sub psql_capture
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$out, stderr => \$err);
	return ($out, $err);
}

wf_define($node, 'two',
	{ steps => [ { name => 'a', sql => 'SELECT 1' }, { name => 'b', sql => 'SELECT 2' } ] });

# -------------------------------------------------------------------------
# Compensate actions: containers are rejected, every single step works.
# -------------------------------------------------------------------------
my %containers = (
	if => { if => '$.input.x == 1', then => [ { name => 'u1', sql => 'SELECT 1' } ] },
	parallel => {
		parallel => [ { name => 'p', steps => [ { name => 'u2', sql => 'SELECT 1' } ] } ]
	},
	map => { map => { over => '$.input.items', step => { name => 'u3', sql => 'SELECT 1' } } },
);
foreach my $kind (sort keys %containers)
{
	my $def = {
		steps => [
			{ name => 'book', sql => 'SELECT 1', compensate => $containers{$kind} },
			{ name => 'boom', sql => 'SELECT 1 / 0', on_error => 'compensate' },
		]
	};
	my ($out, $err) = psql_capture(
		'SELECT wf_define(' . wf_sql_quote("saga-$kind") . ', ' . wf_sql_quote(wf_json($def)) . ')');
	like($err,
		qr/ERROR:  22023: step "book": "compensate" must be a single step, not a container \("$kind"\)/,
		"wf_define rejects a saga compensated by a container ($kind), naming the path");
	is( query(
			'SELECT count(*) FROM wf_validate(' . wf_sql_quote(wf_json($def)) . ') p'
			  . q{ WHERE p LIKE '%"compensate"%container%'}),
		'1',
		"wf_validate reports the container compensate action ($kind)");
}

# "until" is the short form of "sleep": it may compensate.
wf_define(
	$node,
	'saga-until',
	{
		steps => [
			{ name => 'book', sql => 'SELECT 1', compensate => { until => '2000-01-01T00:00:00Z' } },
			{ name => 'boom', sql => 'SELECT 1 / 0', on_error => 'compensate' },
		]
	});
my $until = wf_start($node, 'saga-until');
is(wf_wait($node, $until), 'failed', 'a saga compensated by an "until" timer fails');
is( query(
		"SELECT s.kind || ':' || s.status || ' ' || (r.error->>'compensated') FROM wf.steps s JOIN wf.runs r ON r.id = s.run_id WHERE s.run_id = $until AND s.step = 'compensate:book'"
	),
	'until:completed ["book"]',
	'its compensation ran as an "until" step and is recorded');

# -------------------------------------------------------------------------
# Defence in depth: a bad compensate action written past wf_define.
# -------------------------------------------------------------------------
foreach my $bad (
	[ 'poison-if', { if => '$.input.x == 1', then => [ { name => 'u', sql => 'SELECT 1' } ] } ],
	[ 'poison-none', { timeout => '1 s' } ],
	[ 'poison-two', { sql => 'SELECT 1', sleep => '1 s' } ])
{
	my ($name, $action) = @$bad;
	my $def = wf_json(
		{
			steps => [
				{ name => 'book', sql => 'SELECT 1', compensate => $action },
				{ name => 'boom', sql => 'SELECT 1 / 0', on_error => 'compensate' },
			]
		});
	$node->safe_psql(
		'postgres', qq{
		INSERT INTO wf.workflow_def (name, version, definition, plan, defaults, created_by)
		SELECT '$name', 1, d, wf._plan(d), '{}', (SELECT oid FROM pg_roles WHERE rolname = current_user)
		  FROM (SELECT ${\ wf_sql_quote($def)}::jsonb AS d) x});
}
my @poisoned = map { wf_start($node, $_) } qw(poison-if poison-none poison-two);
my @others = wf_start_many($node, 'two', 20);
is(wf_wait_all($node, @others), join(',', ('completed') x 20),
	'20 runs started after the poisoned ones all complete');
is(wf_wait_all($node, @poisoned), 'failed,failed,failed',
	'each poisoned run fails on its own');
is( query(
		q{SELECT string_agg((r.error ? 'compensation_failed' AND EXISTS (SELECT 1 FROM wf.alerts a WHERE a.run_id = r.id AND a.message LIKE '%cannot be compensated%'))::text, ',' ORDER BY r.id) FROM wf.runs r WHERE r.id IN (}
		  . join(',', @poisoned) . ')'
	),
	'true,true,true',
	'each says why it could not be compensated, in its error and an alert');

# -------------------------------------------------------------------------
# Priority.
# -------------------------------------------------------------------------
$node->safe_psql('postgres',
	'CREATE ROLE alice LOGIN; CREATE ROLE boss LOGIN IN ROLE wf_admin; CREATE ROLE carol LOGIN');
query('ALTER ROLE carol SET pg_workflow.max_user_priority = 50');
my ($out, $err) = psql_capture(
	q{SET ROLE alice; SELECT wf_start('two', '{}', '{"priority": 1}')});
like($err, qr/ERROR:  42501: priority 1 is above pg_workflow.max_user_priority \(0\)/,
	'a role outside wf_admin cannot start a run above pg_workflow.max_user_priority');
like($err, qr/HINT:  .*wf_admin/, 'the error has a hint');
like(query(q{SET ROLE alice; SELECT wf_start('two', '{}', '{"priority": -5}')}),
	qr/^\d+$/,
	'it may start runs at a lower priority');
like(query(q{SELECT wf_start('two', '{}', '{"priority": 50}')},
		extra_params => [ '-U', 'carol' ]),
	qr/^\d+$/,
	'a role whose max_user_priority is raised by ALTER ROLE may use it');

wf_define($node, 'parent', { steps => [ { name => 'child', workflow => 'two' } ] });
my $prio = $node->safe_psql('postgres',
	q{SET ROLE boss; SELECT wf_start('parent', '{}', '{"priority": 1000}')});
is(wf_wait($node, $prio), 'completed', 'a member of wf_admin starts a run at priority 1000');
is( query(
		"SELECT string_agg(DISTINCT r.priority::text || '/' || s.priority::text, ',') FROM wf.run r JOIN wf.step s ON s.run_id = r.id WHERE r.id = $prio OR r.parent_run = $prio"
	),
	'1000/1000',
	'the run, its child run and all their steps have that priority');

# -------------------------------------------------------------------------
# Recursion.
# -------------------------------------------------------------------------
wf_define($node, 'rec', { steps => [ { name => 'again', workflow => 'rec' } ] });
my $rec = wf_start($node, 'rec');
is(wf_wait($node, $rec), 'failed', 'a workflow that is its own child fails');
is( query(
		q{SELECT count(*), min(depth), max(depth) FROM wf.run WHERE workflow = 'rec'}),
	'17|0|16',
	'the recursion stopped at pg_workflow.max_depth (16): 17 runs');
is( query(
		q{SELECT s.error->>'sqlstate', s.error->>'message' FROM wf.step s JOIN wf.run r ON r.id = s.run_id WHERE r.workflow = 'rec' AND r.depth = 16}
	),
	'54000|run would be 17 levels deep, more than pg_workflow.max_depth (16)',
	'the deepest step failed with a clear error');

wf_define($node, 'spawn',
	{ steps => [ { name => 'spawn', sql => q{SELECT wf_start('spawn')} } ] });
wf_start($node, 'spawn');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FILTER (WHERE status = 'failed') = 1 AND count(*) FILTER (WHERE status NOT IN ('completed', 'failed')) = 0 FROM wf.run WHERE workflow = 'spawn'}
	),
	'runs started by wf_start inside a step stop at the depth limit');
is( query(
		q{SELECT count(*), count(DISTINCT depth), max(depth), count(*) FILTER (WHERE depth > 0 AND origin_run IS NULL) FROM wf.run WHERE workflow = 'spawn'}
	),
	'17|17|16|0',
	'each counts as a child of the run whose step started it');
is( query(
		q{SELECT s.error->>'sqlstate' FROM wf.step s JOIN wf.run r ON r.id = s.run_id WHERE r.workflow = 'spawn' AND r.status = 'failed'}
	),
	'54000',
	'the step that would go too deep failed with 54000');

# -------------------------------------------------------------------------
# wf_cancel of a run with 10,000 descendants.
# -------------------------------------------------------------------------
wf_define($node, 'hold', { steps => [ { name => 'w', wait_for => { signal => 'go' } } ] });
my $root = wf_start($node, 'hold');
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $root AND step = 'w'", 'waiting'),
	'the root run waits');
$node->safe_psql(
	'postgres', qq{
	DO \$\$
	DECLARE
		p	bigint := $root;
		c	bigint;
	BEGIN
		FOR i IN 1 .. 10000 LOOP
			INSERT INTO wf.run (workflow, version, status, input, owner, search_path,
								steps_left, parent_run, parent_step)
			VALUES ('hold', 1, 'waiting', '{}', 10, '', 1, p, 'w')
			RETURNING id INTO c;
			INSERT INTO wf.step (run_id, step, label, ord, kind, spec, status, deps,
								 successors, deps_left, priority, wait_key)
			VALUES (c, 'w', 'w', 1, 'wait_for', '{"name": "w", "wait_for": {"signal": "go"}}',
					'waiting', '{}', '{}', 0, 0, 'signal:go');
			p := c;
		END LOOP;
	END
	\$\$});
($out, $err) = psql_capture("SELECT wf_cancel($root, 'enough')");
is($out, 't', 'wf_cancel of a run with 10,000 descendants (a chain) works');
is($err, '', 'without an error');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FILTER (WHERE status = 'cancelled'), count(*) FROM wf.run WHERE workflow = 'hold'"
	),
	'10001|10001',
	'the run and all its descendants are cancelled');

# -------------------------------------------------------------------------
# A step that cancels its own run.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE TABLE quit_log (run_id bigint)');
wf_define(
	$node, 'quit',
	{
		steps => [
			{
				name => 'a',
				sql => q{WITH l AS (INSERT INTO quit_log VALUES (($1->'run'->>'id')::bigint))
SELECT wf_cancel(($1->'run'->>'id')::bigint, 'done here')}
			},
			{ name => 'b', sql => 'SELECT 1' },
		]
	});
my $quit = wf_start($node, 'quit');
is(wf_wait($node, $quit), 'cancelled', 'a step that cancels its own run ends it');
is( $node->safe_psql(
		'postgres',
		"SELECT r.error->>'message', string_agg(s.step || ':' || s.status || ':' || s.attempt, ' ' ORDER BY s.ord) FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id WHERE r.id = $quit GROUP BY r.error"
	),
	'done here|a:cancelled:1 b:cancelled:0',
	'the step was attempted once; the run says why it was cancelled');
is($node->safe_psql('postgres', "SELECT count(*) FROM quit_log WHERE run_id = $quit"),
	'1', 'what the step did is done exactly once');
is(wf_wait_all($node, wf_start_many($node, 'two', 5)), join(',', ('completed') x 5),
	'other runs still complete');

done_testing();
