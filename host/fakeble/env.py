# Test-time environment for the real, unmodified aioble on the simulated radio (README.md here).
#
#   from fakeble import env
#   why = env.setup()        # None when ready, else why aioble is unavailable (tests skip)
#   import aioble, bluetooth
#
# setup() puts host/fakeble (the `bluetooth` module) and the vendor folder holding aioble/
# (../shared/vendor/micropython-lib beside the repository; the environment variable
# JKGW_AIOBLE_PATH overrides it) at the front of sys.path, and installs the shims the vendor
# README lists where the runtime lacks them: a `micropython` module (const, schedule) on CPython,
# asyncio.ThreadSafeFlag (CPython, webassembly port) and asyncio.sleep_ms (CPython).
import sys

_state = [False, None]  # done, reason


def _dirname(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else ("/" if i == 0 else ".")


def _normalise(path):
    if not path.startswith("/"):
        try:
            import os

            path = os.getcwd().replace("\\", "/") + "/" + path
        except (ImportError, AttributeError, OSError):
            pass
    out = []
    for part in path.split("/"):
        if part == "..":
            if out and out[-1] not in ("", ".."):
                out.pop()
            else:
                out.append(part)
        elif part != "." and (part or not out):
            out.append(part)
    return "/".join(out) or "/"


HERE = _normalise(_dirname(__file__.replace("\\", "/")))  # .../host/fakeble
ROOT = _dirname(_dirname(HERE))  # the repository


def _getenv(name):
    try:
        import os

        return os.getenv(name)
    except (ImportError, AttributeError):
        return None


MIP_PATH = ROOT + "/build/aioble-py"  # `make aioble-py`: aioble's sources installed with the unix port's mip


def vendor_path():
    """The folder that holds aioble/: JKGW_AIOBLE_PATH, else the pinned copy beside the repository
    (../shared/vendor/micropython-lib), else what `make aioble-py` installed (build/aioble-py)."""
    p = _getenv("JKGW_AIOBLE_PATH")
    if p:
        p = _normalise(p.replace("\\", "/").rstrip("/"))
        if p.endswith("/aioble"):
            p = _dirname(p)
        return p
    shared = _dirname(ROOT) + "/shared/vendor/micropython-lib"
    if not _exists(shared + "/aioble/__init__.py") and _exists(MIP_PATH + "/aioble/__init__.py"):
        return MIP_PATH
    return shared


def _exists(path):
    try:
        open(path).close()
        return True
    except OSError:
        return False


def _front(p):
    while p in sys.path:
        sys.path.remove(p)
    sys.path.insert(0, p)


class _ThreadSafeFlag:
    # asyncio.ThreadSafeFlag for runtimes without it: set() wakes the single waiter; wait()
    # returns at once when already set; both clear the flag on return
    def __init__(self):
        import asyncio

        self._e = asyncio.Event()

    def set(self):
        self._e.set()

    def clear(self):
        self._e.clear()

    async def wait(self):
        await self._e.wait()
        self._e.clear()


async def _sleep_ms(ms):
    import asyncio

    await asyncio.sleep(ms / 1000)


def _schedule(fn, arg):
    import asyncio

    try:
        asyncio.get_running_loop().call_soon(fn, arg)
    except RuntimeError:
        fn(arg)
    return None


def _shims():
    import asyncio

    if sys.implementation.name != "micropython" and "micropython" not in sys.modules:
        try:
            import micropython  # noqa: F401 - a real one wins
        except ImportError:
            import types

            m = types.ModuleType("micropython")
            m.const = lambda x: x
            m.schedule = _schedule
            sys.modules["micropython"] = m
    if not hasattr(asyncio, "ThreadSafeFlag"):
        asyncio.ThreadSafeFlag = _ThreadSafeFlag
    if not hasattr(asyncio, "sleep_ms"):
        asyncio.sleep_ms = _sleep_ms


def setup():
    """Make `import aioble` / `import bluetooth` use the vendor aioble on the fake radio.

    Returns None when ready, else a string saying why aioble is unavailable."""
    if _state[0]:
        return _state[1]
    _state[0] = True
    vendor = vendor_path()
    if not _exists(vendor + "/aioble/__init__.py"):
        _state[1] = ("aioble not found at %s (set JKGW_AIOBLE_PATH to the folder holding aioble/, or run "
                     "`make aioble-py` to install it with the unix port's mip)" % vendor)
        return _state[1]
    _front(vendor)
    _front(HERE)
    _shims()
    return None


def reason():
    """Why aioble is unavailable (None when it is); runs setup() if it has not run."""
    return setup()
