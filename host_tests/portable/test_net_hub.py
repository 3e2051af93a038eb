# net.hub and its place in app.gateway: the network outputs are built only
# when wifi_ssid is set, only the configured ones, and whatever goes wrong
# with them (a module that cannot be imported, an output that crashes or
# hangs on a socket) leaves the gateway running with its CAN output on time.
# CPython and MicroPython.

import sys

from fakes import CountingWdt, FakeCan, FakeRecovery, FakeUart, MemStore, pb_replies

from app import config as C
from app import gateway as G
from compat import sleep_ms


class FakeWlan:
    def __init__(self):
        self.on = False
        self.connects = 0

    def active(self, on=None):
        return True

    def connect(self, ssid, pw):
        self.connects += 1
        self.on = True

    def disconnect(self):
        self.on = False

    def isconnected(self):
        return self.on

    def status(self):
        return 1010 if self.on else 1000

    def ifconfig(self):
        return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")


def _cfg(**kw):
    cfg = C.defaults()
    for k in kw:
        cfg[k] = kw[k]
    return cfg


def _gateway(cfg, out):
    return G.Gateway(cfg, FakeUart(pb_replies()), FakeCan(), FakeRecovery(), CountingWdt(), MemStore(), None,
                     "gateway.json", out.append)


class Broken:
    """A module entry without the class asked for: the import fails as a
    missing or half-installed module would."""


def _with_broken(name, fn):
    had = sys.modules.get(name)
    sys.modules[name] = Broken()
    try:
        return fn()
    finally:
        if had is None:
            del sys.modules[name]
        else:
            sys.modules[name] = had


def test_without_wifi_ssid_there_is_no_network_at_all():
    out = []
    gw = _gateway(_cfg(), out)
    assert gw.status.net is None
    assert gw.execute("net") == ["network: off (wifi_ssid is empty)"]


def test_a_network_that_cannot_be_built_is_reported_and_the_gateway_runs():
    out = []
    gw = _with_broken("net.hub", lambda: _gateway(_cfg(wifi_ssid="home"), out))
    assert gw.status.net is None
    assert any("network: outputs off" in line for line in out), out


def test_only_the_configured_outputs_are_loaded_and_a_missing_one_is_said():
    from net.hub import Net

    out = []
    gw = _gateway(_cfg(wifi_ssid="home"), out)
    net = Net(gw.status, wlan=FakeWlan(), dev_id="a1b2c3d4e5f6")
    assert [n for n, _ in net.tasks()] == ["wifi"] and net.outputs == []
    gw.status.cfg["mqtt_host"] = "192.168.1.2"
    net = _with_broken("net.mqtt", lambda: Net(gw.status, wlan=FakeWlan(), dev_id="a1b2c3d4e5f6"))
    assert [n for n, _ in net.tasks()] == ["wifi"]
    said = [line for line in out if "mqtt off" in line]
    assert said and "mip install" in said[0], out
    assert net.device_id == "a1b2c3d4e5f6"
    assert net.lines(0)[0].startswith("Wi-Fi 'home' DOWN")


class Crashing:
    name = "crashing"

    def __init__(self):
        self.runs = 0

    async def run(self):
        self.runs += 1
        await sleep_ms(50)
        raise OSError(113)  # EHOSTUNREACH, as a socket would

    def lines(self, now):
        return ["crashing: runs %d" % self.runs]


class Hanging:
    """Waits on a socket that never answers (an await that never returns)."""
    name = "hanging"

    async def run(self):
        while True:
            await sleep_ms(1000)

    def lines(self, now):
        return ["hanging"]


async def test_a_crashing_and_a_hanging_output_leave_the_can_output_on_time():
    from net.hub import Net

    out = []
    cfg = _cfg(wifi_ssid="home", can_period_ms=200, status_s=0)
    gw = _gateway(cfg, out)
    wlan = FakeWlan()
    net = Net(gw.status, wlan=wlan, dev_id="a1b2c3d4e5f6")
    crash = Crashing()
    net.outputs = [crash, Hanging()]
    gw.status.net = net
    await gw.run(4)
    assert wlan.connects == 1 and net.wifi.up
    assert crash.runs >= 3 and gw.status.task_restarts >= 2  # supervised: restarted with back-off
    assert any("crashing crashed" in line for line in out), out
    assert any("Wi-Fi connected to 'home', address 192.168.1.50" in line for line in out), out
    # the CAN output ran all along: a frame set every 200 ms once the data came
    # (about 15 on an idle machine; the bound leaves room for a loaded one)
    assert gw.tx.bursts >= 6, gw.tx.bursts
    assert gw.status.wdt_starved == ""
    lines = gw.execute("net")
    assert lines[0].startswith("Wi-Fi 'home' up") and lines[1:] == ["crashing: runs %d" % crash.runs, "hanging"]


def test_the_console_never_shows_a_secret():
    out = []
    gw = _gateway(_cfg(wifi_password="hunter22"), out)
    lines = gw.execute("get wifi_password") + gw.execute("get")
    assert lines[0].startswith("wifi_password = '***'"), lines[0]
    assert not [line for line in lines if "hunter22" in line]
    said = gw.execute("set mqtt_password s3cret")
    assert "s3cret" not in said[0] and "'***'" in said[0], said
    shown = gw.execute("get mqtt_password")[0]
    assert shown.startswith("mqtt_password = ''") and "set to '***'" in shown and "s3cret" not in shown
    # an empty text is typed as "" (and an empty secret shows as it is)
    assert gw.execute('set mqtt_host ""')[0].startswith("mqtt_host = ''")
