# The conformance agent for the Python script side. The harness
# (tests/common/mod.rs) makes a script of it: a #! line, a sys.path line
# for sides/python, then this file. Its language (initialisation
# variables AGENT_*, per-call commands @CMD[:PARAM]) is documented in
# tests/agents/agent.rs; keep the agents in step.
import atexit
import errno
import fcntl
import getpass
import os
import subprocess
import signal
import struct
import sys
import termios
import threading
import time

# Every AGENT_* setting is read here, before `import prefork_interp`
# starts tracking what initialisation reads (the greeting's `env` line):
# tests whose calls differ in them share one server. Later writes go
# through these, the real ones, too.
environ = os.environ
environb = os.environb
settings = {name: value for name, value in environ.items() if name.startswith("AGENT_")}

import prefork_interp  # noqa: E402 (after the untracked reads)

if "AGENT_INIT_SLEEP" in settings:
    time.sleep(float(settings["AGENT_INIT_SLEEP"]))
if "AGENT_INIT_PRINT" in settings:
    sys.stdout.write(settings["AGENT_INIT_PRINT"])
if "AGENT_INIT_EXIT" in settings:
    print("agent: failing initialisation as asked", file=sys.stderr)
    sys.exit(int(settings["AGENT_INIT_EXIT"]))
if "AGENT_INIT_THREAD" in settings:
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
if "AGENT_INIT_ATEXIT" in settings:
    record = settings["AGENT_INIT_ATEXIT"]

    def _record_exit():
        with open(record, "a") as f:
            f.write("exit\n")

    atexit.register(_record_exit)
if "AGENT_INIT_SETENV" in settings:
    for entry in os.fsencode(settings["AGENT_INIT_SETENV"]).split(b","):
        name, _, value = entry.partition(b"=")
        environb[name] = value
if "AGENT_INIT_UNSETENV" in settings:
    for name in os.fsencode(settings["AGENT_INIT_UNSETENV"]).split(b","):
        environb.pop(name, None)
# The one tracked read: the variable it names, read the usual way.
# Which of fds 0, 1, 2 initialisation had as terminals (@inittty).
init_tty = " ".join("1" if os.isatty(fd) else "0" for fd in range(3))
init_env = None
if "AGENT_INIT_ENVREAD" in settings:
    init_env = os.environ.get(settings["AGENT_INIT_ENVREAD"])
options = {}
if "AGENT_MAX_SERVERS" in settings:
    options["max_servers"] = int(settings["AGENT_MAX_SERVERS"])
if "AGENT_SPARE_HANDLERS" in settings:
    options["spare_handlers"] = int(settings["AGENT_SPARE_HANDLERS"])
if "AGENT_INTERRUPT_GRACE" in settings:
    options["interrupt_grace"] = float(settings["AGENT_INTERRUPT_GRACE"])
if "AGENT_IDLE_TIMEOUT" in settings:
    options["idle_timeout"] = float(settings["AGENT_IDLE_TIMEOUT"])
if "AGENT_RELOAD_EXTRA" in settings:
    options["autoreload_extra"] = [settings["AGENT_RELOAD_EXTRA"]]

try:
    prefork_interp.initialisation_complete(**options)
except Exception as e:
    print("agent: %s" % e, file=sys.stderr)
    sys.exit(127)


# The curses program of @curses, the same in every agent.
CURSES_PY = (
    "import curses\n"
    "def main(screen):\n"
    "    screen.addstr(0, 0, 'curses: press a key')\n"
    "    screen.refresh()\n"
    "    return screen.getch()\n"
    "print('curses got %d' % curses.wrapper(main))\n"
)

winches = 0


def on_winch(signum, frame):
    global winches
    winches += 1


def child_code(returncode):
    """A child's end as the agents print it: its exit code or `signal N`."""
    return "signal %d" % -returncode if returncode < 0 else str(returncode)


def read_tty_line(fd):
    """A line read from fd byte by byte, without its newline."""
    line = b""
    while True:
        byte = os.read(fd, 1)
        if byte in (b"", b"\n"):
            return line
        line += byte


def parent_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def open_fds():
    """Its open fds, space-separated (not the one listing them)."""
    fds = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + entry)
        except OSError:
            continue
        if not target.endswith("/fd"):
            fds.append(int(entry))
    return " ".join(str(fd) for fd in sorted(fds))


def write_raw(fd, text):
    """Straight to fd, past Python's buffers (which a closed fd lacks)."""
    data = text.encode()
    while data:
        data = data[os.write(fd, data):]


def disposition(handler):
    if handler in (signal.SIG_DFL, signal.default_int_handler):
        return "default"
    if handler == signal.SIG_IGN:
        return "ignore"
    return "handled"


def main():
    args = sys.argv[1:]
    for arg in args:
        if not arg.startswith("@"):
            continue
        name, _, param = arg[1:].partition(":")
        if name == "exit":
            sys.exit(int(param))
        elif name == "args":
            for a in args:
                print(os.fsencode(a).hex())
        elif name == "env":
            value = os.environb.get(os.fsencode(param))
            print("unset" if value is None else value.hex())
        elif name == "envall":
            for entry in sorted(k + b"=" + v for k, v in os.environb.items()):
                print(entry.hex())
        elif name == "cat":
            sys.stdout.flush()
            sys.stdout.buffer.write(sys.stdin.buffer.read())
            sys.stdout.buffer.flush()
        elif name == "out":
            print(param)
        elif name == "err":
            sys.stdout.flush()
            print(param, file=sys.stderr)
        elif name == "kill":
            sys.stdout.flush()
            sig = getattr(signal, "SIG" + param)
            if param not in ("KILL", "STOP"):
                signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        elif name == "sleep":
            time.sleep(float(param))
        elif name == "spawn":
            subprocess.Popen(["sh", "-c", """trap '' HUP; echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30""", param])
            while not os.path.exists(param):
                time.sleep(0.005)
        elif name == "daemon":
            subprocess.Popen(["setsid", "sh", "-c", 'echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30', param], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # As a daemonising program does: return once it is detached.
            while not os.path.exists(param):
                time.sleep(0.005)
        elif name == "pid":
            with open(param + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(param + ".tmp", param)
        elif name == "server":
            print(parent_of(os.getppid()))
        elif name == "fds":
            print(open_fds())
        elif name == "fdsto":
            write_raw(int(param), open_fds() + "\n")
        elif name == "handlesto":
            write_raw(int(param), " ".join("closed" if stream is None else "open"
                                           for stream in (sys.stdin, sys.stdout, sys.stderr))
                      + "\n")
        elif name == "ns":
            for kind in ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup"):
                try:
                    print(kind, os.readlink("/proc/self/ns/" + kind))
                except OSError as e:
                    print(kind, errno.errorcode[e.errno])
        elif name == "cgroup":
            with open("/proc/self/cgroup") as f:
                sys.stdout.write(f.read())
        elif name == "sigs":
            with open("/proc/self/status") as f:
                print("".join(line for line in f if line.startswith(("SigBlk:", "SigIgn:"))), end="")
        elif name == "groups":
            with open("/proc/self/status") as f:
                print(next(line for line in f if line.startswith("Groups:")), end="")
        elif name == "initenv":
            print("unset" if init_env is None else os.fsencode(init_env).hex())
        elif name == "fdlink":
            print(os.readlink("/proc/self/fd/" + param))
        elif name == "sigdisp":
            print(disposition(signal.getsignal(getattr(signal, "SIG" + param))))
        elif name == "onint":
            path = param

            def on_int(signum, frame, path=path):
                open(path, "w").close()
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)

            signal.signal(signal.SIGINT, on_int)
        elif name == "intstay":
            path = param

            def on_int_stay(signum, frame, path=path):
                open(path, "w").close()

            signal.signal(signal.SIGINT, on_int_stay)
        elif name == "trap":
            sys.stdout.flush()

            def on_trap(signum, frame, name=param):
                print("caught " + name, flush=True)
                sys.exit(0)

            signal.signal(getattr(signal, "SIG" + param), on_trap)
        elif name == "cwd":
            print(os.getcwd())
        elif name == "limits":
            with open("/proc/self/limits") as f:
                limits = f.read()
            with open("/proc/self/stat") as f:
                stat = f.read()
            with open("/proc/self/oom_score_adj") as f:
                oom = f.read()
            nice = stat[stat.rindex(")") + 2:].split(" ")[16]
            sys.stdout.write("%snice %s\noom %s" % (limits, nice, oom))
        elif name == "umask":
            mask = os.umask(0)
            os.umask(mask)
            print("%04o" % mask)
        elif name == "time":
            print(time.time_ns())
        elif name == "inittty":
            print(init_tty)
        elif name == "tty":
            print(" ".join("1" if os.isatty(fd) else "0" for fd in range(3)))
        elif name == "devtty":
            try:
                os.close(os.open("/dev/tty", os.O_RDWR))
                print("ok")
            except OSError as e:
                print(errno.errorcode[e.errno])
        elif name == "fg":
            try:
                print("fg" if os.tcgetpgrp(0) == os.getpgrp() else "bg")
            except OSError as e:
                print(errno.errorcode[e.errno])
        elif name == "winsize":
            try:
                size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
                rows, cols = struct.unpack("HHHH", size)[:2]
                print("%d %d" % (rows, cols))
            except OSError as e:
                print(errno.errorcode[e.errno])
        elif name == "winch":
            signal.signal(signal.SIGWINCH, on_winch)
        elif name == "waitwinch":
            while not winches:
                time.sleep(0.01)
        elif name == "ask":
            fd = os.open("/dev/tty", os.O_RDWR)
            os.write(fd, b"Say: ")
            line = read_tty_line(fd)
            os.close(fd)
            print("said " + line.decode(errors="replace"))
        elif name == "secret":
            sys.stdout.flush()
            print("length %d" % len(getpass.getpass()))
        elif name == "pager":
            sys.stdout.flush()
            text = "".join("line %d\n" % i for i in range(1, int(param) + 1))
            less = subprocess.Popen(["less"], stdin=subprocess.PIPE)
            less.communicate(text.encode())
            print("less exited " + child_code(less.returncode))
        elif name == "curses":
            sys.stdout.flush()
            code = subprocess.call([param, "-c", CURSES_PY])
            print("curses exited " + child_code(code))
        elif name == "die":
            raise RuntimeError(param)
        elif name == "_exit":
            os._exit(int(param))
        else:
            raise RuntimeError("agent: unknown command @" + name)


main()
