"""Thin wrappers of what the os and signal modules lack or spell
otherwise: the C library through ctypes (prctl, signalfd, inotify,
fflush), pidfds, closing every fd from one on, fd and thread checks,
blocking socket I/O, and the signals a call's client may forward."""

import ctypes
import errno
import os
import signal
import socket

# The C library, for what the os module lacks.
LIBC = ctypes.CDLL(None, use_errno=True)

# Signals an extended client may have delivered to the executor's group
# (Rust's FORWARDED_SIGNALS): the monitor ignores them, the executor gets
# back what the server had.
FORWARDED_SIGNALS = tuple(getattr(signal, "SIG" + name) for name in
                          ("INT", "TERM", "HUP", "QUIT", "USR1", "USR2", "WINCH", "ALRM",
                           "TSTP", "CONT"))
# Signals a terminal sends its foreground group.
TERMINAL_SIGNALS = frozenset(getattr(signal, "SIG" + name) for name in
                             ("INT", "QUIT", "TSTP", "TTIN", "TTOU", "WINCH", "HUP"))

_PR_SET_PDEATHSIG = 1
_SFD_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC


def pidfd_open(pid):
    return os.pidfd_open(pid)


def set_parent_death_signal(sig):
    """PR_SET_PDEATHSIG: sig when the parent (thread) goes."""
    LIBC.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def signalfd(sig):
    """A non-blocking, close-on-exec signalfd for sig (blocked): the os
    and signal modules have none."""
    mask = ctypes.create_string_buffer(128)  # a sigset_t (128 bytes in glibc and musl)
    LIBC.sigemptyset(mask)
    LIBC.sigaddset(mask, sig)
    fd = LIBC.signalfd(-1, mask, _SFD_NONBLOCK_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def close_range_from(first):
    """Closes every fd from first on: one close_range on Python 3.10 or
    later; bounded by the fd limit for a Python that closes one fd at a
    time."""
    os.closerange(first, max(os.sysconf("SC_OPEN_MAX"), 1024))


def fd_is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def thread_count():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def send_all(sock, data):
    """Sends all of data on a blocking socket; an OSError
    (BrokenPipeError...) if the peer has gone, never SIGPIPE."""
    while data:
        sent = sock.send(data, socket.MSG_NOSIGNAL)
        data = data[sent:]


def recv_exact(sock, length):
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


def fflush_all():
    """C stdio's buffers, as exit() would flush them."""
    LIBC.fflush(None)


def describe_status(status):
    """A wait status in words, for the log."""
    if os.WIFEXITED(status):
        return "exited with status %d" % os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return "was killed by signal %d%s" % (os.WTERMSIG(status), core)
    return "has wait status %#x" % status


def kill_group(pid, sig=signal.SIGINT):
    """Signals a process group; best effort."""
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


class Inotify:
    """An inotify fd (non-blocking, close-on-exec), or an OSError."""

    def __init__(self):
        self.add = LIBC.inotify_add_watch
        self.add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        fd = LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd = fd

    def add_watch(self, path, mask):
        """Returns None, or the errno of a failure (ENOENT: no such file)."""
        if self.add(self.fd, os.fsencode(path), mask) < 0:
            return ctypes.get_errno() or errno.EINVAL
        return None
