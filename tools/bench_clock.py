# Microsecond timing for the benchmarks that run under MicroPython and
# CPython alike (tools/bench.py, tools/bench_cycle.py).
import sys
import time

MPY = sys.implementation.name == "micropython"

if MPY:
    def now_us():
        return time.ticks_us()

    def elapsed_us(t0):
        return time.ticks_diff(time.ticks_us(), t0)
else:
    def now_us():
        return time.perf_counter_ns() // 1000

    def elapsed_us(t0):
        return time.perf_counter_ns() // 1000 - t0
