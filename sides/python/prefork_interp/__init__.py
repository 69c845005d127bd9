"""prefork-interp for Python scripts: pay the start-up once, fork per call.

::

    #!/usr/bin/prefork-interp -U,python3
    import prefork_interp                       # first: see "environment"
    import heavy_things                         # paid once, by the server
    prefork_interp.initialisation_complete()    # returns once per call
    main()                                      # sys.argv, os.environ and
                                                # sys.std* are the caller's

Process roles (as in the Rust and Perl script sides): the setup run, the
server, its one monitor, the executors (_setup has the picture), each in
a module of its own: _setup, _server, _monitor, _executor, _keeper; the
wire in _wire.

Each one's title (its argv area, what ps and /proc/PID/cmdline show;
best effort, cut to the setup run's command line's length) hides the
first caller's arguments: `SCRIPT [server]`, `SCRIPT [monitor]`,
`SCRIPT [handler]` (an executor-to-be), and `SCRIPT` for an executor
once it has read its request (SCRIPT: sys.argv[0] of the setup run).

Per call: the server accepts, greets, and sends the call socket to the
monitor on CONTROL; the monitor hands it to an idle executor-to-be,
which reads the request, becomes a process group of its own, sends 'P'
(extended), tells the monitor 'r' and returns from
initialisation_complete(). The monitor watches every call in flight in
one poll loop (pidfds, the executors' 'r', the clients' signal frames);
when an executor's pidfd says it is gone, it SIGINTs what is left of its
group, reaps it, sends 'd' to the server (which counts the calls
running, for the greeting and max_servers), then the status to the
client; and it forks the next spare meanwhile. One fork and one exit
per call.

A call whose fds 0, 1, 2 include the slave of a pseudo-terminal the
client opened for it (capability "tty": request flags 0x04, 0x08, 0x10)
gets a session instead. The executor, holding the terminal's signals
(SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGWINCH, SIGHUP) and
SIGCHLD, calls setsid, makes the terminal its controlling terminal
(TIOCSCTTY) and forks the script's process, which leads a group of its
own, the terminal's foreground group (a session leader's own group would
be orphaned, and the kernel drops ^Z sent to one), or with flag 0x20
(the client is in a pipeline or in the background) its background:
/dev/tty opens, and ^C, ^\\, ^Z and window size changes reach the
script's group from the terminal. That process sends 'P' with its pid,
'r' with the request byte and its pid, and returns into the script,
where those signals (and SIGCHLD) come in. The executor stays as the
session's keeper, one process per such call, watching the script
(SIGCHLD, from a signalfd) and the monitor in one poll: it tells the
monitor when the script stops ('t' and the signal; the monitor tells the
client, 'T', which stops too) and how it ended ('x' and its wait status,
said once it has closed every fd but the monitor's socket, its copy of
the terminal with them; the monitor ends the call then, 'd' and the
client's 'X', and reaps the keeper once it has exited), then exits; and
when the client moves to its own terminal's foreground or background
('F' and 1 or 0, which the monitor passes on as 'f'), it moves the
script's group there too (tcsetpgrp to it, or to its own group) and
continues it. The client's signals go to the script's group; its going
away is SIGHUP and SIGCONT there. While the client has the caller's
terminal raw, the monitor holds that terminal, the settings the client
found on it and those it left (capability "restore": the 'R' frame); a
client that goes away before the call's status (killed outright) has
the first put back by the monitor, before that SIGHUP, as a direct run
would leave them, if the terminal still has the second (a shell that
has taken its terminal back keeps its own mode).

A call with request flag 0x40 (capability "limits") brings the caller's
resource limits, nice value and oom_score_adj: the script's process
takes on each that differs from its own once fds 0, 1, 2 are the
caller's, and if the kernel refuses one (a server started under lower
limits cannot raise them) says so in one line on the caller's stderr and
ends with 127.

A caller's closed fd 0, 1 or 2 (`script <&-`; capability "closed":
request flag 0x80 and a second flags byte, 0x01, 0x02, 0x04) comes as
/dev/null, which the executor (the script's process) closes again after
its dup2s: the number is free for the script's next open(), and the
matching sys.std* and sys.__std*__ are None, as CPython's start-up
leaves them in a direct run (print() to a None sys.stdout does nothing).

The environment initialisation reads picks the server: from `import
prefork_interp` until initialisation_complete(), os.environ and
os.environb are stand-ins (os._Environ still, sharing the real ones'
data: writes reach C's environ, and child processes, as always) that
record the name of each variable read: [], get, in, os.getenv,
os.getenvb, setdefault, pop. Iteration, keys(), items(), values(),
copy() are not recorded (dict(os.environ) and {**os.environ} read every
variable through [], and record them all). Then the real ones are back.
The server's greeting lists those names with a digest of their
exec-time values (an `env` line); a caller whose values differ gets a
server of its own, initialised with its values. Reads before the
import are seen where prefork_interp_early.pth is in site-packages (the
wheel's and the Debian package's install put it there): in a run that
starts a server it imports this package before the script's first line.
Not seen: reads before the import without it, or through a reference
taken before it (`from os import environ`), and C code's getenv. A read
from a copy (os.environ.copy()) is never recorded.

Server and monitor leave with os._exit: atexit handlers and finalisers
run in executors only. Standard library only; Linux 5.3 or later
(pidfd_open); Python 3.9 or later (socket.recv_fds, os.pidfd_open).
"""


import atexit
import os

from . import _call_globals, _init_env

__all__ = ["initialisation_complete", "autoreload_also_check"]
__version__ = "0.1.0"

# The exec-time environment, read now; os.environ and os.environb are
# tracked from here (before the script's own code) until
# initialisation_complete().
_init_env_state = _init_env.InitEnv()

# Registered before any exit handler of the script's (the last
# registered runs first), so that it runs after them: see _call_globals.
_call_globals_state = _call_globals.CallGlobals()
atexit.register(_call_globals_state.release)

# Whether a call that fast_exit does not end ends with CPython's
# finalisation (then idle spares copy the heap in advance: _precopy).
# The runner's calls end with os._exit: it says so before its
# initialisation_complete(), with _calls_end_without_finalisation().
_calls_finalise = True


def _calls_end_without_finalisation():
    global _calls_finalise
    _calls_finalise = False


def autoreload_also_check(*paths):
    """Also restart the server when any of these files changes.

    Call it before initialisation_complete().
    """
    _init_env_state.also_check.extend(os.fspath(p) for p in paths)


def initialisation_complete(max_servers=4, idle_timeout=1000000, autoreload_modules=True,
                            autoreload_extra=(), max_errors=100, log_facility="user",
                            spare_handlers=1, fast_exit=False, interrupt_grace=2):
    """Ends the script's initialisation.

    Standalone (not started by prefork-interp, no PREFORK_INTERP in the
    environment): returns at once, and the script runs normally.

    Under prefork-interp: turns the script into a server and returns once
    per call, each time in a new process whose sys.argv, os.environ and
    sys.stdin/stdout/stderr are the call's. Raises (in the setup run,
    whose stderr the caller sees) if other threads are running or
    PREFORK_INTERP is malformed.

    max_servers: calls served at once, more callers queue (negative or
    None: no limit). idle_timeout: seconds with nothing to do before the
    server quits (negative or None: never; the client may set a shorter
    one, as it does for a folded identity's server). autoreload_modules:
    restart the server when the script or any imported module's file changes;
    autoreload_extra: more files. max_errors: server errors tolerated.
    log_facility: syslog facility for the server's messages ("user",
    "daemon", "local0"..., or a syslog.LOG_* value); None or "": none.
    spare_handlers: executors-to-be (forked in advance by the server's
    one monitor, so that no fork is on a call's critical path) kept
    waiting for calls; at least 1. fast_exit (Python 3.12 or later; no
    effect before): each call ends as CPython would end it (exit status,
    output, threads joined, atexit handlers, std streams flushed) but
    without the interpreter's finalisation (finalisers of objects still
    alive, module teardown), which is most of what a call costs; a run
    without prefork-interp ends normally. interrupt_grace: when a call's
    client goes away (killed, ^C), the script's process group gets
    SIGINT, as in a direct run (on a pseudo-terminal of its own: SIGHUP
    and SIGCONT, as when a terminal goes away); a script still running
    this many seconds
    later (it ignores SIGINT, or takes long over it) is killed with
    SIGKILL, and that is logged, so that no script outlives its caller
    holding the caller's pipes (negative or None: never; default 2).
    """
    # What it read so far is what initialisation read.
    reads = _init_env_state.stop_tracking()
    if not isinstance(fast_exit, bool):
        raise ValueError("prefork-interp: fast_exit must be True or False, not %r" % (fast_exit,))
    from ._wire import ENV_VAR

    value = os.environb.pop(ENV_VAR.encode(), None)
    if value is None:
        return
    from . import _setup

    setup = _setup.check_setup(value)
    options = _options(max_servers, idle_timeout, autoreload_modules, autoreload_extra,
                       max_errors, log_facility, spare_handlers, fast_exit, interrupt_grace)
    mask = _setup.run(_init_env_state, reads, setup, options)
    _call_globals_state.start()
    if mask is not None:
        import signal

        # The terminal's signals held since the call took its terminal,
        # now that sys.* are the call's: a ^C typed at once is a
        # KeyboardInterrupt raised here, in the script, as at its first
        # line in a direct run; a ^Z stops it.
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _options(max_servers, idle_timeout, autoreload_modules, autoreload_extra, max_errors,
             log_facility, spare_handlers, fast_exit, interrupt_grace):
    """initialisation_complete's options, checked (None: no limit)."""
    from ._log import facility

    if max_servers == 0:
        raise ValueError("prefork-interp: max_servers must not be 0 (negative for no limit)")
    if max_servers is not None and max_servers < 0:
        max_servers = None
    if spare_handlers < 1:
        raise ValueError("prefork-interp: spare_handlers must be at least 1")
    if idle_timeout is not None and idle_timeout < 0:
        idle_timeout = None
    if interrupt_grace is not None and interrupt_grace < 0:
        interrupt_grace = None
    return {
        "max_servers": max_servers,
        "idle_timeout": idle_timeout,
        "autoreload_modules": autoreload_modules,
        "autoreload_extra": autoreload_extra,
        "max_errors": max_errors,
        "facility": facility(log_facility),
        "spare_handlers": spare_handlers,
        "fast_exit": fast_exit,
        "interrupt_grace": interrupt_grace,
        "calls_finalise": _calls_finalise,
    }
