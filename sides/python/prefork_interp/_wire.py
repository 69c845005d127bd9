"""The bytes on the wire (man/prefork-interp.7): pure encoders and
decoders, no I/O, the standard library only. Named as the Rust side's
src/protocol/codec.rs; sides/wire-vectors.json pins them
(tests/test_wire.py). A decoder's error is a ProtocolError whose kind is
Rust's ProtocolError variant."""

import collections
import struct

ENV_VAR = "PREFORK_INTERP"
VERSION = b"v1"
GREETING_MAGIC = b"PFI\n"
# Greeting xdata a client reads at most; request payloads at most.
MAX_XDATA_LEN = 64 * 1024
MAX_PAYLOAD_LEN = 64 * 1024 * 1024
CAPS_MAGIC = b"pfi-caps 1"
# Negotiated extensions, offered to a client that declared them.
OUR_CAPS = ("signals", "context", "tty", "limits", "closed", "dispositions", "watch",
            "restore")
SETUP_CAPS_PREFIX = b"pfi-caps="
# The setup environment's word bounding the server's idle time (seconds).
SETUP_IDLE_PREFIX = b"pfi-idle="
SETUP_KEEPER_PREFIX = b"pfi-keeper="
# The keeper program's first argument (then the script's pid).
KEEPER_ARGUMENT = b"--session-keeper"

# The request byte: 0 (v1), or 1 (extended) with these flags.
REQUEST_BYTE = 0x00
REQUEST_BYTE_EXTENDED = 0x01
REQUEST_FLAG_CONTEXT = 0x02
# fd 0, 1, 2 as sent is the slave of the call's own pseudo-terminal.
REQUEST_FLAG_PTY = (0x04, 0x08, 0x10)
REQUEST_ANY_PTY = 0x04 | 0x08 | 0x10
# With a pty flag: the script starts in its terminal's background (the
# client is in a pipeline, or in the background itself).
REQUEST_FLAG_PTY_BACKGROUND = 0x20
# A limits message follows the payload and the context message (capability
# "limits"): the caller's resource limits, nice value and oom_score_adj.
REQUEST_FLAG_LIMITS = 0x40
# A second flags byte follows the request byte at once (capability
# "closed"): its bits say the caller's fd 0, 1, 2 is closed (and the fd
# sent for it, /dev/null, is to be closed).
REQUEST_FLAG_SECOND_BYTE = 0x80
REQUEST_SECOND_CLOSED = (0x01, 0x02, 0x04)
REQUEST_ANY_SECOND_CLOSED = 0x01 | 0x02 | 0x04
# Also in the second byte (capability "dispositions"): a caller-signals
# message follows, last: u64be ignored, u64be blocked (bit n-1: signal n,
# 1 to MAX_SIGNAL).
REQUEST_SECOND_CALLER_SIGNALS = 0x08
CALLER_SIGNALS_LEN = 16
MAX_SIGNAL = 64
# The one byte of every message carrying an fd (Rust's FD_MESSAGE_BYTE):
# a call handed over, fds 0, 1, 2 of a request, the context message's
# directory.
FD_MESSAGE_BYTE = b"\0"

# Monitor to server, one byte each: a call has ended; a call ended before
# its script ran (no request: a listing, a caller that went elsewhere).
MONITOR_CALL_ENDED = b"d"
MONITOR_CALL_DROPPED = b"h"
# Executor to monitor: the call runs ('r', the request byte, and on a
# pseudo-terminal of its own the script's pid).
EXECUTOR_READY = b"r"
# Frames between keeper and monitor: the script stopped ('t', signal);
# ended ('x', wait status); monitor to keeper: to the foreground or not.
KEEPER_STOPPED = b"t"
KEEPER_STATUS = b"x"
KEEPER_FOREGROUND = b"f"
# Frames between client and monitor: kind, u32be value.
FRAME_LEN = 5
FRAME_SIGNAL = b"S"
FRAME_EXECUTOR_PID = b"P"
FRAME_STATUS = b"X"
FRAME_FOREGROUND = b"F"
FRAME_STOPPED = b"T"
# Client to monitor (capability "restore"): value N, then a restore
# message of N bytes and, N > 0, FD_MESSAGE_BYTE carrying the caller's
# terminal: the settings to put back on it if the client goes away before
# 'X', and those the client left there. N = 0: nothing to put back.
FRAME_RESTORE = b"R"
# Terminal settings: four flag words and two speeds, u32be each, then the
# sender's control characters; a receiver takes at most 64 of those
# (more than any platform has).
TERMINAL_SETTINGS_FIXED = 24
MAX_TERMINAL_SETTINGS = TERMINAL_SETTINGS_FIXED + 64
# A restore message: a count C of control characters, then two terminal
# settings of C control characters each.
MAX_RESTORE_LEN = 1 + 2 * MAX_TERMINAL_SETTINGS

# No limit, on the wire; the oom_score_adj a caller could not read.
RLIM_INFINITY = 2**64 - 1
OOM_SCORE_UNKNOWN = -2**31
LIMITS_ENTRY_LEN = 17
LIMITS_TAIL_LEN = 8

WORLD_NAMESPACES = ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup", "time")

_FRAME = struct.Struct(">cI")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_LIMITS_ENTRY = struct.Struct(">BQQ")
_LIMITS_TAIL = struct.Struct(">ii")
_CALLER_SIGNALS = struct.Struct(">QQ")
_TERMINAL_SETTINGS_FIXED = struct.Struct(">6I")


class ProtocolError(ValueError):
    """A message that breaks the wire format. kind: Rust's ProtocolError
    variant (BadRequestByte, BadSecondRequestByte, PayloadTooLong,
    PayloadUnterminated, PayloadNoEnvEnd, BadLimits, BadSetupEnv,
    BadExecutorMessage, BadTerminalSettings, BadRestore: those a script
    side decodes); the message says what was wrong."""

    def __init__(self, kind, message):
        ValueError.__init__(self, message)
        self.kind = kind


# ---------------------------------------------------------------- greeting


def encode_greeting(xdata):
    """The greeting: "PFI\\n", u32be xdata length, xdata."""
    return GREETING_MAGIC + _U32.pack(len(xdata)) + xdata


def encode_greeting_xdata(offered, world, env, start, terminals, degraded, served, running,
                          idle_ms):
    """Our greeting's xdata (b"" when nothing is offered: a v1 client
    misreads any): the capabilities offered, `world DIGEST` (world: the
    hex digest, or None), `env DIGEST NAME...` (env: (digest, names) from
    env_dependency, or None; what initialisation read), `start DIGEST
    NAME...` (likewise: what the interpreter read as it started),
    `terminals N` (which of fds 0, 1, 2 were terminals in
    initialisation: bit N for fd N; None: no line), `degraded TEXT`
    (what the server does without, such as inotify; one line, so each
    newline a space; None: no line), then the counters."""
    if not offered:
        return b""
    xdata = b"%s\ncaps %s\n" % (CAPS_MAGIC, ",".join(offered).encode())
    if world is not None:
        xdata += b"world %s\n" % world.encode()
    for keyword, dependency in ((b"env", env), (b"start", start)):
        if dependency is not None:
            digest, names = dependency
            xdata += b"%s %s %s\n" % (keyword, digest.encode(), b" ".join(names))
    if terminals is not None:
        xdata += b"terminals %d\n" % terminals
    if degraded is not None:
        xdata += b"degraded %s\n" % degraded.replace("\n", " ").encode()
    return xdata + b"served %d\nrunning %d\nidle %d\n" % (served, running, idle_ms)


def world_digest(namespaces, cgroups):
    """Lowercase hex SHA-256 of NAME:INODE\\n for each of WORLD_NAMESPACES
    (namespaces: their inodes in that order, None for `-`, unreadable),
    then cgroup\\n and cgroups (/proc/self/cgroup as it is)."""
    import hashlib

    digest = hashlib.sha256()
    for name, inode in zip(WORLD_NAMESPACES, namespaces):
        digest.update(("%s:%s\n" % (name, "-" if inode is None else int(inode))).encode())
    digest.update(b"cgroup\n")
    digest.update(cgroups)
    return digest.hexdigest()


def trackable_env_name(name):
    """Whether a variable read can be a dependency: not PREFORK_INTERP,
    nor a name the line cannot carry (space, newline) or no environment
    can hold (empty, '=', NUL)."""
    return bool(name) and name != b"PREFORK_INTERP" and not any(c in name for c in b" \n=\0")


def env_dependency(names, value_of):
    """(digest, names) for the names read (any order, repeats and
    untrackable ones dropped), value_of(name) their values (bytes, or
    None for unset); None for no names."""
    names = sorted(set(name for name in names if trackable_env_name(name)))
    if not names:
        return None
    return env_digest(names, value_of), names


def env_digest(names, value_of):
    """Lowercase hex SHA-256 of NAME=VALUE\\0 (NAME\\0 if unset) for each
    name, in the order given."""
    import hashlib

    digest = hashlib.sha256()
    for name in names:
        value = value_of(name)
        digest.update(name + b"\0" if value is None else name + b"=" + value + b"\0")
    return digest.hexdigest()


# ------------------------------------------------------- the setup run's env


def decode_setup_env(value):
    """PREFORK_INTERP=v1,SECS.NSECS LISTEN,CALL,WATCHI,WATCHE [pfi-caps=...]
    [pfi-idle=SECONDS] [pfi-keeper=HEX] as a dict: started_secs,
    started_nsecs, listen, call, watch_in, watch_err, client_caps (a
    list), idle_limit (seconds, or None), keeper (bytes: a program's path,
    or None). The fd order is chiark-utils' client's: WATCHI is the write
    end of the watcher's stdin, WATCHE the read end of its stderr. Extra
    words and items are ignored, and so are a malformed idle bound and
    keeper word (as an unknown word would be)."""

    def bad(why):
        return ProtocolError("BadSetupEnv", "prefork-interp: bad %s: %s" % (ENV_VAR, why))

    words = value.split(b" ")
    if len(words) < 2:
        raise bad("expected two words")
    items = words[0].split(b",")
    if items[0] != VERSION:
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
    caps = _setup_word(words, SETUP_CAPS_PREFIX)
    client_caps = [] if caps is None else [c.decode("ascii", "replace")
                                           for c in caps.split(b",") if c]
    # And for a folded identity's server "pfi-idle=SECONDS".
    idle = _setup_word(words, SETUP_IDLE_PREFIX)
    # And "pfi-keeper=HEX": its own path, to run as a session's keeper.
    keeper = _setup_word(words, SETUP_KEEPER_PREFIX)
    return {
        "started_secs": int(secs),
        "started_nsecs": int(nsecs),
        "listen": listen,
        "call": call,
        "watch_in": watch_in,
        "watch_err": watch_err,
        "client_caps": client_caps,
        "idle_limit": _decimal_u64(idle),
        "keeper": _hex_bytes(keeper),
    }


def _setup_word(words, prefix):
    """What follows prefix in the first word after the second that has
    it, or None."""
    for word in words[2:]:
        if word.startswith(prefix):
            return word[len(prefix):]
    return None


def _hex_bytes(digits):
    """The bytes of a non-empty, even run of hex digits (either case:
    Rust's decode_hex), else None."""
    if not digits or len(digits) % 2 or digits.strip(b"0123456789abcdefABCDEF"):
        return None
    return bytes.fromhex(digits.decode("ascii"))


def _decimal_u64(digits):
    """A non-empty run of ASCII digits that fits in a u64 as a number
    (Rust's parse_decimal), else None."""
    if not digits or not digits.isdigit():
        return None
    number = int(digits)
    return number if number < 2**64 else None


# ----------------------------------------------------------------- request


def check_request_byte(byte):
    """The byte that opens a request, checked: 0, or 0x01 with any of the
    other flags, 0x20 only with a pty flag. Returned as it is (its flags
    are tested as bits)."""
    if byte and not (byte & REQUEST_BYTE_EXTENDED and (
            byte & REQUEST_ANY_PTY or not byte & REQUEST_FLAG_PTY_BACKGROUND)):
        raise ProtocolError(
            "BadRequestByte",
            "request starts with byte %#04x, expected 0x00, or 0x01 with flags 0x02, 0x04, "
            "0x08, 0x10, 0x40, 0x80, and 0x20 with one of 0x04, 0x08, 0x10" % byte)
    return byte


def has_second_request_byte(byte):
    return bool(byte & REQUEST_FLAG_SECOND_BYTE)


def check_second_request_byte(byte):
    """The second request byte, checked: the caller's closed fds
    (REQUEST_SECOND_CLOSED) and REQUEST_SECOND_CALLER_SIGNALS, 0 for
    none. Returned as it is."""
    if byte & ~(REQUEST_ANY_SECOND_CLOSED | REQUEST_SECOND_CALLER_SIGNALS):
        raise ProtocolError("BadSecondRequestByte",
                            "second request byte %#04x, expected flags 0x01, 0x02, 0x04, 0x08"
                            % byte)
    return byte


def decode_payload_len(prefix):
    """The u32be before a request's payload."""
    (length,) = _U32.unpack(prefix)
    if length > MAX_PAYLOAD_LEN:
        raise ProtocolError("PayloadTooLong", "request too long (%d bytes, at most %d)"
                            % (length, MAX_PAYLOAD_LEN))
    return length


def decode_payload(payload):
    """Splits "NAME=value\\0"... "\\0" "arg\\0"... into (env, args)."""
    if not payload.endswith(b"\0"):
        raise ProtocolError("PayloadUnterminated", "request payload does not end with a NUL")
    strings = payload[:-1].split(b"\0")
    try:
        end = strings.index(b"")
    except ValueError:
        raise ProtocolError("PayloadNoEnvEnd",
                            "request payload has no empty string ending the environment")
    return strings[:end], strings[end + 1:]


def split_env_entry(entry):
    """(name, value): an environment entry split at its first '=' after
    its first byte (a leading '=' is the name's, as in glibc); None
    without one."""
    eq = entry.find(b"=", 1)
    if eq < 0:
        return None
    return entry[:eq], entry[eq + 1:]


def encode_context_umask(umask):
    return _U32.pack(umask)


def decode_context_umask(data):
    """The u32be umask after the context message's byte."""
    return _U32.unpack(data)[0]


def decode_limits(count, body):
    """What follows a limits message's count byte: count entries
    (resource, soft, hard; RLIM_INFINITY for none) and nice, oom_score_adj
    (OOM_SCORE_UNKNOWN: unknown), in exactly count * 17 + 8 bytes, as
    (entries, nice, oom_score_adj)."""
    size = count * LIMITS_ENTRY_LEN
    if len(body) != size + LIMITS_TAIL_LEN:
        raise ProtocolError("BadLimits", "limits message of %d bytes after its count %d, "
                            "expected %d" % (len(body), count, size + LIMITS_TAIL_LEN))
    entries = [_LIMITS_ENTRY.unpack_from(body, at) for at in range(0, size, LIMITS_ENTRY_LEN)]
    nice, oom = _LIMITS_TAIL.unpack_from(body, size)
    return entries, nice, oom


def _signal_bits(numbers):
    bits = 0
    for sig in numbers:
        bits |= 1 << (sig - 1)
    return bits


def encode_caller_signals(ignored, blocked):
    """A caller-signals message from two lists of signal numbers."""
    return _CALLER_SIGNALS.pack(_signal_bits(ignored), _signal_bits(blocked))


def decode_caller_signals(data):
    """A caller-signals message (CALLER_SIGNALS_LEN bytes; every bit
    pattern is valid) as (ignored, blocked), lists of signal numbers,
    lowest first."""
    return tuple([sig for sig in range(1, MAX_SIGNAL + 1) if bits >> (sig - 1) & 1]
                 for bits in _CALLER_SIGNALS.unpack(data))


# ------------------------------------------------------------ status, frames


def encode_status(wait_status):
    """A wait status on the wire: u32be."""
    return _U32.pack(wait_status & 0xFFFFFFFF)


def decode_status(data):
    """A wait status from the wire (read as signed, i32)."""
    return _I32.unpack(data)[0]


def encode_frame(kind, value):
    """kind: one byte (b"S"...); value: u32."""
    return _FRAME.pack(kind, value & 0xFFFFFFFF)


def decode_frame(frame):
    """(kind, value) of FRAME_LEN bytes; unknown kinds decode too."""
    return _FRAME.unpack(frame)


# A terminal's settings (struct termios), as a restore message has them:
# speeds are the platform's B* values, cc the sender's c_cc (ints).
TerminalSettings = collections.namedtuple(
    "TerminalSettings", "iflag oflag cflag lflag ispeed ospeed cc")


def encode_terminal_settings(settings):
    return _TERMINAL_SETTINGS_FIXED.pack(settings.iflag, settings.oflag, settings.cflag,
                                         settings.lflag, settings.ispeed,
                                         settings.ospeed) + bytes(settings.cc)


def decode_terminal_settings(data):
    """TerminalSettings (cc: a list of ints) from TERMINAL_SETTINGS_FIXED
    to MAX_TERMINAL_SETTINGS bytes."""
    if not TERMINAL_SETTINGS_FIXED <= len(data) <= MAX_TERMINAL_SETTINGS:
        raise ProtocolError("BadTerminalSettings", "terminal settings of %d bytes (%d to %d)"
                            % (len(data), TERMINAL_SETTINGS_FIXED, MAX_TERMINAL_SETTINGS))
    words = _TERMINAL_SETTINGS_FIXED.unpack_from(data)
    return TerminalSettings(*words, cc=list(data[TERMINAL_SETTINGS_FIXED:]))


def _bad_restore(length):
    return ProtocolError("BadRestore", "terminal restore message of %d bytes (a count C, then "
                         "twice 24 + C, C at most 64)" % length)


def check_restore_len(length):
    """An 'R' frame's value (not 0), checked before its bytes are read: a
    monitor waits for no more than a restore message can be."""
    if not 1 + 2 * TERMINAL_SETTINGS_FIXED <= length <= MAX_RESTORE_LEN:
        raise _bad_restore(length)
    return length


def encode_restore(put_back, left):
    """The bytes after an 'R' frame (whose value is their count): the
    count of control characters (put_back's, at most 64), the settings to
    put back, and those the client left on the terminal with as many
    control characters (cut, or made up with zeros)."""
    count = min(len(put_back.cc), MAX_TERMINAL_SETTINGS - TERMINAL_SETTINGS_FIXED)
    left = left._replace(cc=(list(left.cc) + [0] * count)[:count])
    return (bytes([count]) + encode_terminal_settings(put_back._replace(cc=put_back.cc[:count]))
            + encode_terminal_settings(left))


def decode_restore(data):
    """A restore message as (put_back, left), TerminalSettings each."""
    if not data:
        raise _bad_restore(0)
    block = TERMINAL_SETTINGS_FIXED + data[0]
    if block > MAX_TERMINAL_SETTINGS or len(data) != 1 + 2 * block:
        raise _bad_restore(len(data))
    return (decode_terminal_settings(data[1:1 + block]),
            decode_terminal_settings(data[1 + block:]))


def encode_executor_ready(byte, script_pid=None):
    """'r', the request byte as read, and on a pseudo-terminal of its own
    (script_pid) the script's pid."""
    message = EXECUTOR_READY + bytes([byte])
    if script_pid is not None:
        message += _U32.pack(script_pid)
    return message


def decode_executor_ready(message):
    """The request byte of an executor's 2-byte 'r' message (with a pty
    flag the script's pid follows: decode_script_pid)."""
    if len(message) != 2 or message[:1] != EXECUTOR_READY:
        raise ProtocolError("BadExecutorMessage", "executor said %r, expected 'r' and a byte"
                            % message)
    return check_request_byte(message[1])


def decode_script_pid(data):
    return _U32.unpack(data)[0]


def lock_path_for_socket(socket_path):
    """The lock file beside a server's socket (BASE/s<ident> ->
    BASE/l<ident>, bytes), to which a quitting server appends its
    encode_quit_line; None for a socket not so named."""
    folder, slash, name = socket_path.rpartition(b"/")
    if not name.startswith(b"s") or len(name) < 2:
        return None
    return folder + slash + b"l" + name[1:]


def decode_last_quit(text):
    """The last well-formed `quit SECS REASON` line of a lock file's text
    (bytes) as (secs, reason bytes), or None: a server that quits because
    its socket went reads it, since whoever removed the socket may have
    said why already."""
    for line in reversed(text.split(b"\n")):
        if not line.startswith(b"quit "):
            continue
        secs, space, reason = line[len(b"quit "):].partition(b" ")
        number = _decimal_u64(secs)
        if space and number is not None:
            return number, reason
    return None


def encode_quit_line(secs, reason):
    """What a quitting server appends to its lock file: `quit SECS
    REASON`, each newline in REASON a space (reason: str or bytes)."""
    if isinstance(reason, str):
        reason = reason.encode(errors="surrogateescape")
    return b"quit %d %s\n" % (secs, reason.replace(b"\n", b" "))
