# The safety properties of charge/ (charge_props.Checker) on a seeded random
# walk of BMS data: cells drifting through the tapers and past OVP / UVP,
# temperatures through the windows, alarms, MOSFETs, settings changes,
# stale and implausible data, cycle gaps of 0.1-8 s. The same checker runs
# under hypothesis on CPython (cpython/test_charge_properties.py); this walk
# proves the properties on MicroPython too.

from charge_props import FLAG_CHOICES, Checker

STEPS = 1500


class Rng:
    """xorshift32: the same sequence on every runtime."""

    def __init__(self, seed):
        self.s = seed or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def int(self, lo, hi):
        return lo + self.next() % (hi - lo + 1)

    def chance(self, pct):
        return self.next() % 100 < pct


def walk(seed, steps=STEPS, **over):
    r = Rng(seed)
    chk = Checker(**over)
    base = 3300
    temp = 250
    x = {"cells": [base] * 8, "temp": temp, "dtemp": 0, "mos": 300, "current": 0, "soc": 50, "flags": 0,
         "cfet": 1, "dfet": 1, "cswitch": 1, "dswitch": 1, "ovp": 3650, "ovpr": 3500, "uvp": 2650,
         "uvpr": 2900, "rcv": 3450, "rfv": 3375, "utp": 0, "otp": 500, "dotp": 600, "pack_off": 0}
    stale = False
    for _ in range(steps):
        # the cells drift with a pull back to 3.30 V; now and then a surge
        base += r.int(-6, 6) + (3300 - base) // 200
        if r.chance(1):
            base += r.int(-300, 300)
        if base < 2600:
            base = 2600
        if base > 3700:
            base = 3700
        x["cells"] = [base + r.int(-5, 5) for _ in range(8)]
        if r.chance(10):
            x["cells"][r.int(0, 7)] = base + r.int(-150, 150)  # a runner / a weak cell
        if r.chance(1):
            x["cells"][r.int(0, 7)] = r.int(0, 5000)  # a broken sense wire for a moment
        temp += r.int(-8, 8) + (200 - temp) // 100
        if r.chance(1):
            temp += r.int(-300, 300)
        if temp < -250:
            temp = -250
        if temp > 650:
            temp = 650
        x["temp"] = None if r.chance(1) else temp
        x["dtemp"] = r.int(-20, 20)
        x["mos"] = temp + r.int(0, 400)
        x["current"] = r.int(-150000, 150000)
        x["soc"] = r.int(0, 100)
        # blocks come as episodes, rare enough that the limits between them
        # get through their hold and ramp
        if r.chance(2):
            x["flags"] = FLAG_CHOICES[r.int(0, len(FLAG_CHOICES) - 1)]
        elif r.chance(10):
            x["flags"] = 0
        for k in ("cfet", "dfet", "cswitch", "dswitch"):
            if r.chance(1):
                x[k] = 0
            elif r.chance(10):
                x[k] = 1
        if r.chance(1):  # the user changes the BMS settings
            x["ovp"] = r.int(3450, 3700)
            x["ovpr"] = 0 if r.chance(30) else r.int(3350, x["ovp"])
            x["rcv"] = 0 if r.chance(30) else r.int(3350, x["ovp"])
            x["rfv"] = 0 if r.chance(30) else r.int(3300, 3400)
            x["uvp"] = r.int(2500, 2900)
            x["uvpr"] = x["uvp"] + r.int(0, 300)
            x["utp"] = r.int(-200, 50)
            x["otp"] = r.int(400, 700)
            x["dotp"] = r.int(400, 700)
        x["pack_off"] = r.int(-5000, 5000) if r.chance(1) else 0
        if r.chance(10 if stale else 1):
            stale = not stale
        dt = r.int(100, 8000) if r.chance(10) else 1000
        chk.step(x, stale, dt)
    return chk


def test_properties_hold_on_a_random_walk():
    # a short release delay, so that the limits get through between the
    # walk's frequent blocks (the default 300 s is walked below too)
    chk = walk(1, release_s=20)
    assert chk.steps == STEPS


def test_properties_hold_with_other_seeds_and_settings():
    walk(7, 800, hold_s=0, ramp_a_s=50, release_s=0)
    walk(5, 800)
    walk(99, 800, charge_min_c=-10, require_temp_sensor="no", auto_cvl="off")
    walk(12345, 800, link_loss="stop", max_charge_a=300, max_discharge_a=300)


def test_the_walk_reaches_the_interesting_states():
    # the properties are only worth something if the walk produces non-zero
    # limits too (and not just blocks): count them
    r = Rng(3)
    chk = Checker()
    seen_ccl = seen_dcl = 0
    x = {"cells": [3300] * 8, "temp": 250, "dtemp": 0, "mos": 300, "current": 0, "soc": 50, "flags": 0,
         "cfet": 1, "dfet": 1, "cswitch": 1, "dswitch": 1, "ovp": 3650, "ovpr": 3500, "uvp": 2650,
         "uvpr": 2900, "rcv": 3450, "rfv": 3375, "utp": 0, "otp": 500, "dotp": 600, "pack_off": 0}
    for _ in range(200):
        x["cells"] = [3300 + r.int(-5, 5) for _ in range(8)]
        chk.step(x, False, 1000)
        seen_ccl += chk.pol.lim.ccl_da > 0
        seen_dcl += chk.pol.lim.dcl_da > 0
    assert seen_ccl > 100 and seen_dcl > 100
