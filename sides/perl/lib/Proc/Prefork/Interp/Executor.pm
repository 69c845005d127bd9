package Proc::Prefork::Interp::Executor;

# An executor (as the Rust side's src/script/executor.rs): forked by the
# monitor before its call, with every other fd of the monitor's closed
# and the server's signal dispositions (SIGINT and SIGPIPE: default).
# Gets the call socket from the monitor, reads the request itself, makes
# a process group of its own, sends an extended call's 'P' with its own
# pid (before any per-call code), tells the monitor 'r', and becomes the
# call: the caller's fds, directory, umask, limits, ignored and blocked
# signals (over what initialisation left), environment and arguments;
# then it returns into the script.
#
# On a call with a pseudo-terminal of its own it starts a session
# instead, with that terminal as its controlling terminal, and forks the
# script's process, which leads the terminal's foreground group, sends
# 'P' and 'r' (with its pid) and returns into the script; the executor
# stays as the session's keeper (Proc::Prefork::Interp::Keeper). Why two
# processes: a process group none of whose members has a parent in its
# session but outside the group is orphaned, and the kernel discards the
# stop signals a terminal sends such a group: a script leading its
# session itself (its parent, the monitor, is elsewhere) would ignore ^Z.

use strict;
use warnings;

use Fcntl qw(SEEK_END);
use IO::FDPass;
use POSIX qw(:signal_h);
use Proc::Prefork::Interp::InitEnv;
use Proc::Prefork::Interp::Keeper;
use Proc::Prefork::Interp::Log;
use Proc::Prefork::Interp::Sys;
use Proc::Prefork::Interp::Wire;

our $VERSION = '0.1.0';

# Signals a terminal sends its foreground group: an executor on a
# pseudo-terminal of its own blocks them until its monitor knows the call
# is running. (SIGCHLD too, the keeper's, from a signalfd.)
use constant TERMINAL_SIGNALS => qw(INT QUIT TSTP TTIN TTOU WINCH HUP CHLD);
# Linux's resource numbers, RLIMIT_CPU (0) to RLIMIT_RTTIME (15), by name
# for messages.
use constant RLIMIT_NAMES => qw(CPU FSIZE DATA STACK CORE RSS NPROC NOFILE MEMLOCK AS LOCKS
    SIGPENDING MSGQUEUE NICE RTPRIO RTTIME);

# handover (the monitor's, for the call socket), monitor (our socket to
# it), monitor_pid, saved (the server's dispositions), titles, init_env
# (what initialisation did to the environment), own_limits, keeper_program
# (the client's program, to exec as a session's keeper; undef: none).
sub new {
    my ($class, %args) = @_;
    return bless {%args}, $class;
}

# Returns (true) once it is its call; leaves otherwise.
sub run {
    my ($self) = @_;
    detach_log();
    # A monitor killed mid-call leaves the call with nobody to report its
    # end: it ends as when its client goes, with SIGINT.
    set_parent_death_signal(SIGINT);
    POSIX::_exit(0) if getppid() != $self->{monitor_pid};    # it died before we asked
    POSIX::sigaction(signal_number($_), $self->{saved}{$_}) for keys %{ $self->{saved} };
    $SIG{INT}  = 'DEFAULT';
    $SIG{PIPE} = 'DEFAULT';
    POSIX::sigprocmask(SIG_UNBLOCK, POSIX::SigSet->new(SIGINT, SIGPIPE));
    my $fd = IO::FDPass::recv(fileno $self->{handover});
    POSIX::_exit(0) if $fd < 0;    # the monitor is gone, or never got a call
    $self->{call} = fdopen($fd, '+<');
    eval { $self->take_call; 1 } or $self->failed;
    $self->announce;
    $self->become_the_call;
    return 1;
}

# The call could not start ($@ says why): logged, and the executor leaves.
sub failed {
    my ($self) = @_;
    if ($@ eq "hung up\n") {
        write_log('info', 'client went away before its call started');
        POSIX::_exit(0);
    }
    write_log('err', "call failed: $@");
    POSIX::_exit(1);
}

sub _recv_fd {
    my ($call, $what) = @_;
    my $fd = IO::FDPass::recv(fileno $call);
    die "cannot receive $what: $!\n" if $fd < 0;
    return $fd;
}

# Reads the request: kind, fds (0, 1, 2), payload ({env, args}), context
# ({cwd, umask}), limits and caller_signals ({ignored, blocked}). Dies
# with the reason.
sub take_call {
    my ($self) = @_;
    my $call = $self->{call};
    my $byte = ord read_exact($call, 1);
    my $kind = $self->{kind} = check_request_byte($byte);
    check_second_request_byte($kind, ord read_exact($call, 1)) if has_second_request_byte($byte);
    $self->{fds} = [ map { _recv_fd($call, 'a file descriptor') } 1 .. 3 ];
    my $length = decode_payload_len(read_exact($call, 4));
    $self->{payload} = decode_payload(read_exact($call, $length));
    if ($kind->{context}) {
        my $cwd = _recv_fd($call, "the caller's directory");
        $self->{context} = { cwd => $cwd, umask => decode_context_umask(read_exact($call, 4)) };
    }
    if ($kind->{limits}) {
        my $n = ord read_exact($call, 1);
        $self->{limits} = decode_limits($n, read_exact($call, $n * LIMITS_ENTRY_LEN + LIMITS_TAIL_LEN));
    }
    $self->{caller_signals} = decode_caller_signals(read_exact($call, CALLER_SIGNALS_LEN))
        if $kind->{caller_signals};
    return;
}

# The monitor signals the call's processes as one (a client's signals,
# SIGINT when it ends or its client leaves): the script's group, whose id
# is the script's pid. (Not made while idle: setsid refuses a group
# leader.) Then the client is told the script's pid ('P', extended) and
# the monitor that the call runs ('r').
sub announce {
    my ($self) = @_;
    my $kind = $self->{kind};
    my ($pty) = on_pty($kind);
    my $old_mask;
    if (defined $pty) {
        # The terminal's signals (^C, ^Z, a resize) may come as soon as
        # the script's group is its foreground: they wait until the
        # monitor knows the call is running, so that it reports a stop
        # and sees a death as the call's.
        $old_mask = POSIX::SigSet->new;
        POSIX::sigprocmask(SIG_BLOCK,
            POSIX::SigSet->new(map { signal_number($_) } TERMINAL_SIGNALS), $old_mask)
            or undef $old_mask;
        $self->keep_session($self->{fds}[$pty]);
    } else {
        POSIX::setpgid(0, 0);
    }
    eval { send_all($self->{call}, encode_frame(FRAME_EXECUTOR_PID, $$)); 1 } or $self->failed
        if $kind->{extended};
    # Nobody could report our status without the monitor.
    my $ready = encode_executor_ready($kind, $$);
    (syswrite($self->{monitor}, $ready) // -1) == length $ready or POSIX::_exit(127);
    POSIX::sigprocmask(SIG_SETMASK, $old_mask) if $old_mask;
    $self->{titles}->set;
    return;
}

# On a call with a pseudo-terminal of its own ($terminal, an fd): starts
# a session with that terminal as its controlling terminal and forks the
# script's process, which makes a process group of its own and, unless
# it starts in the background, the terminal's foreground group; returns
# only in that process. The executor stays, as a shell would, the
# session's leader: its keeper, with none of the call's handles or fds
# but the terminal.
sub keep_session {
    my ($self, $terminal) = @_;
    if (!eval { take_terminal($terminal); 1 }) {
        write_log('err', "call failed: cannot take its terminal: $@");
        POSIX::_exit(127);
    }
    my $keeper = $$;
    my $script = fork;
    if (!defined $script) {
        write_log('err', "call failed: cannot fork the script's process: $!");
        POSIX::_exit(127);
    }
    if ($script) {
        close $_ for @$self{qw(call handover)};
        POSIX::close($_) for grep { $_ != $terminal } @{ $self->{fds} },
            $self->{context} ? $self->{context}{cwd} : ();
        Proc::Prefork::Interp::Keeper::exec_program($self->{keeper_program}, $script,
            $self->{monitor}, $terminal) if defined $self->{keeper_program};
        Proc::Prefork::Interp::Keeper->new($script, $self->{monitor}, $terminal)->keep;
    }
    # Our keeper gone (the monitor killed): the call ends.
    set_parent_death_signal(SIGINT);
    POSIX::_exit(0) if getppid() != $keeper;    # it died before we asked
    POSIX::setpgid(0, 0);
    # From the background: SIGTTOU is blocked, so it is allowed.
    if (!$self->{kind}{pty_background} && !defined POSIX::tcsetpgrp($terminal, $$)) {
        write_log('err', "call failed: cannot take its terminal: $!");
        POSIX::_exit(127);
    }
    return;
}

# The caller's closed fds (capability "closed"; the client sent
# /dev/null in their place) as perl started with them closed has them.
# It makes STDIN, STDOUT and STDERR on fds 0, 1, 2 regardless, then
# opens its script (for -e, /dev/null), and at compile time each module
# file, on the lowest free fd, reading each to its end; closing the
# handle leaves an fd that a standard handle also counts open. So each
# closed fd holds a file read-only at its end: reads see EOF, writes fail
# with EBADF (output is buffered and its flush fails: at exit, "Unable to
# flush stdout" and status 1). Here each gets the script's file (opened
# before the caller's directory is ours: $0 may be relative), and a
# standard handle made on it is perl's own from start-up, with no second
# one for output (which a character device such as /dev/null gets, and
# which perl's exit does not check). If the script is unreadable now, the
# fd is closed. Returns the fds for 0, 1, 2, and the script's file.
sub std_fds {
    my ($self) = @_;
    my $closed = $self->{kind}{closed};
    my $script = $self->{titles}->script;
    my $script_file;
    if (grep({$_} @$closed) && open($script_file, '<', $script eq '-e' ? '/dev/null' : $script)) {
        sysseek($script_file, 0, SEEK_END);
    }
    my @std = @{ $self->{fds} };
    if ($script_file) {
        $std[$_] = fileno $script_file for grep { $closed->[$_] } 0 .. 2;
    }
    return (\@std, $script_file);
}

# Takes on the call: fds, directory and umask, limits, environment and
# arguments.
sub become_the_call {
    my ($self) = @_;
    my ($std, $script_file) = $self->std_fds;
    if (my $context = $self->{context}) {
        # The caller's directory and umask (capability "context").
        open(my $cwd, '<&=', $context->{cwd}) or POSIX::_exit(127);
        chdir($cwd) or POSIX::_exit(127);
        close $cwd;
        umask $context->{umask};
    }
    # Reopening a standard handle keeps its fd number (0, 1, 2), and
    # PerlIO looks afresh at whether it is a terminal (line buffering).
    open(STDIN,  '<&', $std->[0]) or POSIX::_exit(127);
    open(STDOUT, '>&', $std->[1]) or POSIX::_exit(127);
    open(STDERR, '>&', $std->[2]) or POSIX::_exit(127);
    # What a direct run would inherit beyond fds; said on the caller's
    # stderr (ours now) if it cannot be, and the call does not run.
    if ($self->{limits} and defined(my $why = $self->take_limits($self->{limits}))) {
        syswrite STDERR, "prefork-interp: $why\n";
        POSIX::_exit(127);
    }
    $self->take_caller_signals($self->{caller_signals}) if $self->{caller_signals};
    if ($script_file) {
        close $script_file;
    } else {
        POSIX::close($_) for grep { $self->{kind}{closed}[$_] } 0 .. 2;
    }
    POSIX::close($_) for @{ $self->{fds} };
    close $_ for @$self{qw(call handover monitor)};
    # The caller's environment, then what initialisation did to its own,
    # as in a direct run.
    Proc::Prefork::Interp::InitEnv::lay_over($self->{payload}{env}, $self->{init_env});
    @ARGV = @{ $self->{payload}{args} };
    # ($!, $? and $@ are put back as the script left them by
    # prefork_initialisation_complete, once we return.)
    return;
}

# Takes on the caller's signals (capability "dispositions"), as a direct
# run would have inherited them with initialisation's own changes laid
# over: a signal initialisation left at its default is ignored where the
# caller ignores it (one it handles or ignores keeps that); the caller's
# blocked signals join the mask. What cannot be set (KILL, STOP, the C
# library's own) is left as it is.
sub take_caller_signals {
    my ($self, $caller) = @_;
    my $ignore = POSIX::SigAction->new('IGNORE');
    for my $sig (@{ $caller->{ignored} }) {
        my $old = POSIX::SigAction->new;
        POSIX::sigaction($sig, $ignore)
            if POSIX::sigaction($sig, undef, $old) && !ref $old->handler && $old->handler eq 'DEFAULT';
    }
    # One by one: new() dies on a signal the C library keeps for itself.
    my $blocked = POSIX::SigSet->new;
    $blocked->addset($_) for @{ $caller->{blocked} };
    POSIX::sigprocmask(SIG_BLOCK, $blocked);
    return;
}

# Our resource limits (packed 'QQ' by resource number), nice value and
# oom_score_adj: the monitor reads them once, before it forks executors.
sub read_own_limits {
    my %rlimits;
    my @names = RLIMIT_NAMES;
    for my $resource (0 .. $#names) {
        my $mine = get_rlimit($resource);
        $rlimits{$resource} = $mine if defined $mine;
    }
    my $oom;
    if (open(my $f, '<', '/proc/self/oom_score_adj')) {
        $oom = <$f>;
        chomp $oom if defined $oom;
    }
    return { rlimits => \%rlimits, nice => getpriority(0, 0), oom => $oom };
}

# Takes on a caller's resource limits (with prlimit64: none on an ABI
# whose number we do not keep), nice value and oom_score_adj: only what
# differs from ours is set. Returns why one could not be, or undef.
sub take_limits {
    my ($self, $limits) = @_;
    my $own = $self->{own_limits} // read_own_limits();
    my @names = RLIMIT_NAMES;
    my $shown = sub { $_[0] == ~0 ? 'unlimited' : $_[0] };
    for my $entry (@{ $limits->{rlimits} }) {
        my ($resource, $soft, $hard) = @$entry;
        my $name = $names[$resource] // next;
        my $want = pack 'QQ', $soft, $hard;
        my $mine = $own->{rlimits}{$resource};
        next if defined $mine && $mine eq $want;
        next if set_rlimit($resource, $want);
        return sprintf "cannot give the script the caller's RLIMIT_%s (soft %s, hard %s): %s"
            . " (a server started under lower limits cannot raise them: -f starts a fresh one)",
            $name, $shown->($soft), $shown->($hard), $!;
    }
    my $nice = $limits->{nice};
    if ($own->{nice} != $nice && !setpriority(0, 0, $nice)) {    # PRIO_PROCESS, us
        return "cannot give the script the caller's nice value $nice: $!";
    }
    my $oom = $limits->{oom_score_adj};
    if ($oom != OOM_SCORE_UNKNOWN && (!defined $own->{oom} || $own->{oom} != $oom)) {
        my $f;
        open($f, '>', '/proc/self/oom_score_adj') && syswrite($f, $oom)
            or return "cannot give the script the caller's oom_score_adj $oom: $!";
    }
    return;
}

1;
