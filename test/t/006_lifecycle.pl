
# Copyright (c) pg_workflow authors

# The life of the executors and of the extension:
#  - DROP EXTENSION while the executors are idle: they stay (same pids), no
#    error in the log, also after a SIGHUP makes them look for work;
#    CREATE EXTENSION again and a run completes without a restart;
#  - SIGTERM of an idle executor (pg_terminate_backend): the other one keeps
#    running workflows, the postmaster restarts it, no crash reset;
#  - SIGTERM of an executor in the middle of a step: the step's attempt
#    rolls back and the step runs again, its effect exactly once;
#  - CREATE DATABASE / DROP DATABASE are not blocked by the executors;
#    CREATE EXTENSION in that other database fails with a hint;
#  - SIGHUP with a new pg_workflow.batch_size keeps the executors running;
#  - without shared_preload_libraries, CREATE EXTENSION fails with a message
#    and a hint about shared_preload_libraries, and leaves nothing behind;
#  - with pg_workflow.database = 'app', the extension is created in app and
#    runs there; CREATE EXTENSION in postgres fails with a hint naming app.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $timeout = $PostgreSQL::Test::Utils::timeout_default;
my $node = wf_node('life', workers => 2);

# Errors, fatal errors, crashes and resets in a slice of the log.
sub log_problems
{
	my ($n, $offset) = @_;
	my @bad =
	  grep { /\b(?:ERROR|FATAL|PANIC):|TRAP:|terminated by signal|reinitializing/ }
	  split /\n/, slurp_file($n->logfile, $offset);
	return join("\n", @bad);
}

my $simple = {
	steps => [
		{ name => 'a', sql => q{SELECT 1} },
		{ name => 'b', sql => q{SELECT ($1->'steps'->>'a')::int + 1} },
	]
};

ok(wf_wait_for_executors($node, 2), 'two executors are running');
my @pids = wf_executor_pids($node);

# -------------------------------------------------------------------------
# DROP EXTENSION with idle executors, then CREATE EXTENSION again.
# -------------------------------------------------------------------------
wf_define($node, 'simple', $simple);
my $run = wf_start($node, 'simple');
is(wf_wait($node, $run), 'completed', 'a run completes before the drop');

my $offset = -s $node->logfile;
$node->safe_psql('postgres', 'DROP EXTENSION pg_workflow');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_namespace WHERE nspname = 'wf'}),
	'0',
	'the extension is dropped');

# A SIGHUP wakes the executors: they look for work without the extension.
$node->reload;
ok($node->poll_query_until('postgres', 'SELECT 1', '1'), 'server is up');
is(join(',', wf_executor_pids($node)), join(',', @pids),
	'the executors are still there, with the same pids');

$node->safe_psql('postgres', 'CREATE EXTENSION pg_workflow');
wf_define($node, 'simple', $simple);
$run = wf_start($node, 'simple');
is(wf_wait($node, $run), 'completed',
	'after CREATE EXTENSION again, a run completes');
is($node->safe_psql('postgres', "SELECT output FROM wf.runs WHERE id = $run"),
	'2', 'with the right output');
is(join(',', wf_executor_pids($node)), join(',', @pids),
	'the same executors ran it');

# Several runs, so that both executors go through the new catalogs.
my @runs = wf_start_many($node, 'simple', 10);
is( wf_wait_all($node, @runs),
	join(',', ('completed') x 10),
	'more runs complete after the re-creation');
is(log_problems($node, $offset), '',
	'no error in the log around DROP and CREATE EXTENSION');

# -------------------------------------------------------------------------
# SIGTERM of an idle executor.
# -------------------------------------------------------------------------
$offset = -s $node->logfile;
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pids[0])"),
	't', "executor $pids[0] terminated");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $pids[0]", '0'),
	'the terminated executor is gone');

# The other executor works meanwhile.
$run = wf_start($node, 'simple');
is(wf_wait($node, $run), 'completed', 'a run completes with one executor');

ok(wf_wait_for_executors($node, 2, [ $pids[0] ]),
	'the postmaster restarted the executor');
my @after = wf_executor_pids($node);
ok((grep { $_ == $pids[1] } @after), 'the other executor was not restarted');

@runs = wf_start_many($node, 'simple', 10);
is( wf_wait_all($node, @runs),
	join(',', ('completed') x 10),
	'runs complete after the restart');

my $log = slurp_file($node->logfile, $offset);
like(
	$log,
	qr/terminating background worker "pg_workflow executor" due to administrator command/,
	'the executor exited on SIGTERM');
unlike($log, qr/terminated by signal|reinitializing|PANIC:|TRAP:/,
	'no crash and no reset of the server');

# -------------------------------------------------------------------------
# SIGTERM of an executor in the middle of a step.
# -------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE TABLE naps (run_id bigint);
	CREATE TABLE nap_time (secs float8);
	INSERT INTO nap_time VALUES (60);});
wf_define(
	$node, 'napper',
	{
		steps => [
			{
				name => 'nap',
				sql =>
				  q{WITH i AS (INSERT INTO naps VALUES (($1->'run'->>'id')::bigint) RETURNING 1)
					SELECT pg_sleep((SELECT secs FROM nap_time)) FROM i}
			},
			{ name => 'after', sql => q{SELECT 'woke up'} },
		]
	});
$run = wf_start($node, 'napper');
ok( $node->poll_query_until(
		'postgres', qq{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND wait_event = 'PgSleep'
	   AND query = 'run $run step nap'}, '1'),
	'an executor is sleeping in the step');
my $napping = $node->safe_psql(
	'postgres', qq{
	SELECT pid FROM pg_stat_activity
	 WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND query = 'run $run step nap'});
$node->safe_psql('postgres', 'UPDATE nap_time SET secs = 0');
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($napping)"),
	't', 'the sleeping executor is terminated');
is(wf_wait($node, $run), 'completed', 'the interrupted run completed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT (SELECT count(*) FROM naps WHERE run_id = $run),
	       string_agg(step || ':' || status || ':' || attempt, ' ' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $run}),
	'1|nap:completed:1 after:completed:1',
	'the step ran again, its effect exactly once');
ok(wf_wait_for_executors($node, 2, [$napping]),
	'the terminated executor was restarted');

# -------------------------------------------------------------------------
# CREATE DATABASE / DROP DATABASE; CREATE EXTENSION in another database.
# -------------------------------------------------------------------------
my ($ret, $stdout, $stderr) = $node->psql(
	'postgres', 'CREATE DATABASE other',
	timeout => $timeout,
	on_error_stop => 1);
is($ret, 0, 'CREATE DATABASE completes');

($ret, $stdout, $stderr) =
  $node->psql('other', 'CREATE EXTENSION pg_workflow', timeout => $timeout);
isnt($ret, 0, 'CREATE EXTENSION in another database fails');
like(
	$stderr,
	qr/ERROR:  pg_workflow can only be created in database "postgres"/,
	'the error names pg_workflow.database');
like(
	$stderr,
	qr/HINT:  .*pg_workflow\.database/,
	'the hint says to change pg_workflow.database');
is( $node->safe_psql(
		'other',
		q{SELECT count(*) FROM pg_namespace WHERE nspname = 'wf'}),
	'0',
	'nothing was created in the other database');

($ret, $stdout, $stderr) =
  $node->psql('postgres', 'DROP DATABASE other', timeout => $timeout);
is($ret, 0, 'DROP DATABASE completes');
is($stderr, '', 'DROP DATABASE without error');

# -------------------------------------------------------------------------
# SIGHUP with a new batch size.
# -------------------------------------------------------------------------
@pids = wf_executor_pids($node);
$offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "pg_workflow.batch_size = 4\n");
$node->reload;
ok( $node->poll_query_until(
		'postgres', 'SHOW pg_workflow.batch_size', '4'),
	'the new batch size is in effect');
@runs = wf_start_many($node, 'simple', 10);
$node->safe_psql('postgres',
	"SELECT count(wf_start('simple')) FROM generate_series(1, 100)");
is( wf_wait_all($node, @runs),
	join(',', ('completed') x 10),
	'runs complete after the reload');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FROM wf.runs WHERE status <> 'completed'}, '0'),
	'a burst of runs completes with the small batch size');
is(join(',', wf_executor_pids($node)), join(',', @pids),
	'the executors survived the reload');
is(log_problems($node, $offset), '', 'no error in the log after the reload');

$node->stop;

# -------------------------------------------------------------------------
# A node without shared_preload_libraries.
# -------------------------------------------------------------------------
my $bare = PostgreSQL::Test::Cluster->new('bare');
$bare->init;
$bare->start;
($ret, $stdout, $stderr) = $bare->psql('postgres', 'CREATE EXTENSION pg_workflow');
isnt($ret, 0, 'CREATE EXTENSION fails without shared_preload_libraries');
like(
	$stderr,
	qr/ERROR:  pg_workflow must be loaded via shared_preload_libraries/,
	'the error says the library must be preloaded');
like(
	$stderr,
	qr/HINT:  Add pg_workflow to shared_preload_libraries/,
	'the hint says to add it to shared_preload_libraries');
is( $bare->safe_psql(
		'postgres', q{
	SELECT count(*) FROM pg_extension WHERE extname = 'pg_workflow'
	UNION ALL
	SELECT count(*) FROM pg_namespace WHERE nspname = 'wf'}),
	"0\n0",
	'nothing was created');

# -------------------------------------------------------------------------
# pg_workflow.database = 'app'.
# -------------------------------------------------------------------------
$bare->safe_psql('postgres', 'CREATE DATABASE app');
$bare->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pg_workflow'\npg_workflow.database = 'app'\npg_workflow.workers = 1\n"
);
$bare->restart;
($ret, $stdout, $stderr) = $bare->psql('postgres', 'CREATE EXTENSION pg_workflow');
like(
	$stderr,
	qr/ERROR:  pg_workflow can only be created in database "app"/,
	'with pg_workflow.database = app, CREATE EXTENSION in postgres fails');
like($stderr, qr/HINT:  .*database "app"/, 'the hint names app');

$bare->safe_psql('app', 'CREATE EXTENSION pg_workflow');
ok( $bare->poll_query_until(
		'app',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor' AND datname = 'app'},
		'1'),
	'the executor is connected to app');
$bare->safe_psql('app',
	"SELECT wf_define('simple', " . wf_sql_quote(wf_json($simple)) . ')');
$run = $bare->safe_psql('app', q{SELECT wf_start('simple')});
is($bare->safe_psql('app', "SELECT wf_wait($run, '${timeout}s')"),
	'completed', 'a run completes in app');
$bare->stop;

done_testing();
