"""The setup run's end: checks, what the server's processes share
(Settings), then the daemon fork; in the daemon the server, in the
monitor it forks the monitor, in an executor the call.

Process roles (as in the Rust and Perl script sides)::

    setup run --fork--> server (setsid; stdio /dev/null; syslog)
      exit 0              | waits on LISTEN, CONTROL, the monitor's pidfd,
                          | its one inotify instance (the modules; with
                          | capability `watch` its socket's directory) and
                          | without `watch` WATCHE; quits when its socket
                          | path is removed or replaced (seen itself, or
                          | the watcher's EOF), on the idle timeout (at
                          | most pfi-idle), reload; never forks per call
                          +--fork--> monitor: one, long-lived (forked again
                                       |        if it dies); ignores the
                                       |        forwardable signals
                                       +--fork--> executor-to-be, in advance
                                       |          (`spare_handlers` of them
                                       |          idle), with the server's
                                       |          signals back
                                       +--------> the executors of the
                                                  calls in flight, each its
                                                  own process group (on a
                                                  pseudo-terminal: a
                                                  session, _keeper)
"""

import gc
import os
import signal
import socket
import sys

from . import (_executor, _init_env, _log, _monitor, _precopy, _reload, _server, _sys, _titles,
               _wire)
from ._log import LOG_ERR, LOG_INFO


class Settings:
    """What the server's processes share, fixed in the setup run: the
    checked options, the log, the titles, what the greeting says (offered,
    world, env_dependency), what initialisation did to the environment
    (init_env_changes), the client's program to exec as a session's
    keeper (keeper_program)."""

    def __init__(self, options, log, titles):
        self.max_servers = options["max_servers"]
        self.idle_timeout = options["idle_timeout"]
        self.max_errors = options["max_errors"]
        self.spare_handlers = options["spare_handlers"]
        self.interrupt_grace = options["interrupt_grace"]
        self.log = log
        self.titles = titles
        self.offered = []
        self.world = None
        self.env_dependency = None
        self.start_dependency = None
        self.terminals = None
        self.init_env_changes = []
        self.keeper_program = None
        # Whether idle spares copy the heap in advance (_precopy).
        self.precopy = False


def check_setup(value):
    """PREFORK_INTERP's value, checked (raises in the setup run, whose
    stderr the caller sees): one thread, the fds it names open."""
    threads = _sys.thread_count()
    if threads != 1:
        raise RuntimeError(
            "prefork-interp: %d threads are running; initialisation_complete must be called "
            "before any other thread starts (a fork would lose them)" % threads)
    setup = _wire.decode_setup_env(value)
    for fd in (setup["listen"], setup["call"], setup["watch_in"], setup["watch_err"]):
        if fd < 3 or not _sys.fd_is_open(fd):
            raise ValueError("prefork-interp: %s names fd %d, which is not open"
                             % (_wire.ENV_VAR, fd))
    return setup


def run(init_env, reads, setup, options):
    """The setup run's end: the daemon is forked, and the setup run exits
    (the client is waiting for it). Returns only in an executor, as the
    call: the signal mask to restore then, or None."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else None
    reload_files = _reload.reload_files(options["autoreload_modules"],
                                        options["autoreload_extra"], init_env.also_check)
    titles = _titles.Titles(program or "python3")
    init_env_changes = init_env.delta()
    # The greeting's lines between caps and the counters: the server's
    # world, and what its initialisation read of the environment.
    world = _init_env.world()
    env_dependency = init_env.dependency(reads)
    start_dependency = init_env.start_dependency()
    # Which of fds 0, 1, 2 initialisation had as terminals: a caller whose
    # differ goes to a server of its own.
    terminals = sum(1 << fd for fd in range(3) if os.isatty(fd))
    # Before gc.freeze(): what arming makes is frozen with the rest.
    fast_exit_off = None
    if options["fast_exit"]:
        from . import _fast_exit

        fast_exit_off = _fast_exit.FastExit().arm()

    # What the script printed goes to the caller's stderr now, once, not
    # into every executor's buffers.
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    # Everything initialisation made moves to the permanent generation:
    # collections in executors (including the one at interpreter exit)
    # then leave it alone instead of writing to every object's header,
    # which would copy most of the server's memory into each call (as
    # CPython's gc documentation advises for fork without exec). Halves
    # the time of a warm call that imports heavy modules.
    gc.freeze()
    log = _log.Log(sys.argv[0] if sys.argv else "python", options["facility"])
    if fast_exit_off is not None:
        log(LOG_INFO, "fast_exit: %s; calls end normally" % fast_exit_off)
    # Only where a call's end writes most of the heap anyway: with
    # CPython's finalisation. fast_exit, once armed, skips it in nearly
    # every call (which of them falls back to it is known only at its
    # end), and the runner's calls always do.
    precopy = options["calls_finalise"] and (not options["fast_exit"] or fast_exit_off is not None)
    if precopy:
        precopy_off = _precopy.supported()
        if precopy_off is not None:
            log(LOG_INFO, "no pre-copy of the heap in idle spares: %s" % precopy_off)
            precopy = False
    settings = Settings(options, log, titles)
    settings.world = world
    settings.env_dependency = env_dependency
    settings.start_dependency = start_dependency
    settings.terminals = terminals
    settings.init_env_changes = init_env_changes
    settings.precopy = precopy

    if "limits" in setup["client_caps"]:
        # The server, monitor and spares are ours, not the caller's: under
        # a caller's low soft limit of processes (or open files), their
        # forks must not fail where a direct run would not. Each call's
        # executor takes its caller's limits back (capability "limits").
        _executor.raise_soft_limits_for_server()
    if os.fork():
        os._exit(0)  # the setup run ends; the client is waiting for it
    return _daemon(setup, settings, reload_files)


def _daemon(setup, settings, reload_files):
    """The daemon. The script's own code must never run here except in
    executors: any failure is logged and ends the process."""
    log = settings.log
    try:
        settings.titles.set("server")
        settings.titles.forget_initial_environ()
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a caller ignoring it breaks waitpid
        server = _server.Server(setup, settings, _reload.ReloadWatch(
            reload_files, setup["started_secs"] * 1_000_000_000 + setup["started_nsecs"], log))
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:  # started with fd 0, 1 or 2 closed: it is one of them
            os.close(null)
        # Only a client that said it reads greeting xdata is offered our
        # extensions, those it speaks (chiark-utils' misreads any).
        offered = [cap for cap in _wire.OUR_CAPS if cap in setup["client_caps"]]
        if "signals" not in offered and "closed" in offered:
            offered.remove("closed")  # a flag of extended requests only
        settings.offered = offered
        settings.keeper_program = setup["keeper"]
        control = server.run(socket.socket(fileno=setup["call"]))
    except BaseException as e:
        log(LOG_ERR, "server failed: %r" % (e,))
        os._exit(1)
    try:
        executor = _monitor.Monitor(control, settings).run()
    except BaseException as e:
        log(LOG_ERR, "monitor failed: %r" % (e,))
        os._exit(1)
    # An executor-to-be: it waits for its call, and returns as the call.
    try:
        return executor.run()
    except BaseException:
        os._exit(127)
