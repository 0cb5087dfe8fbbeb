# Copyright (c) pg_workflow authors

# External agents that die, a server that dies under them, and many agents
# at once, with the example agents of both languages
# (examples/agents/agent.py, python3-psycopg; examples/agents/agent.js,
# Node.js with npm's pg):
#
#  - the Node agent completes and fails tasks, heartbeating, and stops
#    cleanly on SIGTERM;
#  - a lease of 1 second taken just after a batch, on an executor with
#    nothing else to wake it, expires and its task is handed out again;
#  - kill -9 of an agent mid-task: its task is handed out again as the
#    step's next attempt and completed by another agent; nothing is lost;
#  - an immediate shutdown of the server with tasks claimed: after the
#    restart the holder of a live lease completes its task, an expired
#    lease hands its task out again;
#  - 8 agents (4 in each language) and 8,000 tasks: every task is completed
#    exactly once, and the test counts every completion the agents made.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $examples = "$FindBin::RealBin/../../examples/agents";
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my $nodejs = -x '/usr/bin/node' ? '/usr/bin/node' : 'node';
-d "$examples/node_modules/pg"
  or BAIL_OUT("examples/agents/node_modules/pg is missing: run npm ci in examples/agents");

my $node = wf_node('agents_crash', workers => 2,
	conf => "pg_workflow.agent_lost_after = 600\n");
$node->safe_psql('postgres', q{
	CREATE ROLE agent1 LOGIN;
	SELECT wf_grant_pool('p', 'agent1');});

# Starts an example agent (lang: py or js) as agent1, of pool p unless
# the options say --pool.
sub start_agent
{
	my ($lang, $name, @opts) = @_;
	my ($in, $out, $err) = ('', '', '');
	my @cmd;
	if ($lang eq 'py')
	{
		@cmd = ($python, "$examples/agent.py",
			'--dsn', $node->connstr('postgres') . ' user=agent1');
	}
	else
	{
		my $host = $node->host;
		my $port = $node->port;
		@cmd = ($nodejs, "$examples/agent.js",
			'--dsn', "postgresql://agent1@/postgres?host=$host&port=$port");
	}
	push @cmd, '--pool', 'p', '--agent', $name, @opts;	# a later --pool wins
	my $h = IPC::Run::start(\@cmd, \$in, \$out, \$err);
	my $agent = [ $name, $h, \$out, \$err ];	# name, handle, stdout, stderr
	my $timer = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
	$timer->start;
	$h->pump until $out =~ /ready/ || $timer->is_expired || !$h->pumpable;
	die "agent $name did not start: $err" unless $out =~ /ready/;
	return $agent;
}

# Stops an agent with SIGTERM; true when it exited with status 0.
sub stop_agent
{
	my ($agent) = @_;
	$agent->[1]->signal('TERM');
	my $ok = eval { $agent->[1]->finish };
	diag("agent $agent->[0]: ${$agent->[3]}") unless $ok;
	return $ok;
}

# -------------------------------------------------------------------------
# The Node example agent.
# -------------------------------------------------------------------------
wf_define($node, 'job', { steps => [
	{ name => 'ocr', agent => 'p', payload => { page => '{{$.input.page}}', work_s => 0.5 } } ] });
wf_define($node, 'bad', { steps => [
	{ name => 'ocr', agent => 'p', payload => { fail => 'unreadable' } } ] });
my $js = start_agent('js', 'js-1', '--lease', '10 seconds', '--wait', '2 seconds');
my @runs = map { wf_start($node, 'job', { page => $_ }) } 1 .. 3;
push @runs, wf_start($node, 'bad');
is(wf_wait_all($node, @runs), 'completed,completed,completed,failed',
	'the Node agent completed three tasks and failed one');
is($node->safe_psql('postgres', "SELECT output FROM wf.runs WHERE id = $runs[1]"),
	'{"echo": {"page": 2, "work_s": 0.5}, "agent": "js-1"}',
	'with the output it computed from the payload');
is($node->safe_psql('postgres', "SELECT error->>'message' FROM wf.steps WHERE run_id = $runs[3]"),
	'unreadable', 'and its reason for the failure');
is( $node->safe_psql('postgres',
		'SELECT count(*) FROM wf.task WHERE run_id IN (' . join(',', @runs[0 .. 2]) . ') AND progress IS NOT NULL'),
	'3', 'it heartbeated while working');
ok(stop_agent($js), 'the Node agent stops cleanly on SIGTERM, with exit status 0');
like(${ $js->[2] }, qr/stopped after 4 tasks/, 'after the tasks it had');

# -------------------------------------------------------------------------
# A lease taken just after a batch, whose housekeeping the executor then
# skips for up to 100 ms: it still learns when the lease expires, with
# nothing else happening.  One executor (another would do its own
# housekeeping when woken) and no retention (whose removals would wake it
# every few seconds); start and claim in one session, a few ms apart.
# -------------------------------------------------------------------------
my $lone = wf_node('agents_lone', workers => 1,
	conf => "pg_workflow.retention = 0\npg_workflow.event_retention = 0\n");
$lone->safe_psql('postgres', q{
	CREATE ROLE agent1 LOGIN;
	SELECT wf_grant_pool('p', 'agent1');});
wf_define($lone, 'brief', { steps => [ { name => 'b', agent => 'p',
	retry => { max_attempts => 3, backoff => 'fixed', initial_interval => '10ms' } } ] });
my ($brief_run, $brief_task) = split /\n/, $lone->safe_psql('postgres', qq{
	SELECT wf_start('brief');
	SET ROLE agent1;
	SELECT task_id FROM wf_claim('p', lease => '1 second', agent => 'brief',
		wait => '$PostgreSQL::Test::Utils::timeout_default s');});
ok($brief_task, 'a task claimed at once, under a lease of 1 second');
my ($again_task, $again) = split /\|/, $lone->safe_psql('postgres', qq{
	SET ROLE agent1;
	SELECT task_id || '|' || run_id || ':' || attempt FROM wf_claim('p', lease => '1 minute',
		agent => 'brief', wait => '$PostgreSQL::Test::Utils::timeout_default s')});
is($again, "$brief_run:2", 'its lease expires and it is handed out again');
is($lone->safe_psql('postgres', "SET ROLE agent1; SELECT wf_complete($brief_task)"), 'f',
	'not to the holder of the lapsed lease');
is($lone->safe_psql('postgres', "SET ROLE agent1; SELECT wf_complete($again_task)"), 't',
	'to the new one');
is(wf_wait($lone, $brief_run), 'completed', 'and the run completes');
$lone->stop;

# -------------------------------------------------------------------------
# kill -9 of an agent mid-task.
# -------------------------------------------------------------------------
wf_define($node, 'slow', { steps => [
	{ name => 'w', agent => 'p', payload => { work_s => '{{$.input.s}}' },
	  retry => { max_attempts => 3, backoff => 'fixed', initial_interval => '10ms' } } ] });
my $victim = start_agent('js', 'victim', '--lease', '2 seconds', '--wait', '1 second');
my $slow = wf_start($node, 'slow', { s => 3600 });
$node->poll_query_until('postgres', qq{
	SELECT progress IS NOT NULL FROM wf.task WHERE run_id = $slow AND state = 'claimed'})
  or die 'the victim never worked on its task';
$victim->[1]->signal('KILL');
eval { $victim->[1]->finish };
my ($heir_task, $heir_attempt) = split /\|/, $node->safe_psql('postgres', qq{
	SET ROLE agent1;
	SELECT task_id || '|' || attempt FROM wf_claim('p', lease => '1 minute', agent => 'heir',
		wait => '$PostgreSQL::Test::Utils::timeout_default s')});
is($heir_attempt, '2', 'the killed agent\'s task is handed out again, as the step\'s second attempt');
is($node->safe_psql('postgres', "SET ROLE agent1; SELECT wf_complete($heir_task, '{\"by\": \"heir\"}')"),
	't', 'another agent completes it');
is(wf_wait($node, $slow), 'completed', 'and the run completes');
is($node->safe_psql('postgres', "SELECT attempt, output->>'by' FROM wf.steps WHERE run_id = $slow"),
	'2|heir', 'with the output of the second attempt');
like( $node->safe_psql('postgres', qq{
		SELECT string_agg(status, ',' ORDER BY id) FROM wf.history WHERE run_id = $slow AND step = 'w'}),
	qr/running,retrying,running.*completed/, 'the history tells the lost attempt');

# -------------------------------------------------------------------------
# An immediate shutdown of the server with tasks claimed.
# -------------------------------------------------------------------------
wf_define($node, 'held', { steps => [ { name => 'h', agent => 'p',
	retry => { max_attempts => 3, backoff => 'fixed', initial_interval => '10ms' } } ] });
my ($kept_run, $lapsed_run) = wf_start_many($node, 'held', 2);
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM wf.task WHERE run_id IN ($kept_run, $lapsed_run) AND state = 'ready'")
  or die 'the held tasks never became ready';
# Each claim takes one of the two tasks.
my ($kept, $lapsed) = map {
	[ split /\|/, $node->safe_psql('postgres', qq{
		SET ROLE agent1;
		SELECT task_id || '|' || run_id FROM wf_claim('p', lease => '$_', agent => 'holder')}) ]
} ('10 minutes', '2 seconds');
ok($kept->[0] && $lapsed->[0], 'two tasks are claimed, one leased for 10 minutes, one for 2 seconds');
$node->stop('immediate');
$node->start;
is( $node->safe_psql('postgres', qq{
		SELECT state FROM wf.task WHERE id = $kept->[0]}),
	'claimed', 'after the restart, the task with a live lease is still its holder\'s');
my ($retaken, $retaken_run, $retaken_attempt) = split /\|/, $node->safe_psql('postgres', qq{
	SET ROLE agent1;
	SELECT task_id || '|' || run_id || '|' || attempt FROM wf_claim('p', lease => '1 minute', agent => 'second',
		wait => '$PostgreSQL::Test::Utils::timeout_default s')});
is("$retaken_run|$retaken_attempt", "$lapsed->[1]|2",
	'the task whose lease lapsed is handed out again, as attempt 2');
is($node->safe_psql('postgres', "SET ROLE agent1; SELECT wf_complete($kept->[0], '{\"by\": \"holder\"}')"),
	't', 'the holder completes its task after the restart');
is($node->safe_psql('postgres', "SET ROLE agent1; SELECT wf_complete($lapsed->[0], '{\"by\": \"late\"}')"),
	'f', 'the holder of the lapsed lease cannot complete its task');
is($node->safe_psql('postgres', "SET ROLE agent1; SELECT wf_complete($retaken, '{\"by\": \"second\"}')"),
	't', 'the second claimer can');
is(wf_wait_all($node, $kept->[1], $lapsed->[1]), 'completed,completed', 'both runs complete');

# -------------------------------------------------------------------------
# 8 agents, 8,000 tasks.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT wf_grant_pool('crowd', 'agent1')");
wf_define($node, 'many', { steps => [ { name => 't', agent => 'crowd', payload => { i => '{{$.input.i}}' } } ] });
my @crowd = map {
	start_agent($_ % 2 ? 'js' : 'py', "crowd-$_", '--pool', 'crowd', '--lease', '5 minutes', '--wait', '1 second')
} 1 .. 8;
my $first = $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM wf.runs');
$node->safe_psql('postgres',
	q{SELECT count(wf_start('many', jsonb_build_object('i', g))) FROM generate_series(1, 8000) g});
$node->poll_query_until('postgres', qq{
	SELECT count(*) FILTER (WHERE status = 'completed') = 8000 OR count(*) FILTER (WHERE status = 'failed') > 0
	  FROM wf.runs WHERE id > $first}, 't')
  or die 'the 8,000 tasks did not complete';
my %stopped;
$stopped{ $_->[0] } = stop_agent($_) for @crowd;
is(scalar(grep { $_ } values %stopped), 8, 'the 8 agents stop cleanly');

my (%completions, %refused, %per_agent);
for my $a (@crowd)
{
	for my $line (split /\n/, ${ $a->[2] })
	{
		next unless $line =~ /^completed task (\d+): (\w+)/;
		if (lc($2) eq 'true') { $completions{$1}++; $per_agent{ $a->[0] }++; }
		else { $refused{$1}++; }
	}
}
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'completed') FROM wf.runs WHERE id > $first"),
	'8000', 'every run completed');
is(scalar(keys %completions), 8000, 'the agents completed 8,000 distinct tasks');
is(scalar(grep { $_ != 1 } values %completions), 0, 'each exactly once');
my $expired = $node->safe_psql('postgres',
	"SELECT count(*) FROM wf.steps WHERE run_id > $first AND attempt > 1");
is(scalar(keys %refused), 0 + $expired,
	'a completion was refused only where a lease expired (none of 5 minutes did)');
is($expired, '0', 'no lease expired');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM wf.steps s WHERE run_id > $first
		   AND (s.output->'echo'->>'i')::int IS DISTINCT FROM
			   (SELECT (input->>'i')::int FROM wf.runs r WHERE r.id = s.run_id)}),
	'0', 'each run has the output of its own task');
is(scalar(keys %per_agent), 8, 'every agent completed tasks');

done_testing();
