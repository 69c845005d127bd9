"""The monitor's side of capability "restore" (man/prefork-interp.7, the
'R' frame): a real pseudo-terminal stands for the caller's terminal, a
socketpair for the call socket, a child process in a group of its own for
the script. The client's frames go through the monitor's own reading
(hear_client, send_status), as they would after the executor's 'r'.

    cd sides/python && python3 -m unittest discover -s tests
"""

import os
import select
import signal
import socket
import subprocess
import sys
import termios
import tty
import types
import unittest

from prefork_interp import _monitor, _sys, _wire

# The script: tells the test it is ready, then, at the signal the
# monitor sends when the client goes away, what its terminal (the fd
# numbered argv[1]) looked like at that moment: whether it was back in
# canonical mode.
SCRIPT = r"""
import os, signal, sys, termios
def hup(sig, frame):
    canonical = termios.tcgetattr(int(sys.argv[1]))[3] & termios.ICANON
    os.write(1, b"canonical\n" if canonical else b"raw\n")
    os._exit(0)
signal.signal(signal.SIGHUP, hup)
signal.signal(signal.SIGINT, hup)
signal.signal(signal.SIGWINCH, lambda sig, frame: os.write(1, b"winch\n"))
os.write(1, b"ready\n")
while True:
    signal.pause()
"""


def wire_settings(attrs):
    """What a client sends of tcgetattr's list."""
    return _wire.TerminalSettings(*attrs[:6], cc=[c if isinstance(c, int) else c[0]
                                                  for c in attrs[6]])


class Restore(unittest.TestCase):
    def setUp(self):
        self.logged = []
        log = lambda priority, message: self.logged.append(message)  # noqa: E731
        log.reopen = lambda: None
        settings = types.SimpleNamespace(log=log, spare_handlers=1, interrupt_grace=None)
        self.monitor = _monitor.Monitor(None, settings)
        # The monitor ignores the signals it forwards: not this process's.
        self.addCleanup(lambda: [signal.signal(sig, old)
                                 for sig, old in self.monitor.saved.items()])
        # A monitor that blocks where it must not fails the test.
        signal.signal(signal.SIGALRM, self.stuck)
        signal.alarm(30)
        self.addCleanup(signal.alarm, 0)
        self.master, self.terminal = os.openpty()
        self.addCleanup(os.close, self.master)
        self.addCleanup(os.close, self.terminal)
        self.found = termios.tcgetattr(self.terminal)
        self.assertTrue(self.found[3] & termios.ICANON)
        self.client, conn = socket.socketpair()
        self.client.settimeout(5)  # a status that never comes fails, not hangs
        self.addCleanup(self.client.close)
        # A group of its own, as an executor's.
        self.script = subprocess.Popen([sys.executable, "-c", SCRIPT, str(self.terminal)],
                                       stdout=subprocess.PIPE, pass_fds=(self.terminal,),
                                       preexec_fn=lambda: os.setpgid(0, 0))
        self.addCleanup(self.reap)
        self.assertEqual(self.script.stdout.readline(), b"ready\n")
        spare = _monitor._Spare(self.script.pid, None, None, None)
        self.call = _monitor._Call(spare, conn)
        self.addCleanup(conn.close)
        self.addCleanup(self.call.forget_terminal)
        self.call.phase = _monitor._RUNNING
        self.call.extended = True
        self.call.script = self.script.pid  # a terminal of its own: SIGHUP

    def stuck(self, sig, frame):
        raise TimeoutError("stuck for 30 s")

    def reap(self):
        if self.script.poll() is None:
            self.script.kill()
        self.script.wait()
        self.script.stdout.close()

    def restore_message(self):
        """As the client does: the terminal raw, then the settings it
        found and those it left, as the terminal has them."""
        found = wire_settings(termios.tcgetattr(self.terminal))
        self.raw()
        return _wire.encode_restore(found, wire_settings(termios.tcgetattr(self.terminal)))

    def make_raw(self, terminal=None, hear=True):
        """The client's 'R', with the terminal (or what is sent as that);
        the monitor reads it (if hear)."""
        message = self.restore_message()
        self.send(_wire.encode_frame(_wire.FRAME_RESTORE, len(message)) + message)
        socket.send_fds(self.client, [_wire.FD_MESSAGE_BYTE],
                        [self.terminal if terminal is None else terminal])
        if hear:
            self.hear()

    def raw(self):
        """The terminal raw, as a full-screen program may leave it: the
        control characters changed too."""
        tty.setraw(self.terminal)
        self.change(VINTR=b"\x01", VMIN=0, VTIME=5)

    def change(self, lflag=0, **cc):
        attrs = termios.tcgetattr(self.terminal)
        attrs[3] |= lflag
        for name, value in cc.items():
            attrs[6][getattr(termios, name)] = value
        termios.tcsetattr(self.terminal, termios.TCSANOW, attrs)
        return termios.tcgetattr(self.terminal)

    def send(self, data):
        self.client.sendall(data)

    def hear(self):
        """What the monitor does when poll finds the call socket readable."""
        self.assertTrue(select.select([self.call.conn], [], [], 5)[0])
        self.monitor.hear_client(self.call)

    def client_gone(self):
        self.client.close()
        self.hear()
        self.assertEqual(self.call.phase, _monitor._ABANDONED)

    def script_saw(self, timeout=5):
        """What the script found on its terminal at the monitor's signal
        (None: it said nothing)."""
        if not select.select([self.script.stdout], [], [], timeout)[0]:
            return None
        return self.script.stdout.readline()

    def assertNotOpen(self, fd):
        with self.assertRaises(OSError):
            os.fstat(fd)

    def test_client_gone_puts_the_settings_back_before_the_signal(self):
        self.make_raw()
        kept = self.call.restore[2]
        self.assertNotEqual(termios.tcgetattr(self.terminal), self.found)
        self.client_gone()
        self.assertEqual(termios.tcgetattr(self.terminal), self.found)
        self.assertEqual(self.script_saw(), b"canonical\n")
        self.assertIsNone(self.call.restore)
        self.assertNotOpen(kept)
        self.assertEqual(self.logged, [])

    def test_a_shell_that_took_its_terminal_back_keeps_its_mode(self):
        # As bash's readline does once it has seen the client die: its
        # own mode (here: signals on), which the monitor leaves alone.
        self.make_raw()
        shells = self.change(lflag=termios.ISIG)
        self.client_gone()
        self.assertEqual(termios.tcgetattr(self.terminal), shells)
        self.assertEqual(self.script_saw(), b"raw\n")
        self.assertIsNone(self.call.restore)

    def test_a_control_character_set_since_keeps_the_terminal(self):
        self.make_raw()
        shells = self.change(VINTR=b"\x03")
        self.client_gone()
        self.assertEqual(termios.tcgetattr(self.terminal), shells)

    def test_settings_and_fd_in_pieces(self):
        message = self.restore_message()
        frame = _wire.encode_frame(_wire.FRAME_RESTORE, len(message))
        # An 'S' first, in the same read: frames before an 'R' still act.
        self.send(_wire.encode_frame(_wire.FRAME_SIGNAL, signal.SIGWINCH) + frame[:3])
        self.hear()
        self.assertEqual(self.script_saw(), b"winch\n")
        self.send(frame[3:] + message[:10])
        self.hear()
        self.send(message[10:])
        self.hear()
        self.assertIsNone(self.call.restore)
        self.assertEqual(self.call.phase, _monitor._RUNNING)
        socket.send_fds(self.client, [_wire.FD_MESSAGE_BYTE], [self.terminal])
        self.hear()
        self.assertIsNotNone(self.call.restore)
        self.client_gone()
        self.assertEqual(termios.tcgetattr(self.terminal), self.found)
        self.assertEqual(self.script_saw(), b"canonical\n")

    def test_nothing_to_put_back_after_r_0(self):
        self.make_raw()
        kept = self.call.restore[2]
        self.send(_wire.encode_frame(_wire.FRAME_RESTORE, 0))
        self.hear()
        self.assertIsNone(self.call.restore)
        self.assertNotOpen(kept)
        raw = termios.tcgetattr(self.terminal)
        self.client_gone()
        self.assertEqual(termios.tcgetattr(self.terminal), raw)
        self.assertEqual(self.script_saw(), b"raw\n")

    def test_a_second_r_replaces_the_first(self):
        self.make_raw()
        first = self.call.restore[2]
        self.make_raw()  # from raw: the second settings to put back are raw
        self.assertNotOpen(first)
        raw = termios.tcgetattr(self.terminal)
        self.client_gone()
        self.assertEqual(termios.tcgetattr(self.terminal), raw)

    def status_sent(self):
        """The script's status to the client, which still has its terminal
        raw: the monitor keeps what to put back, the call ending; the
        terminal, raw, is left alone."""
        self.make_raw()
        kept = self.call.restore[2]
        raw = termios.tcgetattr(self.terminal)
        self.call.phase = _monitor._REPORTED
        self.monitor.send_status(self.call, 0)
        self.assertEqual(self.client.recv(5), _wire.encode_frame(_wire.FRAME_STATUS, 0))
        self.assertEqual(self.call.restore[2], kept)
        self.assertEqual(list(self.monitor.ending.values()), [self.call])
        self.assertEqual(termios.tcgetattr(self.terminal), raw)
        return kept, raw

    def hear_ending(self):
        """What the monitor does when poll finds an ending call readable."""
        self.assertTrue(select.select([self.call.conn], [], [], 5)[0])
        self.monitor.hear_ending(self.call)

    def test_status_sent_then_r_0_drops_them(self):
        kept, raw = self.status_sent()
        self.send(_wire.encode_frame(_wire.FRAME_RESTORE, 0))
        self.hear_ending()
        self.assertEqual(self.monitor.ending, {})
        self.assertIsNone(self.call.restore)
        self.assertNotOpen(kept)
        self.assertEqual(termios.tcgetattr(self.terminal), raw)

    def test_client_gone_after_its_status_puts_them_back(self):
        # Killed as the script ended: its pseudo-terminal's master closed
        # (the script's hang-up) before its call socket, which took the
        # status.
        kept, _ = self.status_sent()
        self.client.close()
        self.hear_ending()
        self.assertEqual(self.monitor.ending, {})
        self.assertEqual(termios.tcgetattr(self.terminal), self.found)
        self.assertNotOpen(kept)
        self.assertEqual(self.logged, [])

    def test_a_signal_after_the_status_goes_nowhere(self):
        kept, raw = self.status_sent()
        self.send(_wire.encode_frame(_wire.FRAME_SIGNAL, signal.SIGWINCH))
        self.hear_ending()
        self.assertEqual(self.call.restore[2], kept)
        self.assertEqual(termios.tcgetattr(self.terminal), raw)
        self.assertIsNone(self.script_saw(timeout=0.5))
        self.client.close()
        self.hear_ending()
        self.assertEqual(termios.tcgetattr(self.terminal), self.found)

    def test_a_new_executor_holds_nothing_of_an_ending_call(self):
        kept, _ = self.status_sent()
        conn = self.call.conn.fileno()
        said, says = os.pipe()
        self.addCleanup(os.close, said)
        pid = os.fork()
        if pid == 0:
            try:
                self.monitor.close_in_child(())
                still = []
                for fd in (kept, conn):
                    try:
                        os.fstat(fd)
                        still.append(str(fd))
                    except OSError:
                        pass
                os.write(says, (" ".join(still) or "closed").encode())
            finally:
                os._exit(0)
        os.close(says)
        os.waitpid(pid, 0)
        self.assertEqual(os.read(said, 64), b"closed")

    def test_status_after_the_client_went_puts_them_back(self):
        # The client SIGKILLed: its terminal's hang-up ends the script,
        # and the keeper's 'x' is handled before the client's EOF (and
        # its 'R' too) is read.
        self.make_raw(hear=False)
        self.client.close()
        self.monitor.send_status(self.call, 0)
        self.assertEqual(termios.tcgetattr(self.terminal), self.found)
        self.assertIsNone(self.call.restore)

    def test_status_with_an_r_unread_keeps_it(self):
        self.make_raw(hear=False)
        raw = termios.tcgetattr(self.terminal)
        # Signals unread when the script has ended go nowhere: its pid
        # may be another process's.
        self.send(_wire.encode_frame(_wire.FRAME_SIGNAL, signal.SIGWINCH))
        self.monitor.send_status(self.call, 0)
        self.assertEqual(self.client.recv(5), _wire.encode_frame(_wire.FRAME_STATUS, 0))
        self.assertEqual(list(self.monitor.ending.values()), [self.call])
        self.assertEqual(self.call.fds, [])
        self.assertEqual(termios.tcgetattr(self.terminal), raw)
        self.assertIsNone(self.script_saw(timeout=0.5))

    def test_settings_that_cannot_go_back_are_no_error(self):
        # tcgetattr fails on what came as the terminal (as on one revoked
        # or gone): nothing goes back, the signal still goes.
        not_a_terminal, other_end = os.pipe()
        self.addCleanup(os.close, other_end)
        self.make_raw(not_a_terminal)
        os.close(not_a_terminal)
        kept = self.call.restore[2]
        self.client_gone()
        self.assertEqual(self.script_saw(), b"raw\n")
        self.assertIsNone(self.call.restore)
        self.assertNotOpen(kept)
        self.assertEqual(self.logged, [])

    def test_a_new_executor_holds_no_terminal(self):
        # The monitor forks executors-to-be while calls run: a script
        # there must not keep another caller's terminal open.
        self.make_raw()
        kept = self.call.restore[2]
        self.call.pidfd = _sys.pidfd_open(self.script.pid)
        self.addCleanup(os.close, self.call.pidfd)
        self.monitor.calls[self.script.pid] = self.call
        said, says = os.pipe()
        self.addCleanup(os.close, said)
        pid = os.fork()
        if pid == 0:
            try:
                self.monitor.close_in_child(())
                try:
                    os.fstat(kept)
                    os.write(says, b"open")
                except OSError:
                    os.write(says, b"closed")
            finally:
                os._exit(0)
        os.close(says)
        os.waitpid(pid, 0)
        self.assertEqual(os.read(said, 16), b"closed")

    def bad_message(self, length, message=b"", saw=b"canonical\n"):
        """An 'R' of this length, with these bytes: the call ends as if the
        client had gone (the script sees its terminal as the test left
        it), and the monitor says why."""
        self.send(_wire.encode_frame(_wire.FRAME_RESTORE, length) + message)
        self.hear()
        self.assertEqual(self.call.phase, _monitor._ABANDONED)
        self.assertEqual(self.logged, ["call of executor %d: terminal restore message of %d "
                                       "bytes (a count C, then twice 24 + C, C at most 64)"
                                       % (self.script.pid, length)])
        self.assertEqual(self.script_saw(), saw)

    def test_a_message_too_short_is_refused_before_its_bytes(self):
        self.bad_message(1 + 2 * _wire.TERMINAL_SETTINGS_FIXED - 1)

    def test_a_message_too_long_is_refused_before_its_bytes(self):
        self.bad_message(_wire.MAX_RESTORE_LEN + 1)

    def test_4_gib_are_refused_before_their_bytes(self):
        self.bad_message(2**32 - 1)

    def test_a_message_whose_count_disagrees_is_refused(self):
        message = self.restore_message()
        self.bad_message(len(message), bytes([message[0] + 1]) + message[1:], b"raw\n")

    def test_settings_without_the_terminal_are_the_client_gone(self):
        message = self.restore_message()
        self.send(_wire.encode_frame(_wire.FRAME_RESTORE, len(message)) + message + b"\0")
        self.hear()
        self.assertEqual(self.call.phase, _monitor._ABANDONED)
        self.assertEqual(len(self.logged), 1)
        self.assertIn("without the caller's terminal", self.logged[0])


if __name__ == "__main__":
    unittest.main()
