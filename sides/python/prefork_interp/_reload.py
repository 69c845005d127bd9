"""Auto-reload: files whose change since the server's start means "quit;
the next call starts a fresh server"."""

import os
import sys

from . import _sys
from ._log import LOG_ERR


def reload_files(autoreload_modules, autoreload_extra, also_check):
    """The script, every imported module's file (autoreload_modules),
    and the files named: once each, in that order."""
    files = [os.path.abspath(sys.argv[0])] if sys.argv and sys.argv[0] else []
    if autoreload_modules:
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str):
                files.append(path)
    files.extend(os.fspath(p) for p in autoreload_extra)
    files.extend(also_check)
    return list(dict.fromkeys(files))


class ReloadWatch:
    """The files are watched with the server's inotify instance (shared
    with its socket's watch), so a call costs nothing unless one was
    touched; then every file is checked again (and the watches re-armed:
    editors replace files by rename). While a file is missing (it has no
    watch to say when it is made again), without inotify, and once a file
    could not be watched, every call checks every file, as the original
    does."""

    MASK = (_sys.IN_MODIFY | _sys.IN_ATTRIB | _sys.IN_CLOSE_WRITE | _sys.IN_DELETE_SELF
            | _sys.IN_MOVE_SELF)

    def __init__(self, files, started_ns, log):
        self.files = files
        self.started_ns = started_ns
        self.log = log
        # Watches first, then the first call checks every file: nothing
        # changed between the two is missed.
        self.dirty = True
        # The server's instance, once it lends it (watch_with); None:
        # every call checks.
        self.inotify = None
        # Why a file could not be watched (the greeting's `degraded`).
        self.degraded = None

    def watch_with(self, inotify):
        """Watches the files in the server's inotify instance (None: it
        has none)."""
        self.inotify = inotify
        if inotify is not None:
            self._arm()

    def _arm(self):
        for path in self.files:
            try:
                self.inotify.add_watch(path, self.MASK)
            except FileNotFoundError:
                continue  # a missing file is no reason to reload
            except OSError as e:
                self._give_up(path, e)
                return

    def _give_up(self, path, e):
        """A file that cannot be watched (not for being missing): every
        call checks instead, said once. The instance stays, for the
        socket's watch; the files' watches in it only wake the server."""
        self.inotify = None
        self.degraded = "cannot watch %s (%s): files checked at every call" % (
            os.fsdecode(path), os.strerror(e.errno))
        self.log(LOG_ERR, "degraded: %s" % self.degraded)

    def note_events(self):
        """An event on a file's watch: something may have changed."""
        self.dirty = True

    def changed(self):
        """The first changed file, or None. Cheap unless dirty."""
        if self.inotify is not None and not self.dirty:
            return None
        missing = False
        for path in self.files:
            try:
                if os.stat(path).st_mtime_ns > self.started_ns:
                    return path
            except FileNotFoundError:
                missing = True  # no reason to reload
            except OSError as e:
                self.log(LOG_ERR, "cannot check %s: %s" % (path, e))
                return path
        if self.inotify is not None:
            self.dirty = missing
            self._arm()
        return None
