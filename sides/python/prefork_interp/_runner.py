"""The runner: an unchanged Python program behind prefork-interp.

::

    #!/usr/bin/prefork-interp -U,python3,-m,prefork_interp
    prefork-interp -U,python3,-m,prefork_interp PROGRAM ARG...
    python3 -m prefork_interp [--preload MOD[,MOD...]] PROGRAM [ARG...]

The setup run (the server-to-be) sets sys.argv and sys.path[0] as
`python3 PROGRAM ARG...` would, imports what PROGRAM imports at top level
(found with ast; failures are logged and ignored) and the --preload
modules (and those in PREFORK_INTERP_PRELOAD), compiles PROGRAM and calls initialisation_complete(). Each call
then runs the compiled program as __main__ and ends as CPython would end
`python3 PROGRAM ARG...` (status, SystemExit message, traceback,
KeyboardInterrupt's SIGINT; non-daemon threads joined, atexit handlers,
sys.stdout and sys.stderr flushed), then leaves with os._exit: the
interpreter's finalisation (finalisers of objects still alive, module
teardown) is skipped, as fast_exit does.

What the setup run reads of os.environ while it imports (the modules'
own top-level code included) is tracked as for any script (the
greeting's `env` line), PREFORK_INTERP_PRELOAD excepted.

Without PREFORK_INTERP the program runs here, once, and CPython ends the
process as always.
"""

import os
import sys

from . import (_calls_end_without_finalisation, _init_env_state, autoreload_also_check,
               initialisation_complete)
from ._wire import ENV_VAR

USAGE = "usage: python3 -m prefork_interp [--preload MOD[,MOD...]] PROGRAM [ARG...]\n"


def _usage(message):
    sys.stderr.write("prefork_interp: %s\n%s" % (message, USAGE))
    sys.exit(2)


def _parse(args):
    """(preload, program, args) from the runner's command line, and
    PREFORK_INTERP_PRELOAD (MOD[,MOD...], as for Perl's runner): the way
    to name more modules through `prefork-interp --run`. (Read untracked:
    preloading only saves time, and callers differing in it share a
    server.)"""
    preload = [m for m in _init_env_state.real_environ.get("PREFORK_INTERP_PRELOAD", "").split(",")
               if m]
    while args:
        arg = args[0]
        if arg == "--":
            args = args[1:]
            break
        if arg == "--preload" or arg.startswith("--preload="):
            if arg == "--preload":
                if len(args) < 2:
                    _usage("--preload needs a module name")
                value, args = args[1], args[2:]
            else:
                value, args = arg[len("--preload="):], args[1:]
            preload.extend(m for m in value.split(",") if m)
            continue
        if arg.startswith("-"):
            _usage("unknown option %s" % arg)
        break
    if not args:
        _usage("no program given")
    return preload, args[0], args[1:]


def _path0(program):
    """sys.path[0] of `python3 PROGRAM`: the directory of the script's
    real path (CPython's _PyPathConfig_ComputeSysPath0), or None under -P
    (PYTHONSAFEPATH), which adds nothing."""
    if getattr(sys.flags, "safe_path", False):
        return None
    real = os.path.realpath(program)
    return os.path.dirname(real) if "/" in real else ""


def _set_path0(program, ours):
    """Replaces `ours` (what -m put first: the current directory) with
    the program's directory; returns what is first now."""
    path0 = _path0(program)
    if ours is not None and sys.path and sys.path[0] == ours:
        del sys.path[0]
    if path0 is not None:
        sys.path.insert(0, path0)
    return path0


def _file_name(program):
    """__file__ and the code's file name: the program made absolute as
    CPython makes it (_Py_abspath: the current directory joined, not
    normalised; sys.argv[0] stays as given)."""
    if os.path.isabs(program):
        return program
    return os.path.join(os.getcwd(), program)


def _cant_open(program, error):
    """CPython's message for a program it cannot open; status 2."""
    name = sys.orig_argv[0] if getattr(sys, "orig_argv", None) else sys.executable
    message = "%s: can't open file %r: [Errno %d] %s\n" % (
        name, _file_name(program), error.errno or 0, error.strerror)
    if sys.stderr is not None:
        try:
            sys.stderr.write(message)
            sys.stderr.flush()
            return 2
        except Exception:
            pass
    os.write(2, os.fsencode(message))
    return 2


def _load(program):
    """(source bytes, None) or (None, the OSError opening it)."""
    try:
        with open(program, "rb") as f:
            return f.read(), None
    except OSError as e:
        return None, e


def _top_level_imports(source, program):
    """Modules PROGRAM imports at top level (also in top-level if, try and
    with blocks), in order, up to the first other statement that mentions
    sys.path (what it imports after may come from where it points): their
    names, and the line of each one's first import."""
    import ast

    try:
        tree = ast.parse(source, program)
    except (SyntaxError, ValueError):
        return []
    found = []
    blocks = (ast.If, ast.Try, ast.With) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())

    def touches_sys_path(node):
        return any(isinstance(n, ast.Attribute) and n.attr == "path"
                   and isinstance(n.value, ast.Name) and n.value.id == "sys"
                   for n in ast.walk(node))

    def scan(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.extend((alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module:
                    found.append((node.module, node.lineno))
            elif isinstance(node, blocks):
                if isinstance(node, ast.If) and touches_sys_path(node.test):
                    return False
                if isinstance(node, ast.With) and any(touches_sys_path(i) for i in node.items):
                    return False
                parts = [node.body, getattr(node, "orelse", [])]
                for handler in getattr(node, "handlers", []):
                    parts.append(handler.body)
                parts.append(getattr(node, "finalbody", []))
                for part in parts:
                    if not scan(part):
                        return False
            elif touches_sys_path(node):
                return False
        return True

    scan(tree.body)
    lines = {}
    for name, line in found:
        lines.setdefault(name, line)
    return lines


def _preload(modules, lines, program):
    """Imports them, those PROGRAM imports (`lines`: name: line) as from
    its line in __main__, as a direct run does (a module that warns as it
    is imported, DeprecationWarning, points at that line); a failure is
    logged (syslog, user facility, as the server logs) and ignored:
    preloading only saves time."""
    import importlib

    failed = []
    for name in modules:
        if name in sys.modules:
            continue
        try:
            if name in lines:
                import_line = "\n" * (lines[name] - 1) + "import " + name
                exec(compile(import_line, _file_name(program), "exec", dont_inherit=True),
                     {"__name__": "__main__", "__builtins__": __builtins__})
            else:
                importlib.import_module(name)
        except (Exception, SystemExit) as e:
            failed.append("preloading %s failed: %s: %s" % (name, type(e).__name__, e))
    if failed:
        try:
            import syslog

            syslog.openlog("prefork-interp %s" % program, syslog.LOG_PID, syslog.LOG_USER)
            for message in failed:
                syslog.syslog(syslog.LOG_INFO, message)
            syslog.closelog()
        except Exception:
            pass


class _Warnings:
    """The warnings raised while the server preloads and compiles
    PROGRAM, kept rather than shown (the server's start is no call), and
    shown again in each call under its filters, as a direct run's imports
    and compilation show them: a deprecated module's DeprecationWarning
    (shown when it points at __main__), a SyntaxWarning."""

    def __init__(self, program):
        self.file = _file_name(program)
        self.kept = []

    def __enter__(self):
        import warnings

        self.shown_by = warnings.showwarning
        warnings.showwarning = self._keep
        # First of the filters, so that each warning comes here once
        # whatever the filters say now; taken out again by identity (the
        # modules may have added filters of their own meanwhile, which a
        # direct run has too).
        warnings.simplefilter("always")
        self.always = warnings.filters[0]
        return self

    def _keep(self, message, category, filename, lineno, file=None, line=None):
        self.kept.append((message, category, filename, lineno))

    def __exit__(self, *exc):
        import warnings

        warnings.showwarning = self.shown_by
        if self.always in warnings.filters:
            warnings.filters.remove(self.always)
            # (As the warnings module itself does after a change to its
            # filters, where it has that function: "always" left no
            # registry entries to forget anyway.)
            mutated = getattr(warnings, "_filters_mutated", None)
            if mutated is not None:
                mutated()
        return False

    def replay(self):
        """In a call: each warning again, under the call's filters, from
        where it pointed (__main__ for PROGRAM's own lines)."""
        if not self.kept:
            return
        import warnings

        for message, category, filename, lineno in self.kept:
            warnings.warn_explicit(message, category, filename, lineno,
                                   module=self._module(category, filename))

    def _module(self, category, filename):
        """The module a warning pointing at `filename` came from, as the
        filters match it: __main__ for PROGRAM; for a compiler's warning,
        and a file no loaded module has, the file's name without .py (as
        warnings names it)."""
        if filename == self.file and not issubclass(category, SyntaxWarning):
            return "__main__"
        if not issubclass(category, SyntaxWarning):
            for name, module in list(sys.modules.items()):
                if getattr(module, "__file__", None) == filename:
                    return name
        return filename[:-3] if filename[-3:].lower() == ".py" else filename or "<unknown>"


def _main_module(program):
    """A fresh __main__ module as CPython makes it for `python3 PROGRAM`
    (pythonrun.c: add_main_module, then __file__, __cached__, the loader),
    now sys.modules["__main__"]."""
    import builtins
    import types
    from importlib.machinery import SourceFileLoader

    module = types.ModuleType("__main__")
    namespace = module.__dict__
    if sys.version_info < (3, 14):
        namespace["__annotations__"] = {}
    namespace["__builtins__"] = builtins
    namespace["__file__"] = _file_name(program)
    namespace["__cached__"] = None
    namespace["__loader__"] = SourceFileLoader("__main__", namespace["__file__"])
    sys.modules["__main__"] = module
    return namespace


def _exit_status(exc):
    """The status CPython makes of a SystemExit leaving __main__
    (_Py_HandleSystemExit), printing a non-integer code as it does."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        value = int.__int__(code)
        return value & 0xFF if -(1 << 63) <= value < (1 << 63) else 255
    stderr = getattr(sys, "stderr", None)
    try:
        if stderr is None:
            raise OSError
        stderr.write(str(code))
        stderr.write("\n")
    except Exception:
        try:
            os.write(2, os.fsencode(str(code) + "\n"))
        except Exception:
            pass
    return 1


def _print_exception(exc):
    """What PyErr_Print does with an exception leaving __main__: the
    sys.last_* variables, then sys.excepthook (errors in it reported as
    CPython reports them). `exc` has its traceback from the program's
    frame on."""
    tb = exc.__traceback__
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    hook = getattr(sys, "excepthook", None)
    if hook is None:
        sys.__stderr__.write("sys.excepthook is missing\n")
        sys.__excepthook__(type(exc), exc, tb)
        return
    try:
        hook(type(exc), exc, tb)
    except BaseException as error:
        error.__traceback__ = error.__traceback__.tb_next if error.__traceback__ else None
        stderr = sys.stderr if sys.stderr is not None else sys.__stderr__
        stderr.write("Error in sys.excepthook:\n")
        sys.__excepthook__(type(error), error, error.__traceback__)
        stderr.write("\nOriginal exception was:\n")
        sys.__excepthook__(type(exc), exc, tb)


def _run(code, namespace):
    """Runs the program's code; returns how it ended: ("status", N),
    ("interrupt", None) after its traceback, or ("error", None) after
    its traceback (status 1)."""
    try:
        exec(code, namespace)
        return "status", 0
    except SystemExit as e:
        return "status", _exit_status(e)
    except BaseException as e:
        # Our frame off: the traceback starts at the program's, as in a
        # direct run.
        e.__traceback__ = e.__traceback__.tb_next if e.__traceback__ else None
        _print_exception(e)
        return ("interrupt" if isinstance(e, KeyboardInterrupt) else "error"), None
    finally:
        # CPython removes them once the script's code has run.
        namespace.pop("__file__", None)
        namespace.pop("__cached__", None)


def _finish(kind, status, fast):
    """Ends the process as CPython ends a run of a script.

    fast (a call): Py_FinalizeEx's steps before the finalisation proper:
    threading._shutdown() (joins non-daemon threads), the atexit handlers,
    sys.stdout and sys.stderr flushed, then os._exit. A flush that fails
    leaves the end to CPython (its flush fails again: its message, 120).
    Not fast (a direct run of the runner): CPython ends it as always.
    KeyboardInterrupt: death by SIGINT after all that, as CPython."""
    if kind == "error":
        status = 1
    if not fast and kind != "interrupt":
        sys.exit(status)  # an int: CPython prints nothing
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except Exception:
            pass
    import atexit

    atexit._run_exitfuncs()
    for stream in (getattr(sys, "stdout", None), getattr(sys, "stderr", None)):
        if stream is None:
            continue
        try:
            if not stream.closed:
                stream.flush()
        except Exception as e:
            if kind != "interrupt":
                sys.exit(status)  # CPython flushes again and says why
            try:
                sys.__stderr__.write("Exception ignored in: %r\n%s: %s\n"
                                     % (stream, type(e).__name__, e))
            except Exception:
                pass
    try:
        from ._sys import fflush_all

        fflush_all()
    except Exception:
        pass
    if kind == "interrupt":
        import signal

        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        status = 130
    os._exit(status)


def _exec_python(program, args):
    """Replaces this process with `python3 PROGRAM ARG...` (the
    interpreter's own options kept): for a directory, whose
    __main__ CPython finds itself."""
    orig = list(getattr(sys, "orig_argv", None) or [sys.executable])
    options = []
    for i, arg in enumerate(orig[1:], 1):
        if arg.startswith("-m"):
            options = orig[1:i]
            break
    os.execv(sys.executable, [orig[0]] + options + [program] + args)


def main():
    preload, program, args = _parse(sys.argv[1:])
    # What -m put first on sys.path: the current directory (none under -P).
    ours = sys.path[0] if sys.path and not getattr(sys.flags, "safe_path", False) else None
    sys.argv[:] = [program] + args
    served = ENV_VAR in _init_env_state.real_environ
    if not served:
        _init_env_state.stop_tracking()  # the program runs here, as python3 PROGRAM
    _set_path0(program, ours)

    code = None
    if served:
        setup_dir = os.getcwd()
        source = None
        if not os.path.isdir(program):
            source, _ = _load(program)
        lines = {} if source is None else _top_level_imports(source, program)
        # Compiled first, as a direct run does: its warnings come first.
        with _Warnings(program) as warned:
            if source is not None:
                try:
                    code = compile(source, _file_name(program), "exec", dont_inherit=True)
                except BaseException:
                    code = None  # compiled again in each call, which reports it
            _preload(list(lines) + preload, lines, program)
        del source
        autoreload_also_check(program)
        _calls_end_without_finalisation()  # _finish: its idle spares copy nothing in advance
        initialisation_complete()
        # Now in a call: sys.argv[1:], os.environ, the std streams, the
        # directory and umask are the caller's.
        warned.replay()
        if not os.path.isabs(program) and os.getcwd() != setup_dir:
            # (--caller-dir) another directory's PROGRAM.
            code = None
            _set_path0(program, sys.path[0] if sys.path else None)
    if code is None:
        if os.path.isdir(program):
            _exec_python(program, sys.argv[1:])
        source, error = _load(program)
        if source is None:
            status = _cant_open(program, error)
            if served:
                os._exit(status)
            sys.exit(status)
        try:
            code = compile(source, _file_name(program), "exec", dont_inherit=True)
        except BaseException as e:
            # A syntax error: reported as CPython reports it, no frames.
            e.__traceback__ = None
            _print_exception(e)
            del e
            _finish("error", 1, served)
    kind, status = _run(code, _main_module(program))
    _finish(kind, status, served)
