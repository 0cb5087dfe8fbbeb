# Copyright (c) pg_workflow authors

# The README's snippets run as written: every ```sql block of README.md,
# in order, in one psql session on a fresh server whose database has not
# got the extension yet (the first block creates it), stopping at the first
# error; and every ```json block that is a whole definition, or a single
# step, is valid for wf_validate.  So the README and the code cannot drift
# apart.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use Test::More;

my $readme = "$FindBin::RealBin/../../README.md";
open(my $fh, '<', $readme) or die "cannot open $readme: $!";
my (@sql, @json, $lang, $block);
while (my $line = <$fh>)
{
	if (!defined $lang && $line =~ /^```(\w*)\s*$/)
	{
		($lang, $block) = ($1, '');
		next;
	}
	if (defined $lang && $line =~ /^```\s*$/)
	{
		push @sql, $block if $lang eq 'sql';
		push @json, $block if $lang eq 'json';
		undef $lang;
		next;
	}
	$block .= $line if defined $lang;
}
close $fh;
cmp_ok(scalar(@sql), '>=', 4, 'the README has SQL snippets');

my $node = wf_node('readme', workers => 2, create => 0);

my $script = join("\n", @sql);
my ($stdout, $stderr);
my $rc = $node->psql(
	'postgres', $script,
	stdout => \$stdout,
	stderr => \$stderr,
	on_error_stop => 1,
	extra_params => [ '-v', 'VERBOSITY=terse' ]);
is($rc, 0, 'every SQL snippet of the README runs, in order');
is($stderr, '', 'with no error or warning') or diag($stderr);
like($stdout, qr/completed/, 'the worked example completes');

my $checked = 0;
for my $text (@json)
{
	my $doc = eval { JSON::PP->new->decode($text) };
	next unless ref $doc eq 'HASH';
	$doc = { steps => [$doc] } if !exists $doc->{steps} && exists $doc->{name};
	my $problems = $node->safe_psql('postgres',
		'SELECT string_agg(p, E\'\n\') FROM wf_validate(' . wf_sql_quote(JSON::PP->new->canonical->encode($doc)) . '::jsonb) p');
	is($problems, '', 'a definition of the README is valid: ' . substr($text, 0, 40));
	$checked++;
}
cmp_ok($checked, '>=', 2, 'the README\'s whole definitions were checked');

# Every workflow defined here renders with graphviz and parses as Mermaid.
cmp_ok(wf_check_graphs($node), '>=', 2, 'the graphs of the workflows defined here were checked');

done_testing();
