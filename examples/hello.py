#!/usr/local/bin/prefork-interp -U,python3
# A Python script under prefork-interp: the imports are paid for once, by
# the server; each call returns from initialisation_complete() in a fresh
# fork, with the caller's sys.argv, os.environ and sys.std*.
import json
import os
import sys

import prefork_interp

prefork_interp.initialisation_complete()

name = sys.argv[1] if len(sys.argv) > 1 else "world"
print(json.dumps({"hello": name, "pid": os.getpid()}, sort_keys=True))
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
