package Proc::Prefork::Interp::Setup;

# The setup run's end (as the Rust side's src/script/setup.rs): the
# checks, what the server will need of the setup run (its environment's
# changes and dependency, its world, the files to watch), then the
# daemon fork. The setup run exits 0 (the client waits for it); the
# daemon is the server.

use strict;
use warnings;

use IO::Handle ();
use POSIX ();
use Proc::Prefork::Interp::HugePages;
use Proc::Prefork::Interp::Log;
use Proc::Prefork::Interp::Server;
use Proc::Prefork::Interp::Sys;
use Proc::Prefork::Interp::Titles;
use Proc::Prefork::Interp::Wire;

our $VERSION = '0.1.0';

# $value: PREFORK_INTERP's; $options: checked (Proc::Prefork::Interp);
# $init_env: the InitEnv tracker, tracking ended; $also_check: more
# files to watch. Returns only in an executor, once it is its call.
sub initialisation_complete {
    my ($value, $options, $init_env, $also_check) = @_;
    my $setup = take_setup_env($value);
    my %config = (
        %$options,
        setup       => $setup,
        init_env    => $init_env->changes,
        # The greeting's lines between caps and the counters: the
        # server's world, and what its initialisation read of the
        # environment.
        world       => world_digest(world_namespaces([WORLD_NAMESPACES]), read_cgroups()),
        env         => scalar $init_env->dependency,
        start       => scalar $init_env->start_dependency,
        # (Still the setup run's fds 0, 1, 2: a caller whose differ in
        # being terminals goes to a server of its own.)
        terminals   => stdio_terminals(),
        titles      => Proc::Prefork::Interp::Titles->new($0),
        reload      => reload_files($options, $also_check),
    );

    # What the script printed goes to the caller's stderr now, once, not
    # into every executor's buffers.
    STDOUT->flush;
    STDERR->flush;
    open_log($options->{log_facility});

    # The server, monitor and spares are ours, not the caller's: under a
    # caller's low soft limit of processes (or open files) their forks
    # must not fail where a direct run would not. Each call's executor
    # takes its caller's limits back (capability limits); the monitor
    # reads its own, to compare them with, after this.
    raise_soft_limits_for_server() if grep { $_ eq 'limits' } @{ $setup->{client_caps} };

    # The server waits for the setup run's end before it collapses its
    # heap.
    my $setup_run = eval { pidfd_open($$) };
    my $server = become_daemon(\%config);
    Proc::Prefork::Interp::HugePages::collapse_after($setup_run) if $setup_run;
    return $server->run(fdopen($setup->{call}, '+<'));
}

# PREFORK_INTERP, decoded and its fds checked; dies with the reason.
sub take_setup_env {
    my ($value) = @_;
    my $threads = thread_count();
    die "prefork-interp: $threads threads are running; "
        . "prefork_initialisation_complete must be called before any other thread "
        . "starts (a fork would lose them)\n"
        if $threads != 1;
    my $setup = eval { decode_setup_env($value) } or die "prefork-interp: $@";
    for my $fd (@$setup{qw(listen call watch_in watch_err)}) {
        die "prefork-interp: PREFORK_INTERP names fd $fd, which is not open\n"
            unless $fd >= 3 && fd_is_open($fd);
    }
    return $setup;
}

# The script ($0) and every file in %INC (autoreload_inc), then
# autoreload_extra and prefork_autoreload_also_check's.
sub reload_files {
    my ($options, $also_check) = @_;
    my @reload = (@{ $options->{autoreload_extra} }, @$also_check);
    unshift @reload, $0, grep { defined && !ref } values %INC if $options->{autoreload_inc};
    return \@reload;
}

# Raises our soft limits of processes and open files (RLIMIT_NPROC and
# RLIMIT_NOFILE, 6 and 7 on Linux) to the hard ones, where lower.
sub raise_soft_limits_for_server {
    for my $resource (6, 7) {
        my $limit = get_rlimit($resource) // next;
        my ($soft, $hard) = unpack 'QQ', $limit;
        set_rlimit($resource, pack 'QQ', $hard, $hard) if $soft < $hard;
    }
    return;
}

# Forks the server; the setup run ends here. From here the script's own
# code must never run except in executors: any failure is logged and
# ends the process. Returns the server.
sub become_daemon {
    my ($config) = @_;
    my $pid = fork;
    die "prefork-interp: cannot fork the server: $!\n" unless defined $pid;
    POSIX::_exit(0) if $pid;    # the setup run ends; the client waits for it

    my $server = eval {
        $config->{titles}->set('server');
        POSIX::setsid();
        $SIG{CHLD} = 'DEFAULT';    # a caller ignoring it would break waitpid
        # Sending a file descriptor to a process that has died must fail,
        # not kill us (IO::FDPass::send has no MSG_NOSIGNAL). The monitor
        # inherits this; executors get SIGPIPE's default back.
        $SIG{PIPE} = 'IGNORE';
        my $server = Proc::Prefork::Interp::Server->new($config);
        open(STDIN,  '<', '/dev/null') or die "cannot reopen stdin: $!\n";
        open(STDOUT, '>', '/dev/null') or die "cannot reopen stdout: $!\n";
        open(STDERR, '>', '/dev/null') or die "cannot reopen stderr: $!\n";
        $server;
    };
    if (!$server) {
        write_log('err', "cannot start the server: $@");
        POSIX::_exit(1);
    }
    return $server;
}

1;
