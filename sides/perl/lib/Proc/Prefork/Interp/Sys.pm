package Proc::Prefork::Interp::Sys;

# Thin wrappers of the system calls perl lacks (by number: pidfd_open,
# close_range, waitid, signalfd, prctl, prlimit64, TIOCSCTTY), fd
# helpers, blocking socket I/O, and what is read from /proc: as the Rust
# side's src/sys and src/protocol/io.rs.

use strict;
use warnings;

use Config ();
use Exporter qw(import);
use Fcntl qw(F_GETFD F_SETFD FD_CLOEXEC O_RDWR);
use POSIX qw(:errno_h :signal_h :sys_wait_h);
use Socket qw(MSG_NOSIGNAL);

our $VERSION = '0.1.0';
our @EXPORT = qw(
    syscall_number signal_number pidfd_open close_from fd_is_open thread_count fdopen
    set_cloexec read_exact send_all describe_status child_signals child_state
    take_terminal stdio_terminals set_comm set_parent_death_signal get_rlimit set_rlimit
    world_namespaces read_cgroups inotify_open inotify_add_watch inotify_events
);

# pidfd_open(2) has this number on every Linux architecture (since 5.3).
use constant SYS_pidfd_open => 434;

# System call numbers (and TIOCSCTTY) for this perl's ABI: x86_64, and
# the generic table that aarch64, riscv64 and loongarch64 share.
# Elsewhere there are none: there is no inotify watch, and every call
# stats every file (as the original always does), and a server watching
# its own socket looks at its path every 5 s; an executor is not
# told of its monitor's death; an executor takes its pseudo-terminal by
# opening it again (see take_terminal); stops of executors on a
# pseudo-terminal are not reported; a keeper closes its fds one by one
# (see close_from); a call's resource limits are left as the server's
# (see set_rlimit). (syscall.ph would know, but costs every cold start
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

# Signal numbers by name: POSIX lacks some (WINCH); perl's own table
# has all.
my %SIGNAL_NUMBER;
@SIGNAL_NUMBER{ split ' ', $Config::Config{sig_name} } = split ' ', $Config::Config{sig_num};

# inotify_init1(2) flags.
use constant {
    IN_NONBLOCK => 04000,       # O_NONBLOCK
    IN_CLOEXEC  => 02000000,    # O_CLOEXEC
};

# signalfd(2) flags; waitid(2)'s arguments and the one si_code we want;
# prctl(2)'s options.
use constant {
    SFD_NONBLOCK      => 04000,       # O_NONBLOCK
    SFD_CLOEXEC       => 02000000,    # O_CLOEXEC
    P_PID             => 1,
    W_STOPPED         => 2,
    W_EXITED          => 4,
    W_NOWAIT          => 0x1000000,
    CLD_STOPPED       => 5,
    PR_SET_PDEATHSIG  => 1,
    PR_SET_NAME       => 15,
};

# This ABI's number of a system call (or TIOCSCTTY); undef if unknown.
sub syscall_number { return $SYSCALL{ $_[0] } }

sub signal_number { return $SIGNAL_NUMBER{ $_[0] } }

sub fdopen {
    my ($fd, $mode) = @_;
    open(my $fh, "$mode&=", $fd) or die "cannot use fd $fd: $!\n";
    return $fh;
}

sub pidfd_open {
    my ($pid) = @_;
    my $fd = syscall(SYS_pidfd_open, $pid + 0, 0);
    die "pidfd_open($pid) failed: $! (Linux 5.3 or later is needed)\n" if $fd < 0;
    return fdopen($fd, '<');
}

sub fd_is_open {
    my ($fd) = @_;
    my $copy = POSIX::dup($fd);
    return 0 unless defined $copy;
    POSIX::close($copy);
    return 1;
}

sub thread_count {
    opendir(my $dir, '/proc/self/task') or return 1;
    my $n = grep { !/\A\./ } readdir $dir;
    closedir $dir;
    return $n;
}

sub set_cloexec {
    my ($fh) = @_;
    my $flags = fcntl($fh, F_GETFD, 0) or die "fcntl: $!\n";
    fcntl($fh, F_SETFD, $flags | FD_CLOEXEC) or die "fcntl: $!\n";
    return;
}

# An inotify instance (a handle, non-blocking, close-on-exec); nothing,
# with $! set, when there is none: the user may have used up
# fs.inotify.max_user_instances (EMFILE), or this ABI's numbers are
# unknown (ENOSYS).
sub inotify_open {
    my $init = $SYSCALL{inotify_init1};
    if (!$init) {
        $! = ENOSYS;
        return;
    }
    my $fd = syscall($init, IN_NONBLOCK | IN_CLOEXEC);
    return if $fd < 0;
    return fdopen($fd, '<');
}

# Watches $path for the events of $mask: the watch descriptor, or undef
# with $! set.
sub inotify_add_watch {
    my ($inotify, $path, $mask) = @_;
    my $add = $SYSCALL{inotify_add_watch};
    if (!$add) {
        $! = ENOSYS;
        return;
    }
    my $copy = "$path";    # a string, so syscall passes its address
    my $wd = syscall($add, fileno $inotify, $copy, $mask + 0);
    return $wd < 0 ? undef : $wd;
}

# The events waiting on an inotify instance, read until none is left:
# [WD, MASK, NAME] each (NAME '' for an event on the watched path itself).
sub inotify_events {
    my ($inotify) = @_;
    my @events;
    while (1) {
        # (Room for many events: a read too short for the next fails.)
        my $got = sysread($inotify, my $bytes, 65536);
        if (!defined $got) {
            next if $! == EINTR;
            last;    # EAGAIN: all read
        }
        last if !$got;
        push @events, _inotify_records($bytes);
    }
    return @events;
}

# struct inotify_event: int wd; u32 mask, cookie, len; char name[len]
# (NUL-padded).
sub _inotify_records {
    my ($bytes) = @_;
    my @events;
    my $at = 0;
    while ($at + 16 <= length $bytes) {
        my ($wd, $mask, $len) = unpack "x$at i L x4 L", $bytes;
        my ($name) = unpack 'Z*', substr($bytes, $at + 16, $len);
        push @events, [ $wd, $mask, $name // '' ];
        $at += 16 + $len;
    }
    return @events;
}

# Closes every fd from $low up, under perl's handles (for a process
# about to leave): close_range(2) (Linux 5.9), or each fd
# /proc/self/fd lists.
sub close_from {
    my ($low) = @_;
    return if $SYSCALL{close_range}
        && syscall($SYSCALL{close_range}, $low + 0, 0xffffffff, 0) == 0;
    opendir(my $dir, '/proc/self/fd') or return;
    my @fds = grep { /\A\d+\z/ && $_ >= $low } readdir $dir;
    closedir $dir;    # (one of those listed)
    POSIX::close($_) for @fds;
    return;
}

# Reads exactly $length bytes; dies "hung up\n" at EOF.
sub read_exact {
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

# Sends all of $data (never SIGPIPE); dies "hung up\n" if the peer has
# gone.
sub send_all {
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

sub describe_status {
    my ($status) = @_;
    return 'exited with status ' . WEXITSTATUS($status) if WIFEXITED($status);
    if (WIFSIGNALED($status)) {
        my $core = $status & 0x80 ? ' (core dumped)' : '';
        return 'was killed by signal ' . WTERMSIG($status) . $core;
    }
    return sprintf 'has wait status %#x', $status;
}

# A signalfd (a handle) for SIGCHLD, which must be blocked; nothing
# without the system call's number for this ABI, or when it fails.
sub child_signals {
    return unless $SYSCALL{signalfd4};
    # A sigset_t of the kernel's: 64 bits, signal N at bit N-1.
    my $mask = pack 'Q', 1 << (SIGCHLD - 1);
    my $fd = syscall($SYSCALL{signalfd4}, -1, $mask, 8, SFD_NONBLOCK | SFD_CLOEXEC);
    return if $fd < 0;
    return fdopen($fd, '<');
}

# What has become of child $pid since it was last asked: ('stopped',
# SIGNAL), each stop once; ('exited'), a zombie still, for waitpid; or
# nothing yet. waitid(P_PID, pid, WSTOPPED | WEXITED | WNOWAIT | WNOHANG),
# then the stop's report consumed (without WEXITED, which never reaps).
# Without waitid's number for this ABI, waitpid, which reaps an exit:
# ('exited', STATUS). Dies with the reason.
sub child_state {
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

# Starts a session of our own (setsid) and makes fd $fd, a terminal, its
# controlling terminal: TIOCSCTTY, or without its number for this ABI,
# opening the terminal again by name (without O_NOCTTY), which on Linux
# makes it the controlling terminal of a session leader that has none.
# Our process group is then the terminal's foreground group. We must not
# lead a process group. Dies with the reason.
sub take_terminal {
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

# Which of fds 0, 1, 2 are terminals: bit N for fd N.
sub stdio_terminals {
    my $bits = 0;
    POSIX::isatty($_) and $bits |= 1 << $_ for 0 .. 2;
    return $bits;
}

# comm (/proc/self/comm) set to $name: PR_SET_NAME. Nothing without
# prctl's number.
sub set_comm {
    my ($name) = @_;
    syscall($SYSCALL{prctl}, PR_SET_NAME, $name) if $SYSCALL{prctl};
    return;
}

# This process gets $signal when its parent dies: PR_SET_PDEATHSIG.
sub set_parent_death_signal {
    my ($signal) = @_;
    syscall($SYSCALL{prctl}, PR_SET_PDEATHSIG, $signal + 0) if $SYSCALL{prctl};
    return;
}

# A resource limit of ours, packed 'QQ' (soft, hard): prlimit64; undef
# if it cannot be read (or without prlimit64's number).
sub get_rlimit {
    my ($resource) = @_;
    my $prlimit = $SYSCALL{prlimit64} or return;
    my $mine = "\0" x 16;
    return syscall($prlimit, 0, $resource + 0, 0, $mine) == 0 ? $mine : undef;
}

# Sets a resource limit of ours ($limit packed 'QQ'); false with $! on
# failure, true (nothing done) without prlimit64's number.
sub set_rlimit {
    my ($resource, $limit) = @_;
    my $prlimit = $SYSCALL{prlimit64} or return 1;
    return syscall($prlimit, 0, $resource + 0, $limit, 0) == 0;
}

# The inode each of @$names (/proc/self/ns/NAME) links to; undef if
# unreadable.
sub world_namespaces {
    my ($names) = @_;
    return [ map {
        my $link = readlink("/proc/self/ns/$_");
        defined $link && $link =~ /\[(\d+)\]\z/ ? $1 : undef
    } @$names ];
}

# /proc/self/cgroup as it is ('' if unreadable).
sub read_cgroups {
    open(my $cgroups, '<', '/proc/self/cgroup') or return '';
    local $/;
    my $text = <$cgroups> // '';
    close $cgroups;
    return $text;
}

1;
