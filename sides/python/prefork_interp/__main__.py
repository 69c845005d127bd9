"""python3 -m prefork_interp [--preload MOD[,MOD...]] PROGRAM [ARG...]

Runs an unchanged Python program behind prefork-interp (see _runner)."""

from ._runner import main

main()
