# net.mqtt.MqttOut on a real gateway (fakes for the hardware, a real JK-PB capture in its
# snapshot) with a fake mqtt_as client that behaves as the subclass in net/mqtt.py does: connect()
# goes through the output's gate (Wi-Fi, back-off, DNS) and calls the callbacks as tasks, publish()
# and subscribe() raise OSError while the link is down, and after a first success the client
# reconnects by itself (mqtt_as's _keep_connected). Checked: the topics, retained flags, QoS and
# the LWT; availability first, then discovery (one config per await), then the state; discovery
# again after a reconnect and on HA's birth message (not on a retained replay); nothing published
# while the broker is away (counted as skipped); at most the events ring after an outage; the
# first connect retried with back-off and said once; per-pack topics with several packs.
# The real mqtt_as subclass (the radio view, publish that never waits) runs under the unix port
# only (mqtt_as needs sockets and MicroPython's time / asyncio names): the last test.
# CPython and MicroPython (unix and webassembly ports).
# unix heap: 768k -- gateway, app.packs, bus task, net.mqtt / ha / telemetry and mqtt_as (33 KB) compiled
# from source, and the fake client's record of every message (two discovery rounds), on the 64-bit port

import asyncio
import json

import mpcompat
from fakes import CountingWdt, FakeCan, FakeRecovery, FakeUart, MemStore, load_pb_pack

from app import config as C
from app import gateway as G
from compat import sleep_ms, ticks_diff, ticks_ms
from net import mqtt as M
from net.hub import Net
from outputs import events as E

DEV = "a1b2c3d4e5f6"
BASE = "jkgw/" + DEV


class Wlan:
    def __init__(self):
        self.up = True
        self.disconnects = 0

    def active(self, *a):
        return True

    def isconnected(self):
        return self.up

    def ifconfig(self):
        return ("192.168.1.9", "255.255.255.0", "192.168.1.1", "192.168.1.1")

    def status(self, *a):
        return 1010 if self.up else 1001

    def connect(self, *a):
        pass

    def disconnect(self):
        self.disconnects += 1


class FakeClient:
    """mqtt_as's MQTTClient as MqttOut sees it (see the file header)."""

    def __init__(self, conf):
        self.conf = conf
        self.server = conf["server"]
        self.broker = True  # reachable
        self.up = False
        self.ever = False
        self.attempts = 0
        self.sent = []  # (topic, msg, retain, qos)
        self.subs = []
        self.publish_while_down = 0
        self.keeper = None

    def isconnected(self):
        return self.up

    async def connect(self):
        if not self.ever:
            await self.conf["gate"]()
        self.attempts += 1
        if not self.broker:
            raise OSError(111, "ECONNREFUSED")
        self.up = True
        asyncio.create_task(self.conf["wifi_coro"](True))
        asyncio.create_task(self.conf["connect_coro"](self))
        if not self.ever:
            self.ever = True
            self.keeper = asyncio.create_task(self._keep())

    async def _keep(self):
        while True:
            await sleep_ms(20)  # mqtt_as: 1 s
            if self.up:
                continue
            try:
                await self.conf["gate"]()
                await self.connect()
            except OSError:
                pass

    def lose(self, broker=True):
        self.broker = broker
        if self.up:
            self.up = False
            asyncio.create_task(self.conf["wifi_coro"](False))

    async def publish(self, topic, msg, retain=False, qos=0):
        if not self.up:
            self.publish_while_down += 1
            raise OSError(-1, "not connected")
        self.sent.append((topic, msg, retain, qos))
        await sleep_ms(0)

    async def subscribe(self, topic, qos=0):
        if not self.up:
            raise OSError(-1, "not connected")
        self.subs.append(topic)

    def deliver(self, topic, msg, retained=False):
        self.conf["subs_cb"](topic.encode(), msg.encode(), retained)

    def topics(self, start=0):
        return [t for t, _, _, _ in self.sent[start:]]


def make(cfg=None, packs=False):
    if packs:
        from test_app_packs import make_gw

        gw, _, _ = make_gw()
    else:
        gw = G.Gateway(cfg or C.defaults(), FakeUart({}), FakeCan(), FakeRecovery(), CountingWdt(), MemStore(),
                       None, "gateway.json", [].append)
        load_pb_pack(gw.source.snap)
        gw.source.fresh.data_ok(ticks_ms())
    st = gw.status
    st.cfg["wifi_ssid"] = "home"
    wlan = Wlan()
    st.net = net = Net(st, wlan=wlan, dev_id=DEV)  # no outputs: mqtt_host is still ""
    st.cfg["mqtt_host"] = "192.168.1.5"
    net.wifi._check()  # the station is up
    out = M.MqttOut(net, FakeClient)
    out.interval_ms = 200  # the tests' pace (mqtt_interval_s is at least 1 s)
    out.idle_ms = 10
    out.gap_ms = 1
    out.backoff = (0, 30, 60)
    out.quiet_ms = 400
    net.outputs.append(out)
    return gw, out, out.client, wlan


async def until(cond, ms=20000):
    # generous: it returns as soon as cond() holds; a loaded machine (the webassembly
    # port beside other jobs) takes several times the 1 s a discovery round needs
    t0 = ticks_ms()
    while not cond():
        if ticks_diff(ticks_ms(), t0) > ms:
            return False
        await sleep_ms(10)
    return True


async def settled(out, c):
    """The first state has gone and the connection's discovery round is over: a slow
    (loaded) runtime may send a state mid-round, when the period comes first."""
    return await until(lambda: BASE + "/state" in c.topics() and out._disc is None)


async def running(out, body):
    """Run out.run() as a task while body() runs; cancel it after."""
    task = asyncio.create_task(out.run())
    try:
        await body()
    finally:
        task.cancel()
        if out.client.keeper is not None:
            out.client.keeper.cancel()
        await sleep_ms(0)


async def test_connect_online_then_discovery_then_state():
    gw, out, c, _ = make()
    conf = c.conf
    assert conf["will"] == (BASE + "/availability", "offline", True, 1)
    assert conf["client_id"] == "jkgw-" + DEV and conf["server"] == "192.168.1.5" and conf["port"] == 1883
    assert conf["ssl"] is False and conf["clean"] is True and conf["queue_len"] == 0

    # no period during the round, however slow the runtime: the state goes when the round ends
    out.interval_ms = 60000

    async def body():
        assert await until(lambda: BASE + "/event" in c.topics())  # the events go after the state
    await running(out, body)
    t, msg, retain, qos = c.sent[0]
    assert (t, msg, retain, qos) == (BASE + "/availability", "online", True, 0)
    assert c.subs == ["homeassistant/status"]
    topics = c.topics()
    i_state = topics.index(BASE + "/state")
    disc = c.sent[1:i_state]
    assert len(disc) == out.disc_sent and len(disc) > 30
    for t, msg, retain, qos in disc:
        assert t.startswith("homeassistant/") and t.endswith("/config") and retain and qos == 0
        d = json.loads(msg)
        assert d["avty_t"] == "~/availability" and d["~"] == BASE and d["dev"]["ids"] == ["jkgw_" + DEV]
    cells = [t for t, _, _, _ in disc if "/cell_" in t and t.split("/")[3][5:].isdigit()]
    assert len(cells) == gw.source.snap.cell_count
    _, msg, retain, qos = c.sent[i_state]
    d = json.loads(msg)
    assert not retain and qos == 0 and d["soc_percent"] == 88 and d["links"]["mqtt"] == "connected"
    assert out.state_bytes == len(msg)
    ev = [m for t, m, _, _ in c.sent if t == BASE + "/event"]
    assert "network: MQTT connected to 192.168.1.5:1883 as jkgw-" + DEV in ev
    assert out.connects == 1 and out.losses == 0 and c.publish_while_down == 0
    lines = "\n".join(out.lines(ticks_ms()))
    assert "connected for" in lines and "discovery on: sent %d" % out.disc_sent in lines


async def test_the_state_goes_every_interval_and_packs_only_with_several():
    gw, out, c, _ = make()

    async def body():
        assert await until(lambda: c.topics().count(BASE + "/state") >= 3)
    await running(out, body)
    assert not [t for t in c.topics() if "/pack/" in t]


async def test_several_packs_have_their_topics():
    gw, out, c, _ = make(packs=True)
    await gw.links[0].cycle(1000)

    async def body():
        assert await until(lambda: BASE + "/pack/3/state" in c.topics())
    await running(out, body)
    topics = c.topics()
    i = topics.index(BASE + "/state")
    assert topics[i + 1:i + 4] == [BASE + "/pack/%d/state" % n for n in (1, 2, 3)]
    p = json.loads(c.sent[i + 2][1])
    assert p["name"] == gw.packs[1].name and p["state"] == "online"


async def test_nothing_is_published_while_the_broker_is_away_and_all_comes_back():
    gw, out, c, wlan = make()

    async def body():
        assert await settled(out, c)
        first = out.disc_sent
        c.lose(broker=False)
        n = len(c.sent)
        await sleep_ms(550)  # almost 3 state periods
        assert len(c.sent) == n and c.publish_while_down == 0
        assert out.skipped >= 2 and not out.connected
        assert "DOWN" in out.lines(ticks_ms())[0]
        assert wlan.disconnects == 0  # the broker's outage never touches the station
        c.broker = True
        assert await until(lambda: [m for t, m, _, _ in c.sent[n:] if t == BASE + "/event" and "lost" in m])
        assert await until(lambda: out._disc is None and out.disc_sent == 2 * first)  # the new connection's round
        back = c.sent[n:]
        assert back[0][:3] == (BASE + "/availability", "online", True)
        assert len([t for t, _, r, _ in back if t.endswith("/config") and r]) == first
    await running(out, body)
    assert out.connects == 2 and out.losses == 1
    lost = [m for t, m, _, _ in c.sent if t == BASE + "/event" and "lost" in m]
    assert lost == ["network: MQTT connection lost (broker connection lost; 1 so far): reconnecting, "
                    "CAN output goes on"]
    assert out.failures >= 1  # the attempts while the broker refused


async def test_a_wifi_loss_is_named_as_such():
    gw, out, c, wlan = make()

    async def body():
        assert await until(lambda: BASE + "/state" in c.topics())
        wlan.up = False  # net.wifi has not looked yet: the station says it
        c.lose(broker=False)
        assert await until(lambda: out.losses == 1)
        assert "DOWN" in out.lines(ticks_ms())[0]
        assert await until(lambda: "MQTT connection lost (Wi-Fi down; 1 so far)" in
                           " ".join(e for _, _, e in gw.events.recent()))
    await running(out, body)


async def test_at_most_the_events_ring_is_published_after_an_outage():
    gw, out, c, _ = make()

    async def body():
        assert await settled(out, c)
        c.lose(broker=False)
        assert await until(lambda: not out.connected)
        n = len(c.sent)
        for i in range(40):
            gw.events.emit(E.NET, "event %d" % i)
        c.broker = True
        assert await until(lambda: "network: event 39" in [m for _, m, _, _ in c.sent[n:]])
        ev = [m for t, m, _, _ in c.sent[n:] if t == BASE + "/event"]
        mine = [m for m in ev if m.startswith("network: event ")]
        # the ring's newest, in order (the output's own connection events may be among the 16)
        assert len(ev) <= 16 and mine == ["network: event %d" % i for i in range(40 - len(mine), 40)], ev
        assert out.ev_dropped >= 40 - 16
    await running(out, body)


async def test_ha_birth_sends_discovery_again_a_retained_one_does_not():
    gw, out, c, _ = make()

    async def body():
        assert await settled(out, c)
        first = out.disc_sent
        c.deliver("homeassistant/status", "online", retained=True)
        c.deliver("homeassistant/status", "offline")
        c.deliver("some/other", "online")
        await sleep_ms(200)
        assert out.disc_sent == first and out.births == 0
        c.deliver("homeassistant/status", "online")
        assert await until(lambda: out.disc_sent == 2 * first)
        assert out.births == 1
    await running(out, body)


async def test_discovery_off_subscribes_to_nothing():
    cfg = C.defaults()
    cfg["ha_discovery"] = "off"
    gw, out, c, _ = make(cfg)

    async def body():
        assert await until(lambda: BASE + "/state" in c.topics())
    await running(out, body)
    assert c.subs == [] and not [t for t in c.topics() if t.startswith("homeassistant/")]
    assert "discovery off" in "\n".join(out.lines(ticks_ms()))


async def test_new_cells_are_announced_by_themselves():
    gw, out, c, _ = make()
    snap = gw.source.snap
    n = snap.cell_count
    snap.cell_count = 4  # as if the BMS had said 4 cells at the first connect
    snap.cell_stats()

    async def body():
        assert await settled(out, c)
        k = len(c.sent)
        snap.cell_count = n
        snap.cell_stats()
        assert await until(lambda: ("homeassistant/sensor/jkgw_%s/cell_%d/config" % (DEV, n)) in c.topics(k))
        new = [t for t in c.topics(k) if t.endswith("/config")]
        assert new == ["homeassistant/sensor/jkgw_%s/cell_%d/config" % (DEV, i) for i in range(5, n + 1)]
        k = len(c.sent)
        snap.cell_count = 3
        assert await until(lambda: "homeassistant/sensor/jkgw_%s/cell_%d/config" % (DEV, n) in c.topics(k))
        gone = [(t, m) for t, m, _, _ in c.sent[k:] if t.endswith("/config")]
        assert gone == [("homeassistant/sensor/jkgw_%s/cell_%d/config" % (DEV, i), "") for i in range(4, n + 1)]
    await running(out, body)


async def test_the_first_connect_is_retried_with_back_off_and_said_once():
    gw, out, c, _ = make()
    c.broker = False

    async def body():
        assert await until(lambda: c.attempts >= 3)
        assert not c.sent and out.failures >= 2
        c.broker = True
        assert await until(lambda: BASE + "/state" in c.topics())
    await running(out, body)
    said = [e for _, code, e in gw.events.recent() if code == E.NET_WARN]
    assert len(said) == 1 and said[0].startswith("MQTT: no connection to 192.168.1.5:1883 (no connection: ")
    assert "ECONNREFUSED" in said[0]


def test_tls_hands_the_handshake_to_the_non_blocking_socket():
    cfg = C.defaults()
    cfg["mqtt_tls"] = "on"
    cfg["mqtt_port"] = 8883
    _, out, c, _ = make(cfg)
    assert c.conf["ssl"] is True and c.conf["port"] == 8883
    # not in wrap_socket, which spins until the broker answers (test_net_mqtt_broker: a server that
    # never answers the handshake leaves the CAN output running)
    assert c.conf["ssl_params"] == {"server_hostname": "192.168.1.5", "do_handshake": False}


async def test_no_attempt_while_wifi_is_down():
    gw, out, c, wlan = make()
    wlan.up = False
    out.net.wifi._check()
    c.broker = True

    async def body():
        await sleep_ms(400)
        assert c.attempts == 0 and not c.sent
        wlan.up = True
        out.net.wifi._check()
        assert await until(lambda: BASE + "/state" in c.topics())
    await running(out, body)


async def test_the_real_mqtt_as_client_never_owns_the_radio_nor_waits():
    if not mpcompat.IS_MICROPYTHON or mpcompat.IS_WASM:
        mpcompat.skip("the real mqtt_as runs under the unix port only (CPython: no MicroPython time / asyncio "
                      "names; webassembly: no sockets)")
    from fakenet import env

    why = env.setup()
    if why:
        mpcompat.skip(why)
    import network

    network.link.reset()
    gw = G.Gateway(C.defaults(), FakeUart({}), FakeCan(), FakeRecovery(), CountingWdt(), MemStore(), None,
                   "gateway.json", [].append)
    st = gw.status
    st.cfg["wifi_ssid"] = "home"
    st.cfg["mqtt_host"] = "127.0.0.1"
    st.cfg["mqtt_port"] = 9  # nothing listens: the attempt fails at once
    wlan = Wlan()
    net = Net(st, wlan=wlan, dev_id=DEV)
    net.wifi._check()
    out = M.MqttOut(net)
    c = out.client
    c._sta_if.disconnect()
    c._sta_if.active(False)
    assert wlan.disconnects == 0 and c._sta_if.isconnected()
    wlan.up = False
    assert not c._sta_if.isconnected()
    t0 = ticks_ms()
    try:
        await c.publish(BASE + "/state", "x")
        raise AssertionError("published while disconnected")
    except OSError:
        pass
    assert ticks_ms() - t0 < 100  # mqtt_as's own publish would wait for a connection forever
    wlan.up = True
    try:
        await c.connect()
        raise AssertionError("connected to nothing")
    except OSError:
        pass
    assert wlan.disconnects == 0 and out._resolved


async def test_a_flapping_broker_is_counted_not_printed_and_its_end_is_said():
    gw, out, c, _ = make()

    def said():
        return [e for _, code, e in gw.events.recent() if code in (E.NET, E.NET_WARN) and e.startswith("MQTT")]

    async def body():
        assert await until(lambda: out.connected)
        for k in range(1, 6):  # five losses within the quiet time
            c.lose()
            assert await until(lambda k=k: out.connects == k + 1 and out.connected)
        assert out.losses == 5 and out.connects == 6
        assert len(said()) == 2  # connected, lost: the rest held back
        assert await until(lambda: len(said()) == 3, 1000)
        assert said()[-1] == "MQTT connected again to 192.168.1.5:1883 (5 losses so far)"
        await sleep_ms(500)
        assert len(said()) == 3
    await running(out, body)


async def test_the_periodic_status_line_is_not_an_event():
    # the state topic carries it in full; as an event it would bury the real ones
    gw, out, c, _ = make()

    async def body():
        assert await settled(out, c)
        gw.events.emit(E.SUMMARY, "BMS: fresh (jk-pb@1), data age 200 ms")
        gw.events.emit(E.NET, "after the summary")
        assert await until(lambda: "network: after the summary" in [m for _, m, _, _ in c.sent])
    await running(out, body)
    ev = [m for t, m, _, _ in c.sent if t == BASE + "/event"]
    assert ev[-1] == "network: after the summary" and not [m for m in ev if m.startswith("BMS: fresh")], ev
    # retained: Home Assistant's "Last event" has the last one from its start
    assert [r for t, _, r, _ in c.sent if t == BASE + "/event"] == [True] * len(ev)
