
# Copyright (c) pg_workflow authors

# Secrets belong to roles (issue 8, finding 5).  Roles alice and bob have
# LOGIN and CREATE on schema public, nothing more; carol is a member of
# wf_admin.  Two mock servers: 127.0.0.1 (where bob's "attacker" endpoints
# are, /echo64 answering what it received base64-encoded so that redaction
# cannot recognise it) and 127.0.0.2 (the API alice's bound secret is for).
#  - bob's http step using alice's secret in the url, a header or the body
#    fails with 42501 and nothing reaches the server; granted (to a role bob
#    is a member of) it works; revoked while bob's run waits before the
#    http step, the step fails;
#  - a secret bound to hosts '127.0.0.2' is not sent to 127.0.0.1, even by
#    its owner, nor by a 307 redirect that keeps the body; a 302 redirect to
#    another host drops Authorization, Proxy-Authorization, Cookie and every
#    header that carried a secret;
#  - wf_define and wf_validate reject {{secret.NAME}} outside an http
#    step's url, headers and body (child input, human title, assignee and
#    escalation, wait key, sleep until, map over, agent payload, when),
#    nested too, naming the path; definitions stored before that check (put
#    in place by the superuser here) fail at run time without rendering;
#  - wf_set_secret, wf_grant_secret, wf_revoke_secret on another role's
#    secret: 42501 and nothing changes; wf_admin may; invalid hosts: 22023;
#  - wf.secrets: no value, each role its own and granted secrets, wf_admin
#    all;
#  - no value in wf.runs, wf.steps, wf.history, wf.alerts, wf.human_tasks
#    or the server log.
# Synchronisation is on wf_wait() and on polled conditions only.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use JSON::PP;
use MIME::Base64;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use HttpTestServer;
use Test::More;

my $json = JSON::PP->new->utf8->canonical(1);

my $srv = HttpTestServer->new(name => 'local');
my $api = HttpTestServer->new(name => 'api', host => '127.0.0.2');
my $node = wf_node('secrets', workers => 2);

my $RULE = qr/secrets are allowed only in an http step's url, headers and body/;

# -------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------

# Runs sql as role; returns (exit code, stdout, stderr), errors verbose.
sub psql_as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\n$sql", extra_params => [ '-U', $role ]);
	return ($ret, $out, $err);
}

sub safe_as
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $role ]);
}

sub define_as
{
	my ($role, $name, $def) = @_;
	return psql_as($role,
		'SELECT wf_define(' . wf_sql_quote($name) . ', '
		  . wf_sql_quote(wf_json($def)) . '::jsonb)');
}

sub start_as
{
	my ($role, $name, $input) = @_;
	return safe_as($role,
		'SELECT wf_start(' . wf_sql_quote($name) . ', '
		  . wf_sql_quote(wf_json($input // {})) . '::jsonb)');
}

# Defines (as role), starts (as role) and waits for a run; returns its id.
sub run_as
{
	my ($role, $name, $def, $input) = @_;
	my ($ret, $out, $err) = define_as($role, $name, $def);
	diag "wf_define $name: $err" if $ret != 0;
	my $run = start_as($role, $name, $input);
	note "run $run of $name: " . wf_wait($node, $run, 60);
	return $run;
}

# The output of a query, or '' when it fails (on a server without a column).
sub query
{
	my ($sql, $role) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql,
		extra_params => [ defined $role ? ('-U', $role) : () ]);
	diag $err if $ret != 0;
	return $out;
}

sub run_status
{
	my ($run) = @_;
	return $node->safe_psql('postgres', "SELECT status FROM wf.runs WHERE id = $run");
}

sub step_of
{
	my ($run, $step) = @_;
	my $row = $node->safe_psql('postgres',
		"SELECT row_to_json(s) FROM wf.steps s WHERE run_id = $run AND step = "
		  . wf_sql_quote($step));
	return {} if $row eq '';
	my $s = $json->decode($row);
	note "run $run step $step: $s->{status} " . $json->encode($s->{error}) if $s->{error};
	return $s;
}

sub random_text
{
	my ($n) = @_;
	return join('', map { ('A' .. 'Z', 'a' .. 'z', 0 .. 9)[ rand 62 ] } 1 .. $n);
}

sub url_escape
{
	my ($s) = @_;
	$s =~ s/([^A-Za-z0-9._~-])/sprintf('%%%02X', ord($1))/ge;
	return $s;
}

# The requests a server logged that contain text anywhere.
sub requests_containing
{
	my ($server, $text) = @_;
	return grep { index($json->encode($_), $text) >= 0 } $server->requests;
}

# One http step named "call", after optional steps before it.
sub http_wf
{
	my ($http, @before) = @_;
	return {
		retry => { max_attempts => 1 },
		steps => [ @before, { name => 'call', http => $http } ]
	};
}

# Sets a secret as role (log_statement is off for the test roles).  A server
# from before issue 8 lets only wf_admin set secrets, with two arguments:
# then the superuser sets it, so that the attacks below still run there.
sub set_secret_as
{
	my ($role, $name, $value, $hosts) = @_;
	my ($ret, $out, $err) = psql_as($role,
		'SELECT wf_set_secret(' . wf_sql_quote($name) . ', '
		  . wf_sql_quote($value)
		  . (defined $hosts ? ', ' . wf_sql_quote($hosts) : '') . ')');
	ok($ret == 0, "$role sets secret $name") or diag $err;
	$node->safe_psql('postgres',
		"SET log_statement = 'none'; SELECT wf_set_secret("
		  . wf_sql_quote($name) . ', ' . wf_sql_quote($value) . ')')
	  if $ret != 0;
	return;
}

# -------------------------------------------------------------------------
# Roles and secrets
# -------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE carol LOGIN IN ROLE wf_admin;
	CREATE ROLE team NOLOGIN;
	GRANT CREATE ON SCHEMA public TO alice, bob, carol;
	-- secrets in the statements that set them never reach the log
	ALTER ROLE alice SET log_statement = 'none';
	ALTER ROLE bob SET log_statement = 'none';
	ALTER ROLE carol SET log_statement = 'none';
});
is( $node->safe_psql('postgres',
		"SELECT string_agg(rolname || ':' || rolsuper || ':' || pg_has_role(oid, 'wf_admin', 'MEMBER'), ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('alice', 'bob')"
	),
	'alice:false:false,bob:false:false',
	'alice and bob are neither superusers nor members of wf_admin');

my ($ret, $out, $err);
my @got;
my $V = 'alice-' . random_text(24);     # alice_token, hosts NULL
my $W = 'bound-' . random_text(24);     # bound, hosts 127.0.0.2
set_secret_as('alice', 'alice_token', $V);
set_secret_as('alice', 'bound', $W, '127.0.0.2');

# -------------------------------------------------------------------------
# Bob uses alice's secret: refused, nothing sent
# -------------------------------------------------------------------------
my %where = (
	url => { method => 'POST', url => $srv->url('/echo64?k={{secret.alice_token}}') },
	header => {
		method => 'POST',
		url => $srv->url('/echo64'),
		headers => { 'X-Api-Key' => 'Key {{secret.alice_token}}' }
	},
	body => {
		method => 'POST',
		url => $srv->url('/echo64'),
		body => { stolen => '{{secret.alice_token}}' }
	});
foreach my $place (qw(url header body))
{
	$srv->reset;
	my $run = run_as('bob', "bob-steals-$place", http_wf($where{$place}));
	my $s = step_of($run, 'call');
	is(run_status($run), 'failed', "bob's secret in the $place: the run fails");
	is($s->{error}{sqlstate}, '42501', "bob's secret in the $place: 42501");
	like($s->{error}{message} // '', qr/secret "alice_token"/,
		"bob's secret in the $place: the message names the secret");
	is(scalar(requests_containing($srv, $V)), 0,
		"bob's secret in the $place: the server never received the value");
	my $b64 = $s->{output}{body}{b64};
	ok(!defined $b64 || index(decode_base64($b64), $V) < 0,
		"bob's secret in the $place: the output does not carry it base64-encoded");
}

# A template that a value brings in is text, never rendered again.
$srv->reset;
my $second = run_as('bob', 'bob-second-order',
	http_wf({ url => $srv->url('/echo?v={{$.input.v}}'), headers => { 'X-V' => '{{$.input.v}}' } }),
	{ v => '{{secret.alice_token}}' });
@got = $srv->requests_with_key("wf-$second-call");
is($got[0]{headers}{'x-v'}, '{{secret.alice_token}}',
	'a secret template in the input is sent as the text it is');
is(scalar(requests_containing($srv, $V)), 0, 'a secret template in the input: no value sent');

# -------------------------------------------------------------------------
# Granted (through role team, of which bob is a member): works
# -------------------------------------------------------------------------
$node->safe_psql('postgres', 'GRANT team TO bob');
($ret, $out, $err) = psql_as('alice', "SELECT wf_grant_secret('alice_token', 'team')");
is($ret, 0, 'alice grants alice_token to team') or diag $err;
$srv->reset;
my $granted = run_as('bob', 'bob-granted',
	http_wf({ url => $srv->url('/echo'), headers => { Authorization => 'Bearer {{secret.alice_token}}' } }));
is(run_status($granted), 'completed', 'granted to a role bob has the privileges of: completed');
@got = $srv->requests_with_key("wf-$granted-call");
is($got[0]{headers}{authorization}, "Bearer $V", 'granted: the server received the secret');
is(step_of($granted, 'call')->{output}{body}{headers}{authorization},
	'Bearer [redacted]', 'granted: redacted in the output');

# -------------------------------------------------------------------------
# Revoked while bob's run waits before its http step
# -------------------------------------------------------------------------
define_as('bob', 'bob-gated',
	http_wf({ url => $srv->url('/echo'), headers => { 'X-Api-Key' => '{{secret.alice_token}}' } },
		{ name => 'gate', wait_for => { signal => 'go' } }));
my $gated = start_as('bob', 'bob-gated');
ok( $node->poll_query_until('postgres',
		"SELECT status FROM wf.steps WHERE run_id = $gated AND step = 'gate'", 'waiting'),
	'revoke: bob\'s run waits at its gate');
($ret, $out, $err) = psql_as('alice', "SELECT wf_revoke_secret('alice_token', 'team')");
is($ret, 0, 'alice revokes alice_token from team') or diag $err;
$srv->reset;
safe_as('bob', "SELECT wf_signal($gated, 'go')");
wf_wait($node, $gated, 60);
is(run_status($gated), 'failed', 'revoke: the run that started before it fails');
is(step_of($gated, 'call')->{error}{sqlstate}, '42501', 'revoke: the http step fails with 42501');
is(scalar(requests_containing($srv, $V)), 0, 'revoke: the server never received the value');

# -------------------------------------------------------------------------
# Hosts: bound to 127.0.0.2, whoever uses it, redirects included
# -------------------------------------------------------------------------
$srv->reset;
$api->reset;
my $wrong_host = run_as('alice', 'alice-wrong-host',
	http_wf({ url => $srv->url('/echo'), headers => { Authorization => 'Bearer {{secret.bound}}' } }));
is(run_status($wrong_host), 'failed', 'hosts: its owner cannot send it to 127.0.0.1');
is(step_of($wrong_host, 'call')->{error}{sqlstate}, '42501', 'hosts: 42501');
like(step_of($wrong_host, 'call')->{error}{message} // '', qr/secret "bound".*127\.0\.0\.1/,
	'hosts: the message names the secret and the host');
is(scalar(requests_containing($srv, $W)), 0, 'hosts: 127.0.0.1 never received it');

my $right_host = run_as('alice', 'alice-right-host',
	http_wf({ url => $api->url('/echo'), headers => { Authorization => 'Bearer {{secret.bound}}' } }));
is(run_status($right_host), 'completed', 'hosts: sent to 127.0.0.2');
@got = $api->requests_with_key("wf-$right_host-call");
is($got[0]{headers}{authorization}, "Bearer $W", 'hosts: 127.0.0.2 received it');

# A 307 keeps the method and the body: to another host, the step fails.
$srv->reset;
my $to_local = url_escape($srv->url('/echo'));
my $r307 = run_as('alice', 'alice-307',
	http_wf({
		method => 'POST',
		url => $api->url("/redirect-to?status=307&url=$to_local"),
		body => { token => '{{secret.bound}}' } }));
is(run_status($r307), 'failed', '307 to another host with a secret in the body: fails');
like(step_of($r307, 'call')->{error}{message} // '', qr/secret "bound"/,
	'307: the message names the secret');
is(step_of($r307, 'call')->{error}{class}, 'permanent', '307: a permanent error');
is(scalar($srv->requests), 0, '307: nothing was sent to 127.0.0.1');

# The same redirect within the secret's host: followed, body and all.
$api->reset;
my $r307_same = run_as('alice', 'alice-307-same',
	http_wf({
		method => 'POST',
		url => $api->url('/redirect-to?status=307&url=' . url_escape($api->url('/echo'))),
		body => { token => '{{secret.bound}}' } }));
is(run_status($r307_same), 'completed', '307 within the host: followed');
@got = grep { $_->{path} eq '/echo' } $api->requests;
is($got[0]{method}, 'POST', '307 within the host: still a POST');
like($got[0]{body} // '', qr/\Q$W\E/, '307 within the host: the body went along');

# A 302 to another host: credentials and every secret-bearing header go.
$srv->reset;
my $r302 = run_as(
	'alice', 'alice-302',
	http_wf({
		url => $api->url("/redirect-to?status=302&url=$to_local"),
		headers => {
			Authorization => 'Bearer {{secret.bound}}',
			'Proxy-Authorization' => 'Basic cHJveHk6cHc=',
			Cookie => 'session=s3ss10n',
			'X-Api-Key' => 'k-{{secret.alice_token}}',
			'X-Plain' => 'hello'
		} }));
is(run_status($r302), 'completed', '302 to another host: followed');
@got = $srv->requests_with_key("wf-$r302-call");
is(scalar @got, 1, '302: 127.0.0.1 got the second hop');
my %h = %{ $got[0]{headers} // {} };
ok(!exists $h{authorization}, '302: Authorization dropped');
ok(!exists $h{'proxy-authorization'}, '302: Proxy-Authorization dropped');
ok(!exists $h{cookie}, '302: Cookie dropped');
ok(!exists $h{'x-api-key'}, '302: a header that carried a secret dropped');
is($h{'x-plain'}, 'hello', '302: other headers kept');
is(scalar(requests_containing($srv, $W)) + scalar(requests_containing($srv, $V)), 0,
	'302: no secret reached 127.0.0.1');

# Invalid hosts.
($ret, $out, $err) = psql_as('alice', "SELECT wf_set_secret('badhosts', 'v', 'https://api.example.com/v2')");
like($err, qr/22023/, 'hosts: a URL is not a host list (22023)');
like($err, qr/HINT:/, 'hosts: with a hint');
($ret, $out, $err) = psql_as('alice', "SELECT wf_set_secret('badhosts', 'v', '')");
like($err, qr/22023/, 'hosts: an empty list is refused (22023)');
is($node->safe_psql('postgres', "SELECT count(*) FROM wf.secret WHERE name = 'badhosts'"),
	'0', 'hosts: nothing stored');

# -------------------------------------------------------------------------
# Where secrets may appear
# -------------------------------------------------------------------------
my $T = '{{secret.alice_token}}';
my @placements = (
	[ 'child input', 'input.t', { name => 's', workflow => 'child', input => { t => $T } } ],
	[ 'human title', 'human.title', { name => 's', human => { assignee => 'x', title => "Pay $T" } } ],
	[ 'human assignee', 'human.assignee', { name => 's', human => { assignee => $T } } ],
	[ 'human escalation', 'human.escalation.escalate_to',
		{ name => 's', human => { assignee => 'x', timeout => '1h',
			escalation => { timeout => '1h', escalate_to => $T } } } ],
	[ 'wait key', 'wait_for.key', { name => 's', wait_for => { event => 'e', key => $T } } ],
	[ 'sleep until', 'sleep.until', { name => 's', sleep => { until => $T } } ],
	[ 'until', 'until', { name => 's', until => $T } ],
	[ 'map over', 'map.over',
		{ name => 's', map => { over => $T, step => { name => 'i', sql => 'SELECT 1' } } } ],
	[ 'when', 'when', { name => 's', when => $T, sql => 'SELECT 1' } ],
	[ 'http timeout', 'http.timeout', { name => 's', http => { url => 'http://h/', timeout => $T } } ],
	[ 'inside if', 'wait_for.key',
		{ name => 's', if => '$.input.x == 1',
			then => [ { name => 'n', wait_for => { event => 'e', key => $T } } ] } ],
	[ 'inside parallel', 'input.t',
		{ name => 's', parallel => [ { name => 'b', steps => [ { name => 'n', workflow => 'child', input => { t => $T } } ] } ] } ],
	[ 'inside map', 'human.title',
		{ name => 's', map => { over => '$.input.a', step => { name => 'n', human => { assignee => 'x', title => $T } } } } ],
	[ 'inside compensate', 'compensate.input.t',
		{ name => 's', sql => 'SELECT 1', compensate => { workflow => 'child', input => { t => $T } } } ]);
foreach my $p (@placements)
{
	my ($what, $path, $step) = @$p;
	($ret, $out, $err) = define_as('alice', 'misplaced-' . ($what =~ s/\W+/-/gr),
		{ steps => [$step] });
	like($err, qr/22023/, "wf_define: secret in $what refused (22023)");
	like($err, qr/"\Q$path\E".*$RULE/, "wf_define: secret in $what: names \"$path\"");
}
is($node->safe_psql('postgres', "SELECT count(*) FROM wf.workflows WHERE name LIKE 'misplaced-%'"),
	'0', 'wf_define: none of them stored');

# The agent's payload (wf_validate reports every problem, the secret's
# too).
my $problems = safe_as('alice',
	'SELECT string_agg(p, E\'\n\') FROM wf_validate('
	  . wf_sql_quote(wf_json({ steps => [ { name => 's', agent => 'pool', payload => { t => $T } } ] }))
	  . '::jsonb) p');
like($problems, qr/"payload\.t".*$RULE/, 'wf_validate: secret in an agent payload, named');

# Allowed: an http step's url, headers and body, at any depth.
my $http = {
	method => 'POST',
	url => 'https://api.example.com/{{secret.alice_token}}',
	headers => { Authorization => "Bearer $T" },
	body => { a => [ { b => $T } ] } };
($ret, $out, $err) = define_as(
	'alice', 'well-placed',
	{
		steps => [
			{ name => 'h', http => $http, compensate => { http => $http } },
			{ name => 'i', if => '$.input.x == 1', then => [ { name => 'ih', http => $http } ] },
			{ name => 'p', parallel => [ { name => 'b', steps => [ { name => 'ph', http => $http } ] } ] },
			{ name => 'm', map => { over => '$.input.a', step => { name => 'mh', http => $http } } } ]
	});
is($ret, 0, 'wf_define: secrets in http url, headers and body, nested, accepted') or diag $err;

# Definitions stored before this check: the superuser puts one in place,
# each renders a secret of alice's own outside http.  The step fails
# without rendering it.
$node->safe_psql('postgres',
	"SELECT wf_define('child', '{\"steps\": [{\"name\": \"c\", \"sql\": \"SELECT 1\"}]}')");
my %legacy = (
	'wait key' => [ 's', { name => 's', wait_for => { event => 'e', key => $T } } ],
	'human title' => [ 's', { name => 's', human => { assignee => 'x', title => "Pay $T" } } ],
	'human assignee' => [ 's', { name => 's', human => { assignee => $T } } ],
	'child input' => [ 's', { name => 's', workflow => 'child', input => { t => $T } } ],
	'sleep until' => [ 's', { name => 's', sleep => { until => $T } } ]);
foreach my $what (sort keys %legacy)
{
	my ($step, $def) = @{ $legacy{$what} };
	my $name = 'legacy-' . ($what =~ s/\W+/-/gr);
	define_as('alice', $name, { steps => [ { name => 's', sql => 'SELECT 1' } ] });
	my $doc = wf_sql_quote(wf_json({ steps => [$def] }));
	$node->safe_psql('postgres',
		"UPDATE wf.workflow_def SET definition = ${doc}::jsonb, plan = wf._plan(${doc}::jsonb) WHERE name = "
		  . wf_sql_quote($name));
	my $run = start_as('alice', $name);
	ok( $node->poll_query_until('postgres',
			"SELECT status IN ('waiting', 'failed', 'completed') FROM wf.steps WHERE run_id = $run AND step = '$step'"),
		"stored before validation, $what: the step went as far as it goes");
	my $s = step_of($run, $step);
	is($s->{status}, 'failed', "stored before validation, $what: the step fails");
	like($s->{error}{message} // '', qr/secret "alice_token"/,
		"stored before validation, $what: the error names the secret");
	is($s->{error}{sqlstate}, '22023', "stored before validation, $what: 22023");
	safe_as('alice', "SELECT wf_cancel($run)") if run_status($run) !~ /failed|completed|cancelled/;
}

# -------------------------------------------------------------------------
# Another role's secret cannot be changed, deleted or granted
# -------------------------------------------------------------------------
set_secret_as('bob', 'bob_token', 'bob-' . random_text(16));
foreach my $attempt (
	[ 'change', "SELECT wf_set_secret('alice_token', 'bobs-value')" ],
	[ 'rebind', "SELECT wf_set_secret('alice_token', 'bobs-value', '127.0.0.1')" ],
	[ 'delete', "SELECT wf_set_secret('alice_token', NULL)" ],
	[ 'grant', "SELECT wf_grant_secret('alice_token', 'bob')" ],
	[ 'revoke', "SELECT wf_revoke_secret('bound', 'alice')" ])
{
	my ($what, $sql) = @$attempt;
	($ret, $out, $err) = psql_as('bob', $sql);
	like($err, qr/42501/, "bob cannot $what alice's secret (42501)");
}
($ret, $out, $err) = psql_as('bob', "SELECT wf_grant_secret('no_such_secret', 'bob')");
like($err, qr/42704/, 'grant of an unknown secret: 42704');
($ret, $out, $err) = psql_as('bob', "SELECT wf_revoke_secret('no_such_secret', 'bob')");
like($err, qr/42704/, 'revoke of an unknown secret: 42704');

# Unchanged: alice's run still sends her value.
$srv->reset;
my $still = run_as('alice', 'alice-still',
	http_wf({ url => $srv->url('/echo'), headers => { 'X-Api-Key' => '{{secret.alice_token}}' } }));
@got = $srv->requests_with_key("wf-$still-call");
is($got[0]{headers}{'x-api-key'}, $V, "alice's secret is unchanged after bob's attempts");
is( query("SELECT owner::text || ' ' || coalesce(hosts, '-') || ' ' || updated_by::text FROM wf.secret WHERE name = 'alice_token'"),
	'alice - alice', "alice's secret: owner, hosts and updated_by unchanged");

# wf_admin may change and grant any secret; the owner stays.
($ret, $out, $err) = psql_as('carol', "SELECT wf_grant_secret('bob_token', 'alice')");
is($ret, 0, 'a member of wf_admin grants another role\'s secret') or diag $err;
($ret, $out, $err) = psql_as('carol', "SELECT wf_set_secret('bob_token', 'rotated-by-carol')");
is($ret, 0, 'a member of wf_admin changes another role\'s secret') or diag $err;
is(query("SELECT owner::text || ' ' || updated_by::text FROM wf.secret WHERE name = 'bob_token'"),
	'bob carol', 'the owner stays, updated_by records who');

# -------------------------------------------------------------------------
# wf.secrets
# -------------------------------------------------------------------------
is( $node->safe_psql('postgres',
		"SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'wf.secrets'::regclass AND attnum > 0"),
	'name,owner,hosts,grantees,created_at,updated_at,updated_by',
	'wf.secrets: its columns, no value');
is(query("SELECT string_agg(name || ':' || owner || ':' || coalesce(hosts, '-') || ':' || grantees::text, ' ' ORDER BY name) FROM wf.secrets", 'alice'),
	'alice_token:alice:-:{} bob_token:bob:-:{alice} bound:alice:127.0.0.2:{}',
	'wf.secrets: alice sees her own and the one granted to her');
is(query("SELECT string_agg(name, ' ' ORDER BY name) FROM wf.secrets", 'bob'),
	'bob_token', 'wf.secrets: bob sees only his');
is(query("SELECT string_agg(name, ' ' ORDER BY name) FROM wf.secrets", 'carol'),
	'alice_token bob_token bound', 'wf.secrets: wf_admin sees all');
($ret, $out, $err) = psql_as('alice', 'SELECT value FROM wf.secret');
like($err, qr/42501/, 'wf.secret: not readable by its owners');
($ret, $out, $err) = psql_as('carol', 'SELECT value FROM wf.secret');
like($err, qr/42501/, 'wf.secret: not readable by wf_admin');

# -------------------------------------------------------------------------
# The values are nowhere
# -------------------------------------------------------------------------
foreach my $view ('wf.runs', 'wf.steps', 'wf.history', 'wf.alerts', 'wf.human_tasks', 'wf.secrets')
{
	my $all = $node->safe_psql('postgres', "SELECT string_agg(v::text, E'\\n') FROM $view v");
	ok(index($all, $V) < 0, "alice_token is in no row of $view");
	ok(index($all, $W) < 0, "bound is in no row of $view");
}
my $log = slurp_file($node->logfile);
ok(index($log, $V) < 0, 'alice_token is not in the server log');
ok(index($log, $W) < 0, 'bound is not in the server log');

done_testing();
