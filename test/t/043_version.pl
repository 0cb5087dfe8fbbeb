# Copyright (c) pg_workflow authors

# The executors refuse to work while the library and the installed SQL
# disagree on the version (a new library before ALTER EXTENSION UPDATE):
# one clear WARNING, no crash loop, runs kept pending; once they agree
# again, the runs go on.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $node = wf_node('version', workers => 2);
wf_define($node, 'one', { steps => [ { name => 'a', sql => 'SELECT 1' } ] });
is(wf_wait($node, wf_start($node, 'one')), 'completed', 'a run completes');

# Pretend the installed SQL is another version than the library.
$node->safe_psql('postgres',
	q{UPDATE pg_extension SET extversion = '0.0' WHERE extname = 'pg_workflow'});
my $pending = wf_start($node, 'one');
ok( $node->wait_for_log(
		qr/WARNING:  pg_workflow executors are idle: the library is version \S+, the extension installed in database "postgres" is version 0\.0/
	),
	'the executors say why they are idle');
my $pending2 = wf_start($node, 'one');
is( $node->safe_psql('postgres',
		"SELECT string_agg(status, ',') FROM wf.runs WHERE id IN ($pending, $pending2)"),
	'pending,pending',
	'runs stay pending meanwhile');
my $log = slurp_file($node->logfile);
my $warnings = () = $log =~ /pg_workflow executors are idle/g;
cmp_ok($warnings, '<=', 2, 'said once by each executor, not in a loop');
unlike($log, qr/FATAL|PANIC|terminated by signal/, 'no executor crashed');

$node->safe_psql('postgres',
	q{UPDATE pg_extension SET extversion = (SELECT default_version FROM pg_available_extensions WHERE name = 'pg_workflow') WHERE extname = 'pg_workflow'});
my $after = wf_start($node, 'one');
is(wf_wait_all($node, $pending, $pending2, $after), 'completed,completed,completed',
	'once the versions agree, every run completes');

done_testing();
