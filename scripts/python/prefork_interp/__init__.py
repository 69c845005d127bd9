"""prefork-interp for Python scripts: pay the start-up once, fork per call.

::

    #!/usr/bin/prefork-interp -U,python3
    import heavy_things                         # paid once, by the server
    import prefork_interp
    prefork_interp.initialisation_complete()    # returns once per call
    main()                                      # sys.argv, os.environ and
                                                # sys.std* are the caller's

Process roles (as in the Rust and Perl script sides)::

    setup run --fork--> server (setsid; stdio /dev/null; syslog)
      exit 0              | waits on LISTEN, WATCHE, the monitors' pidfds
                          | (and an inotify watch of the modules); quits on
                          | watcher EOF, idle timeout, reload
                          +--fork--> monitor (own process group), in advance
                          |            +--fork--> executor-to-be: the server's
                          |                       signals back; waits
                          | per call: accept, greeting, then the call socket
                          | to the idle monitor and to its executor, which
                          | reads the request, sends 'P' (extended), tells
                          | the monitor 'r' and returns from
                          | initialisation_complete(); the monitor waits on its
                          | pidfd, REAPS IT FIRST, then SIGINTs what is left
                          | of its group, sends the status. The server forks
                          | the next spare handler meanwhile.

Server and monitor leave with os._exit: atexit handlers and finalisers
run in executors only. Standard library only; Linux 5.3 or later
(pidfd_open); Python 3.9 or later (socket.recv_fds, os.pidfd_open).
"""

import ctypes
import errno
import gc
import io
import os
import select
import selectors
import signal
import socket
import struct
import sys
import syslog
import time

__all__ = ["initialisation_complete", "autoreload_also_check"]
__version__ = "0.1.0"

ENV_VAR = "PREFORK_INTERP"
MAX_PAYLOAD = 64 * 1024 * 1024
# Negotiated extensions (man/prefork-interp.7), offered to a client that
# declared them.
OUR_CAPS = ("signals", "context")
# Signals an extended client may have delivered to the executor's group;
# the monitor ignores them, the executor gets back what the server had.
FORWARDED = tuple(getattr(signal, "SIG" + name) for name in
                  ("INT", "TERM", "HUP", "QUIT", "USR1", "USR2", "WINCH", "ALRM", "TSTP", "CONT"))

_also_check = []
_logging = False
# The C library, for what the os module lacks (inotify, prctl).
_LIBC = ctypes.CDLL(None, use_errno=True)


def autoreload_also_check(*paths):
    """Also restart the server when any of these files changes.

    Call it before initialisation_complete().
    """
    _also_check.extend(os.fspath(p) for p in paths)


def _log(priority, message):
    if _logging:
        try:
            syslog.syslog(priority, message)
        except Exception:
            pass


class _Hangup(Exception):
    """The client went away."""


# ---------------------------------------------------------------- protocol


def _parse_setup(value):
    """PREFORK_INTERP=v1,SECS.NSECS LISTEN,CALL,WATCHI,WATCHE.

    The fd order is chiark-utils' client's: WATCHI is the write end of the
    watcher's stdin, WATCHE the read end of its stderr. Extra words and
    items are ignored.
    """

    def bad(why):
        return ValueError("prefork-interp: bad %s: %s" % (ENV_VAR, why))

    words = value.split(b" ")
    if len(words) < 2:
        raise bad("expected two words")
    items = words[0].split(b",")
    if items[0] != b"v1":
        raise bad("unsupported version %r (expected v1)" % items[0].decode("ascii", "replace"))
    if len(items) < 2:
        raise bad("no start time")
    secs, dot, nsecs = items[1].partition(b".")
    if not (dot and secs.isdigit() and nsecs.isdigit() and len(nsecs) == 9):
        raise bad("start time must be SECS.NSECS with 9 digits of nanoseconds")
    fds = words[1].split(b",")
    if len(fds) < 4 or not all(f.isdigit() for f in fds[:4]):
        raise bad("file descriptors must be four non-negative numbers")
    listen, call, watch_in, watch_err = (int(f) for f in fds[:4])
    # Our client adds "pfi-caps=NAME,...": it reads greeting xdata.
    client_caps = set()
    for word in words[2:]:
        if word.startswith(b"pfi-caps="):
            client_caps.update(c.decode("ascii", "replace") for c in word[9:].split(b",") if c)
    return {
        "client_caps": client_caps,
        "started_ns": int(secs) * 1_000_000_000 + int(nsecs),
        "listen": listen,
        "call": call,
        "watch_in": watch_in,
        "watch_err": watch_err,
    }


def _decode_payload(payload):
    """Splits "NAME=value\\0"... "\\0" "arg\\0"... into (env, args)."""
    if not payload.endswith(b"\0"):
        raise ValueError("request payload does not end with a NUL")
    strings = payload[:-1].split(b"\0")
    try:
        end = strings.index(b"")
    except ValueError:
        raise ValueError("request payload has no empty string ending the environment")
    return strings[:end], strings[end + 1 :]


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


def _send_all(sock, data):
    try:
        while data:
            sent = sock.send(data, socket.MSG_NOSIGNAL)
            data = data[sent:]
    except (ConnectionResetError, BrokenPipeError):
        raise _Hangup()


def _describe_status(status):
    if os.WIFEXITED(status):
        return "exited with status %d" % os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return "was killed by signal %d%s" % (os.WTERMSIG(status), core)
    return "has wait status %#x" % status


# ---------------------------------------------------------- auto-reload


class _ReloadWatch:
    """Files whose change since the server's start means "quit; the next
    call starts a fresh server". They are watched with inotify, so a call
    costs nothing unless one was touched; then every file is checked again
    (and the watches re-armed: editors replace files by rename). While a
    file is missing (it has no watch to say when it is made again), and
    without inotify, every call checks every file, as the original does."""

    MASK = 0x2 | 0x4 | 0x8 | 0x400 | 0x800  # MODIFY ATTRIB CLOSE_WRITE DELETE_SELF MOVE_SELF

    def __init__(self, files, started_ns):
        self.files = files
        self.started_ns = started_ns
        # Watches first, then the first call checks every file: nothing
        # changed between the two is missed.
        self.dirty = True
        self.fd = None
        try:
            self._add = _LIBC.inotify_add_watch
            self._add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
            fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self.fd = fd
                if not self._arm():
                    self.close()
        except (OSError, AttributeError):
            self.close()

    def _arm(self):
        for path in self.files:
            if self._add(self.fd, os.fsencode(path), self.MASK) < 0:
                err = ctypes.get_errno()
                if err == errno.ENOENT:
                    continue  # a missing file is no reason to reload
                _log(syslog.LOG_ERR, "cannot watch %s: %s; checking every call instead"
                     % (path, os.strerror(err)))
                return False
        return True

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def drain(self):
        """The inotify fd is readable: something may have changed."""
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        self.dirty = True

    def changed(self):
        """The first changed file, or None. Cheap unless dirty."""
        if self.fd is not None and not self.dirty:
            return None
        missing = False
        for path in self.files:
            try:
                if os.stat(path).st_mtime_ns > self.started_ns:
                    return path
            except FileNotFoundError:
                missing = True  # no reason to reload
            except OSError as e:
                _log(syslog.LOG_ERR, "cannot check %s: %s" % (path, e))
                return path
        if self.fd is not None:
            self.dirty = missing
            if not self._arm():
                self.close()
        return None


def _reload_files(autoreload_modules, autoreload_extra):
    files = [os.path.abspath(sys.argv[0])] if sys.argv and sys.argv[0] else []
    if autoreload_modules:
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str):
                files.append(path)
    files.extend(os.fspath(p) for p in autoreload_extra)
    files.extend(_also_check)
    return list(dict.fromkeys(files))


# ------------------------------------------------------------------ server


def _thread_count():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _fd_is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _facility(name):
    if name is None or name == "":
        return None
    if isinstance(name, int):
        return name
    key = name.upper()
    if not key.startswith("LOG_"):
        key = "LOG_" + key
    value = getattr(syslog, key, None)
    if not isinstance(value, int):
        raise ValueError("prefork-interp: unknown syslog facility %r" % (name,))
    return value


def initialisation_complete(max_servers=4, idle_timeout=1000000, autoreload_modules=True,
                            autoreload_extra=(), max_errors=100, log_facility="user",
                            spare_handlers=1):
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
    server quits (negative or None: never). autoreload_modules: restart
    the server when the script or any imported module's file changes;
    autoreload_extra: more files. max_errors: server errors tolerated.
    log_facility: syslog facility for the server's messages ("user",
    "daemon", "local0"..., or a syslog.LOG_* value); None or "": none.
    spare_handlers: call handlers (a monitor and its executor, forked in
    advance so that no fork is on a call's critical path) kept waiting;
    at least 1.
    """
    global _logging
    value = os.environb.pop(ENV_VAR.encode(), None)
    if value is None:
        return
    threads = _thread_count()
    if threads != 1:
        raise RuntimeError(
            "prefork-interp: %d threads are running; initialisation_complete must be called "
            "before any other thread starts (a fork would lose them)" % threads)
    setup = _parse_setup(value)
    for fd in (setup["listen"], setup["call"], setup["watch_in"], setup["watch_err"]):
        if fd < 3 or not _fd_is_open(fd):
            raise ValueError("prefork-interp: %s names fd %d, which is not open" % (ENV_VAR, fd))
    if max_servers == 0:
        raise ValueError("prefork-interp: max_servers must not be 0 (negative for no limit)")
    if max_servers is not None and max_servers < 0:
        max_servers = None
    if spare_handlers < 1:
        raise ValueError("prefork-interp: spare_handlers must be at least 1")
    if idle_timeout is not None and idle_timeout < 0:
        idle_timeout = None
    facility = _facility(log_facility)
    reload_files = _reload_files(autoreload_modules, autoreload_extra)

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
    if facility is not None:
        syslog.openlog("prefork-interp %s" % (sys.argv[0] if sys.argv else "python"),
                       syslog.LOG_PID, facility)
        _logging = True

    if os.fork():
        os._exit(0)  # the setup run ends; the client is waiting for it

    # The daemon. The script's own code must never run here except in
    # executors: any failure is logged and ends the process.
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a caller ignoring it breaks waitpid
        server = _Server(setup, max_servers, idle_timeout, max_errors,
                         _ReloadWatch(reload_files, setup["started_ns"]), spare_handlers)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        # Only a client that said it reads greeting xdata is offered our
        # extensions, those it speaks (chiark-utils' misreads any).
        offered = [cap for cap in OUR_CAPS if cap in setup["client_caps"]]
        # Hand each call to an idle handler (forked in advance: no fork on
        # a call's critical path), forking one only if none is waiting;
        # then make up the spares.
        pending = socket.socket(fileno=setup["call"])
        child = None
        while child is None:
            if pending is not None:
                if not server.idle:
                    child = server.spawn_handler(pending)
                    if child is not None:
                        break
                server.hand_over(pending, offered)
                pending.close()
                pending = None
            while child is None and len(server.idle) < server.spare:
                child = server.spawn_handler()
                if server.spawn_failed:
                    break
            if child is None:
                pending = server.next_call()
    except BaseException as e:
        _log(syslog.LOG_ERR, "server failed: %r" % (e,))
        os._exit(1)
    # A call handler's monitor: returns only in the executor.
    try:
        _monitor(*child)
    except BaseException as e:
        _log(syslog.LOG_ERR, "call failed: %r" % (e,))
        os._exit(1)


def _other_user(conn):
    """Why a call on conn must be refused (its caller is not our user), or None."""
    try:
        pid, uid, _ = struct.unpack(
            "iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII")))
    except OSError as e:
        return "refused a call whose caller is unknown: %s" % e
    if uid == os.getuid():
        return None
    return "refused a call from uid %d (pid %d): this server is uid %d's" % (uid, pid, os.getuid())


class _Server:
    def __init__(self, setup, max_servers, idle_timeout, max_errors, reload, spare):
        self.listen = socket.socket(fileno=setup["listen"])
        self.listen.setblocking(False)
        self.watch_err = setup["watch_err"]
        self.watch_in = setup["watch_in"]
        os.set_blocking(self.watch_err, False)
        for fd in (self.listen.fileno(), self.watch_err, self.watch_in):
            os.set_inheritable(fd, False)
        self.started_ns = setup["started_ns"]
        self.max_servers = max_servers
        self.idle_timeout = idle_timeout
        self.max_errors = max_errors
        self.errors = 0
        self.reload = reload
        self.monitors = {}  # pid -> pidfd, idle or busy
        self.idle = []  # (pid, control, handover) of those waiting for a call
        self.spare = spare
        self.spawn_failed = False
        self.served = 0
        self.idle_since = time.monotonic()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.watch_err, selectors.EVENT_READ, "watcher")
        self.listening = False
        if reload.fd is not None:
            self.selector.register(reload.fd, selectors.EVENT_READ, "reload")

    def close(self):
        """In a monitor: drop everything of the server's."""
        self.selector.close()
        self.listen.close()
        for fd in [self.watch_err, self.watch_in] + list(self.monitors.values()):
            os.close(fd)
        for _, control, handover in self.idle:
            control.close()
            handover.close()
        self.reload.close()

    def busy(self):
        return len(self.monitors) - len(self.idle)

    def spawn_handler(self, *close):
        """Forks a call handler. In the child, which has closed every fd
        of the server's (and those in close), returns its (control,
        handover) sockets; in the server None."""
        self.spawn_failed = False
        try:
            control, control_theirs = socket.socketpair()
            handover, handover_theirs = socket.socketpair()
            pid = os.fork()
        except OSError as e:
            self.error("cannot fork a call handler: %s" % e)
            self.spawn_failed = True
            return None
        if pid == 0:
            self.close()
            for sock in close + (control, handover):
                sock.close()
            return control_theirs, handover_theirs
        control_theirs.close()
        handover_theirs.close()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            # Unwatchable: it must not serve. Without its control socket
            # it leaves at once.
            self.error("cannot open a pidfd for call handler %d: %s" % (pid, e))
            control.close()
            handover.close()
            os.waitpid(pid, 0)
            return None
        self.monitors[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        self.idle.append((pid, control, handover))
        return None

    def hand_over(self, call, offered):
        """Greets the caller and hands the call to an idle handler: its
        monitor first (an executor handed the call first could finish it
        before the monitor knew it had one), then its executor."""
        xdata = b""
        if offered:
            xdata = ("pfi-caps 1\ncaps %s\nserved %d\nrunning %d\n"
                     % (",".join(offered), self.served, self.busy())).encode()
        try:
            _send_all(call, b"PFI\n" + struct.pack(">I", len(xdata)) + xdata)
        except (_Hangup, OSError) as e:
            _log(syslog.LOG_INFO, "caller went away before its greeting: %r" % (e,))
            return
        while self.idle:
            pid, control, handover = self.idle.pop()
            try:
                socket.send_fds(control, [b"\0"], [call.fileno()])
                socket.send_fds(handover, [b"\0"], [call.fileno()])
                self.served += 1
                return
            except OSError as e:
                _log(syslog.LOG_ERR, "call handler %d: %s" % (pid, e))  # died idle
            finally:
                control.close()
                handover.close()
        self.error("no call handler to take a call")

    def quit(self, why):
        _log(syslog.LOG_INFO, "server quitting: %s" % why)
        os._exit(0)

    def error(self, message):
        _log(syslog.LOG_ERR, message)
        self.errors += 1
        if self.errors > self.max_errors:
            self.quit("more than %d errors" % self.max_errors)

    def add_monitor(self, pid):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            # Unwatchable: wait for it, which keeps the limit true.
            self.error("cannot open a pidfd for monitor %d: %s" % (pid, e))
            os.waitpid(pid, 0)
            return
        self.monitors[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, pid)

    def reap(self, pid):
        pidfd = self.monitors.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        for handler in [h for h in self.idle if h[0] == pid]:
            self.idle.remove(handler)
            handler[1].close()
            handler[2].close()
        _, status = os.waitpid(pid, 0)
        if status != 0:
            self.error("monitor %d %s" % (pid, _describe_status(status)))
        if not self.busy():
            self.idle_since = time.monotonic()

    def set_listening(self, on):
        if on != self.listening:
            if on:
                self.selector.register(self.listen, selectors.EVENT_READ, "listen")
            else:
                self.selector.unregister(self.listen)
            self.listening = on

    def next_call(self):
        """Waits for the next call to serve; handles everything else."""
        while True:
            self.set_listening(self.max_servers is None or self.busy() < self.max_servers)
            timeout = None
            if self.idle_timeout is not None and not self.busy():
                timeout = self.idle_timeout - (time.monotonic() - self.idle_since)
                if timeout <= 0:
                    self.quit("idle timeout")
            for key, _ in self.selector.select(timeout):
                what = key.data
                if what == "watcher":
                    self.check_watcher()
                elif what == "reload":
                    self.reload.drain()
                elif what == "listen":
                    try:
                        conn, _ = self.listen.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as e:
                        self.error("accept failed: %s" % e)
                        continue
                    refusal = _other_user(conn)
                    if refusal is not None:
                        # Another user reached our socket (a run directory
                        # opened up by hand): they get nothing, and a log line.
                        _log(syslog.LOG_ERR, refusal)
                        conn.close()
                        continue
                    self.idle_since = time.monotonic()
                    changed = self.reload.changed()
                    if changed is not None:
                        # Dropping the call makes its client start afresh.
                        self.quit("%s changed" % changed)
                    conn.setblocking(True)
                    return conn
                else:
                    self.reap(what)

    def check_watcher(self):
        # The watcher says nothing unless something is wrong; EOF means
        # the socket path changed or the watcher died. Either way: quit.
        try:
            text = os.read(self.watch_err, 1024)
        except BlockingIOError:
            return
        except OSError as e:
            self.quit("cannot read from the watcher: %s" % e)
        if not text:
            self.quit("socket replaced or removed (watcher exited)")
        self.quit("watcher reported: %s" % text.decode("utf-8", "replace").strip())


# ----------------------------------------------------------------- monitor


def _monitor(control, handover):
    """Runs in a freshly forked child of the server: forks the
    executor-to-be (which keeps handover), waits for the call the server
    hands over on control, and serves it. Returns only in the executor."""
    if _logging:
        syslog.closelog()  # reopened if we log: no syslog fd in the executor
    os.setpgid(0, 0)
    # We deliver these to our group; they must not hurt us.
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in FORWARDED}
    from_executor, theirs = socket.socketpair()
    executor = os.fork()
    if executor == 0:
        try:
            control.close()
            from_executor.close()
            _executor(handover, theirs, saved, os.getppid())
        except BaseException:
            os._exit(127)
        return
    theirs.close()
    handover.close()
    try:
        pidfd = os.pidfd_open(executor)
    except OSError as e:
        _log(syslog.LOG_ERR, "cannot watch the executor: %s" % e)
        os.kill(executor, signal.SIGKILL)
        os.waitpid(executor, 0)
        os._exit(1)

    # Idle until the server hands us a call. (Both may be ready: the
    # executor may finish a whole call before we look. Only an executor
    # gone with no call handed over died idle.)
    while True:
        try:
            ready, _, _ = select.select([control, pidfd], [], [])
            break
        except InterruptedError:
            continue
    if control not in ready:
        _, status = os.waitpid(executor, 0)
        _log(syslog.LOG_ERR, "idle executor %d %s" % (executor, _describe_status(status)))
        os._exit(0)
    try:
        data, received, _, _ = socket.recv_fds(control, 1, 1, socket.MSG_CMSG_CLOEXEC)
    except OSError:
        data, received = b"", []
    if not data or len(received) != 1:
        # The server is gone or needs us no more; our executor leaves on
        # its own EOF.
        for fd in received:
            os.close(fd)
        os.waitpid(executor, 0)
        os._exit(0)
    control.close()
    conn = socket.socket(fileno=received[0])

    # The executor reads the request, sends 'P' (extended), then says 'r'
    # and the request byte. EOF instead: it could not (and logged why).
    try:
        message = _read_exact(from_executor, 2)
    except (_Hangup, OSError):
        message = b""
    from_executor.close()
    if message[:1] != b"r":
        _, status = os.waitpid(executor, 0)
        if status:
            _log(syslog.LOG_ERR, "executor %d failed before its call: it %s"
                 % (executor, _describe_status(status)))
        os._exit(0)
    extended = bool(message[1] & 1)

    executor_gone = True
    while True:
        try:
            ready, _, _ = select.select([pidfd, conn], [], [])
        except InterruptedError:
            continue
        if pidfd in ready:
            break
        if not extended:
            executor_gone = False  # v1: the client has nothing more to say
            break
        try:
            kind, value = struct.unpack(">cI", _read_exact(conn, 5))
        except _Hangup:
            executor_gone = False  # the client left
            break
        if kind == b"S" and value in FORWARDED:
            _interrupt_group(os.getpgrp(), value)
    group = os.getpgrp()
    if executor_gone:
        _, status = os.waitpid(executor, 0)
        _interrupt_group(group)  # what it left behind; we ignore SIGINT
        status &= 0xFFFFFFFF
        message = b"X" + struct.pack(">I", status) if extended else struct.pack(">I", status)
        try:
            _send_all(conn, message)
        except _Hangup:
            pass
    else:
        _interrupt_group(group)
        _, status = os.waitpid(executor, 0)
        _log(syslog.LOG_INFO, "client went away; script interrupted, it %s"
             % _describe_status(status))
    os._exit(0)


def _interrupt_group(group, sig=signal.SIGINT):
    try:
        os.killpg(group, sig)
    except OSError:
        pass


# ---------------------------------------------------------------- executor


def _std_stream(fd, old, write, env):
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


def _read_request(conn):
    """Reads a request: its byte, fd 0, 1, 2, the payload, and with
    context the caller's directory and umask."""
    byte = _read_exact(conn, 1)[0]
    if byte not in (0, 1, 3):
        raise ValueError("request starts with byte %#04x, expected 0x00, 0x01 or 0x03" % byte)
    fds = []
    for _ in range(3):
        try:
            data, received, _, _ = socket.recv_fds(conn, 1, 1, socket.MSG_CMSG_CLOEXEC)
        except (ConnectionResetError, BrokenPipeError):
            raise _Hangup()
        fds.extend(received)
        if not data:
            raise _Hangup()
        if len(received) != 1:
            raise ValueError("expected one file descriptor, got %d" % len(received))
    (length,) = struct.unpack(">I", _read_exact(conn, 4))
    if length > MAX_PAYLOAD:
        raise ValueError("request too long (%d bytes, at most %d)" % (length, MAX_PAYLOAD))
    env, args = _decode_payload(_read_exact(conn, length))
    context = None
    if byte & 2:
        _, received, _, _ = socket.recv_fds(conn, 1, 1, socket.MSG_CMSG_CLOEXEC)
        if len(received) != 1:
            raise ValueError("no directory in the context message")
        (umask,) = struct.unpack(">I", _read_exact(conn, 4))
        context = (received[0], umask)
    return byte, fds, env, args, context


def _executor(handover, monitor, saved, monitor_pid):
    """Forked by the monitor before the call, with the server's signal
    dispositions (SIGINT: Python's own handler, KeyboardInterrupt, even if
    the call that started the server ignored it). Gets the call socket
    from the server, reads the request itself, sends an extended call's
    'P' with its own pid (before any per-call code), tells the monitor
    'r', and returns into the script."""
    # A monitor killed mid-call leaves the call with nobody to report its
    # end: it ends as when its client goes, with SIGINT.
    _LIBC.prctl(1, signal.SIGINT, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != monitor_pid:
        os._exit(0)  # it died before we asked
    for sig, handler in saved.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        data, received, _, _ = socket.recv_fds(handover, 1, 1, socket.MSG_CMSG_CLOEXEC)
    except OSError:
        os._exit(0)
    if not data or len(received) != 1:
        os._exit(0)  # the monitor is gone, or never got a call
    conn = socket.socket(fileno=received[0])
    try:
        byte, fds, env, args, context = _read_request(conn)
        if byte & 1:
            _send_all(conn, b"P" + struct.pack(">I", os.getpid()))
    except _Hangup:
        _log(syslog.LOG_INFO, "client went away before its call started")
        os._exit(0)
    except Exception as e:
        _log(syslog.LOG_ERR, "call failed: %r" % (e,))
        os._exit(1)
    try:
        _send_all(monitor, b"r" + bytes([byte]))
    except (_Hangup, OSError):
        os._exit(127)  # nobody could report our status without the monitor

    if context is not None:
        # The caller's directory and umask (capability "context").
        cwd, umask = context
        os.fchdir(cwd)
        os.close(cwd)
        os.umask(umask)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    conn.close()
    handover.close()
    monitor.close()

    os.environb.clear()
    environ = {}
    for entry in env:
        name, eq, value = entry.partition(b"=")
        # A name holding '=' (or empty) cannot be set; only a hand-made
        # environment has one.
        if eq and name:
            os.environb[name] = value
            environ[name] = value
    sys.argv[1:] = [os.fsdecode(a) for a in args]

    old = (sys.stdin, sys.stdout, sys.stderr)
    sys.stdin = sys.__stdin__ = _std_stream(0, old[0], False, environ)
    sys.stdout = sys.__stdout__ = _std_stream(1, old[1], True, environ)
    sys.stderr = sys.__stderr__ = _std_stream(2, old[2], True, environ)
