# The network outputs of one gateway (docs/network.md): the Wi-Fi station and
# each configured output, every one a task of its own that app.gateway
# supervises. None of them is watched by the hardware watchdog: a dead broker
# or Wi-Fi must never reset the gateway, and none of them touches the CAN
# tasks' data (they read the status model, built once per period).
# Only the configured outputs are imported; one that cannot be (mqtt_as not
# installed, no RAM) is reported and left out, the others run.

from outputs import events as E


def device_id():
    """The ESP32's unique id (its MAC) in hex: the device's name in topics."""
    try:
        import machine
        uid = machine.unique_id()
    except (ImportError, AttributeError):
        return "000000000000"
    return "".join("%02x" % b for b in uid)


class Net:
    def __init__(self, status, store=None, config_name="gateway.json", wlan=None, dev_id=None):
        from net.wifi import Wifi

        cfg = status.cfg
        self.status = status
        self.store = store
        self.config_name = config_name
        self.device_id = dev_id or device_id()
        self.wifi = Wifi(cfg, status.events, wlan)
        self.outputs = []  # each: name, async run(), lines(now)
        for key, mod, cls in (("mqtt_host", "net.mqtt", "MqttOut"), ("web_port", "net.web", "Web"),
                              ("influx_host", "net.influx", "Influx")):
            if cfg[key]:
                self._add(mod, cls)

    def _add(self, mod, cls):
        try:
            m = __import__(mod, None, None, (cls,))
            self.outputs.append(getattr(m, cls)(self))
        except (ImportError, AttributeError, MemoryError, OSError, ValueError) as e:  # half-installed too
            hint = " (mpremote mip install github:peterhinch/micropython-mqtt)" if mod == "net.mqtt" else ""
            self.status.events.emit(E.NET_WARN, "%s off: %r%s" % (mod[4:], e, hint))

    def tasks(self):
        """(name, coroutine function) of every task to supervise."""
        out = [("wifi", self.wifi.run)]
        for o in self.outputs:
            out.append((o.name, o.run))
        return out

    def lines(self, now):
        out = self.wifi.lines(now)
        for o in self.outputs:
            out += o.lines(now)
        return out
