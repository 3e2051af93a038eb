# Self-test of the test harness: the runtime semantics the project relies on hold on every test
# runtime (CPython, MicroPython unix port, MicroPython webassembly) and the fixture helpers work.
import struct

import mpcompat
from fixtures import find_frame, fixture_path, iter_frames, load_frames, unhex

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_ID = const(0x351)
_BUF = bytearray(8)


def _pack_cvl(buf, cvl_dv, ccl_da):
    struct.pack_into("<HhH", buf, 0, cvl_dv, ccl_da, 0)


def test_const_shim_is_identity():
    assert _ID == 849


def test_pack_into_preallocated_buffer_allocates_nothing():
    mpcompat.collect()
    mpcompat.run_locked(_pack_cvl, _BUF, 566, -1000)
    assert bytes(_BUF[:6]) == b"\x36\x02\x18\xfc\x00\x00"
    assert mpcompat.bytes_allocated(_pack_cvl, _BUF, 560, 250) == 0


def test_heap_lock_catches_allocation():
    if not mpcompat.IS_MICROPYTHON:
        return  # nothing to lock on CPython
    raised = False
    try:
        mpcompat.run_locked(struct.pack, "<H", 1)
    except MemoryError:
        raised = True
    assert raised
    assert mpcompat.bytes_allocated(struct.pack, "<HH", 1, 2) > 0


def test_signed_decoding_via_struct():
    # int.from_bytes ignores signed= on MicroPython: decode signed fields with struct
    assert struct.unpack_from("<h", b"\x00\xfe\xff", 1)[0] == -2


def test_unhex():
    assert unhex("55aa eb90\n 01") == b"\x55\xaa\xeb\x90\x01"
    assert unhex("") == b""
    bad = False
    try:
        unhex("abc")
    except ValueError:
        bad = True
    assert bad


def test_fixture_path_points_into_the_repository():
    # the captures are read from host_tests/fixtures (a clone needs nothing beside it)
    p = fixture_path("jk_frames.json")
    assert "shared" not in p and p.endswith("/../fixtures/jk_frames.json")
    with open(fixture_path("README.md")) as f:
        assert "jk_frames.json" in f.read()


def test_fixture_readme_names_every_capture_and_its_source():
    with open(fixture_path("README.md")) as f:
        rows = [line for line in f.read().split("\n") if line.startswith("| `")]
    assert len(rows) == 55
    listed = {}
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        listed[cells[1].strip("`")] = cells
    for fr in iter_frames():
        cells = listed[fr["id"]]
        assert cells[2:6] == [fr["transport"], fr["layout"], fr["expected_provenance"], fr["source"]], fr["id"]


def test_fixture_frames_decode():
    ids = set()
    for fr in iter_frames():
        raw = unhex(fr["hex"])
        assert len(raw) * 2 == len(fr["hex"]) and len(raw) >= 8
        assert fr["transport"] in ("ble", "rs485-modbus-55aa", "rs485-4e57", "rs485-modbus")
        if fr["transport"] in ("ble", "rs485-modbus-55aa"):
            # a 300-byte 55 AA EB 90 frame (+ trailer), or the 20-byte AA 55 90 EB confirmation
            n = 20 if len(raw) == 20 else 300
            assert raw[:4] == (b"\xaa\x55\x90\xeb" if n == 20 else b"\x55\xaa\xeb\x90"), fr["id"]
            assert sum(raw[: n - 1]) & 0xFF == raw[n - 1], fr["id"]
        elif fr["transport"] == "rs485-4e57":
            assert raw[:2] == b"\x4e\x57", fr["id"]
        ids.add(fr["id"])
    assert len(ids) == 55
    assert find_frame("ble_jk02_24s_v10_device_info")["expected"]["model"] == "JK-B2A24S20P"


def test_load_frames_matches_iter_frames():
    frames = load_frames()
    assert len(frames) == 55 and frames
    ids = [fr["id"] for fr in iter_frames()]
    assert [fr["id"] for fr in frames] == ids
    assert frames[0]["id"] == ids[0] and frames[-1]["id"] == ids[54] and frames[7]["id"] == ids[7]
    assert [fr["id"] for fr in frames[53:]] == ids[53:]
    assert [fr["id"] for fr in frames[-3::-20]] == ids[-3::-20]
    bad = False
    try:
        frames[55]
    except IndexError:
        bad = True
    assert bad


async def _double_later(x):
    import asyncio

    await asyncio.sleep(0)
    return 2 * x


async def test_async_test_is_awaited():
    assert await _double_later(21) == 42
