
# Copyright (c) pg_workflow authors

=pod

=head1 NAME

HttpTestServer - the mock HTTP server (test/http_server.py) for the TAP
tests of pg_workflow's http steps

=head1 SYNOPSIS

  use FindBin;
  use lib "$FindBin::RealBin/../perl";
  use HttpTestServer;

  my $srv = HttpTestServer->new(token => 'secret-token');
  my $url = $srv->url('/echo');            # http://127.0.0.1:PORT/echo
  my $other = HttpTestServer->new(name => 'other', host => '127.0.0.2');
  $srv->reset;
  my @reqs = $srv->requests(sub { $_[0]{path} eq '/echo' });
  my $stats = $srv->stats;                 # {requests, in_flight, ...}
  my $n = $srv->in_flight;                 # minus the /_stats request
  $srv->stop;                              # also done by an END block

=head1 DESCRIPTION

new() starts the server as a child process on a free port of 127.0.0.1
(or of the loopback address given as host, for a second host name) (the
server writes it to --port-file; we poll until the file exists) with its
output in the test's log directory.  Every server started is stopped
by an END block, even when the test dies, so that no server outlives its
test.  The inspection endpoints (/_requests, /_reset, /_stats) are called
with HTTP::Tiny.

closed_port() is a TCP port of 127.0.0.1 where nothing listens (a socket
is bound to a free port and closed again), for "connection refused".

poll_until(code, description) calls code every 100 ms until it returns
true, for at most $PostgreSQL::Test::Utils::timeout_default seconds; it
returns whether it did.  It is for conditions that only the mock server
can tell (requests in flight); use poll_query_until for the database.

=cut

package HttpTestServer;

use strict;
use warnings;

use Exporter 'import';
use FindBin;
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(closed_port poll_until);

my @servers;

sub new
{
	my ($class, %params) = @_;
	my $name = $params{name} // 'http';
	my $token = $params{token} // 'test-token';
	my $host = $params{host} // '127.0.0.1';
	my $script = $params{script} // _find_script();
	my $python = $ENV{PYTHON} // 'python3';
	my $dir = PostgreSQL::Test::Utils::tempdir($name);
	my $port_file = "$dir/port";
	my $log = "$PostgreSQL::Test::Utils::log_path/${name}_server.log";

	my $pid = fork();
	die "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		# The child must not run the parent's END blocks: exec or _exit.
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $log);
		open(STDERR, '>&', \*STDOUT);
		exec($python, $script, '--host', $host, '--port-file', $port_file,
			'--token', $token)
		  or print STDERR "could not exec $python $script: $!\n";
		POSIX::_exit(127);
	}

	my $self = bless {
		pid => $pid,
		name => $name,
		token => $token,
		host => $host,
		log => $log,
		http => HTTP::Tiny->new(timeout => 60, keep_alive => 0),
		json => JSON::PP->new->canonical(1),
	}, $class;
	push @servers, $self;

	my $up = poll_until(
		sub {
			die "mock HTTP server exited early, see $log\n"
			  if waitpid($pid, POSIX::WNOHANG()) == $pid;
			return -s $port_file;
		},
		'mock HTTP server writes its port');
	die "mock HTTP server did not start, see $log\n" unless $up;
	my $port = slurp_file($port_file);
	chomp $port;
	$self->{port} = $port;
	note "mock HTTP server $pid listening on $host:$port";
	return $self;
}

# test/http_server.py, next to the directory of the test scripts.
sub _find_script
{
	my $f = "$FindBin::RealBin/../http_server.py";
	die "$f not found" unless -f $f;
	return $f;
}

sub port { return $_[0]->{port}; }
sub host { return $_[0]->{host}; }
sub token { return $_[0]->{token}; }
sub pid { return $_[0]->{pid}; }

# The URL of path on the server.
sub url
{
	my ($self, $path) = @_;
	return "http://$self->{host}:$self->{port}$path";
}

sub _call
{
	my ($self, $method, $path) = @_;
	my $r = $self->{http}->request($method, $self->url($path));
	die "$method $path: $r->{status} $r->{reason} $r->{content}\n"
	  unless $r->{success};
	return $self->{json}->decode($r->{content});
}

# Forgets the request log, tasks, flaky counters and counters.
sub reset
{
	my ($self) = @_;
	return $self->_call('POST', '/_reset');
}

# {requests, in_flight, max_in_flight, tasks_created}: the /_stats request
# itself is one of the requests (and in flight).
sub stats
{
	my ($self) = @_;
	return $self->_call('GET', '/_stats');
}

# Requests being served now, the /_stats request that asks not counted.
sub in_flight
{
	my ($self) = @_;
	return $self->stats->{in_flight} - 1;
}

# The logged requests ({method, path, query, headers, body, at}), those
# for which filter returns true when one is given; the server's own
# /_stats requests left out.
sub requests
{
	my ($self, $filter) = @_;
	my @all = grep { $_->{path} ne '/_stats' }
	  @{ $self->_call('GET', '/_requests')->{requests} };
	return $filter ? grep { $filter->($_) } @all : @all;
}

# The logged requests that carried Idempotency-Key key.
sub requests_with_key
{
	my ($self, $key) = @_;
	return $self->requests(
		sub { ($_[0]{headers}{'idempotency-key'} // '') eq $key });
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	my $waited = 0;
	while (waitpid($self->{pid}, POSIX::WNOHANG()) == 0)
	{
		if ($waited++ > 100)
		{
			kill 'KILL', $self->{pid};
			waitpid($self->{pid}, 0);
			last;
		}
		usleep(100_000);
	}
	$self->{pid} = undef;
	return;
}

END
{
	# Keep the test's exit status: waitpid() sets $?.
	local $?;
	$_->stop foreach @servers;
}

sub closed_port
{
	my $sock = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Proto => 'tcp',
		Listen => 1,
		ReuseAddr => 0) or die "cannot bind a socket: $!";
	my $port = $sock->sockport;
	close($sock);
	return $port;
}

sub poll_until
{
	my ($code, $what) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (1)
	{
		return 1 if $code->();
		last if time() > $deadline;
		usleep(100_000);
	}
	diag "timed out waiting until: $what";
	return 0;
}

1;
