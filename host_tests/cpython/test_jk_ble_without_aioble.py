"""A BLE configuration on a device where aioble was never installed (make deploy offline): the
source says what to install and keeps its heartbeat, instead of crashing and restarting."""
import asyncio
import sys

from app import config as C
from compat import ticks_diff, ticks_ms
from pack.snapshot import PackSnapshot
from sources import base as B


def test_missing_aioble_is_reported_and_the_task_stays_alive(monkeypatch):
    monkeypatch.setitem(sys.modules, "aioble", None)  # import aioble -> ImportError
    import sources

    cfg = C.validate({"bms_transport": "ble", "ble_mac": "20:21:11:40:50:60"}, [])
    log = []
    src = sources.make(cfg, None, PackSnapshot(), log.append)

    async def run():
        task = asyncio.create_task(src.run())
        await asyncio.sleep(1.5)
        assert not task.done()  # no crash for the supervisor to restart
        assert ticks_diff(ticks_ms(), src.heartbeat_ms) < 1200
        task.cancel()

    asyncio.run(run())
    assert any("mip install aioble-central aioble-client" in m for m in log), log
    assert "aioble missing" in src.last_error
    assert src.fresh.state(ticks_ms()) == B.WAIT
