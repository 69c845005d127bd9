"""fast_exit=True (Python 3.12 or later): a call ends as CPython would end
it, without the interpreter's finalisation.

CPython ends a run of a script in this order: the __main__ module's code
returns, or an exception leaves it (SystemExit: its code is the exit
status, a non-integer printed first); then Py_FinalizeEx:
threading._shutdown() (joins non-daemon threads), the atexit handlers,
sys.stdout and sys.stderr flushed (status 120 if that fails), and then
the finalisation proper: a last collection, finalisers of what is still
alive, every module torn down. In an executor that last part writes to
nearly every object the server made, so copy-on-write copies the
server's memory page by page: most of what a warm call costs. Python
does not promise it (__del__ of objects alive at exit may not run), so
this skips it and nothing else:

- sys.monitoring (a tool id of our own) records how the __main__ code
  ended: PY_RETURN as a local event of that one code object (status 0);
  PY_UNWIND, which can only be a global event (3.12 to 3.14), filtered on
  that code object (SystemExit: the status CPython computes; any other
  exception: unknown). Instrumenting the code object while it runs (it
  is waiting in initialisation_complete) reaches its running frame.
- CPython's own Py_FinalizeEx calls threading._shutdown() first (the
  module is imported to be sure of it): ours calls the original, then,
  with a known status, runs the atexit handlers, flushes the two
  streams and leaves with os._exit(status). So everything before the
  finalisation is CPython's own doing, in its own order and context
  (the __main__ frame gone, __file__ removed, a SystemExit message
  printed), and the steps are called from C with none of our frames
  on the stack, so that even error reports are CPython's.

Whenever the end is anything else (another exception, -i or
PYTHONINSPECT, other threads still running, a flush that fails, a
SystemExit subclass), ours returns and CPython ends the call as always."""

import _thread
import atexit
import collections
import functools
import operator
import os
import sys

from . import _sys
from ._call_globals import FAST_EXIT_TOOL


def _system_exit_status(exc):
    """The exit status CPython makes of an exception leaving __main__
    (pythonrun.c, _Py_HandleSystemExit), or None where we leave it to
    CPython. Keeps no reference to anything of it."""
    if type(exc) is not SystemExit:
        return None  # a traceback (1), KeyboardInterrupt (SIGINT)...
    code = exc.code
    if code is None:
        return 0
    if issubclass(type(code), int):
        # PyLong_AsLongLong, truncated to an int, then exit(): the low
        # 8 bits. Beyond a long long CPython's answer has changed
        # between versions.
        value = int.__int__(code)
        if -(1 << 63) <= value < (1 << 63):
            return value & 0xFF
        return None
    return 1  # CPython prints it on stderr, before Py_FinalizeEx


def _stream_closed(stream):
    """pylifecycle.c's file_is_closed: an error reading .closed means open."""
    try:
        return bool(stream.closed)
    except Exception:
        return False


def _main_code():
    """The code object of the __main__ module's top-level frame, or why
    not. It must be the outermost frame whose globals are __main__'s
    (below it only runpy's, for python -m); anything else below (a
    launcher such as coverage or pdb, which has work to do after the
    script) leaves the end to CPython."""
    main = sys.modules.get("__main__")
    if main is None:
        return None, "no __main__ module"
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    found = None
    for i, frame in enumerate(frames):
        if frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>":
            found = i
    if found is None:
        return None, "no frame runs the __main__ module's code"
    runpy = sys.modules.get("runpy")
    for frame in frames[found + 1:]:
        if runpy is None or frame.f_globals is not runpy.__dict__:
            return None, "the __main__ module runs under %s" % frame.f_code.co_filename
    return frames[found].f_code, None


class FastExit:
    """Armed in the setup run (the server, monitor and executors inherit
    it; only an executor ever ends the __main__ code): code, the __main__
    module's code object; status, how that code ended in this process (an
    exit status, or None: not ended, or in a way CPython must finish)."""

    def __init__(self):
        self.code = None
        self.status = None

    def on_return(self, code, offset, value):
        if code is self.code:
            self.status = 0

    def on_unwind(self, code, offset, exc):
        # Called for every frame an exception leaves, in any code: cheap.
        if code is self.code:
            self.status = _system_exit_status(exc)

    def arm(self):
        """Returns None, or why fast_exit does nothing."""
        monitoring = getattr(sys, "monitoring", None)
        if monitoring is None:
            return "Python %d.%d has no sys.monitoring (3.12 or later)" % sys.version_info[:2]
        code, why = _main_code()
        if code is None:
            return why
        import threading
        original = getattr(threading, "_shutdown", None)
        if not callable(original) or not hasattr(_thread, "_count"):
            return "this Python's threading module has no _shutdown"
        tool = next((t for t in (4, 3) if monitoring.get_tool(t) is None), None)
        if tool is None:
            return "sys.monitoring tool ids 3 and 4 are both in use"
        events = monitoring.events
        monitoring.use_tool_id(tool, FAST_EXIT_TOOL)
        try:
            monitoring.register_callback(tool, events.PY_RETURN, self.on_return)
            monitoring.register_callback(tool, events.PY_UNWIND, self.on_unwind)
            monitoring.set_local_events(tool, code, events.PY_RETURN)
            monitoring.set_events(tool, events.PY_UNWIND)
        except Exception as e:
            monitoring.free_tool_id(tool)
            return "sys.monitoring refused: %s" % e
        self.code = code
        # Called once, by Py_FinalizeEx (each process forked from here
        # has its own copy of the generator).
        threading._shutdown = functools.partial(
            collections.deque, map(operator.call, self.steps(original)), 0)
        return None

    def steps(self, shutdown):
        """What Py_FinalizeEx's call of threading._shutdown() does once
        armed: a generator of the steps, each called by C code (a map in
        a deque), so that no frame of ours is on the stack while the
        script's code runs: an exception is reported exactly as CPython
        reports it (an unraisable one with no traceback of its own gets
        the current frame's, which is none here as it is none there).
        The original first; then, if the main code's end is known, the
        atexit handlers and the exit."""
        yield shutdown
        if self.status is None or sys.flags.inspect or (
                not sys.flags.ignore_environment and os.environ.get("PYTHONINSPECT")):
            return  # pythonrun would start the REPL
        yield atexit._run_exitfuncs
        yield self.exit

    def exit(self):
        """After the atexit handlers: flush what CPython flushes, and
        leave. Returns (CPython goes on and ends the call as always)
        whenever unsure; never raises."""
        try:
            status = self.status
            # CPython stops other threads (daemons, or threads an atexit
            # handler started) before it flushes: leave those ends to it.
            if _thread._count():
                return
            for stream in (getattr(sys, "stdout", None), getattr(sys, "stderr", None)):
                if stream is not None and not _stream_closed(stream):
                    stream.flush()
            _sys.fflush_all()  # C stdio, as exit() would
        except BaseException:
            # CPython goes on: its atexit list is empty now, and a flush
            # that failed fails again, with its message and status 120.
            return
        os._exit(status)
