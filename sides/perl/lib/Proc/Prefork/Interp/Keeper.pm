package Proc::Prefork::Interp::Keeper;

# The session's keeper, on a call with a pseudo-terminal of its own (the
# executor, once it has forked the script's process; the Rust side's
# keep, src/script/executor.rs): tells the monitor when the script stops
# ('t' and the signal) and how it ended ('x' and its wait status; with no
# fd open but 0, the monitor's socket, and the /dev/null at 1 and 2, so
# that the client sees its terminal's end at once), then exits; moves the
# script's group to its terminal's foreground (1) or background (0) when
# the client says so ('f', from its 'F'), and then continues it. What
# the script left in its group gets SIGINT while the script is a zombie
# (its group id cannot be reused), as the monitor does for an executor.
# A hang-up of the terminal, which the kernel signals to the session's
# leader, is the monitor's to pass on (it sees the client go).
#
# When the client that started the server named its own program
# (PREFORK_INTERP's pfi-keeper), the executor becomes that program, which
# keeps the session as keep does (exec_program): a keeper that is a copy
# of this interpreter shares every page of it with the script, whose
# writes would copy each page they touch; with the keeper gone from
# them, they are the script's own.
#
# Runs none of the script's code: its signal handlers are off. SIGCHLD
# is blocked (since before the fork): the script's changes wait in a
# signalfd. Without signalfd's number for this ABI, a handler that does
# nothing interrupts select, and a look every second covers a SIGCHLD
# that came just before select began; and without waitid's, the script
# is reaped before its group's SIGINT.

use strict;
use warnings;

use POSIX qw(:errno_h :signal_h);
use Proc::Prefork::Interp::Log;
use Proc::Prefork::Interp::Sys;
use Proc::Prefork::Interp::Wire;

our $VERSION = '0.1.0';

# Becomes the keeper program $program: PROGRAM --session-keeper SCRIPT,
# with the monitor's socket ($monitor, a handle) as fd 0 and the terminal
# ($terminal, an fd) as fd 1 (it closes our other fds itself; SIGCHLD
# stays blocked, and PR_SET_PDEATHSIG set). Returns only if the exec
# failed, with fds 0 and 1 on /dev/null (a copy of the terminal left there
# would outlive keep's closing at the end): keep then does the work here.
sub exec_program {
    my ($program, $script, $monitor, $terminal) = @_;
    if (defined POSIX::dup2(fileno $monitor, 0) && defined POSIX::dup2($terminal, 1)) {
        no warnings 'exec';
        exec { $program } $program, KEEPER_ARGUMENT, $script;
    }
    my $null = POSIX::open('/dev/null', POSIX::O_RDWR()) // return;
    POSIX::dup2($null, $_) for 0, 1;
    POSIX::close($null);
    return;
}

# $script: the script's pid; $monitor: the socket to the monitor;
# $terminal: the terminal's fd.
sub new {
    my ($class, $script, $monitor, $terminal) = @_;
    return bless { script => $script, monitor => $monitor, terminal => $terminal,
        monitor_open => 1 }, $class;
}

# Never returns.
sub keep {
    my ($self) = @_;
    local $SIG{__DIE__};
    local $SIG{__WARN__} = sub { };
    eval {
        $SIG{$_} = 'DEFAULT' for FORWARDED_SIGNALS, 'CHLD';
        $SIG{HUP} = 'IGNORE';
        # The monitor's death (PR_SET_PDEATHSIG) must still end us, and
        # with us the script (its own PR_SET_PDEATHSIG).
        POSIX::sigprocmask(SIG_UNBLOCK, POSIX::SigSet->new(SIGINT));
        my $children = child_signals();
        if (!$children) {
            $SIG{CHLD} = sub { };
            POSIX::sigprocmask(SIG_UNBLOCK, POSIX::SigSet->new(SIGCHLD));
        }
        while (1) {
            while (my ($state, $value) = child_state($self->{script})) {
                if ($state eq 'stopped') {
                    eval { send_all($self->{monitor}, encode_frame(KEEPER_STOPPED, $value)) };
                    next;
                }
                $self->ended($value);
            }
            $self->wait($children);
        }
    };
    write_log('err', "keeper of $self->{script}: $@");
    POSIX::_exit(127);
}

# The script has ended ($status: its wait status, or undef while it is
# still a zombie): its group's SIGINT, the status to the monitor, exit.
sub ended {
    my ($self, $status) = @_;
    my $script = $self->{script};
    kill 'INT', -$script;
    if (!defined $status) {
        1 while waitpid($script, 0) < 0 && $! == EINTR;
        $status = ${^CHILD_ERROR_NATIVE};
    }
    # Our copies of the terminal go before the status: the client waits
    # for the last of them (its master's EIO) before it ends, and need
    # not wait for our exit too. The monitor's socket alone stays, as fd
    # 0.
    my $monitor = $self->{monitor};
    my $only = defined POSIX::dup2(fileno $monitor, 0) && eval { fdopen(0, '+<') };
    if ($only) {
        close_from(3);
        $monitor = $only;
    }
    eval { send_all($monitor, encode_frame(KEEPER_STATUS, $status)) };
    POSIX::_exit(0);
}

# Waits for the script's next change ($children: the signalfd, if any)
# or the monitor's word ('f').
sub wait {
    my ($self, $children) = @_;
    my $monitor = $self->{monitor};
    my $rin = '';
    vec($rin, fileno $children, 1) = 1 if $children;
    vec($rin, fileno $monitor,  1) = 1 if $self->{monitor_open};
    my $rout;
    if (select($rout = $rin, undef, undef, $children ? undef : 1) < 0) {
        return if $! == EINTR;
        die "select: $!\n";
    }
    1 while $children && sysread($children, my $record, 128);
    return unless $self->{monitor_open} && vec($rout, fileno $monitor, 1);
    my $message = eval { read_exact($monitor, FRAME_LEN) };
    if (!defined $message) {
        $self->{monitor_open} = 0;
        return;
    }
    my ($kind, $value) = decode_frame($message);
    if ($kind eq KEEPER_FOREGROUND) {
        # SIGTTOU is blocked: allowed from the background.
        POSIX::tcsetpgrp($self->{terminal}, $value == 1 ? $self->{script} : getpgrp);
        kill 'CONT', -$self->{script};
    }
    return;
}

1;
