"""Host tools of the gateway (never shipped to the device).

Every tool runs as a script (``python tools/X.py``) and imports its siblings
as this package (``from tools import state_json``); each script starts with a
small shim that puts the repository root on sys.path for that. Importing the
package puts firmware/lib on sys.path, so the tools run the firmware's own
code (decoders, charge policy, encoders) rather than copies of it.

tools/bench.py and tools/bench_cycle.py also run under the MicroPython unix
port and therefore do not import this package.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "firmware", "lib")

if LIB not in sys.path:
    sys.path.insert(0, LIB)
