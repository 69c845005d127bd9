"""The executor: forked by the monitor before its call (a spare, idle
until then), with nothing of the monitor's open. It reads the request
itself and returns from initialisation_complete() as the call: the
caller's fds, arguments, environment, directory, umask and limits.

On a call with a pseudo-terminal of its own it leads a session instead,
with that terminal as its controlling terminal, and forks the script's
process, which leads the terminal's foreground group (with 0x20, a group
in its background); the executor stays as the session's keeper
(_keeper). Why two processes: a process group none of whose members has
a parent in its session but outside the group is orphaned, and the
kernel discards the stop signals a terminal sends such a group: a script
leading its session itself (its parent, the monitor, is elsewhere) would
ignore ^Z."""

import fcntl
import io
import os
import resource
import signal
import socket
import sys
import termios

from . import _init_env, _keeper, _precopy, _sys, _wire
from ._log import LOG_ERR, LOG_INFO

# Linux's resource numbers, RLIMIT_CPU (0) to RLIMIT_RTTIME (15), by name.
RESOURCES = ("CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS",
             "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME")
# What an executor on a pseudo-terminal of its own blocks: the terminal's
# signals, held until its monitor knows the call runs, and SIGCHLD, which
# the keeper reads from a signalfd; the script's process gets the old
# mask back.
_PTY_CALL_BLOCKED = _sys.TERMINAL_SIGNALS | {signal.SIGCHLD}


class _Hangup(Exception):
    """The client went away."""


def _read_exact(sock, length):
    data = bytearray()
    while len(data) < length:
        try:
            chunk = sock.recv(length - len(data))
        except (ConnectionResetError, BrokenPipeError):
            raise _Hangup()
        if not chunk:
            raise _Hangup()
        data += chunk
    return bytes(data)


def _recv_fd(conn):
    """One fd, with its one byte."""
    try:
        data, received, _, _ = socket.recv_fds(conn, 1, 1, socket.MSG_CMSG_CLOEXEC)
    except (ConnectionResetError, BrokenPipeError):
        raise _Hangup()
    if not data:
        raise _Hangup()
    if len(received) != 1:
        raise ValueError("expected one file descriptor, got %d" % len(received))
    return received[0]


def read_request(conn):
    """Reads a request: its byte (0, or 0x01 with any of the flags:
    0x02 context, 0x04, 0x08, 0x10 fd 0, 1, 2 a pseudo-terminal, 0x20
    with one of those: the script starts in its terminal's background),
    with 0x80 the second flags byte (the fds the caller has closed: 0x01,
    0x02, 0x04; 0 if none), fd 0, 1, 2, the payload, with context the
    caller's directory and umask, with 0x40 the caller's limits
    (_wire.decode_limits), and with the second byte's 0x08 the signals
    the caller ignores and blocks (_wire.decode_caller_signals)."""
    byte = _wire.check_request_byte(_read_exact(conn, 1)[0])
    closed = 0
    if _wire.has_second_request_byte(byte):
        closed = _wire.check_second_request_byte(_read_exact(conn, 1)[0])
    fds = [_recv_fd(conn) for _ in range(3)]
    length = _wire.decode_payload_len(_read_exact(conn, 4))
    env, args = _wire.decode_payload(_read_exact(conn, length))
    context = None
    if byte & _wire.REQUEST_FLAG_CONTEXT:
        _, received, _, _ = socket.recv_fds(conn, 1, 1, socket.MSG_CMSG_CLOEXEC)
        if len(received) != 1:
            raise ValueError("no directory in the context message")
        context = (received[0], _wire.decode_context_umask(_read_exact(conn, 4)))
    limits = None
    if byte & _wire.REQUEST_FLAG_LIMITS:
        count = _read_exact(conn, 1)[0]
        limits = _wire.decode_limits(
            count, _read_exact(conn, count * _wire.LIMITS_ENTRY_LEN + _wire.LIMITS_TAIL_LEN))
    caller_signals = None
    if closed & _wire.REQUEST_SECOND_CALLER_SIGNALS:
        caller_signals = _wire.decode_caller_signals(
            _read_exact(conn, _wire.CALLER_SIGNALS_LEN))
    return byte, closed, fds, env, args, context, limits, caller_signals


def take_caller_signals(ignored, blocked, mask):
    """Takes on the caller's signals (capability "dispositions"), as a
    direct run would have inherited them with initialisation's own
    changes laid over: a signal initialisation left as Python's start-up
    makes a default one (SIGINT: KeyboardInterrupt; others: SIG_DFL) is
    ignored where the caller ignores it, as Python leaves an inherited
    ignored signal ignored; one it handles or ignores keeps that. The
    caller's blocked signals join the mask: now, or, where mask (the one
    the script gets once back in it) is not None, in the mask returned.
    What cannot be set (KILL, STOP, the C library's own) is left."""
    valid = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
    for sig in ignored:
        if sig not in valid:
            continue
        untouched = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        if signal.getsignal(sig) == untouched:
            signal.signal(sig, signal.SIG_IGN)
    blocked = set(blocked) & valid
    if mask is None:
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        return None
    return set(mask) | blocked


def std_stream(fd, old, write, env):
    """A sys.std* for fd built as CPython builds one at start-up: line
    buffering on a terminal (stderr: always), the call's PYTHONUNBUFFERED
    and PYTHONIOENCODING honoured; otherwise the encoding and error
    handler of the server's stream (use `-E LANG` in the #! line to have
    one server per locale)."""
    unbuffered = write and bool(env.get(b"PYTHONUNBUFFERED"))
    encoding = getattr(old, "encoding", None) or "utf-8"
    errors = getattr(old, "errors", None) or "strict"
    io_encoding = env.get(b"PYTHONIOENCODING")
    if io_encoding:
        name, _, handler = os.fsdecode(io_encoding).partition(":")
        encoding = name or encoding
        errors = handler or errors
    raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
    raw.name = ("<stdin>", "<stdout>", "<stderr>")[fd]
    buffer = raw if unbuffered else (io.BufferedWriter(raw) if write else io.BufferedReader(raw))
    line_buffering = write and not unbuffered and (fd == 2 or os.isatty(fd))
    stream = io.TextIOWrapper(buffer, encoding=encoding, errors=errors, newline="\n",
                              line_buffering=line_buffering, write_through=unbuffered)
    stream.mode = "w" if write else "r"
    return stream


def read_own_limits():
    """This process's resource limits by number, nice value and
    oom_score_adj (None where unreadable)."""
    rlimits = {}
    for number in range(len(RESOURCES)):
        try:
            rlimits[number] = resource.getrlimit(number)
        except (OSError, ValueError):
            pass
    try:
        nice = os.getpriority(os.PRIO_PROCESS, 0)
    except OSError:
        nice = None
    try:
        with open("/proc/self/oom_score_adj", "rb") as f:
            oom = int(f.read())
    except (OSError, ValueError):
        oom = None
    return rlimits, nice, oom


# The limits the server raises, soft to hard, for its own processes
# (Rust's CLIENT_RAISED): the monitor and the spares it forks are its
# work, not a caller's.
SERVER_RAISED = (resource.RLIMIT_NPROC, resource.RLIMIT_NOFILE)


def raise_soft_limits_for_server():
    """Raises the SERVER_RAISED soft limits (each lower than its hard one)
    to their hard ones, in the setup run just before the daemon fork:
    under a caller's low soft limit of processes or open files, the
    server's forks and fds must not fail where a direct run would not.
    The monitor reads its own limits (read_own_limits) after this, so each
    executor sees the raised ones as the server's and takes its caller's
    back."""
    for number in SERVER_RAISED:
        try:
            soft, hard = resource.getrlimit(number)
            if soft != hard:  # lower: the kernel keeps soft <= hard
                resource.setrlimit(number, (hard, hard))
        except (OSError, ValueError):
            pass


def _rlim(value):
    """A limit on the wire (u64, 2**64-1 for none) as the resource module
    has it (RLIM_INFINITY is -1 there, rlim_t read as signed)."""
    if value == _wire.RLIM_INFINITY:
        return resource.RLIM_INFINITY
    return value - 2**64 if value >= 2**63 and resource.RLIM_INFINITY < 0 else value


def _refused_limit(limits, own):
    """Takes on the caller's limits, nice value and oom_score_adj (each
    only if it differs from ours, own); why one the kernel refused, or
    None."""
    entries, nice, oom = limits
    own_rlimits, own_nice, own_oom = own
    for number, soft, hard in entries:
        if number >= len(RESOURCES):
            continue  # a resource we have no name for
        wanted = (_rlim(soft), _rlim(hard))
        try:
            if own_rlimits.get(number) != wanted:
                resource.setrlimit(number, wanted)
        except (OSError, ValueError, OverflowError) as e:
            shown = ["unlimited" if v == _wire.RLIM_INFINITY else str(v) for v in (soft, hard)]
            return ("cannot give the script the caller's RLIMIT_%s (soft %s, hard %s): %s (a "
                    "server started under lower limits cannot raise them: -f starts a fresh one)"
                    % (RESOURCES[number], shown[0], shown[1], getattr(e, "strerror", None) or e))
    try:
        if own_nice != nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as e:
        return "cannot give the script the caller's nice value %d: %s" % (nice, e.strerror or e)
    if oom == _wire.OOM_SCORE_UNKNOWN:
        return None
    try:
        if own_oom != oom:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"%d" % oom)
            finally:
                os.close(fd)
    except (OSError, ValueError) as e:
        return "cannot give the script the caller's oom_score_adj %d: %s" % (
            oom, getattr(e, "strerror", None) or e)
    return None


def take_limits(limits, own):
    """Takes on the caller's limits; one the kernel refuses is said in
    one line on fd 2 (the caller's stderr by now) and the call ends, 127."""
    why = _refused_limit(limits, own or read_own_limits())
    if why is not None:
        try:
            os.write(2, ("prefork-interp: %s\n" % why).encode())
        except OSError:
            pass
        os._exit(127)


class Executor:
    """An executor-to-be: handover (the monitor's socket the call comes
    on), monitor (its socket to the monitor: 'r', and as a keeper 't',
    'x'), the server's signal dispositions (saved), the monitor's pid,
    the server's limits (own_limits)."""

    def __init__(self, settings, handover, monitor, saved, monitor_pid, own_limits):
        self.settings = settings
        self.log = settings.log
        self.handover = handover
        self.monitor = monitor
        self.saved = saved
        self.monitor_pid = monitor_pid
        self.own_limits = own_limits

    def run(self):
        """Gets back the server's signal dispositions (SIGINT: Python's
        own handler, KeyboardInterrupt, even if a server started by
        another client inherited it ignored), waits for the call, leads a
        process group of its own (or a session: keep_session), sends an
        extended call's 'P' with its own pid (before any per-call code),
        tells the monitor 'r', becomes the call, and lays the caller's
        signals over (take_caller_signals). Returns the signal mask to
        restore once back in the script (on a pseudo-terminal: the
        terminal's signals and SIGCHLD are held until then, and the
        caller's blocked ones join them), or None."""
        # A monitor killed mid-call leaves the call with nobody to report
        # its end: it ends as when its client goes, with SIGINT.
        _sys.set_parent_death_signal(signal.SIGINT)
        if os.getppid() != self.monitor_pid:
            os._exit(0)  # it died before we asked
        for sig, handler in self.saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if self.settings.precopy:
            # Idle until a call comes: copy what its end will write, and
            # stop as soon as it is there.
            _precopy.precopy(self.handover)
        conn, request = self.take_call()
        self.settings.titles.set("executor")
        byte, fds, context = request[0], request[2], request[5]
        # The monitor signals our group (its id is our pid): us, and
        # whatever the script starts. (Not made while idle: setsid
        # refuses a group leader.)
        mask = None
        script_pid = None
        if not byte & _wire.REQUEST_ANY_PTY:
            try:
                os.setpgid(0, 0)
            except OSError:
                pass
        else:
            # The terminal's signals (^C, ^Z, a resize) may come as soon
            # as the script's group is its foreground: they wait until
            # the monitor knows the call runs, so that it reports a stop
            # and sees a death as the call's.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _PTY_CALL_BLOCKED)
            self.keep_session(next(i for i, flag in enumerate(_wire.REQUEST_FLAG_PTY)
                                   if byte & flag),
                              byte & _wire.REQUEST_FLAG_PTY_BACKGROUND, conn, fds, context)
            script_pid = os.getpid()
        self.announce(conn, byte, script_pid)
        self.become_the_call(conn, request)
        if request[7] is not None:
            mask = take_caller_signals(*request[7], mask)
        return mask

    def take_call(self):
        """Waits for the call socket on handover and reads the request;
        (the call socket, read_request's tuple)."""
        try:
            data, received, _, _ = socket.recv_fds(self.handover, 1, 1, socket.MSG_CMSG_CLOEXEC)
        except OSError:
            os._exit(0)
        if not data or len(received) != 1:
            os._exit(0)  # the monitor is gone, or never got a call
        conn = socket.socket(fileno=received[0])
        try:
            return conn, read_request(conn)
        except _Hangup:
            self.log(LOG_INFO, "client went away before sending its call")
            os._exit(0)
        except Exception as e:
            self.log(LOG_ERR, "call failed: %r" % (e,))
            os._exit(1)

    def keep_session(self, which, background, conn, fds, context):
        """On a call with a pseudo-terminal of its own (fds[which]):
        starts a session with that terminal as its controlling terminal
        and forks the script's process, which leads a group of its own,
        the terminal's foreground group (unless background); returns only
        in that process. The executor stays, as a shell would, the
        session's leader: its keeper, with none of the call's fds but
        that terminal."""
        terminal = fds[which]
        try:
            os.setsid()
            fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
        except OSError as e:
            self.log(LOG_ERR, "call failed: cannot take its terminal: %s" % (e.strerror or e))
            os._exit(127)
        keeper = os.getpid()
        try:
            script = os.fork()
        except OSError as e:
            self.log(LOG_ERR, "call failed: cannot fork the script's process: %s"
                     % (e.strerror or e))
            os._exit(127)
        if script:
            for sock in (conn, self.handover):
                sock.close()
            for fd in fds[:which] + fds[which + 1:] + ([context[0]] if context is not None else []):
                os.close(fd)
            if self.settings.keeper_program is not None:
                _keeper.exec_program(self.settings.keeper_program, script, self.monitor, terminal)
            _keeper.keep(script, self.monitor, terminal, self.log)
        # Our keeper gone (the monitor killed): the call ends.
        _sys.set_parent_death_signal(signal.SIGINT)
        if os.getppid() != keeper:
            os._exit(0)  # it died before we asked
        try:
            os.setpgid(0, 0)
            if not background:
                # From the background: SIGTTOU is blocked, so it is allowed.
                os.tcsetpgrp(terminal, os.getpid())
        except OSError as e:
            self.log(LOG_ERR, "call failed: cannot take its terminal: %s" % (e.strerror or e))
            os._exit(127)

    def announce(self, conn, byte, script_pid):
        """An extended call's 'P' with our pid to the client, then 'r' to
        the monitor (with the script's pid on a pseudo-terminal of its
        own)."""
        if byte & _wire.REQUEST_BYTE_EXTENDED:
            try:
                _sys.send_all(conn, _wire.encode_frame(_wire.FRAME_EXECUTOR_PID, os.getpid()))
            except OSError:
                self.log(LOG_INFO, "client went away before its call started")
                os._exit(0)
        try:
            _sys.send_all(self.monitor, _wire.encode_executor_ready(byte, script_pid))
        except OSError:
            os._exit(127)  # nobody could report our status without the monitor

    def become_the_call(self, conn, request):
        """Takes on the caller's directory and umask, fds, limits,
        environment (with what initialisation did to its own laid over
        it), arguments and std streams."""
        _, closed, fds, env, args, context, limits, _ = request
        if context is not None:
            # The caller's directory and umask (capability "context").
            cwd, umask = context
            os.fchdir(cwd)
            os.close(cwd)
            os.umask(umask)
        for target, fd in enumerate(fds):
            # The server's 0, 1, 2 are /dev/null, so received fds are
            # above them; still, never close what was just put in place.
            if fd != target:
                os.dup2(fd, target)
                os.close(fd)
        for target, flag in enumerate(_wire.REQUEST_SECOND_CLOSED):
            if closed & flag:
                # Closed in the caller (capability "closed"): the client
                # sent /dev/null in its place. The number is free again,
                # as in a direct run: the script's next open() may take it.
                os.close(target)
        if limits is not None:
            # What a direct run would inherit beyond fds (capability "limits").
            take_limits(limits, self.own_limits)
        conn.close()
        self.handover.close()
        self.monitor.close()
        self.log.close()  # the script finds syslog unopened, as in a direct run
        environ = self.take_environment(env)
        sys.argv[1:] = [os.fsdecode(a) for a in args]
        # A closed fd has no stream: None, as CPython's start-up makes it
        # (and as print() and the exit's flush expect).
        old = (sys.stdin, sys.stdout, sys.stderr)
        new = [None if closed & _wire.REQUEST_SECOND_CLOSED[fd]
               else std_stream(fd, old[fd], fd != 0, environ)
               for fd in range(3)]
        sys.stdin = sys.__stdin__ = new[0]
        sys.stdout = sys.__stdout__ = new[1]
        sys.stderr = sys.__stderr__ = new[2]

    def take_environment(self, env):
        """os.environ becomes the caller's; then what initialisation did
        to its own, as in a direct run. Returns the caller's, name: value.
        (The std streams follow the caller's variables only: Python reads
        PYTHONIOENCODING and the like at start-up, before any script
        code.)"""
        os.environb.clear()
        environ = {}
        for entry in env:
            split = _wire.split_env_entry(entry)
            # A name holding '=' (or an entry with none) cannot be set;
            # only a hand-made environment has one.
            if split is not None and b"=" not in split[0]:
                os.environb[split[0]] = split[1]
                environ[split[0]] = split[1]
        _init_env.apply(self.settings.init_env_changes, os.environb)
        return environ
