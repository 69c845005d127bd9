"""prefork-interp for Python scripts: pay the start-up once, fork per call.

::

    #!/usr/bin/prefork-interp -U,python3
    import prefork_interp                       # first: see "environment"
    import heavy_things                         # paid once, by the server
    prefork_interp.initialisation_complete()    # returns once per call
    main()                                      # sys.argv, os.environ and
                                                # sys.std* are the caller's

Process roles (as in the Rust and Perl script sides)::

    setup run --fork--> server (setsid; stdio /dev/null; syslog)
      exit 0              | waits on LISTEN, WATCHE, CONTROL and the
                          | monitor's pidfd (and an inotify watch of the
                          | modules); quits on watcher EOF, idle timeout,
                          | reload; never forks per call
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
                                                  pseudo-terminal: below)

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
away is SIGHUP and SIGCONT there.

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
server of its own, initialised with its values. Not seen: reads before
the import, or through a reference taken before it (`from os import
environ`), and C code's getenv.

Server and monitor leave with os._exit: atexit handlers and finalisers
run in executors only. Standard library only; Linux 5.3 or later
(pidfd_open); Python 3.9 or later (socket.recv_fds, os.pidfd_open).
"""

import _thread
import atexit
import collections
import ctypes
import errno
import fcntl
import functools
import gc
import io
import operator
import os
import resource
import select
import selectors
import signal
import socket
import struct
import sys
import syslog
import termios
import time

__all__ = ["initialisation_complete", "autoreload_also_check"]
__version__ = "0.1.0"

ENV_VAR = "PREFORK_INTERP"
MAX_PAYLOAD = 64 * 1024 * 1024
# Negotiated extensions (man/prefork-interp.7), offered to a client that
# declared them.
OUR_CAPS = ("signals", "context", "tty", "limits", "closed")
# The request byte: 0x00 (v1), or 0x01 (extended) with these flags.
REQUEST_EXTENDED = 0x01
REQUEST_CONTEXT = 0x02
# fd 0, 1, 2 as sent is the slave of the call's own pseudo-terminal.
REQUEST_PTY = (0x04, 0x08, 0x10)
_REQUEST_ANY_PTY = 0x04 | 0x08 | 0x10
# With a pty flag: the script starts in its terminal's background (the
# client is in a pipeline, or in the background itself).
REQUEST_PTY_BACKGROUND = 0x20
# A limits message follows the payload and the context message (capability
# "limits"): the caller's resource limits, nice value and oom_score_adj.
REQUEST_LIMITS = 0x40
# A second flags byte follows the request byte at once (capability
# "closed"): its bits 0x01, 0x02, 0x04 say the caller's fd 0, 1, 2 is
# closed (and the fd sent for it, /dev/null, is to be closed).
REQUEST_SECOND = 0x80
REQUEST_CLOSED = (0x01, 0x02, 0x04)
_REQUEST_ANY_CLOSED = 0x01 | 0x02 | 0x04
# Every request byte we take: 0, or 0x01 with any of the other flags,
# 0x20 only with a pty flag. (One set lookup on a call's path; 0x80 is
# checked against what was offered after it.)
_REQUEST_BYTES = frozenset([0] + [
    byte for byte in range(0x100)
    if byte & REQUEST_EXTENDED and (byte & _REQUEST_ANY_PTY or not byte & REQUEST_PTY_BACKGROUND)])
# Whether this server offered "closed" (set before the monitor's fork,
# for its executors).
_closed_offered = False
# Signals an extended client may have delivered to the executor's group;
# the monitor ignores them, the executor gets back what the server had.
FORWARDED = tuple(getattr(signal, "SIG" + name) for name in
                  ("INT", "TERM", "HUP", "QUIT", "USR1", "USR2", "WINCH", "ALRM", "TSTP", "CONT"))
# Signals a terminal sends its foreground group: an executor taking its
# own pseudo-terminal holds them until its monitor knows the call runs.
TERMINAL_SIGNALS = frozenset(getattr(signal, "SIG" + name) for name in
                             ("INT", "QUIT", "TSTP", "TTIN", "TTOU", "WINCH", "HUP"))
# What such an executor blocks: those, and SIGCHLD, which the keeper reads
# from a signalfd (_keep); the script's process gets the old mask back.
_PTY_CALL_BLOCKED = TERMINAL_SIGNALS | {signal.SIGCHLD}
# Linux's resource numbers, RLIMIT_CPU (0) to RLIMIT_RTTIME (15), by name.
RESOURCES = ("CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS",
             "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME")
# No limit, on the wire; and the oom_score_adj a caller could not read.
RLIM_INFINITY_WIRE = 2**64 - 1
OOM_SCORE_UNKNOWN = -2**31

_also_check = []
_logging = False
# openlog's arguments: a process that closes the server's syslog socket
# opens it again, lazily, as the server had it.
_syslog_args = None
# The C library, for what the os module lacks (inotify, prctl).
_LIBC = ctypes.CDLL(None, use_errno=True)


def _read_initial_environ():
    """The environment as exec left it: the kernel's copy, which
    os.environ changes never touch (an OSError if unreadable). Read on
    import, before the script could overwrite that memory (as
    setproctitle does)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            return f.read()
    except OSError as e:
        return e


_INITIAL_ENVIRON = _read_initial_environ()
# What initialisation did to os.environ: (name, value) set or changed,
# (name, None) removed. Laid over each call's environment.
_init_env_changes = []
# Python's own locale coercion (PEP 538) sets LC_CTYPE to one of these
# before any script code runs when the locale is C: not initialisation's
# doing, and a caller with another locale must not get it.
_COERCED_LC_CTYPE = (b"C.UTF-8", b"C.utf8", b"UTF-8")


def _exec_environ():
    """The exec-time environment, name: value (bytes)."""
    if isinstance(_INITIAL_ENVIRON, OSError):
        raise OSError("prefork-interp: cannot read /proc/self/environ: %s" % (_INITIAL_ENVIRON,))
    before = {}
    for entry in _INITIAL_ENVIRON.split(b"\0"):
        eq = entry.find(b"=", 1)
        # As getenv: the first of two entries with one name counts.
        if eq > 0 and entry[:eq] not in before:
            before[entry[:eq]] = entry[eq + 1:]
    return before


def _init_env_delta():
    """What the script's start-up did to its environment: os.environb
    against the exec-time environment. PREFORK_INTERP, ours, and Python's
    locale coercion are left out."""
    before = _exec_environ()
    ours = ENV_VAR.encode()
    changes = []
    for name, value in os.environb.items():
        if name == ours or before.get(name) == value:
            continue
        if (name == b"LC_CTYPE" and value in _COERCED_LC_CTYPE
                and before.get(name) in (None, b"", b"C", b"POSIX")):
            continue
        changes.append((name, value))
    changes += [(name, None) for name in before if name != ours and name not in os.environb]
    return changes


# What initialisation reads of the environment: from `import
# prefork_interp` until initialisation_complete(), os.environ and
# os.environb are stand-ins that record the name of each variable read;
# the greeting's `env` line lists them, with a digest of their exec-time
# values, and a client whose values differ goes to a server of its own
# (man/prefork-interp.7), so that the script is initialised with the
# caller's values.

_env_reads = set()  # names read (bytes)
_tracking = False


class _TrackedEnviron(os._Environ):
    """os.environ (or os.environb) during initialisation: the real one's
    own data dict (so every write reaches it, and through putenv C's
    environ, which child processes get; and objects that kept the real
    one, `from os import environ` before the import, agree), with a
    record of each name read: [], get, in, os.getenv, setdefault, pop.
    Iteration, keys(), items(), values(), copy(), clear(), ==, | read no
    one variable and are not recorded: what the real one does. (dict()
    of it, or **, reads every variable through [], and records them
    all.) Once initialisation is over, it records nothing: a module may
    have kept it."""

    def __getitem__(self, key):
        if _tracking:
            try:
                _env_reads.add(self.encodekey(key))
            except Exception:
                pass  # not a name: the lookup says why
        return os._Environ.__getitem__(self, key)

    def items(self):
        return self._untracked.items()

    def values(self):
        return self._untracked.values()

    def copy(self):
        return self._untracked.copy()

    def clear(self):
        self._untracked.clear()

    def __or__(self, other):
        return self._untracked.__or__(other)

    def __ror__(self, other):
        return self._untracked.__ror__(other)


def _tracked(real):
    """A stand-in for real (an os._Environ), or None."""
    if type(real) is not os._Environ:
        return None  # replaced by someone: left alone
    tracked = _TrackedEnviron.__new__(_TrackedEnviron)
    tracked.__dict__.update(real.__dict__)
    tracked._untracked = real
    return tracked


_REAL_ENVIRON = os.environ
_REAL_ENVIRONB = getattr(os, "environb", None)
_TRACKED_ENVIRON = _tracked(_REAL_ENVIRON)
_TRACKED_ENVIRONB = _tracked(_REAL_ENVIRONB)


def _start_tracking():
    global _tracking
    _tracking = True
    if _TRACKED_ENVIRON is not None:
        os.environ = _TRACKED_ENVIRON
    if _TRACKED_ENVIRONB is not None:
        os.environb = _TRACKED_ENVIRONB


def _stop_tracking():
    """Initialisation is over: the real os.environ and os.environb back
    (unless the script replaced them itself)."""
    global _tracking
    _tracking = False
    if os.environ is _TRACKED_ENVIRON:
        os.environ = _REAL_ENVIRON
    if getattr(os, "environb", None) is _TRACKED_ENVIRONB:
        os.environb = _REAL_ENVIRONB


_WORLD_NAMESPACES = ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup", "time")


def _world_line():
    """The greeting's `world DIGEST` line: the SHA-256 of NAME:INODE\n for
    each namespace in _WORLD_NAMESPACES' order (the inode /proc/self/ns/NAME
    links to, `-` if unreadable), then cgroup\n and /proc/self/cgroup as
    it is. A client in another world goes to a server of its own: an
    executor of ours could not take on the caller's namespaces and
    cgroups."""
    import hashlib

    digest = hashlib.sha256()
    for name in _WORLD_NAMESPACES:
        try:
            link = os.readlink("/proc/self/ns/" + name)  # NAME:[INODE]
            inode = str(int(link[link.index("[") + 1:-1]))
        except (OSError, ValueError):
            inode = "-"
        digest.update(("%s:%s\n" % (name, inode)).encode())
    digest.update(b"cgroup\n")
    try:
        with open("/proc/self/cgroup", "rb") as f:
            digest.update(f.read())
    except OSError:
        pass
    return b"world %s\n" % digest.hexdigest().encode()


def _env_line():
    """The greeting's `env DIGEST NAME...` line for what initialisation
    read (b"" if nothing): the names sorted, and the SHA-256 of
    NAME=VALUE\\0 (NAME\\0 if unset) for each, VALUE the exec-time one.
    Never PREFORK_INTERP, nor a name the line cannot carry (a space, a
    newline) or no environment can hold (empty, '=', NUL)."""
    names = sorted(name for name in _env_reads
                   if name and name != ENV_VAR.encode() and not any(c in name for c in b" \n=\0"))
    if not names:
        return b""
    import hashlib

    before = _exec_environ()
    digest = hashlib.sha256()
    for name in names:
        value = before.get(name)
        digest.update(name + b"\0" if value is None else name + b"=" + value + b"\0")
    return b"env %s %s\n" % (digest.hexdigest().encode(), b" ".join(names))


# The line, made in the setup run for the server's greetings.
_greeting_env = b""
_start_tracking()


def autoreload_also_check(*paths):
    """Also restart the server when any of these files changes.

    Call it before initialisation_complete().
    """
    _also_check.extend(os.fspath(p) for p in paths)


def _reopen_syslog():
    """Drops the syslog socket this process inherited (if the server had
    logged); the next message opens its own, with the server's ident and
    facility (openlog without LOG_NDELAY opens nothing yet)."""
    if _logging:
        syslog.closelog()
        syslog.openlog(*_syslog_args)


def _log(priority, message):
    if _logging:
        try:
            syslog.syslog(priority, message)
        except Exception:
            pass


# ----------------------------------------------------------- process titles
#
# What ps shows of the server's processes: not the first caller's
# arguments, which the interpreter's argv area holds (Python has no
# setproctitle): `SCRIPT [server]`, `SCRIPT [monitor]`, `SCRIPT [handler]`
# (an executor-to-be), and an executor, once its request is read, `SCRIPT`.

_argv_area = None  # (address, length) of the argv strings, from the setup run
_titles = {}  # role: its title's bytes, NUL-filled to that length


def _prepare_titles(script):
    """In the setup run: where the argv strings are (arg_start, arg_end:
    fields 48 and 49 of /proc/self/stat, counted after the last ')' of
    the command name), and each role's title, made once so that setting
    one is a single memmove (an executor does it on each call's path). A
    title longer than the area is cut, keeping a NUL at its end: the
    kernel shows the area up to arg_end, and reads on past it into the
    environment (which we leave alone) if its last byte is not a NUL.
    Nothing found (unreadable): no titles."""
    global _argv_area
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        start, end = int(fields[45]), int(fields[46])
    except (OSError, ValueError, IndexError):
        return
    if not 0 < start < end:
        return  # zeros: the kernel would not tell
    length = end - start
    _argv_area = (start, length)
    name = os.fsencode(script)
    for role, suffix in (("server", b" [server]"), ("monitor", b" [monitor]"),
                         ("handler", b" [handler]"), ("executor", b"")):
        title = name + suffix
        if len(title) >= length:
            # `python3 ./script` leaves no room for the role: the
            # script's file name without its directory, as the role says
            # more than the directory does.
            title = os.path.basename(name) + suffix
        _titles[role] = title[:length - 1].ljust(length, b"\0")


def _set_title(role):
    """Best effort: never fails."""
    title = _titles.get(role)
    if title is not None:
        try:
            ctypes.memmove(_argv_area[0], title, _argv_area[1])
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


def _recv_exact(sock, length):
    """Up to length bytes from a blocking socket: fewer at EOF or on an
    error."""
    data = b""
    while len(data) < length:
        try:
            chunk = sock.recv(length - len(data))
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


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
    server quits (negative or None: never). autoreload_modules: restart
    the server when the script or any imported module's file changes;
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
    global _logging, _syslog_args, _closed_offered, _greeting_env
    # What it read so far is what initialisation read.
    _stop_tracking()
    if not isinstance(fast_exit, bool):
        raise ValueError("prefork-interp: fast_exit must be True or False, not %r" % (fast_exit,))
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
    if interrupt_grace is not None and interrupt_grace < 0:
        interrupt_grace = None
    facility = _facility(log_facility)
    reload_files = _reload_files(autoreload_modules, autoreload_extra)
    _prepare_titles(sys.argv[0] if sys.argv and sys.argv[0] else "python3")
    _init_env_changes[:] = _init_env_delta()
    # The greeting's lines between caps and the counters: the server's
    # world, and what its initialisation read of the environment.
    _greeting_env = _world_line() + _env_line()
    # Before gc.freeze(): what arming makes is frozen with the rest.
    fast_exit_off = _arm_fast_exit() if fast_exit else None

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
        _syslog_args = ("prefork-interp %s" % (sys.argv[0] if sys.argv else "python"),
                        syslog.LOG_PID, facility)
        syslog.openlog(*_syslog_args)
        _logging = True
    if fast_exit_off is not None:
        _log(syslog.LOG_INFO, "fast_exit: %s; calls end normally" % fast_exit_off)

    if os.fork():
        os._exit(0)  # the setup run ends; the client is waiting for it

    # The daemon. The script's own code must never run here except in
    # executors: any failure is logged and ends the process.
    try:
        _set_title("server")
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a caller ignoring it breaks waitpid
        server = _Server(setup, max_servers, idle_timeout, max_errors,
                         _ReloadWatch(reload_files, setup["started_ns"]))
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:  # started with fd 0, 1 or 2 closed: it is one of them
            os.close(null)
        # Only a client that said it reads greeting xdata is offered our
        # extensions, those it speaks (chiark-utils' misreads any).
        offered = [cap for cap in OUR_CAPS if cap in setup["client_caps"]]
        if "signals" not in offered and "closed" in offered:
            offered.remove("closed")  # a flag of extended requests only
        _closed_offered = "closed" in offered
        # The monitor first (the first call pays its fork and its first
        # executor's, as it always did), then each call to it; a monitor
        # that dies is forked again at once, so that a spare is ready.
        pending = socket.socket(fileno=setup["call"])
        again = False  # pending was greeted; a dead monitor lost it
        while True:
            if server.control is None:
                control = server.start_monitor(pending)
                if control is not None:
                    break  # the monitor
                if server.control is None and pending is not None:
                    pending.close()  # nobody to serve it: its client sees EOF
                    pending = None
                    again = False
            if pending is not None:
                again = server.hand_over(pending, offered, again)
                if again:
                    continue
                pending.close()
                pending = None
            pending = server.next_call()
    except BaseException as e:
        _log(syslog.LOG_ERR, "server failed: %r" % (e,))
        os._exit(1)
    try:
        executor = _Monitor(control, spare_handlers, interrupt_grace).run()
    except BaseException as e:
        _log(syslog.LOG_ERR, "monitor failed: %r" % (e,))
        os._exit(1)
    # An executor-to-be: it waits for its call, and returns as the call.
    try:
        mask = _executor(*executor)
    except BaseException:
        os._exit(127)
    if mask is not None:
        # The terminal's signals held since the call took its terminal,
        # now that sys.* are the call's: a ^C typed at once is a
        # KeyboardInterrupt raised here, in the script, as at its first
        # line in a direct run; a ^Z stops it.
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


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
    """Accepts and greets calls, and sends each to the one monitor on
    control; counts the calls the monitor has not yet said (one byte 'd'
    each) have ended: `busy`, the greeting's `running`, which max_servers
    limits."""

    def __init__(self, setup, max_servers, idle_timeout, max_errors, reload):
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
        self.control = None  # our end of the socketpair with the monitor
        self.monitor = None  # its pid
        self.monitor_pidfd = None
        self.served = 0
        self.busy = 0  # calls handed to the monitor and not yet ended
        self.idle_since = time.monotonic()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.watch_err, selectors.EVENT_READ, "watcher")
        self.listening = False
        if reload.fd is not None:
            self.selector.register(reload.fd, selectors.EVENT_READ, "reload")

    def close(self):
        """In the monitor: drop everything of the server's."""
        self.selector.close()
        self.listen.close()
        os.close(self.watch_err)
        os.close(self.watch_in)
        if self.control is not None:
            self.control.close()
        if self.monitor_pidfd is not None:
            os.close(self.monitor_pidfd)
        self.reload.close()

    def start_monitor(self, pending):
        """Forks the monitor. In the child, which has closed every fd of
        the server's (and pending), returns its end of control; in the
        server None (with self.control still None if that failed)."""
        try:
            control, theirs = socket.socketpair()
        except OSError as e:
            self.error("cannot make the monitor's control socket: %s" % e)
            return None
        try:
            pid = os.fork()
        except OSError as e:
            control.close()
            theirs.close()
            self.error("cannot fork the monitor: %s" % e)
            return None
        if pid == 0:
            try:
                self.close()
                control.close()
                if pending is not None:
                    pending.close()
                _reopen_syslog()
                theirs.settimeout(None)  # blocking, whatever the script set
                _set_title("monitor")
            except BaseException:
                os._exit(1)
            return theirs
        theirs.close()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            # Unwatchable: it must not serve. On its control's EOF it
            # leaves (its spares too).
            control.close()
            os.waitpid(pid, 0)
            self.error("cannot open a pidfd for the monitor %d: %s" % (pid, e))
            return None
        control.settimeout(None)
        self.control = control
        self.monitor = pid
        self.monitor_pidfd = pidfd
        self.selector.register(control, selectors.EVENT_READ, "control")
        self.selector.register(pidfd, selectors.EVENT_READ, "monitor")
        return None

    def monitor_gone(self):
        """The monitor died (control's EOF, or its pidfd): reap it. Its
        calls are lost (their clients saw EOF)."""
        pid = self.monitor
        self.selector.unregister(self.control)
        self.selector.unregister(self.monitor_pidfd)
        self.control.close()
        os.close(self.monitor_pidfd)
        self.control = self.monitor = self.monitor_pidfd = None
        _, status = os.waitpid(pid, 0)
        self.busy = 0
        self.idle_since = time.monotonic()
        self.error("monitor %d %s" % (pid, _describe_status(status)))

    def read_control(self):
        """Counts the calls the monitor says have ended, 'd' or 'h' each
        (all it has said so far). False if it has died."""
        while True:
            try:
                data = self.control.recv(4096, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                data = b""
            if not data:
                self.monitor_gone()
                return False
            ended = data.count(b"d")
            self.busy = max(0, self.busy - ended - data.count(b"h"))
            # 'h': a call that ended before a request (a listing, or a
            # caller that went elsewhere) keeps no server alive.
            if ended and not self.busy:
                self.idle_since = time.monotonic()

    def hand_over(self, call, offered, again):
        """Greets the caller (unless it was, again) and sends the call to
        the monitor. True if the monitor had died: a new one should get
        the call (once)."""
        if not again:
            xdata = b""
            if offered:
                idle_ms = 0 if self.busy else int((time.monotonic() - self.idle_since) * 1000)
                xdata = (b"pfi-caps 1\ncaps %s\n%sserved %d\nrunning %d\nidle %d\n"
                         % (",".join(offered).encode(), _greeting_env, self.served, self.busy,
                            idle_ms))
            try:
                _send_all(call, b"PFI\n" + struct.pack(">I", len(xdata)) + xdata)
            except (_Hangup, OSError) as e:
                _log(syslog.LOG_INFO, "caller went away before its greeting: %r" % (e,))
                return False
        try:
            socket.send_fds(self.control, [b"\0"], [call.fileno()], socket.MSG_NOSIGNAL)
        except OSError:
            self.monitor_gone()
            return not again
        self.served += 1
        self.busy += 1
        return False

    def quit(self, why):
        _log(syslog.LOG_INFO, "server quitting: %s" % why)
        self.record_quit(why)
        os._exit(0)

    def record_quit(self, why):
        """Appends "quit SECONDS REASON" to the identity's lock file
        (beside the socket: BASE/s<ident>, BASE/l<ident>), for --list to
        show as the reason of the next server's start. Best effort: a lock
        file removed (--kill) is skipped."""
        try:
            path = os.fsencode(self.listen.getsockname())
            folder, name = os.path.split(path)
            if not name.startswith(b"s") or len(name) < 2:
                return
            fd = os.open(os.path.join(folder, b"l" + name[1:]),
                         os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (OSError, TypeError):
            return
        try:
            os.write(fd, b"quit %d %s\n" % (int(time.time()), why.replace("\n", " ").encode(
                errors="surrogateescape")))
        except OSError:
            pass
        finally:
            os.close(fd)

    def error(self, message):
        _log(syslog.LOG_ERR, message)
        self.errors += 1
        if self.errors > self.max_errors:
            self.quit("more than %d errors" % self.max_errors)

    def set_listening(self, on):
        if on != self.listening:
            if on:
                self.selector.register(self.listen, selectors.EVENT_READ, "listen")
            else:
                self.selector.unregister(self.listen)
            self.listening = on

    def next_call(self):
        """Waits for the next call to serve; handles everything else.
        None if the monitor has died (the caller forks another)."""
        while True:
            self.set_listening(self.max_servers is None or self.busy < self.max_servers)
            timeout = None
            if self.idle_timeout is not None and not self.busy:
                timeout = self.idle_timeout - (time.monotonic() - self.idle_since)
                if timeout <= 0:
                    self.quit("idle timeout")
            events = self.selector.select(timeout)
            # The monitor's news before any accept: once a client has its
            # status (sent after the 'd'), the next greeting counts it out.
            events.sort(key=lambda event: event[0].data not in ("control", "monitor"))
            for key, _ in events:
                what = key.data
                if what in ("control", "monitor"):
                    if self.control is None:
                        continue  # both said it
                    if what == "monitor":
                        self.monitor_gone()
                        return None
                    if not self.read_control():
                        return None
                elif what == "watcher":
                    self.check_watcher()
                elif what == "reload":
                    self.reload.drain()
                elif what == "listen":
                    if not self.listening:
                        continue  # busy since the poll
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
                    changed = self.reload.changed()
                    if changed is not None:
                        # Dropping the call makes its client start afresh.
                        self.quit("%s changed" % changed)
                    conn.setblocking(True)
                    return conn

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


# A call's phases in the monitor.
_WAITING = "waiting"  # handed to its executor, no 'r' yet
_RUNNING = "running"  # got 'r': the script runs
_REPORTED = "reported"  # its keeper said how the script ended ('x'): over
_ABANDONED = "abandoned"  # the client went away: SIGINTed, to be reaped


class _Spare:
    """An executor-to-be, idle: waits for a call on handover (None once
    the monitor has closed it, or found it dead)."""

    __slots__ = ("pid", "pidfd", "handover", "from_executor")

    def __init__(self, pid, pidfd, handover, from_executor):
        self.pid = pid
        self.pidfd = pidfd
        self.handover = handover
        self.from_executor = from_executor


class _Call:
    """A call in flight: its executor (pid, pidfd; from_executor until
    its 'r', None after it or when it failed), its call socket. On a
    pseudo-terminal of its own the executor is the session's keeper and
    the script its child (script: its pid, which leads the group the
    call's signals go to), and from_executor, after the 'r', is
    from_keeper (None at its EOF, or once it has said 'x': the call is
    then over, _REPORTED, and the keeper to be reaped)."""

    __slots__ = ("pid", "pidfd", "conn", "from_executor", "phase", "extended", "script",
                 "from_keeper", "status", "frames", "abandoned_at", "killed")

    def __init__(self, spare, conn):
        self.pid = spare.pid
        self.pidfd = spare.pidfd
        self.from_executor = spare.from_executor
        self.conn = conn
        self.phase = _WAITING
        self.extended = False
        self.script = None
        self.from_keeper = None
        self.status = None  # the script's wait status, from the keeper's 'x'
        self.frames = b""  # the client's, read so far
        self.abandoned_at = None  # time.monotonic() of its SIGINT (SIGHUP)
        self.killed = False  # SIGKILLed after the grace


def _kill_group(pid, sig=signal.SIGINT):
    """Signals a process group: an executor's, or on a pseudo-terminal
    of its own the script's (its pgid is its pid once it has read its
    request; while it is unreaped, no other group can have that id; the
    keeper reaps the script only after its own last signal to the
    group, and only then tells us its status)."""
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


class _Monitor:
    """The server's one monitor: keeps `spare` executors-to-be idle,
    hands each call the server sends on control to one, and watches every
    call in flight in one poll loop until its end, which it tells the
    server ('d') and then the client (the status). Never runs the
    script's code; leaves with os._exit."""

    def __init__(self, control, spare, grace):
        self.control = control  # None once the server has gone
        self.spare = spare
        self.grace = grace  # interrupt_grace: None, never SIGKILL
        self.idle = []  # _Spare, oldest first
        self.calls = {}  # executor pid -> _Call
        self.owed = b""  # 'd' and 'h' bytes the server has not yet been sent
        self.pid = os.getpid()
        # Executors are groups of their own and signals go to those, but
        # nothing sent to us by mistake may hurt us; the executors get
        # the server's dispositions back.
        self.saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in FORWARDED}
        # The server's limits, read once here: every executor forked from
        # now on compares a caller's with them at no cost.
        global _own_limits
        _own_limits = _read_own_limits()

    def run(self):
        """Serves until the server has gone and every call has ended;
        returns only in a new executor-to-be, its _executor arguments."""
        while True:
            # Missing spares are forked at once, while the call that took
            # one runs. (The Rust and Perl monitors wait until the calls in
            # flight have ended, or 5 ms; here the fork, about 1 ms of
            # copying page tables and of our own copy-on-write, takes
            # longer than the next client's exec, so waiting made back-to-
            # back calls slower: 3.31-3.36 to 3.44-3.50 ms a call ending
            # with os._exit, and 1.45 to 2.48 ms to the script's code on
            # Python 3.13, in ./bench.)
            if self.control is not None:
                while sum(1 for s in self.idle if s.handover is not None) < self.spare:
                    spare, child = self.fork_executor()
                    if child is not None:
                        return child
                    if spare is None:
                        break  # logged; another round tries again
                    self.idle.append(spare)
            elif not self.calls and not self.idle:
                os._exit(0)
            child = self.serve_round(self.kill_overdue())
            if child is not None:
                return child

    def kill_overdue(self):
        """SIGKILLs the groups of abandoned calls whose scripts still run
        after the grace; returns the seconds until the next one's grace is
        over (None: no deadline)."""
        if self.grace is None:
            return None
        now = time.monotonic()
        next_left = None
        for call in self.calls.values():
            if call.phase != _ABANDONED or call.killed:
                continue
            left = call.abandoned_at + self.grace - now
            if left <= 0:
                _kill_group(call.script or call.pid, signal.SIGKILL)
                call.killed = True
                _log(syslog.LOG_ERR, "executor %d still ran %g s after its client went away "
                     "and its SIGINT: killed" % (call.pid, self.grace))
            elif next_left is None or left < next_left:
                next_left = left
        return next_left

    def serve_round(self, timeout=None):
        """One poll, level-triggered, and what it found, in this order:
        executors' 'r', keepers' 't' and 'x', executors gone, clients'
        frames or EOF, the server's calls."""
        poll = select.poll()
        where = {}

        def watch(fd, order, thing, mask=select.POLLIN):
            poll.register(fd, mask)
            where[fd] = (order, thing)

        if self.control is not None:
            watch(self.control.fileno(), 4, None,
                  select.POLLIN | (select.POLLOUT if self.owed else 0))
        for spare in self.idle:
            watch(spare.pidfd, 2, spare)
        for call in self.calls.values():
            watch(call.pidfd, 2, call)
            if call.phase == _WAITING and call.from_executor is not None:
                watch(call.from_executor.fileno(), 0, call)
            elif call.phase == _RUNNING:
                watch(call.conn.fileno(), 3, call)
            if call.from_keeper is not None:
                watch(call.from_keeper.fileno(), 1, call)
        # poll's timeout is in ms, rounded up: it must not wake just
        # before the time.
        wait_ms = None if timeout is None else max(0, int(-(-timeout * 1000 // 1)))
        events = sorted((where[fd] + (mask,) for fd, mask in poll.poll(wait_ms)),
                        key=lambda event: event[0])
        for order, thing, mask in events:
            if order == 0:
                if thing.from_executor is not None and thing.pid in self.calls:
                    self.read_r(thing)
            elif order == 1:
                if thing.from_keeper is not None and thing.pid in self.calls:
                    self.hear_keeper(thing)
            elif order == 2:
                if isinstance(thing, _Spare):
                    self.spare_gone(thing)
                else:
                    self.call_gone(thing)
            elif order == 3:
                if thing.phase == _RUNNING and thing.pid in self.calls:
                    self.read_client(thing)
            else:
                if mask & select.POLLOUT:
                    self.flush()
                if mask & ~select.POLLOUT and self.control is not None:
                    child = self.take_call()
                    if child is not None:
                        return child
        return None

    def fork_executor(self, *close):
        """Forks an executor-to-be. In the monitor: (its _Spare, None), or
        (None, None) if that failed (logged). In the child, which has
        closed every fd of ours (and those in close): (None, its
        _executor arguments)."""
        made = []
        try:
            handover, handover_theirs = socket.socketpair()
            made += [handover, handover_theirs]
            from_executor, from_executor_theirs = socket.socketpair()
            made += [from_executor, from_executor_theirs]
            for sock in made:
                sock.settimeout(None)  # blocking, whatever the script set
            pid = os.fork()
        except OSError as e:
            for sock in made:
                sock.close()
            _log(syslog.LOG_ERR, "cannot fork an executor: %s" % e)
            return None, None
        if pid == 0:
            try:
                # Before anything else: nothing of the monitor's stays
                # open here (a call socket kept by a spare would hide
                # its client's EOF).
                if self.control is not None:
                    self.control.close()
                for spare in self.idle:
                    if spare.handover is not None:
                        spare.handover.close()
                    spare.from_executor.close()
                    os.close(spare.pidfd)
                for call in self.calls.values():
                    call.conn.close()
                    if call.from_executor is not None:
                        call.from_executor.close()
                    if call.from_keeper is not None:
                        call.from_keeper.close()
                    os.close(call.pidfd)
                for sock in close + (handover, from_executor):
                    sock.close()
                _reopen_syslog()
                _set_title("handler")
            except BaseException:
                os._exit(127)
            return None, (handover_theirs, from_executor_theirs, self.saved, self.pid)
        handover_theirs.close()
        from_executor_theirs.close()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            # Unwatchable: it must not serve.
            _log(syslog.LOG_ERR, "cannot open a pidfd for executor %d: %s" % (pid, e))
            handover.close()
            from_executor.close()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, None
        return _Spare(pid, pidfd, handover, from_executor), None

    def take_call(self):
        """control is readable: a call (0x00 with its socket), or the
        server's EOF. Returns a new executor's arguments in the child
        forked if no spare was idle, else None."""
        try:
            data, fds, _, _ = socket.recv_fds(self.control, 1, 1, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data, fds = b"", []
        if not data:
            for fd in fds:
                os.close(fd)
            self.server_gone()
            return None
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            _log(syslog.LOG_ERR, "a call came without its socket")
            self.done(b"h")
            return None
        conn = socket.socket(fileno=fds[0])
        conn.settimeout(None)  # blocking, as the executor reads it
        forked = False
        while True:
            spare = next((s for s in self.idle if s.handover is not None), None)
            if spare is not None:
                self.idle.remove(spare)
            elif not forked:
                forked = True
                spare, child = self.fork_executor(conn)
                if child is not None:
                    return child
            if spare is None:
                _log(syslog.LOG_ERR, "no executor to take a call")
                conn.close()
                self.done(b"h")
                return None
            try:
                socket.send_fds(spare.handover, [b"\0"], [conn.fileno()], socket.MSG_NOSIGNAL)
            except OSError:
                # It died idle: its pidfd says so, and it is reaped then.
                spare.handover.close()
                spare.handover = None
                self.idle.append(spare)
                continue
            spare.handover.close()
            self.calls[spare.pid] = _Call(spare, conn)
            return None

    def server_gone(self):
        """control's EOF: serve the calls in flight to their end; the
        spares leave on their handover's EOF (and are reaped)."""
        self.control.close()
        self.control = None
        self.owed = b""
        for spare in self.idle:
            if spare.handover is not None:
                spare.handover.close()
                spare.handover = None

    def done(self, how=b"d"):
        """A call handed to us has ended: tell the server ('d', or 'h'
        if its script never ran)."""
        self.owed += how
        self.flush()

    def flush(self):
        if self.control is None:
            self.owed = b""
            return
        try:
            sent = self.control.send(self.owed, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            self.owed = self.owed[sent:]
        except (BlockingIOError, InterruptedError):
            pass  # later, when control is writable
        except OSError:
            self.owed = b""  # the server has gone; its EOF follows

    def read_r(self, call):
        """from_executor has something: 'r' and the request byte (the
        call runs; on a pseudo-terminal of its own, the script's pid
        follows, and from then on the keeper's 't' and 'x'), or EOF (the
        executor could not take the call; it logged why). Safe to block:
        the executor wrote it at once, or is dead."""
        sock = call.from_executor
        call.from_executor = None
        message = _recv_exact(sock, 2)
        if len(message) == 2 and message[:1] == b"r":
            if message[1] & _REQUEST_ANY_PTY:
                script = _recv_exact(sock, 4)
                if len(script) == 4:
                    call.phase = _RUNNING
                    call.extended = bool(message[1] & REQUEST_EXTENDED)
                    (call.script,) = struct.unpack(">I", script)
                    call.from_keeper = sock
                    return
            else:
                call.phase = _RUNNING
                call.extended = bool(message[1] & REQUEST_EXTENDED)
        sock.close()

    def hear_keeper(self, call):
        """The keeper's socket is readable: one message ('t' and a signal:
        the script has stopped, which the client is told ('T') so that
        it stops too; 'x' and the script's wait status: the call is over
        at once, 'd' and the client's 'X' without waiting for the
        keeper's exit, which is reaped quietly), or EOF, or garbage: it
        has nothing more to say. Safe to block: the keeper writes each
        at once, or is dead."""
        message = _recv_exact(call.from_keeper, 5)
        kind = message[:1]
        if len(message) == 5 and kind in (b"t", b"x"):
            (value,) = struct.unpack(">I", message[1:])
            if kind == b"x":
                call.status = value
                if call.phase == _RUNNING:
                    # It has nothing more to say: it exits.
                    call.from_keeper.close()
                    call.from_keeper = None
                    call.phase = _REPORTED
                    self.done()
                    self.send_status(call, value)
            elif call.phase == _RUNNING:
                try:
                    call.conn.send(b"T" + message[1:], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                except OSError:
                    pass  # the client has gone: its EOF says so
            return
        call.from_keeper.close()
        call.from_keeper = None

    def spare_gone(self, spare):
        self.idle.remove(spare)
        if spare.handover is not None:
            spare.handover.close()
        spare.from_executor.close()
        os.close(spare.pidfd)
        _, status = os.waitpid(spare.pid, 0)
        # Once the server has gone we closed its handover: it leaves
        # quietly (or on SIGINT).
        if self.control is not None or not (
                status == 0 or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT)):
            _log(syslog.LOG_ERR, "idle executor %d %s" % (spare.pid, _describe_status(status)))

    def call_gone(self, call):
        """A call's executor has gone: its end."""
        if call.phase == _WAITING and call.from_executor is not None:
            self.read_r(call)  # it may have said 'r' after poll looked
        del self.calls[call.pid]
        os.close(call.pidfd)
        if call.phase != _ABANDONED:
            # What it left behind in its group first: a zombie's status
            # cannot change, and its group id cannot be reused before we
            # reap it. (A keeper has done so for the script's group.)
            _kill_group(call.pid)
        _, status = os.waitpid(call.pid, 0)
        if call.phase == _REPORTED:
            call.conn.close()  # its client has had 'd' and its status
            return
        # A keeper has exited: all it said is there to read. The status
        # is the script's, which it reaped.
        while call.from_keeper is not None:
            self.hear_keeper(call)
        if call.status is not None:
            status = call.status
        elif call.script is not None:
            # The keeper was killed before the script ended: nothing
            # watches the script now. It goes too.
            _log(syslog.LOG_ERR, "keeper %d of script %d %s: script killed"
                 % (call.pid, call.script, _describe_status(status)))
            _kill_group(call.script, signal.SIGKILL)
        if call.phase == _ABANDONED:
            _log(syslog.LOG_INFO, "client went away; script interrupted, it %s"
                 % _describe_status(status))
            self.done()
        else:
            if call.phase == _RUNNING:
                self.done()
                self.send_status(call, status)
            else:
                if status:
                    _log(syslog.LOG_ERR, "executor %d failed before its call: it %s"
                         % (call.pid, _describe_status(status)))
                # Its client sees EOF. 'h': no request came (a listing;
                # a caller that went elsewhere).
                self.done(b"h")
        call.conn.close()

    def send_status(self, call, status):
        """A call's end to its client, once the server has its 'd' (a
        greeting after the client has its status counts this call out)."""
        status &= 0xFFFFFFFF
        if call.extended:
            message = b"X" + struct.pack(">I", status)
        else:
            message = struct.pack(">I", status)
        try:
            call.conn.send(message, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError:
            pass  # the client has gone

    def read_client(self, call):
        """A running call's socket is readable. v1: the client has gone
        (it has nothing more to say). Extended: signal frames ('S' and a
        forwardable signal: to the executor's group, or the script's on
        a pseudo-terminal of its own), on a pseudo-terminal of its own
        'F' (the script to its terminal's foreground, 1, or background,
        0), passed to the keeper as 'f', never a signal (other kinds are
        ignored), or EOF: the client has gone."""
        group = call.script or call.pid
        gone = True
        if call.extended:
            try:
                data = call.conn.recv(4096, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if data:
                gone = False
                frames = call.frames + data
                while len(frames) >= 5:
                    kind, value = struct.unpack(">cI", frames[:5])
                    frames = frames[5:]
                    if kind == b"S" and value in FORWARDED:
                        _kill_group(group, value)
                    elif kind == b"F" and call.from_keeper is not None:
                        # For the keeper, which moves the script's group
                        # (it reads each at once: this never fills its
                        # socket).
                        try:
                            call.from_keeper.send(b"f" + struct.pack(">I", value),
                                                  socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                        except OSError:
                            pass  # it has gone: its EOF says so
                call.frames = frames
        if gone:
            if call.script is None:
                _kill_group(group)
            else:
                # Its terminal has gone: as a direct run whose terminal
                # goes away, SIGHUP (and SIGCONT, should it be stopped).
                _kill_group(group, signal.SIGHUP)
                _kill_group(group, signal.SIGCONT)
            call.phase = _ABANDONED
            call.abandoned_at = time.monotonic()


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
    """Reads a request: its byte (0, or 0x01 with any of the flags:
    0x02 context, 0x04, 0x08, 0x10 fd 0, 1, 2 a pseudo-terminal, 0x20
    with one of those: the script starts in its terminal's background),
    with 0x80 the second flags byte (the fds the caller has closed: 0x01,
    0x02, 0x04; 0 if none), fd 0, 1, 2, the payload, with context the
    caller's directory and umask, and with 0x40 the caller's limits (a
    tuple of (resource, soft, hard) entries, the nice value,
    oom_score_adj)."""
    byte = _read_exact(conn, 1)[0]
    if byte not in _REQUEST_BYTES or (byte & REQUEST_SECOND and not _closed_offered):
        raise ValueError("request starts with byte %#04x, expected 0x00, or 0x01 with flags "
                         "0x02, 0x04, 0x08, 0x10, 0x40, %s0x20 with one of 0x04, 0x08, 0x10"
                         % (byte, "0x80, and " if _closed_offered else "and "))
    closed = 0
    if byte & REQUEST_SECOND:
        closed = _read_exact(conn, 1)[0]
        if closed & ~_REQUEST_ANY_CLOSED:
            raise ValueError("second request byte %#04x, expected flags 0x01, 0x02, 0x04"
                             % closed)
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
    if byte & REQUEST_CONTEXT:
        _, received, _, _ = socket.recv_fds(conn, 1, 1, socket.MSG_CMSG_CLOEXEC)
        if len(received) != 1:
            raise ValueError("no directory in the context message")
        (umask,) = struct.unpack(">I", _read_exact(conn, 4))
        context = (received[0], umask)
    limits = None
    if byte & REQUEST_LIMITS:
        count = _read_exact(conn, 1)[0]
        body = _read_exact(conn, count * 17 + 8)
        entries = [struct.unpack_from(">BQQ", body, at) for at in range(0, count * 17, 17)]
        nice, oom = struct.unpack_from(">ii", body, count * 17)
        limits = (entries, nice, oom)
    return byte, closed, fds, env, args, context, limits


def _rlim(value):
    """A limit on the wire (u64, 2**64-1 for none) as the resource module
    has it (RLIM_INFINITY is -1 there, rlim_t read as signed)."""
    if value == RLIM_INFINITY_WIRE:
        return resource.RLIM_INFINITY
    return value - 2**64 if value >= 2**63 and resource.RLIM_INFINITY < 0 else value


_own_limits = None  # the server's: (getrlimit by number, nice, oom_score_adj)


def _read_own_limits():
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


def _take_limits(limits):
    """Takes on the caller's resource limits, nice value and oom_score_adj
    (each only if it differs from ours); one the kernel refuses is said in
    one line on fd 2 (the caller's stderr by now) and the call ends, 127."""
    entries, nice, oom = limits
    own_rlimits, own_nice, own_oom = _own_limits or _read_own_limits()
    why = None
    for number, soft, hard in entries:
        if number >= len(RESOURCES):
            continue  # a resource we have no name for
        wanted = (_rlim(soft), _rlim(hard))
        try:
            if own_rlimits.get(number) != wanted:
                resource.setrlimit(number, wanted)
        except (OSError, ValueError, OverflowError) as e:
            shown = ["unlimited" if v == RLIM_INFINITY_WIRE else str(v) for v in (soft, hard)]
            why = ("cannot give the script the caller's RLIMIT_%s (soft %s, hard %s): %s (a server "
                   "started under lower limits cannot raise them: -f starts a fresh one)"
                   % (RESOURCES[number], shown[0], shown[1], getattr(e, "strerror", None) or e))
            break
    if why is None:
        try:
            if own_nice != nice:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as e:
            why = "cannot give the script the caller's nice value %d: %s" % (nice, e.strerror or e)
    if why is None and oom != OOM_SCORE_UNKNOWN:
        try:
            if own_oom != oom:
                fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, b"%d" % oom)
                finally:
                    os.close(fd)
        except (OSError, ValueError) as e:
            why = "cannot give the script the caller's oom_score_adj %d: %s" % (
                oom, getattr(e, "strerror", None) or e)
    if why is not None:
        try:
            os.write(2, ("prefork-interp: %s\n" % why).encode())
        except OSError:
            pass
        os._exit(127)


def _take_terminal(which, background, monitor, socks, fds, context):
    """On a call with a pseudo-terminal of its own (fds[which]): starts a
    session with that terminal as its controlling terminal and forks the
    script's process, which leads a group of its own, the terminal's
    foreground group (unless background); returns only in that process.
    The executor stays, as a shell would, the session's leader: its
    keeper (_keep), with none of the call's fds but that terminal."""
    terminal = fds[which]
    try:
        os.setsid()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
    except OSError as e:
        _log(syslog.LOG_ERR, "call failed: cannot take its terminal: %s" % (e.strerror or e))
        os._exit(127)
    keeper = os.getpid()
    try:
        script = os.fork()
    except OSError as e:
        _log(syslog.LOG_ERR, "call failed: cannot fork the script's process: %s"
             % (e.strerror or e))
        os._exit(127)
    if script:
        for sock in socks:
            sock.close()
        for fd in fds[:which] + fds[which + 1:] + ([context[0]] if context is not None else []):
            os.close(fd)
        _keep(script, monitor, terminal)
    # Our keeper gone (the monitor killed): the call ends.
    _LIBC.prctl(1, signal.SIGINT, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != keeper:
        os._exit(0)  # it died before we asked
    try:
        os.setpgid(0, 0)
        if not background:
            # From the background: SIGTTOU is blocked, so it is allowed.
            os.tcsetpgrp(terminal, os.getpid())
    except OSError as e:
        _log(syslog.LOG_ERR, "call failed: cannot take its terminal: %s" % (e.strerror or e))
        os._exit(127)


def _signalfd(sig):
    """A non-blocking, close-on-exec signalfd for sig (blocked): the os
    and signal modules have none."""
    mask = ctypes.create_string_buffer(128)  # a sigset_t (128 bytes in glibc and musl)
    _LIBC.sigemptyset(mask)
    _LIBC.sigaddset(mask, sig)
    fd = _LIBC.signalfd(-1, mask, os.O_NONBLOCK | os.O_CLOEXEC)  # SFD_NONBLOCK, SFD_CLOEXEC
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _keep(script, monitor, terminal):
    """The session's keeper: tells the monitor when the script stops
    ('t' and the signal) and how it ended ('x' and its wait status, with
    no other fd left open: _say_end), then exits; when the monitor says
    so ('f', from the client's 'F': 1, the client is in its terminal's
    foreground; 0, its background), makes the script's group the
    terminal's foreground group or its own, and continues the script.
    What the script left in its group gets SIGINT while the script is a
    zombie (its group id cannot be reused), as the monitor does for an
    executor. A hang-up of the terminal, which the kernel signals to the
    session's leader, is the monitor's to pass on (it sees the client
    go). Runs none of the script's code: its signal handlers are off."""
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # The monitor's death (PR_SET_PDEATHSIG) must still end us, and
        # with us the script (its own PR_SET_PDEATHSIG).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        # The script's stops and exit, and the monitor's 'f', in one poll.
        # SIGCHLD has been blocked since before the fork (_executor), so
        # each change of the script leaves it pending, and a signalfd
        # readable, whenever it comes; each round looks at the script
        # (waitid, WNOHANG) after reading the signalfd empty, so nothing
        # is missed. A signalfd (through ctypes: Python has none) rather
        # than signal.set_wakeup_fd, equally race-free (its C handler
        # writes at delivery) but with more parts: a Python handler, the
        # signal unblocked, EINTR retries, a wakeup socket; and rather
        # than sigtimedwait, which cannot wait for the socket too (only
        # poll it, in turns, with a timeout). As the Rust keeper does.
        children = _signalfd(signal.SIGCHLD)
        poll = select.poll()
        poll.register(children, select.POLLIN)
        poll.register(monitor, select.POLLIN)
        while True:
            # Without reaping (WNOWAIT): the script's group id stays its
            # own until we have signalled what is left in it.
            while True:
                info = os.waitid(os.P_PID, script,
                                 os.WSTOPPED | os.WEXITED | os.WNOWAIT | os.WNOHANG)
                if info is None:
                    break
                if info.si_code != os.CLD_STOPPED:
                    _kill_group(script)
                    _, status = os.waitpid(script, 0)
                    _say_end(monitor, status)
                # Consume this stop's report, so the next wait sees what
                # comes after it (without WEXITED, which would reap).
                os.waitid(os.P_PID, script, os.WSTOPPED | os.WNOHANG)
                try:
                    _send_all(monitor, b"t" + struct.pack(">I", info.si_status))
                except (_Hangup, OSError):
                    pass
            ready = dict(poll.poll())
            try:
                while os.read(children, 4096):
                    pass
            except BlockingIOError:
                pass
            if ready.get(monitor.fileno()):
                message = _recv_exact(monitor, 5)
                if len(message) < 5:
                    poll.unregister(monitor)  # the monitor has gone
                elif message[:1] == b"f":
                    (value,) = struct.unpack(">I", message[1:])
                    # SIGTTOU is blocked: allowed from the background.
                    try:
                        os.tcsetpgrp(terminal, script if value == 1 else os.getpgrp())
                    except OSError:
                        pass
                    _kill_group(script, signal.SIGCONT)
    except BaseException as e:
        _log(syslog.LOG_ERR, "keeper of %d: %r" % (script, e))
        os._exit(127)


def _say_end(monitor, status):
    """The keeper's last words: 'x' and the script's wait status, on the
    monitor's socket, once every other fd it has is closed (the
    terminal's copy first of all: the client ends at its master's EIO,
    when the last copy of the slave is closed, and it need not wait for
    our exit too); then it exits. The monitor's socket stays, as fd 0."""
    message = b"x" + struct.pack(">I", status & 0xFFFFFFFF)
    try:
        try:
            os.dup2(monitor.fileno(), 0)
        except OSError:
            _send_all(monitor, message)  # with our copy of the terminal
        else:
            # One close_range on Python 3.10 or later; bounded by the fd
            # limit for a Python that closes one fd at a time.
            os.closerange(3, max(os.sysconf("SC_OPEN_MAX"), 1024))
            # Five bytes: one write. (Only a monitor gone could make it
            # fail, or SIGPIPE us, and then nobody is listening.)
            os.write(0, message)
    except (_Hangup, OSError):
        pass
    os._exit(0)


def _executor(handover, monitor, saved, monitor_pid):
    """Forked by the monitor before the call (a spare, idle until then),
    with nothing of the monitor's open. Gets back the server's signal
    dispositions (SIGINT: Python's own handler, KeyboardInterrupt, even
    if the call that started the server ignored it), waits for the call
    socket on handover, reads the request itself, leads a process group
    of its own, sends an extended call's 'P' with its own pid (before
    any per-call code), tells the monitor 'r', and takes on the call.

    On a call with a pseudo-terminal of its own it leads a session
    instead, with that terminal as its controlling terminal, and forks
    the script's process, which leads the terminal's foreground group
    (with 0x20, a group in its background), sends 'P' and 'r' (with its
    pid) and takes on the call; the executor stays as the session's
    keeper (_keep). Why two processes: a process group none of whose
    members has a parent in its session but outside the group is
    orphaned, and the kernel discards the stop signals a terminal sends
    such a group: a script leading its session itself (its parent, the
    monitor, is elsewhere) would ignore ^Z.

    With a limits message, it (the script's process on a pseudo-terminal)
    takes on the caller's limits once fds 0, 1, 2 are the caller's
    (_take_limits).

    Returns the signal mask to restore once back in the script (on a
    pseudo-terminal: the terminal's signals and SIGCHLD are held until
    then), or None."""
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
        byte, closed, fds, env, args, context, limits = _read_request(conn)
    except _Hangup:
        _log(syslog.LOG_INFO, "client went away before sending its call")
        os._exit(0)
    except Exception as e:
        _log(syslog.LOG_ERR, "call failed: %r" % (e,))
        os._exit(1)
    _set_title("executor")
    # The monitor signals our group (its id is our pid): us, and whatever
    # the script starts. (Not made while idle: setsid refuses a group
    # leader.)
    mask = None
    ready = b"r" + bytes([byte])
    if not byte & _REQUEST_ANY_PTY:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
    else:
        # The terminal's signals (^C, ^Z, a resize) may come as soon as
        # the script's group is its foreground: they wait until the
        # monitor knows the call runs, so that it reports a stop and
        # sees a death as the call's.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _PTY_CALL_BLOCKED)
        _take_terminal(next(i for i, flag in enumerate(REQUEST_PTY) if byte & flag),
                       byte & REQUEST_PTY_BACKGROUND, monitor, (conn, handover), fds, context)
        ready += struct.pack(">I", os.getpid())
    if byte & REQUEST_EXTENDED:
        try:
            _send_all(conn, b"P" + struct.pack(">I", os.getpid()))
        except (_Hangup, OSError):
            _log(syslog.LOG_INFO, "client went away before its call started")
            os._exit(0)
    try:
        _send_all(monitor, ready)
    except (_Hangup, OSError):
        os._exit(127)  # nobody could report our status without the monitor

    if context is not None:
        # The caller's directory and umask (capability "context").
        cwd, umask = context
        os.fchdir(cwd)
        os.close(cwd)
        os.umask(umask)
    for target, fd in enumerate(fds):
        # The server's 0, 1, 2 are /dev/null, so received fds are above
        # them; still, never close what was just put in place.
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    for target, flag in enumerate(REQUEST_CLOSED):
        if closed & flag:
            # Closed in the caller (capability "closed"): the client sent
            # /dev/null in its place. The number is free again, as in a
            # direct run: the script's next open() may take it.
            os.close(target)
    if limits is not None:
        # What a direct run would inherit beyond fds (capability "limits").
        _take_limits(limits)
    conn.close()
    handover.close()
    monitor.close()
    if _logging:
        syslog.closelog()  # the script finds syslog unopened, as in a direct run

    os.environb.clear()
    environ = {}
    for entry in env:
        name, eq, value = entry.partition(b"=")
        # A name holding '=' (or empty) cannot be set; only a hand-made
        # environment has one.
        if eq and name:
            os.environb[name] = value
            environ[name] = value
    # Then what initialisation did to its own, as in a direct run. (The
    # std streams below follow the caller's variables only: Python reads
    # PYTHONIOENCODING and the like at start-up, before any script code.)
    for name, value in _init_env_changes:
        if value is None:
            os.environb.pop(name, None)
        else:
            os.environb[name] = value
    sys.argv[1:] = [os.fsdecode(a) for a in args]

    # A closed fd has no stream: None, as CPython's start-up makes it (and
    # as print() and the exit's flush expect).
    old = (sys.stdin, sys.stdout, sys.stderr)
    new = [None if closed & REQUEST_CLOSED[fd] else _std_stream(fd, old[fd], fd != 0, environ)
           for fd in range(3)]
    sys.stdin = sys.__stdin__ = new[0]
    sys.stdout = sys.__stdout__ = new[1]
    sys.stderr = sys.__stderr__ = new[2]
    return mask


# --------------------------------------------------------------- fast exit
#
# fast_exit=True (Python 3.12 or later). CPython ends a run of a script in
# this order: the __main__ module's code returns, or an exception leaves it
# (SystemExit: its code is the exit status, a non-integer printed first);
# then Py_FinalizeEx: threading._shutdown() (joins non-daemon threads),
# the atexit handlers, sys.stdout and sys.stderr flushed (status 120 if
# that fails), and then the finalisation proper: a last collection,
# finalisers of what is still alive, every module torn down. In an
# executor that last part writes to nearly every object the server made,
# so copy-on-write copies the server's memory page by page: most of what
# a warm call costs. Python does not promise it (__del__ of objects alive
# at exit may not run), so this skips it and nothing else:
#
# - sys.monitoring (a tool id of our own) records how the __main__ code
#   ended: PY_RETURN as a local event of that one code object (status 0);
#   PY_UNWIND, which can only be a global event (3.12 to 3.14), filtered on
#   that code object (SystemExit: the status CPython computes; any other
#   exception: unknown). Instrumenting the code object while it runs (it
#   is waiting in initialisation_complete) reaches its running frame.
# - CPython's own Py_FinalizeEx calls threading._shutdown() first (the
#   module is imported to be sure of it): ours calls the original, then,
#   with a known status, runs the atexit handlers, flushes the two
#   streams and leaves with os._exit(status). So everything before the
#   finalisation is CPython's own doing, in its own order and context
#   (the __main__ frame gone, __file__ removed, a SystemExit message
#   printed), and the steps are called from C with none of our frames
#   on the stack, so that even error reports are CPython's.
#
# Whenever the end is anything else (another exception, -i or
# PYTHONINSPECT, other threads still running, a flush that fails, a
# SystemExit subclass), ours returns and CPython ends the call as always.

# The __main__ module's code object, once armed.
_fast_code = None
# How that code ended in this process: an exit status, or None (not
# ended, or in a way CPython must finish).
_fast_status = None


def _fast_on_return(code, offset, value):
    global _fast_status
    if code is _fast_code:
        _fast_status = 0


def _fast_on_unwind(code, offset, exc):
    # Called for every frame an exception leaves, in any code: cheap.
    global _fast_status
    if code is _fast_code:
        _fast_status = _system_exit_status(exc)


def _system_exit_status(exc):
    """The exit status CPython makes of an exception leaving __main__
    (pythonrun.c, _Py_HandleSystemExit), or None where we leave it to
    CPython. Keeps no reference to anything of it."""
    if type(exc) is not SystemExit:
        return None  # a traceback (1), KeyboardInterrupt (SIGINT)...
    code = exc.code
    if code is None:
        return 0
    if issubclass(type(code), int):
        # PyLong_AsLongLong, truncated to an int, then exit(): the low
        # 8 bits. Beyond a long long CPython's answer has changed
        # between versions.
        value = int.__int__(code)
        if -(1 << 63) <= value < (1 << 63):
            return value & 0xFF
        return None
    return 1  # CPython prints it on stderr, before Py_FinalizeEx


def _fast_steps(shutdown):
    """What Py_FinalizeEx's call of threading._shutdown() does once armed:
    a generator of the steps, each called by C code (a map in a deque),
    so that no frame of ours is on the stack while the script's code
    runs: an exception is reported exactly as CPython reports it (an
    unraisable one with no traceback of its own gets the current frame's,
    which is none here as it is none there). The original first; then,
    if the main code's end is known, the atexit handlers and the exit."""
    yield shutdown
    if _fast_status is None or sys.flags.inspect or (
            not sys.flags.ignore_environment and os.environ.get("PYTHONINSPECT")):
        return  # pythonrun would start the REPL
    yield atexit._run_exitfuncs
    yield _fast_exit


def _fast_exit():
    """After the atexit handlers: flush what CPython flushes, and leave.
    Returns (CPython goes on and ends the call as always) whenever
    unsure; never raises."""
    try:
        status = _fast_status
        # CPython stops other threads (daemons, or threads an atexit
        # handler started) before it flushes: leave those ends to it.
        if _thread._count():
            return
        for stream in (getattr(sys, "stdout", None), getattr(sys, "stderr", None)):
            if stream is not None and not _stream_closed(stream):
                stream.flush()
        _LIBC.fflush(None)  # C stdio, as exit() would
    except BaseException:
        # CPython goes on: its atexit list is empty now, and a flush that
        # failed fails again, with its message and status 120.
        return
    os._exit(status)


def _stream_closed(stream):
    """pylifecycle.c's file_is_closed: an error reading .closed means open."""
    try:
        return bool(stream.closed)
    except Exception:
        return False


def _main_code():
    """The code object of the __main__ module's top-level frame, or why
    not. It must be the outermost frame whose globals are __main__'s
    (below it only runpy's, for python -m); anything else below (a
    launcher such as coverage or pdb, which has work to do after the
    script) leaves the end to CPython."""
    main = sys.modules.get("__main__")
    if main is None:
        return None, "no __main__ module"
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    found = None
    for i, frame in enumerate(frames):
        if frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>":
            found = i
    if found is None:
        return None, "no frame runs the __main__ module's code"
    runpy = sys.modules.get("runpy")
    for frame in frames[found + 1:]:
        if runpy is None or frame.f_globals is not runpy.__dict__:
            return None, "the __main__ module runs under %s" % frame.f_code.co_filename
    return frames[found].f_code, None


def _arm_fast_exit():
    """fast_exit, in the setup run before the server forks (the server,
    monitor and executors inherit it; only an executor ever ends the
    __main__ code). Returns None, or why fast_exit does nothing."""
    global _fast_code
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return "Python %d.%d has no sys.monitoring (3.12 or later)" % sys.version_info[:2]
    code, why = _main_code()
    if code is None:
        return why
    import threading
    original = getattr(threading, "_shutdown", None)
    if not callable(original) or not hasattr(_thread, "_count"):
        return "this Python's threading module has no _shutdown"
    tool = next((t for t in (4, 3) if monitoring.get_tool(t) is None), None)
    if tool is None:
        return "sys.monitoring tool ids 3 and 4 are both in use"
    events = monitoring.events
    monitoring.use_tool_id(tool, "prefork_interp fast_exit")
    try:
        monitoring.register_callback(tool, events.PY_RETURN, _fast_on_return)
        monitoring.register_callback(tool, events.PY_UNWIND, _fast_on_unwind)
        monitoring.set_local_events(tool, code, events.PY_RETURN)
        monitoring.set_events(tool, events.PY_UNWIND)
    except Exception as e:
        monitoring.free_tool_id(tool)
        return "sys.monitoring refused: %s" % e
    _fast_code = code
    # Called once, by Py_FinalizeEx (each process forked from here has
    # its own copy of the generator).
    threading._shutdown = functools.partial(
        collections.deque, map(operator.call, _fast_steps(original)), 0)
    return None
