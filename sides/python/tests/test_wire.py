"""prefork_interp._wire against sides/wire-vectors.json (through the
symlink tests/wire-vectors.json), every group Python's codec has, both
ways where it encodes and decodes; the groups only a client decodes are
named in LEFT_TO_OTHERS, and a group neither tested nor named fails.

    cd sides/python && python3 -m unittest discover -s tests
"""

import json
import os
import unittest

from prefork_interp import _wire

VECTORS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire-vectors.json")
with open(VECTORS_PATH, encoding="utf-8") as _f:
    VECTORS = json.load(_f)

# Groups Python's side never decodes nor encodes: the client's.
LEFT_TO_OTHERS = {
    "greeting_header": "the client reads greetings",
    "greeting_xdata_decode": "the client reads greetings",
}


def h(text):
    return bytes.fromhex(text)


def settings_of(v):
    return _wire.TerminalSettings(v["iflag"], v["oflag"], v["cflag"], v["lflag"], v["ispeed"],
                                  v["ospeed"], v["cc"])


def groups():
    return [name for name in VECTORS if name != "about"]


def request_kind(byte, second=0):
    """A checked request byte (and second byte) as the vectors' kind."""
    return {
        "extended": bool(byte & _wire.REQUEST_BYTE_EXTENDED),
        "context": bool(byte & _wire.REQUEST_FLAG_CONTEXT),
        "pty": [bool(byte & flag) for flag in _wire.REQUEST_FLAG_PTY],
        "pty_background": bool(byte & _wire.REQUEST_FLAG_PTY_BACKGROUND),
        "limits": bool(byte & _wire.REQUEST_FLAG_LIMITS),
        "closed": [bool(second & flag) for flag in _wire.REQUEST_SECOND_CLOSED],
        "caller_signals": bool(second & _wire.REQUEST_SECOND_CALLER_SIGNALS),
    }


class WireVectors(unittest.TestCase):
    def each(self, group):
        """The group's vectors, each in a subTest; the group counts as
        tested."""
        self.assertIn(group, VECTORS, "no group %s in the vectors" % group)
        for vector in VECTORS[group]["vectors"]:
            with self.subTest(group=group, vector=vector["name"]):
                yield vector

    def assertProtocolError(self, kind, function, *args):
        with self.assertRaises(_wire.ProtocolError) as caught:
            function(*args)
        self.assertEqual(caught.exception.kind, kind)
        self.assertTrue(str(caught.exception))

    def test_every_group_is_tested_or_left_to_others(self):
        tested = {name[len("test_"):] for name in dir(self) if name.startswith("test_")}
        for group in groups():
            with self.subTest(group=group):
                self.assertTrue(group in tested or group in LEFT_TO_OTHERS,
                                "group %s is neither tested nor left to others" % group)
                self.assertFalse(group in tested and group in LEFT_TO_OTHERS)
        for group in LEFT_TO_OTHERS:
            self.assertIn(group, VECTORS, "LEFT_TO_OTHERS names no group: %s" % group)
        for group in VECTORS:
            if group != "about":
                self.assertIn("from", VECTORS[group])
                self.assertIn("to", VECTORS[group])

    def test_greeting(self):
        for v in self.each("greeting"):
            self.assertEqual(_wire.encode_greeting(h(v["xdata"])), h(v["bytes"]))

    def test_greeting_xdata(self):
        for v in self.each("greeting_xdata"):
            env, start = (None if v[key] is None
                          else (v[key]["digest"], [h(name) for name in v[key]["names"]])
                          for key in ("env", "start"))
            xdata = _wire.encode_greeting_xdata(v["offered"], v["world"], env, start,
                                                v["terminals"], v["degraded"], v["served"],
                                                v["running"], v["idle_ms"])
            self.assertEqual(xdata, h(v["bytes"]))

    def test_our_caps_are_the_fullest_offer(self):
        # Offered in OUR_CAPS' order (filtered by the client's): the
        # vectors' fullest offer is every capability, in that order.
        fullest = max((v["offered"] for v in VECTORS["greeting_xdata"]["vectors"]), key=len)
        self.assertEqual(list(_wire.OUR_CAPS), fullest)

    def test_env_dependency(self):
        for v in self.each("env_dependency"):
            values = {}
            for name, value in v["values"]:
                values.setdefault(h(name), None if value is None else h(value))
            got = _wire.env_dependency([h(name) for name in v["names"]], values.get)
            want = v["dependency"]
            if want is None:
                self.assertIsNone(got)
            else:
                self.assertEqual(got, (want["digest"], [h(name) for name in want["names"]]))
                self.assertEqual(_wire.env_digest(got[1], values.get), want["digest"])

    def test_world_digest(self):
        for v in self.each("world_digest"):
            self.assertEqual(len(v["namespaces"]), len(_wire.WORLD_NAMESPACES))
            self.assertEqual(_wire.world_digest(v["namespaces"], h(v["cgroups"])), v["digest"])

    def test_setup_env(self):
        for v in self.each("setup_env"):
            value = v["value"].encode()
            if "error" in v:
                self.assertProtocolError(v["error"], _wire.decode_setup_env, value)
                continue
            setup = _wire.decode_setup_env(value)
            self.assertEqual(setup["started_secs"], v["started_secs"])
            self.assertEqual(setup["started_nsecs"], v["started_nsecs"])
            self.assertEqual([setup["listen"], setup["call"], setup["watch_in"],
                              setup["watch_err"]], v["fds"])
            self.assertEqual(setup["client_caps"], v["client_caps"])
            self.assertEqual(setup["idle_limit"], v["idle_limit"])
            keeper = v["keeper"]
            self.assertEqual(setup["keeper"], None if keeper is None else keeper.encode())

    def decode_request(self, data):
        byte = _wire.check_request_byte(data[0])
        second = 0
        if _wire.has_second_request_byte(byte):
            second = _wire.check_second_request_byte(data[1])
            self.assertEqual(len(data), 2)
        else:
            self.assertEqual(len(data), 1)
        return request_kind(byte, second)

    def test_request(self):
        # Decoding only: a client encodes requests.
        for v in self.each("request"):
            if "error" in v:
                self.assertProtocolError(v["error"], self.decode_request, h(v["bytes"]))
            else:
                self.assertEqual(self.decode_request(h(v["bytes"])), v["kind"])

    def test_payload(self):
        # Decoding only: a client encodes payloads.
        for v in self.each("payload"):
            if "error" in v:
                self.assertProtocolError(v["error"], _wire.decode_payload, h(v["bytes"]))
                continue
            env, args = _wire.decode_payload(h(v["bytes"]))
            self.assertEqual(env, [h(e) for e in v["env"]])
            self.assertEqual(args, [h(a) for a in v["args"]])

    def test_payload_len(self):
        for v in self.each("payload_len"):
            if "error" in v:
                self.assertProtocolError(v["error"], _wire.decode_payload_len, h(v["bytes"]))
            else:
                self.assertEqual(_wire.decode_payload_len(h(v["bytes"])), v["len"])

    def test_context_umask(self):
        for v in self.each("context_umask"):
            self.assertEqual(_wire.decode_context_umask(h(v["bytes"])), v["umask"])
            if not v.get("decode_only"):
                self.assertEqual(_wire.encode_context_umask(v["umask"]), h(v["bytes"]))

    def test_limits(self):
        # Decoding only: a client encodes limits.
        for v in self.each("limits"):
            data = h(v["bytes"])
            if "error" in v:
                self.assertProtocolError(v["error"], _wire.decode_limits, data[0], data[1:])
                continue
            entries, nice, oom = _wire.decode_limits(data[0], data[1:])
            self.assertEqual([list(e) for e in entries],
                             [[r, int(soft), int(hard)] for r, soft, hard in v["rlimits"]])
            self.assertEqual((nice, oom), (v["nice"], v["oom_score_adj"]))

    def test_caller_signals(self):
        for v in self.each("caller_signals"):
            data = h(v["bytes"])
            self.assertEqual(_wire.decode_caller_signals(data), (v["ignored"], v["blocked"]))
            self.assertEqual(_wire.encode_caller_signals(v["ignored"], v["blocked"]), data)

    def test_status(self):
        for v in self.each("status"):
            self.assertEqual(_wire.decode_status(h(v["bytes"])), v["wait_status"])
            if not v.get("decode_only"):
                self.assertEqual(_wire.encode_status(v["wait_status"]), h(v["bytes"]))

    def test_frame(self):
        for v in self.each("frame"):
            kind = v["kind"].encode()
            self.assertEqual(_wire.decode_frame(h(v["bytes"])), (kind, v["value"]))
            if not v.get("decode_only"):
                self.assertEqual(_wire.encode_frame(kind, v["value"]), h(v["bytes"]))
        kinds = {_wire.FRAME_SIGNAL, _wire.FRAME_EXECUTOR_PID, _wire.FRAME_STATUS,
                 _wire.FRAME_FOREGROUND, _wire.FRAME_STOPPED, _wire.FRAME_RESTORE,
                 _wire.KEEPER_STOPPED,
                 _wire.KEEPER_STATUS, _wire.KEEPER_FOREGROUND}
        self.assertEqual({v["kind"].encode() for v in VECTORS["frame"]["vectors"]}, kinds)

    def test_terminal_settings(self):
        for v in self.each("terminal_settings"):
            data = h(v["bytes"])
            if "error" in v:
                self.assertProtocolError(v["error"], _wire.decode_terminal_settings, data)
                # The one line says how many bytes came, and the bounds.
                with self.assertRaises(_wire.ProtocolError) as caught:
                    _wire.decode_terminal_settings(data)
                self.assertEqual(str(caught.exception),
                                 "terminal settings of %d bytes (24 to 88)" % len(data))
                continue
            want = settings_of(v)
            self.assertEqual(_wire.decode_terminal_settings(data), want)
            self.assertEqual(_wire.encode_terminal_settings(want), data)

    def test_terminal_settings_bounds(self):
        # The vectors give one byte either side; the bounds themselves
        # decode, every word in its place (the vectors' speeds are equal,
        # their flags far apart).
        for size in (_wire.TERMINAL_SETTINGS_FIXED, _wire.MAX_TERMINAL_SETTINGS):
            with self.subTest(size=size):
                data = bytes(range(size))
                settings = _wire.decode_terminal_settings(data)
                self.assertEqual(settings, _wire.TerminalSettings(
                    0x00010203, 0x04050607, 0x08090a0b, 0x0c0d0e0f, 0x10111213, 0x14151617,
                    list(range(_wire.TERMINAL_SETTINGS_FIXED, size))))
                self.assertEqual(_wire.encode_terminal_settings(settings), data)

    def test_restore(self):
        for v in self.each("restore"):
            data = h(v["bytes"])
            if "error" in v:
                self.assertProtocolError(v["error"], _wire.decode_restore, data)
                with self.assertRaises(_wire.ProtocolError) as caught:
                    _wire.decode_restore(data)
                self.assertEqual(str(caught.exception),
                                 "terminal restore message of %d bytes (a count C, then twice "
                                 "24 + C, C at most 64)" % len(data))
                continue
            want = settings_of(v["put_back"]), settings_of(v["left"])
            self.assertEqual(_wire.decode_restore(data), want)
            self.assertEqual(_wire.encode_restore(*want), data)
            # What a monitor checks before it waits for the bytes lets
            # every good message through.
            self.assertEqual(_wire.check_restore_len(len(data)), len(data))

    def test_restore_lengths(self):
        # The shortest and longest messages decode; a monitor refuses a
        # length outside them before it waits for the bytes.
        for count in (0, 64):
            with self.subTest(count=count):
                settings = _wire.TerminalSettings(1, 2, 3, 4, 5, 6, list(range(count)))
                data = _wire.encode_restore(settings, settings._replace(iflag=7))
                self.assertEqual(_wire.check_restore_len(len(data)), len(data))
                self.assertEqual(_wire.decode_restore(data),
                                 (settings, settings._replace(iflag=7)))
        for length in (0, 48, _wire.MAX_RESTORE_LEN + 1, 2**32 - 1):
            with self.subTest(length=length):
                self.assertProtocolError("BadRestore", _wire.check_restore_len, length)

    def test_restore_encodes_as_many_control_characters_as_put_back_has(self):
        put_back = _wire.TerminalSettings(1, 2, 3, 4, 5, 6, list(range(1, 9)))
        for left_cc, want in (([9] * 10, [9] * 8), ([9] * 3, [9, 9, 9, 0, 0, 0, 0, 0])):
            with self.subTest(left=len(left_cc)):
                left = put_back._replace(cc=left_cc)
                self.assertEqual(_wire.decode_restore(_wire.encode_restore(put_back, left)),
                                 (put_back, left._replace(cc=want)))
        many = put_back._replace(cc=[1] * 70)
        self.assertEqual(_wire.decode_restore(_wire.encode_restore(many, many)),
                         (many._replace(cc=[1] * 64),) * 2)

    def test_executor_ready(self):
        for v in self.each("executor_ready"):
            data = h(v["bytes"])
            if "error" in v:
                self.assertProtocolError(v["error"], _wire.decode_executor_ready, data[:2])
                continue
            byte = _wire.decode_executor_ready(data[:2])
            self.assertEqual(request_kind(byte), v["kind"])
            on_pty = bool(byte & _wire.REQUEST_ANY_PTY)
            self.assertEqual(_wire.decode_script_pid(data[2:]) if on_pty else None,
                             v["script_pid"])
            self.assertEqual(len(data), 6 if on_pty else 2)
            if not v.get("decode_only"):
                self.assertEqual(_wire.encode_executor_ready(byte, v["script_pid"]), data)

    def test_monitor_to_server(self):
        names = {"call_ended": _wire.MONITOR_CALL_ENDED,
                 "call_dropped": _wire.MONITOR_CALL_DROPPED}
        for v in self.each("monitor_to_server"):
            self.assertEqual(names[v["message"]], h(v["bytes"]))

    def test_hand_over(self):
        for v in self.each("hand_over"):
            self.assertEqual(_wire.FD_MESSAGE_BYTE, h(v["bytes"]))
            self.assertEqual(v["fds"], 1)

    def test_quit_line(self):
        for v in self.each("quit_line"):
            reason = h(v["reason"])
            line = _wire.encode_quit_line(int(v["secs"]), reason)
            self.assertEqual(line, h(v["bytes"]))
            # As the server calls it, with its reason as text.
            self.assertEqual(_wire.encode_quit_line(int(v["secs"]),
                                                    reason.decode("utf-8", "surrogateescape")),
                             h(v["bytes"]))

    def test_last_quit(self):
        # Read by a server whose socket went, as by the client's --list.
        for v in self.each("last_quit"):
            want = None if v["secs"] is None else (int(v["secs"]), h(v["reason"]))
            self.assertEqual(_wire.decode_last_quit(h(v["text"])), want)

    def test_env_entry(self):
        for v in self.each("env_entry"):
            split = _wire.split_env_entry(h(v["entry"]))
            want = v["split"]
            self.assertEqual(split, None if want is None else (h(want[0]), h(want[1])))


if __name__ == "__main__":
    unittest.main()
