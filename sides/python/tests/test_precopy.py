"""The idle spare's pre-copy (_precopy): which mappings and pages it
picks, that it copies them, and that a call waiting, or coming while it
copies, stops it. On real memory: a child forked from this process,
whose pages are shared with it copy-on-write as a spare's are with its
server, copies for real with madvise(MADV_POPULATE_WRITE).

    cd sides/python && python3 -m unittest discover -s tests
"""

import json
import os
import signal
import socket
import unittest

from prefork_interp import _precopy

# Written page by page in this process, so shared with a forked child:
# what the child copies is mostly this.
BALLAST_KB = 32 << 10

MAPS = b"""\
00400000-00401000 r--p 00000000 08:01 1234  /usr/bin/python3.11
00401000-00402000 r-xp 00001000 08:01 1234  /usr/bin/python3.11
00402000-00403000 rw-p 00002000 08:01 1234  /usr/bin/python3.11
00403000-00404000 rw-p 00000000 00:00 0
01000000-02000000 rw-p 00000000 00:00 0     [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000100000-7f0000200000 ---p 00000000 00:00 0
7f0000200000-7f0000300000 rw-s 00000000 00:01 99    /dev/zero (deleted)
7f0000300000-7f0000400000 rw-p 00000000 00:00 0     [anon:glibc: malloc arena]
7f0000400000-7f0000401000 rw-p 00000000 08:01 77    /usr/lib/a library with spaces.so
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0     [stack]
7ffc00100000-7ffc00104000 r--p 00000000 00:00 0     [vvar]
7ffc00104000-7ffc00106000 r-xp 00000000 00:00 0     [vdso]
"""

PRESENT = 1 << 63
SWAPPED = 1 << 62
FILE = 1 << 61
EXCLUSIVE = 1 << 56


class Picking(unittest.TestCase):
    def test_private_writable_mappings_but_the_stack(self):
        self.assertEqual(_precopy.regions(MAPS), [
            (0x00402000, 0x00403000),  # the interpreter's data section
            (0x00403000, 0x00404000),  # its bss
            (0x01000000, 0x02000000),  # [heap]
            (0x7f0000000000, 0x7f0000100000),  # an anonymous mapping (arenas)
            (0x7f0000300000, 0x7f0000400000),  # a named anonymous one
            (0x7f0000400000, 0x7f0000401000),  # a library's data section
        ])

    def test_present_anonymous_pages_shared_with_another_process(self):
        shared = PRESENT | 0x1234  # a page frame number, where shown
        entries = [
            shared, shared,                 # 0-1: copied
            PRESENT | EXCLUSIVE,            # 2: ours alone already
            0,                              # 3: never touched
            shared,                         # 4: copied
            PRESENT | FILE,                 # 5: a file's page, never written
            SWAPPED,                        # 6: swapped out
            shared, shared, shared,         # 7-9: copied
        ]
        self.assertEqual(list(_precopy.runs(entries)), [(0, 2), (4, 1), (7, 3)])
        self.assertEqual(list(_precopy.runs([])), [])
        self.assertEqual(list(_precopy.runs([0, shared])), [(1, 1)])


def private_dirty_kb():
    with open("/proc/self/smaps_rollup", "rb") as f:
        for line in f:
            if line.startswith(b"Private_Dirty:"):
                return int(line.split()[1])
    raise AssertionError("no Private_Dirty in /proc/self/smaps_rollup")


class Copying(unittest.TestCase):
    """precopy() in a child forked from this process (its spare), with a
    socket pair for the hand-over (the monitor's end stays here)."""

    @classmethod
    def setUpClass(cls):
        why = _precopy.supported()
        if why is not None:
            raise unittest.SkipTest(why)
        cls.ballast = bytearray(b"x") * (BALLAST_KB << 10)

    @classmethod
    def tearDownClass(cls):
        del cls.ballast

    def in_child(self, call_now=False, call_after=None, most_bytes=_precopy.MOST_BYTES):
        """The child's Private_Dirty (kB) before precopy(), when a call
        came (None: none came meanwhile), and after it returned. A call
        is a byte on the hand-over socket: there before precopy() starts
        (call_now), or sent from a timer call_after seconds into it."""
        monitor, handover = socket.socketpair()
        self.addCleanup(monitor.close)
        self.addCleanup(handover.close)
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(report_r)
                seen = {"before": private_dirty_kb(), "came": None}

                def call_comes(*_):
                    seen["came"] = private_dirty_kb()
                    monitor.send(b"\0")

                if call_now:
                    monitor.send(b"\0")
                if call_after is not None:
                    signal.signal(signal.SIGALRM, call_comes)
                    signal.setitimer(signal.ITIMER_REAL, call_after)
                _precopy.precopy(handover, most_bytes)
                signal.setitimer(signal.ITIMER_REAL, 0)
                seen["after"] = private_dirty_kb()
                os.write(report_w, json.dumps(seen).encode())
            finally:
                os._exit(0)
        os.close(report_w)
        with os.fdopen(report_r, "rb") as report:
            seen = json.loads(report.read() or b"null")
        os.waitpid(pid, 0)
        self.assertIsNotNone(seen, "the child reported nothing")
        return seen["before"], seen["came"], seen["after"]

    def test_an_idle_spare_copies_its_pages(self):
        before, _, after = self.in_child()
        self.assertGreater(after - before, BALLAST_KB * 9 // 10,
                           "copied %d kB of a %d kB ballast" % (after - before, BALLAST_KB))

    def test_it_copies_no_more_than_its_cap(self):
        cap_kb = BALLAST_KB // 4
        before, _, after = self.in_child(most_bytes=cap_kb << 10)
        # What a Python step allocates besides, a little.
        self.assertLess(after - before, cap_kb + 1024,
                        "copied %d kB with a cap of %d kB" % (after - before, cap_kb))
        self.assertGreater(after - before, cap_kb * 9 // 10,
                           "copied %d kB of its %d kB cap" % (after - before, cap_kb))
        self.assertGreaterEqual(_precopy.MOST_BYTES, 64 << 20, "a cap that copies little")

    def test_a_call_waiting_stops_it_before_it_copies(self):
        before, _, after = self.in_child(call_now=True)
        self.assertLess(after - before, 1024, "copied %d kB with a call waiting" % (after - before))

    def test_a_call_coming_stops_it_within_a_chunk(self):
        before, came, after = self.in_child(call_after=0.002)
        self.assertIsNotNone(came, "no call came while it copied")
        # A chunk is 256 KiB; what a Python step allocates, a little.
        self.assertLess(after - came, 1024, "copied %d kB after the call came" % (after - came))
        self.assertLess(after - before, BALLAST_KB * 9 // 10, "it copied everything")


if __name__ == "__main__":
    unittest.main()
