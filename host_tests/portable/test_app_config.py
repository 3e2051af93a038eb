# app.config: defaults, validation with per-key fallback, atomic save, and
# app.storage.FileStore. Runs under CPython and real MicroPython.

from fakes import MemStore

from app import config as C


def test_defaults_are_valid_and_every_package_contributes_its_keys():
    import sys
    cfg = C.defaults()
    for key in cfg:
        assert C.check(key, cfg[key]) == cfg[key]
    n = 2  # wdt_ms, status_s: app.config's own
    for name in C.PARTS:  # <package>/schema.py
        __import__(name)
        part = sys.modules[name].SCHEMA
        n += len(part)
        for key in part:
            assert C.SCHEMA[key] == part[key]
    assert n == len(C.SCHEMA)  # every key comes from exactly one package
    assert cfg["bms_rx"] == 16 and cfg["bms_tx"] == 17 and cfg["bms_baud"] == 115200
    # 0 / "auto" / "": the protocol's own timeout, link-loss policy and name
    assert cfg["bms_timeout_s"] == 5 and cfg["inverter_timeout_s"] == 0
    assert cfg["link_loss"] == "auto" and cfg["can_period_ms"] == 1000 and cfg["battery_name"] == ""
    assert cfg["can_backend"] == "mcp2515"  # what the PCB's jumpers select as built


def test_missing_or_broken_config_gives_defaults_and_says_why():
    msgs = []
    assert C.load(MemStore(), "gateway.json", msgs) == C.defaults()
    assert "no gateway.json" in msgs[0]
    msgs = []
    assert C.load(MemStore({"gateway.json": "{not json"}), "gateway.json", msgs) == C.defaults()
    assert "not valid JSON" in msgs[0]
    msgs = []
    assert C.load(MemStore({"gateway.json": "[1, 2]"}), "gateway.json", msgs) == C.defaults()
    assert msgs


def test_invalid_keys_fall_back_one_by_one():
    msgs = []
    text = ('{"can_period_ms": 50, "bms_protocol": "jk-nw", "battery_name": "TOO-LONG-NAME", "bogus": 1,'
            ' "modules": true}')
    cfg = C.load(MemStore({"gateway.json": text}), "gateway.json", msgs)
    assert cfg["bms_protocol"] == "jk-nw"  # the valid key is kept
    assert cfg["can_period_ms"] == 1000 and cfg["battery_name"] == "" and cfg["modules"] == 0
    joined = " | ".join(msgs)
    assert "can_period_ms" in joined and "bogus" in joined and "battery_name" in joined and "modules" in joined
    assert len(msgs) == 4


def test_save_round_trips_and_refuses_invalid_values():
    store = MemStore()
    cfg = C.defaults()
    cfg["can_period_ms"] = 500
    C.save(store, "gateway.json", cfg)
    msgs = []
    assert C.load(store, "gateway.json", msgs) == cfg and not msgs
    cfg["can_period_ms"] = 10
    try:
        C.save(store, "gateway.json", cfg)
        raise AssertionError("should have raised ValueError (can_period_ms out of range)")
    except ValueError:
        pass
    assert store.writes == 1  # the bad config never reached the flash


def _fresh_dir(name):
    import os
    for d in ("build", name):  # build/ is git-ignored
        try:
            os.mkdir(d)
        except OSError:
            pass
    for f in ("gateway.json", "gateway.json.new", "safeboot"):
        try:
            os.remove(name + "/" + f)
        except OSError:
            pass
    return name


def test_file_store_saves_atomically_and_survives_a_torn_write():
    import os

    from app.storage import FileStore
    store = FileStore(_fresh_dir("build/store_test"))
    cfg = C.defaults()
    cfg["modules"] = 3
    C.save(store, "gateway.json", cfg)
    assert "gateway.json.new" not in os.listdir("build/store_test")  # renamed over, nothing left behind
    # a power cut while the next save was writing: a torn .new file, the old file intact
    with open("build/store_test/gateway.json.new", "w") as f:
        f.write('{"modules": 5, "can_peri')
    msgs = []
    assert C.load(store, "gateway.json", msgs)["modules"] == 3 and not msgs
    cfg["modules"] = 4
    C.save(store, "gateway.json", cfg)  # the next save replaces both
    assert C.load(store, "gateway.json", msgs)["modules"] == 4 and not msgs


def test_file_store_exists_and_remove_drive_the_safe_boot_flag():
    from app.storage import FileStore
    store = FileStore(_fresh_dir("build/store_test"))
    assert not store.exists("safeboot")
    store.write_atomic("safeboot", "")
    assert store.exists("safeboot")
    store.remove("safeboot")
    assert not store.exists("safeboot")
    store.remove("safeboot")  # removing what is not there is not an error


class BrokenStore(MemStore):
    """A store whose read fails the way a damaged flash file makes it fail."""

    def __init__(self, exc):
        MemStore.__init__(self)
        self.exc = exc

    def read(self, name, limit=None):
        raise self.exc


def test_unreadable_undecodable_or_oversized_config_falls_back_to_defaults():
    import os

    from app.storage import FileStore
    d = _fresh_dir("build/store_test")
    store = FileStore(d)
    cases = (
        (b'{"modules": 3, "battery_name": "\xff\xfe"}', "not valid UTF-8"),  # a flipped byte on the flash
        (b'{"modules": 3, "pad": "' + b"x" * 20000 + b'"}', "larger than"),  # would not fit the heap
        (b"\x00" * 64, "not valid JSON"),
        (b"17", "not a JSON object"),
        (b"[" * 4000, "not valid JSON"),  # nesting deeper than a parser's recursion limit
    )
    for content, why in cases:
        with open(d + "/gateway.json", "wb") as f:
            f.write(content)
        msgs = []
        assert C.load(store, "gateway.json", msgs) == C.defaults(), why
        assert any(why in m for m in msgs), (why, msgs)
    os.remove(d + "/gateway.json")
    for exc, why in ((MemoryError(), "too large for the heap"), (OSError(5), "no gateway.json")):
        msgs = []
        assert C.load(BrokenStore(exc), "gateway.json", msgs) == C.defaults()
        assert any(why in m for m in msgs), (why, msgs)


def test_contradicting_poll_timing_is_fitted_and_said():
    # poll 10 s with a 2 s timeout: 0 A for 8 s of every 10; reply 3000 ms: 12 s to recover
    def fits(cfg):
        return cfg["bms_poll_ms"] + 7 * cfg["bms_reply_ms"] + 100 <= cfg["bms_timeout_s"] * 1000

    msgs = []
    cfg = C.validate({"bms_poll_ms": 10000, "bms_timeout_s": 2}, msgs)
    assert cfg["bms_timeout_s"] == 2 and fits(cfg)  # the safety bound is kept
    assert (cfg["bms_poll_ms"], cfg["bms_reply_ms"]) == (206, 242)
    assert len(msgs) == 2 and "bms_poll_ms 10000 does not fit bms_timeout_s 2" in msgs[0]
    msgs = []
    cfg = C.validate({"bms_reply_ms": 3000}, msgs)  # the default poll and timeout stay
    assert (cfg["bms_poll_ms"], cfg["bms_reply_ms"], cfg["bms_timeout_s"]) == (1000, 557, 5) and fits(cfg)
    assert len(msgs) == 1 and "bms_reply_ms 3000 does not fit bms_timeout_s 5" in msgs[0]
    for timeout in range(C.SCHEMA["bms_timeout_s"][2], C.SCHEMA["bms_timeout_s"][3] + 1):
        for poll in (200, 1000, 5000, 10000):
            for reply in (50, 500, 3000):
                msgs = []
                cfg = C.validate({"bms_poll_ms": poll, "bms_timeout_s": timeout, "bms_reply_ms": reply}, msgs)
                assert fits(cfg) and cfg["bms_timeout_s"] == timeout
                assert bool(msgs) == (poll + 7 * reply + 100 > timeout * 1000)
                for key in ("bms_poll_ms", "bms_reply_ms"):
                    assert C.check(key, cfg[key]) == cfg[key]  # still inside its own range
    msgs = []
    assert C.validate({}, msgs) == C.defaults() and not msgs  # the defaults fit by themselves


def test_a_malformed_ble_mac_is_said_and_left_empty():
    # the BLE source then connects to nothing ("no BMS configured") instead of a wrong address
    for bad in ("C8:47:8C:12:34", "C8:47:8C:12:34:5G", "C8-47-8C-12-34-56", "C8:47:8C:12:34:567"):
        msgs = []
        cfg = C.validate({"bms_transport": "ble", "ble_mac": bad}, msgs)
        assert cfg["ble_mac"] == "", bad
        assert msgs and "ble_mac must be like C8:47:8C:12:34:56" in msgs[0], msgs
    msgs = []
    assert C.validate({"ble_mac": "c8:47:8c:12:34:56"}, msgs)["ble_mac"] == "c8:47:8c:12:34:56" and not msgs


def test_bms_addresses_lists_scan_and_bad_values():
    assert C.check("bms_addresses", [3, 1, 2]) == [1, 2, 3]
    assert C.check("bms_addresses", "scan") == "scan"
    assert C.check("bms_addresses", []) == []
    for bad, why in (([1, 1], "twice"), ([16], "0..15"), ([True], "integers"), ("1,2", "scan"),
                     (list(range(17)), "up to 16"), ([1.5], "integers")):
        try:
            C.check("bms_addresses", bad)
        except ValueError as e:
            assert why in e.args[0], (bad, e.args[0])
        else:
            raise AssertionError("accepted %r" % (bad,))
    assert C.parse_value("bms_addresses", "[1, 4]") == [1, 4]
    assert C.parse_value("bms_addresses", "scan") == "scan"
    try:
        C.parse_value("bms_addresses", "1 4")
    except ValueError as e:
        assert "JSON list like [1, 2, 3]" in e.args[0]
    else:
        raise AssertionError("accepted '1 4'")


def test_bus_roles_are_fitted_and_said():
    msgs = []
    cfg = C.validate({"bms_addresses": [0, 1, 2]}, msgs)
    assert cfg["bms_addresses"] == [1, 2] and "address 0 is a JK bus master" in msgs[0]
    assert C.validate({"bms_addresses": [7]}, [])["bms_address"] == 7  # one pack: the single source there
    msgs = []
    cfg = C.validate({"bms_bus_role": "listen", "bms_addresses": [0, 1]}, msgs)
    # a JK master polls every ~4.4 s: the default 5 s timeout would make the packs flap
    assert cfg["bms_addresses"] == [0, 1] and cfg["bms_timeout_s"] == 10 and "listener" in msgs[0], msgs
    msgs = []
    cfg = C.validate({"bms_bus_role": "listen", "bms_transport": "ble"}, msgs)
    assert cfg["bms_bus_role"] == "master" and "needs the UART" in msgs[0]
    msgs = []
    cfg = C.validate({"bms_protocol": "jk-nw", "bms_addresses": [1, 2], "bms_transport": "uart+ble"}, msgs)
    assert cfg["bms_addresses"] == [] and cfg["bms_transport"] == "uart" and "need bms_protocol jk-pb" in msgs[0]
