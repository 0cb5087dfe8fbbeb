
# Copyright (c) pg_workflow authors

# Retries of transient errors:
#  - a step failing with SQLSTATE 40001 until its third attempt, with fixed
#    backoff: completes at attempt 3, two 'retrying' history rows with
#    increasing retry_at, each retry no earlier than its retry_at, the
#    effects of the failed attempts rolled back;
#  - exponential and linear backoff: the recorded gaps (retry_at - at) grow
#    as the policy says, max_interval caps them;
#  - workflow-level retry as the default, step-level retry overriding it;
#  - max_attempts exhausted: the step and the run fail with class transient;
#  - on_error "skip" once the retries are exhausted;
#  - a lock conflict (55P03) retried until the lock is released;
#  - permanent errors are not retried (attempt 1, no 'retrying' row).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('retry', workers => 2);

# Attempts are counted by the context's run.attempt: a failed attempt's own
# writes roll back with it, so attempts_log only keeps successful attempts.
$node->safe_psql(
	'postgres', q{
	CREATE TABLE attempts_log (run_id bigint, step text, attempt int);
	CREATE FUNCTION fail_until(attempt int, ok_at int, code text) RETURNS int
	LANGUAGE plpgsql AS $f$
	BEGIN
		IF attempt < ok_at THEN
			RAISE EXCEPTION 'attempt % failed on purpose', attempt USING ERRCODE = code;
		END IF;
		RETURN attempt;
	END
	$f$;
	CREATE TABLE locked (id int);
	INSERT INTO locked VALUES (1);});

# A step that logs its attempt, then fails with "code" until attempt "ok_at".
sub flaky_step
{
	my ($name, $ok_at, $code, %extra) = @_;
	return {
		name => $name,
		sql => qq{WITH i AS (INSERT INTO attempts_log VALUES (
				(\$1->'run'->>'id')::bigint, '$name', (\$1->'run'->>'attempt')::int) RETURNING 1)
			SELECT fail_until((\$1->'run'->>'attempt')::int, $ok_at, '$code') FROM i},
		%extra
	};
}

# "step:status:attempt" of the run's history rows about steps, in order.
sub step_history
{
	my ($run) = @_;
	return $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(step || ':' || status || ':' || attempt, ' ' ORDER BY id)
	  FROM wf.history WHERE run_id = $run AND step IS NOT NULL});
}

# retry_at - at of the run's 'retrying' rows, in milliseconds.
sub retry_gaps
{
	my ($run) = @_;
	return split /,/,
	  $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(round(extract(epoch FROM (detail->>'retry_at')::timestamptz - at) * 1000)::text,
					  ',' ORDER BY id)
	  FROM wf.history WHERE run_id = $run AND status = 'retrying'});
}

# -------------------------------------------------------------------------
# Fixed backoff: 40001 twice, success at the third attempt.
# -------------------------------------------------------------------------
wf_define(
	$node, 'fixed',
	{
		steps => [
			flaky_step(
				'flaky', 3, '40001',
				retry => {
					max_attempts => 5,
					backoff => 'fixed',
					initial_interval => '200ms'
				}),
			{ name => 'next', sql => q{SELECT $1->'steps'->'flaky'} },
		]
	});
my $fixed = wf_start($node, 'fixed');
is(wf_wait($node, $fixed), 'completed', 'fixed backoff: run completed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s|%s|%s|%s', step, status, attempt, output), E'\n' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $fixed}),
	"flaky|completed|3|3\nnext|completed|1|3",
	'the step completed at attempt 3 and its output went on');
is( step_history($fixed),
	'flaky:retrying:1 flaky:retrying:2 flaky:completed:3 next:completed:1',
	'two retrying rows, then completed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s|%s|%s|%s', detail->>'sqlstate', detail->>'class',
							 detail->>'attempt', detail->>'message'), E'\n' ORDER BY id)
	  FROM wf.history WHERE run_id = $fixed AND status = 'retrying'}),
	"40001|transient|1|attempt 1 failed on purpose\n40001|transient|2|attempt 2 failed on purpose",
	'retrying rows carry the error');
is( $node->safe_psql(
		'postgres', qq{
	WITH h AS (
		SELECT at, (detail->>'retry_at')::timestamptz AS retry_at,
		       lag((detail->>'retry_at')::timestamptz) OVER (ORDER BY id) AS prev_retry_at
		  FROM wf.history WHERE run_id = $fixed AND status = 'retrying')
	SELECT count(*), bool_and(retry_at > at),
	       bool_and(prev_retry_at IS NULL OR (retry_at > prev_retry_at AND at >= prev_retry_at)),
	       (SELECT started_at FROM wf.steps WHERE run_id = $fixed AND step = 'flaky')
	         >= max(retry_at)
	  FROM h}),
	'2|t|t|t',
	'retry_at increases and no attempt ran before its retry_at');
my @gaps = retry_gaps($fixed);
ok((grep { $_ > 0 && $_ <= 200 } @gaps) == 2,
	"fixed backoff gaps are at most 200ms (@gaps)");
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || ':' || attempt, ',' ORDER BY step) FROM attempts_log WHERE run_id = $fixed"
	),
	'flaky:3',
	'the failed attempts left no effect, the successful one exactly one');

# -------------------------------------------------------------------------
# Exponential and linear backoff, max_interval, workflow-level defaults.
# -------------------------------------------------------------------------
wf_define(
	$node, 'expo',
	{
		steps => [
			flaky_step(
				'flaky', 4, '40P01',
				retry => {
					max_attempts => 4,
					backoff => 'exponential',
					initial_interval => '300ms'
				})
		]
	});
wf_define(
	$node, 'linear',
	{
		steps => [
			flaky_step(
				'flaky', 4, '40001',
				retry => {
					max_attempts => 4,
					backoff => 'linear',
					initial_interval => '300ms'
				})
		]
	});
wf_define(
	$node, 'capped',
	{
		steps => [
			flaky_step(
				'flaky', 4, '53300',
				retry => {
					max_attempts => 4,
					backoff => 'exponential',
					initial_interval => '200ms',
					max_interval => '300ms'
				})
		]
	});
# The workflow's retry applies to "dflt"; "own" overrides it.
wf_define(
	$node, 'defaults',
	{
		retry => {
			max_attempts => 2,
			backoff => 'fixed',
			initial_interval => '100ms'
		},
		steps => [
			flaky_step('dflt', 2, '40001'),
			flaky_step(
				'own', 3, '40001',
				retry => {
					max_attempts => 3,
					backoff => 'fixed',
					initial_interval => '100ms'
				}),
		]
	});

my $expo = wf_start($node, 'expo');
my $linear = wf_start($node, 'linear');
my $capped = wf_start($node, 'capped');
my $defaults = wf_start($node, 'defaults');
is(wf_wait($node, $expo), 'completed', 'exponential: run completed');
is(wf_wait($node, $linear), 'completed', 'linear: run completed');
is(wf_wait($node, $capped), 'completed', 'capped: run completed');
is(wf_wait($node, $defaults), 'completed', 'defaults: run completed');

is( step_history($expo),
	'flaky:retrying:1 flaky:retrying:2 flaky:retrying:3 flaky:completed:4',
	'exponential: completed at attempt 4');
is( step_history($linear),
	'flaky:retrying:1 flaky:retrying:2 flaky:retrying:3 flaky:completed:4',
	'linear: completed at attempt 4');

# The gaps are computed from the recorded timestamps: each is the delay
# minus the few instants between choosing retry_at and recording the row.
my @expo = retry_gaps($expo);
note "exponential gaps: @expo";
ok($expo[0] < $expo[1] && $expo[1] < $expo[2],
	'exponential: the gaps grow');
ok($expo[0] <= 300 && $expo[1] <= 600 && $expo[2] <= 1200,
	'exponential: no gap exceeds 300ms * 2^(n-1)');
ok($expo[2] > 900, 'exponential: the third gap is beyond linear backoff');

my @linear = retry_gaps($linear);
note "linear gaps: @linear";
ok($linear[0] < $linear[1] && $linear[1] < $linear[2], 'linear: the gaps grow');
ok($linear[0] <= 300 && $linear[1] <= 600 && $linear[2] <= 900,
	'linear: no gap exceeds 300ms * n');
ok($linear[2] > 600, 'linear: the third gap is beyond 2 intervals');

my @capped = retry_gaps($capped);
note "capped gaps: @capped";
ok(@capped == 3 && (grep { $_ > 0 && $_ <= 300 } @capped) == 3,
	'max_interval caps exponential backoff');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(DISTINCT detail->>'sqlstate' || '/' || (detail->>'class'), ',') FROM wf.history WHERE run_id IN ($expo, $capped) AND status = 'retrying'"
	),
	'40P01/transient,53300/transient',
	'deadlocks and lack of resources are transient');

is( step_history($defaults),
	'dflt:retrying:1 dflt:completed:2 own:retrying:1 own:retrying:2 own:completed:3',
	'workflow-level retry is the default, step-level retry overrides it');

# -------------------------------------------------------------------------
# Attempts exhausted.
# -------------------------------------------------------------------------
wf_define(
	$node, 'exhausted',
	{
		steps => [
			flaky_step(
				'flaky', 99, '40001',
				retry => {
					max_attempts => 3,
					backoff => 'fixed',
					initial_interval => '100ms'
				}),
			{ name => 'never', sql => q{SELECT 1} },
		]
	});
my $exhausted = wf_start($node, 'exhausted');
is(wf_wait($node, $exhausted), 'failed', 'exhausted: run failed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(format('%s|%s|%s|%s|%s', step, status, attempt,
							 error->>'sqlstate', error->>'class'), E'\n' ORDER BY ord)
	  FROM wf.steps WHERE run_id = $exhausted}),
	"flaky|failed|3|40001|transient\nnever|cancelled|0||",
	'the step failed after max_attempts with class transient');
is( $node->safe_psql(
		'postgres', qq{
	SELECT error->>'step', error->>'class', error->>'sqlstate', error->>'attempt'
	  FROM wf.runs WHERE id = $exhausted}),
	'flaky|transient|40001|3',
	'the run error has class transient');
is( step_history($exhausted),
	'flaky:retrying:1 flaky:retrying:2 flaky:failed:3',
	'exhausted: two retries, then failed');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM attempts_log WHERE run_id = $exhausted"),
	'0',
	'exhausted: no attempt left an effect');

# -------------------------------------------------------------------------
# on_error skip once the retries are exhausted.
# -------------------------------------------------------------------------
wf_define(
	$node, 'skip_after_retries',
	{
		steps => [
			flaky_step(
				'flaky', 99, '40001',
				on_error => { strategy => 'skip' },
				retry => {
					max_attempts => 2,
					backoff => 'fixed',
					initial_interval => '100ms'
				}),
			{ name => 'after', sql => q{SELECT 'after'} },
		]
	});
my $skipped = wf_start($node, 'skip_after_retries');
is(wf_wait($node, $skipped), 'completed',
	'on_error skip: run completed after retries');
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(coalesce(step, '-') || ':' || status, ' ' ORDER BY id)
	  FROM wf.history WHERE run_id = $skipped}),
	'-:pending -:running flaky:retrying flaky:skipped after:completed -:completed',
	'on_error skip applies once retries are exhausted');
is( $node->safe_psql(
		'postgres', qq{
	SELECT status, attempt, error->>'sqlstate', error->>'class', output IS NULL
	  FROM wf.steps WHERE run_id = $skipped AND step = 'flaky'}),
	'skipped|2|40001|transient|t',
	'the skipped step keeps its attempts and last error');
is( $node->safe_psql(
		'postgres', qq{
	SELECT attempt, detail->>'sqlstate' FROM wf.history
	 WHERE run_id = $skipped AND step = 'flaky' AND status = 'skipped'}),
	'2|40001',
	'the history row of the skip carries the last attempt and its error');

# -------------------------------------------------------------------------
# A lock held by another session: NOWAIT fails with 55P03 until released.
# -------------------------------------------------------------------------
wf_define(
	$node, 'lock',
	{
		steps => [
			{
				name => 'grab',
				retry => {
					max_attempts => 1000,
					backoff => 'fixed',
					initial_interval => '50ms'
				},
				sql => q{SELECT id FROM locked FOR UPDATE NOWAIT}
			},
		]
	});
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe('SELECT * FROM locked FOR UPDATE');
my $lock = wf_start($node, 'lock');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) >= 2 FROM wf.history WHERE run_id = $lock AND status = 'retrying'"
	),
	'the step is retried while the lock is held');
is( $node->safe_psql(
		'postgres',
		"SELECT DISTINCT detail->>'sqlstate' || '/' || (detail->>'class') FROM wf.history WHERE run_id = $lock AND status = 'retrying'"
	),
	'55P03/transient',
	'lock_not_available is transient');
$holder->query_safe('COMMIT');
$holder->quit;
is(wf_wait($node, $lock), 'completed', 'the run completed once the lock was released');
is( $node->safe_psql(
		'postgres',
		"SELECT status, attempt > 2, output FROM wf.steps WHERE run_id = $lock"),
	'completed|t|1',
	'the step completed at a later attempt');

# -------------------------------------------------------------------------
# Permanent errors are not retried, whatever the retry policy.
# -------------------------------------------------------------------------
wf_define(
	$node, 'permanent',
	{
		retry => {
			max_attempts => 5,
			backoff => 'fixed',
			initial_interval => '100ms'
		},
		steps => [ flaky_step('flaky', 99, '23505') ]
	});
my $permanent = wf_start($node, 'permanent');
is(wf_wait($node, $permanent), 'failed', 'permanent: run failed');
is( $node->safe_psql(
		'postgres', qq{
	SELECT status, attempt, error->>'sqlstate', error->>'class'
	  FROM wf.steps WHERE run_id = $permanent}),
	'failed|1|23505|permanent',
	'permanent error: failed at the first attempt');
is(step_history($permanent), 'flaky:failed:1',
	'permanent error: no retrying row');

$node->stop;
done_testing();
