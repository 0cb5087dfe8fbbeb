
# Copyright (c) pg_workflow authors

# http steps against the local mock server (test/http_server.py):
#  - a 3-step ticket sync (GET a Zendesk ticket, POST a ClickUp task with
#    {{secret.clickup_token}} and a body built from the first step's
#    output, an sql step recording the task id); what the server received:
#    method, path, JSON body, Content-Type, Idempotency-Key wf-<run>-<step>,
#    User-Agent pg_workflow/...;
#  - output shapes: JSON bodies parsed, text bodies as strings, header
#    names in lower case, ok_status;
#  - error classes: 401 permanent (one attempt, http_status), 503 retried
#    until success, 429 with Retry-After honoured as the minimum delay,
#    refused connections and timeouts transient until max_attempts;
#  - redirects (5 followed at most), pg_workflow.http_allowed_hosts (no
#    request at all to a host not allowed), http_max_response_size (with
#    and without Content-Length);
#  - secrets: neither they nor any 8-character piece of them in a row of
#    wf.runs, wf.steps, wf.history or in the server log, even when the URL,
#    an error message, a response, or the body excerpt of an error message
#    (the secret straddling the excerpt's end, or \u-escaped) contain them;
#    wf.secret is readable by nobody, wf.secrets shows each role only the
#    secrets it owns or was granted (031_secrets tests ownership);
#  - the circuit breaker: opens after N transient failures, defers steps
#    without burning attempts, lets one probe through after reset_after;
#  - wf_cancel of a run whose request is in flight: the run and the step
#    are cancelled at once, and the request is dropped (the mock server
#    sees the connection closed).
# Synchronisation is on wf_wait() and on polled conditions only.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgWorkflowTest;
use HttpTestServer;
use Test::More;

my $json = JSON::PP->new->utf8->canonical(1);

my $token = 'cu-token-' . join('', map { ('a' .. 'z')[ rand 26 ] } 1 .. 16);
my $srv = HttpTestServer->new(token => $token);
my $node = wf_node('http', workers => 2);

# -------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------

# Defines workflow name (if needed), starts a run, waits for its end;
# returns the run id.
sub run_workflow
{
	my ($name, $def, $input) = @_;
	wf_define($node, $name, $def) if $def;
	my $run = wf_start($node, $name, $input // {});
	my $status = wf_wait($node, $run, 60);
	note "run $run of $name: $status";
	return $run;
}

sub run_status
{
	my ($run) = @_;
	return $node->safe_psql('postgres',
		"SELECT status FROM wf.runs WHERE id = $run");
}

# A step of a run as a hash (output and error decoded).
sub step_of
{
	my ($run, $step) = @_;
	my $row = $node->safe_psql('postgres',
		"SELECT row_to_json(s) FROM wf.steps s WHERE run_id = $run AND step = "
		  . wf_sql_quote($step));
	return $row eq '' ? undef : $json->decode($row);
}

# "step:status:attempt ..." of the run's history rows about steps.
sub step_history
{
	my ($run) = @_;
	return $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(step || ':' || status || ':' || attempt, ' ' ORDER BY id)
	  FROM wf.history WHERE run_id = $run AND step IS NOT NULL});
}

# A one-step workflow around an http action.
sub http_wf
{
	my ($http, %extra) = @_;
	return { steps => [ { name => 'call', http => $http, %extra } ] };
}

# Random letters and digits.
sub random_text
{
	my ($n) = @_;
	return join('', map { ('A' .. 'Z', 'a' .. 'z', 0 .. 9)[ rand 62 ] } 1 .. $n);
}

# The first 8-character piece of secret found in text, or undef.
sub leaked_piece
{
	my ($text, $secret) = @_;
	for (my $i = 0; $i + 8 <= length($secret); $i++)
	{
		my $piece = substr($secret, $i, 8);
		return $piece if index($text, $piece) >= 0;
	}
	return undef;
}

sub set_guc
{
	my ($name, $value) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET $name = " . wf_sql_quote($value));
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	ok($node->poll_query_until('postgres', "SHOW $name", $value),
		"$name = '$value' after a reload");
}

# -------------------------------------------------------------------------
# The ticket sync
# -------------------------------------------------------------------------

# Secrets are set with log_statement off, so that only the engine could
# put them in the server log.
$node->safe_psql('postgres',
	"SET log_statement = 'none'; SELECT wf_set_secret('clickup_token', "
	  . wf_sql_quote($token) . ')');
$node->safe_psql('postgres',
	'CREATE TABLE synced (ticket_id int, task_id text, run_id bigint)');

my $sync = run_workflow(
	'ticket-sync',
	{
		description => 'Sync a Zendesk ticket to a ClickUp task',
		steps => [
			{
				name => 'get_ticket',
				http => {
					method => 'GET',
					url => $srv->url('/api/v2/tickets/{{$.input.ticket_id}}.json'),
				},
			},
			{
				name => 'create_task',
				http => {
					method => 'POST',
					url => $srv->url('/api/v2/list/{{$.input.list_id}}/task'),
					headers => { Authorization => '{{secret.clickup_token}}' },
					body => {
						name => '{{$.steps.get_ticket.body.ticket.subject}}',
						priority => '{{$.steps.get_ticket.body.ticket.priority}}',
						description => 'Zendesk #{{$.input.ticket_id}}',
					},
					ok_status => [ 200, 201 ],
				},
			},
			{
				name => 'record',
				sql => q{INSERT INTO synced VALUES (($1->'input'->>'ticket_id')::int,
					$1->'steps'->'create_task'->'body'->>'id', ($1->'run'->>'id')::bigint)
					RETURNING task_id},
			},
		]
	},
	{ ticket_id => 42, list_id => 'L900' });

is(run_status($sync), 'completed', 'ticket sync: the run completed');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(step || ':' || status || ':' || attempt, ' ' ORDER BY ord) FROM wf.steps WHERE run_id = $sync"
	),
	'get_ticket:completed:1 create_task:completed:1 record:completed:1',
	'ticket sync: every step completed at its first attempt');

my $get = step_of($sync, 'get_ticket');
is($get->{output}{status}, 200, 'ticket sync: GET output has the status');
is_deeply(
	$get->{output}{body},
	{
		ticket => {
			id => 42,
			subject => 'Ticket 42',
			priority => 'high',
			status => 'open',
			requester_id => 1042
		}
	},
	'ticket sync: the JSON response body is parsed');
like($get->{output}{headers}{'content-type'},
	qr{^application/json}, 'ticket sync: header names are in lower case');
ok(!(grep { /[A-Z]/ } keys %{ $get->{output}{headers} }),
	'ticket sync: no header name has an upper-case letter');

my $task = step_of($sync, 'create_task');
my $task_id = $task->{output}{body}{id};
like($task_id // '', qr/^t[0-9a-f]{8}$/, 'ticket sync: ClickUp returned a task id');
is( $node->safe_psql('postgres', 'SELECT ticket_id, task_id, run_id FROM synced'),
	"42|$task_id|$sync",
	'ticket sync: the sql step recorded the task id, once');
is(step_of($sync, 'record')->{output}, $task_id,
	'ticket sync: the sql step output is the task id');

my @got = $srv->requests_with_key("wf-$sync-get_ticket");
is(scalar @got, 1, 'ticket sync: one GET with key wf-<run>-get_ticket');
is($got[0]{method}, 'GET', 'ticket sync: GET method');
is($got[0]{path}, '/api/v2/tickets/42.json', 'ticket sync: GET path rendered');
is($got[0]{body}, '', 'ticket sync: GET has no body');
like($got[0]{headers}{'user-agent'} // '',
	qr{^pg_workflow/}, 'ticket sync: User-Agent starts with pg_workflow/');

my @posted = $srv->requests_with_key("wf-$sync-create_task");
is(scalar @posted, 1, 'ticket sync: one POST with key wf-<run>-create_task');
is($posted[0]{method}, 'POST', 'ticket sync: POST method');
is($posted[0]{path}, '/api/v2/list/L900/task', 'ticket sync: POST path rendered');
like($posted[0]{headers}{'content-type'} // '',
	qr{^application/json}, 'ticket sync: POST content-type is application/json');
is($posted[0]{headers}{authorization}, $token,
	'ticket sync: Authorization carries the secret');
is_deeply(
	$json->decode($posted[0]{body}),
	{
		name => 'Ticket 42',
		priority => 'high',
		description => 'Zendesk #42'
	},
	'ticket sync: the JSON body is built from the previous step output');
like($posted[0]{headers}{'user-agent'} // '',
	qr{^pg_workflow/\S+ \(libcurl/}, 'ticket sync: User-Agent names libcurl');
is($srv->stats->{tasks_created}, 1, 'ticket sync: one task created');

# -------------------------------------------------------------------------
# 401: permanent, one attempt
# -------------------------------------------------------------------------
my $unauth = run_workflow(
	'wrong-token',
	http_wf(
		{
			method => 'POST',
			url => $srv->url('/api/v2/list/L1/task'),
			headers => { Authorization => 'not-the-token' },
			body => { name => 'x' },
		},
		retry => { max_attempts => 5, backoff => 'fixed', initial_interval => '10ms' }));
is(run_status($unauth), 'failed', '401: the run failed');
my $s = step_of($unauth, 'call');
is($s->{status}, 'failed', '401: the step failed');
is($s->{attempt}, 1, '401: after one attempt (permanent)');
is($s->{error}{http_status}, 401, '401: error has http_status 401');
is($s->{error}{class}, 'permanent', '401: error class permanent');
like($s->{error}{message}, qr{POST http://127\.0\.0\.1:\d+/api/v2/list/L1/task.*401.*Token invalid}s,
	'401: message names method, URL, status and a body excerpt');
is(scalar $srv->requests_with_key("wf-$unauth-call"), 1, '401: the server got one request');
is(step_history($unauth), 'call:running:1 call:failed:1', '401: no retry in history');

# -------------------------------------------------------------------------
# 503: retried until success
# -------------------------------------------------------------------------
my $flaky = run_workflow(
	'flaky-503',
	http_wf(
		{ url => $srv->url('/flaky?key=f503&fail=2') },
		retry => { max_attempts => 5, backoff => 'fixed', initial_interval => '50ms' }));
is(run_status($flaky), 'completed', '503: the run completed');
$s = step_of($flaky, 'call');
is($s->{attempt}, 3, '503: at the third attempt');
is_deeply($s->{output}{body}, { attempts => 3 }, '503: output of the successful attempt');
is(scalar $srv->requests_with_key("wf-$flaky-call"), 3, '503: the server got three requests');
is( step_history($flaky),
	'call:running:1 call:retrying:1 call:running:2 call:retrying:2 call:running:3 call:completed:3',
	'503: two retries in history');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg((detail->>'http_status') || '/' || (detail->>'class'), ',') FROM wf.history WHERE run_id = $flaky AND status = 'retrying'"
	),
	'503/transient,503/transient',
	'503: the retries recorded http_status 503, class transient');

# -------------------------------------------------------------------------
# 429 with Retry-After: 1, initial_interval 10ms
# -------------------------------------------------------------------------
my $r429 = run_workflow(
	'retry-after',
	http_wf(
		{ url => $srv->url('/flaky?key=f429&fail=1&code=429&retry_after=1') },
		retry => { max_attempts => 3, backoff => 'fixed', initial_interval => '10ms' }));
is(run_status($r429), 'completed', '429: the run completed');
is(step_of($r429, 'call')->{attempt}, 2, '429: at the second attempt');
is(step_history($r429), 'call:running:1 call:retrying:1 call:running:2 call:completed:2',
	'429: one retry in history');
# The engine takes its retry time (failure + Retry-After) just before it
# writes the 'retrying' row, so that row's "at" is a hair later than the
# failure.  Compared: the attempts' starts (history 'running' rows), the
# recorded retry_at, and the server's receive times.
is( $node->safe_psql(
		'postgres', qq{
	SELECT (r2.at - r1.at >= interval '1 second'),
	       ((f.detail->>'retry_at')::timestamptz >= r1.at + interval '1 second'),
	       (r2.at >= (f.detail->>'retry_at')::timestamptz),
	       (f.detail->>'http_status')
	  FROM wf.history r1, wf.history f, wf.history r2
	 WHERE r1.run_id = $r429 AND r1.status = 'running' AND r1.attempt = 1
	   AND f.run_id = $r429 AND f.status = 'retrying'
	   AND r2.run_id = $r429 AND r2.status = 'running' AND r2.attempt = 2}),
	't|t|t|429',
	'429: the second attempt started at least 1 s after the first, not before the Retry-After time'
);
my @r429 = $srv->requests_with_key("wf-$r429-call");
is(scalar @r429, 2, '429: the server got two requests');
cmp_ok($r429[1]{at} - $r429[0]{at}, '>=', 1.0,
	'429: the server received the retry at least 1 s after the 429');

# -------------------------------------------------------------------------
# Transport errors: refused, timed out
# -------------------------------------------------------------------------
my $dead = closed_port();
my $refused = run_workflow(
	'refused',
	http_wf(
		{ url => "http://127.0.0.1:$dead/nothing" },
		retry => { max_attempts => 3, backoff => 'fixed', initial_interval => '20ms' }));
is(run_status($refused), 'failed', 'refused: the run failed');
$s = step_of($refused, 'call');
is($s->{attempt}, 3, 'refused: after max_attempts');
is($s->{error}{class}, 'transient', 'refused: transient');
like($s->{error}{message}, qr/connect/i, 'refused: the message is the connect error');
ok(!$s->{error}{timeout}, 'refused: not a timeout');
ok(!exists $s->{error}{http_status}, 'refused: no http_status');
is(step_history($refused),
	'call:running:1 call:retrying:1 call:running:2 call:retrying:2 call:running:3 call:failed:3',
	'refused: retried, then failed');

my $never = run_workflow(
	'never',
	http_wf(
		{ url => $srv->url('/never'), timeout => '300ms' },
		retry => { max_attempts => 2, backoff => 'fixed', initial_interval => '20ms' }));
is(run_status($never), 'failed', 'timeout: the run failed');
$s = step_of($never, 'call');
is($s->{attempt}, 2, 'timeout: after max_attempts');
is($s->{error}{class}, 'transient', 'timeout: transient');
ok($s->{error}{timeout}, 'timeout: "timeout": true');
like($s->{error}{message}, qr{GET http://127\.0\.0\.1:\d+/never}, 'timeout: message names the request');
is(scalar $srv->requests_with_key("wf-$never-call"), 2, 'timeout: the server got two requests');
like( $node->safe_psql(
		'postgres', "SELECT error FROM wf.runs WHERE id = $never"),
	qr/"step": "call"/,
	'timeout: the run error names the step');

# -------------------------------------------------------------------------
# Redirects
# -------------------------------------------------------------------------
$srv->reset;
my $redir3 = run_workflow('redirect-3', http_wf({ url => $srv->url('/redirect/3') }));
is(run_status($redir3), 'completed', 'redirect: 3 redirects followed');
is_deeply(step_of($redir3, 'call')->{output}{body}, { redirected => JSON::PP::true },
	'redirect: the output is the last hop\'s');
is( join(' ', map { $_->{path} } $srv->requests_with_key("wf-$redir3-call")),
	'/redirect/3 /redirect/2 /redirect/1 /redirect/0',
	'redirect: every hop carried the Idempotency-Key');

my $redir9 = run_workflow('redirect-9', http_wf({ url => $srv->url('/redirect/9') }));
is(run_status($redir9), 'failed', 'redirect: 9 redirects are too many');
$s = step_of($redir9, 'call');
like($s->{error}{message}, qr/redirects/, 'redirect: the message is about redirects');
is($s->{attempt}, 1, 'redirect: not retried');
is(scalar $srv->requests_with_key("wf-$redir9-call"), 6,
	'redirect: the first request and 5 redirects were sent');

# -------------------------------------------------------------------------
# pg_workflow.http_allowed_hosts
# -------------------------------------------------------------------------
set_guc('pg_workflow.http_allowed_hosts', 'example.invalid');
$srv->reset;
my $denied = run_workflow('denied', http_wf({ url => $srv->url('/echo?denied=1') }));
is(run_status($denied), 'failed', 'allowed hosts: the run failed');
$s = step_of($denied, 'call');
like($s->{error}{message}, qr/not allowed/, 'allowed hosts: "not allowed"');
is($s->{attempt}, 1, 'allowed hosts: not retried');
is(scalar $srv->requests, 0, 'allowed hosts: the server received no request at all');

set_guc('pg_workflow.http_allowed_hosts', 'example.invalid, *.example.org, 127.0.0.1');
my $allowed = run_workflow('denied');
is(run_status($allowed), 'completed', 'allowed hosts: a listed address is allowed');

set_guc('pg_workflow.http_allowed_hosts', '');

# -------------------------------------------------------------------------
# pg_workflow.http_max_response_size (10MB by default)
# -------------------------------------------------------------------------
my $nhuge = 0;
foreach my $huge ('/huge?mb=20', '/huge?mb=20&content_length=0')
{
	$nhuge++;
	my $run = run_workflow("huge-$nhuge", http_wf({ url => $srv->url($huge) }));
	is(run_status($run), 'failed', "$huge: the run failed");
	$s = step_of($run, 'call');
	like($s->{error}{message}, qr/http_max_response_size/, "$huge: message names http_max_response_size");
	is($s->{error}{class}, 'permanent', "$huge: permanent");
	is($s->{attempt}, 1, "$huge: not retried");
}

# -------------------------------------------------------------------------
# Response bodies, methods, ok_status
# -------------------------------------------------------------------------
my $text = run_workflow('text', http_wf({ url => $srv->url('/text') }));
$s = step_of($text, 'call');
is($s->{output}{body}, 'plain text response', 'text: the body is a JSON string');
like($s->{output}{headers}{'content-type'}, qr{^text/plain}, 'text: content-type header');

my $echo = run_workflow(
	'echo',
	http_wf({
		method => 'PUT',
		url => $srv->url('/echo?q={{$.input.q}}'),
		headers => { 'X-Custom' => 'v-{{$.input.n}}' },
		body => { n => '{{$.input.n}}', list => [ 1, '{{$.input.q}}' ] }
	}),
	{ n => 7, q => 'a b&c' });
$s = step_of($echo, 'call');
is($s->{output}{body}{method}, 'PUT', 'echo: PUT sent');
is_deeply($s->{output}{body}{query}, { q => 'a b&c' }, 'echo: URL template values are escaped');
is($s->{output}{body}{headers}{'x-custom'}, 'v-7', 'echo: header template');
is_deeply($s->{output}{body}{json}, { n => 7, list => [ 1, 'a b&c' ] },
	'echo: body templates keep JSON types, the echoed JSON is parsed');
like($s->{output}{body}{headers}{'idempotency-key'}, qr/^wf-$echo-call$/,
	'echo: Idempotency-Key wf-<run>-<step>');

my $patch = run_workflow(
	'patch',
	http_wf({
		method => 'PATCH',
		url => $srv->url('/echo'),
		body => 'hello {{$.input.who}}'
	}),
	{ who => 'world' });
$s = step_of($patch, 'call');
is($s->{output}{body}{body}, 'hello world', 'PATCH: a string body is sent as is');
like($s->{output}{body}{headers}{'content-type'}, qr{^text/plain}, 'PATCH: as text/plain');

my $head = run_workflow('head', http_wf({ method => 'HEAD', url => $srv->url('/text') }));
$s = step_of($head, 'call');
is($s->{status}, 'completed', 'HEAD: completed');
ok(!defined $s->{output}{body}, 'HEAD: no body');

my $ok404 = run_workflow('ok-404',
	http_wf({ method => 'DELETE', url => $srv->url('/status/404'), ok_status => [ 200, 404 ] }));
is(run_status($ok404), 'completed', 'ok_status [200, 404] accepts a 404');
is(step_of($ok404, 'call')->{output}{status}, 404, 'ok_status: output status 404');
my $ok201 = run_workflow('ok-201',
	http_wf({ url => $srv->url('/status/201'), ok_status => 200 }));
is(run_status($ok201), 'failed', 'ok_status 200 refuses a 201');
is(step_of($ok201, 'call')->{error}{class}, 'permanent', 'ok_status: a refused 201 is permanent');
my $okrange = run_workflow('ok-range',
	http_wf({ url => $srv->url('/status/302'), ok_status => '300-399' }));
is(run_status($okrange), 'completed', 'ok_status "300-399" accepts a 302 without Location');

# -------------------------------------------------------------------------
# Secrets
# -------------------------------------------------------------------------
my $secret = 'Zx9-' . random_text(24);
# A secret with non-ASCII letters: JSON APIs often answer with them
# \u-escaped.  Its ASCII tail is what must not show.
my $tail = random_text(16);
my $secret_utf8 = "Gr\x{fc}\x{df}e-$tail";
utf8::encode($secret_utf8);
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	"SET log_statement = 'none'; SELECT wf_set_secret('x', " . wf_sql_quote($secret) . ')');
$node->safe_psql('postgres',
	"SET log_statement = 'none'; SELECT wf_set_secret('z', " . wf_sql_quote($secret_utf8) . ')');

$srv->reset;
my $leak_url = run_workflow(
	'secret-url',
	http_wf(
		{ url => $srv->url('/status/400?t={{secret.x}}') },
		retry => { max_attempts => 1 }));
is(run_status($leak_url), 'failed', 'secret in URL: the run failed (400)');
$s = step_of($leak_url, 'call');
like($s->{error}{message}, qr/\[redacted\]/, 'secret in URL: the message shows [redacted]');
my @sent = $srv->requests_with_key("wf-$leak_url-call");
is($sent[0]{query}{t}, $secret, 'secret in URL: the server received the secret');

my $leak_5xx = run_workflow(
	'secret-5xx',
	http_wf(
		{ url => $srv->url('/status/503?t={{secret.x}}') },
		retry => { max_attempts => 2, backoff => 'fixed', initial_interval => '10ms' }));
is(run_status($leak_5xx), 'failed', 'secret in URL of a retried step: failed');

my $leak_echo = run_workflow(
	'secret-echo',
	http_wf({
		method => 'POST',
		url => $srv->url('/echo?k={{secret.x}}'),
		headers => { 'X-Api-Key' => '{{secret.x}}', Authorization => 'Bearer {{secret.x}}' },
		body => { token => '{{secret.x}}', nested => { v => 'pre-{{secret.x}}-post' } }
	}));
is(run_status($leak_echo), 'completed', 'secret echoed back: completed');
$s = step_of($leak_echo, 'call');
is($s->{output}{body}{headers}{'x-api-key'}, '[redacted]', 'secret echoed back: header redacted in the output');
is($s->{output}{body}{json}{token}, '[redacted]', 'secret echoed back: JSON body redacted in the output');
is($s->{output}{body}{json}{nested}{v}, 'pre-[redacted]-post', 'secret echoed back: inside a string');
@sent = $srv->requests_with_key("wf-$leak_echo-call");
is($sent[0]{headers}{'x-api-key'}, $secret, 'secret echoed back: the server received the secret');

# The echo refused by ok_status: the error message quotes the start of the
# response body, which reflects the secret.
my $leak_excerpt = run_workflow(
	'secret-excerpt',
	http_wf({ url => $srv->url('/echo?k={{secret.x}}'), ok_status => 201 },
		retry => { max_attempts => 1 }));
$s = step_of($leak_excerpt, 'call');
like($s->{error}{message}, qr/answered 200: .*"k": "\[redacted\]"/,
	'secret in an error body excerpt: redacted');

# The same, the secret straddling the end of the excerpt (the engine quotes
# 200 bytes): no piece of it may show either.
my $body_start = '{"method": "GET", "path": "/echo", "query": {"pad": "';
my $pad = 'p' x (190 - length($body_start) - length('", "k": "'));
my $leak_clip = run_workflow(
	'secret-clipped',
	http_wf({ url => $srv->url("/echo?pad=$pad&k={{secret.x}}"), ok_status => 201 },
		retry => { max_attempts => 1 }));
$s = step_of($leak_clip, 'call');
like($s->{error}{message}, qr/"pad": "p+", "k": "/,
	'secret at the end of an excerpt: the excerpt reaches the secret');
is(leaked_piece($s->{error}{message}, $secret), undef,
	'secret at the end of an excerpt: no piece of it in the message');

# A non-ASCII secret reflected \u-escaped in an error body excerpt.
my $leak_escaped = run_workflow(
	'secret-escaped',
	http_wf({ url => $srv->url('/echo?k={{secret.z}}'), ok_status => 201 },
		retry => { max_attempts => 1 }));
$s = step_of($leak_escaped, 'call');
is(run_status($leak_escaped), 'failed', 'non-ASCII secret in an excerpt: failed (ok_status)');
is(leaked_piece($s->{error}{message}, $tail), undef,
	'non-ASCII secret in an excerpt: not even \u-escaped');

# Every row of the views as text, searched in Perl: a query naming the
# secret would itself be logged.
foreach my $view ('wf.runs', 'wf.steps', 'wf.history', 'wf.workflows')
{
	my $all = $node->safe_psql('postgres', "SELECT string_agg(v::text, E'\\n') FROM $view v");
	ok(index($all, $secret) < 0, "the secret is in no row of $view");
	ok(index($all, $secret_utf8) < 0, "the non-ASCII secret is in no row of $view");
	ok(index($all, $token) < 0, "the ClickUp token is in no row of $view");
	is(leaked_piece($all, $secret), undef, "no piece of the secret in $view");
	is(leaked_piece($all, $tail), undef, "no piece of the non-ASCII secret in $view");
}
ok($node->safe_psql('postgres', "SELECT string_agg(v::text, E'\\n') FROM wf.runs v") =~ /\[redacted\]/,
	'wf.runs shows [redacted] where the secret was');
my $log = slurp_file($node->logfile);
ok(index($log, $secret) < 0, 'the secret is not in the server log');
ok(index($log, $secret_utf8) < 0, 'the non-ASCII secret is not in the server log');
ok(index($log, $token) < 0, 'the ClickUp token is not in the server log');
is(leaked_piece($log, $secret), undef, 'no piece of the secret in the server log');
is(leaked_piece($log, $tail), undef, 'no piece of the non-ASCII secret in the server log');
like(slurp_file($node->logfile, $log_offset), qr/\[redacted\]/,
	'the server log has the redacted error messages');

# Who may set and read secrets.
$node->safe_psql('postgres', 'CREATE ROLE alice LOGIN');
my ($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE alice;\n\\set VERBOSITY verbose\nSELECT wf_set_secret('x', 'not-it')");
like($err, qr/42501/, 'a non-admin cannot change another role\'s secret (42501)');
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE alice;\n\\set VERBOSITY verbose\nSELECT * FROM wf.secret");
like($err, qr/42501/, 'a non-admin cannot read wf.secret (42501)');
is( $node->safe_psql('postgres',
		"SET ROLE alice; SELECT count(*) FROM wf.secrets"),
	'0',
	'wf.secrets lists no secret of another role');
is( $node->safe_psql('postgres',
		"SELECT string_agg(name, ',' ORDER BY name) FROM wf.secrets"),
	'clickup_token,x,z',
	'wf.secrets lists the names to their owner');
is( $node->safe_psql('postgres',
		"SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'wf.secrets'::regclass AND attnum > 0"
	),
	'name,owner,hosts,grantees,created_at,updated_at,updated_by',
	'wf.secrets has no value column');
$node->safe_psql('postgres', 'GRANT wf_admin TO alice');
($ret, $out, $err) = $node->psql('postgres',
	"SET log_statement = 'none'; SET ROLE alice; SELECT wf_set_secret('alice_secret', 'v')");
is($ret, 0, 'a member of wf_admin may set a secret');
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE alice;\n\\set VERBOSITY verbose\nSELECT value FROM wf.secret");
like($err, qr/42501/, 'not even a member of wf_admin reads wf.secret');

# -------------------------------------------------------------------------
# Circuit breaker
# -------------------------------------------------------------------------
my $breaker = { failures => 2, reset_after => '3s' };
wf_define($node, 'cb-fail',
	http_wf({ url => $srv->url('/status/503') }, retry => { max_attempts => 1 },
		circuit_breaker => $breaker));
wf_define($node, 'cb-ok',
	http_wf({ url => $srv->url('/echo') }, retry => { max_attempts => 1 },
		circuit_breaker => $breaker));

my $cb1 = run_workflow('cb-fail');
is( $node->safe_psql('postgres', "SELECT state, failures FROM wf.circuit_breakers WHERE host = '127.0.0.1'"),
	'closed|1', 'breaker: closed after one failure');
# The second failure opens it.  A third run starts right away, in the same
# session: its step must find the breaker open (within reset_after, 3s).
my $cb2 = wf_start($node, 'cb-fail');
my @cb = split /\n/, $node->safe_psql(
	'postgres', qq{
	SELECT wf_wait($cb2, '60s');
	SELECT state || '|' || opened_at FROM wf.circuit_breakers WHERE host = '127.0.0.1';
	SELECT wf_start('cb-fail');});
is($cb[0], 'failed', 'breaker: the second run failed');
my ($state, $opened_at) = split /\|/, $cb[1];
is($state, 'open', 'breaker: open after two failures');
my $cb3 = $cb[2];
ok( $node->poll_query_until(
		'postgres', qq{
	SELECT s.status = 'ready' AND s.attempt = 0 AND s.ready_at > r.created_at
	       AND s.ready_at >= '$opened_at'::timestamptz + interval '3 seconds'
	  FROM wf.steps s JOIN wf.runs r ON r.id = s.run_id
	 WHERE s.run_id = $cb3 AND r.status = 'running'}),
	'breaker: the step waits (ready later, attempt 0) while the breaker is open');
is(wf_wait($node, $cb3, 60), 'failed', 'breaker: the probe failed, so did its run');
is(step_of($cb3, 'call')->{attempt}, 1, 'breaker: the waiting did not burn an attempt');
is(scalar $srv->requests_with_key("wf-$cb3-call"), 1, 'breaker: one probe request');
ok( $node->poll_query_until(
		'postgres', qq{
	SELECT state = 'open' AND opened_at > '$opened_at' FROM wf.circuit_breakers WHERE host = '127.0.0.1'}),
	'breaker: the failed probe reopened it');
is( $node->safe_psql('postgres', qq{
	SELECT s.started_at >= '$opened_at'::timestamptz + interval '3 seconds' FROM wf.steps s WHERE s.run_id = $cb3}),
	't', 'breaker: the probe went no earlier than reset_after');

# A successful probe closes it.
my $cb4 = wf_start($node, 'cb-ok');
is(wf_wait($node, $cb4, 60), 'completed', 'breaker: the probe to /echo completed');
ok( $node->poll_query_until(
		'postgres', "SELECT state || ':' || failures FROM wf.circuit_breakers WHERE host = '127.0.0.1'",
		'closed:0'),
	'breaker: a successful probe closed it');
my $cb5 = run_workflow('cb-ok');
is(run_status($cb5), 'completed', 'breaker: closed, requests go at once');

# A step deferred by the open breaker goes as soon as it closes, not at its
# retry time: here a request sent before the breaker opened succeeds and
# closes it, an hour before the deferred step would have tried again.
my $long = { failures => 1, reset_after => '1 hour' };
wf_define($node, 'cb-long-slow',
	http_wf({ url => $srv->url('/slow?ms=8000'), timeout => '60s' },
		retry => { max_attempts => 1 }, circuit_breaker => $long));
wf_define($node, 'cb-long-fail',
	http_wf({ url => $srv->url('/status/503') }, retry => { max_attempts => 1 },
		circuit_breaker => $long));
wf_define($node, 'cb-long-ok',
	http_wf({ url => $srv->url('/echo') }, retry => { max_attempts => 1 },
		circuit_breaker => $long));
my $slow_ok = wf_start($node, 'cb-long-slow');
ok( poll_until(sub { scalar $srv->requests_with_key("wf-$slow_ok-call") },
		'the slow request arrives'),
	'breaker: a slow request is in flight');
is(run_status(run_workflow('cb-long-fail')), 'failed', 'breaker: a failure meanwhile');
is($node->safe_psql('postgres', "SELECT state FROM wf.circuit_breakers WHERE host = '127.0.0.1'"),
	'open', 'breaker: open for an hour');
my $deferred = wf_start($node, 'cb-long-ok');
ok( $node->poll_query_until(
		'postgres', qq{
	SELECT status = 'ready' AND attempt = 0 AND ready_at > now() + interval '30 minutes'
	  FROM wf.steps WHERE run_id = $deferred}),
	'breaker: a new step is deferred for about an hour');
is(wf_wait($node, $slow_ok, 60), 'completed', 'breaker: the slow request succeeded');
is(wf_wait($node, $deferred, 60), 'completed',
	'breaker: its success closed the breaker and the deferred step went at once');
is(step_of($deferred, 'call')->{attempt}, 1, 'breaker: in one attempt');

# -------------------------------------------------------------------------
# wf_cancel of a run whose request is in flight
# -------------------------------------------------------------------------
$srv->reset;
wf_define($node, 'hang', http_wf({ url => $srv->url('/never'), timeout => '10 minutes' }));
my $hang = wf_start($node, 'hang');
ok( poll_until(sub { scalar $srv->requests_with_key("wf-$hang-call") },
		'the /never request arrives'),
	'cancel: the request is in flight');
is( $node->safe_psql('postgres', "SELECT status FROM wf.steps WHERE run_id = $hang"),
	'running', 'cancel: the step is running');
is($node->safe_psql('postgres', "SELECT wf_cancel($hang, 'no answer')"),
	't', 'cancel: wf_cancel returns true');
is( $node->safe_psql('postgres',
		"SELECT r.status || ':' || s.status FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id WHERE r.id = $hang"),
	'cancelled:cancelled',
	'cancel: run and step are cancelled at once');
is(wf_wait($node, $hang, 60), 'cancelled', 'cancel: wf_wait returns cancelled');
# The request's own timeout is 10 minutes: only the engine dropping the
# transfer closes the connection before the poll gives up.
ok(poll_until(sub { $srv->in_flight == 0 }, 'the /never request is dropped'),
	'cancel: the engine dropped the request (the server saw the connection closed)')
  or diag 'requests still in flight at the server: ' . $srv->in_flight;
my $after = run_workflow('text');
is(run_status($after), 'completed', 'cancel: the executors go on');
is(run_status($hang), 'cancelled', 'cancel: the run stays cancelled');

$node->stop;
$srv->stop;
done_testing();
