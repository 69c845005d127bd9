"""What a call leaves in __main__'s globals, let go at its end as a
direct run's end lets it go.

A direct run's last garbage collection finds the objects the script left
in __main__ (caught in a cycle with its functions, through their
__globals__) and finalises them (their __del__, weakref.finalize) while
every global is still there. In a call, __main__'s globals were frozen
with the rest of the server (gc.freeze, so that a call's collections
leave the server's pages alone): no collection ever looks at them, and
what the call put there was never finalised. So, after the script's own
exit handlers, the names the call bound are let go: first those holding
objects with a __del__ of their own (in the order bound, the other
globals all still there for their finalisers), then the rest."""

import sys

# The name fast_exit's sys.monitoring tool id goes by (_fast_exit uses it).
FAST_EXIT_TOOL = "prefork_interp fast_exit"


class CallGlobals:
    """__main__'s globals as a call starts (name: id of the value), and
    their release at its end."""

    def __init__(self):
        self.before = None

    def start(self):
        """In the executor, as the call starts."""
        main = sys.modules.get("__main__")
        self.before = {} if main is None else {n: id(v) for n, v in vars(main).items()}

    def release(self):
        """An exit handler, registered before any of the script's (so run
        after them): the call's own globals let go. Nothing outside a
        call."""
        main = sys.modules.get("__main__")
        if self.before is None or main is None or _fast_exit_armed():
            return
        names = vars(main)
        made = [name for name, value in list(names.items()) if self.before.get(name) != id(value)]
        finalised_first = [name for name in made
                           if getattr(type(names[name]), "__del__", None) is not None]
        for name in finalised_first + [name for name in made if name not in finalised_first]:
            names.pop(name, None)


def _fast_exit_armed():
    """Whether fast_exit ends this call (its sys.monitoring tool is in
    use): it skips the finalisation of what is still alive, this too."""
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(
        monitoring.get_tool(tool) == FAST_EXIT_TOOL for tool in (3, 4))
