"""RAM budget per configuration: the heap the firmware holds once built the way
firmware/main.py builds it and after its BMS data (two polls; over BLE a
connection that delivered six frames) and one CAN burst, measured like `make
ram` (host/ram.py: webassembly port, 32-bit objects as on the ESP32, from the
.mpy files of `make device`, and again from a ROMFS image of them). An
ESP32-WROOM without PSRAM gives MicroPython about 110 KB of heap; aioble
(core, device, central, client) holds ~11 KB of it as .mpy, mqtt_as ~14 KB.
The network configurations run their outputs' tasks until MQTT has sent
discovery and a state, InfluxDB a line, and the page has answered one GET
/api/status (host/ram_net.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WASM = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"

# bytes: the measured value rounded up by ~3-4 % (measured when set, with the
# protocols contract: 93140, 93755, 84979, 89259; with the
# several-packs plumbing in the single-pack path: 92061, 92260, 83708, 87741
# and over BLE 110561; before it 88996, 89323, 81450, 85044, 107783; before
# the charge controller 69408, 69687, 61729, 65643). With the .mpy files in RAM (stock firmware) the BLE
# configuration does not reach its goal of 96 KB; with the bytecode in flash
# (ROMFS_BUDGET) everything does. `make ram VERBOSE=1` shows where the bytes are.
BUDGET = {
    # re-based with the network keys: the 18 keys of net.schema in every
    # configuration cost ~1.1-1.4 KB (94783 measured: 217 bytes under 95000)
    "jk-pb+mcp2515": 97000,
    "jk-pb-fc03+mcp2515": 96500,
    "jk-nw+mcp2515": 87500,
    "jk-pb+twai": 92000,
    # re-based with the network keys: 113454-113726 measured, 274 bytes under 114000
    "jk-ble+mcp2515": 116500,
    # several packs on one bus (measured when set: 108943 for 4 packs, 125727 for
    # 15, i.e. ~1.5 KB per pack; 102614 listening to a bank of 4). 15 packs do
    # not fit the ~110 KB of a stock ESP32-WROOM with the .mpy files in RAM, and
    # 4 are at its edge: more than a few packs need the bytecode in flash
    "jk-pb-x4+mcp2515": 113500,
    "jk-pb-x15+mcp2515": 131000,
    "listen-x4+mcp2515": 107000,
    # the other inverter protocols, each the default configuration with its
    # module (measured when set: 95607, 95782, 95195, 96519, 94497, 93703 —
    # 0.7-3.5 KB over pylon's 92989)
    "growatt+mcp2515": 98500,
    "sma+mcp2515": 98500,
    "victron+mcp2515": 98000,
    "pylon_plus+mcp2515": 99500,
    "luxpower+mcp2515": 97500,
    "deye+mcp2515": 96500,
    # the network outputs (measured when set: 151853-152297 for Wi-Fi + MQTT with
    # HA discovery + web page, 160530-161038 with InfluxDB too): far above the
    # ~110 KB of a stock ESP32-WROOM with the .mpy files in RAM -- the network
    # outputs need the ROMFS firmware (ROMFS_BUDGET, WROOM_HEAP)
    "net+mcp2515": 156000,
    "net-all+mcp2515": 165000,
}
# the same with the .mpy files in a ROMFS image (bytecode and constants in
# flash; measured when set: 51780, 52299, 48051, 50491 with the protocols
# contract; 50036, 50507, 46378, 48676, 61751 before); the BLE line is
# the goal (gateway + aioble + one connection <= 96 KB), kept with room
ROMFS_BUDGET = {
    "jk-pb+mcp2515": 53500,
    "jk-pb-fc03+mcp2515": 54000,
    "jk-nw+mcp2515": 49500,
    "jk-pb+twai": 52000,
    # re-based with the network keys (+1.1-1.4 KB in every configuration):
    # 64414 measured, 86 bytes under 64500; GOAL_BLE is the bar
    "jk-ble+mcp2515": 66000,
    # measured when set: 61023, 78159, 57558
    "jk-pb-x4+mcp2515": 63500,
    "jk-pb-x15+mcp2515": 81500,
    "listen-x4+mcp2515": 60000,
    # measured when set: 53495, 53542, 53627, 54391, 52817, 52343
    "growatt+mcp2515": 55000,
    "sma+mcp2515": 55000,
    "victron+mcp2515": 55000,
    "pylon_plus+mcp2515": 56000,
    "luxpower+mcp2515": 54500,
    "deye+mcp2515": 54000,
    # measured when set: 78317-78349, 82994-83010 (mqtt_as in the image too)
    "net+mcp2515": 80500,
    "net-all+mcp2515": 85000,
}
GOAL_BLE = 96 * 1024
# the "Seams" issue's ESP32-WROOM budget: what MicroPython's heap gets there
# without PSRAM; the Wi-Fi driver's own buffers come from the IDF heap, which the
# GC heap also grows from (how much of it Wi-Fi takes is to be measured on the
# device: the spec gives no figure), so the headroom below it is not all free
WROOM_HEAP = 110 * 1024


def _need_wasm():
    if not WASM.is_dir():
        reason = "node_modules has no MicroPython webassembly port (npm ci): RAM not measured"
        print(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def device_lib(tmp_path_factory):
    """The .mpy tree, built by make device into a directory of this test's own."""
    _need_wasm()
    out = tmp_path_factory.mktemp("ram") / "device"
    subprocess.run(["make", "-s", "device", "DEVICE=%s" % out, "VENV=%s" % BIN.parent], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return out / "lib"


def _ram():
    sys.path.insert(0, str(ROOT / "host"))
    import ram

    return ram


@pytest.fixture(scope="module")
def aioble_lib(tmp_path_factory):
    """aioble's .mpy as make aioble-mpy builds them, or None (said) without the vendor copy."""
    out = tmp_path_factory.mktemp("aioble") / "lib"
    r = subprocess.run(["make", "-s", "aioble-mpy", "AIOBLE_MPY=%s" % out, "VENV=%s" % BIN.parent], cwd=ROOT,
                       capture_output=True, text=True)
    why = _ram().aioble_missing(str(out))
    if r.returncode != 0 or why:
        print("aioble unavailable, the BLE configuration is not measured: %s %s" % (why, r.stdout + r.stderr))
        return None
    return out


@pytest.fixture(scope="module")
def mqtt_as_lib(tmp_path_factory):
    """mqtt_as's .mpy as make mqtt-as-mpy builds them, or None (said) without the vendor copy."""
    out = tmp_path_factory.mktemp("mqtt_as") / "lib"
    r = subprocess.run(["make", "-s", "mqtt-as-mpy", "MQTT_AS_MPY=%s" % out, "VENV=%s" % BIN.parent], cwd=ROOT,
                       capture_output=True, text=True)
    why = _ram().mqtt_as_missing(str(out))
    if r.returncode != 0 or why:
        print("mqtt_as unavailable, the network configurations are not measured: %s %s" % (why, r.stdout + r.stderr))
        return None
    return out


def _names(ram, aioble_lib, mqtt_as_lib):
    """Every configuration; without aioble those over BLE are left out, without mqtt_as the network
    ones (their own tests skip)."""
    return [n for n in ram.ram_probe.NAMES if (aioble_lib is not None or n not in ram.ram_probe.BLE_NAMES)
            and (mqtt_as_lib is not None or n not in ram.ram_probe.NET_NAMES)]


def _need_aioble(aioble_lib):
    if aioble_lib is None:
        reason = "aioble unavailable (no ../shared/vendor copy, make aioble-mpy found none): BLE RAM not measured"
        print(reason)
        pytest.skip(reason)


def _need_mqtt_as(mqtt_as_lib):
    if mqtt_as_lib is None:
        reason = "mqtt_as unavailable (no ../shared/vendor copy, make mqtt-as-mpy found none): network RAM not measured"
        print(reason)
        pytest.skip(reason)


def test_every_configuration_fits_its_budget(device_lib, aioble_lib, mqtt_as_lib):
    ram = _ram()
    assert set(BUDGET) == set(ram.ram_probe.NAMES)
    names = _names(ram, aioble_lib, mqtt_as_lib)
    totals, _ = ram.measure(lib=str(device_lib), names=names, aioble=str(aioble_lib or "/nonexistent"),
                            mqtt_as=str(mqtt_as_lib or "/nonexistent"))
    for name in names:
        print("ram %s: %d bytes (budget %d)" % (name, totals[name], BUDGET[name]))
    over = {name: (totals[name], BUDGET[name]) for name in names if totals[name] > BUDGET[name]}
    assert not over, "over the RAM budget (bytes, budget): %r" % over


@pytest.fixture(scope="module")
def romfs_totals(device_lib, aioble_lib, mqtt_as_lib):
    """{config: bytes} of every configuration measurable here, from a ROMFS image (one run)."""
    ram = _ram()
    names = _names(ram, aioble_lib, mqtt_as_lib)
    totals, _ = ram.measure(lib=str(device_lib), names=names, aioble=str(aioble_lib or "/nonexistent"), romfs=True,
                            mqtt_as=str(mqtt_as_lib or "/nonexistent"))
    return totals


def test_with_bytecode_in_flash_everything_fits(device_lib, romfs_totals):
    ram = _ram()
    assert set(ROMFS_BUDGET) == set(ram.ram_probe.NAMES)
    totals = romfs_totals
    mpy, _ = ram.measure(lib=str(device_lib), names=("jk-pb+mcp2515",))
    for name in sorted(totals):
        print("ram %s: %d bytes with ROMFS (budget %d)" % (name, totals[name], ROMFS_BUDGET[name]))
    over = {name: (totals[name], ROMFS_BUDGET[name]) for name in totals if totals[name] > ROMFS_BUDGET[name]}
    assert not over, "over the ROMFS RAM budget (bytes, budget): %r" % over
    # the image really keeps the bytecode out of the heap: far less than the .mpy figure
    assert totals["jk-pb+mcp2515"] < 0.7 * mpy["jk-pb+mcp2515"]


def test_network_outputs_with_bytecode_in_flash_fit_an_esp32_wroom(mqtt_as_lib, romfs_totals):
    # issue "Network outputs" item 7: Wi-Fi + MQTT (HA discovery) + web page, and with InfluxDB,
    # within the ESP32-WROOM budget of the "Seams" issue -- with the ROMFS firmware (the .mpy
    # figures are far above it) -- and within the goal the other radio configuration (BLE)
    # meets, which leaves ~14 KB of it for transient allocations (a state JSON of ~1.4 KB, a
    # discovery payload, a page chunk) and fragmentation
    _need_mqtt_as(mqtt_as_lib)
    for name in _ram().ram_probe.NET_NAMES:
        print("ram %s: %d bytes with ROMFS, %d below the ESP32-WROOM's %d" % (
            name, romfs_totals[name], WROOM_HEAP - romfs_totals[name], WROOM_HEAP))
        assert romfs_totals[name] <= WROOM_HEAP, (name, romfs_totals[name])
        assert romfs_totals[name] <= GOAL_BLE, (name, romfs_totals[name])
    # each output costs its share (InfluxDB on top of the rest): the figures are the outputs'
    assert romfs_totals["net-all+mcp2515"] > romfs_totals["net+mcp2515"] > romfs_totals["jk-pb+mcp2515"]


def test_ble_with_bytecode_in_flash_meets_its_goal(aioble_lib, romfs_totals):
    # the goal: gateway + aioble + one connection <= 96 KB on the 32-bit port
    _need_aioble(aioble_lib)
    assert romfs_totals["jk-ble+mcp2515"] <= GOAL_BLE, romfs_totals["jk-ble+mcp2515"]


def test_the_probe_fails_when_the_bms_data_is_not_accepted(device_lib, tmp_path):
    # a measurement counts only when the data set was accepted and the frames went out:
    # without the status reply the probe must say so instead of printing a figure
    ram = _ram()
    name = "jk-pb+mcp2515"
    key = ram.ram_probe.replies_key(name)
    replies = ram.record_replies(name)
    with open(tmp_path / (key + ".txt"), "w") as f:
        for req, reply in sorted(replies.items()):
            if reply[4] != 0x02:  # drop the cell-info (status) reply
                f.write("%s %s\n" % (req.hex(), reply.hex()))
    _probe_refuses(ram, device_lib, tmp_path, name)


def test_the_probe_fails_when_a_pack_of_several_is_not_online(device_lib, tmp_path):
    # with several packs the figure counts only when every pack was read: without the replies of
    # the pack at address 3 the probe must say so instead of printing a figure
    ram = _ram()
    name = "jk-pb-x4+mcp2515"
    key = ram.ram_probe.replies_key(name)
    replies = ram.record_bus_replies()
    assert {req[0] for req in replies} == set(range(1, 16))
    with open(tmp_path / (key + ".txt"), "w") as f:
        for req, reply in sorted(replies.items()):
            if req[0] != 3:
                f.write("%s %s\n" % (req.hex(), reply.hex()))
    _probe_refuses(ram, device_lib, tmp_path, name)


def _probe_refuses(ram, device_lib, tmp_path, name):
    """The probe, given the replies written to tmp_path, fails and prints no figure for name."""
    r = subprocess.run(["node", ram.DRIVER, "--lib", str(device_lib), "--replies", str(tmp_path), name], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ram %s:" % name not in r.stdout
    assert "had no recorded reply" in r.stderr, r.stderr


def test_the_probe_fails_when_a_network_output_is_missing(device_lib, tmp_path):
    # a network figure counts only with every configured output running: without mqtt_as on the
    # path net.hub leaves MQTT out (and says so), and the probe must refuse instead of printing
    # the smaller figure
    ram = _ram()
    name = "net+mcp2515"
    ram.write_replies(str(tmp_path), [name])
    r = subprocess.run(["node", ram.DRIVER, "--lib", str(device_lib), "--mqtt-as", str(tmp_path / "none"),
                        "--replies", str(tmp_path), name], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ram %s:" % name not in r.stdout
    assert "network outputs ['web'], want ['mqtt', 'web']" in r.stderr, r.stderr
    assert "mqtt off" in r.stderr, r.stderr
