package Proc::Prefork::Interp;

# The Perl script side of prefork-interp: the public API. Process roles,
# as in the Rust library (src/script/), each a module of its own under
# Proc::Prefork::Interp::; one fork per call:
#
#   setup run --fork--> server (setsid; stdio /dev/null; syslog)
#     exit 0              | waits on LISTEN, WATCHE (or, with capability
#     (Setup)             | "watch", its socket's directory), CONTROL and
#                         | the monitor's pidfd (one inotify instance: the
#                         | modules, and that directory: Reload); quits
#                         | when its socket goes, on idle timeout, reload;
#                         | never forks per call (Server)
#                         +--fork--> monitor: one, long-lived (forked again
#                                    | if it dies); ignores the forwarded
#                                    | signals (Monitor)
#                                    +--fork--> executor-to-be, in advance
#                                               (spare_handlers idle): the
#                                               server's signals back;
#                                               waits (Executor; on a
#                                               pseudo-terminal of its
#                                               own, then Keeper)
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
#
# The other modules: Wire (the bytes, pure), Sys (system calls), InitEnv
# (the environment from the interpreter's start), Titles, Log,
# HugePages, FastExit.

use strict;
use warnings;

use Exporter qw(import);
use Proc::Prefork::Interp::FastExit;
use Proc::Prefork::Interp::InitEnv;
use Proc::Prefork::Interp::Setup;

our $VERSION = '0.1.0';
our @EXPORT  = qw(prefork_initialisation_complete prefork_autoreload_also_check);

# What this process does before prefork_initialisation_complete: the
# environment as exec left it and the names initialisation reads (from
# now: before the script's own code), and the files
# prefork_autoreload_also_check adds.
my $INIT_ENV = Proc::Prefork::Interp::InitEnv->start;
my @also_check;

sub prefork_autoreload_also_check {
    push @also_check, @_;
    return;
}

sub prefork_initialisation_complete {
    my %opts = @_;
    # What the script's code after this call finds, as it would without
    # us: $! (which `die` exits with), $? and $@ as they are now, not as
    # the server's and executor's work leaves them.
    my @as_called = ($! + 0, $?, $@);
    # Armed here, before the server forks: executors inherit it (the
    # server and monitors never run END blocks), and a direct run ends as
    # a call does.
    Proc::Prefork::Interp::FastExit::arm() if $opts{fast_exit};
    $INIT_ENV->untrack;
    my $value = delete $ENV{PREFORK_INTERP};
    return unless defined $value;    # standalone: nothing more to do
    Proc::Prefork::Interp::Setup::initialisation_complete($value, _options(%opts), $INIT_ENV,
        [@also_check]);
    ($!, $?, $@) = @as_called;
    return;    # in an executor, into the script
}

# The options checked, with their defaults; undef for "no limit".
sub _options {
    my %opts = @_;
    my %o = (
        max_servers      => $opts{max_servers} // 4,
        idle_timeout     => $opts{idle_timeout} // 1_000_000,
        max_errors       => $opts{max_errors} // 100,
        spare_handlers   => $opts{spare_handlers} // 1,
        interrupt_grace  => exists $opts{interrupt_grace} ? $opts{interrupt_grace} : 2,
        log_facility     => $opts{log_facility} // 'LOG_USER',
        autoreload_inc   => $opts{autoreload_inc} // 1,
        autoreload_extra => [ @{ $opts{autoreload_extra} // [] } ],
    );
    die "prefork-interp: max_servers must not be 0 (negative for no limit)\n"
        if $o{max_servers} == 0;
    die "prefork-interp: spare_handlers must be at least 1\n" unless $o{spare_handlers} >= 1;
    $o{max_servers}  = undef if $o{max_servers} < 0;
    $o{idle_timeout} = undef if $o{idle_timeout} < 0;
    $o{interrupt_grace} = undef if defined $o{interrupt_grace} && $o{interrupt_grace} < 0;
    return \%o;
}

# A variable's value, read without noting it (for
# Proc::Prefork::Interp::Run's own settings).
sub _untracked_env {
    my ($name) = @_;
    return $INIT_ENV->untracked($name);
}

# The environment tracker (for tests).
sub _init_env { return $INIT_ENV }

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
starts a new server. Negative: never. Default 1000000. This project's
client may bound it for a server it starts (C<pfi-idle> in
C<PREFORK_INTERP>: see prefork-interp(1) and prefork-interp(7)); the
shorter of the two applies.

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

The server has one inotify instance, for these files and for its own
socket (see L</THE SERVER'S SOCKET>): a user has 128 by default
(C<fs.inotify.max_user_instances>). A server that cannot have one (the
user has used them all up) keeps serving without: every call stats
every file. It says so once in the log, and in every greeting, which
C<prefork-interp --list> shows as C<degraded>: with this project's
client

  no inotify (Too many open files): socket path checked every 5 s, files at every call

(the reason is the system's). A file that exists but cannot be watched
means the same for the files (C<cannot watch FILE (REASON): files
checked at every call>).

=head1 THE SERVER'S SOCKET

A server quits once its socket path is removed or replaced
(C<prefork-interp --kill>, a server started afresh, the client making
room among too many servers). With chiark-utils' client, the watcher
process that client starts says so. With this project's client
(capability C<watch>) there is no watcher: the server watches the
socket's directory itself, in the same inotify instance, and without one
looks at the path every 5 seconds. Its reason (C<socket replaced or
removed>) goes in the identity's lock file for C<prefork-interp --list>,
unless whoever removed the socket has already said why since the server
started.

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

The server, its monitor and its spare handlers are the module's work,
not the caller's: with that capability, just before the setup run forks
the server, the module raises its soft limits of processes and open
files (C<RLIMIT_NPROC>, C<RLIMIT_NOFILE>) to the hard ones where they
are lower, so that a caller whose soft limit of processes leaves a
direct run just enough (C<ulimit -S -u>) is not refused for them. Each
call's executor takes its caller's soft limits back before the script's
code runs.

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

While such a call runs, the client has its caller's terminal raw, and
sends the monitor that terminal and its settings from before (the
capability C<restore>). If the client goes away without putting them
back itself (killed with SIGKILL), the monitor puts them back as soon
as it sees it gone, before it signals the script's group: the shell that
ran the client finds its terminal's settings as they were before the
call, not raw.

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
the module is loaded (or, in a server's start, from perl's: this
project's client asks perl to load the tracker first, with a C<-M>
argument that takes effect where the module is in perl's own C<@INC>,
installed or through C<PERL5LIB>, so that C<BEGIN> blocks and C<use>
lines above ours are seen too) until C<prefork_initialisation_complete>, C<%ENV>
is a stand-in that records the names read (C<$ENV{NAME}>, C<exists>,
C<defined>, C<local $ENV{NAME}>) and passes everything, writes included,
on to the real C<%ENV> (so C<system>'s children see the writes); the
real one is back afterwards. Iterating (C<keys>, C<each>, C<values>, a
copy) records nothing, nor does C's C<getenv> (a module in C). The
server offers the names, with a digest of the values the setup run had,
to this project's client, which goes to another server (starting it if
need be) when its own values differ: the script is initialised with the
caller's values, as a direct run would be. To read a variable without
making it part of that choice, read it from a copy:

    use Proc::Prefork::Interp;
    my $debug = {%ENV}->{MY_DEBUG};

(C<PREFORK_INTERP> is never recorded; nor is anything under taint
checks, C<-T>, where C<%ENV> is left alone.) With
L<Proc::Prefork::Interp::Run>, the module is loaded first, so the
preloaded modules' reads are recorded.

=head1 STATE AND CONTEXT

Before C<prefork_initialisation_complete> the script's stdin is the
caller's where that is a terminal (F</dev/null> otherwise) and its
stdout the caller's stderr (where the caller's stdout is not a terminal
but its stderr is, a pipe whose bytes go there): C<-t> answers as in a
direct run, and a caller whose terminals differ gets a server of its
own. It should not look at per-call arguments or environment yet.
Output printed during initialisation appears once, on the first
caller's stderr.

Each executor inherits everything set up before the call: modules, data,
open files, signal handlers (except SIGINT and SIGPIPE, reset to their
defaults). Then the caller's signals are laid over, as a direct run
inherits them: a signal the caller ignores, and initialisation left at
its default, is ignored (C<nohup>, C<trap '' INT>, a command
substitution); the signals it blocks are blocked. Do not open
connections to other servers (databases) before initialisation is
complete: every call would share them.

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
