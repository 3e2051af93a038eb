# Several packs as one battery: the composition-root part that only a
# multi-pack setup loads (a single pack never pays for it in RAM,
# docs/design.md "RAM"). It builds the battery aggregate (charge.battery)
# and the tasks that fill it (docs/jk-bms.md "Several packs on one bus"),
# turns the packs' admission changes into events, and writes the status
# line for several packs.

from charge.battery import P_ONLINE, P_REJECTED, Battery
from outputs import events as E


def build(cfg, uart, log, warn=None):
    """(battery, links): the RS485 bus task (master: sources.pb_bus;
    listener: sources.jk_listen) and with "uart+ble" one BLE pack. Each
    link has name, heartbeat_ms and run(); the packs join the battery now
    or when they are found."""
    b = Battery(cfg)
    b.pushed = cfg["bms_bus_role"] == "listen" or cfg["bms_transport"] == "uart+ble"
    if cfg["bms_bus_role"] == "listen":
        from sources.jk_listen import JkListener
        links = [JkListener(uart, cfg, log, b.add)]
    else:
        from sources.pb_bus import PbBus
        bus = PbBus(uart, cfg, log, b.add)
        bus.on_cycle = b.cycle_done  # the aggregate follows each full cycle at once
        bus.warn = warn
        links = [bus]
    if cfg["bms_transport"] == "uart+ble":
        from pack.snapshot import PackSnapshot
        from sources.jk_ble import JkBleSource
        src = JkBleSource(cfg, PackSnapshot(), log)
        b.add(src)
        links.append(src)
    return b, links


def wire_events(status, words):
    """Pack online / OFFLINE / rejected as events, at the moment of change."""
    b = status.battery
    ev = status.events

    def pack(i, old, new):
        src = b.packs[i]
        if new == P_ONLINE:
            ev.emit(E.PACK_ONLINE, "%s (%d of %d online)" % (src.name, b.online, len(b.packs)))
        elif new == P_REJECTED:
            ev.emit(E.PACK_REJECTED, "%s: %s" % (src.name, words("PACK_WHY", b.why_of(i))))
        elif old == P_ONLINE:
            ev.emit(E.PACK_OFFLINE, "%s: %s; %d of %d online, limits shrink now" % (
                src.name, src.last_error or "no valid data", b.online, len(b.packs)))

    b.pack_notify = pack


def via(cfg, links):
    """The boot line's links, the bus role and the packs."""
    a = cfg["bms_addresses"]
    return "%s (%s, packs %s)" % (
        ", ".join(link.name for link in links),
        "listening to a JK master" if cfg["bms_bus_role"] == "listen" else "master",
        a if a == "scan" else (", ".join("%d" % x for x in a) or "as heard"))


def stale_why(status):
    b = status.battery
    return "%d of %d packs online, bms_min_packs %d" % (b.online, len(b.packs), status.cfg["bms_min_packs"])


def summary(status, now):
    b = status.battery
    ok = t = bad = ex = 0
    for p in status.packs:
        ok += p.polls_ok
        t += p.timeouts
        bad += p.decode_errors
        ex += p.exceptions
    from sources.base import STATE_NAMES
    return "BMS: %s (%d of %d packs online, %d needed), data age %s (oldest %s), polls ok %d, timeouts %d, " \
        "bad frames %d, exceptions %d" % (
            STATE_NAMES[status.bms_state(now)], b.online, len(status.packs), status.cfg["bms_min_packs"],
            status.age_text(now), status.age_text(now, b.oldest_ms(now)), ok, t, bad, ex)
