"""Auto-reload: files whose change since the server's start means "quit;
the next call starts a fresh server"."""

import errno
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
    """The files are watched with inotify, so a call costs nothing unless
    one was touched; then every file is checked again (and the watches
    re-armed: editors replace files by rename). While a file is missing
    (it has no watch to say when it is made again), and without inotify,
    every call checks every file, as the original does."""

    MASK = 0x2 | 0x4 | 0x8 | 0x400 | 0x800  # MODIFY ATTRIB CLOSE_WRITE DELETE_SELF MOVE_SELF

    def __init__(self, files, started_ns, log):
        self.files = files
        self.started_ns = started_ns
        self.log = log
        # Watches first, then the first call checks every file: nothing
        # changed between the two is missed.
        self.dirty = True
        self.inotify = None
        self.fd = None
        try:
            self.inotify = _sys.Inotify()
            self.fd = self.inotify.fd
            if not self._arm():
                self.close()
        except (OSError, AttributeError):
            self.close()

    def _arm(self):
        for path in self.files:
            err = self.inotify.add_watch(path, self.MASK)
            if err is None or err == errno.ENOENT:
                continue  # a missing file is no reason to reload
            self.log(LOG_ERR, "cannot watch %s: %s; checking every call instead"
                     % (path, os.strerror(err)))
            return False
        return True

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def drain(self):
        """The inotify fd is readable: something may have changed."""
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        self.dirty = True

    def changed(self):
        """The first changed file, or None. Cheap unless dirty."""
        if self.fd is not None and not self.dirty:
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
        if self.fd is not None:
            self.dirty = missing
            if not self._arm():
                self.close()
        return None
