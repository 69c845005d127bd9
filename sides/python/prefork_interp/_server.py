"""The server: accepts and greets calls, and sends each to its one
monitor; never forks per call. Quits on the watcher's EOF, the idle
timeout, a changed file (auto-reload), too many errors."""

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


class Server:
    """Accepts and greets calls, and sends each to the one monitor on
    control; counts the calls the monitor has not yet said (one byte 'd'
    each) have ended: `busy`, the greeting's `running`, which max_servers
    limits."""

    def __init__(self, setup, settings, reload):
        self.listen = socket.socket(fileno=setup["listen"])
        self.listen.setblocking(False)
        self.watch_err = setup["watch_err"]
        self.watch_in = setup["watch_in"]
        os.set_blocking(self.watch_err, False)
        for fd in (self.listen.fileno(), self.watch_err, self.watch_in):
            os.set_inheritable(fd, False)
        self.settings = settings
        self.log = settings.log
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
        os.close(self.watch_err)
        os.close(self.watch_in)
        if self.control is not None:
            self.control.close()
        if self.monitor_pidfd is not None:
            os.close(self.monitor_pidfd)
        self.reload.close()

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
                                                    settings.terminals, None, self.served,
                                                    self.busy, idle_ms)
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

    def quit(self, why):
        self.log(LOG_INFO, "server quitting: %s" % why)
        self.record_quit(why)
        os._exit(0)

    def record_quit(self, why):
        """Appends "quit SECONDS REASON" to the identity's lock file
        (beside the socket: BASE/s<ident>, BASE/l<ident>), for --list to
        show as the reason of the next server's start. Best effort: a lock
        file removed (--kill) is skipped."""
        try:
            lock = _wire.lock_path_for_socket(os.fsencode(self.listen.getsockname()))
            if lock is None:
                return
            fd = os.open(lock, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (OSError, TypeError):
            return
        try:
            os.write(fd, _wire.encode_quit_line(int(time.time()), why))
        except OSError:
            pass
        finally:
            os.close(fd)

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
        idle_timeout = self.settings.idle_timeout
        while True:
            self.set_listening(max_servers is None or self.busy < max_servers)
            timeout = None
            if idle_timeout is not None and not self.busy:
                timeout = idle_timeout - (time.monotonic() - self.idle_since)
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
                        self.monitor_died()
                        return None
                    if not self.hear_monitor():
                        return None
                elif what == "watcher":
                    self.check_watcher()
                elif what == "reload":
                    self.reload.drain()
                elif what == "listen" and self.listening:  # not busy since the poll
                    conn = self.accept()
                    if conn is not None:
                        return conn

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
            self.quit("socket replaced or removed (watcher exited)")
        self.quit("watcher reported: %s" % text.decode("utf-8", "replace").strip())
