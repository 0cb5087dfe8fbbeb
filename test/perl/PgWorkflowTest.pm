
# Copyright (c) pg_workflow authors

=pod

=head1 NAME

PgWorkflowTest - small helpers shared by the TAP tests of pg_workflow

=head1 SYNOPSIS

  use FindBin;
  use lib "$FindBin::RealBin/../perl";
  use PgWorkflowTest;

  my $node = wf_node('main', workers => 4);
  wf_define($node, 'wf1', { steps => [ { name => 'a', sql => 'SELECT 1' } ] });
  my $run = wf_start($node, 'wf1', { x => 1 });
  is(wf_wait($node, $run), 'completed', 'run completed');

=head1 DESCRIPTION

Every test file starts its own node(s); these helpers only remove the
boilerplate: a node with pg_workflow preloaded and the extension created,
workflow definitions written as Perl data (encoded with JSON::PP), starting
and waiting for runs, and the executor processes as seen in
pg_stat_activity.  Synchronisation is always on a real condition: wf_wait()
or poll_query_until(), never a sleep.

=cut

package PgWorkflowTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(
  wf_node wf_json wf_define wf_start wf_start_many wf_wait wf_wait_all
  wf_sql_quote
  wf_executor_pids wf_wait_for_executors
  wf_check_graphs wf_create_flaky WF_FLAKY_SQL
);

my $json = JSON::PP->new->canonical(1);

=pod

=over

=item wf_node(name, workers => N, conf => 'extra postgresql.conf lines', create => 1)

A started node with shared_preload_libraries = 'pg_workflow',
pg_workflow.workers = N (default 2) and, unless create => 0, the extension
created in database postgres. With PGWF_VALGRIND set (the valgrind pass of
scripts/run-tests.sh), its server runs under valgrind.

=cut

sub wf_node
{
	my ($name, %params) = @_;
	my $workers = $params{workers} // 2;
	# The valgrind pass (scripts/run-tests.sh valgrind) runs the server of
	# another installation: the installed one, under memcheck.
	my $node =
	  $ENV{PGWF_VALGRIND}
	  ? PostgreSQL::Test::Cluster->new($name, install_path => $ENV{PGWF_VALGRIND})
	  : PostgreSQL::Test::Cluster->new($name);

	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'pg_workflow'\n"
		  . "pg_workflow.workers = $workers\n"
		  . ($params{conf} // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_workflow')
	  unless defined $params{create} && !$params{create};
	return $node;
}

=pod

=item wf_json(data)

The canonical JSON text of a Perl structure.

=item wf_sql_quote(text)

The text as an SQL string literal (standard_conforming_strings on).

=cut

sub wf_json
{
	my ($data) = @_;
	return ref $data ? $json->encode($data) : $data;
}

sub wf_sql_quote
{
	my ($text) = @_;
	$text =~ s/'/''/g;
	return "'$text'";
}

=pod

=item wf_define(node, name, definition)

Defines a workflow (definition: Perl data or JSON text) and returns the
version wf_define() returned.

=cut

sub wf_define
{
	my ($node, $name, $def) = @_;
	return $node->safe_psql('postgres',
		    'SELECT wf_define('
		  . wf_sql_quote($name) . ', '
		  . wf_sql_quote(wf_json($def))
		  . '::jsonb)');
}

=pod

=item wf_start(node, name, input, options)

Starts one run in its own transaction and returns its id.

=cut

sub wf_start
{
	my ($node, $name, $input, $options) = @_;
	return $node->safe_psql('postgres',
		    'SELECT wf_start('
		  . wf_sql_quote($name) . ', '
		  . wf_sql_quote(wf_json($input // {}))
		  . '::jsonb, '
		  . wf_sql_quote(wf_json($options // {}))
		  . '::jsonb)');
}

=pod

=item wf_start_many(node, name, n)

Starts n runs with inputs {"i": 1} .. {"i": n} in one transaction; returns
their ids in order.

=cut

sub wf_start_many
{
	my ($node, $name, $n) = @_;
	my $out = $node->safe_psql('postgres',
		    'SELECT wf_start('
		  . wf_sql_quote($name)
		  . ", jsonb_build_object('i', g)) FROM generate_series(1, $n) g ORDER BY g"
	);
	return split /\n/, $out;
}

=pod

=item wf_wait(node, run, timeout)

wf_wait(run, timeout) (default 60s): the run's status once it has ended,
or its status at the timeout.

=cut

sub wf_wait
{
	my ($node, $run, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	return $node->safe_psql('postgres',
		"SELECT wf_wait($run, '$timeout s')");
}

=pod

=item wf_wait_all(node, runs...)

Waits for every run in one session; returns their statuses joined by
commas, in the order given.

=cut

sub wf_wait_all
{
	my ($node, @runs) = @_;
	my $timeout = $PostgreSQL::Test::Utils::timeout_default;
	return '' unless @runs;
	return $node->safe_psql('postgres',
		"SELECT string_agg(wf_wait(r, '$timeout s'), ',' ORDER BY o) FROM unnest(ARRAY["
		  . join(',', @runs)
		  . "]::bigint[]) WITH ORDINALITY AS u(r, o)");
}

=pod

=item wf_executor_pids(node)

The pids of the executors in pg_stat_activity, sorted.

=item wf_wait_for_executors(node, n, [exclude_pids])

Waits until exactly n executors are in pg_stat_activity, none of them with
one of the pids in exclude_pids; returns true on success.

=cut

sub wf_executor_pids
{
	my ($node) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor' ORDER BY pid"
	);
	return grep { $_ ne '' } split /\n/, $out;
}

sub wf_wait_for_executors
{
	my ($node, $n, $exclude) = @_;
	my $not = '';
	$not = ' AND pid NOT IN (' . join(', ', @$exclude) . ')'
	  if $exclude && @$exclude;
	return $node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'$not",
		$n)
	  && $node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'",
		$n);
}

=pod

=item wf_create_flaky(node), WF_FLAKY_SQL

Creates function flaky(attempt int), which fails with a transient error
(40001, "could not serialize, try again") at attempt 1 and returns 7 after:
the statement WF_FLAKY_SQL calls it with the step's attempt.  Whatever the
order in which runs call it, each run's first attempt fails and its second
succeeds.

=cut

use constant WF_FLAKY_SQL => q{SELECT flaky(($1->'run'->>'attempt')::int)};

sub wf_create_flaky
{
	my ($node) = @_;
	$node->safe_psql(
		'postgres', q{
	CREATE FUNCTION flaky(attempt int) RETURNS int LANGUAGE plpgsql AS $$
	BEGIN
		IF attempt = 1 THEN
			RAISE EXCEPTION 'could not serialize, try again' USING ERRCODE = '40001';
		END IF;
		RETURN 7;
	END $$;});
	return;
}

=pod

=item wf_check_graphs(node)

Renders wf_graph(name, 'dot') of every workflow defined in the node with
graphviz (dot -Tsvg: no error, no warning) and parses every wf_graph(name)
with Mermaid's own parser (test/mermaid/check.mjs, the npm package in
jsdom); each part is skipped with a message where its tool is not
installed (Debian graphviz; npm ci in test/mermaid).

=cut

sub wf_check_graphs
{
	my ($node) = @_;
	my @names = grep { $_ ne '' } split /\n/,
	  $node->safe_psql('postgres', 'SELECT DISTINCT name FROM wf.workflows ORDER BY name');
	my $dir = tempdir(CLEANUP => 1);
	my (@mmd, $stdout, $stderr);
	foreach my $i (0 .. $#names)
	{
		my $q = wf_sql_quote($names[$i]);
		open my $fh, '>', "$dir/$i.dot" or die;
		print $fh $node->safe_psql('postgres', "SELECT wf_graph($q, 'dot')");
		close $fh;
		open $fh, '>', "$dir/$i.mmd" or die;
		print $fh $node->safe_psql('postgres', "SELECT wf_graph($q)");
		close $fh;
		push @mmd, "$dir/$i.mmd";
	}
  SKIP:
	{
		skip 'graphviz "dot" is not installed (Debian package graphviz)', scalar(@names)
		  unless system('dot -V >/dev/null 2>&1') == 0;
		foreach my $i (0 .. $#names)
		{
			my $rc = IPC::Run::run([ 'dot', '-Tsvg', "$dir/$i.dot" ],
				'>', \$stdout, '2>', \$stderr);
			ok($rc && $stderr eq '', "dot -Tsvg renders wf_graph('$names[$i]', 'dot')")
			  or diag($stderr);
		}
	}
	my $checker = dirname(__FILE__) . '/../mermaid/check.mjs';
  SKIP:
	{
		skip 'Mermaid is not installed (npm ci in test/mermaid)', 1
		  unless -d dirname(__FILE__) . '/../mermaid/node_modules/mermaid'
		  && system('node --version >/dev/null 2>&1') == 0;
		my $rc = IPC::Run::run([ 'node', $checker, @mmd ], '>', \$stdout, '2>', \$stderr);
		my $n = () = $stdout =~ /^ok .*: flowchart/mg;
		ok($rc && $n == @names,
			'mermaid parses wf_graph of every workflow (' . scalar(@names) . ')')
		  or diag($stdout . $stderr);
	}
	return scalar(@names);
}

=pod

=back

=cut

1;
