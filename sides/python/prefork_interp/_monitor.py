"""The monitor: one per server (forked again if it dies). Forks the
executors-to-be in advance, hands each call the server sends to an idle
one, and watches every call in flight in one poll loop (pidfds, the
executors' 'r', the keepers' 't' and 'x', the clients' signal frames)
until its end, which it tells the server ('d') and then the client (the
status). Holds the caller's terminal and its settings while a client has
it raw ('R'), to put them back should the client go away (unless its
shell has set that terminal since). Never runs the script's code; leaves
with os._exit."""

import array
import os
import select
import signal
import socket
import termios
import time

from . import _executor, _sys, _wire
from ._log import LOG_ERR, LOG_INFO
from ._sys import describe_status, kill_group, recv_exact as _recv_exact

# A call's phases in the monitor.
_WAITING = "waiting"  # handed to its executor, no 'r' yet
_RUNNING = "running"  # got 'r': the script runs
_REPORTED = "reported"  # its keeper said how the script ended ('x'): over
_ABANDONED = "abandoned"  # the client went away: SIGINTed, to be reaped

_QUIET = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


# Room for one fd: the kernel hands over at most one message's fds in a
# read, and the client sends one (with an 'R').
_FD_SPACE = socket.CMSG_SPACE(array.array("i").itemsize)


def _recv_frames(sock):
    """What a client has sent, without waiting: (data, the fds that came
    with it). Not socket.recv_fds, which ignores its flags (CPython
    gh-107898: it would block, and leave the fd inheritable); with room
    for an fd, as a read without would close the one an 'R' brings."""
    data, ancdata, _, _ = sock.recvmsg(4096, _FD_SPACE,
                                       socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
    return data, list(fds)


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
    then over, _REPORTED, and the keeper to be reaped). restore: the
    client's last 'R', (the settings to put back, those the client left,
    the caller's terminal's fd), or None."""

    __slots__ = ("pid", "pidfd", "conn", "from_executor", "phase", "extended", "script",
                 "from_keeper", "status", "frames", "fds", "restore", "abandoned_at", "killed")

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
        # The fds that came with them, oldest first, each for the byte
        # that ends an 'R' (the kernel hands an fd over with the first
        # byte read of its message, so never after that byte).
        self.fds = []
        self.restore = None
        self.abandoned_at = None  # time.monotonic() of its SIGINT (SIGHUP)
        self.killed = False  # SIGKILLed after the grace

    def drop_restore(self):
        """Nothing to put back: closes the caller's terminal kept."""
        if self.restore is not None:
            os.close(self.restore[2])
            self.restore = None

    def forget_terminal(self):
        """The call's end for 'R': closes the caller's terminal, kept or
        still to be paired with its 'R'; nothing is put back."""
        self.drop_restore()
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def put_back_terminal(self):
        """The client has gone while it had the caller's terminal raw:
        that terminal as the client found it (as a direct run killed
        outright leaves it), if it still has what the client left; then
        closed."""
        if self.restore is not None:
            put_back, left, fd = self.restore
            try:
                attrs = termios.tcgetattr(fd)
                # tcgetattr gives VMIN and VTIME as ints in non-canonical
                # mode, else 1-byte bytes; tcsetattr takes either.
                cc = attrs[6]
                now = [c if isinstance(c, int) else c[0] for c in cc]
                # The shell that ran the client may have taken its terminal
                # back already (bash's readline sets its own mode): that
                # stays. Speeds are not compared: raw mode leaves them.
                if attrs[0:4] == list(left[0:4]) and all(
                        a == b for a, b in zip(now, left.cc)):
                    attrs[0:6] = put_back[0:6]
                    # As many as our NCCS.
                    for i, char in enumerate(put_back.cc[:len(cc)]):
                        cc[i] = char if isinstance(cc[i], int) else bytes([char])
                    termios.tcsetattr(fd, termios.TCSANOW, attrs)
            except (OSError, termios.error):
                pass  # the terminal has gone too (hung up): nothing to put back
        self.forget_terminal()

    def group(self):
        """The process group the call's signals go to: the executor's, or
        on a pseudo-terminal of its own the script's (its pgid is its pid
        once it has read its request; while it is unreaped, no other
        group can have that id; the keeper reaps the script only after
        its own last signal to the group, and only then tells us its
        status)."""
        return self.script or self.pid


class Monitor:
    """Keeps `spare_handlers` executors-to-be idle; the calls in flight
    by executor pid."""

    def __init__(self, control, settings):
        self.control = control  # None once the server has gone
        self.settings = settings
        self.log = settings.log
        self.spare = settings.spare_handlers
        self.grace = settings.interrupt_grace  # None: never SIGKILL
        self.idle = []  # _Spare, oldest first
        self.calls = {}  # executor pid -> _Call
        # Calls whose status has gone while their clients had the caller's
        # terminal raw, by call socket fd: each until its client says it
        # put the terminal back ('R' 0) or goes away (send_status).
        self.ending = {}
        self.owed = b""  # 'd' and 'h' bytes the server has not yet been sent
        self.pid = os.getpid()
        # Executors are groups of their own and signals go to those, but
        # nothing sent to us by mistake may hurt us; the executors get
        # the server's dispositions back.
        self.saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _sys.FORWARDED_SIGNALS}
        # The server's limits, read once here: every executor forked from
        # now on compares a caller's with them at no cost.
        self.own_limits = _executor.read_own_limits()

    def run(self):
        """Serves until the server has gone and every call has ended;
        returns only in a new executor-to-be, its Executor."""
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
            elif not self.calls and not self.idle and not self.ending:
                os._exit(0)
            child = self.serve(self.kill_overdue())
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
                kill_group(call.group(), signal.SIGKILL)
                call.killed = True
                self.log(LOG_ERR, "executor %d still ran %g s after its client went away "
                         "and its SIGINT: killed" % (call.pid, self.grace))
            elif next_left is None or left < next_left:
                next_left = left
        return next_left

    def wait(self, timeout):
        """One poll, level-triggered: what it found, as (order, thing,
        mask) in the order serve handles them."""
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
        for fd, call in self.ending.items():
            watch(fd, 3, call)
        # poll's timeout is in ms, rounded up: it must not wake just
        # before the time.
        wait_ms = None if timeout is None else max(0, int(-(-timeout * 1000 // 1)))
        return sorted((where[fd] + (mask,) for fd, mask in poll.poll(wait_ms)),
                      key=lambda event: event[0])

    def serve(self, timeout=None):
        """One round: executors' 'r', keepers' 't' and 'x', executors
        gone, clients' frames or EOF, the server's calls, in this order."""
        for order, thing, mask in self.wait(timeout):
            if order == 0:
                if thing.from_executor is not None and thing.pid in self.calls:
                    self.take_ready(thing)
            elif order == 1:
                if thing.from_keeper is not None and thing.pid in self.calls:
                    self.hear_keeper(thing)
            elif order == 2:
                if isinstance(thing, _Spare):
                    self.spare_gone(thing)
                else:
                    self.reap(thing)
            elif order == 3:
                if self.is_ending(thing):
                    self.hear_ending(thing)
                elif thing.phase == _RUNNING and thing.pid in self.calls:
                    self.hear_client(thing)
            else:
                if mask & select.POLLOUT:
                    self.flush()
                if mask & ~select.POLLOUT and self.control is not None:
                    child = self.take_call()
                    if child is not None:
                        return child
        return None

    def close_in_child(self, close):
        """In a new executor-to-be, before anything else: nothing of the
        monitor's stays open (a call socket kept by a spare would hide
        its client's EOF)."""
        if self.control is not None:
            self.control.close()
        for spare in self.idle:
            if spare.handover is not None:
                spare.handover.close()
            spare.from_executor.close()
            os.close(spare.pidfd)
        for call in self.calls.values():
            call.conn.close()
            # Else a script would hold its caller's terminal open.
            call.forget_terminal()
            if call.from_executor is not None:
                call.from_executor.close()
            if call.from_keeper is not None:
                call.from_keeper.close()
            os.close(call.pidfd)
        for call in self.ending.values():
            call.conn.close()
            call.forget_terminal()
        for sock in close:
            sock.close()

    def fork_executor(self, *close):
        """Forks an executor-to-be. In the monitor: (its _Spare, None), or
        (None, None) if that failed (logged). In the child, which has
        closed every fd of ours (and those in close): (None, its
        Executor)."""
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
            self.log(LOG_ERR, "cannot fork an executor: %s" % e)
            return None, None
        if pid == 0:
            try:
                self.close_in_child(close + (handover, from_executor))
                self.log.reopen()
                self.settings.titles.set("handler")
            except BaseException:
                os._exit(127)
            return None, _executor.Executor(self.settings, handover_theirs, from_executor_theirs,
                                            self.saved, self.pid, self.own_limits)
        handover_theirs.close()
        from_executor_theirs.close()
        try:
            pidfd = _sys.pidfd_open(pid)
        except OSError as e:
            # Unwatchable: it must not serve.
            self.log(LOG_ERR, "cannot open a pidfd for executor %d: %s" % (pid, e))
            handover.close()
            from_executor.close()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, None
        return _Spare(pid, pidfd, handover, from_executor), None

    def take_call(self):
        """control is readable: a call (0x00 with its socket), or the
        server's EOF. Returns a new executor in the child forked if no
        spare was idle, else None."""
        try:
            data, fds, _, _ = socket.recv_fds(self.control, 1, 1, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data, fds = b"", []
        if not data or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            if not data:
                self.server_gone()
            else:
                self.log(LOG_ERR, "a call came without its socket")
                self.call_ended(_wire.MONITOR_CALL_DROPPED)
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
                self.log(LOG_ERR, "no executor to take a call")
                conn.close()
                self.call_ended(_wire.MONITOR_CALL_DROPPED)
                return None
            try:
                socket.send_fds(spare.handover, [_wire.FD_MESSAGE_BYTE], [conn.fileno()],
                                socket.MSG_NOSIGNAL)
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

    def call_ended(self, how=_wire.MONITOR_CALL_ENDED):
        """A call handed to us has ended: tell the server ('d', or 'h'
        if its script never ran)."""
        self.owed += how
        self.flush()

    def flush(self):
        if self.control is None:
            self.owed = b""
            return
        try:
            sent = self.control.send(self.owed, _QUIET)
            self.owed = self.owed[sent:]
        except (BlockingIOError, InterruptedError):
            pass  # later, when control is writable
        except OSError:
            self.owed = b""  # the server has gone; its EOF follows

    def take_ready(self, call):
        """from_executor has something: 'r' and the request byte (the
        call runs; on a pseudo-terminal of its own, the script's pid
        follows, and from then on the keeper's 't' and 'x'), or EOF (the
        executor could not take the call; it logged why). Safe to block:
        the executor wrote it at once, or is dead."""
        sock = call.from_executor
        call.from_executor = None
        try:
            byte = _wire.decode_executor_ready(_recv_exact(sock, 2))
        except (_wire.ProtocolError, IndexError):
            sock.close()
            return
        if byte & _wire.REQUEST_ANY_PTY:
            script = _recv_exact(sock, 4)
            if len(script) == 4:
                call.phase = _RUNNING
                call.extended = bool(byte & _wire.REQUEST_BYTE_EXTENDED)
                call.script = _wire.decode_script_pid(script)
                call.from_keeper = sock
                return
        else:
            call.phase = _RUNNING
            call.extended = bool(byte & _wire.REQUEST_BYTE_EXTENDED)
        sock.close()

    def hear_keeper(self, call):
        """The keeper's socket is readable: one message ('t' and a signal:
        the script has stopped, which the client is told ('T') so that
        it stops too; 'x' and the script's wait status: the call is over
        at once, 'd' and the client's 'X' without waiting for the
        keeper's exit, which is reaped quietly), or EOF, or garbage: it
        has nothing more to say. Safe to block: the keeper writes each
        at once, or is dead."""
        message = _recv_exact(call.from_keeper, _wire.FRAME_LEN)
        if len(message) == _wire.FRAME_LEN:
            kind, value = _wire.decode_frame(message)
            if kind == _wire.KEEPER_STATUS:
                call.status = value
                if call.phase == _RUNNING:
                    # It has nothing more to say: it exits.
                    call.from_keeper.close()
                    call.from_keeper = None
                    call.phase = _REPORTED
                    self.call_ended()
                    self.send_status(call, value)
                return
            if kind == _wire.KEEPER_STOPPED:
                if call.phase == _RUNNING:
                    try:
                        call.conn.send(_wire.encode_frame(_wire.FRAME_STOPPED, value), _QUIET)
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
            self.log(LOG_ERR, "idle executor %d %s" % (spare.pid, describe_status(status)))

    def reap(self, call):
        """A call's executor has gone: its end."""
        if call.phase == _WAITING and call.from_executor is not None:
            self.take_ready(call)  # it may have said 'r' after poll looked
        del self.calls[call.pid]
        os.close(call.pidfd)
        if call.phase != _ABANDONED:
            # What it left behind in its group first: a zombie's status
            # cannot change, and its group id cannot be reused before we
            # reap it. (A keeper has done so for the script's group.)
            kill_group(call.pid)
        _, status = os.waitpid(call.pid, 0)
        if call.phase == _REPORTED:
            if not self.is_ending(call):
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
            self.log(LOG_ERR, "keeper %d of script %d %s: script killed"
                     % (call.pid, call.script, describe_status(status)))
            kill_group(call.script, signal.SIGKILL)
        if call.phase == _ABANDONED:
            self.log(LOG_INFO, "client went away; script interrupted, it %s"
                     % describe_status(status))
            self.call_ended()
        elif call.phase == _RUNNING:
            self.call_ended()
            self.send_status(call, status)
        else:
            if status:
                self.log(LOG_ERR, "executor %d failed before its call: it %s"
                         % (call.pid, describe_status(status)))
            # Its client sees EOF. 'h': no request came (a listing; a
            # caller that went elsewhere).
            self.call_ended(_wire.MONITOR_CALL_DROPPED)
        if not self.is_ending(call):
            call.forget_terminal()  # put back already
            call.conn.close()

    def send_status(self, call, status):
        """A call's end to its client, once the server has its 'd' (a
        greeting after the client has its status counts this call out).
        Not delivered, the client has gone, and the monitor puts back what
        its last 'R' gave. Delivered, the client restores its terminal
        itself and says so ('R' 0); until then the call is ending (sent is
        not received: a client killed as the script ends may have closed
        its pseudo-terminal, whose hang-up ended the script, and not yet
        its call socket). First what the client said that is still
        unread: its going away may be what ended the script, and poll
        hands us the keeper's 'x' before the client's EOF."""
        if call.extended:
            message = _wire.encode_frame(_wire.FRAME_STATUS, status)
        else:
            message = _wire.encode_status(status)
        delivered = False
        if not (call.extended and self.hear_last_of_client(call)):
            try:
                call.conn.send(message, _QUIET)
                delivered = True
            except OSError:
                pass  # the client has gone
        if not delivered:
            call.put_back_terminal()
        elif call.restore is not None:
            self.ending[call.conn.fileno()] = call
        else:
            call.forget_terminal()

    def is_ending(self, call):
        return self.ending.get(call.conn.fileno()) is call

    def hear_ending(self, call):
        """An ending call's socket is readable: 'R' 0 (its client put its
        terminal back: nothing to do), a late signal (for a script that
        has ended: nowhere to go), or its end (it may have died before it
        put its terminal back: the monitor does, if the terminal still has
        what the client left)."""
        heard = self.read_client(call, act=False)
        if heard is None or (heard and call.restore is not None):
            return
        del self.ending[call.conn.fileno()]
        call.put_back_terminal()  # nothing, after 'R' 0
        call.conn.close()

    def hear_client(self, call):
        """A running call's socket is readable. v1: the client has gone
        (it has nothing more to say). Extended: signal frames ('S' and a
        forwardable signal: to the call's group), on a pseudo-terminal of
        its own 'F' (the script to its terminal's foreground, 1, or
        background, 0), passed to the keeper as 'f', never a signal,
        'R' (the caller's terminal and the settings to put back on it;
        other kinds are ignored), or EOF, an error, or an 'R' that breaks
        the wire format: the client has gone. Then its caller's terminal
        is put back first, for the shell that ran the client."""
        if call.extended and self.read_client(call) is not False:
            return
        call.put_back_terminal()
        group = call.group()
        if call.script is None:
            kill_group(group)
        else:
            # Its terminal has gone: as a direct run whose terminal goes
            # away, SIGHUP (and SIGCONT, should it be stopped).
            kill_group(group, signal.SIGHUP)
            kill_group(group, signal.SIGCONT)
        call.phase = _ABANDONED
        call.abandoned_at = time.monotonic()

    def read_client(self, call, act=True):
        """One read of an extended call's socket, without waiting, its
        whole frames taken (forward). None: nothing to read; True: read;
        False: the client has gone (EOF, an error, an 'R' that breaks the
        wire format)."""
        try:
            data, fds = _recv_frames(call.conn)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return False
        call.fds += fds
        return bool(data) and self.forward(call, call.frames + data, act)

    def hear_last_of_client(self, call):
        """What the client sent that is still unread, once the script has
        ended: its 'R' frames are kept, its signals go nowhere (the
        script's pid may be another process's by now). Whether the client
        has gone."""
        while True:
            heard = self.read_client(call, act=False)
            if heard is not True:
                return heard is False

    def forward(self, call, frames, act=True):
        """The client's whole frames: signals to the call's group, 'F' to
        the keeper (both only if act), 'R' kept on the call; keeps what is
        left of a frame (an 'R' waits for its settings and its fd, which
        the client sends at once). False (logged): an 'R' broke the wire
        format."""
        group = call.group()
        while len(frames) >= _wire.FRAME_LEN:
            kind, value = _wire.decode_frame(frames[:_wire.FRAME_LEN])
            if kind == _wire.FRAME_RESTORE:
                if not value:
                    call.drop_restore()
                    frames = frames[_wire.FRAME_LEN:]
                    continue
                try:
                    # Refused before its bytes come: nothing waits for them.
                    end = _wire.FRAME_LEN + _wire.check_restore_len(value)
                    if len(frames) < end:
                        break  # the rest is on its way: the client sends it at once
                    put_back, left = _wire.decode_restore(frames[_wire.FRAME_LEN:end])
                except _wire.ProtocolError as e:
                    self.log(LOG_ERR, "call of executor %d: %s" % (call.pid, e))
                    return False
                if len(frames) == end:
                    break  # so is the byte that brings the terminal
                if not call.fds:
                    self.log(LOG_ERR, "call of executor %d: 'R' came without the caller's "
                             "terminal" % call.pid)
                    return False
                call.drop_restore()
                call.restore = put_back, left, call.fds.pop(0)
                frames = frames[end + 1:]
                continue
            frames = frames[_wire.FRAME_LEN:]
            if not act:
                continue
            if kind == _wire.FRAME_SIGNAL and value in _sys.FORWARDED_SIGNALS:
                kill_group(group, value)
            elif kind == _wire.FRAME_FOREGROUND and call.from_keeper is not None:
                # For the keeper, which moves the script's group (it reads
                # each at once: this never fills its socket).
                try:
                    call.from_keeper.send(_wire.encode_frame(_wire.KEEPER_FOREGROUND, value),
                                          _QUIET)
                except OSError:
                    pass  # it has gone: its EOF says so
        call.frames = frames
        return True
