"""The environment from the interpreter's start to
initialisation_complete(): the exec-time environment (read on import,
before the script could overwrite that memory), what initialisation read
of it (the greeting's `env` line: a caller whose values differ gets a
server of its own, initialised with its values; man/prefork-interp.7),
and what it changed (laid over each call's environment).

From `import prefork_interp` until initialisation_complete(), os.environ
and os.environb are stand-ins that record the name of each variable
read. Imported first of all by the package, so that the tracking starts
before the script's own code; imports only os."""

import os

# Python's own locale coercion (PEP 538) sets LC_CTYPE to one of these
# before any script code runs when the locale is C: not initialisation's
# doing, and a caller with another locale must not get it.
_COERCED_LC_CTYPE = (b"C.UTF-8", b"C.utf8", b"UTF-8")
_ENV_VAR = b"PREFORK_INTERP"  # _wire.ENV_VAR (not imported: a direct run needs none of it)

# What the interpreter reads of its environment as it starts, before any
# of the script's code (its options, sys.path, hash seed, UTF-8 mode and
# locale coercion, warnings filters, bytecode writing...): inputs of the
# initialisation as surely as a variable the script reads, so every
# server's greeting names them (the `env` line), and a caller whose
# values differ gets a server started with its own. The one list of this
# side; tests/python.rs holds it to `python3 --help-env`, each variable
# there being in it or named there with the reason it is not
# (PYTHONUNBUFFERED and PYTHONIOENCODING are not: each call's streams are
# made with the caller's). (The
# greeting's `start` line, apart from `env`: --list shows what the
# script's initialisation read, not these.)
INTERPRETER_VARIABLES = tuple(name.encode() for name in (
    # (python3 --help-env, 3.11)
    "PYTHONPATH", "PYTHONHOME", "PYTHONPLATLIBDIR", "PYTHONUTF8",
    "PYTHONFAULTHANDLER", "PYTHONHASHSEED", "PYTHONINTMAXSTRDIGITS", "PYTHONMALLOC",
    "PYTHONCOERCECLOCALE", "PYTHONDEVMODE", "PYTHONPYCACHEPREFIX", "PYTHONWARNDEFAULTENCODING",
    "PYTHONNODEBUGRANGES", "PYTHONDEBUG", "PYTHONDONTWRITEBYTECODE", "PYTHONINSPECT",
    "PYTHONNOUSERSITE", "PYTHONOPTIMIZE", "PYTHONSAFEPATH", "PYTHONVERBOSE",
    "PYTHONWARNINGS",
    # (the documentation's others, and later versions')
    "PYTHONUSERBASE", "PYTHONTRACEMALLOC", "PYTHONPROFILEIMPORTTIME", "PYTHONMALLOCSTATS",
    "PYTHONASYNCIODEBUG", "PYTHONPERFSUPPORT", "PYTHON_PERF_JIT_SUPPORT", "PYTHON_FROZEN_MODULES",
    "PYTHON_CPU_COUNT", "PYTHON_GIL", "PYTHON_PRESITE",
    # The locale: UTF-8 mode and the C locale's coercion (PEP 538, 540)
    # are decided from these, and LC_CTYPE is set from them, at start.
    "LC_ALL", "LC_CTYPE", "LANG",
))


def _read_initial_environ():
    """The environment as exec left it: the kernel's copy, which
    os.environ changes never touch (an OSError if unreadable)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            return f.read()
    except OSError as e:
        return e


class _TrackedEnviron(os._Environ):
    """os.environ (or os.environb) during initialisation: the real one's
    own data dict (so every write reaches it, and through putenv C's
    environ, which child processes get; and objects that kept the real
    one, `from os import environ` before the import, agree), with a
    record of each name read: [], get, in, os.getenv, setdefault, pop.
    Iteration, keys(), items(), values(), copy(), clear(), ==, | read no
    one variable and are not recorded: what the real one does. (dict()
    of it, or **, reads every variable through [], and records them
    all.) Once initialisation is over, it records nothing: a module may
    have kept it."""

    def __getitem__(self, key):
        init_env = self._pfi_init_env
        if init_env.tracking:
            try:
                init_env.reads.add(self.encodekey(key))
            except Exception:
                pass  # not a name: the lookup says why
        return os._Environ.__getitem__(self, key)

    def items(self):
        return self._untracked.items()

    def values(self):
        return self._untracked.values()

    def copy(self):
        return self._untracked.copy()

    def clear(self):
        self._untracked.clear()

    def __or__(self, other):
        return self._untracked.__or__(other)

    def __ror__(self, other):
        return self._untracked.__ror__(other)


def _tracked(real, init_env):
    """A stand-in for real (an os._Environ), or None."""
    if type(real) is not os._Environ:
        return None  # replaced by someone: left alone
    tracked = _TrackedEnviron.__new__(_TrackedEnviron)
    tracked.__dict__.update(real.__dict__)
    tracked._untracked = real
    tracked._pfi_init_env = init_env
    return tracked


class InitEnv:
    """What the interpreter's start left and initialisation did: made
    once, on the package's import, which starts the tracking. Also the
    files autoreload_also_check() named (also_check)."""

    def __init__(self):
        self.initial = _read_initial_environ()
        self.reads = set()  # names read (bytes)
        self.tracking = True
        self.also_check = []
        self.real_environ = os.environ
        self.real_environb = getattr(os, "environb", None)
        self._tracked_environ = _tracked(self.real_environ, self)
        self._tracked_environb = _tracked(self.real_environb, self)
        if self._tracked_environ is not None:
            os.environ = self._tracked_environ
        if self._tracked_environb is not None:
            os.environb = self._tracked_environb

    def stop_tracking(self):
        """Initialisation is over: the real os.environ and os.environb
        back (unless the script replaced them itself). Returns the names
        read."""
        self.tracking = False
        if os.environ is self._tracked_environ:
            os.environ = self.real_environ
        if getattr(os, "environb", None) is self._tracked_environb:
            os.environb = self.real_environb
        return set(self.reads)

    def exec_environ(self):
        """The exec-time environment, name: value (bytes)."""
        if isinstance(self.initial, OSError):
            raise OSError("prefork-interp: cannot read /proc/self/environ: %s" % (self.initial,))
        before = {}
        for entry in self.initial.split(b"\0"):
            eq = entry.find(b"=", 1)
            # As getenv: the first of two entries with one name counts.
            if eq > 0 and entry[:eq] not in before:
                before[entry[:eq]] = entry[eq + 1:]
        return before

    def delta(self):
        """What the script's start-up did to its environment: os.environb
        against the exec-time environment, (name, value) set or changed,
        (name, None) removed. PREFORK_INTERP, ours, and Python's locale
        coercion are left out."""
        before = self.exec_environ()
        changes = []
        for name, value in os.environb.items():
            if name == _ENV_VAR or before.get(name) == value:
                continue
            if (name == b"LC_CTYPE" and value in _COERCED_LC_CTYPE
                    and before.get(name) in (None, b"", b"C", b"POSIX")):
                continue
            changes.append((name, value))
        changes += [(name, None) for name in before if name != _ENV_VAR and name not in os.environb]
        return changes

    def dependency(self, reads):
        """The greeting's env dependency on the names read: (digest,
        names) of their exec-time values, or None."""
        from ._wire import env_dependency, trackable_env_name

        if not any(trackable_env_name(name) for name in reads):
            return None
        before = self.exec_environ()
        return env_dependency(reads, before.get)

    def start_dependency(self):
        """The greeting's start line: the interpreter's start-up variables
        (INTERPRETER_VARIABLES) with their exec-time values, (digest,
        names)."""
        from ._wire import env_dependency

        return env_dependency(INTERPRETER_VARIABLES, self.exec_environ().get)


def world():
    """The hex digest of this process's world (its namespaces' inodes
    and its cgroups): a client in another world goes to a server of its
    own, as an executor of ours could not take on the caller's
    namespaces and cgroups."""
    from ._wire import WORLD_NAMESPACES, world_digest

    inodes = []
    for name in WORLD_NAMESPACES:
        try:
            link = os.readlink("/proc/self/ns/" + name)  # NAME:[INODE]
            inodes.append(int(link[link.index("[") + 1:-1]))
        except (OSError, ValueError):
            inodes.append(None)
    try:
        with open("/proc/self/cgroup", "rb") as f:
            cgroups = f.read()
    except OSError:
        cgroups = b""
    return world_digest(inodes, cgroups)


def apply(changes, environb):
    """Lays initialisation's changes over a call's environment."""
    for name, value in changes:
        if value is None:
            environb.pop(name, None)
        else:
            environb[name] = value
