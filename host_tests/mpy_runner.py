# Minimal test runner for the portable tests: runs unchanged under the MicroPython unix port,
# the MicroPython webassembly port (driven by host_tests/run_wasm.mjs) and CPython.
#
#   micropython -X heapsize=320k host_tests/mpy_runner.py [-k SUBSTR] [-p DIR]... host_tests/portable/test_*.py
#
# Every callable named test_* in each file is run (sorted by name: MicroPython's dir() order is not
# definition order); a returned coroutine (a generator on MicroPython) is awaited.  Prints one
# PASS/FAIL line per test, a traceback per failure, "SKIP name::test: reason" for a test that
# skipped itself (mpcompat.skip(): an exception named SkipTest, or pytest's Skipped) and ends with
# "N passed, N failed, N skipped".
# Exit status: 0 when nothing failed and some test passed or skipped; 1 on any failure or when no
# test ran at all.
import gc
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"


def _dirname(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else ("/" if i == 0 else ".")


_ROOT = _dirname(__file__) + "/.."  # host_tests/.. = repository root
DEFAULT_PATHS = (_ROOT + "/firmware/lib", _ROOT + "/host", _ROOT + "/host_tests/portable")


_SKIP_NAMES = ("SkipTest", "Skipped")  # mpcompat.skip() outside / inside pytest


def _print_exc(e):
    if IS_MICROPYTHON:
        sys.print_exception(e, sys.stdout)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stdout)


def _recover_heap():
    # A test that failed between heap_lock() and heap_unlock() leaves the heap locked, which would
    # break the report and every later test.  heap_unlock() returns the remaining lock depth
    # (lock+unlock reads it without allocating); unlocking at depth 0 would underflow.
    if not IS_MICROPYTHON:
        return
    import micropython

    micropython.heap_lock()
    for _ in range(micropython.heap_unlock()):
        micropython.heap_unlock()


def _add_path(p):
    if p not in sys.path:
        sys.path.insert(0, p)


async def _run_one(fn):
    result = fn()
    if type(result).__name__ in ("generator", "coroutine"):
        await result


async def amain(argv):
    files = []
    pattern = None
    extra = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-k", "-p") and i + 1 < len(argv):
            if a == "-k":
                pattern = argv[i + 1]
            else:
                extra.append(argv[i + 1])
            i += 2
            continue
        files.append(a)
        i += 1
    # the runner's own folder holds host_tests/fixtures (data): MicroPython would import that folder
    # as the package "fixtures" and hide portable/fixtures.py, so it must not be on the path
    own = _dirname(__file__)
    while own in sys.path:
        sys.path.remove(own)
    for p in list(DEFAULT_PATHS) + extra:
        _add_path(p)
    impl = sys.implementation
    print("# %s %s on %s" % (impl.name, ".".join(str(v) for v in impl.version[:3]), sys.platform))
    passed = failed = skipped = 0
    for path in files:
        _add_path(_dirname(path))
        name = path[path.rfind("/") + 1 :]
        if name.endswith(".py"):
            name = name[:-3]
        try:
            open(path).close()  # a missing file must not import a same-named module from sys.path
            mod = __import__(name)
        except BaseException as e:  # noqa: B036 - a broken file must not stop the run
            _recover_heap()
            print("FAIL " + path + " (import)")
            _print_exc(e)
            failed += 1
            continue
        for attr in sorted(dir(mod)):
            if not attr.startswith("test_") or (pattern and pattern not in attr):
                continue
            fn = getattr(mod, attr)
            if isinstance(fn, type) or not callable(fn):
                continue
            label = name + "::" + attr
            gc.collect()
            try:
                await _run_one(fn)
            except BaseException as e:  # noqa: B036 - a test calling sys.exit() is a failure
                _recover_heap()
                if isinstance(e, KeyboardInterrupt):
                    raise
                if type(e).__name__ in _SKIP_NAMES:
                    print("SKIP " + label + ": " + (str(e.args[0]) if e.args else ""))
                    skipped += 1
                    continue
                print("FAIL " + label)
                _print_exc(e)
                failed += 1
                continue
            print("PASS " + label)
            passed += 1
        gc.collect()
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed or not (passed or skipped) else 0


if __name__ == "__main__":
    import asyncio

    sys.exit(asyncio.run(amain(sys.argv[1:])))
