package Proc::Prefork::Interp::Monitor;

# The one monitor of a server (as the Rust side's src/script/monitor.rs):
# forked once by the server (again if it dies); keeps spare_handlers
# executors-to-be idle, forked in advance, hands each call the server
# sends on its control socket to one of them, and watches every call in
# flight in one select loop. When an executor's pidfd says it is gone, it
# SIGINTs what is left of its group, REAPS IT, tells the server 'd' (the
# server counts calls running by these) and then sends the status to the
# client. Once the server has gone, it serves the calls in flight to
# their end, then leaves. It ignores the forwarded signals, and leaves
# with POSIX::_exit. A client that goes away while it has its caller's
# terminal raw has it put back first (capability restore, 'R'), even
# once its status has been sent, until it says it has put it back.

use strict;
use warnings;

use IO::FDPass;
use POSIX qw(:errno_h NCCS TCSANOW);
use Proc::Prefork::Interp::Executor;
use Proc::Prefork::Interp::Log;
use Proc::Prefork::Interp::Sys;
use Proc::Prefork::Interp::Wire;
use Socket qw(AF_UNIX MSG_NOSIGNAL PF_UNSPEC SOCK_STREAM);
use Time::HiRes ();

our $VERSION = '0.1.0';

# How long missing spares wait for the calls in flight to end (seconds).
use constant REFILL_DELAY => 0.005;

# The signals a client may forward, by number.
my %FORWARDED_NUMBER = map { (signal_number($_) => 1) } FORWARDED_SIGNALS;

# Freshly forked by the server: control (the server's socket; undef once
# the server has gone), spare (spare_handlers), grace (interrupt_grace,
# undef: never SIGKILL), titles, init_env (for executors).
sub new {
    my ($class, %args) = @_;
    return bless {
        %args,
        saved => {},    # the server's dispositions of the forwarded signals
        # Executors-to-be: {pid, pidfd, handover, from}; handover undef
        # once they are to leave (the server went) or have left.
        idle  => [],
        # Calls in flight, by executor pid: {pidfd, call, from, phase,
        # extended, group, keeper, frame, restore}. Phases: waiting (handed the
        # call, no 'r' yet; from undef: it failed before its call),
        # running (got 'r'), reported (its keeper said the script's
        # status, which the client has: the keeper is on its way out),
        # abandoned (the client left; SIGINTed, or on a pseudo-terminal
        # SIGHUPed). group: the process group the call's signals go to,
        # the executor's or on a pseudo-terminal of its own the script's.
        # keeper, on a pseudo-terminal of its own (the executor keeps the
        # session; the script is its child): {script, from (its 't' and
        # 'x'; undef at EOF), status (from 'x')}. restore: {settings,
        # terminal} from the client's last 'R', to put back on the
        # caller's terminal if the client goes away (see hear_client).
        calls => {},
        # Calls whose status has gone to a client that still had its
        # caller's terminal raw, by their call socket's fd: {call,
        # restore, frame}, each until its client says it put the terminal
        # back ('R' 0) or goes (see status_to_client).
        ending => {},
    }, $class;
}

# Never returns, but (true) in an executor, once it is its call.
sub run {
    my ($self) = @_;
    $self->{titles}->set('monitor');
    detach_log();
    # The server's limits, read once before any executor is forked:
    # comparing a caller's with them then costs a call no system call.
    $self->{own_limits} = Proc::Prefork::Interp::Executor::read_own_limits();
    # We deliver these to executors' groups; they must not hurt us.
    # Executors get back what the server had.
    for my $name (FORWARDED_SIGNALS) {
        my $old = POSIX::SigAction->new;
        POSIX::sigaction(signal_number($name), POSIX::SigAction->new('IGNORE'), $old);
        $self->{saved}{$name} = $old;
    }
    return 1 if eval { $self->serve };
    write_log('err', "monitor failed: $@");
    POSIX::_exit(1);
}

sub spares { return scalar grep { $_->{handover} } @{ $_[0]{idle} } }

# The loop. True only in an executor.
sub serve {
    my ($self) = @_;
    my $calls = $self->{calls};
    my $short_since;    # since when spares have been missing
    while (1) {
        # Missing spares are forked at once when no call is in flight,
        # else once they have been missing for REFILL_DELAY: a fork takes
        # the monitor away from its calls while it copies every page
        # table, and a short call's status should not wait for it.
        my $timeout;
        if ($self->{control} && $self->spares < $self->{spare}) {
            $short_since //= Time::HiRes::time();
            $timeout = $short_since + REFILL_DELAY - Time::HiRes::time();
            if (!%$calls || $timeout <= 0) {
                return 1 if $self->refill;
                undef $short_since;
                undef $timeout;
            }
        }
        POSIX::_exit(0)
            if !$self->{control} && !%$calls && !@{ $self->{idle} } && !%{ $self->{ending} };
        $timeout = $self->kill_overdue($timeout);
        my $rout = $self->wait($timeout) // next;
        return 1 if $self->dispatch($rout);
    }
}

# Forks the missing spares. True only in an executor.
sub refill {
    my ($self) = @_;
    while ($self->spares < $self->{spare}) {
        my $pid = $self->fork_executor;
        return 1 if defined $pid && $pid == 0;
        last unless $pid;    # logged; tried again next round
    }
    return 0;
}

# Scripts that carry on after the SIGINT their client's leaving brought:
# SIGKILL once the grace is over, and poll no longer. Returns the
# timeout, made shorter if a grace ends first.
sub kill_overdue {
    my ($self, $timeout) = @_;
    return $timeout unless defined $self->{grace};
    my $calls = $self->{calls};
    for my $pid (keys %$calls) {
        my $c = $calls->{$pid};
        next unless $c->{phase} eq 'abandoned' && !$c->{killed};
        my $left = $c->{since} + $self->{grace} - Time::HiRes::time();
        if ($left <= 0) {
            kill 'KILL', -$c->{group};
            $c->{killed} = 1;
            write_log('err', "executor $pid still ran $self->{grace} s after its client "
                . 'went away and its SIGINT: killed');
        } elsif (!defined $timeout || $left < $timeout) {
            $timeout = $left;
        }
    }
    return $timeout;
}

# One select; the bits ready, or undef on EINTR.
sub wait {
    my ($self, $timeout) = @_;
    my $rin = '';
    vec($rin, fileno $self->{control}, 1) = 1 if $self->{control};
    vec($rin, fileno $_->{pidfd}, 1) = 1 for @{ $self->{idle} }, values %{ $self->{calls} };
    for my $c (values %{ $self->{calls} }) {
        if ($c->{phase} eq 'waiting') {
            vec($rin, fileno $c->{from}, 1) = 1 if $c->{from};
        } elsif ($c->{phase} eq 'running') {
            vec($rin, fileno $c->{call}, 1) = 1;
            vec($rin, fileno $c->{keeper}{from}, 1) = 1 if $c->{keeper} && $c->{keeper}{from};
        }
    }
    vec($rin, fileno $_->{call}, 1) = 1 for values %{ $self->{ending} };
    my $rout;
    if (select($rout = $rin, undef, undef, $timeout) < 0) {
        return if $! == EINTR;
        die "select failed: $!\n";
    }
    return $rout;
}

# What select said, in causal order. True only in an executor.
sub dispatch {
    my ($self, $rout) = @_;
    my $calls = $self->{calls};
    # (Only fds open at the select are looked at: nothing is opened
    # before the last step, so no fd number was reused.)
    my $ready = sub { vec($rout, fileno $_[0], 1) };
    # Keepers with news: a script stopped, or ended. (Those of calls
    # running when select began: an executor's socket, readable with its
    # 'r', becomes its keeper's.)
    my @keepers = grep {
        $_->{phase} eq 'running' && $_->{keeper} && $_->{keeper}{from}
            && $ready->($_->{keeper}{from})
    } values %$calls;
    # Clients whose status has gone with something to say (those ending
    # when select began: a call socket readable then may become an
    # ending one's below, with nothing left to read).
    my @ending = grep { $ready->($_->{call}) } values %{ $self->{ending} };
    # Executors that have taken their call.
    for my $c (values %$calls) {
        $self->take_ready($c) if $c->{phase} eq 'waiting' && $c->{from} && $ready->($c->{from});
    }
    for my $c (@keepers) {
        hear_keeper($c);
        $self->report($c) if defined $c->{keeper}{status};
    }
    # Executors gone, idle ones and those of calls.
    $self->reap_idle($ready);
    for my $pid (grep { $ready->($calls->{$_}{pidfd}) } keys %$calls) {
        $self->reap($pid, delete $calls->{$pid});
    }
    # Clients of running calls: a signal to forward, or gone.
    for my $pid (keys %$calls) {
        my $c = $calls->{$pid};
        hear_client($c) if $c->{phase} eq 'running' && $ready->($c->{call});
    }
    $self->hear_ending($_) for @ending;
    # The server: a call, or gone.
    return $self->{control} && $ready->($self->{control}) && $self->take_call;
}

# Idle executors that have gone, reaped.
sub reap_idle {
    my ($self, $ready) = @_;
    my (@gone, @left);
    push @{ $ready->($_->{pidfd}) ? \@gone : \@left }, $_ for @{ $self->{idle} };
    @{ $self->{idle} } = @left;
    for my $e (@gone) {
        close $e->{pidfd};
        close $e->{from};
        close $e->{handover} if $e->{handover};
        waitpid($e->{pid}, 0);
        # Once the server has gone, we closed its handover and it left.
        write_log('err', "idle executor $e->{pid} " . describe_status(${^CHILD_ERROR_NATIVE}))
            if $self->{control};
    }
    return;
}

# Forks an executor-to-be and counts it idle. Returns its pid; 0 in the
# child, once it has become its call; nothing when it could not (logged).
sub fork_executor {
    my ($self, @close) = @_;
    my ($handover, $handover_theirs, $from, $from_theirs);
    if (!socketpair($handover, $handover_theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        || !socketpair($from, $from_theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC))
    {
        write_log('err', "socketpair: $!");
        return;
    }
    my $monitor = $$;
    my $pid = fork;
    if (!defined $pid) {
        write_log('err', "cannot fork an executor: $!");
        return;
    }
    if ($pid == 0) {
        $self->close_in_child($handover, $from, @close);
        # Before its call: not on any call's path.
        $self->{titles}->set('handler');
        Proc::Prefork::Interp::Executor->new(handover => $handover_theirs,
            monitor => $from_theirs, monitor_pid => $monitor,
            map { ($_ => $self->{$_}) } qw(saved titles init_env own_limits keeper_program))->run;
        return 0;
    }
    close $handover_theirs;
    close $from_theirs;
    my $pidfd = eval { pidfd_open($pid) };
    if (!$pidfd) {
        write_log('err', $@);
        kill 'KILL', $pid;
        waitpid($pid, 0);
        return;
    }
    push @{ $self->{idle} },
        { pid => $pid, pidfd => $pidfd, handover => $handover, from => $from };
    return $pid;
}

# In an executor just forked: nothing of the monitor's stays open (nor
# @also). A call socket kept open in a spare would stop its client from
# ever seeing EOF; a caller's terminal, from ever being closed.
sub close_in_child {
    my ($self, @also) = @_;
    close $_ for grep {defined} $self->{control}, @also,
        (map { @$_{qw(pidfd handover from)} } @{ $self->{idle} }),
        (map { (@$_{qw(pidfd call from)}, $_->{keeper} && $_->{keeper}{from},
            $_->{restore} && $_->{restore}{terminal}) } values %{ $self->{calls} }),
        (map { ($_->{call}, $_->{restore} && $_->{restore}{terminal}) }
            values %{ $self->{ending} });
    return;
}

# The server's next call, handed to an idle executor-to-be (forked now if
# none is); or its EOF: it has gone. True only in an executor forked here.
sub take_call {
    my ($self) = @_;
    local $! = 0;    # recvmsg leaves it alone at EOF
    my $fd = IO::FDPass::recv(fileno $self->{control});
    if ($fd < 0) {
        return if $! == EINTR || $! == EAGAIN;
        $self->server_gone;
        return;
    }
    my $call = fdopen($fd, '+<');
    my $forked = 0;
    while (1) {
        my ($e) = grep { $_->{handover} } @{ $self->{idle} };
        if (!$e && !$forked++) {
            my $pid = $self->fork_executor($call);
            return 1 if defined $pid && $pid == 0;
            ($e) = grep { $_->{handover} } @{ $self->{idle} } if $pid;
        }
        if (!$e) {
            write_log('err', 'no executor to take a call');
            close $call;
            $self->call_ended(MONITOR_CALL_DROPPED);
            return;
        }
        my $sent = IO::FDPass::send(fileno $e->{handover}, fileno $call);
        close delete $e->{handover};
        if ($sent) {
            @{ $self->{idle} } = grep { $_ != $e } @{ $self->{idle} };
            $self->{calls}{ $e->{pid} } = {
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
        write_log('err', "executor $e->{pid} cannot take a call: $!");
    }
}

# The server has gone: idle executors leave on their handover's EOF
# (their pidfds tell us when); calls in flight go on.
sub server_gone {
    my ($self) = @_;
    close delete $self->{control};
    close delete $_->{handover} for grep { $_->{handover} } @{ $self->{idle} };
    return;
}

# The executor's 'r' and request byte: it has its call; on a
# pseudo-terminal of its own, then the script's pid: it keeps the
# session, and its 't' and 'x' follow on the same socket. EOF instead: it
# could not take it (it logged why); its pidfd says when it is gone.
sub take_ready {
    my ($self, $c) = @_;
    my $from = delete $c->{from};
    my $kind = eval { decode_executor_ready(read_exact($from, 2)) };
    if ($kind && !on_pty($kind)) {
        $c->{phase}    = 'running';
        $c->{extended} = $kind->{extended};
    } elsif ($kind && defined(my $script = eval { unpack 'N', read_exact($from, 4) })) {
        $c->{phase}    = 'running';
        $c->{extended} = $kind->{extended};
        $c->{group}    = $script;
        $c->{keeper}   = { script => $script, from => $from };
        return;
    }
    close $from;
    return;
}

# One message from a keeper (it writes each whole, at once): the script
# stopped ('t': the client is told, 'T'), or ended ('x': its status, for
# the client, see report). EOF or garbage: the keeper has nothing more
# to say.
sub hear_keeper {
    my ($c) = @_;
    my $keeper = $c->{keeper};
    my $message = eval { read_exact($keeper->{from}, FRAME_LEN) } // '';
    my ($kind, $value) = length $message == FRAME_LEN ? decode_frame($message) : ('');
    if ($kind eq KEEPER_STOPPED) {
        # A client gone is heard on the call socket.
        eval { send_all($c->{call}, encode_frame(FRAME_STOPPED, $value)) };
    } elsif ($kind eq KEEPER_STATUS) {
        $keeper->{status} = $value;
    } else {
        close delete $keeper->{from};
    }
    return;
}

# The client's status message: a frame (extended), or the status alone.
# Whether it was sent (a client that has gone is no error).
sub send_status {
    my ($c, $status) = @_;
    return eval {
        send_all($c->{call},
            $c->{extended} ? encode_frame(FRAME_STATUS, $status) : encode_status($status));
        1;
    } ? 1 : 0;
}

# A running call's keeper has said how the script ended ('x'): the call
# is over at once. The server is told ('d'), then the client (its
# status); the keeper, on its way out, is reaped when its pidfd says so
# (reap), without either again.
sub report {
    my ($self, $c) = @_;
    $c->{phase} = 'reported';
    $self->call_ended(MONITOR_CALL_ENDED);
    $self->status_to_client($c, $c->{keeper}{status});
    return;
}

# The status of a call whose script has ended, to its client. What the
# client said before that is read first: its terminal's settings, or
# that it has gone (the hang-up of the terminal it held may be what
# ended the script, before its EOF was read). Not sent, the client has
# gone: its terminal is put back now. Sent, the client puts its terminal
# back itself and says so ('R' 0); but sent is not received: a client
# killed as the script ends closes its pseudo-terminal (which ends the
# script) before its call socket, and never restores its terminal. So
# until it says so, what it left is kept, and its call socket (taken
# from the call, which closes nothing of it when reaped) is watched: the
# call is ending (see hear_ending).
sub status_to_client {
    my ($self, $c, $status) = @_;
    # (A v1 client sends nothing after its request.)
    my $gone = $c->{extended} && hear_last_of_client($c);
    if ($gone || !send_status($c, $status)) {
        put_back_terminal($c);
        return;
    }
    my $restore = delete $c->{restore} or return;
    my $call = delete $c->{call};
    $self->{ending}{ fileno $call } = { call => $call, restore => $restore, frame => '' };
    return;
}

# A client whose status has gone has more to say (select said its call
# socket is readable): 'R' 0, it has put its terminal back (what was
# kept is dropped); or its end, and it may have died before it could
# (its terminal is put back, if it still has what the client left
# there); either way the call is over. Another 'R' replaces what was
# kept; any other frame goes nowhere (a script that has ended gets no
# signals).
sub hear_ending {
    my ($self, $e) = @_;
    my @frame = read_client_frame($e);
    return if !@frame;
    if (defined $frame[0]) {
        my ($kind, $value) = @frame;
        return if $kind ne FRAME_RESTORE;
        # Heard whole: another 'R' is kept in place of the first; after
        # 'R' 0 nothing is (nor put back below). Not whole, the client is
        # taken as gone.
        return if hear_restore($e, $value) && $e->{restore};
    }
    put_back_terminal($e);
    delete $self->{ending}{ fileno $e->{call} };
    close $e->{call};
    return;
}

# What the client of an extended call whose script has ended sent and
# was not read yet: its 'R' frames are taken (signals for an ended script
# go nowhere). Whether it has gone (EOF, an error, an 'R' not whole).
sub hear_last_of_client {
    my ($c) = @_;
    while (1) {
        my $rin = '';
        vec($rin, fileno $c->{call}, 1) = 1;
        my $ready = select(my $rout = $rin, undef, undef, 0);
        next if $ready < 0 && $! == EINTR;
        return $ready < 0 ? 1 : 0 if $ready <= 0;
        # A frame the client began is there whole: it writes each at once.
        my $rest = eval { read_exact($c->{call}, FRAME_LEN - length $c->{frame}) };
        return 1 unless defined $rest;
        my ($kind, $value) = decode_frame($c->{frame} . $rest);
        $c->{frame} = '';
        return 1 if $kind eq FRAME_RESTORE && !hear_restore($c, $value);
    }
}

# The executor of a call has gone: it is reaped and the call ends; we
# tell the server ('d') before we tell the client its status (unless that
# was done when its keeper said it: phase reported).
sub reap {
    my ($self, $pid, $c) = @_;
    if ($c->{phase} eq 'reported') {
        # What it left behind in its group; then it is reaped.
        kill 'INT', -$pid;
        waitpid($pid, 0);
        close $c->{call} if $c->{call};    # (an ending call's is watched on)
        close $c->{pidfd};
        close $c->{keeper}{from} if $c->{keeper}{from};
        return;
    }
    # It is dead: reading cannot block, and its 'r' may have come after
    # the select looked.
    $self->take_ready($c) if $c->{from};
    # A keeper has exited: all it said is there to read.
    my $keeper = $c->{keeper};
    hear_keeper($c) while $keeper && $keeper->{from};
    if ($c->{phase} eq 'abandoned') {
        waitpid($pid, 0);
        my $status = $keeper ? $keeper->{status} : ${^CHILD_ERROR_NATIVE};
        write_log('info', 'client went away; script interrupted, it '
            . (defined $status ? describe_status($status) : 'has no known status'));
        $self->call_ended(MONITOR_CALL_ENDED);
    } else {
        # What it left behind in its group. First: unreaped, it keeps its
        # pid (the group's id) from being reused. (A keeper has done so
        # for the script's group.)
        kill 'INT', -$pid;
        waitpid($pid, 0);
        my $status = ${^CHILD_ERROR_NATIVE};
        # 'h': no request came (a listing; a caller that went elsewhere).
        $self->call_ended($c->{phase} eq 'running' ? MONITOR_CALL_ENDED : MONITOR_CALL_DROPPED);
        if ($keeper) {
            if (defined $keeper->{status}) {
                $status = $keeper->{status};
            } else {
                # Killed before the script ended: nothing watches the
                # script now. It goes too.
                write_log('err', "keeper $pid of script $keeper->{script} "
                    . describe_status($status) . ': script killed');
                kill 'KILL', -$keeper->{script};
            }
        }
        if ($c->{phase} eq 'running') {
            $self->status_to_client($c, $status);
        } elsif ($status) {
            write_log('err', "executor $pid failed before its call: it "
                . describe_status($status));
        }
    }
    close $c->{call} if $c->{call};    # (an ending call's is watched on)
    close $c->{pidfd};
    return;
}

# Tells the server a call has ended (while it lives): 'd', or 'h' if its
# script never ran.
sub call_ended {
    my ($self, $how) = @_;
    send($self->{control}, $how, MSG_NOSIGNAL) if $self->{control};
    return;
}

# The client of a running call has something to say: extended, a signal
# to forward, on a pseudo-terminal of its own where the script's group
# belongs ('F', for the keeper), or the caller's terminal settings to put
# back should it go away ('R'); v1, nothing. Or it has left: its
# caller's terminal gets those settings back, then the script's group
# gets SIGINT (on a pseudo-terminal of its own, SIGHUP and SIGCONT: its
# terminal has hung up, as a direct run's would), and the call waits for
# its executor's end.
sub hear_client {
    my ($c) = @_;
    my $keeper = $c->{keeper};
    if ($c->{extended}) {
        my @frame = read_client_frame($c);
        return if !@frame;
        if (defined $frame[0]) {
            my ($kind, $value) = @frame;
            if ($kind eq FRAME_SIGNAL) {
                kill $value, -$c->{group} if $FORWARDED_NUMBER{$value};
            } elsif ($kind eq FRAME_FOREGROUND) {
                eval { send_all($keeper->{from}, encode_frame(KEEPER_FOREGROUND, $value)) }
                    if $keeper && $keeper->{from};
            } elsif ($kind eq FRAME_RESTORE && !hear_restore($c, $value)) {
                # Not sent whole: the client is taken as gone (what an
                # earlier 'R' gave, if any, is put back).
                return gone($c);
            }
            return;    # (unknown kinds ignored)
        }
    }
    return gone($c);
}

# One read of a client's call socket ({call, frame}: a running call's, or
# an ending one's), which select said is readable: its next frame once
# whole, as (kind, value); () while it is not whole yet (or the read was
# interrupted); (undef) at its end (EOF, or an error).
sub read_client_frame {
    my ($c) = @_;
    my $got = sysread($c->{call}, $c->{frame}, FRAME_LEN - length $c->{frame},
        length $c->{frame});
    return () if !defined $got && ($! == EINTR || $! == EAGAIN);
    return (undef) if !$got;
    return () if length $c->{frame} < FRAME_LEN;
    my @frame = decode_frame($c->{frame});
    $c->{frame} = '';
    return @frame;
}

# The client of a running call has gone (EOF, or any error on the call
# socket).
sub gone {
    my ($c) = @_;
    my $keeper = $c->{keeper};
    # First, before the script's group hears of it: the shell that ran
    # the client may already be reading its next command from that
    # terminal.
    put_back_terminal($c);
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

# The rest of an 'R' frame of value $value, kept on the call in place of
# what the last 'R' gave ('R' 0: nothing). Whether it came whole (if
# not, why is logged, unless the client just hung up).
sub hear_restore {
    my ($c, $value) = @_;
    my $restore = eval { read_restore($c->{call}, $value) };
    if (!defined $restore) {
        chomp(my $why = "$@");
        write_log('err', "call's terminal settings: $why") if $why ne 'hung up';
        return 0;
    }
    drop_restore($c);
    $c->{restore} = $restore if $value;
    return 1;
}

# The rest of an 'R' frame of value $length, read from $call: a restore
# message of that many bytes and, if any, the caller's terminal. Returns
# {settings, left, terminal} (the settings to put back, and those the
# client left), or {} for none ($length 0). Reads block: the
# client sends all of it at once. Dies (one line) if the client does not
# send it whole.
sub read_restore {
    my ($call, $length) = @_;
    return {} unless $length;
    # Before reading: a wild length is no settings, and no read of it.
    check_restore_len($length);
    my ($settings, $left) = decode_restore(read_exact($call, $length));
    local $! = 0;    # recvmsg leaves it alone at EOF
    my $fd = IO::FDPass::recv(fileno $call);
    die $! ? "cannot receive the caller's terminal: $!\n" : "hung up\n" if $fd < 0;
    return { settings => $settings, left => $left, terminal => fdopen($fd, '+<') };
}

# Whether $termios (as the terminal has it now) is what the client left.
sub _still_left {
    my ($termios, $left) = @_;
    return 0 if $termios->getiflag != $left->{iflag} || $termios->getoflag != $left->{oflag}
        || $termios->getcflag != $left->{cflag} || $termios->getlflag != $left->{lflag};
    my @cc = @{ $left->{cc} };
    for my $i (0 .. (@cc < NCCS ? @cc : NCCS) - 1) {
        return 0 if $termios->getcc($i) != $cc[$i];
    }
    return 1;
}

# Forgets the settings kept for a call, closing its caller's terminal.
sub drop_restore {
    my ($c) = @_;
    my $restore = delete $c->{restore} or return;
    close $restore->{terminal};
    return;
}

# Puts the settings kept for a call back on its caller's terminal (at
# once, TCSANOW), if it still has those the client left (flags and
# control characters: a shell that has taken its terminal back since
# keeps its own mode), then closes it. Fields the wire does not carry
# keep the terminal's values (getattr first), and only as many control
# characters as this platform has are set. Failures are ignored: the
# terminal may itself have gone.
sub put_back_terminal {
    my ($c) = @_;
    my $restore = $c->{restore} or return;
    my ($settings, $left, $fd) = (@$restore{qw(settings left)}, fileno $restore->{terminal});
    my $termios = POSIX::Termios->new;
    if (defined $termios->getattr($fd) && _still_left($termios, $left)) {
        $termios->setiflag($settings->{iflag});
        $termios->setoflag($settings->{oflag});
        $termios->setcflag($settings->{cflag});
        $termios->setlflag($settings->{lflag});
        $termios->setispeed($settings->{ispeed});
        $termios->setospeed($settings->{ospeed});
        my @cc = @{ $settings->{cc} };
        $termios->setcc($_, $cc[$_]) for 0 .. (@cc < NCCS ? @cc : NCCS) - 1;
        $termios->setattr($fd, TCSANOW);
    }
    drop_restore($c);
    return;
}

1;
