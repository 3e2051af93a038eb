# Keeps the gateway alive (docs/design.md "Supervision"): every task runs
# under supervise(), which logs a crash and restarts the task with back-off;
# watch() feeds the hardware watchdog only while the BMS source, CAN TX and
# CAN RX all make progress, and looks at the links every second.

from app import charge_memory
from compat import print_exception, sleep_ms, ticks_diff, ticks_ms
from outputs import events as E
from sources.base import FRESH, WAIT

_WATCH_MS = 1000
# Restart waits. Every task beats its heartbeat as soon as it runs again, so
# the longest wait must stay below the shortest stall limit in stalled()
# (3 s): a restarting task never starves the watchdog by itself.
RESTART_BACKOFF_MS = (200, 500, 1000, 2000)
# a task that ran this long before it crashed was healthy: back-off starts over
HEALTHY_MS = 60000
STALL_MIN_MS = 3000  # a task is stalled after its own period + this


async def supervise(name, fn, status, healthy_ms=HEALTHY_MS):
    """Run fn() forever; log and restart it (with back-off) if it dies."""
    fails = 0
    while True:
        started = ticks_ms()
        try:
            await fn()
            fails = 0
        except Exception as e:  # noqa: BLE001 - one task's bug must not stop the others
            if ticks_diff(ticks_ms(), started) >= healthy_ms:
                fails = 0
            status.task_restarts += 1
            status.events.emit(E.TASK_CRASH, "%s crashed, restarting: %r" % (name, e))
            print_exception(e)
            wait = RESTART_BACKOFF_MS[fails if fails < len(RESTART_BACKOFF_MS) else -1]
            status.restart_wait_ms = wait
            fails += 1
            await sleep_ms(wait)


def _words(table, code):
    """A word from charge.texts, which leaves RAM again unless the console or
    net.telemetry (which keep it) is loaded: 2.5 KB for a rare event
    (docs/design.md "RAM"); unloading it under them would load it twice."""
    import sys

    from charge import texts

    word = getattr(texts, table)[code]
    if "outputs.console" not in sys.modules and "net.telemetry" not in sys.modules:
        del sys.modules["charge.texts"]
        import charge

        if hasattr(charge, "texts"):
            delattr(charge, "texts")
    return word


def link_events(status):
    """Wire the links' change notifications to events (at the moment a
    change is seen, so short episodes are reported too)."""
    ev = status.events
    b = status.battery

    def bms(old, new):
        if new == FRESH:
            ev.emit(E.BMS_COMPLETE if old == WAIT else E.BMS_BACK)
        else:
            if b is None:
                why = status.source.last_error or "no valid data"
            else:
                from app.packs import stale_why
                why = stale_why(status)
            ev.emit(E.BMS_STALE, "%s: %s" % (
                why, "CAN output stopped" if status.policy.stop_on_loss else "sending 0 A limits + alarms"))

    def inverter(silent):
        if silent:
            ev.emit(E.INV_SILENT, "no %s for %d s (frames continue)" % (
                status.tx.enc.HEARTBEAT, status.tx.inverter.timeout_ms // 1000))
        else:
            ev.emit(E.INV_BACK)

    def plausible(code):
        if code:
            ev.emit(E.IMPLAUSIBLE, _words("PLAUSIBLE", code))
        else:
            ev.emit(E.PLAUSIBLE)

    def charge(state, why):
        ev.emit(E.CHARGE, "%s (%s)" % (_words("STATES", state), _words("WHY", why)))

    if b is None:
        status.source.fresh.notify = bms
    else:
        from app.packs import wire_events
        b.notify = bms
        wire_events(status, _words)
    status.tx.inverter.notify = inverter
    status.tx.on_command = lambda what: ev.emit(E.INV_COMMAND, what)
    status.policy.notify = plausible
    status.policy.ctl.notify = charge


def stalled(status, now):
    """Name of a task that made no progress for too long, or ''."""
    cfg = status.cfg
    # a source or bus task beats every few ms while it waits for replies,
    # and at least once per poll period while it sleeps
    for link in status.links:
        if ticks_diff(now, link.heartbeat_ms) > cfg["bms_poll_ms"] + STALL_MIN_MS:
            return "bms-poller" if link is status.source else link.name
    tx = status.tx
    if ticks_diff(now, tx.tx_heartbeat_ms) > tx.period_ms + STALL_MIN_MS:
        return "can-tx"
    if ticks_diff(now, tx.rx_heartbeat_ms) > STALL_MIN_MS:
        return "can-rx"
    return ""


async def watch(status, wdt):
    """Feed the watchdog only while every task makes progress, look at the
    links every second (their changes become events there even while no
    frames go out) and print the periodic status line."""
    ev = status.events
    cfg = status.cfg
    last_status = ticks_ms()
    while True:
        now = ticks_ms()
        name = stalled(status, now)
        if name:
            if name != status.wdt_starved:
                ev.emit(E.WDT_STARVED, name)
            status.wdt_starved = name
        else:
            status.wdt_starved = ""
            if wdt is not None:
                wdt.feed()
        if status.battery is not None and status.battery.pushed:
            # a listener's or BLE pack's new data, at least every second (a bus
            # cycle rebuilds the battery itself when it ends)
            status.battery.update(now)
        status.bms_state(now)
        status.tx.inverter.silent(now)
        if status.policy.ctl.save_due:
            charge_memory.save(status.store, status.policy.ctl, ev)
        period = cfg["status_s"] * 1000
        if period and ticks_diff(now, last_status) >= period:
            last_status = now
            ev.emit(E.SUMMARY, status.summary(now))
        await sleep_ms(_WATCH_MS)
