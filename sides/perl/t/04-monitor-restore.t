# The monitor's side of capability "restore" ('R' frames), on a real
# pseudo-terminal, real sockets and a real process group: this test
# plays the client (sends 'R', the settings and its terminal, then makes
# that terminal raw and goes away, or not) and the call's group (a child
# that notes the terminal's state when its SIGINT or SIGHUP comes). The
# caller's terminal must be as it was before the group hears of the
# client's end; a call whose status was sent keeps the terminal until
# its client says it put it back ('R' 0), and puts it back itself if the
# client goes first; no terminal fd is left open in the monitor.
use strict;
use warnings;

BEGIN { delete $ENV{PREFORK_INTERP} }    # never a server here

use Config ();
use Fcntl qw(O_NOCTTY O_RDWR);
use IO::FDPass;
use POSIX qw(NCCS TCSANOW B9600 B38400 ECHO ICANON ISIG ICRNL OPOST VINTR VMIN VTIME);
use Socket qw(AF_UNIX PF_UNSPEC SOCK_STREAM);
use Test::More;

# The terminal's lflag at each kill the monitor makes, before the signal
# goes: whether the settings were back before the group heard of the
# client's end, whatever the scheduler does after. (The signals are
# still sent; the group's child checks the same, as far as its wake-up
# allows.)
my ($watched, @lflag_at_kill);
BEGIN {
    *CORE::GLOBAL::kill = sub {
        if ($watched) {
            my $t = POSIX::Termios->new;
            $t->getattr(fileno $watched);
            push @lflag_at_kill, $t->getlflag;
        }
        return CORE::kill($_[0], @_[ 1 .. $#_ ]);
    };
}
use Proc::Prefork::Interp::Monitor;
use Proc::Prefork::Interp::Sys ();
use Proc::Prefork::Interp::Wire;

# TIOCSPTLCK and TIOCGPTN (to open a pseudo-terminal without IO::Pty)
# are these on the ABIs whose numbers the module keeps.
plan skip_all => "no pseudo-terminal ioctl numbers for $Config::Config{archname}"
    unless $Config::Config{archname} =~ /\A(?:x86_64|aarch64|riscv64|loongarch64)-linux/;
use constant { TIOCSPTLCK => 0x40045431, TIOCGPTN => 0x80045430 };

# A pseudo-terminal: (master, slave), neither our controlling terminal.
sub open_pty {
    sysopen(my $master, '/dev/ptmx', O_RDWR | O_NOCTTY) or die "/dev/ptmx: $!\n";
    my $unlock = pack 'l', 0;
    ioctl($master, TIOCSPTLCK, $unlock) or die "TIOCSPTLCK: $!\n";
    my $n = pack 'L', 0;
    ioctl($master, TIOCGPTN, $n) or die "TIOCGPTN: $!\n";
    my $name = '/dev/pts/' . unpack 'L', $n;
    sysopen(my $slave, $name, O_RDWR | O_NOCTTY) or die "$name: $!\n";
    return ($master, $slave);
}

# A terminal's settings, as the wire has them.
sub settings_of {
    my ($fh) = @_;
    my $t = POSIX::Termios->new;
    defined $t->getattr(fileno $fh) or die "tcgetattr: $!\n";
    return { iflag => $t->getiflag, oflag => $t->getoflag, cflag => $t->getcflag,
        lflag => $t->getlflag, ispeed => $t->getispeed, ospeed => $t->getospeed,
        cc => [ map { $t->getcc($_) } 0 .. NCCS - 1 ] };
}

# Changes $fh's settings by $change->(TERMIOS).
sub set_terminal {
    my ($fh, $change) = @_;
    my $t = POSIX::Termios->new;
    defined $t->getattr(fileno $fh) or die "tcgetattr: $!\n";
    $change->($t);
    defined $t->setattr(fileno $fh, TCSANOW) or die "tcsetattr: $!\n";
    return;
}

# What a client finds on its caller's terminal: set apart from a fresh
# pseudo-terminal's, so that putting back the wrong thing shows.
sub shell_settings {
    my ($fh, $intr) = @_;
    set_terminal($fh, sub {
        my ($t) = @_;
        $t->setispeed(B9600);
        $t->setospeed(B9600);
        $t->setcc(VINTR, $intr);
    });
    return settings_of($fh);
}

# What a client makes of it: raw.
sub make_raw {
    my ($fh) = @_;
    set_terminal($fh, sub {
        my ($t) = @_;
        $t->setlflag($t->getlflag & ~(ECHO | ICANON | ISIG));
        $t->setiflag($t->getiflag & ~ICRNL);
        $t->setoflag($t->getoflag & ~OPOST);
        $t->setispeed(B38400);
        $t->setospeed(B38400);
        $t->setcc(VMIN, 1);
        $t->setcc(VTIME, 0);
    });
    return;
}

sub open_fds {
    opendir(my $dir, '/proc/self/fd') or die "/proc/self/fd: $!\n";
    my @fds = grep { /\A[0-9]+\z/ } readdir $dir;
    return scalar @fds;    # (less the one of $dir, the same each time)
}

# The call's group: a child leading its own, which on SIGINT or SIGHUP
# writes the terminal's lflag as it finds it, and leaves.
sub start_group {
    my ($terminal) = @_;
    pipe(my $from, my $to) or die "pipe: $!\n";
    my $test = $$;
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        close $from;
        # Not left pausing if this test dies or is killed midway.
        Proc::Prefork::Interp::Sys::set_parent_death_signal(POSIX::SIGKILL());
        POSIX::_exit(0) if getppid != $test;
        POSIX::setpgid(0, 0);
        $SIG{INT} = $SIG{HUP} = sub {
            my $t = POSIX::Termios->new;
            $t->getattr(fileno $terminal);
            syswrite($to, $t->getlflag . "\n");
            POSIX::_exit(0);
        };
        syswrite($to, "ready\n");
        POSIX::pause() while 1;
    }
    close $to;
    POSIX::setpgid($pid, $pid);
    die "the group's child did not start\n" unless (read_soon($from) // '') eq "ready\n";
    return { pid => $pid, from => $from };
}

# What can be read from $fh within 5 seconds (undef: nothing, or EOF).
sub read_soon {
    my ($fh) = @_;
    my $rin = '';
    vec($rin, fileno $fh, 1) = 1;
    return undef unless select(my $rout = $rin, undef, undef, 5) > 0;
    my $data;
    return sysread($fh, $data, 64) ? $data : undef;
}

# What the group's child saw at its SIGINT (its terminal's lflag), or
# undef if it was not signalled in time (then it is killed).
sub group_saw {
    my ($group) = @_;
    my $line = read_soon($group->{from});
    chomp $line if defined $line;
    kill 'KILL', $group->{pid} unless defined $line;
    waitpid($group->{pid}, 0);
    close $group->{from};
    return $line;
}

# A running extended call as the monitor keeps it, with the client's end.
sub new_call {
    my ($group) = @_;
    socketpair(my $client, my $call, AF_UNIX, SOCK_STREAM, PF_UNSPEC) or die "socketpair: $!\n";
    return ($client, { phase => 'running', extended => 1, call => $call,
        group => $group->{pid}, frame => '' });
}

# The client's 'R': the settings and, if any, its terminal. As our client
# does, it makes that terminal raw first, and sends what it left there.
sub send_restore {
    my ($client, $settings, $terminal) = @_;
    my $bytes = '';
    if ($settings) {
        make_raw($terminal);
        $bytes = encode_restore($settings, settings_of($terminal));
    }
    syswrite($client, encode_frame(FRAME_RESTORE, length $bytes) . $bytes) or die "write: $!\n";
    IO::FDPass::send(fileno $client, fileno $terminal) or die "send fd: $!\n" if $terminal;
    return;
}

# The monitor hears the client once (select said readable).
sub hear { Proc::Prefork::Interp::Monitor::hear_client($_[0]) }

my ($master, $slave) = open_pty();
$watched = $slave;
my $fds = open_fds();

subtest 'the client goes away while the terminal is raw: put back, then SIGINT' => sub {
    my $before = shell_settings($slave, 7);
    my $group = start_group($slave);
    my ($client, $c) = new_call($group);
    send_restore($client, $before, $slave);
    hear($c);
    ok($c->{restore}, 'the settings and the terminal are kept');
    make_raw($slave);
    isnt(settings_of($slave)->{lflag}, $before->{lflag}, '(the terminal is raw)');
    close $client;
    @lflag_at_kill = ();
    hear($c);
    is($c->{phase}, 'abandoned', 'the call is abandoned');
    is_deeply(settings_of($slave), $before, 'the terminal is as the client found it');
    is_deeply(\@lflag_at_kill, [ $before->{lflag} ], 'already so when the SIGINT was sent');
    is(group_saw($group), $before->{lflag}, 'and when the group got it');
    ok(!$c->{restore}, 'nothing kept');
    close $c->{call};
    is(open_fds(), $fds, 'the terminal the client sent is closed');
};

subtest 'a shell that has set its terminal since keeps its own mode' => sub {
    my $before = shell_settings($slave, 7);
    my $group = start_group($slave);
    my ($client, $c) = new_call($group);
    send_restore($client, $before, $slave);
    hear($c);
    # The client is gone, and its shell (bash's readline: no echo, lines
    # not cooked, but its signals) has taken the terminal back before the
    # monitor heard of it.
    set_terminal($slave, sub { $_[0]->setlflag($_[0]->getlflag | ISIG) });
    my $shells = settings_of($slave);
    close $client;
    hear($c);
    is($c->{phase}, 'abandoned', 'the call is abandoned');
    is_deeply(settings_of($slave), $shells, "the terminal keeps the shell's mode");
    group_saw($group);
    close $c->{call};
    is(open_fds(), $fds, 'the terminal the client sent is closed');
};

subtest 'on a pseudo-terminal of its own (a keeper): put back, then SIGHUP and SIGCONT' => sub {
    my $before = shell_settings($slave, 14);
    my $group = start_group($slave);
    my ($client, $c) = new_call($group);
    $c->{keeper} = { script => $group->{pid} };
    send_restore($client, $before, $slave);
    hear($c);
    make_raw($slave);
    close $client;
    @lflag_at_kill = ();
    hear($c);
    is($c->{phase}, 'abandoned', 'the call is abandoned');
    is_deeply(settings_of($slave), $before, 'the terminal is as the client found it');
    is_deeply(\@lflag_at_kill, [ ($before->{lflag}) x 2 ], 'already so when both signals were sent');
    is(group_saw($group), $before->{lflag}, 'and when the group got its SIGHUP');
    close $c->{call};
    is(open_fds(), $fds, 'the terminal the client sent is closed');
};

# The call's keeper says how its script ended: the monitor first reads
# what the client sent and it has not read yet; the status goes to a
# client still there; one gone gets its terminal put back.
my $monitor = Proc::Prefork::Interp::Monitor->new;    # no server to tell
sub script_ended {
    my ($c) = @_;
    $c->{keeper}{status} = 0;
    $monitor->report($c);
    return;
}

# The calls ending (status sent, terminal kept): {call, restore, ...}.
sub ending { return values %{ $monitor->{ending} } }

# One round of the monitor's loop (select, then what it said), as long
# as the client has something to say within 5 seconds.
sub monitor_round {
    my $rout = $monitor->wait(5);
    $monitor->dispatch($rout) if defined $rout;
    return;
}

# A call on a pseudo-terminal of its own whose client sent $first and
# made the terminal raw: (client's end, call, group, raw settings).
sub raw_keeper_call {
    my ($first) = @_;
    my $group = start_group($slave);
    my ($client, $c) = new_call($group);
    $c->{keeper} = { script => $group->{pid} };
    send_restore($client, $first, $slave);
    hear($c);
    make_raw($slave);
    return ($client, $c, $group, settings_of($slave));
}

sub end_group {
    my ($group) = @_;
    kill 'KILL', $group->{pid};
    group_saw($group);
    return;
}

# A keeper call whose script has ended, its status delivered to a client
# that made the terminal raw: (client's end, call, group, settings
# before, raw settings, fds open while the terminal is kept).
sub status_delivered {
    my ($intr) = @_;
    my $before = shell_settings($slave, $intr);
    my ($client, $c, $group, $raw) = raw_keeper_call($before);
    my $kept = open_fds();
    script_ended($c);
    is_deeply([ decode_frame(read_soon($client) // '') ], [ FRAME_STATUS, 0 ],
        'the client has its status');
    return ($client, $c, $group, $before, $raw, $kept);
}

subtest "the script's status delivered: the terminal kept, untouched, until the client says" => sub {
    my ($client, $c, $group, $before, $raw, $kept) = status_delivered(8);
    my @ending = ending();
    is(scalar @ending, 1, 'the call is ending');
    ok(@ending && $ending[0]{restore}, 'the settings and the terminal are kept');
    is(open_fds(), $kept, 'the terminal the client sent is still open');
    is_deeply(settings_of($slave), $raw, 'the terminal left as it is (the client restores it)');
    my $call = @ending ? fileno $ending[0]{call} : -1;
    ok($call >= 0 && !vec($monitor->wait(0), $call, 1), '(nothing to hear yet)');
    # The client has restored its terminal, and says so.
    send_restore($client);
    ok($call >= 0 && vec($monitor->wait(5), $call, 1), "its 'R' 0 is watched for");
    monitor_round();
    ok(!ending(), "'R' 0: the call is over");
    is(open_fds(), $kept - 2, 'the terminal and the call socket are closed');
    is_deeply(settings_of($slave), $raw, 'the terminal left as it is');
    end_group($group);
    close $client;
    ok(!$c->{call} && !$c->{restore}, "the call's record holds neither");
    close $c->{call} if $c->{call};    # (not, unless the call kept it)
    is(open_fds(), $fds, 'no terminal left open');
};

subtest "the status delivered, the client gone without 'R' 0: put back" => sub {
    my ($client, $c, $group, $before) = status_delivered(19);
    # Killed before it could restore its terminal.
    close $client;
    monitor_round();
    ok(!ending(), 'the call is over');
    is_deeply(settings_of($slave), $before, 'the terminal is as the client found it');
    end_group($group);
    close $c->{call} if $c->{call};    # (not, unless the call kept it)
    is(open_fds(), $fds, 'the terminal and the call socket are closed');
};

subtest 'the status delivered, a late signal: ignored, the terminal still kept' => sub {
    my ($client, $c, $group, $before, $raw, $kept) = status_delivered(20);
    syswrite($client, encode_frame(FRAME_SIGNAL, POSIX::SIGINT())) or die "write: $!\n";
    @lflag_at_kill = ();
    monitor_round();
    is_deeply(\@lflag_at_kill, [], 'no signal sent');
    my @ending = ending();
    ok(@ending && $ending[0]{restore}, 'the settings and the terminal are still kept');
    is(open_fds(), $kept, 'the terminal the client sent is still open');
    is_deeply(settings_of($slave), $raw, 'the terminal left as it is');
    close $client;
    monitor_round();
    ok(!ending(), 'then the client goes: the call is over');
    is_deeply(settings_of($slave), $before, 'the terminal is as the client found it');
    end_group($group);
    close $c->{call} if $c->{call};    # (not, unless the call kept it)
    is(open_fds(), $fds, 'no terminal left open');
};

subtest "the status delivered, another 'R': kept in place of the first" => sub {
    my ($client, $c, $group) = status_delivered(21);
    my $second = shell_settings($slave, 22);
    send_restore($client, $second, $slave);
    monitor_round();
    is(scalar(() = ending()), 1, 'the call is still ending');
    make_raw($slave);
    close $client;
    monitor_round();
    ok(!ending(), 'then the client goes: the call is over');
    is_deeply(settings_of($slave), $second, 'the second settings put back');
    end_group($group);
    close $c->{call} if $c->{call};    # (not, unless the call kept it)
    is(open_fds(), $fds, 'no terminal left open');
};

subtest 'an executor forked while a call is ending holds neither its socket nor its terminal' => sub {
    my ($client, $c, $group) = status_delivered(23);
    my ($e) = ending();
    ok($e, 'the call is ending');
    my @theirs = $e ? (fileno $e->{call}, fileno $e->{restore}{terminal}) : ();
    ok(Proc::Prefork::Interp::Sys::fd_is_open($_), "(fd $_ open in the monitor)") for @theirs;
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        $monitor->close_in_child;
        POSIX::_exit(scalar grep { Proc::Prefork::Interp::Sys::fd_is_open($_) } @theirs);
    }
    waitpid($pid, 0);
    is($? >> 8, 0, 'both closed in the executor');
    ok(Proc::Prefork::Interp::Sys::fd_is_open($_), "fd $_ still open in the monitor") for @theirs;
    send_restore($client);
    monitor_round();
    ok(!ending(), "'R' 0: the call is over");
    end_group($group);
    close $client;
    close $c->{call} if $c->{call};    # (not, unless the call kept it)
    is(open_fds(), $fds, 'no terminal left open');
};

subtest 'the status delivered as the executor is reaped: the terminal kept likewise' => sub {
    my $before = shell_settings($slave, 24);
    my ($client, $c, $group, $raw) = raw_keeper_call($before);
    # Its keeper's 'x' read as it is reaped (see reap).
    $c->{keeper}{status} = 0;
    $c->{pidfd} = Proc::Prefork::Interp::Sys::pidfd_open($group->{pid});
    $monitor->reap($group->{pid}, $c);
    is_deeply([ decode_frame(read_soon($client) // '') ], [ FRAME_STATUS, 0 ],
        'the client has its status');
    my @ending = ending();
    ok(@ending && $ending[0]{restore}, 'the settings and the terminal are kept');
    is_deeply(settings_of($slave), $raw, 'the terminal left as it is');
    close $client;
    monitor_round();
    ok(!ending(), 'then the client goes: the call is over');
    is_deeply(settings_of($slave), $before, 'the terminal is as the client found it');
    group_saw($group);
    close $c->{call} if $c->{call};    # (not, unless the call kept it)
    is(open_fds(), $fds, 'no terminal left open');
};

subtest 'the script ended, its client gone before its EOF was read: put back' => sub {
    my $before = shell_settings($slave, 15);
    my ($client, $c, $group) = raw_keeper_call($before);
    close $client;
    script_ended($c);
    is_deeply(settings_of($slave), $before, 'the terminal is as the client found it');
    ok(!$c->{restore}, 'nothing kept');
    end_group($group);
    close $c->{call};
    is(open_fds(), $fds, 'the terminal the client sent is closed');
};

subtest "the script ended, an 'R' not read yet, its client gone: that one put back" => sub {
    my ($client, $c, $group) = raw_keeper_call(shell_settings($slave, 16));
    my $second = shell_settings($slave, 17);
    send_restore($client, $second, $slave);
    make_raw($slave);
    close $client;
    script_ended($c);
    is_deeply(settings_of($slave), $second, 'the second settings put back');
    end_group($group);
    close $c->{call};
    is(open_fds(), $fds, 'no terminal left open');
};

subtest "the script ended, 'R' 0 not read yet: nothing put back" => sub {
    my ($client, $c, $group) = raw_keeper_call(shell_settings($slave, 18));
    send_restore($client);
    close $client;
    my $raw = settings_of($slave);
    script_ended($c);
    is_deeply(settings_of($slave), $raw, 'the terminal left as it is');
    end_group($group);
    close $c->{call};
    is(open_fds(), $fds, 'no terminal left open');
};

subtest "'R' 0: what was kept is dropped; the client's end restores nothing" => sub {
    my $before = shell_settings($slave, 9);
    my $group = start_group($slave);
    my ($client, $c) = new_call($group);
    my $base = open_fds();
    send_restore($client, $before, $slave);
    hear($c);
    send_restore($client);
    hear($c);
    ok(!$c->{restore}, 'nothing kept');
    is(open_fds(), $base, 'the terminal the client sent is closed');
    make_raw($slave);
    my $raw = settings_of($slave);
    close $client;
    hear($c);
    is($c->{phase}, 'abandoned', 'the call is abandoned');
    is_deeply(settings_of($slave), $raw, 'the terminal left as it is');
    is(group_saw($group), $raw->{lflag}, 'the group got its SIGINT');
    close $c->{call};
};

subtest "a second 'R' replaces the first" => sub {
    my $first = shell_settings($slave, 10);
    my $group = start_group($slave);
    my ($client, $c) = new_call($group);
    my $base = open_fds();
    send_restore($client, $first, $slave);
    hear($c);
    my $second = shell_settings($slave, 11);
    send_restore($client, $second, $slave);
    hear($c);
    is(open_fds(), $base + 1, 'one terminal kept (the first closed)');
    make_raw($slave);
    close $client;
    hear($c);
    is_deeply(settings_of($slave), $second, 'the second settings put back');
    is(group_saw($group), $second->{lflag}, 'the group got its SIGINT');
    close $c->{call};
    is(open_fds(), $fds, 'the terminal closed');
};

subtest 'more control characters than ours: the first NCCS set' => sub {
    my $before = shell_settings($slave, 12);
    my $group = start_group($slave);
    my ($client, $c) = new_call($group);
    send_restore($client, { %$before, cc => [ @{ $before->{cc} }, (0x55) x 8 ] }, $slave);
    hear($c);
    make_raw($slave);
    close $client;
    hear($c);
    is_deeply(settings_of($slave), $before, 'the terminal is as the client found it');
    is(group_saw($group), $before->{lflag}, 'the group got its SIGINT');
    close $c->{call};
};

# [what, the 'R' frame's value, the bytes that follow it]: the last one
# a client killed as it sends its 'R'.
for my $bad ([ 'too short', 23, 23 ], [ 'too long', 89, 89 ], [ 'cut short', 56, 10 ]) {
    my ($what, $length, $sent) = @$bad;
    subtest "settings $what: the client taken as gone, what it sent before put back" => sub {
        my $before = shell_settings($slave, 13);
        my $group = start_group($slave);
        my ($client, $c) = new_call($group);
        send_restore($client, $before, $slave);
        hear($c);
        make_raw($slave);
        syswrite($client, encode_frame(FRAME_RESTORE, $length) . ("\0" x $sent));
        if ($sent == $length) {
            IO::FDPass::send(fileno $client, fileno $slave);
        } else {
            close $client;
        }
        @lflag_at_kill = ();
        hear($c);
        is($c->{phase}, 'abandoned', 'the call is abandoned');
        is_deeply(settings_of($slave), $before, 'the earlier settings put back');
        is_deeply(\@lflag_at_kill, [ $before->{lflag} ], 'before the SIGINT was sent');
        is(group_saw($group), $before->{lflag}, 'the group got its SIGINT');
        close $client if $client;
        close $c->{call};
        is(open_fds(), $fds, 'no terminal left open');
    };
}

subtest 'a wild length is refused before reading: no wait for 4 GiB' => sub {
    my $group = start_group($slave);
    my ($client, $c) = new_call($group);
    syswrite($client, encode_frame(FRAME_RESTORE, 0xffffffff));
    # (The monitor's own eval would take the alarm's die for a failed
    # read: the flag tells.)
    my $blocked;
    local $SIG{ALRM} = sub { $blocked = 1; die "blocked\n" };
    alarm 5;
    hear($c);
    alarm 0;
    ok(!$blocked, 'heard without blocking');
    is($c->{phase}, 'abandoned', 'the call is abandoned, the client still connected');
    ok(defined group_saw($group), 'the group got its SIGINT');
    close $client;
    close $c->{call};
};

done_testing;
