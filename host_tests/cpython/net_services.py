"""The real services the network-output tests start (host/install-net-tools.sh installs them):
mosquitto on a free loopback port with its own config, and what the tests need besides it. Shared by
test_net_mqtt_broker.py and test_net_isolation.py."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def missing():
    """Why the MQTT tests cannot run (no mosquitto, no paho-mqtt, no mqtt_as), or None."""
    if not Path(MOSQUITTO).exists():
        return "%s is not installed (make test installs it: host/install-net-tools.sh)" % MOSQUITTO
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return "paho-mqtt is not installed (requirements-dev.txt)"
    sys.path.insert(0, str(ROOT / "host"))
    try:
        from fakenet import env
    finally:
        sys.path.pop(0)
    return env.missing()


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on a free port of 127.0.0.1, its own config file in tmp (no persistence: a
    restarted broker has forgotten everything, retained messages too); extra: more config lines."""

    def __init__(self, tmp, extra=""):
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.log = tmp / "mosquitto.log"  # a file, not a pipe: a full pipe nobody reads would stop the broker
        # as root mosquitto would drop to its own user, which cannot read a key in pytest's tmp
        user = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        self.conf.write_text("%slistener %d 127.0.0.1\nallow_anonymous true\npersistence false\n%s"
                             % (user, self.port, extra))
        self.proc = None
        self.start()

    def start(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() - t0 > 5:
                    self.proc.kill()
                    raise RuntimeError("mosquitto did not start: %s" % self.log.read_text()) from None
                time.sleep(0.02)

    def stop(self):
        """As a broker is shut down (SIGTERM)."""
        self.proc.terminate()
        self.proc.wait(5)

    def kill(self):
        """As a broker dies (SIGKILL)."""
        self.proc.kill()
        self.proc.wait(5)

    def pause(self, on):
        """A hung broker: SIGSTOP (connections stay open, nothing answers), SIGCONT."""
        self.proc.send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)
