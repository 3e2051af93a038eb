# net.telemetry's battery fields against tools/state_json.snapshot_to_dict(), the host tools' one
# writer of the tggo/jkbms-poll schema: for every capture in host_tests/fixtures/jk_frames.json
# (decoded by tools/jk_decode.py's decode_frame, the firmware's own decoders) and for a cell-info +
# settings pair merged into one snapshot, the state and pack JSON hold exactly the same keys with
# exactly the same values (== on the parsed numbers: the integer fixed-point text must parse to the
# float the tool computes). Negative values and the extremes are checked on a synthetic snapshot.
import json

import pytest
from fakes import CountingWdt, FakeCan, FakeRecovery, FakeUart, MemStore, load_pb_pack
from fixtures import load_frames, unhex

from app import config as C
from app import gateway as G
from compat import ticks_ms
from net import telemetry as T
from pack import snapshot as S
from tools import jk_decode, state_json

# telemetry's own sections: everything else in its state is a schema field
OWN = {"limits", "charge", "links", "alarms", "device", "uptime_s", "task_restarts", "packs", "heap_free", "events"}
PACK_OWN = {"name", "state", "age_ms"}


def gateway():
    return G.Gateway(C.defaults(), FakeUart({}), FakeCan(), FakeRecovery(), CountingWdt(), MemStore(), None,
                     "gateway.json", [].append)


def check(snap):
    gw = gateway()
    gw.status.snap = snap
    gw.source.snap = snap
    want = state_json.snapshot_to_dict(snap)
    now = ticks_ms()
    got = json.loads(T.state(gw.status, now))
    fields = {k: v for k, v in got.items() if k not in OWN}
    assert fields == want
    for k in want:  # same types too: a bool stays a bool, a count an int
        assert type(fields[k]) is type(want[k]), k
    got = json.loads(T.pack(gw.status, 0, now))
    assert {k: v for k, v in got.items() if k not in PACK_OWN} == want
    return want


def captures():
    out = []
    for fr in load_frames():
        try:
            layout = jk_decode.layout_id(fr["layout"]) if fr["layout"] not in ("MODBUS", "ALL", "4E57") else 0
            _, snap = jk_decode.decode_frame(unhex(fr["hex"]), layout)
        except Exception:  # noqa: BLE001 - fragments and requests decode to nothing: not a state
            continue
        if snap.have or snap.settings_ok:
            out.append((fr["id"], snap))
    return out


CAPTURES = captures()


def test_enough_captures_decode_to_a_state():
    assert len(CAPTURES) >= 20, [i for i, _ in CAPTURES]


@pytest.mark.parametrize("fid,snap", CAPTURES, ids=[i for i, _ in CAPTURES])
def test_every_capture_gives_the_tools_fields(fid, snap):
    check(snap)


def test_cell_info_and_settings_merged():
    snap = S.PackSnapshot()
    load_pb_pack(snap)
    want = check(snap)
    assert want["num_cells"] and "cell_ovp_v" in want and "battery_power_w" in want and "design_capacity_ah" in want


def test_negative_and_extreme_values():
    snap = S.PackSnapshot()
    load_pb_pack(snap)
    snap.current_ma = -123457
    snap.balance_ma = -7
    snap.temps[0] = -1
    snap.temps[3] = -405
    snap.pack_mv = 65535
    snap.cell_count = 32
    for i in range(32):
        snap.cells[i] = 2500 + 37 * i
    snap.cell_stats()
    snap.have = 0xFFF
    want = check(snap)
    assert want["battery_current_a"] == -123.457 and want["power_tube_temp_c"] == -0.1
    assert want["battery_power_w"] == 65535 * -123457 / 1e6
