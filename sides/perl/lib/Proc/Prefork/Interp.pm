package Proc::Prefork::Interp;

# The Perl script side of prefork-interp. Process roles, as in the Rust
# library (src/script/server.rs, monitor.rs, executor.rs); one fork per
# call:
#
#   setup run --fork--> server (setsid; stdio /dev/null; syslog)
#     exit 0              | waits on LISTEN, WATCHE, CONTROL and the
#                         | monitor's pidfd (and an inotify watch of the
#                         | modules); quits on watcher EOF, idle timeout,
#                         | reload; never forks per call
#                         +--fork--> monitor: one, long-lived (forked again
#                                    | if it dies); ignores the forwarded
#                                    | signals
#                                    +--fork--> executor-to-be, in advance
#                                               (spare_handlers idle): the
#                                               server's signals back; waits
#
# Per call: the server accepts, greets, and sends the call socket to the
# monitor over CONTROL; the monitor hands it to an idle executor-to-be,
# which reads the request, makes a process group of its own, sends 'P'
# (extended), tells the monitor 'r' and returns from
# prefork_initialisation_complete. The monitor watches every call in
# flight in one select loop: when an executor's pidfd says it is gone, it
# SIGINTs what is left of its group, REAPS IT, tells the server 'd' (the
# server counts calls running by these) and then sends the status to the
# client. It forks the next spare executor meanwhile.
#
# A call on a pseudo-terminal of its own (capability "tty"): the executor
# starts a session with that terminal as its controlling terminal and
# forks the script's process, which leads the terminal's foreground group
# (whose signals the monitor delivers) and sends 'P' and 'r' with its pid;
# the executor stays as the session's keeper, telling the monitor of the
# script's stops ('t': the monitor sends the client 'T') and its status
# ('x': the call has ended, 'd' and the status are sent at once, before
# the keeper's own exit), and moving the script's group to its terminal's
# foreground or background when the client says so ('F', passed on as
# 'f').
#
# Server and monitor leave with POSIX::_exit: END blocks and destructors
# run in executors only.

use strict;
use warnings;

use Config ();
use Exporter qw(import);
use Fcntl qw(F_GETFD F_SETFD FD_CLOEXEC O_APPEND O_NOFOLLOW O_RDWR O_WRONLY SEEK_END);
use IO::FDPass;
use IO::Handle;
use POSIX qw(:errno_h :signal_h :sys_wait_h);
use Socket qw(AF_UNIX MSG_DONTWAIT MSG_NOSIGNAL PF_UNSPEC SOCK_STREAM SOL_SOCKET SO_PEERCRED);
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
my @OUR_CAPS = qw(signals context tty limits closed);
# Those offered to this server's client, known to its executors.
my %OFFERED;
# Signals an extended client may have delivered to the executor's group;
# the monitor ignores them, the executor gets back what the server had.
my @FORWARDED = qw(INT TERM HUP QUIT USR1 USR2 WINCH ALRM TSTP CONT);
my %SIGNAL_NUMBER;    # POSIX lacks some (WINCH); perl's own table has all
@SIGNAL_NUMBER{ split ' ', $Config::Config{sig_name} } = split ' ', $Config::Config{sig_num};
my %FORWARDED_NUMBER = map { ($SIGNAL_NUMBER{$_} => 1) } @FORWARDED;
# Signals a terminal sends its foreground group: an executor on a
# pseudo-terminal of its own blocks them until its monitor knows the call
# is running.
# (SIGCHLD too, the keeper's, from a signalfd.)
my @TERMINAL_SIGNALS = qw(INT QUIT TSTP TTIN TTOU WINCH HUP CHLD);
# Request flags (with 0x01, extended): 0x02 context; 0x04, 0x08, 0x10: fd
# 0, 1, 2 is the call's own pseudo-terminal; with one of those, 0x20: the
# script starts in its terminal's background; 0x40: a limits message
# follows (capability "limits"); 0x80: a second flags byte follows at
# once, whose 0x01, 0x02, 0x04 say the caller's fd 0, 1, 2 is closed
# (capability "closed").
use constant {
    FLAG_CONTEXT    => 0x02,
    FLAGS_PTY       => 0x1c,
    FLAG_BACKGROUND => 0x20,
    FLAG_LIMITS     => 0x40,
    FLAG_MORE       => 0x80,
    KNOWN_FLAGS     => 0xff,
    KNOWN_CLOSED    => 0x07,
};
# The server's limits (packed 'QQ' by resource number, nice value,
# oom_score_adj), read once by the monitor before it forks executors:
# comparing a caller's with them then costs a call no system call.
my $OWN_LIMITS;
# Linux's resource numbers, RLIMIT_CPU (0) to RLIMIT_RTTIME (15), by name
# for messages.
my @RLIMIT_NAMES = qw(CPU FSIZE DATA STACK CORE RSS NPROC NOFILE MEMLOCK AS LOCKS
    SIGPENDING MSGQUEUE NICE RTPRIO RTTIME);
# A limits message's oom_score_adj when the caller could not read its own.
use constant OOM_SCORE_UNKNOWN => -2**31;

use constant WATCH_MASK =>
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF;

my @also_check;
my $LOCK_PATH;    # the server's lock file, where its quit is recorded
my @logging;    # openlog's arguments, once the server logs

# The environment as exec left it: the kernel's copy, /proc/self/environ,
# which %ENV changes never touch. Read when the module loads, because an
# assignment to $0 overwrites that copy (perl reuses its memory for the
# new name). Undef, with the reason, if unreadable.
my ($initial_environ, $initial_environ_error);
if (open my $f, '<:raw', '/proc/self/environ') {
    local $/;
    $initial_environ = <$f> // '';
} else {
    $initial_environ_error = "$!";
}
# What initialisation did to %ENV: [NAME, VALUE] set or changed, [NAME]
# removed. Laid over each call's environment.
my @init_env_changes;

# The names of the variables initialisation reads, from now until
# prefork_initialisation_complete: %ENV is a stand-in meanwhile, a tied
# hash that records FETCH and EXISTS and passes everything on to the
# real %ENV, whose magic keeps C's environ (system's children) in step.
# Iteration is not recorded: it would make every variable a dependency.
# A copy or `values` of a tied hash fetches each key after iterating;
# those fetches (of a key the iteration returned, from the statement
# that iterated) are iteration too. (Not under taint checks, which look
# at the real %ENV's values.)
my %env_read;
my $real_env;
{
    package Proc::Prefork::Interp::TrackedEnv;
    my (%iterated, $iterated_at);    # keys the last iteration returned, and where
    sub _read {
        my ($name, $at) = @_;
        $env_read{$name} = 1 unless delete $iterated{$name} && $at eq $iterated_at;
        return;
    }
    sub _iterated {
        my ($key) = @_;
        $iterated{$key} = 1 if defined $key;
        return $key;
    }
    sub TIEHASH  { my ($class, $real) = @_; return bless \$real, $class }
    sub FETCH    { _read($_[1], join ':', (caller 0)[1, 2]); return ${ $_[0] }->{ $_[1] } }
    sub EXISTS   { _read($_[1], join ':', (caller 0)[1, 2]); return exists ${ $_[0] }->{ $_[1] } }
    sub STORE    { ${ $_[0] }->{ $_[1] } = $_[2]; return }
    sub DELETE   { return delete ${ $_[0] }->{ $_[1] } }
    sub CLEAR    { %{ ${ $_[0] } } = (); return }
    sub FIRSTKEY {
        %iterated = ();
        $iterated_at = join ':', (caller 0)[1, 2];
        my $real = ${ $_[0] };
        keys %$real;
        return _iterated(each %$real);
    }
    sub NEXTKEY  { return _iterated(each %{ ${ $_[0] } }) }
    sub SCALAR   { return scalar %{ ${ $_[0] } } }
}
if (!${^TAINT}) {
    $real_env = \%ENV;
    tie my %tracked, 'Proc::Prefork::Interp::TrackedEnv', $real_env;
    *main::ENV = \%tracked;
}

# A variable's value, read without noting it (for the runner's own
# settings, which pick what to preload, not what the program does).
sub _untracked_env {
    my ($name) = @_;
    return $real_env ? $real_env->{$name} : $ENV{$name};
}

# The real %ENV back; the end of tracking.
sub _untrack_env {
    *main::ENV = $real_env if $real_env;
    undef $real_env;
    return;
}

# The greeting's `env` line for the names initialisation read (without
# ours, and those a line cannot carry): the names, and the SHA-256 of
# NAME=VALUE\0 (or NAME\0 if unset) for each in the exec-time
# environment, as a client computes it from its own. Empty if none.
sub _env_line {
    my @names = sort grep { length && $_ ne 'PREFORK_INTERP' && !/[ \n=\0]/ } keys %env_read;
    return '' unless @names;
    my ($initial) = _exec_environ();
    require Digest::SHA;
    my $digest = Digest::SHA::sha256_hex(
        join '', map { exists $initial->{$_} ? "$_=$initial->{$_}\0" : "$_\0" } @names);
    return "env $digest @names\n";
}

# The greeting's `world DIGEST` line: the SHA-256 of NAME:INODE\n for each
# namespace in this order (the inode /proc/self/ns/NAME links to, `-` if
# unreadable), then cgroup\n and /proc/self/cgroup as it is. A client in
# another world goes to a server of its own: an executor of ours could
# not take on the caller's namespaces and cgroups.
sub _world_line {
    my $text = '';
    for my $name (qw(mnt pid net user uts ipc cgroup time)) {
        my $link = readlink("/proc/self/ns/$name");
        my $inode = defined $link && $link =~ /\[(\d+)\]\z/ ? $1 : '-';
        $text .= "$name:$inode\n";
    }
    $text .= "cgroup\n";
    {
        # (A block of its own: a handle opened in an `if`'s condition
        # stays open until the sub returns.)
        my $cgroups;
        if (open($cgroups, '<', '/proc/self/cgroup')) {
            local $/;
            $text .= <$cgroups> // '';
            close $cgroups;
        }
    }
    require Digest::SHA;
    return 'world ' . Digest::SHA::sha256_hex($text) . "\n";
}

sub prefork_autoreload_also_check {
    push @also_check, @_;
    return;
}

sub _log {
    my ($priority, $message) = @_;
    return unless @logging;
    eval { Sys::Syslog::syslog($priority, '%s', $message) };
    return;
}

# Closes the connection to syslog, which no executor must inherit; the
# next message reconnects (closelog forgets the ident: openlog again, which
# connects nothing yet).
sub _detach_log {
    return unless @logging;
    Sys::Syslog::closelog();
    Sys::Syslog::openlog(@logging);
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
    my $body = substr($payload, 0, -1);
    # (split makes nothing of an empty string: a payload of one NUL, no
    # environment and no arguments, is one empty string.)
    my @strings = length $body ? split(/\0/, $body, -1) : ('');
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

# System call numbers (and TIOCSCTTY) for this perl's ABI: x86_64, and
# the generic table that aarch64, riscv64 and loongarch64 share.
# Elsewhere there are none: there is no inotify watch, and every call
# stats every file (as the original always does); an executor is not
# told of its monitor's death; an executor takes its pseudo-terminal by
# opening it again (see _take_terminal); stops of executors on a
# pseudo-terminal are not reported; a keeper closes its fds one by one
# (see _close_from); a call's resource limits are left as the server's
# (see _take_limits). (syscall.ph would know, but costs every cold start
# ~9 ms to load.)
my %SYSCALL = do {
    my $arch = $Config::Config{archname} // '';
    $arch =~ /\Ax86_64-linux/
        ? (inotify_init1 => 294, inotify_add_watch => 254, prctl => 157, madvise => 28,
           ioctl => 16, signalfd4 => 289, waitid => 247, close_range => 436,
           prlimit64 => 302, TIOCSCTTY => 0x540E)
        : $arch =~ /\A(?:aarch64|riscv64|loongarch64)-linux/
        ? (inotify_init1 => 26, inotify_add_watch => 27, prctl => 167, madvise => 233,
           ioctl => 29, signalfd4 => 74, waitid => 95, close_range => 436,
           prlimit64 => 261, TIOCSCTTY => 0x540E)
        : ();
};

# Process titles: the script's path as perl was given it (the setup
# run's $0), and comm as exec left it, which an assignment to $0 also
# sets (PR_SET_NAME) and we put back: a direct run shows the interpreter
# there.
my ($SCRIPT, $COMM);

# What /proc/PID/cmdline shows: perl writes $0 over the argv area (and
# the environment's after it), so the first caller's arguments go. Never
# fatal.
sub _set_title {
    my ($title) = @_;
    return unless defined $SCRIPT;
    eval { $0 = $title; 1 } or return;
    syscall($SYSCALL{prctl}, 15, $COMM) if defined $COMM && $SYSCALL{prctl};    # PR_SET_NAME
    return;
}

# signalfd(2) flags; waitid(2)'s arguments and the one si_code we want.
use constant {
    SFD_NONBLOCK => 04000,         # O_NONBLOCK
    SFD_CLOEXEC  => 02000000,      # O_CLOEXEC
    P_PID        => 1,
    W_STOPPED    => 2,
    W_EXITED     => 4,
    W_NOWAIT     => 0x1000000,
    CLD_STOPPED  => 5,
};

# A signalfd (a handle) for SIGCHLD, which must be blocked; nothing
# without the system call's number for this ABI, or when it fails.
sub _child_signals {
    return unless $SYSCALL{signalfd4};
    # A sigset_t of the kernel's: 64 bits, signal N at bit N-1.
    my $mask = pack 'Q', 1 << (SIGCHLD - 1);
    my $fd = syscall($SYSCALL{signalfd4}, -1, $mask, 8, SFD_NONBLOCK | SFD_CLOEXEC);
    return if $fd < 0;
    return _fdopen($fd, '<');
}

# What has become of child $pid since it was last asked: ('stopped',
# SIGNAL), each stop once; ('exited'), a zombie still, for waitpid; or
# nothing yet. waitid(P_PID, pid, WSTOPPED | WEXITED | WNOWAIT | WNOHANG),
# then the stop's report consumed (without WEXITED, which never reaps).
# Without waitid's number for this ABI, waitpid, which reaps an exit:
# ('exited', STATUS). Dies with the reason.
sub _child_state {
    my ($pid) = @_;
    if (!$SYSCALL{waitid}) {
        my $got;
        1 while ($got = waitpid($pid, WNOHANG | WUNTRACED)) < 0 && $! == EINTR;
        die "waitpid: $!\n" if $got < 0;
        return if $got == 0;
        my $status = ${^CHILD_ERROR_NATIVE};
        return WIFSTOPPED($status) ? ('stopped', WSTOPSIG($status)) : ('exited', $status);
    }
    my $info;
    while (1) {
        # siginfo_t (128 bytes), zeroed: si_pid stays 0 if nothing is
        # reported.
        $info = "\0" x 128;
        last if syscall($SYSCALL{waitid}, P_PID, $pid + 0, $info,
            W_STOPPED | W_EXITED | W_NOWAIT | WNOHANG, 0) == 0;
        die "waitid: $!\n" unless $! == EINTR;
    }
    # int si_signo, si_errno, si_code; 4 bytes of padding (64-bit);
    # int si_pid; uint si_uid; int si_status.
    my ($code, $child, $status) = unpack 'x8 i x4 i x4 i', $info;
    return if $child == 0;
    return ('exited') if $code != CLD_STOPPED;
    my $consumed = "\0" x 128;
    syscall($SYSCALL{waitid}, P_PID, $pid + 0, $consumed, W_STOPPED | WNOHANG, 0);
    return ('stopped', $status);
}

# Closes every fd from $low up, under perl's handles (for a process
# about to leave): close_range(2) (Linux 5.9), or each fd
# /proc/self/fd lists.
sub _close_from {
    my ($low) = @_;
    return if $SYSCALL{close_range}
        && syscall($SYSCALL{close_range}, $low + 0, 0xffffffff, 0) == 0;
    opendir(my $dir, '/proc/self/fd') or return;
    my @fds = grep { /\A\d+\z/ && $_ >= $low } readdir $dir;
    closedir $dir;    # (one of those listed)
    POSIX::close($_) for @fds;
    return;
}

# Starts a session of our own (setsid) and makes fd $fd, a terminal, its
# controlling terminal: TIOCSCTTY, or without its number for this ABI,
# opening the terminal again by name (without O_NOCTTY), which on Linux
# makes it the controlling terminal of a session leader that has none.
# Our process group is then the terminal's foreground group. We must not
# lead a process group. Dies with the reason.
sub _take_terminal {
    my ($fd) = @_;
    defined POSIX::setsid() or die "setsid: $!\n";
    if ($SYSCALL{TIOCSCTTY}) {
        syscall($SYSCALL{ioctl}, $fd + 0, $SYSCALL{TIOCSCTTY}, 0) == 0 or die "$!\n";
        return;
    }
    my $name = POSIX::ttyname($fd) // die "ttyname: $!\n";
    sysopen(my $tty, $name, O_RDWR) or die "cannot open $name: $!\n";
    close $tty;
    my $group = POSIX::tcgetpgrp($fd);
    die "$name did not become the controlling terminal\n"
        unless defined $group && $group == $$;
    return;
}

use constant { HUGE_PAGE => 2 << 20, MADV_COLLAPSE => 25 };

# Asks the kernel to back the resident heap by 2 MB pages now
# (MADV_COLLAPSE, Linux 6.1; elsewhere nothing happens): the 2 MB-aligned
# interiors of the private anonymous writable mappings that are at least
# 3/4 resident. The server does this once its pages are its own (the
# setup run has gone) and before it forks the monitor, which then shares
# them: each of its forks (one per call) copies one page-table entry per
# 2 MB instead of 512, and each executor's exit tears down as few.
# Returns the bytes collapsed. (The same rule as the Rust side's
# src/script/huge_pages.rs.)
sub _collapse_heap {
    return 0 unless $SYSCALL{madvise};
    open(my $smaps, '<', '/proc/self/smaps') or return 0;
    my (@candidates, $current);
    while (my $line = <$smaps>) {
        if ($line =~ /\A([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(\S*)/) {
            no warnings 'portable';    # 64-bit addresses
            my ($start, $end, $perms, $inode, $path) = (hex $1, hex $2, $3, $4, $5);
            $current = $perms eq 'rw-p' && $inode == 0 && ($path eq '' || $path eq '[heap]')
                ? [ $start, $end ] : undef;
            push @candidates, $current if $current;
        } elsif ($current && $line =~ /\ARss:\s+(\d+) kB/) {
            $current->[2] = $1;
        }
    }
    close $smaps;
    my $collapsed = 0;
    for my $m (@candidates) {
        my ($start, $end, $rss_kb) = @$m;
        my $from = int(($start + HUGE_PAGE - 1) / HUGE_PAGE) * HUGE_PAGE;
        my $to   = int($end / HUGE_PAGE) * HUGE_PAGE;
        next unless $to > $from && ($rss_kb // 0) * 1024 * 4 >= ($end - $start) * 3;
        $collapsed += $to - $from
            if syscall($SYSCALL{madvise}, $from, $to - $from, MADV_COLLAPSE) == 0;
    }
    return $collapsed;
}

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

# What the script's start-up did to its environment: %ENV against the
# exec-time environment. PREFORK_INTERP, ours, is left out.
# The environment at exec: {NAME => VALUE}, and the names in order. As
# getenv: the first of two entries with one name counts.
sub _exec_environ {
    die "prefork-interp: cannot read /proc/self/environ: $initial_environ_error\n"
        unless defined $initial_environ;
    my (%before, @order);
    for my $entry (split /\0/, $initial_environ) {
        next unless $entry =~ /\A(.[^=]*)=(.*)\z/s && !exists $before{$1};
        $before{$1} = $2;
        push @order, $1;
    }
    return (\%before, \@order);
}

sub _init_env_changes {
    my ($before, $order) = _exec_environ();
    my @changes;
    for my $name (sort keys %ENV) {
        next if $name eq 'PREFORK_INTERP';
        push @changes, [ $name, $ENV{$name} ]
            unless defined $before->{$name} && $before->{$name} eq $ENV{$name};
    }
    push @changes, map { [$_] } grep { $_ ne 'PREFORK_INTERP' && !exists $ENV{$_} } @$order;
    return @changes;
}

sub prefork_initialisation_complete {
    my %opts = @_;
    # Armed here, before the server forks: executors inherit it (the
    # server and monitors never run END blocks), and a direct run ends as
    # a call does.
    _arm_fast_exit() if $opts{fast_exit};
    _untrack_env();
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
    my $grace = exists $opts{interrupt_grace} ? $opts{interrupt_grace} : 2;
    $grace = undef if defined $grace && $grace < 0;
    my $facility = $opts{log_facility} // 'LOG_USER';

    @init_env_changes = _init_env_changes();
    # The greeting's lines between caps and the counters: the server's
    # world, and what its initialisation read of the environment.
    my $env_line = _world_line() . _env_line();
    $SCRIPT = $0;
    # (In a block of its own: a handle opened in an `if`'s condition
    # stays open until the sub returns, which in the server is never.)
    $COMM = do { my $comm; open($comm, '<', '/proc/self/comm') ? scalar <$comm> : undef };
    chomp $COMM if defined $COMM;

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
        @logging = ("prefork-interp $0", 'nofatal,pid', $facility);
        Sys::Syslog::openlog(@logging);
    }

    # The server waits for the setup run's end before it collapses its
    # heap (pages still shared with it would not collapse).
    my $setup_run = eval { _pidfd_open($$) };
    my $pid = fork;
    die "prefork-interp: cannot fork the server: $!\n" unless defined $pid;
    POSIX::_exit(0) if $pid;    # the setup run ends; the client waits for it

    # The daemon. From here the script's own code must never run except
    # in executors: any failure is logged and ends the process.
    my $server = eval {
        _set_title("$SCRIPT [server]");
        POSIX::setsid();
        $SIG{CHLD} = 'DEFAULT';    # a caller ignoring it would break waitpid
        # Sending a file descriptor to a process that has died must fail,
        # not kill us (IO::FDPass::send has no MSG_NOSIGNAL). The monitor
        # inherits this; executors get SIGPIPE's default back.
        $SIG{PIPE} = 'IGNORE';
        my %s = (
            listen       => _fdopen($setup->{listen},   '+<'),
            watch_err    => _fdopen($setup->{watch_err}, '<'),
            watch_in     => _fdopen($setup->{watch_in},  '>'),
            started      => $setup->{started},
            # Only a client that said it reads greeting xdata is offered
            # our extensions, those it speaks (chiark-utils' misreads any).
            offered => [ grep { $setup->{client_caps}{$_} } @OUR_CAPS ],
            env_line     => $env_line,
            max_servers  => $max_servers,
            idle_timeout => $idle_timeout,
            max_errors   => $max_errors,
            reload       => \@reload,
            # Watches first, then the first accepted call checks every
            # file (dirty): nothing changed between the two is missed.
            watch        => scalar _watch_files(\@reload),
            dirty        => 1,
            monitor      => undef,    # {pid, pidfd, control} while there is one
            spare        => $spare,
            grace        => $grace,
            served       => 0,        # calls handed to the monitor
            busy         => 0,        # of those, not yet ended ('d')
            errors       => 0,
            idle_since   => Time::HiRes::time(),
        );
        %OFFERED = map { ($_ => 1) } @{ $s{offered} };
        $LOCK_PATH = _lock_path_of($s{listen});
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

    if ($setup_run) {
        my $rin = '';
        vec($rin, fileno $setup_run, 1) = 1;
        1 while select(my $rout = $rin, undef, undef, undef) < 0 && $! == EINTR;
        close $setup_run;
        my $started = Time::HiRes::time();
        my $collapsed = _collapse_heap();
        _log('info', sprintf('%d MB of heap in huge pages (%.1f ms)',
            $collapsed >> 20, (Time::HiRes::time() - $started) * 1000));
    }

    # Hand each call to the one monitor, forked before the first call is
    # handed over and again as soon as one has died. The monitor forks
    # the executors, in advance: no fork is on a call's critical path.
    my $pending = _fdopen($setup->{call}, '+<');
    my $invocation = eval {
        while (1) {
            if (!$server->{monitor}) {
                my @child = _spawn_monitor($server, $pending);
                return _monitor(@child) if @child;
            }
            if ($pending) {
                _hand_over($server, $pending);
                close $pending;
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

# Forks the monitor. Returns (control, spare) in the child, which has
# closed every fd of the server's (and @close); nothing in the server.
sub _spawn_monitor {
    my ($s, @close) = @_;
    my ($control, $theirs);
    if (!socketpair($control, $theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)) {
        _server_error($s, "socketpair: $!");
        return;
    }
    my $pid = fork;
    if (!defined $pid) {
        _server_error($s, "cannot fork the monitor: $!");
        return;
    }
    if ($pid == 0) {
        close $_ for grep {defined} @$s{qw(listen watch_err watch_in watch)}, @close,
            $control;
        return ($theirs, $s->{spare}, $s->{grace});
    }
    close $theirs;
    my $pidfd = eval { _pidfd_open($pid) };
    if (!$pidfd) {
        # Unwatchable: it must not serve. Without its control socket it
        # leaves once its spare executors have.
        _server_error($s, $@);
        close $control;
        waitpid($pid, 0);
        return;
    }
    $s->{monitor} = { pid => $pid, pidfd => $pidfd, control => $control };
    return;
}

# Greets the caller and hands the call to the monitor.
sub _hand_over {
    my ($s, $call) = @_;
    my $monitor = $s->{monitor};
    if (!$monitor) {
        _log('err', 'no monitor to take a call');    # its fork failed (logged)
        return;
    }
    my @offered = @{ $s->{offered} };
    my $xdata = @offered
        ? "pfi-caps 1\ncaps " . join(',', @offered) . "\n$s->{env_line}"
            . "served $s->{served}\nrunning $s->{busy}\nidle "
            . ($s->{busy} ? 0 : int((Time::HiRes::time() - $s->{idle_since}) * 1000)) . "\n"
        : '';
    if (!eval { _send_all($call, "PFI\n" . pack('N', length $xdata) . $xdata); 1 }) {
        _log('info', "caller went away before its greeting: $@");
        return;
    }
    if (!IO::FDPass::send(fileno $monitor->{control}, fileno $call)) {
        # It has died (its pidfd says so next): this call is lost with
        # those it was serving.
        _log('err', "monitor $monitor->{pid} cannot take a call: $!");
        return;
    }
    $s->{served}++;
    $s->{busy}++;
    return;
}

# Counts the calls the monitor says have ended, a 'd' each, or an 'h'
# for one that ended before a request (which leaves the idle time be: a
# listing, or a caller that went elsewhere, keeps no server alive). False
# when the monitor has died (EOF).
sub _calls_done {
    my ($s) = @_;
    my $ended = 0;
    my $alive = 1;
    while (1) {
        my $got = recv($s->{monitor}{control}, my $bytes, 4096, MSG_DONTWAIT);
        if (!defined $got) {
            next if $! == EINTR;
            $alive = 0 unless $! == EAGAIN || $! == EWOULDBLOCK;
            last;
        }
        if (!length $bytes) {
            $alive = 0;
            last;
        }
        my $done = $bytes =~ tr/d//;
        $ended += $done;
        $s->{busy} -= $done + ($bytes =~ tr/h//);
    }
    $s->{busy} = 0 if $s->{busy} < 0;
    $s->{idle_since} = Time::HiRes::time() if $ended && !$s->{busy};
    return $alive;
}

# The monitor has died: it never leaves while we live, unless killed. Its
# calls are lost (their clients saw EOF).
sub _monitor_gone {
    my ($s) = @_;
    my $monitor = delete $s->{monitor};
    close $monitor->{control};
    close $monitor->{pidfd};
    waitpid($monitor->{pid}, 0);
    my $status = ${^CHILD_ERROR_NATIVE};
    $s->{busy} = 0;
    $s->{idle_since} = Time::HiRes::time();
    _server_error($s, "monitor $monitor->{pid} " . _describe_status($status));
    return;
}

sub _quit {
    my ($why) = @_;
    _log('info', "server quitting: $why");
    _record_quit($why);
    POSIX::_exit(0);
}

# The identity's lock file, beside the listening socket (BASE/s<ident>,
# BASE/l<ident>); undef for a socket not so named.
sub _lock_path_of {
    my ($listen) = @_;
    my $name = getsockname($listen) or return;
    my $path = eval { Socket::unpack_sockaddr_un($name) };
    return unless defined $path && $path =~ m{\A(.*/)s([^/]+)\z}s;
    return "$1l$2";
}

# Appends "quit SECONDS REASON" to the identity's lock file, for --list
# to show as the reason of the next server's start. Best effort: a lock
# file removed (--kill) is skipped.
sub _record_quit {
    my ($why) = @_;
    return unless defined $LOCK_PATH;
    sysopen(my $lock, $LOCK_PATH, O_WRONLY | O_APPEND | O_NOFOLLOW) or return;
    (my $reason = $why) =~ tr/\n/ /;
    syswrite($lock, 'quit ' . time() . " $reason\n");
    close $lock;
    return;
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
# Returns nothing when the monitor has died, for another to be forked at
# once (a call accepted in the same round is returned: it waits for it).
sub _next_call {
    my ($s) = @_;
    while (1) {
        my $monitor = $s->{monitor};
        my $listening = !defined $s->{max_servers} || $s->{busy} < $s->{max_servers};
        my $rin = '';
        vec($rin, fileno $s->{watch_err}, 1) = 1;
        vec($rin, fileno $s->{watch}, 1) = 1 if $s->{watch};
        if ($monitor) {
            vec($rin, fileno $monitor->{control}, 1) = 1;
            vec($rin, fileno $monitor->{pidfd},   1) = 1;
        }
        vec($rin, fileno $s->{listen}, 1) = 1 if $listening;
        my $timeout;
        if (defined $s->{idle_timeout} && !$s->{busy}) {
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
        my $accepting = $listening && vec($rout, fileno $s->{listen}, 1);
        # Before accepting, so that `running` in a greeting is exact once
        # a client has its status: the monitor says 'd' before it sends
        # one. (A caller being ready means reading now, however select
        # saw the control socket.)
        my $died = 0;
        if ($monitor
            && (vec($rout, fileno $monitor->{control}, 1) || $accepting
                || vec($rout, fileno $monitor->{pidfd}, 1)))
        {
            if (!_calls_done($s) || vec($rout, fileno $monitor->{pidfd}, 1)) {
                _monitor_gone($s);
                $died = 1;
            }
        }
        if ($accepting) {
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
                } else {
                    if ($s->{dirty} || !$s->{watch}) {
                        my ($file, $missing) = _changed_file($s->{reload}, $s->{started});
                        # Dropping the call makes its client start afresh.
                        _quit("$file changed") if defined $file;
                        if ($s->{watch}) {
                            # A missing file has no watch to say when it
                            # is made again: while one is missing, every
                            # call checks.
                            $s->{dirty} = $missing;
                            delete $s->{watch} unless _add_watches($s->{watch}, $s->{reload});
                        }
                    }
                    return $conn;
                }
            } else {
                _server_error($s, "accept failed: $!")
                    unless $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            }
        }
        return if $died;
    }
}

# ------------------------------------------------------------- monitor

# The one monitor, freshly forked by the server: keeps $spare
# executors-to-be idle, hands each call the server sends on $control to
# one of them, and watches every call in flight until it has ended. Once
# the server has gone, it serves the calls in flight to their end, then
# leaves. Never returns, but (true) in an executor.
sub _monitor {
    my ($control, $spare, $grace) = @_;
    _set_title("$SCRIPT [monitor]");
    _detach_log();
    $OWN_LIMITS = _read_own_limits();
    # We deliver these to executors' groups; they must not hurt us.
    # Executors get back what the server had.
    my %saved;
    for my $name (@FORWARDED) {
        my $old = POSIX::SigAction->new;
        POSIX::sigaction($SIGNAL_NUMBER{$name}, POSIX::SigAction->new('IGNORE'), $old);
        $saved{$name} = $old;
    }
    my %m = (
        control => $control,    # undef once the server has gone
        spare   => $spare,
        grace   => $grace,      # interrupt_grace (undef: never SIGKILL)
        saved   => \%saved,
        # Executors-to-be: {pid, pidfd, handover, from}; handover undef
        # once they are to leave (the server went) or have left.
        idle => [],
        # Calls in flight, by executor pid: {pidfd, call, from, phase,
        # extended, group, keeper, frame}. Phases: waiting (handed the
        # call, no 'r' yet; from undef: it failed before its call),
        # running (got 'r'), reported (its keeper said the script's
        # status, which the client has: the keeper is on its way out),
        # abandoned (the client left; SIGINTed, or on a pseudo-terminal
        # SIGHUPed). group: the process group the call's signals go to,
        # the executor's or on a pseudo-terminal of its own the script's.
        # keeper, on a pseudo-terminal of its own (the executor keeps the
        # session; the script is its child): {script, from (its 't' and
        # 'x'; undef at EOF), status (from 'x')}.
        calls => {},
    );
    return 1 if eval { _monitor_loop(\%m) };
    _log('err', "monitor failed: $@");
    POSIX::_exit(1);
}

# How long missing spares wait for the calls in flight to end (seconds).
use constant REFILL_DELAY => 0.005;

sub _monitor_loop {
    my ($m) = @_;
    my ($idle, $calls) = @$m{qw(idle calls)};
    my $short_since;    # since when spares have been missing
    while (1) {
        # Missing spares are forked at once when no call is in flight,
        # else once they have been missing for REFILL_DELAY: a fork takes
        # the monitor away from its calls while it copies every page
        # table, and a short call's status should not wait for it.
        my $timeout;
        if ($m->{control} && (grep { $_->{handover} } @$idle) < $m->{spare}) {
            $short_since //= Time::HiRes::time();
            $timeout = $short_since + REFILL_DELAY - Time::HiRes::time();
            if (!%$calls || $timeout <= 0) {
                while ((grep { $_->{handover} } @$idle) < $m->{spare}) {
                    my $pid = _fork_executor($m);
                    return 1 if defined $pid && $pid == 0;
                    last unless $pid;    # logged; tried again next round
                }
                undef $short_since;
                undef $timeout;
            }
        }
        POSIX::_exit(0) if !$m->{control} && !%$calls && !@$idle;

        # Scripts that carry on after the SIGINT their client's leaving
        # brought: SIGKILL once the grace is over, and poll no longer.
        if (defined $m->{grace}) {
            for my $pid (keys %$calls) {
                my $c = $calls->{$pid};
                next unless $c->{phase} eq 'abandoned' && !$c->{killed};
                my $left = $c->{since} + $m->{grace} - Time::HiRes::time();
                if ($left <= 0) {
                    kill 'KILL', -$c->{group};
                    $c->{killed} = 1;
                    _log('err', "executor $pid still ran $m->{grace} s after its client "
                        . 'went away and its SIGINT: killed');
                } elsif (!defined $timeout || $left < $timeout) {
                    $timeout = $left;
                }
            }
        }

        my $rin = '';
        vec($rin, fileno $m->{control}, 1) = 1 if $m->{control};
        vec($rin, fileno $_->{pidfd}, 1) = 1 for @$idle, values %$calls;
        for my $c (values %$calls) {
            if ($c->{phase} eq 'waiting') {
                vec($rin, fileno $c->{from}, 1) = 1 if $c->{from};
            } elsif ($c->{phase} eq 'running') {
                vec($rin, fileno $c->{call}, 1) = 1;
                vec($rin, fileno $c->{keeper}{from}, 1) = 1 if $c->{keeper} && $c->{keeper}{from};
            }
        }
        my $rout;
        if (select($rout = $rin, undef, undef, $timeout) < 0) {
            next if $! == EINTR;
            die "select failed: $!\n";
        }
        # (Below, only fds open at the select are looked at: nothing is
        # opened before the last step, so no fd number was reused.)
        my $ready = sub { vec($rout, fileno $_[0], 1) };

        # Keepers with news: a script stopped, or ended. (Those of calls
        # running when select began: an executor's socket, readable with
        # its 'r', becomes its keeper's.)
        my @keepers = grep {
            $_->{phase} eq 'running' && $_->{keeper} && $_->{keeper}{from}
                && $ready->($_->{keeper}{from})
        } values %$calls;
        # Executors that have taken their call.
        for my $c (values %$calls) {
            _executor_ready($c)
                if $c->{phase} eq 'waiting' && $c->{from} && $ready->($c->{from});
        }
        for my $c (@keepers) {
            _from_keeper($c);
            _report($m, $c) if defined $c->{keeper}{status};
        }
        # Executors gone, idle ones and those of calls.
        my (@gone, @left);
        push @{ $ready->($_->{pidfd}) ? \@gone : \@left }, $_ for @$idle;
        @$idle = @left;
        for my $e (@gone) {
            close $e->{pidfd};
            close $e->{from};
            close $e->{handover} if $e->{handover};
            waitpid($e->{pid}, 0);
            # Once the server has gone, we closed its handover and it left.
            _log('err', "idle executor $e->{pid} " . _describe_status(${^CHILD_ERROR_NATIVE}))
                if $m->{control};
        }
        for my $pid (grep { $ready->($calls->{$_}{pidfd}) } keys %$calls) {
            _call_ended($m, $pid, delete $calls->{$pid});
        }
        # Clients of running calls: a signal to forward, or gone.
        for my $pid (keys %$calls) {
            my $c = $calls->{$pid};
            _from_client($c) if $c->{phase} eq 'running' && $ready->($c->{call});
        }
        # The server: a call, or gone.
        if ($m->{control} && $ready->($m->{control})) {
            return 1 if _take_call($m);
        }
    }
}

# Forks an executor-to-be and counts it idle. Returns its pid; 0 in the
# child, once it has become its call; nothing when it could not (logged).
sub _fork_executor {
    my ($m, @close) = @_;
    my ($handover, $handover_theirs, $from, $from_theirs);
    if (!socketpair($handover, $handover_theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        || !socketpair($from, $from_theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC))
    {
        _log('err', "socketpair: $!");
        return;
    }
    my $monitor = $$;
    my $pid = fork;
    if (!defined $pid) {
        _log('err', "cannot fork an executor: $!");
        return;
    }
    if ($pid == 0) {
        # Nothing of the monitor's stays open here: a call socket kept
        # open in a spare would stop its client from ever seeing EOF.
        close $_ for grep {defined} $m->{control}, $handover, $from, @close,
            (map { @$_{qw(pidfd handover from)} } @{ $m->{idle} }),
            (map { (@$_{qw(pidfd call from)}, $_->{keeper} && $_->{keeper}{from}) }
                values %{ $m->{calls} });
        # Before its call: not on any call's path.
        _set_title("$SCRIPT [handler]");
        _executor($handover_theirs, $from_theirs, $m->{saved}, $monitor);
        return 0;
    }
    close $handover_theirs;
    close $from_theirs;
    my $pidfd = eval { _pidfd_open($pid) };
    if (!$pidfd) {
        _log('err', $@);
        kill 'KILL', $pid;
        waitpid($pid, 0);
        return;
    }
    push @{ $m->{idle} },
        { pid => $pid, pidfd => $pidfd, handover => $handover, from => $from };
    return $pid;
}

# The server's next call, handed to an idle executor-to-be (forked now if
# none is); or its EOF: it has gone. True only in an executor forked here.
sub _take_call {
    my ($m) = @_;
    local $! = 0;    # recvmsg leaves it alone at EOF
    my $fd = IO::FDPass::recv(fileno $m->{control});
    if ($fd < 0) {
        return if $! == EINTR || $! == EAGAIN;
        # The server has gone: idle executors leave on their handover's
        # EOF (their pidfds tell us when); calls in flight go on.
        close delete $m->{control};
        close delete $_->{handover} for grep { $_->{handover} } @{ $m->{idle} };
        return;
    }
    my $call = _fdopen($fd, '+<');
    my $forked = 0;
    while (1) {
        my ($e) = grep { $_->{handover} } @{ $m->{idle} };
        if (!$e && !$forked++) {
            my $pid = _fork_executor($m, $call);
            return 1 if defined $pid && $pid == 0;
            ($e) = grep { $_->{handover} } @{ $m->{idle} } if $pid;
        }
        if (!$e) {
            _log('err', 'no executor to take a call');
            close $call;
            _call_done($m, 'h');
            return;
        }
        my $sent = IO::FDPass::send(fileno $e->{handover}, fileno $call);
        close delete $e->{handover};
        if ($sent) {
            @{ $m->{idle} } = grep { $_ != $e } @{ $m->{idle} };
            $m->{calls}{ $e->{pid} } = {
                pidfd => $e->{pidfd},
                from  => $e->{from},
                call  => $call,    # not read while waiting: the executor reads the request
                phase => 'waiting',
                group => $e->{pid},
                frame => '',
            };
            return;
        }
        # It died idle; its pidfd says so.
        _log('err', "executor $e->{pid} cannot take a call: $!");
    }
}

# The executor's 'r' and request byte: it has its call; on a
# pseudo-terminal of its own, then the script's pid: it keeps the
# session, and its 't' and 'x' follow on the same socket. EOF instead: it
# could not take it (it logged why); its pidfd says when it is gone.
sub _executor_ready {
    my ($c) = @_;
    my $from = delete $c->{from};
    my $ready = eval { _read_exact($from, 2) };
    if (defined $ready && substr($ready, 0, 1) eq 'r') {
        my $byte = ord substr($ready, 1, 1);
        if (!($byte & FLAGS_PTY)) {
            $c->{phase}    = 'running';
            $c->{extended} = $byte & 1;
        } elsif (defined(my $script = eval { unpack 'N', _read_exact($from, 4) })) {
            $c->{phase}    = 'running';
            $c->{extended} = $byte & 1;
            $c->{group}    = $script;
            $c->{keeper}   = { script => $script, from => $from };
            return;
        }
    }
    close $from;
    return;
}

# One message from a keeper (it writes each whole, at once): the script
# stopped ('t': the client is told, 'T'), or ended ('x': its status, for
# the client, see _report). EOF or garbage: the keeper has nothing more
# to say.
sub _from_keeper {
    my ($c) = @_;
    my $keeper = $c->{keeper};
    my $message = eval { _read_exact($keeper->{from}, 5) } // '';
    my ($kind, $value) = length $message == 5 ? unpack('a N', $message) : ('');
    if ($kind eq 't') {
        # A client gone is heard on the call socket.
        eval { _send_all($c->{call}, 'T' . pack('N', $value)) };
    } elsif ($kind eq 'x') {
        $keeper->{status} = $value;
    } else {
        close delete $keeper->{from};
    }
    return;
}

# A running call's keeper has said how the script ended ('x'): the call
# is over at once. The server is told ('d'), then the client (its
# status); the keeper, on its way out, is reaped when its pidfd says so
# (_call_ended), without either again.
sub _report {
    my ($m, $c) = @_;
    $c->{phase} = 'reported';
    _call_done($m, 'd');
    # A client that has gone is no error.
    eval { _send_all($c->{call}, ($c->{extended} ? 'X' : '') . pack('N', $c->{keeper}{status})) };
    return;
}

# The executor of a call has gone: the call ends, and we tell the server
# ('d') before we tell the client its status (unless that was done when
# its keeper said it: phase reported).
sub _call_ended {
    my ($m, $pid, $c) = @_;
    if ($c->{phase} eq 'reported') {
        # What it left behind in its group; then it is reaped.
        kill 'INT', -$pid;
        waitpid($pid, 0);
        close $c->{call};
        close $c->{pidfd};
        close $c->{keeper}{from} if $c->{keeper}{from};
        return;
    }
    # It is dead: reading cannot block, and its 'r' may have come after
    # the select looked.
    _executor_ready($c) if $c->{from};
    # A keeper has exited: all it said is there to read.
    my $keeper = $c->{keeper};
    _from_keeper($c) while $keeper && $keeper->{from};
    if ($c->{phase} eq 'abandoned') {
        waitpid($pid, 0);
        my $status = $keeper ? $keeper->{status} : ${^CHILD_ERROR_NATIVE};
        _log('info', 'client went away; script interrupted, it '
            . (defined $status ? _describe_status($status) : 'has no known status'));
        _call_done($m, 'd');
    } else {
        # What it left behind in its group. First: unreaped, it keeps its
        # pid (the group's id) from being reused. (A keeper has done so
        # for the script's group.)
        kill 'INT', -$pid;
        waitpid($pid, 0);
        my $status = ${^CHILD_ERROR_NATIVE};
        # 'h': no request came (a listing; a caller that went elsewhere).
        _call_done($m, $c->{phase} eq 'running' ? 'd' : 'h');
        if ($keeper) {
            if (defined $keeper->{status}) {
                $status = $keeper->{status};
            } else {
                # Killed before the script ended: nothing watches the
                # script now. It goes too.
                _log('err', "keeper $pid of script $keeper->{script} "
                    . _describe_status($status) . ': script killed');
                kill 'KILL', -$keeper->{script};
            }
        }
        if ($c->{phase} eq 'running') {
            # A client that has gone is no error.
            my $reply = ($c->{extended} ? 'X' : '') . pack('N', $status);
            eval { _send_all($c->{call}, $reply) };
        } elsif ($status) {
            _log('err', "executor $pid failed before its call: it "
                . _describe_status($status));
        }
    }
    close $c->{call};
    close $c->{pidfd};
    return;
}

# Tells the server a call has ended (while it lives): 'd', or 'h' if its
# script never ran.
sub _call_done {
    my ($m, $how) = @_;
    send($m->{control}, $how, MSG_NOSIGNAL) if $m->{control};
    return;
}

# The client of a running call has something to say: extended, a signal
# to forward, or on a pseudo-terminal of its own where the script's group
# belongs ('F', for the keeper); v1, nothing. Or it has left: the script's
# group gets SIGINT (on a pseudo-terminal of its own, SIGHUP and SIGCONT:
# its terminal has hung up, as a direct run's would), and the call waits
# for its executor's end.
sub _from_client {
    my ($c) = @_;
    my $keeper = $c->{keeper};
    if ($c->{extended}) {
        my $got = sysread($c->{call}, $c->{frame}, 5 - length $c->{frame}, length $c->{frame});
        return if !defined $got && ($! == EINTR || $! == EAGAIN);
        if ($got) {
            return if length $c->{frame} < 5;
            my ($kind, $value) = unpack 'a N', $c->{frame};
            $c->{frame} = '';
            if ($kind eq 'S') {
                kill $value, -$c->{group} if $FORWARDED_NUMBER{$value};
            } elsif ($kind eq 'F') {
                eval { _send_all($keeper->{from}, 'f' . pack('N', $value)) }
                    if $keeper && $keeper->{from};
            }
            return;    # (unknown kinds ignored)
        }
    }
    if ($keeper) {
        kill 'HUP',  -$c->{group};
        kill 'CONT', -$c->{group};
    } else {
        kill 'INT', -$c->{group};
    }
    $c->{phase} = 'abandoned';
    $c->{since} = Time::HiRes::time();
    return;
}

# ------------------------------------------------------------ executor

# Forked by the monitor before the call, which has closed every other
# fd of the monitor's; dispositions are the server's (SIGINT and SIGPIPE:
# default) from the start. Gets the call socket from the monitor, reads
# the request itself, makes a process group of its own, sends an extended
# call's 'P' with its own pid (before any per-call code), tells the
# monitor 'r', and returns into the script.
#
# On a call with a pseudo-terminal of its own it starts a session
# instead, with that terminal as its controlling terminal, and forks the
# script's process, which leads the terminal's foreground group, sends
# 'P' and 'r' (with its pid) and returns into the script; the executor
# stays as the session's keeper (_keep). Why two processes: a process
# group none of whose members has a parent in its session but outside
# the group is orphaned, and the kernel discards the stop signals a
# terminal sends such a group: a script leading its session itself (its
# parent, the monitor, is elsewhere) would ignore ^Z.
sub _executor {
    my ($handover, $monitor, $saved, $monitor_pid) = @_;
    _detach_log();
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
    my $failed = sub {
        if ($@ eq "hung up\n") {
            _log('info', 'client went away before its call started');
            POSIX::_exit(0);
        }
        _log('err', "call failed: $@");
        POSIX::_exit(1);
    };

    my ($byte, $closed, $fds, $env, $args, $context, $limits) = (0, 0);
    eval {
        $byte = ord _read_exact($call, 1);
        # 0 (v1), or 0x01 (extended) with any of the flags we know (0x20
        # only with a pseudo-terminal; 0x80 only if "closed" was offered).
        die sprintf("request starts with byte %#04x, expected 0x00, "
                . "or 0x01 with flags of 0x02, 0x04, 0x08, 0x10, 0x20, 0x40%s\n",
                $byte, $OFFERED{closed} ? ', 0x80' : '')
            unless $byte == 0
            || ($byte & 1 && !($byte & ~KNOWN_FLAGS)
                && ($byte & FLAGS_PTY || !($byte & FLAG_BACKGROUND))
                && ($OFFERED{closed} || !($byte & FLAG_MORE)));
        if ($byte & FLAG_MORE) {
            $closed = ord _read_exact($call, 1);
            die sprintf("request's second flags byte is %#04x, expected flags of "
                    . "0x01, 0x02, 0x04\n", $closed)
                if $closed & ~KNOWN_CLOSED;
        }
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
        if ($byte & FLAG_CONTEXT) {
            my $cwd = IO::FDPass::recv(fileno $call);
            die "cannot receive the caller's directory: $!\n" if $cwd < 0;
            $context = { cwd => $cwd, umask => unpack('N', _read_exact($call, 4)) };
        }
        if ($byte & FLAG_LIMITS) {
            # u8 N, N times [u8 resource, u64be soft, u64be hard], then
            # i32be nice, i32be oom_score_adj.
            my $n = ord _read_exact($call, 1);
            my @fields = unpack "(C Q> Q>)$n l> l>", _read_exact($call, $n * 17 + 8);
            $limits = { oom => pop @fields, nice => pop @fields,
                rlimits => [ map { [ @fields[ 3 * $_ .. 3 * $_ + 2 ] ] } 0 .. $n - 1 ] };
        }
        1;
    } or $failed->();

    # The monitor signals the call's processes as one (a client's
    # signals, SIGINT when it ends or its client leaves): the script's
    # group, whose id is the script's pid. (Not made while idle: setsid
    # refuses a group leader.)
    my ($pty) = grep { $byte & (4 << $_) } 0 .. 2;
    my $ready = 'r' . chr($byte);
    my $old_mask;
    if (defined $pty) {
        # The terminal's signals (^C, ^Z, a resize) may come as soon as
        # the script's group is its foreground: they wait until the
        # monitor knows the call is running, so that it reports a stop
        # and sees a death as the call's.
        $old_mask = POSIX::SigSet->new;
        POSIX::sigprocmask(SIG_BLOCK,
            POSIX::SigSet->new(map { $SIGNAL_NUMBER{$_} } @TERMINAL_SIGNALS), $old_mask)
            or undef $old_mask;
        _keep_session($fds->[$pty], $byte & FLAG_BACKGROUND, $monitor,
            [ $call, $handover ], [ @$fds, $context ? $context->{cwd} : () ]);
        $ready .= pack 'N', $$;
    } else {
        POSIX::setpgid(0, 0);
    }
    eval { _send_all($call, 'P' . pack('N', $$)); 1 } or $failed->() if $byte & 1;
    # Nobody could report our status without the monitor.
    (syswrite($monitor, $ready) // -1) == length $ready or POSIX::_exit(127);
    POSIX::sigprocmask(SIG_SETMASK, $old_mask) if $old_mask;
    _set_title($SCRIPT);

    # The caller's closed fds (capability "closed"; the client sent
    # /dev/null in their place) as perl started with them closed has
    # them. It makes STDIN, STDOUT and STDERR on fds 0, 1, 2 regardless,
    # then opens its script (for -e, /dev/null), and at compile time each
    # module file, on the lowest free fd, reading each to its end; closing
    # the handle leaves an fd that a standard handle also counts open.
    # So each closed fd holds a file read-only at its end: reads see
    # EOF, writes fail with EBADF (output is buffered and its flush
    # fails: at exit, "Unable to flush stdout" and status 1). Here each
    # gets the script's file (opened before the caller's directory is
    # ours: $0 may be relative), and a standard handle made on it is
    # perl's own from start-up, with no second one for output (which a
    # character device such as /dev/null gets, and which perl's exit
    # does not check). If the script is unreadable now, the fd is closed.
    my $script_file;
    if ($closed && open($script_file, '<', $SCRIPT eq '-e' ? '/dev/null' : $SCRIPT)) {
        sysseek($script_file, 0, SEEK_END);
    }
    my @std = @$fds;
    if ($script_file) {
        $std[$_] = fileno $script_file for grep { $closed & (1 << $_) } 0 .. 2;
    }

    if ($context) {
        # The caller's directory and umask (capability "context").
        open(my $cwd, '<&=', $context->{cwd}) or POSIX::_exit(127);
        chdir($cwd) or POSIX::_exit(127);
        close $cwd;
        umask $context->{umask};
    }
    # Reopening a standard handle keeps its fd number (0, 1, 2), and
    # PerlIO looks afresh at whether it is a terminal (line buffering).
    open(STDIN,  '<&', $std[0]) or POSIX::_exit(127);
    open(STDOUT, '>&', $std[1]) or POSIX::_exit(127);
    open(STDERR, '>&', $std[2]) or POSIX::_exit(127);
    # What a direct run would inherit beyond fds; said on the caller's
    # stderr (ours now) if it cannot be, and the call does not run.
    if ($limits and defined(my $why = _take_limits($limits))) {
        syswrite STDERR, "prefork-interp: $why\n";
        POSIX::_exit(127);
    }
    if ($script_file) {
        close $script_file;
    } elsif ($closed) {
        POSIX::close($_) for grep { $closed & (1 << $_) } 0 .. 2;
    }
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
    # Then what initialisation did to its own, as in a direct run.
    for my $change (@init_env_changes) {
        my ($name, $value) = @$change;
        if (@$change > 1) {
            $ENV{$name} = $value;
        } else {
            delete $ENV{$name};
        }
    }
    @ARGV = @$args;
    # As a fresh run starts: `die` exits with $! when it is set, and ours
    # (from the handle juggling above) is no business of the script's.
    ($!, $?, $@) = (0, 0, '');
    return 1;
}

# Takes on a caller's resource limits (with prlimit64: none on an ABI
# whose number we do not keep), nice value and oom_score_adj: only what
# differs from ours is set. Returns why one could not be, or undef.
sub _read_own_limits {
    my %rlimits;
    if (my $prlimit = $SYSCALL{prlimit64}) {
        for my $resource (0 .. $#RLIMIT_NAMES) {
            my $mine = "\0" x 16;
            $rlimits{$resource} = $mine if syscall($prlimit, 0, $resource + 0, 0, $mine) == 0;
        }
    }
    my $oom;
    if (open(my $f, '<', '/proc/self/oom_score_adj')) {
        $oom = <$f>;
        chomp $oom if defined $oom;
    }
    return { rlimits => \%rlimits, nice => getpriority(0, 0), oom => $oom };
}

sub _take_limits {
    my ($limits) = @_;
    my $own = $OWN_LIMITS // _read_own_limits();
    if (my $prlimit = $SYSCALL{prlimit64}) {
        my $shown = sub { $_[0] == ~0 ? 'unlimited' : $_[0] };
        for my $entry (@{ $limits->{rlimits} }) {
            my ($resource, $soft, $hard) = @$entry;
            my $name = $RLIMIT_NAMES[$resource] // next;
            my $want = pack 'QQ', $soft, $hard;
            my $mine = $own->{rlimits}{$resource};
            next if defined $mine && $mine eq $want;
            next if syscall($prlimit, 0, $resource + 0, $want, 0) == 0;
            return sprintf "cannot give the script the caller's RLIMIT_%s (soft %s, hard %s): %s"
                . " (a server started under lower limits cannot raise them: -f starts a fresh one)",
                $name, $shown->($soft), $shown->($hard), $!;
        }
    }
    my $nice = $limits->{nice};
    if ($own->{nice} != $nice && !setpriority(0, 0, $nice)) {    # PRIO_PROCESS, us
        return "cannot give the script the caller's nice value $nice: $!";
    }
    my $oom = $limits->{oom};
    if ($oom != OOM_SCORE_UNKNOWN && (!defined $own->{oom} || $own->{oom} != $oom)) {
        my $f;
        open($f, '>', '/proc/self/oom_score_adj') && syswrite($f, $oom)
            or return "cannot give the script the caller's oom_score_adj $oom: $!";
    }
    return;
}

# On a call with a pseudo-terminal of its own ($terminal, an fd): starts
# a session with that terminal as its controlling terminal and forks the
# script's process, which makes a process group of its own and, unless
# it starts in the background, the terminal's foreground group; returns
# only in that process. The executor stays, as a shell would, the
# session's leader: its keeper (_keep), with none of the call's handles
# ($close) or fds ($fds) but the terminal.
sub _keep_session {
    my ($terminal, $background, $monitor, $close, $fds) = @_;
    if (!eval { _take_terminal($terminal); 1 }) {
        _log('err', "call failed: cannot take its terminal: $@");
        POSIX::_exit(127);
    }
    my $keeper = $$;
    my $script = fork;
    if (!defined $script) {
        _log('err', "call failed: cannot fork the script's process: $!");
        POSIX::_exit(127);
    }
    if ($script) {
        close $_ for @$close;
        POSIX::close($_) for grep { $_ != $terminal } @$fds;
        _keep($script, $monitor, $terminal);
    }
    # Our keeper gone (the monitor killed): the call ends.
    syscall($SYSCALL{prctl}, 1, SIGINT) if $SYSCALL{prctl};    # PR_SET_PDEATHSIG
    POSIX::_exit(0) if getppid() != $keeper;    # it died before we asked
    POSIX::setpgid(0, 0);
    # From the background: SIGTTOU is blocked, so it is allowed.
    if (!$background && !defined POSIX::tcsetpgrp($terminal, $$)) {
        _log('err', "call failed: cannot take its terminal: $!");
        POSIX::_exit(127);
    }
    return;
}

# The session's keeper: tells the monitor when the script stops ('t' and
# the signal) and how it ended ('x' and its wait status; with no fd open
# but 0, the monitor's socket, and the /dev/null at 1 and 2, so that the
# client sees its terminal's end at once), then exits;
# moves the script's group to its terminal's foreground (1) or background
# (0) when the client says so ('f', from its 'F'), and then continues it.
# What the script left in its group gets SIGINT while the script is a
# zombie (its group id cannot be reused), as the monitor does for an
# executor. A hang-up of the terminal, which the kernel signals to the
# session's leader, is the monitor's to pass on (it sees the client go).
# Runs none of the script's code: its signal handlers are off. SIGCHLD
# is blocked (since before the fork): the script's changes wait in a
# signalfd. Without signalfd's number for this ABI, a handler that does
# nothing interrupts select, and a look every second covers a SIGCHLD
# that came just before select began; and without waitid's, the script
# is reaped before its group's SIGINT. Never returns.
sub _keep {
    my ($script, $monitor, $terminal) = @_;
    local $SIG{__DIE__};
    local $SIG{__WARN__} = sub { };
    eval {
        $SIG{$_} = 'DEFAULT' for @FORWARDED, 'CHLD';
        $SIG{HUP} = 'IGNORE';
        # The monitor's death (PR_SET_PDEATHSIG) must still end us, and
        # with us the script (its own PR_SET_PDEATHSIG).
        POSIX::sigprocmask(SIG_UNBLOCK, POSIX::SigSet->new(SIGINT));
        my $children = _child_signals();
        if (!$children) {
            $SIG{CHLD} = sub { };
            POSIX::sigprocmask(SIG_UNBLOCK, POSIX::SigSet->new(SIGCHLD));
        }
        my $monitor_open = 1;
        while (1) {
            while (my ($state, $value) = _child_state($script)) {
                if ($state eq 'stopped') {
                    eval { _send_all($monitor, 't' . pack('N', $value)) };
                    next;
                }
                kill 'INT', -$script;
                if (!defined $value) {
                    1 while waitpid($script, 0) < 0 && $! == EINTR;
                    $value = ${^CHILD_ERROR_NATIVE};
                }
                # Our copies of the terminal go before the status: the
                # client waits for the last of them (its master's EIO)
                # before it ends, and need not wait for our exit too.
                # The monitor's socket alone stays, as fd 0.
                my $only = defined POSIX::dup2(fileno $monitor, 0)
                    && eval { _fdopen(0, '+<') };
                if ($only) {
                    _close_from(3);
                    $monitor = $only;
                }
                eval { _send_all($monitor, 'x' . pack('N', $value)) };
                POSIX::_exit(0);
            }
            my $rin = '';
            vec($rin, fileno $children, 1) = 1 if $children;
            vec($rin, fileno $monitor,  1) = 1 if $monitor_open;
            my $rout;
            if (select($rout = $rin, undef, undef, $children ? undef : 1) < 0) {
                next if $! == EINTR;
                die "select: $!\n";
            }
            1 while $children && sysread($children, my $record, 128);
            next unless $monitor_open && vec($rout, fileno $monitor, 1);
            my $message = eval { _read_exact($monitor, 5) };
            if (!defined $message) {
                $monitor_open = 0;
                next;
            }
            my ($kind, $value) = unpack 'a N', $message;
            if ($kind eq 'f') {
                # SIGTTOU is blocked: allowed from the background.
                POSIX::tcsetpgrp($terminal, $value == 1 ? $script : getpgrp);
                kill 'CONT', -$script;
            }
        }
    };
    _log('err', "keeper of $script: $@");
    POSIX::_exit(127);
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
C<@ARGV> and C<%ENV> are those of the call (C<%ENV> with what
initialisation did to it laid over it: see L</ENVIRONMENT>). C<$0> is
the script's path (see L</PROCESS TITLES>).
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

Executors-to-be kept waiting for the next calls; at least 1. The
server's one monitor forks them in advance, so that no fork is on a
call's critical path, and forks the next as each is handed a call. More
absorb bursts of simultaneous calls; each idle one is a process sharing
the server's memory. Default 1.

=item C<< interrupt_grace => I<SECONDS> >>

When a call's client goes away (killed, ^C), the script's process group
gets SIGINT, as it would have in a direct run (SIGHUP when the call runs
on a terminal of its own, which has hung up: see L</PROCESS GROUPS AND
TERMINALS>); a script still running this many seconds later (it ignores
SIGINT, or takes long over it) is
killed with SIGKILL, and that is logged, so that no script outlives its
caller holding the caller's pipes. Negative: never. Default 2.

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
caller's current directory with its caller's umask, resource limits,
nice value and OOM score adjustment (below); a call made from a
terminal runs on a pseudo-terminal of its own (below); a caller's
closed standard fd is closed for the script as in a direct run (below);
and C<prefork-interp --list> shows the server with its call counts. Signal
handlers the script set up during initialisation are in place in every
call (SIGINT and SIGPIPE excepted: default). See prefork-interp(7).

=head1 CLOSED STANDARD FILE DESCRIPTORS

With this project's client (the capability C<closed>), a call whose
caller has fd 0, 1 or 2 closed (C<script E<lt>&->) has STDIN, STDOUT
and STDERR as perl has them when started so. Perl makes those handles
on fds 0, 1 and 2 regardless, and then opens its script (and each
module it loads) on the lowest free fd; so in a direct run each closed
one holds such a file, read-only and at its end. In a call it holds the
script's file the same way: C<fileno> is the fd's number, C<-t> is
false, reading gives end of file, output to it is buffered and fails
with EBADF when flushed (for STDOUT at exit: "Unable to flush stdout",
exit status 1), as in a direct run. (If the script's file cannot be
opened again, the fd is closed.) Without the capability the client
passes F</dev/null> in its place.

=head1 PROCESS TITLES

The first call's arguments are in the argv area of the process that
became the server, which its monitor and executors share. Each overwrites
it with a title, by assigning C<$0>: C<SCRIPT [server]>, C<SCRIPT
[monitor]>, C<SCRIPT [handler]> (an executor waiting for its call, and on
a pseudo-terminal of its own the session's keeper), and in an executor
once it has its call, C<$0> is C<SCRIPT> again, where SCRIPT is C<$0>
when C<prefork_initialisation_complete> was called. That is what
F</proc/PID/cmdline>, C<ps> and C<prefork-interp --list> show. The process
name (F</proc/PID/comm>, which an assignment to C<$0> also sets) is put
back to what it was (C<perl>).

=head1 RESOURCE LIMITS

With this project's client (the capability C<limits>), each call takes
on what a direct run would inherit from its caller beyond its fds: every
resource limit (C<ulimit>), the nice value and F</proc/self/oom_score_adj>.
Before any of the script's code runs, the executor compares each with
its own and sets those that differ. One that cannot be set ends the call
before it starts, with one line on the caller's stderr naming it and
exit status 127: an unprivileged process cannot raise a hard limit,
lower its nice value or its oom_score_adj, so a server started under
lower limits (C<ulimit -n 100>) refuses a call from a caller with higher
ones; C<prefork-interp -f> starts a fresh server.

Resource limits are set with the prlimit64 system call, whose number the
module keeps for x86_64, aarch64, riscv64 and loongarch64 only (not to
load F<syscall.ph>); on other Linux ABIs a call keeps the server's
resource limits (the nice value and oom_score_adj are still the
caller's).

=head1 PROCESS GROUPS AND TERMINALS

Each call runs in a process group of its own, made once the call's
request has been read, whose id is the script's process id; the
processes the script starts are in it too, unless they leave it. The
group gets the signals the client passes on, SIGINT when the call's
client goes away, and SIGKILL after C<interrupt_grace>.

When one of this project's client's standard input, output and error is
its controlling terminal (F</dev/tty>), it gives the call a
pseudo-terminal of its own in that one's place (the capability C<tty>),
and the script runs on it as a direct run from a shell would: in a
session of its own with that pseudo-terminal as its controlling
terminal, leading the terminal's foreground process group. So
F</dev/tty> opens, C<tcgetpgrp(0)> is the script's group, the
terminal's ^C, ^\ and ^Z reach the group from the line discipline and
act as in a direct run (the client stops too, so its shell sees the job
stop; C<fg> resumes both), window size changes come as SIGWINCH, and
when the client goes away the script's group gets SIGHUP and SIGCONT,
as when a terminal hangs up. In the background (C<&>, C<bg>), and at
first in a pipeline, the script's group is in its terminal's background:
reading the terminal stops it with SIGTTIN.

For that call the executor starts the session (setsid), takes the
terminal (TIOCSCTTY) and forks the script's process; it stays, as a
shell would, the session's leader and the script's parent (a process
group led by the session's leader itself would be orphaned, and the
kernel discards the stop signals a terminal sends such a group). That
keeper runs none of the script's code and exits once it has reported
the script's status; C<getppid> in the script is the keeper.

On Linux ABIs other than x86_64, aarch64, riscv64 and loongarch64 (whose
system call numbers the module keeps, not to load F<syscall.ph>), the
executor takes its terminal by opening it again by name rather than
with TIOCSCTTY, and the keeper looks at the script at least once a
second, besides when SIGCHLD interrupts it, and reaps the script before
it sends SIGINT to what is left of its group.

=head1 ENVIRONMENT

As in a direct run, each call keeps what the script's start-up did to
its environment: variables that modules or the script set or changed in
C<%ENV> before C<prefork_initialisation_complete> have those values in
every call, and variables it deleted are absent; every other variable
is the caller's (or absent, if the caller lacks it). The module finds
those changes by comparing C<%ENV> at C<prefork_initialisation_complete>
with the environment the process was started with, read from
F</proc/self/environ> when the module loads (an assignment to C<$0>
overwrites it later, so load the module before any). C<PREFORK_INTERP>
is left out.

The environment initialisation reads picks the server: from the moment
the module is loaded until C<prefork_initialisation_complete>, C<%ENV>
is a stand-in that records the names read (C<$ENV{NAME}>, C<exists>,
C<defined>, C<local $ENV{NAME}>) and passes everything, writes included,
on to the real C<%ENV> (so C<system>'s children see the writes); the
real one is back afterwards. Iterating (C<keys>, C<each>, C<values>, a
copy) records nothing, nor does C's C<getenv> (a module in C). The
server offers the names, with a digest of the values the setup run had,
to this project's client, which goes to another server (starting it if
need be) when its own values differ: the script is initialised with the
caller's values, as a direct run would be. To read a variable without
making it part of that choice, read it before the module is loaded, in
a C<BEGIN> block above the C<use>:

    my $debug;
    BEGIN { $debug = $ENV{MY_DEBUG} }
    use Proc::Prefork::Interp;

(C<PREFORK_INTERP> is never recorded; nor is anything under taint
checks, C<-T>, where C<%ENV> is left alone.) With
L<Proc::Prefork::Interp::Run>, the module is loaded first, so the
preloaded modules' reads are recorded.

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
never in the server or its monitor. If the caller is killed,
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

=head1 LICENSE

Copyright (c) 2026 The prefork-interp developers.

Licensed under either of the Apache License, Version 2.0, or the MIT
license, at your option (SPDX: C<MIT OR Apache-2.0>); the texts are
LICENSE-APACHE and LICENSE-MIT in the source, and
/usr/share/doc/prefork-interp/copyright in the Debian package.

=cut
