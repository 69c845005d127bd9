"""Thin wrappers of what the os and signal modules lack or spell
otherwise: the C library through ctypes (prctl, signalfd, inotify,
fflush, madvise), pidfds, closing every fd from one on, fd and thread
checks, blocking socket I/O, and the signals a call's client may
forward."""

import ctypes
import errno
import os
import signal
import socket
import struct

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


# madvise's advice that faults a range in, writable (Linux 5.14 or later).
MADV_POPULATE_WRITE = 23
_madvise = LIBC.madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def populate_write(address, length):
    """madvise(MADV_POPULATE_WRITE) over [address, address + length): each
    page there becomes this process's own, writable, copied now if it was
    shared copy-on-write. 0, or the errno (EINVAL: a kernel before 5.14,
    or a mapping it cannot populate; ENOMEM: not mapped, or out of
    memory). The os and mmap modules have no madvise of an address range."""
    if _madvise(address, length, MADV_POPULATE_WRITE) == 0:
        return 0
    return ctypes.get_errno() or errno.EINVAL


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


# inotify's event bits (linux/inotify.h) that the server asks for or reads.
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000

# struct inotify_event: wd, mask, cookie, len; then len bytes of name.
_INOTIFY_EVENT = struct.Struct("iIII")


class Inotify:
    """An inotify instance (non-blocking, close-on-exec), or an OSError:
    the server's one, for the reload's files and its socket's directory
    both (a user has 128 by default)."""

    def __init__(self):
        try:
            self._add = LIBC.inotify_add_watch
            init1 = LIBC.inotify_init1
        except AttributeError:  # a C library without inotify
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
        self._add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        fd = init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise _errno_error()
        self.fd = fd

    def add_watch(self, path, mask):
        """The watch descriptor of path (the same for the same inode), or
        an OSError (FileNotFoundError: no such file)."""
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise _errno_error()
        return wd

    def read_events(self):
        """Every event pending, as (wd, mask, name): name is b"" for an
        event on the watched file itself, else the name in the watched
        directory."""
        events = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            if not data:
                return events
            events.extend(_inotify_events(data))

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _inotify_events(data):
    """The events of one read: whole events only, as the kernel gives."""
    at = 0
    while at + _INOTIFY_EVENT.size <= len(data):
        wd, mask, _, length = _INOTIFY_EVENT.unpack_from(data, at)
        at += _INOTIFY_EVENT.size
        # The name is NUL-padded to an alignment.
        yield wd, mask, data[at:at + length].rstrip(b"\0")
        at += length


def _errno_error():
    err = ctypes.get_errno() or errno.EINVAL
    return OSError(err, os.strerror(err))
