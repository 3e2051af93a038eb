# pytest setup shared by host_tests/portable (also run under MicroPython) and host_tests/cpython.
# sys.path: firmware/lib first (what ships), then host/ (host-only adapters), the test folders, the root.
import asyncio
import inspect
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
for _p in (_ROOT, _ROOT / "host", _ROOT / "host_tests" / "cpython", _ROOT / "host_tests" / "portable",
           _ROOT / "firmware" / "lib"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def pytest_pyfunc_call(pyfuncitem):
    """Run `async def test_*` with asyncio.run, as host_tests/mpy_runner.py does under MicroPython."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
    return True
