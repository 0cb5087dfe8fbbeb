# Copyright (c) pg_workflow authors

# The examples run as their headers say, one after the other on the same
# database, after the README's worked example tables exist: the ticket sync
# against the mock tracker (its port given as a psql variable), then the
# event-started approval story.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use HttpTestServer;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $examples = "$FindBin::RealBin/../../examples";
my $node = wf_node('examples', workers => 2);
my $srv = HttpTestServer->new(token => 'my-clickup-token');

# A table of the worked example's, with other columns: no clash.
$node->safe_psql('postgres',
	'CREATE TABLE tickets (id int PRIMARY KEY, subject text, priority text)');

sub run_example
{
	my ($file, @vars) = @_;
	my ($stdout, $stderr);
	my $rc = $node->psql(
		'postgres', undef,
		stdout => \$stdout,
		stderr => \$stderr,
		on_error_stop => 1,
		extra_params => [ (map { ('-v', $_) } @vars), '-f', "$examples/$file" ]);
	is($rc, 0, "$file runs") or diag($stderr);
	return $stdout;
}

my $out = run_example('ticket-sync.sql', 'api_port=' . $srv->port);
like($out, qr/completed/, 'ticket-sync: the run completes');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ticket_tasks'),
	'1', 'ticket-sync: the high-priority ticket has its task');

$out = run_example('ticket-approval.sql');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(status, ',' ORDER BY id) FROM wf.runs WHERE workflow = 'ticket-approval'}),
	'completed,completed',
	'ticket-approval: both tickets are settled');
is( $node->safe_psql('postgres',
		q{SELECT string_agg(ticket || ' ' || action, ',' ORDER BY ticket) FROM changes}),
	'7 implemented,8 requester notified: rejected',
	'ticket-approval: ticket 7 approved and implemented, ticket 8 rejected after the escalation');

# Every workflow defined here renders with graphviz and parses as Mermaid.
cmp_ok(wf_check_graphs($node), '>=', 2, 'the graphs of the workflows defined here were checked');

done_testing();
