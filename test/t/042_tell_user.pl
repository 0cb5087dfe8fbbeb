
# Copyright (c) pg_workflow authors

# Telling the user instead of failing later, or silently.
#  - wf_define rejects sql steps whose statements cannot run as a step
#    (COPY to stdout or from stdin, VACUUM, CREATE DATABASE, transaction
#    control, LISTEN, PREPARE...), naming the step; ANALYZE, NOTIFY and COPY
#    to a file are accepted;
#  - wf_wait with a timeout too large to be a time (1000000 years) waits
#    without limit; a negative one is still an error;
#  - wf_wait on a hot standby is an error (25006) with a hint, at once;
#  - wf_start while no executor is alive warns, with a hint naming
#    pg_workflow.database, and the run still starts later;
#  - with a misspelt pg_workflow.database, wf_start warns the same way; the
#    executors do not crash-loop: one warning in the log and a quiet retry,
#    and they start once the database exists.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('tell');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pg_workflow'\npg_workflow.workers = 2\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_workflow');

# Runs a script with VERBOSITY verbose on a node; returns (stdout, stderr).
sub psql_capture
{
	my ($n, $sql) = @_;
	my ($out, $err) = ('', '');
	$n->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$out, stderr => \$err);
	return ($out, $err);
}

# -------------------------------------------------------------------------
# Statements that cannot run as a step.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE TABLE t (x int)');
my @rejected = (
	[ 'COPY t TO STDOUT', 'COPY to STDOUT or from STDIN' ],
	[ 'COPY t FROM STDIN', 'COPY to STDOUT or from STDIN' ],
	[ 'VACUUM t', 'VACUUM' ],
	[ 'CREATE DATABASE x', 'CREATE DATABASE' ],
	[ 'DROP DATABASE x', 'DROP DATABASE' ],
	[ 'CREATE INDEX CONCURRENTLY ON t (x)', 'CREATE INDEX CONCURRENTLY' ],
	[ 'REINDEX DATABASE postgres', 'REINDEX DATABASE' ],
	[ q{ALTER SYSTEM SET work_mem = '1MB'}, 'ALTER SYSTEM' ],
	[ q{CREATE TABLESPACE x LOCATION '/nonexistent'}, 'CREATE TABLESPACE' ],
	[ 'CLUSTER', 'CLUSTER of every table' ],
	[ 'LISTEN x', 'LISTEN' ],
	[ 'UNLISTEN *', 'UNLISTEN' ],
	[ 'DISCARD ALL', 'DISCARD' ],
	[ 'PREPARE p AS SELECT 1', 'PREPARE' ],
	[ 'DECLARE c CURSOR WITH HOLD FOR SELECT 1', 'DECLARE CURSOR WITH HOLD' ],
	[ 'CREATE TEMP TABLE tt (x int)', 'CREATE TEMPORARY TABLE' ],
	[ 'SELECT 1; VACUUM', 'VACUUM' ],);
foreach my $r (@rejected)
{
	my ($sql, $what) = @$r;
	my $def = wf_json({ steps => [ { name => 'ok', sql => 'SELECT 1' }, { name => 'bad-step', sql => $sql } ] });
	my ($out, $err) = psql_capture($node, 'SELECT wf_define(\'rejects\', ' . wf_sql_quote($def) . ')');
	like($err, qr/ERROR:  22023: step "bad-step": "sql" must not contain \Q$what\E/,
		"wf_define rejects \"$sql\", naming the step");
}
foreach my $sql ('BEGIN', 'COMMIT', 'SAVEPOINT s', q{PREPARE TRANSACTION 'x'})
{
	my $def = wf_json({ steps => [ { name => 'bad-step', sql => $sql } ] });
	my ($out, $err) = psql_capture($node, 'SELECT wf_define(\'rejects\', ' . wf_sql_quote($def) . ')');
	like($err, qr/ERROR:  22023: step "bad-step": "sql" must not contain transaction control statements/,
		"wf_define rejects \"$sql\"");
}
foreach my $sql ('ANALYZE t', q{NOTIFY x, 'y'}, q{COPY t TO '/dev/null'}, 'SELECT 1; SELECT 2')
{
	my $def = wf_json({ steps => [ { name => 'fine', sql => $sql } ] });
	is($node->safe_psql('postgres', 'SELECT count(*) FROM wf_validate(' . wf_sql_quote($def) . ')'),
		'0', "\"$sql\" is accepted");
}

# -------------------------------------------------------------------------
# wf_wait timeouts.
# -------------------------------------------------------------------------
wf_define($node, 'one', { steps => [ { name => 'a', sql => 'SELECT 1' } ] });
my $run = wf_start($node, 'one');
is(wf_wait($node, $run), 'completed', 'a run completes');
my ($out, $err) = psql_capture($node, "SELECT wf_wait($run, '1000000 years')");
is($out, 'completed', 'wf_wait with a timeout of 1000000 years returns the status');
is($err, '', 'without an error');
($out, $err) = psql_capture($node, "SELECT wf_wait($run, '-1 s')");
like($err, qr/ERROR:  22023: timeout must not be negative/, 'a negative timeout is an error');
($out, $err) = psql_capture($node, "SELECT wf_wait($run, '-1000000 years')");
like($err, qr/ERROR:  22023: timeout must not be negative/, 'so is a large negative one');

# -------------------------------------------------------------------------
# wf_wait on a hot standby.
# -------------------------------------------------------------------------
wf_define($node, 'sig', { steps => [ { name => 'w', wait_for => { signal => 'go' } } ] });
my $waiting = wf_start($node, 'sig');
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $waiting", 'waiting'),
	'a run waits for a signal');
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('tell_standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
($out, $err) = psql_capture($standby, "SELECT wf_wait($waiting, '2 s')");
like($err, qr/ERROR:  25006: wf_wait cannot wait on a standby server/,
	'wf_wait on a standby is an error');
like($err, qr/HINT:  Call wf_wait on the primary/, 'with a hint');
$standby->stop;

# -------------------------------------------------------------------------
# wf_start while no executor is alive.
# -------------------------------------------------------------------------
# The postmaster restarts a stopped executor after 5 seconds: the start is
# tried again if they were back already.
my $warned = 0;
my $stopped_run;
for (my $try = 0; $try < 5 && !$warned; $try++)
{
	$node->safe_psql('postgres',
		q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'});
	ok( $node->poll_query_until(
			'postgres',
			q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'}, '0'),
		'the executors are stopped');
	($out, $err) = psql_capture($node, q{SELECT wf_start('one')});
	$stopped_run = $out;
	$warned = 1 if $err =~ /WARNING:  01000: no pg_workflow executor is running/;
	last if $warned;
	last unless $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'});
}
ok($warned, 'wf_start warns when no executor is running');
like($err, qr/HINT:  .*pg_workflow\.database/, 'the hint names pg_workflow.database');
like($stopped_run, qr/^\d+$/, 'the run is started all the same');
is(wf_wait($node, $stopped_run), 'completed', 'and completes once the executors are back');

# -------------------------------------------------------------------------
# A misspelt pg_workflow.database.
# -------------------------------------------------------------------------
$node->append_conf('postgresql.conf', "pg_workflow.database = 'nosuchdb'\n");
my $offset = -s $node->logfile;
$node->restart;
($out, $err) = psql_capture($node, q{SELECT wf_start('one')});
like($out, qr/^\d+$/, 'wf_start works in a database the executors do not serve');
like($err, qr/WARNING:  01000: no pg_workflow executor runs the workflows of database "postgres"/,
	'and warns');
like($err, qr/DETAIL:  .*"nosuchdb"/, 'the detail names the database the executors serve');
like($err, qr/HINT:  Set pg_workflow.database = 'postgres'/, 'the hint says what to set');
my $orphan = $out;

# Several restart periods (5 s each) pass.
ok( $node->poll_query_until(
		'postgres', q{SELECT now() - pg_postmaster_start_time() > interval '16 s'}),
	'time passes');
my $log = slurp_file($node->logfile, $offset);
my $fatal = () = $log =~ /FATAL:  database "nosuchdb" does not exist/g;
cmp_ok($fatal, '<=', 2, 'the executors do not crash-loop: one failed connection each at most');
my $warnings = () = $log =~ /WARNING:  pg_workflow executors cannot start: database "nosuchdb" does not exist/g;
is($warnings, 1, 'one clear warning in the log');

$node->safe_psql('postgres', 'CREATE DATABASE nosuchdb');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor' AND datname = 'nosuchdb'},
		'2'),
	'once the database exists, the executors connect to it');
is($node->safe_psql('postgres', "SELECT status FROM wf.runs WHERE id = $orphan"),
	'pending', 'runs of other databases stay pending');

done_testing();
