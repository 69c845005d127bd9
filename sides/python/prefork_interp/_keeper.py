"""The keeper: on a call with a pseudo-terminal of its own, the executor
stays, as a shell would, its session's leader, the script its child
(why two processes: sides/python/prefork_interp/_executor.py). It tells
the monitor when the script stops and how it ended, and moves the
script's group to its terminal's foreground or background when the
monitor says so. Runs none of the script's code.

When the client that started the server named its own program
(PREFORK_INTERP's pfi-keeper), the executor becomes that program, which
keeps the session as keep() does (exec_program): a keeper that is a copy
of this interpreter shares every page of it with the script, and the
script's writes (its reference counts, its exit's finalisation) would
copy each page it touches; with the keeper gone from them, they are the
script's own."""

import os
import select
import signal

from . import _sys, _wire
from ._log import LOG_ERR
from ._sys import kill_group


def keep(script, monitor, terminal, log):
    """The session's keeper: tells the monitor when the script stops
    ('t' and the signal) and how it ended ('x' and its wait status, with
    no other fd left open: say_end), then exits; when the monitor says
    so ('f', from the client's 'F': 1, the client is in its terminal's
    foreground; 0, its background), makes the script's group the
    terminal's foreground group or its own, and continues the script.
    What the script left in its group gets SIGINT while the script is a
    zombie (its group id cannot be reused), as the monitor does for an
    executor. A hang-up of the terminal, which the kernel signals to the
    session's leader, is the monitor's to pass on (it sees the client
    go). Its signal handlers are off."""
    try:
        for sig in _sys.FORWARDED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # The monitor's death (PR_SET_PDEATHSIG) must still end us, and
        # with us the script (its own PR_SET_PDEATHSIG).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        # The script's stops and exit, and the monitor's 'f', in one poll.
        # SIGCHLD has been blocked since before the fork (the executor),
        # so each change of the script leaves it pending, and a signalfd
        # readable, whenever it comes; each round looks at the script
        # (waitid, WNOHANG) after reading the signalfd empty, so nothing
        # is missed. A signalfd (through ctypes: Python has none) rather
        # than signal.set_wakeup_fd, equally race-free (its C handler
        # writes at delivery) but with more parts: a Python handler, the
        # signal unblocked, EINTR retries, a wakeup socket; and rather
        # than sigtimedwait, which cannot wait for the socket too (only
        # poll it, in turns, with a timeout). As the Rust keeper does.
        children = _sys.signalfd(signal.SIGCHLD)
        poll = select.poll()
        poll.register(children, select.POLLIN)
        poll.register(monitor, select.POLLIN)
        while True:
            _watch_script(script, monitor)
            ready = dict(poll.poll())
            try:
                while os.read(children, 4096):
                    pass
            except BlockingIOError:
                pass
            if ready.get(monitor.fileno()):
                message = _sys.recv_exact(monitor, _wire.FRAME_LEN)
                if len(message) < _wire.FRAME_LEN:
                    poll.unregister(monitor)  # the monitor has gone
                else:
                    _hear_monitor(script, terminal, *_wire.decode_frame(message))
    except BaseException as e:
        log(LOG_ERR, "keeper of %d: %r" % (script, e))
        os._exit(127)


def exec_program(program, script, monitor, terminal):
    """Becomes the keeper program: PROGRAM --session-keeper SCRIPT with
    the monitor's socket as fd 0 and the terminal as fd 1 (it closes our
    other fds itself; SIGCHLD stays blocked, as keep() needs it, and
    PR_SET_PDEATHSIG stays set). Returns only if the exec failed, with
    fds 0 and 1 on /dev/null (a copy of the terminal left there would
    outlive say_end's closing): keep() then does the work here."""
    try:
        os.dup2(monitor.fileno(), 0)
        os.dup2(terminal, 1)
        os.execv(program, [program, _wire.KEEPER_ARGUMENT, str(script).encode()])
    except OSError:
        pass
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.close(null)


def _watch_script(script, monitor):
    """What the script did since the last look: each stop to the
    monitor; its end, to the monitor too, and the keeper's."""
    while True:
        # Without reaping (WNOWAIT): the script's group id stays its own
        # until we have signalled what is left in it.
        info = os.waitid(os.P_PID, script, os.WSTOPPED | os.WEXITED | os.WNOWAIT | os.WNOHANG)
        if info is None:
            return
        if info.si_code != os.CLD_STOPPED:
            kill_group(script)
            _, status = os.waitpid(script, 0)
            say_end(monitor, status)
        # Consume this stop's report, so the next wait sees what comes
        # after it (without WEXITED, which would reap).
        os.waitid(os.P_PID, script, os.WSTOPPED | os.WNOHANG)
        try:
            _sys.send_all(monitor, _wire.encode_frame(_wire.KEEPER_STOPPED, info.si_status))
        except OSError:
            pass


def _hear_monitor(script, terminal, kind, value):
    if kind == _wire.KEEPER_FOREGROUND:
        # SIGTTOU is blocked: allowed from the background.
        try:
            os.tcsetpgrp(terminal, script if value == 1 else os.getpgrp())
        except OSError:
            pass
        kill_group(script, signal.SIGCONT)


def say_end(monitor, status):
    """The keeper's last words: 'x' and the script's wait status, on the
    monitor's socket, once every other fd it has is closed (the
    terminal's copy first of all: the client ends at its master's EIO,
    when the last copy of the slave is closed, and it need not wait for
    our exit too); then it exits. The monitor's socket stays, as fd 0."""
    message = _wire.encode_frame(_wire.KEEPER_STATUS, status)
    try:
        try:
            os.dup2(monitor.fileno(), 0)
        except OSError:
            _sys.send_all(monitor, message)  # with our copy of the terminal
        else:
            _sys.close_range_from(3)
            # Five bytes: one write. (Only a monitor gone could make it
            # fail, or SIGPIPE us, and then nobody is listening.)
            os.write(0, message)
    except OSError:
        pass
    os._exit(0)
