# The console's `scan`: JK-BMS devices nearby, so a user can find the MAC or
# name of theirs (docs/jk-bms.md "BLE link"). Loaded only when asked for.

_SVC = 0xFFE0
_JK_COMPANY_IDS = (0x0B65, 0x4B4A)  # manufacturer ids JK modules advertise


def _is_jk(r, svc):
    for s in r.services():
        if s == svc:
            return True
    for cid, _ in r.manufacturer():
        if cid in _JK_COMPANY_IDS:
            return True
    name = r.name() or ""
    return name.startswith("JK")


async def scan(aioble, src, duration_ms):
    """[(name, 'AA:BB:..', rssi)] of the JK devices seen, strongest first;
    also keeps the RSSI of the configured BMS on src."""
    import bluetooth

    from sources.jk_ble import mac_text

    svc = bluetooth.UUID(_SVC)
    seen = {}
    async with aioble.scan(duration_ms, 30000, 30000, True) as scanner:
        async for r in scanner:
            if not _is_jk(r, svc):
                continue
            addr = bytes(r.device.addr)
            seen[addr] = (r.name() or "?", mac_text(addr), r.rssi)
            if src.addr == addr or (not src.mac and r.name() == src.cfg["ble_name"]):
                src.rssi = r.rssi
    out = list(seen.values())
    out.sort(key=lambda e: -e[2])
    return out


def report(results, log):
    if not results:
        log("scan: no JK-BMS seen (is it in range, and is the JK app disconnected?)")
        return
    log("scan: %d JK device(s): name, MAC, RSSI" % len(results))
    for name, mac, rssi in results:
        log("scan:   %-16s %s %d dBm" % (name, mac, rssi))
