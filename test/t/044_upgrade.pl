# Copyright (c) pg_workflow authors

# ALTER EXTENSION pg_workflow UPDATE, with runs in flight.
#
#  - Released 0.1, library and SQL (built from the git history by
#    scripts/build-release.sh; the run-tests.sh TAP phase passes its
#    installation in PGWF_RELEASE_0_1): runs are left mid-way (a step
#    waiting for a signal, an agent task claimed, a durable timer, a start
#    in the future, one completed); the server is restarted on this
#    version's library, whose executors stay idle with one WARNING until
#    the update; after it every run ends as it would have, its history
#    whole.
#  - The database updated from 0.1 has exactly the objects of one where
#    this version was installed: same functions (text, settings,
#    privileges), tables, columns in the same order, defaults, indexes,
#    constraints, views, triggers, comments and privileges.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $current = $ENV{PG_CONFIG} ? undef : undef;	# the PATH's installation

# The extension's objects, each described with what defines it.
my $signature = q{
	WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pg_workflow'),
	members AS (
		SELECT d.classid, d.objid FROM pg_depend d, ext
		 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid
		   AND d.deptype = 'e'),
	rels AS (
		SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'wf'::regnamespace)
	SELECT string_agg(line, E'\n' ORDER BY line) FROM (
		SELECT 'member ' || pg_describe_object(classid, objid, 0) AS line FROM members
		UNION ALL
		SELECT 'function ' || p.oid::regprocedure || ' returns ' || pg_get_function_result(p.oid)
			   || ' ' || p.prokind::text || p.provolatile::text || p.proparallel::text
			   || ' strict=' || p.proisstrict || ' definer=' || p.prosecdef
			   || ' config=' || coalesce(p.proconfig::text, '')
			   || ' acl=' || coalesce(p.proacl::text, '')
			   || ' args=' || coalesce(pg_get_function_arguments(p.oid), '')
			   || ' src=' || md5(coalesce(p.prosrc, '') || coalesce(p.probin, ''))
			   || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
		  FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
		UNION ALL
		SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text || ' persistence=' || c.relpersistence::text
			   || ' options=' || coalesce(c.reloptions::text, '') || ' acl=' || coalesce(c.relacl::text, '')
			   || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
			   || coalesce(' view=' || pg_get_viewdef(c.oid), '')
		  FROM pg_class c JOIN rels USING (oid)
		UNION ALL
		SELECT 'column ' || a.attrelid::regclass || ' ' || lpad(a.attnum::text, 3, '0') || ' ' || a.attname
			   || ' ' || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
			   || ' default=' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '')
			   || ' storage=' || a.attstorage::text || ' compression=' || a.attcompression::text
			   || ' acl=' || coalesce(a.attacl::text, '')
		  FROM pg_attribute a JOIN rels r ON r.oid = a.attrelid
		  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
		 WHERE a.attnum > 0 AND NOT a.attisdropped
		UNION ALL
		SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN rels r ON r.oid = i.indrelid
		UNION ALL
		SELECT 'constraint ' || co.conrelid::regclass || ' ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
		  FROM pg_constraint co JOIN rels r ON r.oid = co.conrelid
		UNION ALL
		SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid
		 WHERE NOT t.tgisinternal
		UNION ALL
		SELECT 'event trigger ' || e.evtname || ' ' || e.evtevent || ' ' || e.evtfoid::regproc
			   || ' ' || coalesce(e.evttags::text, '')
		  FROM pg_event_trigger e JOIN members m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
		UNION ALL
		SELECT 'schema acl ' || coalesce(n.nspacl::text, '') || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '')
		  FROM pg_namespace n WHERE n.nspname = 'wf'
	) s
};

# The lines of two signatures that differ: "- " only in the first (updated),
# "+ " only in the second (new install).
sub signature_diff
{
	my ($updated, $fresh) = @_;
	my %a = map { $_ => 1 } split /\n/, $updated;
	my %b = map { $_ => 1 } split /\n/, $fresh;
	return join("\n",
		(map { "- $_" } grep { !$b{$_} } sort keys %a),
		(map { "+ $_" } grep { !$a{$_} } sort keys %b));
}

sub version_of
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT extversion FROM pg_extension WHERE extname = 'pg_workflow'");
}

my $this_version = PostgreSQL::Test::Utils::slurp_file(
	"$FindBin::RealBin/../../pg_workflow.control") =~ /^default_version = '([^']+)'/m
  ? $1 : die "no default_version in pg_workflow.control";

# --- the released library leaves runs mid-way --------------------------

SKIP:
{
	skip 'release 0.1 was not built (scripts/build-release.sh needs the git history): no run of its library', 14
	  unless $ENV{PGWF_RELEASE_0_1};

	my $node = PostgreSQL::Test::Cluster->new('release',
		install_path => $ENV{PGWF_RELEASE_0_1});
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'pg_workflow'\npg_workflow.workers = 2\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_workflow');
	is(version_of($node), '0.1', 'release 0.1 is installed');

	wf_define($node, 'gated', { steps => [
		{ name => 'a', sql => q{SELECT '{"n": 41}'::jsonb} },
		{ name => 'b', wait_for => { signal => 'go' } },
		{ name => 'c', sql => q{SELECT to_jsonb(($1->'steps'->'a'->>'n')::int + ($1->'steps'->'b'->>'k')::int)} } ] });
	wf_define($node, 'delegated', { steps => [
		{ name => 'ask', agent => 'p', payload => { q => '{{$.input.q}}' } },
		{ name => 'done', sql => q{SELECT $1->'steps'->'ask'} } ] });
	wf_define($node, 'timed', { steps => [
		{ name => 'nap', sleep => '4 seconds' },
		{ name => 'after', sql => q{SELECT '"woke"'::jsonb} } ] });

	# Signalled once waiting, as the run across the update will be: a
	# signal that came first would leave no "waiting" in its history.
	my $done = wf_start($node, 'gated');
	$node->poll_query_until('postgres', qq{
		SELECT status = 'waiting' FROM wf.steps WHERE run_id = $done AND step = 'b'})
	  or die 'the first run did not get to its wait';
	$node->safe_psql('postgres', "SELECT wf_signal($done, 'go', '{\"k\": 0}')");
	is(wf_wait($node, $done), 'completed', 'release 0.1 completes a run');
	my $gated = wf_start($node, 'gated');
	my $delegated = wf_start($node, 'delegated', { q => 'why' });
	my $timed = wf_start($node, 'timed');
	wf_define($node, 'plain', { steps => [ { name => 'x', sql => 'SELECT 1' } ] });
	my $later = wf_start($node, 'plain', {}, { start_at =>
		$node->safe_psql('postgres', "SELECT now() + interval '8 seconds'") });
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = 2 FROM wf.steps
		 WHERE (run_id = $gated AND step = 'b' OR run_id = $timed AND step = 'nap')
		   AND status = 'waiting'}) or die 'the runs did not get to their waits';
	my ($task, $payload) = split /\|/, $node->safe_psql('postgres',
		"SELECT task_id, payload FROM wf_claim('p', lease => '10 minutes', agent => 'a1', wait => '30 seconds')");
	is($payload, '{"q": "why"}', 'an agent holds the task of release 0.1');

	# The package is upgraded: this version's library, release 0.1's SQL.
	$node->stop('fast');
	$node->{_install_path} = undef;
	my $log_at = -s $node->logfile;
	$node->start;
	ok( $node->wait_for_log(
			qr/WARNING:  pg_workflow executors are idle: the library is version \Q$this_version\E, the extension installed in database "postgres" is version 0\.1/,
			$log_at),
		'the new library waits for ALTER EXTENSION UPDATE');
	is( $node->safe_psql('postgres',
			"SELECT string_agg(status, ',' ORDER BY id) FROM wf.runs WHERE id IN ($gated, $delegated, $timed)"),
		'waiting,running,waiting', 'the runs in flight are kept meanwhile');

	$node->safe_psql('postgres', 'ALTER EXTENSION pg_workflow UPDATE');
	is(version_of($node), $this_version, 'updated');
	$node->safe_psql('postgres', "SELECT wf_signal($gated, 'go', '{\"k\": 1}')");
	is($node->safe_psql('postgres', "SELECT wf_complete($task, '{\"a\": 42}')"), 't',
		'the lease taken under release 0.1 completes its task');
	is(wf_wait_all($node, $gated, $delegated, $timed, $later),
		'completed,completed,completed,completed', 'every run in flight completes');
	is($node->safe_psql('postgres', "SELECT output FROM wf.steps WHERE run_id = $gated AND step = 'c'"),
		'42', 'a step after the update reads the outputs of steps before it');
	is($node->safe_psql('postgres', "SELECT output FROM wf.steps WHERE run_id = $delegated AND step = 'done'"),
		'{"a": 42}', 'the agent\'s output is the step\'s');
	is($node->safe_psql('postgres', "SELECT output FROM wf.steps WHERE run_id = $timed AND step = 'after'"),
		'"woke"', 'the timer set under release 0.1 fired');
	is( $node->safe_psql('postgres', qq{
			SELECT string_agg(coalesce(step, '-') || ':' || status, ',' ORDER BY id)
			  FROM wf.history WHERE run_id = $gated}),
		$node->safe_psql('postgres', qq{
			SELECT string_agg(coalesce(step, '-') || ':' || status, ',' ORDER BY id)
			  FROM wf.history WHERE run_id = $done}),
		'the history of a run across the update is that of a run before it');
	my $log = substr(slurp_file($node->logfile), $log_at);
	unlike($log, qr/FATAL|PANIC|terminated by signal/, 'no process failed after the restart');

	# The updated database holds what a new install does.
	my $updated = $node->safe_psql('postgres', $signature);
	$node->safe_psql('postgres', 'DROP EXTENSION pg_workflow CASCADE');
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_workflow');
	is(signature_diff($updated, $node->safe_psql('postgres', $signature)), '',
		'updated from release 0.1: the objects of a new install');
	$node->stop;
}

# --- release 0.1's SQL under this library: pending work, then the update ---

my $node = wf_node('upgrade', create => 0);
$node->safe_psql('postgres', "CREATE EXTENSION pg_workflow VERSION '0.1'");
ok( $node->wait_for_log(
		qr/pg_workflow executors are idle: the library is version \Q$this_version\E, the extension installed in database "postgres" is version 0\.1/),
	'this library does not run release 0.1\'s tables');
wf_define($node, 'one', { steps => [
	{ name => 'a', sql => 'SELECT 1' },
	{ name => 'b', wait_for => { signal => 'go' } } ] });
my @runs = map { wf_start($node, 'one') } 1 .. 3;
$node->safe_psql('postgres', "SELECT wf_signal($_, 'go')") for @runs;
$node->safe_psql('postgres', "SELECT wf_schedule('hourly', 'one', '0 * * * *')");
is( $node->safe_psql('postgres',
		"SELECT string_agg(status, ',') FROM wf.runs WHERE id IN (" . join(',', @runs) . ")"),
	'pending,pending,pending', 'runs started before the update wait for it');

$node->safe_psql('postgres', 'ALTER EXTENSION pg_workflow UPDATE');
is(version_of($node), $this_version, 'updated to this version');
is(wf_wait_all($node, @runs), 'completed,completed,completed',
	'the runs started before the update complete, with the signals sent before it');
is($node->safe_psql('postgres', 'SELECT count(*) FROM wf.schedules'), '1', 'the schedule is kept');

my $updated = $node->safe_psql('postgres', $signature);
$node->safe_psql('postgres', 'DROP EXTENSION pg_workflow CASCADE');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_workflow');
my $fresh = $node->safe_psql('postgres', $signature);
cmp_ok(length($fresh), '>', 10_000, 'the signature describes the objects');
is(signature_diff($updated, $fresh), '', 'updated from 0.1: the objects of a new install');

done_testing();
