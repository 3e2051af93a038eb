# Runtime shims for the portable tests: the same calls work under MicroPython (unix / webassembly)
# and CPython.  On CPython heap locking is a no-op and allocation counts are 0 (not measurable).
import gc
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"
IS_WASM = IS_MICROPYTHON and sys.platform == "webassembly"

if IS_MICROPYTHON:
    import micropython

    heap_lock = micropython.heap_lock
    heap_unlock = micropython.heap_unlock
    mem_alloc = gc.mem_alloc
else:

    def heap_lock():
        pass

    def heap_unlock():
        return 0

    def mem_alloc():
        return 0


def collect():
    gc.collect()


def _call(fn, args):
    # fn(*args) would allocate the argument array on MicroPython: spell out the arities instead.
    n = len(args)
    if n == 0:
        return fn()
    if n == 1:
        return fn(args[0])
    if n == 2:
        return fn(args[0], args[1])
    if n == 3:
        return fn(args[0], args[1], args[2])
    if n == 4:
        return fn(args[0], args[1], args[2], args[3])
    raise TypeError("at most 4 arguments")


def run_locked(fn, *args):
    """Call fn(*args) (at most 4 positional arguments) with the heap locked; return its result.

    Under MicroPython any allocation inside fn raises MemoryError (the result must therefore be a
    small int, None, a bool or a preexisting object).  Lock and unlock happen inside this function
    on purpose: storing a new module global while the heap is locked could need a dict resize.
    """
    heap_lock()
    try:
        return _call(fn, args)
    finally:
        heap_unlock()


def bytes_allocated(fn, *args):
    """Heap bytes allocated by one call of fn(*args) (GC disabled meanwhile); 0 on CPython."""
    gc.collect()
    gc.disable()
    try:
        a0 = mem_alloc()
        _call(fn, args)
        return mem_alloc() - a0
    finally:
        gc.enable()


class SkipTest(Exception):
    """Raised by skip() outside pytest; host_tests/mpy_runner.py reports it as SKIP, not FAIL."""


def skip(reason):
    """Skip the calling test: pytest.skip(reason) under pytest, else raise SkipTest(reason)."""
    if "pytest" in sys.modules:
        import pytest

        pytest.skip(reason)
    raise SkipTest(reason)
