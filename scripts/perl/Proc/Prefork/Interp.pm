package Proc::Prefork::Interp;

# The Perl script side of prefork-interp. Process roles, as in the Rust
# library (src/script/server.rs, monitor.rs, executor.rs):
#
#   setup run --fork--> server (setsid; stdio /dev/null; syslog)
#     exit 0              | waits on LISTEN, WATCHE, the monitors' pidfds
#                         | (and an inotify watch of the modules); quits on
#                         | watcher EOF, idle timeout, reload
#                         +--fork--> monitor (own process group), in advance
#                         |            +--fork--> executor-to-be: the server's
#                         |                       signals back; waits
#                         | per call: accept, greeting, then the call socket
#                         | to the idle monitor and to its executor, which
#                         | reads the request, sends 'P' (extended), tells
#                         | the monitor 'r' and returns from
#                         | prefork_initialisation_complete; the monitor waits on its
#                         | pidfd, REAPS IT FIRST, then SIGINTs what is left
#                         | of its group, sends the status. The server forks
#                         | the next spare handler meanwhile.
#
# Server and monitor leave with POSIX::_exit: END blocks and destructors
# run in executors only.

use strict;
use warnings;

use Config ();
use Exporter qw(import);
use Fcntl qw(F_GETFD F_SETFD FD_CLOEXEC);
use IO::FDPass;
use IO::Handle;
use POSIX qw(:errno_h :signal_h :sys_wait_h);
use Socket qw(AF_UNIX MSG_NOSIGNAL PF_UNSPEC SOCK_STREAM SOL_SOCKET SO_PEERCRED);
use Sys::Syslog ();
use Time::HiRes ();

our $VERSION = '0.1.0';
our @EXPORT  = qw(prefork_initialisation_complete prefork_autoreload_also_check);

# pidfd_open(2) has this number on every Linux architecture (since 5.3).
use constant SYS_pidfd_open => 434;
use constant MAX_PAYLOAD    => 64 * 1024 * 1024;

# inotify(7), for auto-reload checks that cost nothing per call.
use constant {
    IN_MODIFY      => 0x2,
    IN_ATTRIB      => 0x4,
    IN_CLOSE_WRITE => 0x8,
    IN_DELETE_SELF => 0x400,
    IN_MOVE_SELF   => 0x800,
    IN_NONBLOCK    => 0x800,      # O_NONBLOCK
    IN_CLOEXEC     => 0x80000,    # O_CLOEXEC
};
# Negotiated extensions (man/prefork-interp.7), offered to a client that
# declared them.
my @OUR_CAPS = qw(signals context);
# Signals an extended client may have delivered to the executor's group;
# the monitor ignores them, the executor gets back what the server had.
my @FORWARDED = qw(INT TERM HUP QUIT USR1 USR2 WINCH ALRM TSTP CONT);
my %SIGNAL_NUMBER;    # POSIX lacks some (WINCH); perl's own table has all
@SIGNAL_NUMBER{ split ' ', $Config::Config{sig_name} } = split ' ', $Config::Config{sig_num};
my %FORWARDED_NUMBER = map { ($SIGNAL_NUMBER{$_} => 1) } @FORWARDED;

use constant WATCH_MASK =>
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF;

my @also_check;
my $logging = 0;

sub prefork_autoreload_also_check {
    push @also_check, @_;
    return;
}

sub _log {
    my ($priority, $message) = @_;
    return unless $logging;
    eval { Sys::Syslog::syslog($priority, '%s', $message) };
    return;
}

# ------------------------------------------------------------ protocol

# PREFORK_INTERP=v1,SECS.NSECS LISTEN,CALL,WATCHI,WATCHE (extra words and
# items are ignored). This is the order chiark-utils' client sends: WATCHI
# is the write end of the watcher's stdin, WATCHE the read end of its
# stderr.
sub _parse_setup {
    my ($value) = @_;
    my $bad = sub { die "prefork-interp: bad PREFORK_INTERP: $_[0]\n" };
    my @words = split / /, $value, -1;
    $bad->('expected two words') unless @words >= 2;
    my ($version, $time) = split /,/, $words[0], -1;
    $bad->('unsupported version ' . ($version // '') . ' (expected v1)')
        unless defined $version && $version eq 'v1';
    $bad->('start time must be SECS.NSECS with 9 digits of nanoseconds')
        unless defined $time && $time =~ /\A([0-9]+)\.([0-9]{9})\z/;
    my ($secs, $nsecs) = ($1, $2);
    my @fds = split /,/, $words[1], -1;
    $bad->('file descriptors must be four non-negative numbers')
        unless @fds >= 4 && !grep { !/\A[0-9]+\z/ } @fds[0 .. 3];
    # Our client adds "pfi-caps=NAME,...": it reads greeting xdata.
    my ($caps) = map { /\Apfi-caps=(.*)\z/s ? $1 : () } @words[2 .. $#words];
    return {
        client_caps => { map { ($_ => 1) } grep {length} split /,/, $caps // '' },
        started  => $secs + $nsecs / 1e9,
        listen   => $fds[0] + 0,
        call     => $fds[1] + 0,
        watch_in => $fds[2] + 0,
        watch_err => $fds[3] + 0,
    };
}

# Splits a request payload ("NAME=value\0"... "\0" "arg\0"...).
sub _decode_payload {
    my ($payload) = @_;
    die "request payload does not end with a NUL\n"
        unless length $payload && substr($payload, -1) eq "\0";
    my @strings = split /\0/, substr($payload, 0, -1), -1;
    my @env;
    while (1) {
        die "request payload has no empty string ending the environment\n"
            unless @strings;
        my $entry = shift @strings;
        last if $entry eq '';
        push @env, $entry;
    }
    return (\@env, \@strings);
}

sub _read_exact {
    my ($fh, $length) = @_;
    my $data = '';
    while (length $data < $length) {
        my $got = sysread($fh, $data, $length - length $data, length $data);
        if (!defined $got) {
            next if $! == EINTR;
            die "read failed: $!\n";
        }
        die "hung up\n" if $got == 0;
    }
    return $data;
}

sub _send_all {
    my ($fh, $data) = @_;
    while (length $data) {
        my $sent = send($fh, $data, MSG_NOSIGNAL);
        if (!defined $sent) {
            next if $! == EINTR;
            die $! == EPIPE || $! == ECONNRESET ? "hung up\n" : "send failed: $!\n";
        }
        substr($data, 0, $sent) = '';
    }
    return;
}

# ------------------------------------------------------- small helpers

sub _fd_is_open {
    my ($fd) = @_;
    my $copy = POSIX::dup($fd);
    return 0 unless defined $copy;
    POSIX::close($copy);
    return 1;
}

sub _thread_count {
    opendir(my $dir, '/proc/self/task') or return 1;
    my $n = grep { !/\A\./ } readdir $dir;
    closedir $dir;
    return $n;
}

sub _fdopen {
    my ($fd, $mode) = @_;
    open(my $fh, "$mode&=", $fd) or die "cannot use fd $fd: $!\n";
    return $fh;
}

sub _set_cloexec {
    my ($fh) = @_;
    my $flags = fcntl($fh, F_GETFD, 0) or die "fcntl: $!\n";
    fcntl($fh, F_SETFD, $flags | FD_CLOEXEC) or die "fcntl: $!\n";
    return;
}

sub _pidfd_open {
    my ($pid) = @_;
    my $fd = syscall(SYS_pidfd_open, $pid + 0, 0);
    die "pidfd_open($pid) failed: $! (Linux 5.3 or later is needed)\n" if $fd < 0;
    return _fdopen($fd, '<');
}

sub _describe_status {
    my ($status) = @_;
    return 'exited with status ' . WEXITSTATUS($status) if WIFEXITED($status);
    if (WIFSIGNALED($status)) {
        my $core = $status & 0x80 ? ' (core dumped)' : '';
        return 'was killed by signal ' . WTERMSIG($status) . $core;
    }
    return sprintf 'has wait status %#x', $status;
}

# Files whose change since SECS.NSECS means "quit; the next call starts
# a fresh server". A missing file is no reason; an unreadable one is.
# Returns the first changed file (or undef), and whether one is missing.
sub _changed_file {
    my ($files, $started) = @_;
    my $missing = 0;
    for my $file (@$files) {
        my @st = Time::HiRes::stat($file);
        if (!@st) {
            if ($! == ENOENT) {
                $missing = 1;
                next;
            }
            _log('err', "cannot check $file: $!");
            return ($file, $missing);
        }
        return ($file, $missing) if $st[9] > $started;
    }
    return (undef, $missing);
}

# System call numbers for this perl's ABI: x86_64, and the generic table
# that aarch64, riscv64 and loongarch64 share. Elsewhere there are none:
# there is no inotify watch, and every call stats every file (as the
# original always does); an executor is not told of its monitor's death.
# (syscall.ph would know, but costs every cold start ~9 ms to load.)
my %SYSCALL = do {
    my $arch = $Config::Config{archname} // '';
    $arch =~ /\Ax86_64-linux/
        ? (inotify_init1 => 294, inotify_add_watch => 254, prctl => 157)
        : $arch =~ /\A(?:aarch64|riscv64|loongarch64)-linux/
        ? (inotify_init1 => 26, inotify_add_watch => 27, prctl => 167)
        : ();
};

# Watches the reload files. Returns a handle that becomes readable when
# one of them may have changed, or nothing (then: stat every call).
sub _watch_files {
    my ($files) = @_;
    return unless $SYSCALL{inotify_init1};
    my $fd = syscall($SYSCALL{inotify_init1}, IN_NONBLOCK | IN_CLOEXEC);
    return if $fd < 0;
    my $watch = _fdopen($fd, '<');
    return _add_watches($watch, $files) ? $watch : ();
}

# (Re-)adds a watch per file; a file replaced by rename needs a new one.
sub _add_watches {
    my ($watch, $files) = @_;
    for my $file (@$files) {
        my $path = "$file";    # a string, so syscall passes its address
        next if syscall($SYSCALL{inotify_add_watch}, fileno $watch, $path, WATCH_MASK) >= 0;
        next if $! == ENOENT;    # a missing file is no reason to reload
        _log('err', "cannot watch $file: $!; checking every call instead");
        return 0;
    }
    return 1;
}

# -------------------------------------------------------------- server

sub prefork_initialisation_complete {
    my %opts = @_;
    # Armed here, before the server forks: executors inherit it (the
    # server and monitors never run END blocks), and a direct run ends as
    # a call does.
    _arm_fast_exit() if $opts{fast_exit};
    my $value = delete $ENV{PREFORK_INTERP};
    return unless defined $value;    # standalone: nothing more to do

    my $threads = _thread_count();
    die "prefork-interp: $threads threads are running; "
        . "prefork_initialisation_complete must be called before any other thread "
        . "starts (a fork would lose them)\n"
        if $threads != 1;
    my $setup = _parse_setup($value);
    for my $fd (@$setup{qw(listen call watch_in watch_err)}) {
        die "prefork-interp: PREFORK_INTERP names fd $fd, which is not open\n"
            unless $fd >= 3 && _fd_is_open($fd);
    }

    my $max_servers = $opts{max_servers} // 4;
    die "prefork-interp: max_servers must not be 0 (negative for no limit)\n"
        if $max_servers == 0;
    $max_servers = undef if $max_servers < 0;
    my $idle_timeout = $opts{idle_timeout} // 1_000_000;
    $idle_timeout = undef if $idle_timeout < 0;
    my $max_errors = $opts{max_errors} // 100;
    my $spare = $opts{spare_handlers} // 1;
    die "prefork-interp: spare_handlers must be at least 1\n" unless $spare >= 1;
    my $facility = $opts{log_facility} // 'LOG_USER';

    my @reload = @{ $opts{autoreload_extra} // [] };
    push @reload, @also_check;
    if ($opts{autoreload_inc} // 1) {
        unshift @reload, $0, grep { defined && !ref } values %INC;
    }

    # What the script printed goes to the caller's stderr now, once, not
    # into every executor's buffers.
    STDOUT->flush;
    STDERR->flush;
    if (length $facility) {
        # libc's syslog: connects on the first message, never over a network.
        Sys::Syslog::setlogsock('native');
        Sys::Syslog::openlog("prefork-interp $0", 'nofatal,pid', $facility);
        $logging = 1;
    }

    my $pid = fork;
    die "prefork-interp: cannot fork the server: $!\n" unless defined $pid;
    POSIX::_exit(0) if $pid;    # the setup run ends; the client waits for it

    # The daemon. From here the script's own code must never run except
    # in executors: any failure is logged and ends the process.
    my $server = eval {
        POSIX::setsid();
        $SIG{CHLD} = 'DEFAULT';    # a caller ignoring it would break waitpid
        my %s = (
            listen       => _fdopen($setup->{listen},   '+<'),
            watch_err    => _fdopen($setup->{watch_err}, '<'),
            watch_in     => _fdopen($setup->{watch_in},  '>'),
            started      => $setup->{started},
            # Only a client that said it reads greeting xdata is offered
            # our extensions, those it speaks (chiark-utils' misreads any).
            offered => [ grep { $setup->{client_caps}{$_} } @OUR_CAPS ],
            max_servers  => $max_servers,
            idle_timeout => $idle_timeout,
            max_errors   => $max_errors,
            reload       => \@reload,
            # Watches first, then the first accepted call checks every
            # file (dirty): nothing changed between the two is missed.
            watch        => _watch_files(\@reload),
            dirty        => 1,
            monitors     => {},    # pid => pidfd, idle or busy
            idle         => [],    # [pid, control, handover] waiting
            spare        => $spare,
            served       => 0,
            errors       => 0,
            idle_since   => Time::HiRes::time(),
        );
        _set_cloexec($s{$_}) for qw(listen watch_err watch_in);
        $s{listen}->blocking(0);
        $s{watch_err}->blocking(0);
        open(STDIN,  '<', '/dev/null') or die "cannot reopen stdin: $!\n";
        open(STDOUT, '>', '/dev/null') or die "cannot reopen stdout: $!\n";
        open(STDERR, '>', '/dev/null') or die "cannot reopen stderr: $!\n";
        \%s;
    };
    if (!$server) {
        _log('err', "cannot start the server: $@");
        POSIX::_exit(1);
    }

    # Hand each call to an idle handler (a monitor and its executor,
    # forked in advance: no fork on a call's critical path), forking one
    # only if none is waiting; then make up the spares.
    my $pending = _fdopen($setup->{call}, '+<');
    my $invocation = eval {
        while (1) {
            if ($pending) {
                if (!@{ $server->{idle} }) {
                    my @child = _spawn_handler($server, $pending);
                    return _monitor(@child) if @child;
                }
                _hand_over($server, $pending);
                close $pending;
                undef $pending;
            }
            while (@{ $server->{idle} } < $server->{spare}) {
                my @child = _spawn_handler($server);
                return _monitor(@child) if @child;
                last if $server->{spawn_failed};
            }
            $pending = _next_call($server);
        }
    };
    if (!$invocation) {
        _log('err', "server failed: $@");
        POSIX::_exit(1);
    }
    return;    # in an executor, into the script
}

# Forks a call handler. Returns (control, handover) in the child, which
# has closed every fd of the server's (other handlers' sockets, and
# @close); nothing in the server.
sub _spawn_handler {
    my ($s, @close) = @_;
    delete $s->{spawn_failed};
    my ($control, $control_theirs, $handover, $handover_theirs);
    if (!socketpair($control, $control_theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        || !socketpair($handover, $handover_theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC))
    {
        _server_error($s, "socketpair: $!");
        $s->{spawn_failed} = 1;
        return;
    }
    my $pid = fork;
    if (!defined $pid) {
        _server_error($s, "cannot fork a call handler: $!");
        $s->{spawn_failed} = 1;
        return;
    }
    if ($pid == 0) {
        close $_ for grep {defined} @$s{qw(listen watch_err watch_in watch)}, @close,
            $control, $handover;
        close $_ for values %{ $s->{monitors} };
        close $_ for map { @$_[1, 2] } @{ $s->{idle} };
        return ($control_theirs, $handover_theirs);
    }
    close $control_theirs;
    close $handover_theirs;
    if (my $pidfd = eval { _pidfd_open($pid) }) {
        $s->{monitors}{$pid} = $pidfd;
        push @{ $s->{idle} }, [ $pid, $control, $handover ];
    } else {
        # Unwatchable: it must not serve. Without its control socket it
        # leaves at once.
        _server_error($s, $@);
        close $control;
        close $handover;
        waitpid($pid, 0);
    }
    return;
}

# Handlers serving a call (the others wait idle).
sub _busy {
    my ($s) = @_;
    return (keys %{ $s->{monitors} }) - @{ $s->{idle} };
}

# Greets the caller and hands the call to an idle handler: its monitor
# first (an executor handed the call first could finish it before the
# monitor knew it had one), then its executor.
sub _hand_over {
    my ($s, $call) = @_;
    my $busy = _busy($s);
    my @offered = @{ $s->{offered} };
    my $xdata = @offered
        ? "pfi-caps 1\ncaps " . join(',', @offered) . "\nserved $s->{served}\nrunning $busy\n"
        : '';
    if (!eval { _send_all($call, "PFI\n" . pack('N', length $xdata) . $xdata); 1 }) {
        _log('info', "caller went away before its greeting: $@");
        return;
    }
    while (my $handler = pop @{ $s->{idle} }) {
        my ($pid, $control, $handover) = @$handler;
        my $ok = IO::FDPass::send(fileno $control, fileno $call)
            && IO::FDPass::send(fileno $handover, fileno $call);
        close $control;
        close $handover;
        if ($ok) {
            $s->{served}++;
            return;
        }
        _log('err', "call handler $pid: $!");    # died idle; its pidfd says so
    }
    _server_error($s, 'no call handler to take a call');
    return;
}

sub _quit {
    my ($why) = @_;
    _log('info', "server quitting: $why");
    POSIX::_exit(0);
}

sub _server_error {
    my ($server, $message) = @_;
    chomp $message;
    _log('err', $message);
    _quit("more than $server->{max_errors} errors")
        if ++$server->{errors} > $server->{max_errors};
    return;
}

# Waits for the next call to serve; handles everything else meanwhile.
sub _next_call {
    my ($s) = @_;
    while (1) {
        my $monitors = $s->{monitors};
        my $busy = _busy($s);
        my $listening = !defined $s->{max_servers} || $busy < $s->{max_servers};
        my $rin = '';
        vec($rin, fileno $s->{watch_err}, 1) = 1;
        vec($rin, fileno $s->{watch}, 1) = 1 if $s->{watch};
        vec($rin, fileno $_, 1) = 1 for values %$monitors;
        vec($rin, fileno $s->{listen}, 1) = 1 if $listening;
        my $timeout;
        if (defined $s->{idle_timeout} && !$busy) {
            $timeout = $s->{idle_timeout} - (Time::HiRes::time() - $s->{idle_since});
            _quit('idle timeout') if $timeout <= 0;
        }
        my $ready = select(my $rout = $rin, undef, undef, $timeout);
        if ($ready < 0) {
            _server_error($s, "select failed: $!") unless $! == EINTR;
            next;
        }
        next if $ready == 0;

        if (vec($rout, fileno $s->{watch_err}, 1)) {
            my $got = sysread($s->{watch_err}, my $text, 1024);
            if (!defined $got) {
                _quit("cannot read from the watcher: $!") unless $! == EAGAIN || $! == EINTR;
            } elsif ($got == 0) {
                _quit('socket replaced or removed (watcher exited)');
            } else {
                $text =~ s/\s+\z//;
                _quit("watcher reported: $text");
            }
        }
        if ($s->{watch} && vec($rout, fileno $s->{watch}, 1)) {
            1 while sysread($s->{watch}, my $events, 65536);
            $s->{dirty} = 1;
        }
        for my $pid (keys %$monitors) {
            next unless vec($rout, fileno $monitors->{$pid}, 1);
            close delete $monitors->{$pid};
            @{ $s->{idle} } = grep { $_->[0] != $pid } @{ $s->{idle} };
            if (waitpid($pid, 0) == $pid && ${^CHILD_ERROR_NATIVE} != 0) {
                _server_error($s, "monitor $pid " . _describe_status(${^CHILD_ERROR_NATIVE}));
            }
            $s->{idle_since} = Time::HiRes::time()
                unless _busy($s);
        }
        if ($listening && vec($rout, fileno $s->{listen}, 1)) {
            if (accept(my $conn, $s->{listen})) {
                # Another user reached our socket (a run directory opened
                # up by hand): they get nothing, and a log line.
                my $cred = getsockopt($conn, SOL_SOCKET, SO_PEERCRED);
                my ($peer_pid, $peer_uid) = $cred ? unpack('i I', $cred) : ();
                if (!defined $peer_uid || $peer_uid != $<) {
                    _log('err', defined $peer_uid
                        ? "refused a call from uid $peer_uid (pid $peer_pid): this server is uid $<'s"
                        : "refused a call whose caller is unknown: $!");
                    close $conn;
                    next;
                }
                $s->{idle_since} = Time::HiRes::time();
                if ($s->{dirty} || !$s->{watch}) {
                    my ($file, $missing) = _changed_file($s->{reload}, $s->{started});
                    # Dropping the call makes its client start afresh.
                    _quit("$file changed") if defined $file;
                    if ($s->{watch}) {
                        # A missing file has no watch to say when it is
                        # made again: while one is missing, every call
                        # checks.
                        $s->{dirty} = $missing;
                        delete $s->{watch} unless _add_watches($s->{watch}, $s->{reload});
                    }
                }
                return $conn;
            }
            _server_error($s, "accept failed: $!")
                unless $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
        }
    }
}

# ------------------------------------------------------------- monitor

# Runs in a freshly forked child of the server: forks the executor-to-be
# (which keeps $handover), waits for the call the server hands over on
# $control, and serves it. Returns (true) only in the executor.
sub _monitor {
    my ($control, $handover) = @_;
    # Reopened lazily if we log: no syslog fd must reach the executor.
    Sys::Syslog::closelog() if $logging;
    POSIX::setpgid(0, 0);
    # We deliver these to our group; they must not hurt us.
    my %saved;
    for my $name (@FORWARDED) {
        my $old = POSIX::SigAction->new;
        POSIX::sigaction($SIGNAL_NUMBER{$name}, POSIX::SigAction->new('IGNORE'), $old);
        $saved{$name} = $old;
    }
    socketpair(my $from_executor, my $theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        or do { _log('err', "socketpair: $!"); POSIX::_exit(1) };
    my $executor = fork;
    if (!defined $executor) {
        _log('err', "cannot fork the executor: $!");
        POSIX::_exit(1);
    }
    if ($executor == 0) {
        close $control;
        close $from_executor;
        return _executor($handover, $theirs, \%saved, getppid());
    }
    close $theirs;
    close $handover;
    my $pidfd = eval { _pidfd_open($executor) };
    if (!$pidfd) {
        _log('err', $@);
        kill 'KILL', $executor;
        waitpid($executor, 0);
        POSIX::_exit(1);
    }

    # Idle until the server hands us a call. (Both may be ready: the
    # executor may finish a whole call before we look. Only an executor
    # gone with no call handed over died idle.)
    my $rin = '';
    vec($rin, fileno $control, 1) = 1;
    vec($rin, fileno $pidfd,   1) = 1;
    my $rout;
    while (select($rout = $rin, undef, undef, undef) < 0) {
        next if $! == EINTR;
        _log('err', "select failed: $!");
        POSIX::_exit(1);
    }
    if (!vec($rout, fileno $control, 1)) {
        waitpid($executor, 0);
        _log('err', "idle executor $executor " . _describe_status(${^CHILD_ERROR_NATIVE}));
        POSIX::_exit(0);
    }
    my $fd = IO::FDPass::recv(fileno $control);
    if ($fd < 0) {
        # The server is gone or needs us no more; our executor leaves on
        # its own EOF.
        waitpid($executor, 0);
        POSIX::_exit(0);
    }
    close $control;
    my $call = _fdopen($fd, '+<');

    # The executor reads the request, sends 'P' (extended), then says 'r'
    # and the request byte. EOF instead: it could not (and logged why).
    my $ready = eval { _read_exact($from_executor, 2) };
    close $from_executor;
    if (!defined $ready || substr($ready, 0, 1) ne 'r') {
        waitpid($executor, 0);
        _log('err', "executor $executor failed before its call: it "
            . _describe_status(${^CHILD_ERROR_NATIVE}))
            if ${^CHILD_ERROR_NATIVE};
        POSIX::_exit(0);
    }
    my $extended = ord(substr($ready, 1, 1)) & 1;

    my $executor_gone = 1;
    $rin = '';
    vec($rin, fileno $pidfd, 1) = 1;
    vec($rin, fileno $call,  1) = 1;
    while (1) {
        if (select($rout = $rin, undef, undef, undef) < 0) {
            next if $! == EINTR;
            _log('err', "select failed: $!");
            last;
        }
        last if vec($rout, fileno $pidfd, 1);
        next unless vec($rout, fileno $call, 1);
        if (!$extended) {
            $executor_gone = 0;    # v1: the client has nothing more to say
            last;
        }
        my $frame = eval { _read_exact($call, 5) };
        if (!defined $frame) {
            $executor_gone = 0;    # the client left
            last;
        }
        my ($kind, $signal) = unpack 'a N', $frame;
        kill $signal, -getpgrp() if $kind eq 'S' && $FORWARDED_NUMBER{$signal};
    }
    my $pgrp = getpgrp();
    if ($executor_gone) {
        waitpid($executor, 0);
        my $status = ${^CHILD_ERROR_NATIVE};
        kill 'INT', -$pgrp;    # what it left behind; we ignore SIGINT
        eval { _send_all($call, $extended ? 'X' . pack('N', $status) : pack('N', $status)) };
    } else {
        kill 'INT', -$pgrp;
        waitpid($executor, 0);
        _log('info', 'client went away; script interrupted, it '
            . _describe_status(${^CHILD_ERROR_NATIVE}));
    }
    POSIX::_exit(0);
}

# ------------------------------------------------------------ executor

# Forked by the monitor before the call; dispositions are the server's
# (SIGINT and SIGPIPE: default) from the start. Gets the call socket from
# the server, reads the request itself, sends an extended call's 'P' with
# its own pid (before any per-call code), tells the monitor 'r', and
# returns into the script.
sub _executor {
    my ($handover, $monitor, $saved, $monitor_pid) = @_;
    # A monitor killed mid-call leaves the call with nobody to report its
    # end: it ends as when its client goes, with SIGINT.
    syscall($SYSCALL{prctl}, 1, SIGINT) if $SYSCALL{prctl};    # PR_SET_PDEATHSIG
    POSIX::_exit(0) if getppid() != $monitor_pid;    # it died before we asked
    POSIX::sigaction($SIGNAL_NUMBER{$_}, $saved->{$_}) for keys %$saved;
    $SIG{INT}  = 'DEFAULT';
    $SIG{PIPE} = 'DEFAULT';
    POSIX::sigprocmask(SIG_UNBLOCK, POSIX::SigSet->new(SIGINT, SIGPIPE));
    my $fd = IO::FDPass::recv(fileno $handover);
    POSIX::_exit(0) if $fd < 0;    # the monitor is gone, or never got a call
    my $call = _fdopen($fd, '+<');

    my ($byte, $fds, $env, $args, $context);
    my $ok = eval {
        $byte = ord _read_exact($call, 1);
        die sprintf("request starts with byte %#04x, expected 0x00, 0x01 or 0x03\n", $byte)
            unless $byte == 0 || $byte == 1 || $byte == 3;
        $fds = [];
        for (1 .. 3) {
            my $fd = IO::FDPass::recv(fileno $call);
            die "cannot receive a file descriptor: $!\n" if $fd < 0;
            push @$fds, $fd;
        }
        my $length = unpack 'N', _read_exact($call, 4);
        die "request too long ($length bytes, at most " . MAX_PAYLOAD . ")\n"
            if $length > MAX_PAYLOAD;
        ($env, $args) = _decode_payload(_read_exact($call, $length));
        if ($byte & 2) {
            my $cwd = IO::FDPass::recv(fileno $call);
            die "cannot receive the caller's directory: $!\n" if $cwd < 0;
            $context = { cwd => $cwd, umask => unpack('N', _read_exact($call, 4)) };
        }
        _send_all($call, 'P' . pack('N', $$)) if $byte & 1;
        1;
    };
    if (!$ok) {
        if ($@ eq "hung up\n") {
            _log('info', 'client went away before its call started');
            POSIX::_exit(0);
        }
        _log('err', "call failed: $@");
        POSIX::_exit(1);
    }
    # Nobody could report our status without the monitor.
    syswrite($monitor, 'r' . chr($byte)) == 2 or POSIX::_exit(127);

    if ($context) {
        # The caller's directory and umask (capability "context").
        open(my $cwd, '<&=', $context->{cwd}) or POSIX::_exit(127);
        chdir($cwd) or POSIX::_exit(127);
        close $cwd;
        umask $context->{umask};
    }
    # Reopening a standard handle keeps its fd number (0, 1, 2), and
    # PerlIO looks afresh at whether it is a terminal (line buffering).
    open(STDIN,  '<&', $fds->[0]) or POSIX::_exit(127);
    open(STDOUT, '>&', $fds->[1]) or POSIX::_exit(127);
    open(STDERR, '>&', $fds->[2]) or POSIX::_exit(127);
    POSIX::close($_) for @$fds;
    close $call;
    close $handover;
    close $monitor;

    %ENV = ();
    for my $entry (@$env) {
        # A name holding '=' cannot be set; only a hand-made environment
        # has one.
        $ENV{$1} = $2 if $entry =~ /\A([^=]+)=(.*)\z/s;
    }
    @ARGV = @$args;
    # As a fresh run starts: `die` exits with $! when it is set, and ours
    # (from the handle juggling above) is no business of the script's.
    ($!, $?, $@) = (0, 0, '');
    return 1;
}

# fast_exit: a block at the very end of the END list flushes every handle
# open for output and leaves with POSIX::_exit($?). END blocks compiled
# later (a `require` at run time) go to the front of the list, so it runs
# last of all and sees the final $?: the exit status is exact. What is
# skipped is global destruction (DESTROY of objects still alive at exit),
# which is most of the time a big process takes to end.
sub _arm_fast_exit {
    require B;
    # No END block yet means no END list: compiling one makes it.
    eval 'END { } 1' or die "prefork-interp: fast_exit: $@" unless ref(B::end_av()) eq 'B::AV';
    push @{ B::end_av()->object_2svref }, \&_fast_exit;
    return;
}

sub _fast_exit {
    # Perl flushes every handle open for output before an exec, also one
    # that fails (perlfunc, exec): a cheap and complete flush.
    { no warnings 'exec'; exec { '/nonexistent/prefork-interp/flush-all' } 'flush'; }
    POSIX::_exit($?);
}

1;

__END__

=head1 NAME

Proc::Prefork::Interp - script side of prefork-interp, for Perl

=head1 SYNOPSIS

    #!/usr/bin/prefork-interp -U,perl,-w
    use strict;
    use Proc::Prefork::Interp;
    use Heavy::Module;              # paid once, by the server
    my $table = load_big_table();   # likewise

    prefork_initialisation_complete();

    # Once per call, in a fresh fork of the initialised script:
    # @ARGV, %ENV, STDIN, STDOUT and STDERR are the caller's.
    print answer($table, @ARGV);

=head1 DESCRIPTION

prefork-interp(1) runs a script through a server that has done the
script's initialisation once; each call of the script is then a fork of
that server. This module is the Perl side: the script calls
C<prefork_initialisation_complete> after its expensive set-up.

It is a drop-in replacement for the module of the same name in
chiark-utils (Debian package chiark-scripts), with the same functions and
options, and it works with both prefork-interp clients (this project's
and chiark-utils'). It corrects the original where the original is
wrong:

=over

=item *

the caller gets the script's real exit status: a plain C<exit 3> is
reported as 3 (the original reports death by SIGINT), C<die> as 255, a
death by signal as that signal;

=item *

SIGINT and SIGPIPE have their default actions in every call, even when
the call that started the server came from a context that ignored them;

=item *

with this project's client, C<@ARGV> holds only the caller's arguments.

=back

=head1 FUNCTIONS

=over

=item C<< prefork_initialisation_complete( I<%options> ) >>

When the script was not started by prefork-interp (no C<PREFORK_INTERP>
in the environment), does nothing and returns: the script then runs
normally, which is useful for testing.

Otherwise turns the script into a server and returns once per call, each
time in a new process (the "executor") whose STDIN, STDOUT, STDERR,
C<@ARGV> and C<%ENV> are those of the call. C<$0> is the script's path.
It dies, with a message naming the problem, when other threads are
running or C<PREFORK_INTERP> is malformed.

Options:

=over

=item C<< max_servers => I<N> >>

How many calls are served at once; more callers wait their turn.
Negative: no limit. Default 4.

=item C<< idle_timeout => I<SECONDS> >>

Quit after this long with no call running or arriving; the next call
starts a new server. Negative: never. Default 1000000.

=item C<< autoreload_inc => I<BOOL> >>

Whether the script (C<$0>) and every file in C<%INC> are checked for
changes. Default true.

=item C<< autoreload_extra => [ I<PATHS> ] >>

More files to check.

=item C<< max_errors => I<N> >>

Quit after more than this many server errors. Default 100.

=item C<< log_facility => I<FACILITY> >>

Syslog facility for the server's messages, as C<Sys::Syslog::openlog>
takes it (C<LOG_USER>, C<local0>...). The empty string: no logging.
Default C<LOG_USER>.

=item C<< spare_handlers => I<N> >>

Call handlers (a monitor and its executor, forked in advance, so that no
fork is on a call's critical path) kept waiting for the next call; at
least 1. More absorb bursts of simultaneous calls; each idle one is two
processes sharing the server's memory. Default 1.

=item C<< fast_exit => I<BOOL> >>

End each call fast: when the script exits (C<exit>, the end of the
script, C<die>), END blocks run as usual, then every handle open for
output is flushed and the process leaves with C<POSIX::_exit($?)>, so the
exit status is exactly what it would have been. Skipped: global
destruction, that is C<DESTROY> of objects still alive at exit (lexicals
at file scope, globals) and the freeing of everything else, which is
most of the time a big interpreter takes to exit. Objects that go out of
scope before the end are destroyed as usual. It applies to a direct run
of the script too (so that both end alike), and to processes the script
forks that end with C<exit>. Default false.

=back

=item C<< prefork_autoreload_also_check( I<PATHS> ) >>

Also check these files for changes. Call it before
C<prefork_initialisation_complete>.

=back

=head1 AUTOMATIC RELOADING

When a call arrives, the server checks whether any watched file has a
modification time later than the server's start. If so it quits, and the
call starts a fresh server, which runs the script from the top. A file
that does not exist (never there, or removed since the server started)
is no reason to reload, as in chiark-utils' original; the Rust and
Python script sides behave the same.

The files are watched with inotify(7), so a call costs no check at all
unless one of them was touched since the last; then every file is
checked again. While a file is missing (it has no watch), every call
checks. (On Linux ABIs other than x86_64, aarch64, riscv64 and
loongarch64, every call stats every file, as the original does.)

=head1 BEYOND THE ORIGINAL

With this project's prefork-interp client (negotiated, so either end may
be chiark-utils' and calls stay plain v1): signals sent to the client
(INT, TERM, HUP, QUIT, USR1, USR2, WINCH, ALRM) reach the script's
process group, and the caller sees what the script made of them;
Ctrl-Z stops the script and C<fg> resumes it; each call runs in its
caller's current directory with its caller's umask; and
C<prefork-interp --list> shows the server with its call counts. Signal
handlers the script set up during initialisation are in place in every
call (SIGINT and SIGPIPE excepted: default). See prefork-interp(7).

=head1 STATE AND CONTEXT

Before C<prefork_initialisation_complete> the script's stdin is
F</dev/null> and its stdout is the caller's stderr; it should not look at
per-call arguments or environment yet. Output printed during
initialisation appears once, on the first caller's stderr.

Each executor inherits everything set up before the call: modules, data,
open files, signal handlers (except SIGINT and SIGPIPE, reset to their
defaults). Do not open connections to other servers (databases) before
initialisation is complete: every call would share them.

END blocks and object destructors run in executors only, once per call;
never in the server or its per-call monitors. If the caller is killed,
the executor gets SIGINT and should stop promptly.

=head1 SECURITY

The server serves its own user only: a connection from another uid
(SO_PEERCRED), which can reach the socket only if someone opened the run
directory up by hand, is closed without a greeting and logged.

=head1 REQUIREMENTS

Linux 5.3 or later (pidfd_open), and IO::FDPass (Debian package
libio-fdpass-perl, or from CPAN).

=head1 SEE ALSO

prefork-interp(1)

=cut
