# The conformance agent for the Perl script side. The harness
# (tests/common/mod.rs) makes a script of it: a #! line, a `use lib` line
# for sides/perl/lib, then this file. Its language (initialisation variables
# AGENT_*, per-call commands @CMD[:PARAM]) is documented in
# tests/agents/agent.rs; keep the agents in step.
#
# The AGENT_* settings are read before the module is loaded, untracked:
# only AGENT_INIT_ENVREAD's variable is read the tracked way (after the
# `use`), so that calls differing in AGENT_* still share one server.
use strict;
use warnings;

use POSIX ();
use Time::HiRes ();
my %agent;
BEGIN { %agent = map { ($_ => $ENV{$_}) } grep {/\AAGENT_/} keys %ENV }
use Proc::Prefork::Interp;

# What initialisation read of AGENT_INIT_ENVREAD's variable (@initenv).
my $init_env = defined $agent{AGENT_INIT_ENVREAD} ? $ENV{ $agent{AGENT_INIT_ENVREAD} } : undef;
# Which of stdin, stdout, stderr initialisation had as terminals
# (@inittty). (-t sets $! for a non-terminal: `die` would exit with it.)
my $init_tty = do { local $!; join(' ', map { -t $_ ? 1 : 0 } \*STDIN, \*STDOUT, \*STDERR) };
Time::HiRes::sleep($agent{AGENT_INIT_SLEEP}) if defined $agent{AGENT_INIT_SLEEP};
print $agent{AGENT_INIT_PRINT} if defined $agent{AGENT_INIT_PRINT};
if (defined $agent{AGENT_INIT_EXIT}) {
    print STDERR "agent: failing initialisation as asked\n";
    exit $agent{AGENT_INIT_EXIT};
}
if (defined $agent{AGENT_INIT_THREAD}) {
    require threads;
    threads->create(sub { sleep 3600 })->detach;
}
if (defined(my $file = $agent{AGENT_INIT_ATEXIT})) {
    eval 'END { open my $f, ">>", $file or die; print $f "exit\n"; close $f } 1' or die $@;
}
if (defined $agent{AGENT_INIT_SETENV}) {
    for (split /,/, $agent{AGENT_INIT_SETENV}) {
        my ($name, $value) = /\A([^=]*)=(.*)\z/s or die "NAME=VALUE: $_\n";
        $ENV{$name} = $value;
    }
}
delete @ENV{ split /,/, $agent{AGENT_INIT_UNSETENV} } if defined $agent{AGENT_INIT_UNSETENV};
my %options;
$options{max_servers}      = $agent{AGENT_MAX_SERVERS}     if defined $agent{AGENT_MAX_SERVERS};
$options{idle_timeout}     = $agent{AGENT_IDLE_TIMEOUT}    if defined $agent{AGENT_IDLE_TIMEOUT};
$options{spare_handlers}   = $agent{AGENT_SPARE_HANDLERS}  if defined $agent{AGENT_SPARE_HANDLERS};
$options{interrupt_grace}  = $agent{AGENT_INTERRUPT_GRACE} if defined $agent{AGENT_INTERRUPT_GRACE};
$options{autoreload_extra} = [ $agent{AGENT_RELOAD_EXTRA} ] if defined $agent{AGENT_RELOAD_EXTRA};

eval { prefork_initialisation_complete(%options); 1 } or do {
    print STDERR "agent: $@";
    exit 127;
};

# The curses program of @curses, the same in every agent.
my $CURSES_PY = "import curses\n"
    . "def main(screen):\n"
    . "    screen.addstr(0, 0, 'curses: press a key')\n"
    . "    screen.refresh()\n"
    . "    return screen.getch()\n"
    . "print('curses got %d' % curses.wrapper(main))\n";

# The errno's name of the last failure ($!), as ENXIO.
sub errno_name {
    my ($name) = grep { $!{$_} } keys %!;
    return $name // 'E?';
}

# A child's end ($?) as the agents print it: its exit code or `signal N`.
sub child_code {
    my ($status) = @_;
    return $status & 127 ? 'signal ' . ($status & 127) : $status >> 8;
}

sub open_tty {
    open my $tty, '+<', '/dev/tty' or return;
    $tty->autoflush(1);
    return $tty;
}

# A password, read as getpass(3) and Python's getpass do.
sub read_secret {
    my $tty = open_tty() or die "/dev/tty: $!\n";
    my $fd = fileno $tty;
    my $termios = POSIX::Termios->new;
    $termios->getattr($fd) or die "tcgetattr: $!\n";
    my $lflag = $termios->getlflag;
    $termios->setlflag($lflag & ~POSIX::ECHO());
    $termios->setattr($fd, POSIX::TCSAFLUSH()) or die "tcsetattr: $!\n";
    print $tty 'Password: ';
    my $line = <$tty> // '';
    $termios->setlflag($lflag);
    $termios->setattr($fd, POSIX::TCSAFLUSH()) or die "tcsetattr: $!\n";
    print $tty "\n";
    chomp $line;
    return $line;
}

my $winches = 0;

# Writes straight to fd $fd, under perl's buffering.
sub write_fd {
    my ($fd, $text) = @_;
    while (length $text) {
        my $n = POSIX::write($fd, $text, length $text) // die "write to fd $fd: $!\n";
        substr($text, 0, $n) = '';
    }
    return;
}

sub open_fds {
    opendir my $d, '/proc/self/fd' or die;
    my @fds = sort { $a <=> $b }
        grep { my $t = readlink "/proc/self/fd/$_"; defined $t && $t !~ m{/fd\z} }
        grep {/\A\d+\z/} readdir $d;
    closedir $d;
    return "@fds\n";
}

sub parent_of {
    my ($pid) = @_;
    open my $f, '<', "/proc/$pid/stat" or die "stat of $pid: $!";
    my $stat = <$f>;
    $stat =~ /\)\s+\S+\s+(\d+)/ or die "bad stat: $stat";
    return $1;
}

binmode STDIN;
binmode STDOUT;
for my $arg (@ARGV) {
    next unless $arg =~ /\A\@([^:]*)(?::(.*))?\z/s;
    my ($name, $param) = ($1, $2 // '');
    if ($name eq 'exit') {
        exit $param;
    } elsif ($name eq 'args') {
        print unpack('H*', $_), "\n" for @ARGV;
    } elsif ($name eq 'env') {
        print exists $ENV{$param} ? unpack('H*', $ENV{$param}) : 'unset', "\n";
    } elsif ($name eq 'envall') {
        print unpack('H*', $_), "\n" for sort map {"$_=$ENV{$_}"} keys %ENV;
    } elsif ($name eq 'cat') {
        local $/;
        my $data = <STDIN>;
        print $data if defined $data;
    } elsif ($name eq 'out') {
        print "$param\n";
    } elsif ($name eq 'err') {
        STDOUT->flush;
        print STDERR "$param\n";
    } elsif ($name eq 'kill') {
        STDOUT->flush;
        $SIG{$param} = 'DEFAULT' unless $param eq 'KILL' || $param eq 'STOP';
        kill $param, $$;
    } elsif ($name eq 'sleep') {
        # In slices: Perl runs a signal's handler between operations, so
        # one that lands just before a long sleep would wait for its end.
        my $until = Time::HiRes::time() + $param;
        while ((my $left = $until - Time::HiRes::time()) > 0) {
            Time::HiRes::sleep($left < 0.05 ? $left : 0.05);
        }
    } elsif ($name eq 'spawn') {
        my $child = fork // die "fork: $!";
        exec 'sh', '-c', q{trap '' HUP; echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30}, $param
            or POSIX::_exit(127) if !$child;
        Time::HiRes::sleep(0.005) until -e $param;
    } elsif ($name eq 'daemon') {
        my $child = fork // die "fork: $!";
        if (!$child) {
            open STDIN,  '<', '/dev/null';
            open STDOUT, '>', '/dev/null';
            open STDERR, '>', '/dev/null';
            exec 'setsid', 'sh', '-c', q{echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30}, $param or POSIX::_exit(127);
        }
        # As a daemonising program does: return once it is detached.
        Time::HiRes::sleep(0.005) until -e $param;
    } elsif ($name eq 'pid') {
        open my $f, '>', "$param.tmp" or die "$param.tmp: $!";
        print $f $$;
        close $f;
        rename "$param.tmp", $param or die "rename: $!";
    } elsif ($name eq 'server') {
        print parent_of(getppid()), "\n";
    } elsif ($name eq 'fds') {
        print open_fds();
    } elsif ($name eq 'fdsto') {
        write_fd($param, open_fds());
    } elsif ($name eq 'handlesto') {
        write_fd($param,
            join(' ', map { defined fileno($_) ? 'open' : 'closed' } \*STDIN, \*STDOUT, \*STDERR)
                . "\n");
    } elsif ($name eq 'ns') {
        for my $ns (qw(mnt pid net user uts ipc cgroup)) {
            my $link = readlink "/proc/self/ns/$ns";
            print "$ns ", $link // errno_name(), "\n";
        }
    } elsif ($name eq 'cgroup') {
        local $/;
        open(my $c, '<', '/proc/self/cgroup') or die "cgroup: $!";
        print scalar <$c>;
    } elsif ($name eq 'sigs') {
        open(my $s, '<', '/proc/self/status') or die "status: $!";
        print grep { /^Sig(Blk|Ign):/ } <$s>;
    } elsif ($name eq 'groups') {
        open(my $s, '<', '/proc/self/status') or die "status: $!";
        print grep { /^Groups:/ } <$s>;
    } elsif ($name eq 'initenv') {
        print defined $init_env ? unpack('H*', $init_env) : 'unset', "\n";
    } elsif ($name eq 'fdlink') {
        print readlink("/proc/self/fd/$param"), "\n";
    } elsif ($name eq 'sigdisp') {
        my $old = POSIX::SigAction->new;
        POSIX::sigaction(POSIX->can("SIG$param")->(), undef, $old);
        my $h = $old->handler;
        print +(ref $h ? 'handled' : $h eq 'IGNORE' ? 'ignore' : 'default'), "\n";
    } elsif ($name eq 'onint') {
        my $file = $param;
        $SIG{INT} = sub {
            open my $f, '>', $file;
            close $f;
            $SIG{INT} = 'DEFAULT';
            kill 'INT', $$;
        };
    } elsif ($name eq 'intstay') {
        my $file = $param;
        $SIG{INT} = sub { open my $f, '>', $file; close $f; };
    } elsif ($name eq 'trap') {
        STDOUT->flush;
        my $sig = $param;
        $SIG{$sig} = sub { print "caught $sig\n"; STDOUT->flush; exit 0 };
    } elsif ($name eq 'cwd') {
        require Cwd;
        print Cwd::getcwd(), "\n";
    } elsif ($name eq 'limits') {
        local $/;
        open(my $l, '<', '/proc/self/limits') or die "limits: $!";
        open(my $s, '<', '/proc/self/stat') or die "stat: $!";
        open(my $o, '<', '/proc/self/oom_score_adj') or die "oom: $!";
        my ($limits, $stat, $oom) = (scalar <$l>, scalar <$s>, scalar <$o>);
        my @fields = split / /, substr($stat, rindex($stat, ')') + 2);
        print $limits, "nice $fields[16]\noom $oom";
    } elsif ($name eq 'umask') {
        printf "%04o\n", umask;
    } elsif ($name eq 'time') {
        my ($s, $us) = Time::HiRes::gettimeofday();
        printf "%d%09d\n", $s, $us * 1000;
    } elsif ($name eq 'inittty') {
        print "$init_tty\n";
    } elsif ($name eq 'tty') {
        print join(' ', map { -t $_ ? 1 : 0 } \*STDIN, \*STDOUT, \*STDERR), "\n";
    } elsif ($name eq 'devtty') {
        my $word = open_tty() ? 'ok' : errno_name();
        print "$word\n";
    } elsif ($name eq 'fg') {
        my $group = POSIX::tcgetpgrp(0);
        my $word = $group < 0 ? errno_name() : $group == getpgrp() ? 'fg' : 'bg';
        print "$word\n";
    } elsif ($name eq 'winsize') {
        # TIOCGWINSZ (Linux's number: perl has no header for it).
        my $size = "\0" x 8;
        if (ioctl(STDIN, 0x5413, $size)) {
            my ($rows, $cols) = unpack 'S!S!', $size;
            print "$rows $cols\n";
        } else {
            print errno_name(), "\n";
        }
    } elsif ($name eq 'winch') {
        $SIG{WINCH} = sub { $winches++ };
    } elsif ($name eq 'waitwinch') {
        Time::HiRes::sleep(0.01) until $winches;
    } elsif ($name eq 'ask') {
        my $tty = open_tty() or die "/dev/tty: $!\n";
        print $tty 'Say: ';
        my $line = <$tty> // '';
        chomp $line;
        print "said $line\n";
    } elsif ($name eq 'secret') {
        STDOUT->flush;
        print 'length ', length(read_secret()), "\n";
    } elsif ($name eq 'pager') {
        STDOUT->flush;
        open my $less, '|-', 'less' or die "less: $!\n";
        print $less join '', map {"line $_\n"} 1 .. $param;
        close $less;
        print 'less exited ', child_code($?), "\n";
    } elsif ($name eq 'curses') {
        STDOUT->flush;
        system $param, '-c', $CURSES_PY;
        print 'curses exited ', child_code($?), "\n";
    } elsif ($name eq 'die') {
        die "$param\n";
    } elsif ($name eq '_exit') {
        POSIX::_exit($param);
    } else {
        die "agent: unknown command \@$name\n";
    }
}
exit 0;
