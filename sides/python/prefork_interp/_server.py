"""The server: accepts and greets calls, and sends each to its one
monitor; never forks per call. Quits when its socket path is removed or
replaced (it watches it itself for a client with capability `watch`,
else the client's watcher's EOF says so), on the idle timeout, a changed
file (auto-reload), too many errors."""

import os
import selectors
import socket
import struct
import time

from . import _sys, _wire
from ._log import LOG_ERR, LOG_INFO
from ._sys import describe_status


def other_user(conn):
    """Why a call on conn must be refused (its caller is not our user), or None."""
    try:
        pid, uid, _ = struct.unpack(
            "iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII")))
    except OSError as e:
        return "refused a call whose caller is unknown: %s" % e
    if uid == os.getuid():
        return None
    return "refused a call from uid %d (pid %d): this server is uid %d's" % (uid, pid, os.getuid())


def bounded_idle_timeout(own, limit):
    """The idle timeout: the server's own (None: none), at most the
    client's pfi-idle bound (None: none), which a folded identity's
    server gets."""
    if own is None or limit is None:
        return limit if own is None else own
    return min(own, limit)


def no_inotify(e, socket_too):
    """The `degraded` text of a server without inotify (e: why)."""
    if socket_too:
        return ("no inotify (%s): socket path checked every %d s, files at every call"
                % (os.strerror(e.errno), SocketWatch.CHECK_INTERVAL))
    return "no inotify (%s): files checked at every call" % os.strerror(e.errno)


def sort_events(events, socket_watch):
    """(files, socket): whether inotify events (wd, mask, name) may mean
    a watched file changed, and whether the socket went (socket_watch:
    the server's own, or None). Every watch but the socket directory's is
    a file's; lost events (the queue overflowed) may mean either."""
    socket_dir = socket_watch.wd if socket_watch is not None else None
    files = socket = False
    for wd, mask, name in events:
        if mask & _sys.IN_Q_OVERFLOW:
            files = socket = True
        elif socket_dir is not None and wd == socket_dir:
            socket = socket or socket_watch.concerns(mask, name)
        else:
            files = True
    return files, socket


class SocketWatch:
    """The server's own watch on its socket path (capability `watch`; no
    watcher process then): the socket's directory in the server's one
    inotify instance, or without one a look every CHECK_INTERVAL seconds.
    The socket is gone when its path is missing or another file's (an
    eviction, --kill, a stale-socket recovery made it so)."""

    CHECK_INTERVAL = 5
    DIR_MASK = (_sys.IN_CREATE | _sys.IN_DELETE | _sys.IN_MOVED_FROM | _sys.IN_MOVED_TO
                | _sys.IN_DELETE_SELF | _sys.IN_MOVE_SELF)
    # On the directory's watch: the directory itself went, or its watch.
    DIR_GONE = _sys.IN_DELETE_SELF | _sys.IN_MOVE_SELF | _sys.IN_IGNORED

    def __init__(self, path, started_ns):
        self.path = path  # bytes
        folder, _, self.name = path.rpartition(b"/")
        self.folder = folder or (b"/" if path.startswith(b"/") else b".")
        # The socket our client made: the file at the path with the
        # setup's mtime. None if it is already gone: the first call is
        # served, then the server quits.
        self.inode = None
        try:
            st = os.lstat(path)
            if st.st_mtime_ns == started_ns:
                self.inode = (st.st_dev, st.st_ino)
        except OSError:
            pass
        self.wd = None
        self.next_check = None  # without inotify, when to look next

    def watch_with(self, inotify):
        """Watches the directory in inotify, or raises OSError."""
        self.wd = inotify.add_watch(self.folder, self.DIR_MASK)

    def check_periodically(self):
        self.next_check = time.monotonic() + self.CHECK_INTERVAL

    def concerns(self, mask, name):
        """Whether an event on the directory's watch may mean the socket
        went: its name, or the directory's own end."""
        return name == self.name or bool(mask & self.DIR_GONE)

    def still_there(self):
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return self.inode == (st.st_dev, st.st_ino)

    def due_in(self):
        """Seconds until the next periodic look (0: now), or None for no
        periodic looks."""
        if self.next_check is None:
            return None
        return max(0.0, self.next_check - time.monotonic())


class Server:
    """Accepts and greets calls, and sends each to the one monitor on
    control; counts the calls the monitor has not yet said (one byte 'd'
    each) have ended: `busy`, the greeting's `running`, which max_servers
    limits."""

    def __init__(self, setup, settings, reload):
        self.listen = socket.socket(fileno=setup["listen"])
        self.listen.setblocking(False)
        os.set_inheritable(self.listen.fileno(), False)
        self.settings = settings
        self.log = settings.log
        self.errors = 0
        self.reload = reload
        self.started_secs = setup["started_secs"]
        self.idle_timeout = bounded_idle_timeout(settings.idle_timeout, setup["idle_limit"])
        self.control = None  # our end of the socketpair with the monitor
        self.monitor = None  # its pid
        self.monitor_pidfd = None
        self.served = 0
        self.busy = 0  # calls handed to the monitor and not yet ended
        self.idle_since = time.monotonic()
        self.selector = selectors.DefaultSelector()
        self.listening = False
        # Who says the socket went: the server itself, or the watcher.
        self.socket_watch = None
        self.watch_err = self.watch_in = None
        if "watch" in setup["client_caps"]:
            self.socket_watch = SocketWatch(
                os.fsencode(self.listen.getsockname()),
                setup["started_secs"] * 1_000_000_000 + setup["started_nsecs"])
            # The client starts no watcher: the pipes mean nothing.
            os.close(setup["watch_err"])
            os.close(setup["watch_in"])
        else:
            self.listen_to_watcher(setup["watch_err"], setup["watch_in"])
        self.inotify = None
        self.degraded = self.watch_with_inotify()
        if self.degraded is not None:
            self.log(LOG_ERR, "degraded: %s" % self.degraded)
        reload.watch_with(self.inotify)

    def listen_to_watcher(self, watch_err, watch_in):
        """The client's watcher (chiark-utils', or ours without `watch`)
        says on WATCHE when the socket went."""
        self.watch_err = watch_err
        self.watch_in = watch_in
        os.set_blocking(watch_err, False)
        for fd in (watch_err, watch_in):
            os.set_inheritable(fd, False)
        self.selector.register(watch_err, selectors.EVENT_READ, "watcher")

    def watch_with_inotify(self):
        """Makes the server's one inotify instance (self.inotify), for the
        reload's files and, watching its own socket, the socket's
        directory. Without one (none to be had, or no directory watch in
        it: then it goes), the socket path is looked at periodically and
        the files at every call; returns what the greeting says of that,
        or None."""
        try:
            inotify = _sys.Inotify()
            if self.socket_watch is not None:
                try:
                    self.socket_watch.watch_with(inotify)
                except OSError:
                    inotify.close()
                    raise
        except OSError as e:
            if self.socket_watch is not None:
                self.socket_watch.check_periodically()
            return no_inotify(e, self.socket_watch is not None)
        self.inotify = inotify
        self.selector.register(inotify.fd, selectors.EVENT_READ, "inotify")
        return None

    def run(self, pending):
        """Serves until it quits (os._exit). The monitor first (the first
        call, pending, pays its fork and its first executor's, as it
        always did), then each call to it; a monitor that dies is forked
        again at once, so that a spare is ready. Returns only in the
        monitor: its end of control."""
        again = False  # pending was greeted; a dead monitor lost it
        while True:
            if self.control is None:
                control = self.spawn_monitor(pending)
                if control is not None:
                    return control  # the monitor
                if self.control is None and pending is not None:
                    pending.close()  # nobody to serve it: its client sees EOF
                    pending = None
                    again = False
            if pending is not None:
                again = self.hand_over(pending, again)
                if again:
                    continue
                pending.close()
                pending = None
            pending = self.next_call()

    def close(self):
        """In the monitor: drop everything of the server's."""
        self.selector.close()
        self.listen.close()
        if self.watch_err is not None:
            os.close(self.watch_err)
            os.close(self.watch_in)
        if self.control is not None:
            self.control.close()
        if self.monitor_pidfd is not None:
            os.close(self.monitor_pidfd)
        if self.inotify is not None:
            self.inotify.close()

    def spawn_monitor(self, pending):
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
                self.log.reopen()
                theirs.settimeout(None)  # blocking, whatever the script set
                self.settings.titles.set("monitor")
            except BaseException:
                os._exit(1)
            return theirs
        theirs.close()
        try:
            pidfd = _sys.pidfd_open(pid)
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

    def monitor_died(self):
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
        self.error("monitor %d %s" % (pid, describe_status(status)))

    def hear_monitor(self):
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
                self.monitor_died()
                return False
            ended = data.count(_wire.MONITOR_CALL_ENDED)
            self.busy = max(0, self.busy - ended - data.count(_wire.MONITOR_CALL_DROPPED))
            # 'h': a call that ended before a request (a listing, or a
            # caller that went elsewhere) keeps no server alive.
            if ended and not self.busy:
                self.idle_since = time.monotonic()

    def hand_over(self, call, again):
        """Greets the caller (unless it was, again) and sends the call to
        the monitor. True if the monitor had died: a new one should get
        the call (once)."""
        if not again:
            settings = self.settings
            xdata = b""
            if settings.offered:
                idle_ms = 0 if self.busy else int((time.monotonic() - self.idle_since) * 1000)
                xdata = _wire.encode_greeting_xdata(settings.offered, settings.world,
                                                    settings.env_dependency,
                                                    settings.start_dependency,
                                                    settings.terminals, self.degraded_text(),
                                                    self.served, self.busy, idle_ms)
            try:
                _sys.send_all(call, _wire.encode_greeting(xdata))
            except OSError as e:
                self.log(LOG_INFO, "caller went away before its greeting: %r" % (e,))
                return False
        try:
            socket.send_fds(self.control, [_wire.FD_MESSAGE_BYTE], [call.fileno()],
                            socket.MSG_NOSIGNAL)
        except OSError:
            self.monitor_died()
            return not again
        self.served += 1
        self.busy += 1
        return False

    def degraded_text(self):
        """What the server does without (the greeting's `degraded`), or
        None: no inotify first, else a file the reload cannot watch."""
        return self.degraded if self.degraded is not None else self.reload.degraded

    def quit(self, why, socket_went=False):
        """Quits, with a quit line in the lock file; for a socket that
        went, unless whoever removed it said why already (an eviction
        does)."""
        self.log(LOG_INFO, "server quitting: %s" % why)
        self.record_quit(why, socket_went)
        os._exit(0)

    def record_quit(self, why, unless_said):
        """Appends "quit SECONDS REASON" to the identity's lock file
        (beside the socket: BASE/s<ident>, BASE/l<ident>), for --list to
        show as the reason of the next server's start; with unless_said,
        not if its last quit line is dated at or after our start. Best
        effort: a lock file removed (--kill) is skipped."""
        try:
            lock = _wire.lock_path_for_socket(os.fsencode(self.listen.getsockname()))
            if lock is None:
                return
            # (Non-blocking: a FIFO planted there fails the read, never
            # hangs the quitting server.)
            fd = os.open(lock, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK)
        except (OSError, TypeError):
            return
        try:
            if not (unless_said and self.quit_said_since_start(fd)):
                os.write(fd, _wire.encode_quit_line(int(time.time()), why))
        except OSError:
            pass
        finally:
            os.close(fd)

    def quit_said_since_start(self, fd):
        """Whether the lock file's last quit line is dated at or after
        the second the server started."""
        text = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text += chunk
        last = _wire.decode_last_quit(text)
        return last is not None and last[0] >= self.started_secs

    def error(self, message):
        self.log(LOG_ERR, message)
        self.errors += 1
        if self.errors > self.settings.max_errors:
            self.quit("more than %d errors" % self.settings.max_errors)

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
        max_servers = self.settings.max_servers
        # (Its socket gone before it started: the first call was served.)
        self.check_socket()
        while True:
            self.set_listening(max_servers is None or self.busy < max_servers)
            events = self.selector.select(self.poll_timeout())
            # The monitor's news before any accept: once a client has its
            # status (sent after the 'd'), the next greeting counts it out.
            events.sort(key=lambda event: event[0].data not in ("control", "monitor"))
            for key, _ in events:
                what = key.data
                if what in ("control", "monitor"):
                    if self.control is None:
                        continue  # both said it
                    if what == "monitor":
                        self.monitor_died()
                        return None
                    if not self.hear_monitor():
                        return None
                elif what == "watcher":
                    self.check_watcher()
                elif what == "inotify":
                    self.note_inotify()
                elif what == "listen" and self.listening:  # not busy since the poll
                    conn = self.accept()
                    if conn is not None:
                        return conn

    def poll_timeout(self):
        """How long to wait: until the idle timeout, while no call runs,
        or the next periodic look at the socket path (taken now if it is
        due: it quits if the socket went); None for ever. Quits if the
        idle timeout has come."""
        timeout = None
        if self.idle_timeout is not None and not self.busy:
            timeout = self.idle_timeout - (time.monotonic() - self.idle_since)
            if timeout <= 0:
                self.quit("idle timeout")
        due = self.socket_watch.due_in() if self.socket_watch is not None else None
        if due is not None:
            if due <= 0:
                self.socket_watch.check_periodically()
                self.check_socket()
                due = self.socket_watch.due_in()
            timeout = due if timeout is None else min(timeout, due)
        return timeout

    def check_socket(self):
        """Quits if the server watches its own socket and it went."""
        if self.socket_watch is not None and not self.socket_watch.still_there():
            self.quit("socket replaced or removed", socket_went=True)

    def note_inotify(self):
        """Events in the server's inotify instance: the files are checked
        at the next call, the socket at once."""
        files, socket_too = sort_events(self.inotify.read_events(), self.socket_watch)
        if files:
            self.reload.note_events()
        if socket_too:
            self.check_socket()

    def accept(self):
        """A call from our user, or None; quits first if a file changed
        (dropping the call makes its client start afresh)."""
        try:
            conn, _ = self.listen.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            self.error("accept failed: %s" % e)
            return None
        refusal = other_user(conn)
        if refusal is not None:
            # Another user reached our socket (a run directory opened up
            # by hand): they get nothing, and a log line.
            self.log(LOG_ERR, refusal)
            conn.close()
            return None
        changed = self.reload.changed()
        if changed is not None:
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
            self.quit("socket replaced or removed (watcher exited)", socket_went=True)
        self.quit("watcher reported: %s" % text.decode("utf-8", "replace").strip(),
                  socket_went=True)
