
# Copyright (c) pg_workflow authors

# Control flow: containers, sagas, escalation, human steps, timeouts.
#  - five levels of nesting, parallel > map > if > parallel > sql, next to a
#    child workflow run: the output (map outputs in input order), every
#    nested step in wf.steps by its path, the child run in wf.runs;
#  - a saga of 5 steps failing at step k for each k in 1..5: the compensate
#    actions of the completed steps run in reverse order (a ledger table
#    records them; s3 has no compensate action and stays "completed"),
#    those steps become "compensated", the run fails with "compensated"
#    listing them; without a failure nothing is undone;
#  - wf_cancel of a saga waiting for a signal compensates what was done;
#  - on_error escalate: the step is "escalated", a wf.alerts row, a NOTIFY
#    on wf_alerts that a LISTENing session receives; wf_resolve('retry')
#    once the cause is fixed completes the run and resolves the alert;
#  - human steps: escalation to escalate_to, visible in wf.human_tasks (to
#    the new assignee too), answered with wf_signal; the on_timeout output when
#    nobody answers; failure without on_timeout; a decision sent while the
#    executor escalates the approval is accepted (no deadlock);
#  - a workflow-level timeout fails the run;
#  - cancelling a parent run cancels its child run.

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

my $node = wf_node('flow', workers => 2);

# Polls until the step of the run has the status.
sub wait_step
{
	my ($run, $step, $status) = @_;
	return $node->poll_query_until('postgres',
		"SELECT status FROM wf.steps WHERE run_id = $run AND step = " . wf_sql_quote($step),
		$status);
}

# -------------------------------------------------------------------------
# Five levels of nesting and a child workflow.
# -------------------------------------------------------------------------
wf_define($node, 'times100',
	{ steps => [ { name => 'mul', sql => q{SELECT ($1->'input'->>'n')::int * 100} } ] });
wf_define(
	$node, 'nested',
	{
		steps => [
			{ name => 'items', sql => q{SELECT $1->'input'->'items'} },
			{
				name => 'fan',
				parallel => [
					{
						name => 'mapped',
						steps => [
							{
								name => 'each',
								map => {
									over => '$.steps.items',
									concurrency => 2,
									step => {
										name => 'pick',
										if => '$.item > 2',
										then => [
											{
												name => 'both',
												parallel => [
													{
														name => 'a',
														steps => [
															{
																name => 'ten',
																# The first item is the slowest.
																sql =>
																  q{SELECT ($1->>'item')::int * 10 FROM pg_sleep(CASE WHEN ($1->>'index')::int = 0 THEN 0.2 ELSE 0 END)}
															}
														]
													},
													{
														name => 'b',
														steps => [
															{
																name => 'idx',
																sql => q{SELECT ($1->>'index')::int}
															}
														]
													}
												]
											}
										],
										else => [
											{
												name => 'small',
												sql => q{SELECT 'small:' || ($1->>'item')}
											}
										]
									}
								}
							}
						]
					},
					{
						name => 'child',
						steps => [
							{
								name => 'sub',
								workflow => 'times100',
								input => { n => '{{$.steps.items[2]}}' }
							}
						]
					}
				]
			},
			{ name => 'summary', sql => q{SELECT $1->'steps'->'fan'} },
		]
	});
my $nest = wf_start($node, 'nested', { items => [ 5, 1, 7, 2 ] });
is(wf_wait($node, $nest), 'completed', 'five-level nested run completed');
is( $node->safe_psql('postgres', "SELECT output FROM wf.runs WHERE id = $nest"),
	'{"child": 700, "mapped": [{"a": 50, "b": 0}, "small:1", {"a": 70, "b": 2}, "small:2"]}',
	'output: the branches, the map outputs in input order, the child run output');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || '|' || kind || '|' || status, E'\\n' ORDER BY step COLLATE \"C\") FROM wf.steps WHERE run_id = $nest"
	),
	'fan|parallel|completed
fan/child/sub|workflow|completed
fan/mapped/each|map|completed
fan/mapped/each[0]|if|completed
fan/mapped/each[0]/both|parallel|completed
fan/mapped/each[0]/both/a/ten|sql|completed
fan/mapped/each[0]/both/b/idx|sql|completed
fan/mapped/each[1]|if|completed
fan/mapped/each[1]/small|sql|completed
fan/mapped/each[2]|if|completed
fan/mapped/each[2]/both|parallel|completed
fan/mapped/each[2]/both/a/ten|sql|completed
fan/mapped/each[2]/both/b/idx|sql|completed
fan/mapped/each[3]|if|completed
fan/mapped/each[3]/small|sql|completed
items|sql|completed
summary|sql|completed',
	'wf.steps lists every nested step by its path');
is( $node->safe_psql(
		'postgres',
		"SELECT step || '=' || output::text FROM wf.steps WHERE run_id = $nest AND step IN ('fan/mapped/each[0]', 'fan/mapped/each[1]') ORDER BY step"
	),
	qq{fan/mapped/each[0]={"a": 50, "b": 0}\nfan/mapped/each[1]="small:1"},
	'an if step outputs its taken branch, a parallel step its branches');
is( $node->safe_psql(
		'postgres',
		"SELECT workflow, parent_step, status, output FROM wf.runs WHERE parent_run = $nest"),
	'times100|fan/child/sub|completed|700',
	'the child run is linked to its parent run and step');

# -------------------------------------------------------------------------
# Sagas: step k of 5 fails, for each k.
# -------------------------------------------------------------------------
$node->safe_psql('postgres',
	'CREATE TABLE ledger (n serial PRIMARY KEY, run_id bigint, entry text)');
my @saga_steps;
foreach my $i (1 .. 5)
{
	my $step = {
		name => "s$i",
		on_error => 'compensate',
		sql => qq{WITH ok AS (SELECT 1 / CASE WHEN (\$1->'input'->>'fail')::int = $i THEN 0 ELSE 1 END AS x)
INSERT INTO ledger (run_id, entry) SELECT (\$1->'run'->>'id')::bigint, 'do s$i' FROM ok WHERE ok.x = 1 RETURNING $i}
	};
	# s3 has nothing to undo.
	# An undo fails when the input says so.
	$step->{compensate} = {
		sql => qq{INSERT INTO ledger (run_id, entry)
SELECT (\$1->'run'->>'id')::bigint, 'undo s$i'
  FROM (SELECT 1 / CASE WHEN (\$1->'input'->>'fail_undo')::int = $i THEN 0 ELSE 1 END AS x) z
 WHERE z.x = 1
RETURNING -$i}
	} unless $i == 3;
	push @saga_steps, $step;
}
wf_define($node, 'saga', { steps => \@saga_steps });

my %saga;
$saga{$_} = wf_start($node, 'saga', { fail => $_ }) foreach (1 .. 6);
is(wf_wait_all($node, map { $saga{$_} } 1 .. 6),
	'failed,failed,failed,failed,failed,completed',
	'sagas failing at steps 1 to 5 failed, the one without a failure completed');

foreach my $k (1 .. 6)
{
	my $run = $saga{$k};
	my @done = grep { $_ < $k } 1 .. 5;
	my @undone = $k == 6 ? () : reverse grep { $_ != 3 } @done;
	my @ledger = ((map { "do s$_" } @done), (map { "undo s$_" } @undone));
	@ledger = map { "do s$_" } 1 .. 5 if $k == 6;

	is( $node->safe_psql(
			'postgres',
			"SELECT coalesce(string_agg(entry, ', ' ORDER BY n), '') FROM ledger WHERE run_id = $run"
		),
		join(', ', @ledger),
		"fail at $k: the ledger has the steps done, then the compensations in reverse order"
	);

	my @status = map {
		    $_ < $k ? ($_ == 3 ? 'completed' : 'compensated')
		  : $_ == $k ? 'failed'
		  : $k == 6 ? 'completed'
		  : 'cancelled'
	} 1 .. 5;
	@status = ('completed') x 5 if $k == 6;
	is( $node->safe_psql(
			'postgres',
			"SELECT string_agg(status, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $run AND step ~ '^s[0-9]\$'"
		),
		join(' ', @status),
		"fail at $k: statuses of s1..s5");
	is( $node->safe_psql(
			'postgres',
			"SELECT coalesce(string_agg(step || ':' || status, ' ' ORDER BY ord), '') FROM wf.steps WHERE run_id = $run AND step LIKE 'compensate:%'"
		),
		join(' ', map { "compensate:s$_:completed" } @undone),
		"fail at $k: the compensation steps ran in reverse order");
	next if $k == 6;
	is( $node->safe_psql(
			'postgres',
			"SELECT status, error->>'step', error->>'sqlstate', error->'compensated' FROM wf.runs WHERE id = $run"
		),
		"failed|s$k|22012|" . encode_json([ map { "s$_" } @undone ]) =~ s/,/, /gr,
		"fail at $k: the run failed at s$k, its error lists what was compensated");
}

# A compensation that fails: the saga stops undoing, the run fails with its
# first error, what was compensated and the compensation's failure.
my $broken = wf_start($node, 'saga', { fail => 5, fail_undo => 2 });
is(wf_wait($node, $broken), 'failed', 'a saga whose undo of s2 fails ends failed');
is( $node->safe_psql(
		'postgres',
		"SELECT coalesce(string_agg(entry, ', ' ORDER BY n), '') FROM ledger WHERE run_id = $broken"),
	'do s1, do s2, do s3, do s4, undo s4',
	's4 was undone, s2 could not be, s1 was not tried');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || ':' || status, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $broken"
	),
	's1:completed s2:completed s3:completed s4:compensated s5:failed '
	  . 'compensate:s4:completed compensate:s2:failed compensate:s1:cancelled',
	'the statuses say what was and was not undone');
is( $node->safe_psql(
		'postgres', qq{
	SELECT error->>'step', error->>'sqlstate', error->'compensated',
		   error->'compensation_failed'->>'step', error->'compensation_failed'->>'sqlstate'
	  FROM wf.runs WHERE id = $broken}),
	's5|22012|["s4"]|compensate:s2|22012',
	'the error keeps the first failure, what was compensated and the failed compensation');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM wf.alerts WHERE run_id = $broken AND kind = 'failure'"),
	'1', 'an alert asks a person to finish the job');

# A step that finishes executing after its saga started undoing is rolled
# back and cancelled: it is not in the list of steps to compensate, so
# keeping its effects would leave them undone.  Branch a's step (its retry,
# claimed on its own: a transaction that has not touched the run) and then
# branch b's step block on two tables the test holds locked; the test lets
# b go on and fail, the saga starts undoing and waits for a signal, and
# only then lets a's step finish.
$node->safe_psql(
	'postgres', q{
	CREATE TABLE gate_a (x int);
	CREATE TABLE gate_b (x int);
	CREATE FUNCTION slow_step(run bigint, attempt int) RETURNS int LANGUAGE plpgsql AS $$
	BEGIN
		IF attempt = 1 THEN
			RAISE EXCEPTION 'try again' USING ERRCODE = 'serialization_failure';
		END IF;
		PERFORM count(*) FROM gate_a;
		INSERT INTO ledger (run_id, entry) VALUES (run, 'do slow');
		RETURN attempt;
	END
	$$;});
wf_define(
	$node, 'saga-race',
	{
		steps => [
			{
				name => 'first',
				sql => q{INSERT INTO ledger (run_id, entry) VALUES (($1->'run'->>'id')::bigint, 'do first') RETURNING 1},
				compensate => { wait_for => { signal => 'undo' } }
			},
			{
				name => 'fan',
				dependencies => ['first'],
				parallel => [
					{
						name => 'a',
						steps => [
							{ name => 'nap_a', sleep => '100ms' },
							{
								name => 'slow',
								sql => q{SELECT public.slow_step(($1->'run'->>'id')::bigint, ($1->'run'->>'attempt')::int)},
								retry => { max_attempts => 3, backoff => 'fixed', initial_interval => '200ms' },
								compensate => {
									sql => q{INSERT INTO ledger (run_id, entry) VALUES (($1->'run'->>'id')::bigint, 'undo slow') RETURNING 1}
								}
							}
						]
					},
					{
						name => 'b',
						steps => [
							{ name => 'nap_b', sleep => '1s' },
							{ name => 'hold', sql => 'SELECT count(*) FROM public.gate_b' },
							{ name => 'boom', sql => 'SELECT 1 / 0', on_error => 'compensate' },
						]
					},
				]
			},
		]
	});
my $gate_a = $node->background_psql('postgres');
$gate_a->query_safe('BEGIN; LOCK TABLE gate_a IN ACCESS EXCLUSIVE MODE');
my $gate_b = $node->background_psql('postgres');
$gate_b->query_safe('BEGIN; LOCK TABLE gate_b IN ACCESS EXCLUSIVE MODE');
my $race_saga = wf_start($node, 'saga-race');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND wait_event_type = 'Lock' AND (query LIKE '% step fan/a/slow' OR query LIKE '% step fan/b/hold')},
		'2'),
	'saga race: both branches are executing, blocked');
$gate_b->query_safe('COMMIT');
$gate_b->quit;
ok(wait_step($race_saga, 'compensate:first', 'waiting'),
	'saga race: branch b failed, the saga is undoing (waiting to undo "first")');
$gate_a->query_safe('COMMIT');
$gate_a->quit;
ok(wait_step($race_saga, 'fan/a/slow', 'cancelled'),
	'saga race: the step that finished meanwhile is cancelled');
$node->safe_psql('postgres', "SELECT wf_signal($race_saga, 'undo')");
is(wf_wait($node, $race_saga), 'failed', 'saga race: the run failed');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(entry, ', ' ORDER BY n) FROM ledger WHERE run_id = $race_saga"),
	'do first', 'saga race: the late step left nothing behind');
is( $node->safe_psql(
		'postgres', "SELECT error->>'step', error->'compensated' FROM wf.runs WHERE id = $race_saga"),
	'fan/b/boom|["first"]',
	'saga race: the error names the failed step and what was compensated');

# Cancelling a waiting saga compensates it.
wf_define(
	$node, 'saga-cancel',
	{
		steps => [
			{
				name => 'book',
				sql => q{INSERT INTO ledger (run_id, entry) VALUES (($1->'run'->>'id')::bigint, 'book') RETURNING 1},
				compensate => {
					sql => q{INSERT INTO ledger (run_id, entry) VALUES (($1->'run'->>'id')::bigint, 'unbook') RETURNING 1}
				}
			},
			{ name => 'confirm', wait_for => { signal => 'confirmed' } },
		]
	});
my $sc = wf_start($node, 'saga-cancel');
ok(wait_step($sc, 'confirm', 'waiting'), 'the saga waits for its confirmation');
is($node->safe_psql('postgres', "SELECT wf_cancel($sc, 'customer left')"),
	't', 'wf_cancel of the waiting saga returns true');
is(wf_wait($node, $sc), 'cancelled', 'the cancelled saga ended cancelled');
is( $node->safe_psql(
		'postgres',
		"SELECT error->>'message', error->'compensated' FROM wf.runs WHERE id = $sc"),
	'customer left|["book"]',
	'its error has the reason and what was compensated');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(entry, ', ' ORDER BY n) FROM ledger WHERE run_id = $sc"),
	'book, unbook',
	'the booking was undone');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || ':' || status, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $sc"
	),
	'book:compensated confirm:cancelled compensate:book:completed',
	'the booking step is compensated, the wait cancelled');

# -------------------------------------------------------------------------
# on_error escalate, wf.alerts, NOTIFY wf_alerts, wf_resolve.
# -------------------------------------------------------------------------
$node->safe_psql('postgres',
	'CREATE TABLE switch (fixed boolean); INSERT INTO switch VALUES (false)');
wf_define(
	$node, 'needs-operator',
	{
		steps => [
			{
				name => 'check',
				on_error => 'escalate',
				sql => q{SELECT CASE WHEN fixed THEN 'fixed' ELSE (1 / (SELECT 0))::text END FROM switch}
			},
			{ name => 'after', sql => q{SELECT 'after ' || ($1->'steps'->>'check')} },
		]
	});

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN wf_alerts');

my $esc = wf_start($node, 'needs-operator');
ok(wait_step($esc, 'check', 'escalated'), 'the failing step is escalated');
is($node->safe_psql('postgres', "SELECT status FROM wf.runs WHERE id = $esc"),
	'waiting', 'the run waits for an operator');
is( $node->safe_psql(
		'postgres',
		"SELECT step, kind, message LIKE '%division by zero%', resolved_at IS NULL FROM wf.alerts WHERE run_id = $esc"
	),
	'check|escalation|t|t',
	'an open escalation alert names the step and the error');

my @alerts;
my $heard = '';
foreach my $i (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	$heard .= $listener->query_safe('SELECT 1');
	@alerts = ();
	while ($heard =~
		/Asynchronous notification "wf_alerts" with payload "(.*)" received from server process/g)
	{
		my $p = decode_json($1);
		push @alerts, $p if $p->{run} == $esc;
	}
	last if @alerts;
	usleep(100_000);
}
is(scalar(@alerts), 1, 'the LISTENing session received one wf_alerts notification');
is(join('|', map { $_->{step} . ':' . $_->{kind} } @alerts),
	'check:escalation', 'the notification names the step and the kind');
$listener->quit;

$node->safe_psql('postgres', 'UPDATE switch SET fixed = true');
is($node->safe_psql('postgres', "SELECT wf_resolve($esc, 'check', 'retry')"),
	't', 'wf_resolve retry after the fix');
is(wf_wait($node, $esc), 'completed', 'the resolved run completed');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || '=' || output::text, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $esc"
	),
	'check="fixed" after="after fixed"',
	'the retried step and the rest ran');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM wf.alerts WHERE run_id = $esc AND resolved_at IS NULL"),
	'0',
	'the alert is resolved');
is($node->safe_psql('postgres', "SELECT wf_resolve($esc, 'check', 'retry')"),
	'f', 'wf_resolve of a step that is no longer escalated returns false');

# -------------------------------------------------------------------------
# Human steps.
# -------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE ROLE director');
my %human = (assignee => 'manager', title => 'Approve the change', timeout => '500ms');
wf_define(
	$node, 'approval-escalated',
	{
		steps => [
			{
				name => 'approve',
				human => { %human, escalation => { timeout => '1 hour', escalate_to => 'director' } }
			}
		]
	});
wf_define(
	$node, 'approval-unanswered',
	{
		steps => [
			{
				name => 'approve',
				human => {
					%human,
					escalation => { timeout => '500ms', escalate_to => 'director' },
					on_timeout => { decision => 'rejected', reason => 'nobody answered' }
				}
			},
			{ name => 'tell', sql => q{SELECT 'told: ' || ($1->'steps'->'approve'->>'decision')} },
		]
	});
wf_define($node, 'approval-strict',
	{ steps => [ { name => 'approve', human => {%human} } ] });

my $esc_h = wf_start($node, 'approval-escalated');
my $silent = wf_start($node, 'approval-unanswered');
my $strict = wf_start($node, 'approval-strict');

ok( $node->poll_query_until(
		'postgres',
		"SELECT assignee || ' ' || escalated FROM wf.human_tasks WHERE run_id = $esc_h",
		'director true'),
	'unanswered past its timeout, the approval is escalated to the director');
is( $node->safe_psql(
		'postgres', qq{
	SET ROLE director;
	SELECT bool_or(run_id = $esc_h), bool_and(assignee = 'director'),
		   string_agg(DISTINCT step || ':' || title, ',')
	  FROM wf.human_tasks;}),
	't|t|approve:Approve the change',
	'the director sees the task in wf.human_tasks, and only tasks assigned to him');
is( $node->safe_psql(
		'postgres',
		"SELECT kind, detail->>'from', detail->>'to' FROM wf.alerts WHERE run_id = $esc_h"),
	'escalation|manager|director',
	'the escalation raised an alert');
is( $node->safe_psql(
		'postgres',
		"SELECT wf_signal($esc_h, 'approve', '{\"decision\": \"approved\", \"by\": \"director\"}')"
	),
	't',
	'the decision is signalled');
is(wf_wait($node, $esc_h), 'completed', 'the escalated approval completed');
is( $node->safe_psql('postgres', "SELECT output FROM wf.runs WHERE id = $esc_h"),
	'{"by": "director", "decision": "approved"}',
	'its output is the decision');
is($node->safe_psql('postgres', "SELECT count(*) FROM wf.human_tasks WHERE run_id = $esc_h"),
	'0', 'the answered task left wf.human_tasks');

is(wf_wait($node, $silent), 'completed', 'the unanswered approval completed');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || '=' || output::text, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $silent"
	),
	'approve={"reason": "nobody answered", "decision": "rejected"} tell="told: rejected"',
	'past both timeouts the step outputs on_timeout');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(status || coalesce(':' || (detail->>'to'), ''), ' ' ORDER BY id) FROM wf.history WHERE run_id = $silent AND step = 'approve'"
	),
	'waiting escalated:director completed',
	'it was escalated to the director before timing out');

is(wf_wait($node, $strict), 'failed', 'an unanswered approval without on_timeout fails');
is( $node->safe_psql(
		'postgres',
		"SELECT error->>'step', error->>'timeout' FROM wf.runs WHERE id = $strict"),
	'approve|true',
	'with a timeout error on the step');

# A decision that comes while an executor escalates the approval.  The
# escalation's INSERT into wf.alert is held back by a table lock, to widen
# the window between the executor's claim of the step (row lock) and its
# wf._step_wait (advisory lock).
wf_define(
	$node, 'approval-race',
	{
		steps => [
			{
				name => 'approve',
				human => { %human, escalation => { timeout => '1 hour', escalate_to => 'director' } }
			}
		]
	});
my $race = wf_start($node, 'approval-race');
ok(wait_step($race, 'approve', 'waiting'), 'the approval waits');
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE wf.alert IN SHARE ROW EXCLUSIVE MODE');
ok( $node->poll_query_until(
		'postgres', q{
	SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
	 WHERE a.backend_type = 'pg_workflow executor' AND NOT l.granted
	   AND l.relation = 'wf.alert'::regclass}, '1'),
	'the executor is escalating the approval');
# wf_signal does not wait for the executor: it skips the row the executor
# holds, and the executor finds the signal when it goes back to waiting.
my ($decided, $decider_err) = ('', '');
$node->psql('postgres',
	"SELECT wf_signal($race, 'approve', '{\"decision\": \"approved\"}')",
	stdout => \$decided, stderr => \$decider_err);
$locker->query_safe('COMMIT');
$locker->quit;
is($decided, 't', 'the decision sent during the escalation is accepted');
unlike($decider_err, qr/deadlock detected/, 'wf_signal did not deadlock');
is(wf_wait($node, $race), 'completed', 'the raced approval completed');
is($node->safe_psql('postgres', "SELECT output->>'decision' FROM wf.runs WHERE id = $race"),
	'approved', 'with the decision');

# -------------------------------------------------------------------------
# Workflow timeout; cancelling a parent cancels its child.
# -------------------------------------------------------------------------
wf_define($node, 'too-slow',
	{ timeout => '500ms', steps => [ { name => 'nap', sleep => '1 hour' } ] });
my $slow = wf_start($node, 'too-slow');
is(wf_wait($node, $slow), 'failed', 'a run past its workflow timeout fails');
is( $node->safe_psql(
		'postgres',
		"SELECT error->>'timeout', error->>'message' LIKE 'workflow timed out%' FROM wf.runs WHERE id = $slow"
	),
	'true|t',
	'its error says it timed out');
is($node->safe_psql('postgres', "SELECT status FROM wf.steps WHERE run_id = $slow"),
	'cancelled', 'its sleeping step is cancelled');

wf_define($node, 'child-waits',
	{ steps => [ { name => 'hold', wait_for => { signal => 'never' } } ] });
wf_define($node, 'parent',
	{ steps => [ { name => 'call', workflow => 'child-waits' } ] });
my $parent = wf_start($node, 'parent');
ok( $node->poll_query_until(
		'postgres',
		"SELECT s.status FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id WHERE r.parent_run = $parent",
		'waiting'),
	'the child run is waiting');
my $child = $node->safe_psql('postgres', "SELECT id FROM wf.runs WHERE parent_run = $parent");
is($node->safe_psql('postgres', "SELECT wf_cancel($parent, 'stop')"),
	't', 'the parent is cancelled');
is(wf_wait_all($node, $parent, $child), 'cancelled,cancelled',
	'the parent and its child ended cancelled');
is( $node->safe_psql('postgres', "SELECT error->>'message' FROM wf.runs WHERE id = $child"),
	"parent run $parent ended",
	'the child says why');
is($node->safe_psql('postgres', "SELECT status FROM wf.steps WHERE run_id = $child"),
	'cancelled', 'the child\'s waiting step is cancelled');

# A child run that an executor is executing when its parent is cancelled:
# the step in progress is interrupted, as the parent's own would be, and
# the child ends.  The child's step blocks on a table the test holds
# locked (so that it cannot finish on its own before the cancel); the nap
# before it puts it in a transaction of its own (the one that starts the
# child holds the parent until it commits, and wf_cancel would wait).
$node->safe_psql('postgres', 'CREATE TABLE gate (x int)');
wf_define(
	$node, 'child-busy',
	{
		steps => [
			{ name => 'nap',  sleep => '10ms' },
			{ name => 'gate', sql => 'SELECT count(*) FROM public.gate' },
			{ name => 'then', sql => 'SELECT 1' },
			{ name => 'hold', wait_for => { signal => 'never' } },
		]
	});
wf_define($node, 'parent-busy',
	{ steps => [ { name => 'call', workflow => 'child-busy' } ] });
my $gate = $node->background_psql('postgres');
$gate->query_safe('BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE');
my $busy_parent = wf_start($node, 'parent-busy');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND wait_event_type = 'Lock' AND query LIKE '% step gate'},
		'1'),
	'the child\'s first step is executing (waiting for the gate)');
my $busy_child =
  $node->safe_psql('postgres', "SELECT id FROM wf.runs WHERE parent_run = $busy_parent");
is($node->safe_psql('postgres', "SELECT wf_cancel($busy_parent, 'stop')"),
	't', 'the parent of the busy child is cancelled');
is(wf_wait_all($node, $busy_parent, $busy_child), 'cancelled,cancelled',
	'the busy child ended cancelled too, the gate still closed');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('pg_workflow executor', 'pg_workflow long-step worker') AND wait_event_type = 'Lock'}),
	'0', 'no executor waits for the gate any more');
$gate->query_safe('COMMIT');
$gate->quit;
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || ':' || status, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $busy_child"
	),
	'nap:completed gate:cancelled then:cancelled hold:cancelled',
	'the step in progress was interrupted; the next ones did not run');

# A child run whose row another transaction holds (as an executor's claim
# does) when its parent ends is cancelled once the row is free.
my $held_parent = wf_start($node, 'parent');
ok( $node->poll_query_until(
		'postgres',
		"SELECT s.status FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id WHERE r.parent_run = $held_parent",
		'waiting'),
	'the second child run is waiting');
my $held_child =
  $node->safe_psql('postgres', "SELECT id FROM wf.runs WHERE parent_run = $held_parent");
my $holder = $node->background_psql('postgres');
$holder->query_safe("BEGIN; SELECT 1 FROM wf.run WHERE id = $held_child FOR KEY SHARE");
is($node->safe_psql('postgres', "SELECT wf_cancel($held_parent)"),
	't', 'the parent is cancelled while its child\'s row is held');
is( $node->safe_psql('postgres',
		"SELECT action FROM wf.deferred WHERE run_id = $held_child AND step IS NULL"),
	'cancel', 'the child\'s cancellation is deferred');
$holder->query_safe('COMMIT');
$holder->quit;
is(wf_wait($node, $held_child), 'cancelled', 'the child is cancelled once its row is free');
is($node->safe_psql('postgres', "SELECT status FROM wf.steps WHERE run_id = $held_child"),
	'cancelled', 'and its waiting step too');

# The same for a step of an ended run whose row another transaction holds.
my $held_run = wf_start($node, 'child-waits');
ok(wait_step($held_run, 'hold', 'waiting'), 'a run waits');
$holder = $node->background_psql('postgres');
$holder->query_safe(
	"BEGIN; SELECT 1 FROM wf.step WHERE run_id = $held_run AND step = 'hold' FOR UPDATE");
is($node->safe_psql('postgres', "SELECT wf_cancel($held_run)"),
	't', 'the run is cancelled while its waiting step\'s row is held');
is( $node->safe_psql('postgres',
		"SELECT r.status || ' ' || s.status || ' ' || d.action FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id JOIN wf.deferred d ON d.run_id = r.id AND d.step = s.step WHERE r.id = $held_run"
	),
	'cancelled waiting cancel',
	'the step still waits, its cancellation is deferred');
$holder->query_safe('COMMIT');
$holder->quit;
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM wf.steps WHERE run_id = $held_run", 'cancelled'),
	'the step is cancelled once its row is free');
is($node->safe_psql('postgres', 'SELECT count(*) FROM wf.deferred'),
	'0', 'nothing is left deferred');

$node->stop;
done_testing();
