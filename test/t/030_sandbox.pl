# Copyright (c) pg_workflow authors

# A step is sandboxed: whatever user code it reaches runs as the run's owner
# under SECURITY_RESTRICTED_OPERATION, and nothing it changes in the
# executor's session outlives it.  Each block is an attack by an ordinary
# role with CREATE on schema public:
#  - a user-defined cast reached by the conversion of a step's result to
#    jsonb (directly, inside a composite, inside an array);
#  - session settings a step changes (search_path, then a shadowing
#    function that the engine's own SQL would call; read-only transactions;
#    work_mem and a custom setting seen by another role's step);
#  - session-level advisory locks a step leaves behind;
#  - a run started by an event, which must run as its subscriber;
#  - a row trigger whose to_jsonb(NEW) a shadowing function could capture,
#    and whose run must belong to the table's owner, not to the writer.
# One executor, so that every step runs in the same process as the one
# before it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('sandbox', workers => 1);

$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	GRANT CREATE ON SCHEMA public TO alice, bob;
	CREATE TABLE bob_private (secret text);
	INSERT INTO bob_private VALUES ('bob''s data');
	ALTER TABLE bob_private OWNER TO bob;
	CREATE TABLE alice_loot (what text);
	GRANT INSERT, SELECT ON alice_loot TO PUBLIC;
	ALTER TABLE alice_loot OWNER TO alice;
});

# Runs SQL as a role, in its own session.
sub as_role
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', "SET ROLE $role;\n$sql");
}

sub is_superuser
{
	my ($role) = @_;
	return $node->safe_psql('postgres',
		"SELECT rolsuper FROM pg_roles WHERE rolname = '$role'");
}

# A trivial run of bob's must complete after each attack.
as_role('bob', q{SELECT wf_define('bob-probe', '{"steps": [{"name": "p", "sql": "SELECT jsonb_build_object(''user'', current_user, ''search_path'', current_setting(''search_path''), ''work_mem'', current_setting(''work_mem''), ''note'', current_setting(''myapp.note'', true), ''ro'', current_setting(''transaction_read_only''))"}]}')});

sub bob_probe
{
	my $id = as_role('bob', q{SELECT wf_start('bob-probe')});
	my $status = wf_wait($node, $id);
	my $out = $node->safe_psql('postgres',
		"SELECT output FROM wf.steps WHERE run_id = $id AND step = 'p'");
	return ($status, $out);
}

sub start_as
{
	my ($role, $workflow) = @_;
	my $id = as_role($role, "SELECT wf_start('$workflow')");
	return ($id, wf_wait($node, $id));
}

# -------------------------------------------------------------------------
# A cast reached by to_jsonb of the step's result runs as the owner.
# -------------------------------------------------------------------------
as_role(
	'alice', q{
	CREATE TYPE m AS ENUM ('x');
	CREATE FUNCTION m_json(m) RETURNS json LANGUAGE plpgsql AS $$
	BEGIN
		BEGIN
			EXECUTE 'ALTER ROLE alice SUPERUSER';
		EXCEPTION WHEN insufficient_privilege THEN
			NULL;
		END;
		RETURN to_json(current_user::text);
	END $$;
	CREATE CAST (m AS json) WITH FUNCTION m_json(m);
	CREATE TYPE mrow AS (a int, b m);
	SELECT wf_define('cast-direct', '{"steps": [{"name": "c", "sql": "SELECT ''x''::m"}]}');
	SELECT wf_define('cast-row', '{"steps": [{"name": "c", "sql": "SELECT ROW(1, ''x'')::mrow"}]}');
	SELECT wf_define('cast-array', '{"steps": [{"name": "c", "sql": "SELECT ARRAY[''x''::m]"}]}');
});
for my $w ('cast-direct', 'cast-row', 'cast-array')
{
	my ($id, $status) = start_as('alice', $w);
	is($status, 'completed', "$w: the run completes");
	is(is_superuser('alice'), 'f', "$w: alice did not become superuser");
	like(
		$node->safe_psql('postgres',
			"SELECT output::text FROM wf.steps WHERE run_id = $id"),
		qr/"alice"/,
		"$w: the cast ran as alice");
}

# -------------------------------------------------------------------------
# Deferrable constraints and constraint triggers act at the end of each of a
# step's statements, in its sandbox: never at the executor's commit, as the
# executor, where a failure would also undo the other steps of the batch.
# A step that defers them explicitly gets PostgreSQL's own refusal.
# -------------------------------------------------------------------------
as_role(
	'alice', q{
	CREATE TABLE deferred_t (id int);
	CREATE FUNCTION deferred_fn() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		BEGIN
			EXECUTE 'ALTER ROLE alice SUPERUSER';
		EXCEPTION WHEN insufficient_privilege THEN
			NULL;
		END;
		INSERT INTO alice_loot VALUES ('deferred trigger ran as ' || current_user);
		RETURN NULL;
	END $$;
	CREATE CONSTRAINT TRIGGER deferred_tr AFTER INSERT ON deferred_t
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION deferred_fn();
	CREATE TABLE parent_t (id int PRIMARY KEY);
	CREATE TABLE child_t (id int REFERENCES parent_t DEFERRABLE INITIALLY DEFERRED);
	SELECT wf_define('deferred-trigger', '{"steps": [{"name": "d", "sql": "INSERT INTO deferred_t VALUES (1) RETURNING id"}]}');
	SELECT wf_define('deferred-fk', '{"steps": [{"name": "d", "sql": "INSERT INTO child_t VALUES (1) RETURNING id"}], "retry": {"max_attempts": 1}}');
	SELECT wf_define('deferred-fk-ok', '{"steps": [{"name": "d", "sql": "INSERT INTO parent_t VALUES (2); INSERT INTO child_t VALUES (2) RETURNING id"}]}');
	SELECT wf_define('deferred-explicit', '{"steps": [{"name": "d", "sql": "SET CONSTRAINTS ALL DEFERRED; INSERT INTO child_t VALUES (3) RETURNING id"}], "retry": {"max_attempts": 1}}');
});
{
	my ($id, $status) = start_as('alice', 'deferred-trigger');
	is($status, 'completed', 'deferred trigger: the run completes');
	is( $node->safe_psql('postgres',
			q{SELECT string_agg(what, ',') FROM alice_loot WHERE what LIKE 'deferred%'}),
		'deferred trigger ran as alice',
		'deferred trigger: it ran once, as alice');
	is(is_superuser('alice'), 'f', 'deferred trigger: alice is no superuser');
}
{
	# Alice's violation and Bob's run are claimed in the same batch.
	my $ids = $node->safe_psql(
		'postgres', q{
		BEGIN;
		SET LOCAL ROLE alice;
		SELECT wf_start('deferred-fk');
		SET LOCAL ROLE bob;
		SELECT wf_start('bob-probe');
		COMMIT;});
	my ($a, $b) = split /\n/, $ids;
	is(wf_wait($node, $a), 'failed', 'deferred FK violation: its run fails');
	like(
		$node->safe_psql('postgres',
			"SELECT error->>'sqlstate' FROM wf.steps WHERE run_id = $a"),
		qr/^23503$/,
		'deferred FK violation: the step failed with 23503');
	is(wf_wait($node, $b), 'completed',
		"deferred FK violation: bob's run of the same batch completes");
	my ($id, $status) = start_as('alice', 'deferred-fk-ok');
	is($status, 'completed', 'a step that satisfies its constraint completes');
	($id, $status) = start_as('alice', 'deferred-explicit');
	is($status, 'failed', 'a step that defers its constraints fails');
	is( $node->safe_psql('postgres',
			"SELECT error->>'sqlstate' FROM wf.steps WHERE run_id = $id"),
		'42501',
		'it fails with 42501, the refusal of a deferred trigger in a restricted operation');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM child_t'), '1',
		'only the valid row was inserted');
}

# -------------------------------------------------------------------------
# Session settings do not outlive the step.
# -------------------------------------------------------------------------
as_role(
	'alice', q{
	CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz
	LANGUAGE plpgsql AS $$
	BEGIN
		BEGIN
			EXECUTE 'ALTER ROLE alice SUPERUSER';
		EXCEPTION WHEN OTHERS THEN
			NULL;
		END;
		RETURN pg_catalog.clock_timestamp();
	END $$;
	SELECT wf_define('set-path', '{"steps": [{"name": "s", "sql": "SELECT set_config(''search_path'', ''public, pg_catalog'', false)"}, {"name": "t", "sql": "SELECT 1"}]}');
	SELECT wf_define('set-ro', '{"steps": [{"name": "s", "sql": "SELECT set_config(''default_transaction_read_only'', ''on'', false)"}]}');
	SELECT wf_define('set-ro-local', '{"steps": [{"name": "s", "sql": "SET transaction_read_only = on; SELECT 1"}]}');
	SELECT wf_define('set-misc', '{"steps": [{"name": "s", "sql": "SET work_mem = ''77MB''; SET myapp.note = ''from alice''; SELECT 1"}]}');
	SELECT wf_define('set-reset-all', '{"steps": [{"name": "s", "sql": "RESET ALL; SET search_path = public, pg_catalog; SELECT 1"}]}');
});
for my $w ('set-path', 'set-ro', 'set-ro-local', 'set-misc', 'set-reset-all')
{
	my ($id, $status) = start_as('alice', $w);
	is($status, 'completed', "$w: alice's run completes");
	my ($bstatus, $out) = bob_probe();
	is($bstatus, 'completed', "$w: bob's next run completes");
	like($out, qr/"user": "bob"/, "$w: bob's step runs as bob");
	like($out, qr/"work_mem": "4MB"/, "$w: bob sees the default work_mem");
	like($out, qr/"note": (null|"")/, "$w: bob does not see alice's setting");
	like($out, qr/"ro": "off"/, "$w: bob's transaction is not read-only");
	like($out, qr/"search_path": "\\"\$user\\", public"/,
		"$w: bob's step has bob's search_path");
	is(is_superuser('alice'), 'f',
		"$w: the engine's SQL never called alice's clock_timestamp()");
}

# -------------------------------------------------------------------------
# Session-level advisory locks are released when the step ends.
# -------------------------------------------------------------------------
as_role(
	'alice', q{
	SELECT wf_define('lock-session', '{"steps": [{"name": "l", "sql": "SELECT pg_advisory_lock(4242) IS NOT NULL"}]}');
	SELECT wf_define('lock-shared', '{"steps": [{"name": "l", "sql": "SELECT pg_advisory_lock_shared(1, 2) IS NOT NULL"}]}');
	SELECT wf_define('lock-engine-key', '{"steps": [{"name": "l", "sql": "SELECT pg_advisory_lock(hashtext(''pg_workflow.wait''), hashtext(''event:e1:'')) IS NOT NULL"}]}');
	SELECT wf_define('lock-failing', '{"steps": [{"name": "l", "sql": "SELECT pg_advisory_lock(777) IS NOT NULL AND 1/0 = 1"}], "retry": {"max_attempts": 1}}');
});
for my $w ('lock-session', 'lock-shared', 'lock-engine-key', 'lock-failing')
{
	my ($id, $status) = start_as('alice', $w);
	is($status, $w eq 'lock-failing' ? 'failed' : 'completed',
		"$w: alice's run ends");
	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		 WHERE l.locktype = 'advisory' AND a.backend_type = 'pg_workflow executor'}
		),
		'0',
		"$w: the executor holds no advisory lock afterwards");
}
# A step holding transaction-level locks on every key the engine's wake-up
# locks used to live on (then blocked on a table this test holds): the
# engine's locks are in a space of their own.
$node->safe_psql('postgres', 'CREATE TABLE lock_gate (x int); GRANT SELECT ON lock_gate TO alice');
my $gate = $node->background_psql('postgres');
$gate->query_safe('BEGIN; LOCK TABLE lock_gate IN ACCESS EXCLUSIVE MODE');
as_role('alice', q{SELECT wf_define('lock-engine-xact', '{"steps": [{"name": "l", "timeout": "2 min", "sql": "SELECT count(pg_advisory_xact_lock(hashtext(''pg_workflow.wait''), b)) FROM generate_series(0, 1023) b; SELECT count(*) FROM lock_gate"}]}')});
my $xact_run = as_role('alice', q{SELECT wf_start('lock-engine-xact')});
ok( $node->poll_query_until(
		'postgres', q{
		SELECT count(*) >= 1024 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		 WHERE l.locktype = 'advisory' AND a.backend_type = 'pg_workflow long-step worker'
		   AND a.wait_event_type = 'Lock'}),
	"a step holds transaction locks on the engine's former keys, and waits");
is( $node->safe_psql(
		'postgres', q{SET lock_timeout = '1s'; SELECT wf_emit('e2', '{}')}),
	'0',
	'wf_emit does not wait for them');
$gate->query_safe('COMMIT');
$gate->quit;
is(wf_wait($node, $xact_run), 'completed', 'the locking run completes');

# wf_emit takes the engine's own lock on that key: it must not wait.
is( $node->safe_psql(
		'postgres', q{SET lock_timeout = '10s'; SELECT wf_emit('e1', '{}')}),
	'0',
	'wf_emit is not blocked by a lock a step took');
my ($bstatus) = bob_probe();
is($bstatus, 'completed', "bob's run completes after the lock attacks");

# -------------------------------------------------------------------------
# A run started by an event runs as its subscriber, never as the emitter.
# -------------------------------------------------------------------------
as_role(
	'alice', q{
	SELECT wf_define('steal', '{"steps": [{"name": "s", "sql": "INSERT INTO alice_loot SELECT secret FROM bob_private RETURNING current_user"}], "retry": {"max_attempts": 1}}');
	SELECT wf_on_event('order-placed', 'steal');
});
as_role('bob', q{SELECT wf_emit('order-placed', '{"n": 1}')});
$node->safe_psql('postgres', q{SELECT wf_emit('order-placed', '{"n": 2}')});
my $runs = $node->safe_psql('postgres',
	q{SELECT string_agg(id::text, ',' ORDER BY id) FROM wf.run WHERE workflow = 'steal'});
my @runs = split /,/, $runs;
is(scalar(@runs), 2, 'both emits started a run');
is(wf_wait_all($node, @runs), 'failed,failed',
	"the subscriber's runs fail: alice may not read bob's table");
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(DISTINCT owner::regrole::text, ',') FROM wf.run WHERE workflow = 'steal'}
	),
	'alice',
	'the runs belong to the subscriber');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM alice_loot WHERE what = 'bob''s data'}),
	'0',
	"bob's data was not copied");
like(
	$node->safe_psql(
		'postgres',
		q{SELECT input::text FROM wf.run WHERE workflow = 'steal' ORDER BY id LIMIT 1}),
	qr/"n": 1/,
	"the emitter's payload is the run's input");

# -------------------------------------------------------------------------
# wf_start_trigger resolves no name through the writer's search_path, and
# its runs belong to the table's owner.
# -------------------------------------------------------------------------
as_role(
	'bob', q{
	CREATE TABLE bob_orders (id int, item text);
	SELECT wf_define('bob-order', '{"steps": [{"name": "o", "sql": "SELECT jsonb_build_object(''user'', current_user, ''id'', $1->''input''->''id'')"}]}');
	CREATE TRIGGER start_order AFTER INSERT ON bob_orders
		FOR EACH ROW EXECUTE FUNCTION wf_start_trigger('bob-order');
});
as_role(
	'alice', q{
	CREATE FUNCTION public.to_jsonb(bob_orders) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO alice_loot SELECT 'trigger: ' || secret FROM bob_private;
		RETURN '{"hijacked": true}';
	END $$;
});
as_role('bob', q{INSERT INTO bob_orders VALUES (7, 'book')});
my $order_run = $node->safe_psql('postgres',
	q{SELECT id FROM wf.run WHERE workflow = 'bob-order'});
is(wf_wait($node, $order_run), 'completed', "bob's trigger-started run completes");
like(
	$node->safe_psql('postgres',
		"SELECT output::text FROM wf.steps WHERE run_id = $order_run"),
	qr/"id": 7.*"user": "bob"|"user": "bob".*"id": 7/,
	'the run has the real row as input and runs as bob');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM alice_loot WHERE what LIKE 'trigger:%'}),
	'0',
	"alice's to_jsonb(bob_orders) never ran");

# Bob writes into a table of alice's whose trigger starts alice's workflow:
# the run is alice's, never bob's.
as_role(
	'alice', q{
	CREATE TABLE alice_inbox (msg text);
	GRANT INSERT ON alice_inbox TO bob;
	SELECT wf_define('alice-inbox', '{"steps": [{"name": "s", "sql": "INSERT INTO alice_loot SELECT secret FROM bob_private RETURNING 1"}], "retry": {"max_attempts": 1}}');
	CREATE TRIGGER start_inbox AFTER INSERT ON alice_inbox
		FOR EACH ROW EXECUTE FUNCTION wf_start_trigger('alice-inbox');
});
as_role('bob', q{INSERT INTO alice_inbox VALUES ('hello')});
my $inbox_run = $node->safe_psql('postgres',
	q{SELECT id FROM wf.run WHERE workflow = 'alice-inbox'});
is(wf_wait($node, $inbox_run), 'failed',
	"the trigger-started run of alice's table cannot read bob's table");
is( $node->safe_psql('postgres',
		"SELECT owner::regrole::text FROM wf.run WHERE id = $inbox_run"),
	'alice',
	"the run belongs to the table's owner");

is(is_superuser('alice'), 'f', 'alice never became superuser');
($bstatus) = bob_probe();
is($bstatus, 'completed', "bob's runs still complete at the end");

done_testing();
