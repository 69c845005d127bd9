package Proc::Prefork::Interp::Server;

# The server (as the Rust side's src/script/server.rs): waits on the
# listening socket, the watcher's pipe (or, for a client that left the
# watching to us, capability "watch", the socket's directory), its
# monitor's control socket and pidfd (and the reload watch, in the same
# one inotify instance); accepts each call, greets it and hands it to
# its one monitor; quits when its socket is replaced or removed, on idle
# timeout, reload; never forks per call. The monitor is forked before the
# first call is handed over and again as soon as one has died.

use strict;
use warnings;

use IO::FDPass;
use IO::Handle;
use POSIX qw(:errno_h);
use Fcntl qw(O_APPEND O_NOFOLLOW O_RDONLY O_WRONLY);
use Proc::Prefork::Interp::Log;
use Proc::Prefork::Interp::Monitor;
use Proc::Prefork::Interp::Reload;
use Proc::Prefork::Interp::Sys;
use Proc::Prefork::Interp::Wire;
use Socket qw(AF_UNIX MSG_DONTWAIT PF_UNSPEC SOCK_STREAM SOL_SOCKET SO_PEERCRED);
use Time::HiRes ();

our $VERSION = '0.1.0';

# The quit reason when the socket path no longer names our socket.
use constant SOCKET_WENT => 'socket replaced or removed';
# Without inotify, how often the socket path is looked at (seconds).
use constant SOCKET_POLL => 5;

# In the daemon: the server of $config (Setup's: the checked options,
# setup, init_env, world, env, titles, reload).
sub new {
    my ($class, $config) = @_;
    my $setup = $config->{setup};
    my %caps = map { ($_ => 1) } @{ $setup->{client_caps} };
    my $started = $setup->{started_secs} + $setup->{started_nsecs} / 1e9;
    my $self = bless {
        listen       => fdopen($setup->{listen},    '+<'),
        # Only a client that said it reads greeting xdata is offered our
        # extensions, those it speaks (chiark-utils' misreads any).
        offered      => [ grep { $caps{$_} } OUR_CAPS ],
        world        => $config->{world},
        env          => $config->{env},
        start        => $config->{start},
        terminals    => $config->{terminals},
        started      => $started,
        started_secs => $setup->{started_secs},
        max_servers  => $config->{max_servers},
        idle_timeout => _shorter($config->{idle_timeout}, $setup->{idle_limit}),
        max_errors   => $config->{max_errors},
        reload       => Proc::Prefork::Interp::Reload->new($config->{reload}, $started),
        # For the monitor.
        spare        => $config->{spare_handlers},
        grace        => $config->{interrupt_grace},
        titles       => $config->{titles},
        init_env     => $config->{init_env},
        # The client's program, to exec as a session's keeper (or undef).
        keeper_program => $setup->{keeper},
        monitor      => undef,    # {pid, pidfd, control} while there is one
        served       => 0,        # calls handed to the monitor
        busy         => 0,        # of those, not yet ended ('d')
        errors       => 0,
        idle_since   => Time::HiRes::time(),
    }, $class;
    $self->{lock_path} = $self->lock_path;
    set_cloexec($self->{listen});
    $self->{listen}->blocking(0);
    if ($caps{watch}) {
        # The client starts no watcher for us: its pipes mean nothing.
        POSIX::close($_) for @$setup{qw(watch_in watch_err)};
        $self->watch_own_socket;
    } else {
        $self->take_watcher($setup);
    }
    # Said once, at the start (as every greeting says it).
    my $degraded = $self->degraded;
    write_log('err', "degraded: $degraded") if defined $degraded;
    return $self;
}

# The shorter of two idle timeouts (undef: none).
sub _shorter {
    my ($mine, $bound) = @_;
    return $bound if !defined $mine;
    return $mine if !defined $bound;
    return $mine < $bound ? $mine : $bound;
}

# The pipes to chiark-utils' watcher (or that of a client without
# "watch"): EOF or text on WATCHE means our socket went.
sub take_watcher {
    my ($self, $setup) = @_;
    $self->{watch_err} = fdopen($setup->{watch_err}, '<');
    $self->{watch_in}  = fdopen($setup->{watch_in},  '>');
    set_cloexec($self->{$_}) for qw(watch_err watch_in);
    $self->{watch_err}->blocking(0);
    return;
}

# Watches the socket path (getsockname of LISTEN) ourselves: its (dev,
# ino) now, then the directory's events in the reload's inotify
# instance, or without one a look every SOCKET_POLL seconds (said once,
# in the log and in every greeting). A path already gone, or another
# socket there than the one the client made at our start (its mtime is
# that start), leaves us the call that started us to serve.
sub watch_own_socket {
    my ($self) = @_;
    my $path = $self->socket_path // return;    # (not named: nothing to watch)
    my @st = lstat $path;
    $self->{socket} = { path => $path, dev => $st[0], ino => $st[1] };
    $self->{socket_went_early} = 1 if !@st || !$self->made_at_start($path);
    return if $self->{reload}->watch_socket($path);
    $self->{socket_poll_at} = Time::HiRes::time() + SOCKET_POLL;
    return;
}

# Whether $path's mtime is our start (SECS.NSECS of PREFORK_INTERP): the
# socket the client made for us. (To the microsecond: both are floats.)
sub made_at_start {
    my ($self, $path) = @_;
    my $mtime = (Time::HiRes::lstat($path))[9] // return 0;
    return abs($mtime - $self->{started}) < 1e-6;
}

# What the server does without, as its greetings say: a line of text, or
# undef. (Without "watch" the socket is the watcher's business.)
sub degraded {
    my ($self) = @_;
    my $reason = $self->{reload}->without_inotify;
    if (defined $reason) {
        return "no inotify ($reason): socket path checked every " . SOCKET_POLL
            . ' s, files at every call'
            if $self->{socket};
        return "no inotify ($reason): files checked at every call";
    }
    my ($file, $why) = $self->{reload}->unwatched_file;
    return defined $file ? "cannot watch $file ($why): files checked at every call" : undef;
}

# Hands each call to the monitor, starting with the first ($pending, the
# setup's). Returns (true) only in an executor, once it is its call.
sub run {
    my ($self, $pending) = @_;
    my $invocation = eval {
        while (1) {
            if (!$self->{monitor}) {
                my $monitor = $self->spawn_monitor($pending);
                return $monitor->run if $monitor;
            }
            if ($pending) {
                $self->hand_over($pending);
                close $pending;
                # (Gone before we started: that call was ours to serve.)
                $self->quit(SOCKET_WENT, 1) if $self->{socket_went_early};
            }
            $pending = $self->next_call;
        }
    };
    if (!$invocation) {
        write_log('err', "server failed: $@");
        POSIX::_exit(1);
    }
    return 1;
}

# Forks the monitor. Returns it in the child, which has closed every fd
# of the server's (and @close); nothing in the server.
sub spawn_monitor {
    my ($self, @close) = @_;
    my ($control, $theirs);
    if (!socketpair($control, $theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)) {
        $self->error("socketpair: $!");
        return;
    }
    my $pid = fork;
    if (!defined $pid) {
        $self->error("cannot fork the monitor: $!");
        return;
    }
    if ($pid == 0) {
        close $_ for grep {defined} @$self{qw(listen watch_err watch_in)},
            $self->{reload}->watch, @close, $control;
        return Proc::Prefork::Interp::Monitor->new(control => $theirs,
            map { ($_ => $self->{$_}) } qw(spare grace titles init_env keeper_program));
    }
    close $theirs;
    my $pidfd = eval { pidfd_open($pid) };
    if (!$pidfd) {
        # Unwatchable: it must not serve. Without its control socket it
        # leaves once its spare executors have.
        $self->error($@);
        close $control;
        waitpid($pid, 0);
        return;
    }
    $self->{monitor} = { pid => $pid, pidfd => $pidfd, control => $control };
    return;
}

# Greets the caller and hands the call to the monitor.
sub hand_over {
    my ($self, $call) = @_;
    my $monitor = $self->{monitor};
    if (!$monitor) {
        write_log('err', 'no monitor to take a call');    # its fork failed (logged)
        return;
    }
    my $xdata = encode_greeting_xdata($self->{offered}, $self->{world}, $self->{env},
        $self->{start}, $self->{terminals}, $self->degraded, {
        served  => $self->{served},
        running => $self->{busy},
        idle_ms => $self->{busy} ? 0
            : int((Time::HiRes::time() - $self->{idle_since}) * 1000),
    });
    if (!eval { send_all($call, encode_greeting($xdata)); 1 }) {
        write_log('info', "caller went away before its greeting: $@");
        return;
    }
    if (!IO::FDPass::send(fileno $monitor->{control}, fileno $call)) {
        # It has died (its pidfd says so next): this call is lost with
        # those it was serving.
        write_log('err', "monitor $monitor->{pid} cannot take a call: $!");
        return;
    }
    $self->{served}++;
    $self->{busy}++;
    return;
}

# Counts the calls the monitor says have ended, a 'd' each, or an 'h'
# for one that ended before a request (which leaves the idle time be: a
# listing, or a caller that went elsewhere, keeps no server alive). False
# when the monitor has died (EOF).
sub hear_monitor {
    my ($self) = @_;
    my $ended = 0;
    my $alive = 1;
    while (1) {
        my $got = recv($self->{monitor}{control}, my $bytes, 4096, MSG_DONTWAIT);
        if (!defined $got) {
            next if $! == EINTR;
            $alive = 0 unless $! == EAGAIN || $! == EWOULDBLOCK;
            last;
        }
        if (!length $bytes) {
            $alive = 0;
            last;
        }
        my $done = _count($bytes, MONITOR_CALL_ENDED);
        my $dropped = _count($bytes, MONITOR_CALL_DROPPED);
        $ended += $done;
        $self->{busy} -= $done + $dropped;
    }
    $self->{busy} = 0 if $self->{busy} < 0;
    $self->{idle_since} = Time::HiRes::time() if $ended && !$self->{busy};
    return $alive;
}

# How many times the byte $byte is in $bytes.
sub _count {
    my ($bytes, $byte) = @_;
    return scalar(() = $bytes =~ /\Q$byte\E/g);
}

# The monitor has died: it never leaves while we live, unless killed. Its
# calls are lost (their clients saw EOF).
sub monitor_died {
    my ($self) = @_;
    my $monitor = delete $self->{monitor};
    close $monitor->{control};
    close $monitor->{pidfd};
    waitpid($monitor->{pid}, 0);
    my $status = ${^CHILD_ERROR_NATIVE};
    $self->{busy} = 0;
    $self->{idle_since} = Time::HiRes::time();
    $self->error("monitor $monitor->{pid} " . describe_status($status));
    return;
}

# Leaves, logging and recording why; $socket_went: because our socket
# is no longer at its path.
sub quit {
    my ($self, $why, $socket_went) = @_;
    write_log('info', "server quitting: $why");
    $self->record_quit($why) unless $socket_went && $self->quit_recorded_since_start;
    POSIX::_exit(0);
}

# The path of the listening socket; undef for a socket not so named.
sub socket_path {
    my ($self) = @_;
    my $name = getsockname($self->{listen}) or return;
    my $path = eval { Socket::unpack_sockaddr_un($name) };
    return defined $path && length $path ? $path : undef;
}

# The identity's lock file, beside the listening socket; undef for a
# socket not so named.
sub lock_path {
    my ($self) = @_;
    return lock_path_for_socket($self->socket_path);
}

# Appends "quit SECONDS REASON" to the identity's lock file, for --list
# to show as the reason of the next server's start. Best effort: a lock
# file removed (--kill) is skipped.
sub record_quit {
    my ($self, $why) = @_;
    return unless defined $self->{lock_path};
    sysopen(my $lock, $self->{lock_path}, O_WRONLY | O_APPEND | O_NOFOLLOW) or return;
    syswrite($lock, encode_quit_line(time(), $why));
    close $lock;
    return;
}

# Whether the lock file's last quit line is dated at or after our start:
# whoever removed our socket has said why (the client evicting the least
# recently used server does), and that is the reason to show.
sub quit_recorded_since_start {
    my ($self) = @_;
    return 0 unless defined $self->{lock_path};
    sysopen(my $lock, $self->{lock_path}, O_RDONLY | O_NOFOLLOW) or return 0;
    my $text = '';
    1 while sysread($lock, $text, 65536, length $text);
    close $lock;
    my ($secs) = decode_last_quit($text);
    return defined $secs && $secs >= $self->{started_secs};
}

sub error {
    my ($self, $message) = @_;
    chomp $message;
    write_log('err', $message);
    $self->quit("more than $self->{max_errors} errors")
        if ++$self->{errors} > $self->{max_errors};
    return;
}

# Waits for the next call to serve; handles everything else meanwhile.
# Returns nothing when the monitor has died, for another to be forked at
# once (a call accepted in the same round is returned: it waits for it).
sub next_call {
    my ($self) = @_;
    while (1) {
        my $monitor = $self->{monitor};
        my ($rout, $listening) = $self->wait or next;
        my $ready = sub { defined $_[0] && vec($rout, fileno $_[0], 1) };
        $self->check_watcher if $ready->($self->{watch_err});
        $self->heard_inotify if $ready->($self->{reload}->watch);
        my $accepting = $listening && $ready->($self->{listen});
        # Before accepting, so that `running` in a greeting is exact once
        # a client has its status: the monitor says 'd' before it sends
        # one. (A caller being ready means reading now, however select
        # saw the control socket.)
        my $died = 0;
        if ($monitor && ($ready->($monitor->{control}) || $accepting
            || $ready->($monitor->{pidfd})))
        {
            if (!$self->hear_monitor || $ready->($monitor->{pidfd})) {
                $self->monitor_died;
                $died = 1;
            }
        }
        if ($accepting) {
            my $call = $self->accept;
            return $call if $call;
        }
        return if $died;
    }
}

# One select: (the bits ready, whether the listening socket was in it);
# nothing on a timeout or EINTR. Quits once idle for idle_timeout, or
# when a look at the socket path (without inotify) finds it gone.
sub wait {
    my ($self) = @_;
    my $monitor = $self->{monitor};
    my $listening = !defined $self->{max_servers} || $self->{busy} < $self->{max_servers};
    my $rin = '';
    vec($rin, fileno $_, 1) = 1 for grep {defined} $self->{watch_err}, $self->{reload}->watch,
        $monitor ? @$monitor{qw(control pidfd)} : (), $listening ? $self->{listen} : ();
    my $timeout = _shorter(scalar $self->idle_left, scalar $self->poll_socket);
    my $ready = select(my $rout = $rin, undef, undef, $timeout);
    if ($ready < 0) {
        $self->error("select failed: $!") unless $! == EINTR;
        return;
    }
    return if $ready == 0;
    return ($rout, $listening);
}

# Seconds left before the idle timeout (undef: none while busy, or
# none at all); quits once there are none.
sub idle_left {
    my ($self) = @_;
    return if !defined $self->{idle_timeout} || $self->{busy};
    my $left = $self->{idle_timeout} - (Time::HiRes::time() - $self->{idle_since});
    $self->quit('idle timeout') if $left <= 0;
    return $left;
}

# Without inotify: looks at the socket path when it is time to (quits
# if it went). Seconds until the next look; undef when inotify watches.
sub poll_socket {
    my ($self) = @_;
    return unless $self->{socket_poll_at};
    my $now = Time::HiRes::time();
    if ($now >= $self->{socket_poll_at}) {
        $self->check_socket;
        $self->{socket_poll_at} = $now + SOCKET_POLL;
    }
    return $self->{socket_poll_at} - $now;
}

# The inotify instance said something: the files may have changed, or
# the socket may have gone.
sub heard_inotify {
    my ($self) = @_;
    $self->check_socket if $self->{reload}->note_events;
    return;
}

# Quits unless our socket is still at its path (the same dev, ino).
sub check_socket {
    my ($self) = @_;
    my $socket = $self->{socket} or return;
    my @st = lstat $socket->{path};
    $self->quit(SOCKET_WENT, 1)
        if !@st || !defined $socket->{dev} || $st[0] != $socket->{dev} || $st[1] != $socket->{ino};
    return;
}

# The watcher said something: the socket was replaced or removed.
sub check_watcher {
    my ($self) = @_;
    my $got = sysread($self->{watch_err}, my $text, 1024);
    if (!defined $got) {
        $self->quit("cannot read from the watcher: $!") unless $! == EAGAIN || $! == EINTR;
    } elsif ($got == 0) {
        $self->quit(SOCKET_WENT . ' (watcher exited)', 1);
    } else {
        $text =~ s/\s+\z//;
        $self->quit("watcher reported: $text", 1);
    }
    return;
}

# A caller: its connection, unless it is another user's (refused); the
# reload files are checked first (the server quits if one changed,
# which drops the call: its client starts afresh).
sub accept {
    my ($self) = @_;
    my $conn;
    if (!CORE::accept($conn, $self->{listen})) {
        $self->error("accept failed: $!")
            unless $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
        return;
    }
    # Another user reached our socket (a run directory opened up by
    # hand): they get nothing, and a log line.
    my $cred = getsockopt($conn, SOL_SOCKET, SO_PEERCRED);
    my ($peer_pid, $peer_uid) = $cred ? unpack('i I', $cred) : ();
    if (!defined $peer_uid || $peer_uid != $<) {
        write_log('err', defined $peer_uid
            ? "refused a call from uid $peer_uid (pid $peer_pid): this server is uid $<'s"
            : "refused a call whose caller is unknown: $!");
        close $conn;
        return;
    }
    my $file = $self->{reload}->check;
    $self->quit("$file changed") if defined $file;
    return $conn;
}

1;
