
# Copyright (c) pg_workflow authors

# External agents: steps of kind "agent" executed by processes outside the
# database through wf_claim, wf_heartbeat, wf_complete and wf_fail.
#
#  - an agent step's payload is rendered and its task claimed, completed,
#    and the run goes on with the agent's output;
#  - wf_claim with wait, blocked in the server before the run starts, is
#    woken by the start and returns the task;
#  - a lease of 1 second that expires hands the task out again as the
#    step's next attempt; the late holder can neither heartbeat nor
#    complete, a second completion returns false;
#  - capability routing: a task requiring "gpu" goes only to an agent that
#    declares it;
#  - a paused pool hands out nothing until resumed;
#  - wf_fail retryable retries, not retryable fails the run; an {"error"}
#    output is a business error;
#  - wf_cancel of a run cancels its task: a later completion returns false;
#  - a pool's circuit breaker opens after transient failures, holds its
#    steps back without burning attempts, lets a probe out after
#    reset_after, and closes when the probe completes;
#  - fair order: another owner's task is not claimed behind one owner's
#    backlog;
#  - a saga step whose undo is an agent action;
#  - privileges: claiming needs wf_grant_pool; another role cannot claim,
#    complete or heartbeat the agent's task; the agent role reads no task
#    table and no other role's runs; only wf_admin manages pools;
#  - a dropped agent role loses its grants and its lease;
#  - the example agent examples/agents/agent.py completes and fails tasks,
#    heartbeating, and stops cleanly on SIGTERM;
#  - wf.agents: counts, throughput and durations, and state "lost" after
#    pg_workflow.agent_lost_after, when the lost agent's task, leased for
#    an hour, goes back at once;
#  - wf_pool_limit: at most N tasks of a pool in flight, also for claims
#    made at once from several sessions;
#  - NOTIFY wf_pool_<pool> when a pool with nothing to claim gets a task;
#  - load balancing: a task goes to the least loaded waiting agent, and
#    past one that cannot take it.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('agents', workers => 2);

$node->safe_psql(
	'postgres', q{
	CREATE ROLE agent1 LOGIN;
	CREATE ROLE other LOGIN;
	SELECT wf_grant_pool('p', 'agent1');
	SELECT wf_grant_pool('gpu', 'agent1');});

# Runs sql as role; returns (stdout, stderr) with SQLSTATEs in messages.
sub as_role
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET ROLE $role;\n$sql");
	return ($out, $err);
}

# One task claimed by agent1 from pool, waiting for it in the server:
# "task_id|run_id|step|payload|attempt".
sub claim
{
	my ($pool, %o) = @_;
	my $caps = $o{caps} // '{}';
	my $lease = $o{lease} // '5 minutes';
	my $wait = $o{wait} // "$PostgreSQL::Test::Utils::timeout_default s";
	my ($out, $err) = as_role('agent1',
		"SELECT task_id, run_id, step, payload, attempt FROM wf_claim('$pool', lease => '$lease', agent => 'a1', capabilities => '$caps', wait => '$wait')"
	);
	diag($err) if $err =~ /ERROR/;
	return $out;
}

sub as_agent
{
	my ($sql) = @_;
	my ($out, $err) = as_role('agent1', $sql);
	diag($err) if $err =~ /ERROR/;
	return $out;
}

# -------------------------------------------------------------------------
# End to end: payload rendered, task claimed and completed, run goes on.
# -------------------------------------------------------------------------
wf_define(
	$node, 'review',
	{
		steps => [
			{
				name => 'work',
				agent => 'p',
				payload => { doc => '{{$.input.doc}}', n => 2 }
			},
			{
				name => 'after',
				sql => q{SELECT jsonb_build_object('score', ($1->'steps'->'work'->>'score')::int + 1)}
			}
		]
	});
my $run = wf_start($node, 'review', { doc => 'spec.md' });
my ($task, $trun, $tstep, $tpayload, $tattempt) = split /\|/, claim('p');
is("$trun|$tstep|$tpayload|$tattempt", "$run|work|{\"n\": 2, \"doc\": \"spec.md\"}|1",
	'wf_claim hands out the task with its rendered payload');
is($node->safe_psql('postgres', "SELECT status FROM wf.steps WHERE run_id = $run AND step = 'work'"),
	'running', 'the agent step is running while its task is claimed');
is(as_agent("SELECT wf_heartbeat($task, '5 minutes', '{\"done\": 50}')"), 't',
	'the holder extends its lease');
is(as_agent("SELECT wf_complete($task, '{\"score\": 41}')"), 't', 'wf_complete accepts the output');
is(as_agent("SELECT wf_complete($task, '{\"score\": 0}')"), 'f',
	'a second completion returns false');
is(wf_wait($node, $run), 'completed', 'the run completed after the agent step');
is($node->safe_psql('postgres', "SELECT output FROM wf.runs WHERE id = $run"),
	'{"score": 42}', 'the next step saw the agent output, and the second completion changed nothing');

# -------------------------------------------------------------------------
# wf_claim with wait, blocked before the run starts, is woken by its start.
# -------------------------------------------------------------------------
wf_define($node, 'quick', { steps => [ { name => 'w', agent => 'p' } ] });
my $waiter = $node->background_psql('postgres');
$waiter->query_safe('SET ROLE agent1');
$waiter->query_until(qr/claiming/,
	"\\echo claiming\nSELECT 'got', step, attempt FROM wf_claim('p', agent => 'waiter', wait => '5 minutes');\n"
);
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%wf_claim%'"
) or die 'the claim never waited';
$run = wf_start($node, 'quick');
pump_until($waiter->{run}, $waiter->{timeout}, \$waiter->{stdout}, qr/got\|w\|1/);
like($waiter->{stdout}, qr/got\|w\|1/, 'the waiting wf_claim returned the task of the run just started');
$waiter->quit;
$task = $node->safe_psql('postgres', "SELECT id FROM wf.task WHERE run_id = $run");
is(as_agent("SELECT wf_complete($task)"), 't', 'its agent completes it');
is(wf_wait($node, $run), 'completed', 'and the run completes');

# -------------------------------------------------------------------------
# Lease expiry: the task is handed out again as the next attempt.
# -------------------------------------------------------------------------
wf_define(
	$node, 'leased',
	{
		steps => [
			{
				name => 'w',
				agent => 'p',
				retry => { max_attempts => 5, backoff => 'fixed', initial_interval => '10ms' }
			}
		]
	});
$run = wf_start($node, 'leased');
my ($t1, undef, undef, undef, $a1) = split /\|/, claim('p', lease => '1 second');
is($a1, 1, 'first claim is attempt 1, with a lease of 1 second');
# Blocks until the expired lease is noticed and the next attempt's task made.
my ($t2, $r2, undef, undef, $a2) = split /\|/, claim('p');
is("$r2|$a2", "$run|2", 'after the lease expired, the task was handed out again as attempt 2');
isnt($t2, $t1, 'as a new task');
is(as_agent("SELECT wf_heartbeat($t1)"), 'f', 'the expired holder cannot extend its lease');
is(as_agent("SELECT wf_complete($t1, '{\"late\": true}')"), 'f',
	'a late completion after re-delivery returns false');
is(as_agent("SELECT wf_complete($t2, '{\"on_time\": true}')"), 't', 'the new holder completes');
is(as_agent("SELECT wf_fail($t2, 'too late')"), 'f', 'failing a completed task returns false');
is(wf_wait($node, $run), 'completed', 'the run completed');
is( $node->safe_psql(
		'postgres', "SELECT output, attempt FROM wf.steps WHERE run_id = $run AND step = 'w'"),
	'{"on_time": true}|2',
	'with the output of the second holder, in attempt 2');
like(
	$node->safe_psql(
		'postgres', "SELECT detail->>'message' FROM wf.history WHERE run_id = $run AND status = 'retrying' AND step = 'w' ORDER BY id LIMIT 1"
	),
	qr/lease of task $t1 by agent "a1" expired/,
	'the history says why attempt 1 ended');

# -------------------------------------------------------------------------
# Capability routing.
# -------------------------------------------------------------------------
wf_define($node, 'needs_gpu',
	{ steps => [ { name => 'train', agent => 'gpu', requires => [ 'gpu', 'cuda' ] } ] });
$run = wf_start($node, 'needs_gpu');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM wf.task WHERE run_id = $run AND state = 'ready'")
  or die 'no task';
is(claim('gpu', caps => '{cpu}', wait => '0'), '', 'an agent without the capabilities gets nothing');
is(claim('gpu', caps => '{gpu}', wait => '0'), '', 'nor one with only some of them');
($task) = split /\|/, claim('gpu', caps => '{cpu,cuda,gpu}', wait => '0');
ok($task, 'an agent with all of them gets the task');
is(as_agent("SELECT wf_complete($task)"), 't', 'and completes it');
is(wf_wait($node, $run), 'completed', 'the routed run completed');
like(
	$node->safe_psql('postgres',
		"SELECT * FROM wf_validate('{\"steps\": [{\"name\": \"x\", \"agent\": \"p\", \"requires\": \"gpu\"}]}')"),
	qr/"requires" must be an array of non-empty strings/,
	'requires must be an array of strings');

# -------------------------------------------------------------------------
# Pool pause.
# -------------------------------------------------------------------------
my ($out, $err) = as_role('agent1', "SELECT wf_pool_pause('p')");
like($err, qr/ERROR:  42501: permission denied for pool "p"/, 'an agent cannot pause its pool');
is($node->safe_psql('postgres', "SELECT wf_pool_pause('p')"), 't', 'wf_admin pauses the pool');
is($node->safe_psql('postgres', "SELECT wf_pool_pause('p')"), 'f', 'pausing twice changes nothing');
$run = wf_start($node, 'quick');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM wf.task WHERE run_id = $run AND state = 'ready'")
  or die 'no task';
is(claim('p', wait => '0'), '', 'a paused pool hands out nothing');
is($node->safe_psql('postgres', "SELECT wf_pool_resume('p')"), 't', 'the pool is resumed');
($task) = split /\|/, claim('p', wait => '0');
ok($task, 'the resumed pool hands the task out');
is(as_agent("SELECT wf_complete($task)"), 't', 'completed');
is(wf_wait($node, $run), 'completed', 'the run completed after the pause');

# -------------------------------------------------------------------------
# wf_fail, business errors, cancel.
# -------------------------------------------------------------------------
$run = wf_start($node, 'leased');
($task) = split /\|/, claim('p');
is(as_agent("SELECT wf_fail($task, 'flaky backend')"), 't', 'a retryable failure is recorded');
my ($task2, undef, undef, undef, $att) = split /\|/, claim('p');
is($att, 2, 'and the step is tried again as attempt 2');
is(as_agent("SELECT wf_fail($task2, 'bad document', retryable => false)"), 't',
	'a failure that is not retryable is recorded');
is(wf_wait($node, $run), 'failed', 'and fails the run at once');
is( $node->safe_psql(
		'postgres', "SELECT error->>'message', error->>'class' FROM wf.steps WHERE run_id = $run"),
	'bad document|business',
	'as a business error');

$run = wf_start($node, 'leased');
($task) = split /\|/, claim('p');
is(as_agent("SELECT wf_complete($task, '{\"error\": \"rejected\"}')"), 't',
	'an {"error"} output is accepted');
is(wf_wait($node, $run), 'failed', 'and fails the run as a business error');

$run = wf_start($node, 'quick');
($task) = split /\|/, claim('p');
is($node->safe_psql('postgres', "SELECT wf_cancel($run)"), 't', 'the run is cancelled');
is(as_agent("SELECT wf_complete($task)"), 'f', 'completing its task afterwards returns false');
is($node->safe_psql('postgres', "SELECT state FROM wf.task WHERE id = $task"),
	'cancelled', 'the task was cancelled with its run');

# -------------------------------------------------------------------------
# The pool's circuit breaker: opens after 2 transient failures in a row,
# holds the pool's steps back (no task) until reset_after, then lets one
# probe task out whose completion closes it and releases the others.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT wf_grant_pool('brk', 'agent1')");
wf_define(
	$node, 'guarded',
	{
		steps => [
			{
				name => 'w',
				agent => 'brk',
				retry => { max_attempts => 1 },
				circuit_breaker => { failures => 2, reset_after => '2 seconds' }
			}
		]
	});
my @failed;
# The first failure an agent's retryable wf_fail, the second a lease that
# expires: both are failures of the pool.
my $r = wf_start($node, 'guarded');
($task) = split /\|/, claim('brk');
is(as_agent("SELECT wf_fail($task, 'pool backend down')"), 't', 'transient failure 1 recorded');
is(wf_wait($node, $r), 'failed', 'run 1 failed (one attempt)');
push @failed, $r;
$r = wf_start($node, 'guarded');
($task) = split /\|/, claim('brk', lease => '1 second');
is(wf_wait($node, $r), 'failed', 'run 2 failed when its task\'s lease expired');
push @failed, $r;
is( $node->safe_psql(
		'postgres', "SELECT host IS NULL, state, failures FROM wf.circuit_breakers WHERE pool = 'brk'"),
	't|open|2',
	'the second failure in a row opened the pool\'s breaker (a pool, not a host)');
is( $node->safe_psql(
		'postgres', "SELECT detail->>'breaker_opened' FROM wf.history WHERE run_id = $failed[1] AND status = 'failed' AND step = 'w'"
	),
	'true',
	'the failure that opened it says so');
my $retry_at = $node->safe_psql('postgres',
	"SELECT retry_at FROM wf.circuit_breakers WHERE pool = 'brk'");
my @held = (wf_start($node, 'guarded'), wf_start($node, 'guarded'));
$node->poll_query_until('postgres',
	"SELECT bool_and(s.wait_key = 'breaker:agent:brk' OR EXISTS (SELECT 1 FROM wf.task t WHERE t.run_id = s.run_id)) FROM wf.step s WHERE s.run_id IN ($held[0], $held[1])"
) or die 'the steps were never deferred';
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM wf.task WHERE run_id IN ($held[0], $held[1]) AND created_at < '$retry_at'"),
	'0',
	'no task of the pool is made while its breaker is open');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM wf.steps WHERE run_id IN ($held[0], $held[1]) AND attempt > 1"),
	'0',
	'and the steps held back burnt no attempt');
my ($probe, $prun) = split /\|/, claim('brk');
ok($probe, 'after reset_after a probe task goes out');
is( $node->safe_psql(
		'postgres', "SELECT b.state, t.created_at >= '$retry_at' FROM wf.circuit_breakers b, wf.task t WHERE b.pool = 'brk' AND t.id = $probe"
	),
	'half_open|t',
	'made once reset_after had passed, with the breaker half open');
is(as_agent("SELECT wf_complete($probe)"), 't', 'the probe is completed');
is($node->safe_psql('postgres', "SELECT state, failures FROM wf.circuit_breakers WHERE pool = 'brk'"),
	'closed|0', 'its completion closed the breaker');
($task) = split /\|/, claim('brk');
ok($task && $task ne $probe, 'the other step held back gets its task');
is(as_agent("SELECT wf_fail($task, 'wrong input', retryable => false)"), 't',
	'a business failure is an answer of the pool');
is(wf_wait_all($node, $prun == $held[0] ? @held : reverse @held),
	'completed,failed', 'both runs held back ran: the probe\'s completed, the other\'s failed');
is($node->safe_psql('postgres', "SELECT state, failures FROM wf.circuit_breakers WHERE pool = 'brk'"),
	'closed|0', 'and leaves the breaker closed');
like(
	$node->safe_psql(
		'postgres',
		"SELECT string_agg(v, ';') FROM wf_validate('{\"steps\": [{\"name\": \"x\", \"sql\": \"SELECT 1\", \"circuit_breaker\": {\"failures\": 1, \"reset_after\": \"1s\"}}]}') v"
	),
	qr/"circuit_breaker" is only allowed on http and agent steps/,
	'a circuit breaker on a sql step is refused');

# -------------------------------------------------------------------------
# Fair order across owners: a task of another owner's run, started after
# one owner's backlog of 500 tasks was made, is not claimed behind all of
# them (each task takes its step's place in its owner's fair share).
# -------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT wf_grant_pool('fair', 'agent1')");
wf_define(
	$node, 'fan_agents',
	{
		steps => [
			{
				name => 'each',
				map => { over => '$.input.items', step => { name => 'one', agent => 'fair' } }
			}
		]
	});
wf_define($node, 'one_fair', { steps => [ { name => 'w', agent => 'fair' } ] });
my $backlog = $node->safe_psql('postgres',
	"SELECT wf_start('fan_agents', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 500) g)))"
);
$node->poll_query_until('postgres',
	"SELECT count(*) = 500 FROM wf.task WHERE run_id = $backlog AND state = 'ready'")
  or die 'the backlog was not made';
my $late = $node->safe_psql('postgres', "SET ROLE other; SELECT wf_start('one_fair')");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM wf.task WHERE run_id = $late AND state = 'ready'")
  or die 'no task for the late run';
my @order = split /\n/,
  as_agent("SELECT run_id FROM wf_claim('fair', 1000, agent => 'fair-1', wait => '0')");
is(scalar(@order), 501, 'one claim gets the backlog and the late task');
my ($pos) = grep { $order[$_] == $late } 0 .. $#order;
cmp_ok($pos, '<', 500, "the other owner's task is not claimed behind the whole backlog (position $pos)");
$node->safe_psql('postgres', "SELECT wf_cancel($backlog), wf_cancel($late)");

# -------------------------------------------------------------------------
# A saga whose undo is an agent action.
# -------------------------------------------------------------------------
wf_define(
	$node, 'booking',
	{
		steps => [
			{
				name => 'book',
				agent => 'p',
				payload => { do => 'book' },
				compensate => { agent => 'p', payload => { do => 'cancel {{$.steps.book.ref}}' } }
			},
			{ name => 'pay', sql => 'SELECT 1 / 0', on_error => 'compensate' }
		]
	});
$run = wf_start($node, 'booking');
($task) = split /\|/, claim('p');
is(as_agent("SELECT wf_complete($task, '{\"ref\": \"R7\"}')"), 't', 'booked by the agent');
my (undef, undef, $cstep, $cpayload) = split /\|/, claim('p');
is("$cstep|$cpayload", 'compensate:book|{"do": "cancel R7"}',
	'the failed payment hands the undo to the agent, with the booking\'s output');
$task = $node->safe_psql('postgres',
	"SELECT id FROM wf.task WHERE run_id = $run AND step = 'compensate:book'");
is(as_agent("SELECT wf_complete($task)"), 't', 'the agent undoes it');
is(wf_wait($node, $run), 'failed', 'the saga failed');
is($node->safe_psql('postgres', "SELECT status FROM wf.steps WHERE run_id = $run AND step = 'book'"),
	'compensated', 'with the booking compensated');

# -------------------------------------------------------------------------
# Privileges.
# -------------------------------------------------------------------------
($out, $err) = as_role('other', "SELECT * FROM wf_claim('p')");
like($err, qr/ERROR:  42501: permission denied for pool "p"/,
	'a role without wf_grant_pool cannot claim');
$run = wf_start($node, 'quick', { secret_input => 'not for agents' });
($task) = split /\|/, claim('p');
($out, $err) = as_role('other', "SELECT wf_complete($task, '{\"forged\": true}')");
like($err, qr/ERROR:  42501: permission denied for task $task/,
	'another role cannot complete the agent\'s task');
($out, $err) = as_role('other', "SELECT wf_heartbeat($task)");
like($err, qr/ERROR:  42501: permission denied for task $task/, 'nor extend its lease');
($out, $err) = as_role('other', "SELECT wf_fail($task, 'x')");
like($err, qr/ERROR:  42501: permission denied for task $task/, 'nor fail it');
($out, $err) = as_role('agent1', 'SELECT * FROM wf.task');
like($err, qr/ERROR:  42501: permission denied for table task/,
	'the agent role cannot read the tasks table');
is(as_agent("SELECT count(*) FROM wf.runs WHERE id = $run"), '0',
	'nor the run context of the runs it works for');
($out, $err) = as_role('agent1', "SELECT wf_grant_pool('p', 'other')");
like($err, qr/ERROR:  42501: permission denied for pool "p"/, 'an agent cannot grant its pool');
is(as_agent("SELECT wf_complete($task)"), 't', 'the holder completes');
is(wf_wait($node, $run), 'completed', 'the run completed');
$node->safe_psql('postgres', "SELECT wf_revoke_pool('p', 'agent1')");
($out, $err) = as_role('agent1', "SELECT * FROM wf_claim('p')");
like($err, qr/ERROR:  42501: permission denied for pool "p"/, 'after wf_revoke_pool the agent cannot claim');
$node->safe_psql('postgres', "SELECT wf_grant_pool('p', 'agent1')");

# A dropped agent role: its grants go, its lease has no holder.
$node->safe_psql('postgres', "CREATE ROLE agent2 LOGIN; SELECT wf_grant_pool('p', 'agent2')");
$run = wf_start($node, 'quick');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM wf.task WHERE run_id = $run AND state = 'ready'")
  or die 'no task';
($out, $err) = as_role('agent2', "SELECT task_id FROM wf_claim('p', agent => 'a2')");
$task = $out;
ok($task, 'agent2 claimed a task');
$node->safe_psql('postgres', 'DROP ROLE agent2');
# An executor notices dropped roles at its next transaction.
$node->safe_psql('postgres', 'SELECT wf._wake()');
ok( $node->poll_query_until(
		'postgres', qq{SELECT count(*) = 0 FROM wf.pool_grant WHERE grantee::oid NOT IN (SELECT oid FROM pg_roles)
		UNION ALL SELECT count(*) = 0 FROM wf.agent WHERE role::oid NOT IN (SELECT oid FROM pg_roles)
		UNION ALL SELECT count(*) = 0 FROM wf.task WHERE claimed_by::oid NOT IN (SELECT oid FROM pg_roles) AND claimed_by::oid <> 0},
		"t\nt\nt"),
	'the dropped agent role\'s grant, registry row and lease holder are gone');
is($node->safe_psql('postgres', "SELECT wf_complete($task)"), 't', 'wf_admin completes its task');
is(wf_wait($node, $run), 'completed', 'and the run completes');

# -------------------------------------------------------------------------
# The example agent (examples/agents/agent.py, python3-psycopg).
# -------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT wf_grant_pool('py', 'agent1')");
wf_define(
	$node, 'pyjob',
	{
		steps => [
			{
				name => 'ocr',
				agent => 'py',
				requires => ['ocr'],
				payload => { page => '{{$.input.page}}', work_s => 0.5 }
			}
		]
	});
wf_define($node, 'pyfail',
	{ steps => [ { name => 'ocr', agent => 'py', payload => { fail => 'unreadable' } } ] });
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my ($ain, $aout, $aerr) = ('', '', '');
my $agent_timer = IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default);
my $agent = IPC::Run::start(
	[
		$python, "$FindBin::RealBin/../../examples/agents/agent.py",
		'--dsn', $node->connstr('postgres') . ' user=agent1',
		'--pool', 'py', '--agent', 'py-1', '--capabilities', 'ocr,pdf',
		'--lease', '10 seconds', '--wait', '2 seconds'
	],
	\$ain, \$aout, \$aerr, $agent_timer);
pump_until($agent, $agent_timer, \$aout, qr/ready/);
my @py = map { wf_start($node, 'pyjob', { page => $_ }) } 1 .. 3;
push @py, wf_start($node, 'pyfail');
is(wf_wait_all($node, @py), 'completed,completed,completed,failed',
	'the example agent completed three tasks and failed one');
is( $node->safe_psql('postgres', "SELECT output FROM wf.runs WHERE id = $py[1]"),
	'{"echo": {"page": 2, "work_s": 0.5}, "agent": "py-1"}',
	'with the output it computed from the payload');
is($node->safe_psql('postgres', "SELECT error->>'message' FROM wf.steps WHERE run_id = $py[3]"),
	'unreadable', 'and its reason for the failure');
ok( $node->safe_psql(
		'postgres', "SELECT count(*) FROM wf.task WHERE pool = 'py' AND progress IS NOT NULL") >= 3,
	'it heartbeated while working');
$agent->signal('TERM');
ok($agent->finish, 'the example agent stops cleanly on SIGTERM, with exit status 0');
like($aout, qr/stopped after 4 tasks/, 'after the tasks it had');

# -------------------------------------------------------------------------
# wf.agents.
# -------------------------------------------------------------------------
claim('gpu', caps => '{cpu,cuda,gpu}', wait => '0');
is( as_agent(
		"SELECT pool, agent, capabilities, state, in_flight, completed > 0, failed > 0 FROM wf.agents WHERE agent = 'a1' ORDER BY pool"
	),
	"brk|a1|{}|idle|0|t|t\ngpu|a1|{cpu,cuda,gpu}|idle|0|t|f\np|a1|{}|idle|0|t|t",
	'wf.agents shows the agent in each pool, idle, with its counts');
is((as_role('other', 'SELECT count(*) FROM wf.agents'))[0], '0', 'another role sees no agents');
is( as_agent(
		"SELECT completed_last_hour > 0, completed_last_minute > 0, p50_duration IS NOT NULL, p95_duration >= p50_duration FROM wf.agents WHERE agent = 'a1' AND pool = 'p'"
	),
	't|t|t|t',
	'and its tasks completed in the last minute and hour, with their p50 and p95 durations');

# -------------------------------------------------------------------------
# A pool's limit: at most N tasks in flight across all its agents.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT wf_grant_pool('lim', 'agent1')");
wf_define($node, 'limited', { steps => [ { name => 'w', agent => 'lim' } ] });
my ($lout, $lerr) = as_role('agent1', "SELECT wf_pool_limit('lim', 2)");
like($lerr, qr/42501/, 'only wf_admin limits a pool');
(undef, $lout, $lerr) = $node->psql('postgres', "\\set VERBOSITY verbose\nSELECT wf_pool_limit('lim', 0)");
like($lerr, qr/22023.*max_in_flight must be at least 1/, 'a limit below 1 is refused');
$node->safe_psql('postgres', "SELECT wf_pool_limit('lim', 2)");
my @lim = wf_start_many($node, 'limited', 5);
$node->poll_query_until('postgres', "SELECT count(*) = 5 FROM wf.task WHERE pool = 'lim' AND state = 'ready'")
  or die 'the limited tasks never became ready';
sub claim_n
{
	my ($n, $agent) = @_;
	return as_agent("SELECT count(*) FROM wf_claim('lim', $n, agent => '$agent')");
}
is(claim_n(10, 'l1'), '2', 'a claim of 10 gets the 2 the limit allows');
is(claim_n(10, 'l2'), '0', 'another agent gets none while 2 are in flight');
is($node->safe_psql('postgres', "SELECT wf_complete(id) FROM wf.task WHERE pool = 'lim' AND state = 'claimed' ORDER BY id LIMIT 1"),
	't', 'one of them completes');
is(claim_n(10, 'l2'), '1', 'which makes room for one more');

# Claims at once from 4 sessions never get more than the limit together.
$node->safe_psql('postgres', "SELECT wf_pool_limit('lim', 3)");
my (@h, @cout);
for my $i (0 .. 3)
{
	$cout[$i] = '';
	push @h,
	  IPC::Run::start(
		[
			'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
			"SET ROLE agent1; SELECT count(*) FROM wf_claim('lim', 5, agent => 'b$i')"
		],
		'>', \$cout[$i], '2>', \my $cerr);
}
$_->finish for @h;
my $got = 0;
$got += $_ for @cout;
is($got, 1, 'four claims at once get the one task the raised limit (3) makes room for');
is($node->safe_psql('postgres', "SELECT count(*) FROM wf.task WHERE pool = 'lim' AND state = 'claimed'"),
	'3', 'three in flight');
# A claim waiting on the full pool is woken when a task leaves flight.
my ($lw_out, $lw_err) = ('', '');
my $lw = IPC::Run::start(
	[
		'psql', '-XAtq', '-d', $node->connstr('postgres') . ' user=agent1', '-c',
		"SELECT count(*) FROM wf_claim('lim', 5, agent => 'lw', wait => '300 s')"
	],
	'>', \$lw_out, '2>', \$lw_err);
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%agent => ''lw''%'")
  or die 'the claim on the full pool is not waiting';
$node->safe_psql('postgres',
	"SELECT wf_complete(id) FROM wf.task WHERE pool = 'lim' AND state = 'claimed' ORDER BY id LIMIT 1");
$lw->finish;
chomp $lw_out;
is($lw_out, '1', 'a claim waiting on the full pool gets the room a completed task leaves');
my $lim_more = wf_start($node, 'limited');
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM wf.task WHERE run_id = $lim_more AND state = 'ready'")
  or die 'no task for the last limited run';
is(claim_n(10, 'l3'), '0', 'with 3 in flight again, a new task waits');
$node->safe_psql('postgres', "SELECT wf_pool_limit('lim', NULL)");
is(claim_n(10, 'l3'), '1', 'no limit: the last task is handed out');

# -------------------------------------------------------------------------
# NOTIFY wf_pool_<pool> when a pool with nothing to claim gets a task.
# -------------------------------------------------------------------------
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN wf_pool_n');
wf_define($node, 'notified', { steps => [ { name => 'w', agent => 'n' } ] });
my $n1 = wf_start($node, 'notified');
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM wf.task WHERE pool = 'n' AND state = 'ready'")
  or die 'no task in pool n';
like($listener->query_safe('SELECT 1'),
	qr/Asynchronous notification "wf_pool_n" with payload "n" received/,
	'a listener is told when the idle pool gets a task');
my $n2 = wf_start($node, 'notified');
$node->poll_query_until('postgres', "SELECT count(*) = 2 FROM wf.task WHERE pool = 'n' AND state = 'ready'")
  or die 'no second task in pool n';
unlike($listener->query_safe('SELECT 1'), qr/Asynchronous notification/,
	'but not again while a task of it is still to be claimed');
$listener->quit;
my (undef, undef, $perr) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT wf_define('long-pool', '{\"steps\": [{\"name\": \"w\", \"agent\": \"" . ('x' x 56) . "\"}]}')");
like($perr, qr/54000.*longer than 55 bytes/, 'a pool name too long for its channel is refused');

# -------------------------------------------------------------------------
# Load balancing: a task goes to the least loaded waiting agent (tasks in
# flight over the capacity it declared); one that cannot take it passes
# the wake-up on.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT wf_grant_pool('lb', 'agent1')");
wf_define($node, 'lb', { steps => [ { name => 'w', agent => 'lb', requires => [] } ] });
wf_define($node, 'lb-gpu', { steps => [ { name => 'w', agent => 'lb', requires => ['gpu'] } ] });
my @lb_held = wf_start_many($node, 'lb', 2);
$node->poll_query_until('postgres', "SELECT count(*) = 2 FROM wf.task WHERE pool = 'lb' AND state = 'ready'")
  or die 'no tasks in pool lb';
is(as_agent("SELECT count(*) FROM wf_claim('lb', 2, agent => 'big', capacity => 4)"), '2',
	'agent big (capacity 4) holds two tasks');
($out, $err) = as_role('agent1', "SELECT count(*) FROM wf_claim('lb', 1, agent => 'x', capacity => 0)");
like($err, qr/22023.*capacity must be at least 1/, 'a capacity below 1 is refused');

# Starts a psql waiting in wf_claim for agent name with capacity and caps.
my %waiter;
sub start_waiter
{
	my ($name, $capacity, $caps) = @_;
	my $o = '';
	$waiter{$name} = {
		out => \$o,
		h => IPC::Run::start(
			[
				'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
				"SET ROLE agent1; SELECT run_id FROM wf_claim('lb', 1, agent => '$name', capacity => $capacity, capabilities => '$caps', wait => '300 s')"
			],
			'>', \$o, '2>', \my $e)
	};
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%agent => ''$name''%'")
	  or die "agent $name is not waiting";
}

sub waiter_done
{
	my ($name) = @_;
	$waiter{$name}{h}->finish;
	my $o = ${ $waiter{$name}{out} };
	chomp $o;
	return $o;
}

start_waiter('big', 4, '{}');      # load 2/4
start_waiter('small', 2, '{}');    # load 0/2
my $lb1 = wf_start($node, 'lb');
is(waiter_done('small'), $lb1, 'a new task goes to the least loaded waiting agent (0 of 2 rather than 2 of 4)');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%agent => ''big''%'"),
	'1', 'the more loaded one still waits');
my $lb2 = wf_start($node, 'lb');
is(waiter_done('big'), $lb2, 'the next task goes to the one waiting');

# gpu is loaded 1 of 2, nogpu 0 of 4: nogpu is woken first for a task that
# requires gpu, cannot take it, and passes the wake-up on.
my $lb3 = wf_start($node, 'lb');
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM wf.task WHERE run_id = $lb3 AND state = 'ready'")
  or die 'no task for run lb3';
is(as_agent("SELECT run_id FROM wf_claim('lb', 1, agent => 'gpu', capacity => 2, capabilities => '{gpu}')"),
	$lb3, 'agent gpu (capacity 2) holds one task');
start_waiter('nogpu', 4, '{}');
start_waiter('gpu', 2, '{gpu}');
my $lb4 = wf_start($node, 'lb-gpu');
is(waiter_done('gpu'), $lb4,
	'a task requiring gpu reaches the agent that has it, though the one woken first could not take it');
$waiter{nogpu}{h}->kill_kill;
$node->safe_psql('postgres',
	"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%agent => ''nogpu''%' AND pid <> pg_backend_pid()");

# A claim waiting alone in its statement holds back no cleanup.
my ($xo, $xe) = ('', '');
my $xw = IPC::Run::start(
	[
		'psql', '-XAtq', '-d', $node->connstr('postgres') . ' user=agent1', '-c',
		"SELECT count(*) FROM wf_claim('lb', 1, agent => 'xmin', wait => '300 s')"
	],
	'>', \$xo, '2>', \$xe);
ok( $node->poll_query_until(
		'postgres', q{
	SELECT backend_xmin IS NULL FROM pg_stat_activity
	 WHERE wait_event = 'Extension' AND query LIKE '%agent => ''xmin''%'}),
	'a lone SELECT waiting in wf_claim holds no xmin while it sleeps');
$node->safe_psql('postgres',
	"SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%agent => ''xmin''%' AND pid <> pg_backend_pid()");
$xw->finish;

# -------------------------------------------------------------------------
# A lost agent: wf.agents says so, and its tasks go back at once.
# -------------------------------------------------------------------------
wf_define($node, 'held', { steps => [ { name => 'w', agent => 'gpu', retry => { max_attempts => 3, initial_interval => '10ms' } } ] });
my $held = wf_start($node, 'held');
my ($held_task) = split /\|/, claim('gpu', lease => '1 hour');
$node->append_conf('postgresql.conf', "pg_workflow.agent_lost_after = '1s'");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT state = 'lost' FROM wf.agents WHERE agent = 'a1' AND pool = 'gpu'")
  or die 'the agent never became lost';
pass('an agent silent for longer than pg_workflow.agent_lost_after is lost');
ok( $node->poll_query_until(
		'postgres', "SELECT state = 'expired' FROM wf.task WHERE id = $held_task"),
	'its task, leased for an hour, goes back at once');
like( $node->safe_psql('postgres',
		"SELECT string_agg(detail::text, ' ') FROM wf.history WHERE run_id = $held AND step = 'w'"),
	qr/agent \\"a1\\" holding task $held_task was lost/,
	'with the reason in the history');
is(as_agent("SELECT wf_complete($held_task)"), 'f', 'the lost agent can no longer complete it');
my $again = claim('gpu');
like($again, qr/^\d+\|$held\|w\|\|2$/, 'the next attempt is handed out to another claim');

$node->stop;
done_testing();
