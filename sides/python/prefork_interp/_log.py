"""syslog, for the server's processes: the setup run opens it (unless
log_facility is None or ""), each process forked after drops the
server's socket and opens its own lazily, and an executor leaves it
closed for the script, as in a direct run."""

import syslog

from syslog import LOG_ERR, LOG_INFO  # noqa: F401 (for the roles)


def facility(name):
    """A syslog facility ("user", "daemon", "local0"..., or a
    syslog.LOG_* value), or None for none."""
    if name is None or name == "":
        return None
    if isinstance(name, int):
        return name
    key = name.upper()
    if not key.startswith("LOG_"):
        key = "LOG_" + key
    value = getattr(syslog, key, None)
    if not isinstance(value, int):
        raise ValueError("prefork-interp: unknown syslog facility %r" % (name,))
    return value


class Log:
    """The server's syslog, or nothing (args None)."""

    def __init__(self, program, facility_value):
        # openlog's arguments: a process that closes the server's syslog
        # socket opens it again, lazily, as the server had it.
        self.args = None
        if facility_value is not None:
            self.args = ("prefork-interp %s" % program, syslog.LOG_PID, facility_value)
            syslog.openlog(*self.args)

    def __call__(self, priority, message):
        if self.args is not None:
            try:
                syslog.syslog(priority, message)
            except Exception:
                pass

    def reopen(self):
        """Drops the syslog socket this process inherited (if the server
        had logged); the next message opens its own, with the server's
        ident and facility (openlog without LOG_NDELAY opens nothing
        yet)."""
        if self.args is not None:
            syslog.closelog()
            syslog.openlog(*self.args)

    def close(self):
        """The script finds syslog unopened, as in a direct run."""
        if self.args is not None:
            syslog.closelog()
