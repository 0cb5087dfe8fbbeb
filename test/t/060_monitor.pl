
# Copyright (c) pg_workflow authors

# The execution monitor: wf_explain, wf.progress and wf_graph.
#  - a workflow with a retried step, a skipped step, a parallel, a map, an
#    if and a compensate action, run to completion and to failure: the
#    explain tree (durations masked) nests children under their container,
#    map items under the map, with status, attempt and clipped error;
#  - a run waiting for a signal: wf.progress counts its steps, names the
#    waiting step, has no estimate without history and one with it;
#  - wf_graph in DOT renders with graphviz ("dot -Tsvg"; skipped with a
#    message where it is not installed) for several workflows and runs;
#    the Mermaid text is checked structurally (every edge joins declared
#    nodes, subgraphs are closed, statuses become classes) and parsed by
#    Mermaid's own parser (the npm package, in jsdom; skipped with a
#    message where it is not installed), and names with quotes, dots,
#    dashes and slashes are escaped;
#  - row visibility: another role sees none of alice's runs in
#    wf.progress and gets wf_wait's error from wf_explain and wf_graph;
#    a member of wf_admin sees them.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('monitor', workers => 2);

# Runs SQL as a role; returns (stdout, stderr) with SQLSTATEs in errors.
sub as_role
{
	my ($role, $sql) = @_;
	my ($r, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET ROLE $role;\n$sql");
	return ($out, $err);
}

# wf_explain's lines with durations masked.
sub explain_run
{
	my ($run) = @_;
	my $out = $node->safe_psql('postgres', "SELECT * FROM wf_explain($run)");
	$out =~ s/(time|running)=[0-9.]+ (ms|s)/$1=T/g;
	$out =~ s/took [0-9.]+ (ms|s)/took T/g;
	return $out;
}

$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE carol LOGIN IN ROLE wf_admin;
});
wf_create_flaky($node);

my $def = {
	steps => [
		{ name => 'load', sql => q{SELECT 1} },
		{
			name => 'check',
			retry => { max_attempts => 1 },
			sql => q{SELECT 1 / CASE WHEN ($1->'input'->>'fail')::boolean THEN 0 ELSE 1 END}
		},
		{
			name => 'flaky.step',
			retry => { max_attempts => 3, backoff => 'fixed', initial_interval => '10ms' },
			sql => WF_FLAKY_SQL
		},
		{ name => 'opt-in', when => '$.input.n > 10', sql => q{SELECT 'big'} },
		{
			name => 'fan',
			parallel => [
				{ name => 'a', steps => [ { name => 'x.1', sql => q{SELECT 'x'} } ] },
				{ name => 'b', steps => [ { name => 'y-2', sql => q{SELECT 'y'} } ] },
			]
		},
		{
			name => 'each',
			map => {
				over => '$.input.items',
				concurrency => 2,
				step => { name => 'double', sql => q{SELECT ($1->>'item')::int * 2} }
			}
		},
		{
			name => 'route',
			if => '$.input.n > 0',
			then => [ { name => 'pos', sql => q{SELECT 'pos'} } ],
			else => [ { name => 'neg', sql => q{SELECT 'neg'} } ]
		},
		{
			name => 'book',
			sql => q{SELECT 'booked'},
			compensate => { sql => q{SELECT 'unbooked'} }
		},
	]
};
wf_define($node, 'mon', $def);

my $ok = wf_start($node, 'mon', { n => 1, items => [ 1, 2, 3 ] });
my $bad = wf_start($node, 'mon', { n => 1, items => [], fail => JSON::PP::true });
is(wf_wait($node, $ok), 'completed', 'the full run completed');
is(wf_wait($node, $bad), 'failed', 'the run with a failing step failed');

# -------------------------------------------------------------------------
# wf_explain
# -------------------------------------------------------------------------
is( explain_run($ok), qq{Run $ok: workflow "mon" version 1, completed, took T
->  load (sql) completed (attempt=1 time=T)
->  check (sql) completed (attempt=1 time=T)
->  flaky.step (sql) completed (attempt=2 time=T)
->  opt-in (sql) skipped
->  fan (parallel) completed (attempt=1 time=T children=2)
      ->  a/x.1 (sql) completed (attempt=1 time=T)
      ->  b/y-2 (sql) completed (attempt=1 time=T)
->  each (map) completed (attempt=1 time=T children=3)
      ->  [0] (sql) completed (attempt=1 time=T)
      ->  [1] (sql) completed (attempt=1 time=T)
      ->  [2] (sql) completed (attempt=1 time=T)
->  route (if) completed (attempt=1 time=T children=1)
      ->  pos (sql) completed (attempt=1 time=T)
->  book (sql) completed (attempt=1 time=T)},
	'explain: one line per step, children indented under their container');
is( explain_run($bad), qq{Run $bad: workflow "mon" version 1, failed, took T, error: division by zero
->  load (sql) completed (attempt=1 time=T)
->  check (sql) failed (attempt=1 time=T) error: division by zero
->  flaky.step (sql) cancelled
->  opt-in (sql) cancelled
->  fan (parallel) cancelled
->  each (map) cancelled
->  route (if) cancelled
->  book (sql) cancelled},
	'explain of a failed run: the error on the run and on its step');

# -------------------------------------------------------------------------
# wf.progress, and row visibility between roles
# -------------------------------------------------------------------------
my ($out, $err) = as_role(
	'alice', q{
	SELECT wf_define('slow', '{"steps": [
		{"name": "a", "sql": "SELECT 1"},
		{"name": "w", "wait_for": {"signal": "go"}},
		{"name": "c", "sql": "SELECT 3"}]}');});
is($err, '', 'alice defined a workflow waiting for a signal');

# Starts a run of "slow" as alice and waits until it waits for its signal.
sub start_slow
{
	my ($o, $e) = as_role('alice', q{SELECT wf_start('slow')});
	my ($run) = grep { /^\d+$/ } split /\n/, $o;
	$node->poll_query_until('postgres',
		"SELECT status FROM wf.steps WHERE run_id = $run AND step = 'w'", 'waiting')
	  or die "run $run never waited";
	return $run;
}

my $s1 = start_slow();
my $progress_sql = qq{SELECT steps_done, steps_total, percent,
	active_steps[1] ~ '^w waiting since [0-9:.]+\$', array_length(active_steps, 1),
	elapsed > '0', estimated_left IS NULL
  FROM wf.progress WHERE run_id = %s};
($out, $err) = as_role('alice', sprintf($progress_sql, $s1));
is($out, '1|3|33.3|t|1|t|t',
	'progress: 1 of 3 steps done, the waiting step named, no estimate without history');
($out, $err) = as_role('bob', "SELECT count(*) FROM wf.progress");
is($out, '0', "bob sees none of alice's runs in wf.progress");
($out, $err) = as_role('carol', "SELECT count(*) FROM wf.progress WHERE run_id = $s1");
is($out, '1', 'a member of wf_admin sees them');

my ($wait_out, $wait_err) = as_role('bob', "SELECT wf_wait($s1, '0s')");
like($wait_err, qr/42501: permission denied for run $s1/, "bob may not wait for alice's run");
foreach my $call ("SELECT * FROM wf_explain($s1)", "SELECT wf_graph($s1)",
	"SELECT wf_graph($s1, 'dot')")
{
	($out, $err) = as_role('bob', $call);
	like($err, qr/42501: permission denied for run $s1/, "$call: bob gets wf_wait's error");
	is($out, '', "$call: bob sees nothing");
}
($out, $err) = as_role('bob', "SELECT * FROM wf_explain(999999)");
like($err, qr/42704: run 999999 does not exist/, 'wf_explain of no run: undefined_object');
($out, $err) = as_role('carol', "SELECT count(*) FROM wf_explain($s1)");
is($out, '4', "carol explains alice's run: a header and three steps");

as_role('alice', "SELECT wf_signal($s1, 'go')");
is(wf_wait($node, $s1), 'completed', 'the signalled run completed');
is($node->safe_psql('postgres', "SELECT count(*) FROM wf.progress WHERE run_id = $s1"),
	'0', 'a finished run leaves wf.progress');

my $s2 = start_slow();
($out, $err) = as_role('alice', sprintf($progress_sql, $s2));
is($out, '1|3|33.3|t|1|t|f', 'with a completed run of the version, an estimate');
($out, $err) = as_role('alice',
	"SELECT estimated_left >= '0' FROM wf.progress WHERE run_id = $s2");
is($out, 't', 'the estimate is not negative');
like(explain_run($s2), qr/^Run $s2: workflow "slow" version 1, waiting, elapsed [0-9.]+ m?s
->  a \(sql\) completed \(attempt=1 time=T\)
->  w \(wait_for\) waiting \(attempt=1 running=T\)
->  c \(sql\) pending$/, 'explain of a waiting run');

# -------------------------------------------------------------------------
# wf_graph
# -------------------------------------------------------------------------
wf_define(
	$node, 'odd.names-v1',
	{
		steps => [
			{ name => 'say.hi', sql => q{SELECT 1} },
			{ name => 'a.b-c', when => q{$.input.x == "say \\"hi\\" #<&> \\\\"}, sql => q{SELECT 2} },
			{ name => 'x-1.2', sql => q{SELECT 3} },
		]
	});

# Checks Mermaid text: the header, closed subgraphs, edges between declared
# nodes; returns (edges, dashed edges).
sub check_mermaid
{
	my ($what, $text) = @_;
	my @lines = split /\n/, $text;
	is_deeply([ @lines[ 0 .. 3 ] ], [ '---', $lines[1], '---', 'flowchart TD' ],
		"$what: front matter and flowchart TD");
	like($lines[1], qr/^title: "[^"]*"$/, "$what: a quoted title");
	my (%nodes, @edges, $open, $bad);
	$open = 0;
	$bad = '';
	foreach my $l (@lines[ 4 .. $#lines ])
	{
		if ($l =~ /^\s*subgraph g_\w+ \["[^"]*"\]$/) { $open++; }
		elsif ($l =~ /^\s*end$/) { $open--; }
		elsif ($l =~ /^\s*classDef \w+ [\w:#,.\- ]+$/) { }
		elsif ($l =~ /^\s*(\w+)(\["[^"]*"\]|\{"[^"]*"\}|\[\["[^"]*"\]\]|\[\/"[^"]*"\/\]|\(\["[^"]*"\]\)|\(\("[^"]*"\)\))(:::\w+)?$/)
		{
			$nodes{$1} = 1;
		}
		elsif ($l =~ /^\s*(\w+) (-->|-\.->|-- "[^"]*" -->|-\. "[^"]*" \.->) (\w+)$/)
		{
			push @edges, [ $1, $2, $3 ];
		}
		else { $bad .= "$l\n"; }
		$bad .= "unbalanced end: $l\n" if $open < 0;
	}
	is($bad, '', "$what: every line is a node, an edge, a subgraph or a class");
	is($open, 0, "$what: every subgraph is closed");
	my @dangling = grep { !$nodes{ $_->[0] } || !$nodes{ $_->[2] } } @edges;
	is(scalar(@dangling), 0, "$what: every edge joins declared nodes");
	return (scalar(@edges), scalar(grep { $_->[1] =~ /^-\./ } @edges));
}

my $mermaid = $node->safe_psql('postgres', "SELECT wf_graph('mon')");
my ($nedges, $ndashed) = check_mermaid('mon', $mermaid);
is($nedges, 14, 'mon: one edge per dependency, container entry and compensation');
is($ndashed, 1, 'mon: the compensation is the one dashed edge');
like($mermaid, qr/^  subgraph g_n_fan_\w+ \["fan"\]$/m, 'mon: the parallel is a subgraph');
like($mermaid, qr/^    subgraph g_n_fan_a_\w+ \["a"\]$/m, 'mon: each branch a subgraph in it');
like($mermaid, qr/ -- "when \$\.input\.n #gt; 10" --> n_opt_in_/,
	'mon: the when condition labels the edge, ">" escaped');
like($mermaid, qr/n_route_\w+ -- "\$\.input\.n #gt; 0" --> n_route_then_pos_/,
	'mon: the if condition labels the edge to its then branch');
like($mermaid, qr/n_route_\w+ -- "else" --> n_route_else_neg_/,
	'mon: the else branch has its edge');
like($mermaid, qr/n_each_\w+ -- "each of \$\.input\.items, 2 at a time" --> n_each____\w+$/m,
	'mon: the map item node under the map, with what it maps');
like($mermaid, qr/n_book_\w+ -\. "undo" \.-> n_compensate_book_\w+$/m,
	'mon: a dashed edge to the compensate action');

my $run_mermaid = $node->safe_psql('postgres', "SELECT wf_graph($ok)");
check_mermaid("run $ok", $run_mermaid);
like($run_mermaid, qr/^  n_opt_in_\w+\["opt-in<br\/>sql skipped"\]:::skipped$/m,
	'run graph: a skipped step, coloured');
like($run_mermaid, qr/n_flaky_step_\w+\["flaky\.step<br\/>sql completed<br\/>[0-9.]+ m?s, attempt 2"\]:::completed/,
	'run graph: the retried step with its duration and attempt');
like($run_mermaid, qr/n_each____\w+\["\[\*\]<br\/>sql completed<br\/>3 items: 3 completed"\]:::completed/,
	'run graph: the map items summed up in one node');
like($run_mermaid, qr/n_route_else_neg_\w+\["neg<br\/>sql not reached"\]:::unreached/,
	'run graph: the branch not taken is not reached');
like($run_mermaid, qr/^  classDef completed /m, 'run graph: the status classes are defined');

my $odd = $node->safe_psql('postgres', "SELECT wf_graph('odd.names-v1')");
check_mermaid('odd names', $odd);
like($odd, qr/^title: "odd\.names-v1 v1"$/m, 'odd names: the title');
like($odd, qr/^  n_a_b_c_\w+\["a\.b-c<br\/>sql"\]$/m, 'odd names: dots and dashes in labels, not in ids');
like($odd, qr/ -- "when \$\.input\.x == #quot;say \\#quot;hi\\#quot; #35;#lt;#38;#gt; \\\\#quot;" --> /,
	'odd names: quotes, "#", "<", "&" and ">" as entities');
my $odd_dot = $node->safe_psql('postgres', "SELECT wf_graph('odd.names-v1', 'dot')");
like($odd_dot, qr/\[label="when \$\.input\.x == \\"say \\\\\\"hi\\\\\\" #<&> \\\\\\\\\\"\"\]/,
	'dot: quotes and backslashes escaped');
like($node->safe_psql('postgres', "SELECT wf_graph($ok, 'dot')"),
	qr/^    subgraph cluster_n_fan_\w+ \{$/m, 'dot: containers are clusters');

($out, $err) = as_role('bob', "SELECT wf_graph('mon', 'svg')");
like($err, qr/22023: unknown graph format "svg"/, 'an unknown format: invalid_parameter_value');
($out, $err) = as_role('bob', "SELECT wf_graph('nope')");
like($err, qr/42704: workflow "nope" does not exist/, 'an unknown workflow: undefined_object');

# Mermaid parsed by Mermaid itself: the npm package (test/mermaid, which
# scripts/run-tests.sh installs with npm ci) in a DOM made by jsdom, no
# browser.  A broken text must fail, so that the check can.
SKIP:
{
	my $checker = "$FindBin::RealBin/../mermaid/check.mjs";
	skip 'Mermaid is not installed (npm ci in test/mermaid)', 4
	  unless -d "$FindBin::RealBin/../mermaid/node_modules/mermaid"
	  && system('node --version >/dev/null 2>&1') == 0;
	my $dir = tempdir(CLEANUP => 1);
	my @files;
	foreach my $g ("'mon'", "'slow'", "'odd.names-v1'", $ok, $bad, $s2)
	{
		my $file = "$dir/g" . scalar(@files) . '.mmd';
		open my $fh, '>', $file or die;
		print $fh $node->safe_psql('postgres', "SELECT wf_graph($g)");
		close $fh;
		push @files, $file;
	}
	my ($stdout, $stderr);
	my $rc = IPC::Run::run([ 'node', $checker, @files ], '>', \$stdout, '2>', \$stderr);
	ok($rc, 'mermaid parses every graph') or diag($stdout . $stderr);	# names each file
	my @ok = ($stdout =~ /^ok .*: flowchart/mg);
	is(scalar(@ok), 6, 'mermaid: six flowcharts');
	open my $fh, '>', "$dir/broken.mmd" or die;
	print $fh "flowchart TD\n  a --> b[\n";
	close $fh;
	$rc = IPC::Run::run([ 'node', $checker, "$dir/broken.mmd" ], '>', \$stdout, '2>', \$stderr);
	ok(!$rc, 'mermaid: a broken text fails');
	like($stdout, qr/^FAIL .*Parse error/m, 'mermaid: with a parse error');
}

# DOT rendered by graphviz: workflows, finished runs and a waiting run.
SKIP:
{
	skip 'graphviz "dot" is not installed (Debian package graphviz)', 16
	  unless system('dot -V >/dev/null 2>&1') == 0;
	my $dir = tempdir(CLEANUP => 1);
	foreach my $g ("'mon'", "'slow'", "'odd.names-v1'", $ok, $bad, $s2)
	{
		my $dot = $node->safe_psql('postgres', "SELECT wf_graph($g, 'dot')");
		my $file = "$dir/g.dot";
		open my $fh, '>', $file or die;
		print $fh $dot;
		close $fh;
		my ($stdout, $stderr);
		my $rc = IPC::Run::run([ 'dot', '-Tsvg', $file ], '>', \$stdout, '2>', \$stderr);
		ok($rc, "dot -Tsvg renders wf_graph($g, 'dot')") or diag($stderr);
		is($stderr, '', "dot: no warnings for wf_graph($g, 'dot')");
		like($stdout, qr/<svg/, "dot: an SVG for wf_graph($g, 'dot')") if $g eq $ok;
		like($stdout, qr/fill="#fff59d"/, 'dot: the waiting step is yellow') if $g eq $s2;
	}
}

as_role('alice', "SELECT wf_signal($s2, 'go')");
is(wf_wait($node, $s2), 'completed', 'the second signalled run completed');

# -------------------------------------------------------------------------
# wf_metrics, against figures computed here from wf.runs and wf.steps
# -------------------------------------------------------------------------
my @more = (
	wf_start($node, 'mon', { n => 1, items => [ 4, 5 ] }),
	wf_start($node, 'mon', { n => 20, items => [6] }),
	wf_start($node, 'mon', { n => -1, items => [] }),
	wf_start($node, 'mon', { n => 1, items => [], fail => JSON::PP::true }));
is(wf_wait_all($node, @more), 'completed,completed,completed,failed', 'four more runs of mon');

# Mean and linear-interpolation percentile of a list of numbers.
sub mean_of
{
	my $t = 0;
	$t += $_ foreach @_;
	return $t / @_;
}

sub pct
{
	my ($p, @v) = @_;
	@v = sort { $a <=> $b } @v;
	my $x = $p * (@v - 1);
	my $lo = int($x);
	return $v[$lo] + ($x - $lo) * (($v[ $lo + 1 ] // $v[$lo]) - $v[$lo]);
}

# Seconds that agree to the microsecond.
sub near
{
	my ($x, $y) = @_;
	return defined $x && defined $y && $x ne '' && abs($x - $y) < 2e-6;
}

my $m = "SELECT %s FROM wf_metrics('%s') WHERE scope = '%s' AND step IS NOT DISTINCT FROM %s";
my $epochs = 'extract(epoch FROM mean), extract(epoch FROM p50), extract(epoch FROM p95), extract(epoch FROM p99)';
is( $node->safe_psql('postgres',
		sprintf($m, 'executions, completed, failed, cancelled, success_rate, error_rate',
			'mon', 'run', 'NULL')),
	'6|4|2|0|0.667|0.333',
	'metrics of the runs: executions, outcomes and rates');
my @run_s = split /\n/, $node->safe_psql('postgres',
	"SELECT extract(epoch FROM finished_at - started_at) FROM wf.runs WHERE workflow = 'mon'");
my ($mean, $p50, $p95, $p99) = split /\|/,
  $node->safe_psql('postgres', sprintf($m, $epochs, 'mon', 'run', 'NULL'));
ok(near($mean, mean_of(@run_s)), "run mean duration ($mean)");
ok(near($p50, pct(0.5, @run_s)), "run p50 ($p50)");
ok(near($p95, pct(0.95, @run_s)), "run p95 ($p95)");
ok(near($p99, pct(0.99, @run_s)), "run p99 ($p99)");

foreach my $step ('load', 'each[*]')
{
	my $like = $step;
	$like =~ s/\[\*\]/[%]/;
	my @s = split /\n/, $node->safe_psql('postgres',
		"SELECT extract(epoch FROM s.duration) FROM wf.steps s JOIN wf.runs r ON r.id = s.run_id
		  WHERE r.workflow = 'mon' AND s.step LIKE '$like' AND s.duration IS NOT NULL");
	($mean, $p50, $p95) = split /\|/,
	  $node->safe_psql('postgres', sprintf($m, $epochs, 'mon', 'step', "'$step'"));
	ok(near($mean, mean_of(@s)), "$step: mean duration ($mean)");
	ok(near($p50, pct(0.5, @s)), "$step: p50 ($p50)");
	ok(near($p95, pct(0.95, @s)), "$step: p95 ($p95)");
}

# Per step: what wf.steps says, counted here.
my $expected = $node->safe_psql(
	'postgres', q{
	SELECT string_agg(line, ',' ORDER BY n)
	  FROM (SELECT n, format('%s|%s|%s|%s|%s|%s', n, count(*),
							 count(*) FILTER (WHERE status = 'failed'),
							 count(*) FILTER (WHERE status = 'skipped'),
							 round(count(*) FILTER (WHERE status = 'skipped')::numeric / count(*), 3),
							 round(avg(attempt) FILTER (WHERE attempt > 0), 2)) AS line
			  FROM (SELECT regexp_replace(s.step, '\[\d+\]', '[*]', 'g') AS n, s.status, s.attempt
					  FROM wf.steps s JOIN wf.runs r ON r.id = s.run_id
					 WHERE r.workflow = 'mon' AND s.status <> 'cancelled') x
			 GROUP BY n) y});
my $got = $node->safe_psql(
	'postgres', q{
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s', step, executions, failed, skipped,
							 round(skipped::numeric / executions, 3), attempts),
					  ',' ORDER BY step)
	  FROM wf_metrics('mon') WHERE scope = 'step'});
is($got, $expected, 'metrics per step: executions, failures, skips, attempts');
is( $node->safe_psql('postgres',
		sprintf($m, 'executions, attempts, error_rate', 'mon', 'step', "'flaky.step'")),
	'4|2.00|0.000', 'the retried step: two attempts per execution');
is( $node->safe_psql('postgres',
		sprintf($m, 'executions, skipped, success_rate, skip_rate', 'mon', 'step', "'opt-in'")),
	'4|3|0.250|0.750', 'the step run only for n > 10: skipped 3 times out of 4');
is( $node->safe_psql('postgres',
		sprintf($m, 'executions, failed, error_rate', 'mon', 'step', "'check'")),
	'6|2|0.333', 'the check failed twice out of six');

# The bottleneck: the step that takes the time.
wf_define(
	$node, 'bottle',
	{
		steps => [
			{ name => 'quick', sql => q{SELECT 1} },
			{ name => 'slow', sql => q{SELECT 1 FROM pg_sleep(0.5)} },
			{ name => 'quick2', sql => q{SELECT 2} },
		]
	});
is(wf_wait_all($node, map { wf_start($node, 'bottle') } 1 .. 3),
	'completed,completed,completed', 'three runs of bottle');
is( $node->safe_psql('postgres',
		"SELECT string_agg(step, ',') FROM wf_metrics('bottle') WHERE bottleneck"),
	'slow', 'the sleeping step is the bottleneck, and only it');
is( $node->safe_psql('postgres',
		"SELECT step FROM wf_metrics('bottle') WHERE scope = 'step' ORDER BY share DESC LIMIT 1"),
	'slow', 'its share of the run time is the largest');

# The critical path: of two branches that wait side by side, the longer is
# on it, the shorter not; the step after them is, and its share with the
# longer branch's and the step before's is nearly the whole run.
wf_define(
	$node, 'fan',
	{
		steps => [
			{ name => 'first', sql => q{SELECT 1} },
			{
				name => 'fan',
				parallel => [
					{ name => 'l', steps => [ { name => 'long', sleep => '300 milliseconds' } ] },
					{ name => 's', steps => [ { name => 'short', sleep => '100 milliseconds' } ] }
				]
			},
			{ name => 'after', sql => q{SELECT 2} }
		]
	});
is(wf_wait_all($node, map { wf_start($node, 'fan') } 1 .. 3),
	'completed,completed,completed', 'three runs of fan');
is( $node->safe_psql('postgres',
		"SELECT string_agg(step, ',') FROM wf_metrics('fan') WHERE bottleneck"),
	'fan/l/long', 'the longer branch is the bottleneck');
is( $node->safe_psql('postgres',
		"SELECT share FROM wf_metrics('fan') WHERE step = 'fan/s/short'"),
	'0.000', 'the shorter branch is off the critical path');
cmp_ok(
	$node->safe_psql('postgres',
		"SELECT share FROM wf_metrics('fan') WHERE step = 'fan/l/long'"),
	'>', 0.5, 'the longer one takes most of it');
is( $node->safe_psql('postgres',
		"SELECT share IS NULL FROM wf_metrics('mon') WHERE step = 'each[*]'"),
	't', "a map's items are not followed: no share");

# Visibility: alice's runs of "slow" are hers and wf_admin's.
foreach my $r ([ 'alice', '2' ], [ 'bob', '0' ], [ 'carol', '2' ])
{
	($out, $err) = as_role($r->[0],
		"SELECT executions FROM wf_metrics('slow') WHERE scope = 'run'");
	is($out, $r->[1], "wf_metrics('slow') as $r->[0]: $r->[1] runs");
}
($out, $err) = as_role('bob', "SELECT count(*) FROM wf_metrics('slow') WHERE scope = 'step'");
is($out, '0', 'bob sees no step figures of them either');
($out, $err) = as_role('bob', "SELECT * FROM wf_metrics('nope')");
like($err, qr/42704: workflow "nope" does not exist/, 'metrics of no workflow: undefined_object');
($out, $err) = as_role('bob', "SELECT * FROM wf_metrics('mon', '-1 day')");
like($err, qr/22023: since must be an interval from 0 to 1000 years/, 'a negative since: invalid_parameter_value');
is( $node->safe_psql('postgres',
		"SELECT executions FROM wf_metrics('mon', '0 seconds') WHERE scope = 'run'"),
	'0', 'no runs ended in no time');

# wf.metrics: the last hour's figures of every workflow, one row per measure.
is( $node->safe_psql('postgres', q{
	SELECT string_agg(measure || '=' || round(value::numeric, 6), ' ' ORDER BY measure)
	  FROM wf.metrics WHERE workflow = 'mon' AND measure NOT LIKE 'run_duration%'}),
	'run_error_ratio=0.333000 run_success_ratio=0.667000 runs_cancelled_total=0.000000 runs_completed_total=4.000000 runs_ended_total=6.000000 runs_failed_total=2.000000 runs_pending=0.000000 runs_running=0.000000 runs_waiting=0.000000',
	'wf.metrics: the counts and ratios of wf_metrics, and none unfinished');
is( $node->safe_psql('postgres', q{
	SELECT bool_and(abs(m.value - extract(epoch FROM
			CASE m.measure WHEN 'run_duration_mean_seconds' THEN x.mean
						   WHEN 'run_duration_p50_seconds' THEN x.p50
						   WHEN 'run_duration_p95_seconds' THEN x.p95
						   ELSE x.p99 END)) < 1e-6) AND count(*) = 4
	  FROM wf.metrics m, wf_metrics('mon', '1 hour') x
	 WHERE m.workflow = 'mon' AND m.measure LIKE 'run_duration%' AND x.scope = 'run'}),
	't', 'and its run durations, in seconds');
foreach my $r ([ 'alice', '2' ], [ 'bob', '' ], [ 'carol', '2' ])
{
	($out, $err) = as_role($r->[0],
		"SELECT value FROM wf.metrics WHERE workflow = 'slow' AND measure = 'runs_ended_total'");
	is($out, $r->[1] eq '' ? '0' : $r->[1], "wf.metrics of 'slow' as $r->[0]");
}

# -------------------------------------------------------------------------
# SLAs: one alert per run and step still unfinished past its SLA, resolved
# when it ends; wf_ack_alert
# -------------------------------------------------------------------------
($out, $err) = as_role(
	'alice', q{
	SELECT wf_define('late', '{"sla": "300ms", "steps": [
		{"name": "a", "sql": "SELECT 1"},
		{"name": "w", "sla": "200ms", "wait_for": {"signal": "go"}},
		{"name": "c", "sql": "SELECT 3"}]}');
	SELECT wf_define('prompt', '{"sla": "1 hour", "steps": [
		{"name": "a", "sla": "1 hour", "sql": "SELECT 1"}]}');});
is($err, '', 'alice defined workflows with SLAs');
($out, $err) = as_role('alice', q{SELECT wf_start('late')});
my ($late) = grep { /^\d+$/ } split /\n/, $out;
($out, $err) = as_role('alice', q{SELECT wf_start('prompt')});
my ($prompt) = grep { /^\d+$/ } split /\n/, $out;
is(wf_wait($node, $prompt), 'completed', 'the prompt run completed');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) FROM wf.alerts WHERE run_id = $late AND kind = 'sla'", '2'),
	'the late run and its waiting step each raised an SLA alert');
is( $node->safe_psql('postgres',
		"SELECT coalesce(step, '-') || '|' || message || '|' || (resolved_at IS NULL)
		   FROM wf.alerts WHERE run_id = $late AND kind = 'sla' ORDER BY step NULLS FIRST"),
	qq{-|run $late of workflow "late" has not ended within its SLA of 300ms|true
w|step "w" of run $late of workflow "late" has not ended within its SLA of 200ms|true},
	'the alerts say what is late and by which SLA, and are open');

# Acknowledgements: the owner and wf_admin, not another role.
my ($run_alert, $step_alert) = split /\n/, $node->safe_psql('postgres',
	"SELECT id FROM wf.alerts WHERE run_id = $late AND kind = 'sla' ORDER BY step NULLS FIRST");
($out, $err) = as_role('bob', "SELECT wf_ack_alert($run_alert)");
like($err, qr/42501: permission denied for alert $run_alert/, 'bob may not acknowledge it');
($out, $err) = as_role('alice', "SELECT wf_ack_alert($run_alert)");
is($out, 't', 'alice acknowledges the alert of her run');
($out, $err) = as_role('alice', "SELECT wf_ack_alert($run_alert)");
is($out, 'f', 'a second acknowledgement changes nothing');
($out, $err) = as_role('carol', "SELECT wf_ack_alert($step_alert)");
is($out, 't', 'a member of wf_admin acknowledges the other');
($out, $err) = as_role('alice', "SELECT wf_ack_alert(999999)");
like($err, qr/42704: alert 999999 does not exist/, 'no such alert: undefined_object');
($out, $err) = as_role('alice',
	"SELECT coalesce(step, '-') || '|' || acknowledged_by || '|' || (acknowledged_at IS NOT NULL)
	   FROM wf.alerts WHERE run_id = $late AND kind = 'sla' ORDER BY step NULLS FIRST");
is($out, "-|alice|true\nw|carol|true", 'wf.alerts shows who acknowledged what');

as_role('alice', "SELECT wf_signal($late, 'go')");
is(wf_wait($node, $late), 'completed', 'the late run completed');
is( $node->safe_psql('postgres',
		"SELECT count(*), count(resolved_at) FROM wf.alerts WHERE run_id = $late AND kind = 'sla'"),
	'2|2', 'still one alert each, both resolved now that they ended');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM wf.alerts WHERE run_id = $prompt"),
	'0', 'a run that ended within its SLAs raised nothing');
is( $node->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM wf.run WHERE sla_at IS NOT NULL)
			  + (SELECT count(*) FROM wf.step WHERE sla_at IS NOT NULL)"),
	'0', 'nothing is left to watch');

($out, $err) = as_role('bob', q{SELECT wf_define('bad_sla', '{"sla": "soon", "steps": [
		{"name": "a", "sla": "-1 s", "sql": "SELECT 1"}]}')});
like($err, qr/22023: "sla" is not a valid interval: "soon"/, 'a workflow SLA must be an interval');
like($err, qr/"steps\[0\]\.sla" must be positive|step "a": "sla" must be positive|sla" must be positive/,
	'a step SLA must be positive');

done_testing();
