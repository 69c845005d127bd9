"""What ps shows of the server's processes: not the first caller's
arguments, which the interpreter's argv area holds (Python has no
setproctitle): `SCRIPT [server]`, `SCRIPT [monitor]`, `SCRIPT [handler]`
(an executor-to-be), and an executor, once its request is read,
`SCRIPT`."""

import ctypes
import os


class Titles:
    """Each role's title, made once in the setup run so that setting one
    is a single memmove (an executor does it on each call's path)."""

    def __init__(self, script):
        """Where the argv strings are (arg_start, arg_end: fields 48 and
        49 of /proc/self/stat, counted after the last ')' of the command
        name). A title longer than the area is cut, keeping a NUL at its
        end: the kernel shows the area up to arg_end, and reads on past it
        into the environment (which we leave alone) if its last byte is
        not a NUL. Nothing found (unreadable): no titles."""
        self.area = None  # (address, length) of the argv strings
        self.environ_area = None  # (address, length) of the environment's
        self.titles = {}  # role: its title's bytes, NUL-filled to that length
        try:
            with open("/proc/self/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            start, end = int(fields[45]), int(fields[46])
            env_start, env_end = int(fields[47]), int(fields[48])
        except (OSError, ValueError, IndexError):
            return
        if 0 < env_start < env_end:
            self.environ_area = (env_start, env_end - env_start)
        if not 0 < start < end:
            return  # zeros: the kernel would not tell
        length = end - start
        self.area = (start, length)
        name = os.fsencode(script)
        for role, suffix in (("server", b" [server]"), ("monitor", b" [monitor]"),
                             ("handler", b" [handler]"), ("executor", b"")):
            title = name + suffix
            if len(title) >= length:
                # `python3 ./script` leaves no room for the role: the
                # script's file name without its directory, as the role
                # says more than the directory does.
                title = os.path.basename(name) + suffix
            self.titles[role] = title[:length - 1].ljust(length, b"\0")

    def set(self, role):
        """Best effort: never fails."""
        title = self.titles.get(role)
        if title is not None:
            try:
                ctypes.memmove(self.area[0], title, self.area[1])
            except Exception:
                pass

    def forget_initial_environ(self):
        """The environment exec gave this process, where
        /proc/PID/environ shows it (to any process of the same user),
        becomes NULs: a server forked from the first call's setup run
        must not keep that caller's variables (a token, a password) for
        its whole life. The C environment is moved to copies first
        (os.putenv is setenv), so that nothing points into the area.
        Best effort: never fails."""
        if self.environ_area is None:
            return
        try:
            for name, value in os.environb.items():
                os.putenv(name, value)
            ctypes.memset(self.environ_area[0], 0, self.environ_area[1])
        except Exception:
            pass
