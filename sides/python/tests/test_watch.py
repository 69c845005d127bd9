"""The server's one inotify instance, shared by the reload's files and
its own socket watch (capability `watch`): which events are whose, and
when the socket counts as gone. Linux only, as the side is.

    cd sides/python && python3 -m unittest discover -s tests
"""

import os
import socket
import tempfile
import unittest

from prefork_interp import _reload, _server, _sys


def no_log(priority, message):
    pass


class SharedInstance(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.file = os.path.join(self.dir.name, "f")
        with open(self.file, "w"):
            pass
        self.path = os.path.join(self.dir.name, "s")
        self.listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(self.listener.close)
        self.listener.bind(self.path)
        self.inotify = _sys.Inotify()
        self.addCleanup(self.inotify.close)
        started_ns = os.lstat(self.path).st_mtime_ns
        self.reload = _reload.ReloadWatch([self.file], started_ns, no_log)
        self.reload.watch_with(self.inotify)
        self.watch = _server.SocketWatch(os.fsencode(self.path), started_ns)
        self.watch.watch_with(self.inotify)

    def sorted_events(self):
        return _server.sort_events(self.inotify.read_events(), self.watch)

    def test_another_name_in_the_directory_is_nobodys(self):
        with open(os.path.join(self.dir.name, "other"), "w"):
            pass
        self.assertEqual(self.sorted_events(), (False, False))

    def test_a_file_that_cannot_be_watched_is_said_once(self):
        said = []
        unwatchable = os.path.join(self.file, "x")  # ENOTDIR, not ENOENT
        reload = _reload.ReloadWatch([self.file, unwatchable], 2**62,
                                     lambda priority, message: said.append(message))
        reload.watch_with(self.inotify)
        text = "cannot watch %s (Not a directory): files checked at every call" % unwatchable
        self.assertEqual(reload.degraded, text)
        self.assertEqual(said, ["degraded: " + text])
        # Every call checks (and cannot examine it: a reason to reload),
        # and tries no watch again.
        self.assertEqual(reload.changed(), unwatchable)
        self.assertEqual([m for m in said if m.startswith("degraded")], ["degraded: " + text])

    def test_a_watched_file_is_the_files(self):
        os.utime(self.file)
        self.assertEqual(self.sorted_events(), (True, False))
        self.assertIsNone(self.reload.degraded)

    def test_the_socket_removed(self):
        self.assertTrue(self.watch.still_there())
        os.unlink(self.path)
        self.assertEqual(self.sorted_events(), (False, True))
        self.assertFalse(self.watch.still_there())

    def test_the_socket_replaced_by_rename(self):
        other = os.path.join(self.dir.name, "t")
        with open(other, "w"):
            pass
        self.inotify.read_events()
        os.rename(other, self.path)
        self.assertEqual(self.sorted_events(), (False, True))
        self.assertFalse(self.watch.still_there(), "another inode at the path")

    def test_lost_events_may_mean_either(self):
        self.assertEqual(_server.sort_events([(-1, _sys.IN_Q_OVERFLOW, b"")], self.watch),
                         (True, True))

    def test_without_a_socket_watch_every_event_is_the_files(self):
        os.unlink(self.path)
        self.assertEqual(_server.sort_events(self.inotify.read_events(), None), (True, False))


class SocketWatchAlone(unittest.TestCase):
    def test_a_socket_not_the_clients_is_gone_from_the_start(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "s")
            with socket.socket(socket.AF_UNIX) as listener:
                listener.bind(path)
                mtime = os.lstat(path).st_mtime_ns
                self.assertTrue(_server.SocketWatch(os.fsencode(path), mtime).still_there())
                self.assertFalse(_server.SocketWatch(os.fsencode(path), mtime + 1).still_there())
                self.assertFalse(_server.SocketWatch(os.fsencode(path + "x"), mtime).still_there())

    def test_idle_bound(self):
        bound = _server.bounded_idle_timeout
        self.assertEqual([bound(None, None), bound(None, 5), bound(9, None), bound(9, 5),
                          bound(3, 5)], [None, 5, 9, 5, 3])


class Degraded(unittest.TestCase):
    def test_no_inotify_texts(self):
        e = OSError(24, os.strerror(24))
        self.assertEqual(_server.no_inotify(e, True),
                         "no inotify (Too many open files): socket path checked every 5 s, "
                         "files at every call")
        self.assertEqual(_server.no_inotify(e, False),
                         "no inotify (Too many open files): files checked at every call")


if __name__ == "__main__":
    unittest.main()
