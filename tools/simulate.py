#!/usr/bin/env python3
"""Run the whole gateway firmware on the host and record what the inverter sees.

The real firmware application (the code firmware/main.py starts) runs under the
MicroPython unix port (host/sim_firmware.py) against the JK-BMS simulator
(tools/jkbms_sim.py). Its CAN frames are received on the host side through
python-can (SLCAN over a socket:// URL), written in candump log format and, with
--show, decoded live with the protocol's shipped DBC (docs/dbc/PROTOCOL.dbc,
through tools/can_watch.py; raw hex without cantools or the DBC).

  python tools/simulate.py --state STATE.json [--config CONFIG.json]
      [--protocol NAME] [--bms-protocol jk-pb|jk-nw] [--bms-transport uart|ble] [--seconds N]
      [--fault NAME@SECONDS[:DURATION[:ADDRESS]] ...]
      --candump OUT.log [--candump-tx] [--show] [--log FIRMWARE.log] [--sim-log SIM.log] [--drift]
      [--console COMMAND@SECONDS ...] [--mqtt HOST:PORT] [--web PORT] [--influx HOST:PORT]
  python tools/simulate.py --pack P1.json --pack P2.json ... [--bus-master] ...

The simulated inverter speaks the firmware's protocol (--protocol NAME sets
the config's "protocol", as --bms-protocol sets bms_protocol; else the
config's, default pylon) and sends that protocol's inverter frames
(docs/inverter-can.md): pylon, pylon_plus, luxpower 0x305 (8 zero bytes)
every second; deye 0x305 after each 0x356 it receives; growatt the 0x301
query 11 22 33 44 55 66 77 88 every second; sma 0x305 (battery voltage,
current (- = charging), temperature and SOC as the last 0x356 / 0x355 the
gateway sent said), 0x306 (SOH, charging procedure 10, operating state 1,
error 0, the charge set-point = the last CVL) and 0x307 (relays 0) every
second; victron 0x305 (zeros) and 0x307 12 34 56 78 56 49 43 00 every
second. --candump-tx writes those frames into the candump log too, every
line then marked with its direction as python-can writes it (" T" the
inverter's, " R" the gateway's).

--console COMMAND@SECONDS (repeatable) types COMMAND into the firmware's
console (sim_firmware.py --console, on its stdin) that many seconds after
the start, e.g. --console packs@10; the console's echo of the line and its
reply lines go to the console output (--log, --show) between the "[t]"
events, as on a terminal.

--sim-log writes the BMS simulator's own record: every request it got and
what it did ("T jkbms_sim: request HEX -> ..."; T = seconds after its
start, the clock of the fault schedule and, a few ms off, of the candump
times), and at the end one line "T jkbms_sim: stats k=v ..." with its
counters and foreign_rx_bytes (bytes the gateway sent on a bus with a JK
master).

Several JK-PB packs on the one RS485 bus: --pack instead of --state
(repeatable), the k-th pack at address k, each with its own state. With
--bus-master the simulator plays a JK bank whose first pack is the bus master
at address 0 (the others at 1, 2, ...): it polls its slaves itself and the
gateway may only listen (tools/jkbms_sim.py). Without --config the firmware
config then gets bms_addresses = [1..N] (with --bus-master: [0..N-1],
bms_bus_role "listen" and bms_timeout_s 15, longer than the master's 4.4 s
period).

The state file is read by the tools' one state loader (tools/state_json.py):
one JSON object, or JSON Lines merged into one state (jk_decode.py's output
for a cell-info and a settings frame works as is). Name the candump file
*.log: python-can's can.LogReader picks its reader by the file extension and
reads candump logs only from .log files (any name is accepted).

The frames are what the firmware's charge controller decides: CCL = DCL = 0
for hold_s (default 30 s) after the first data and after every block (stale
data, alarms, ...), then a ramp at ramp_a_s (5 A/s) -- a run shorter than
that shows the pack's values with 0 A; with the defaults the limits are full
about 50 s after the start.

Over BLE (--bms-transport ble, or bms_transport "ble" in the config) the
firmware runs its BLE source (sources/jk_ble.py) with the real aioble
(../shared/vendor/micropython-lib; JKGW_AIOBLE_PATH overrides) on the
simulated radio of host/fakeble: one JK-BMS BLE module whose frames the
BMS simulator serves (JK-PB FC10 triggers, host/fakeble/remote_frames.py),
so the state, --drift and the bms-* faults apply as over the UART. The
generated config gets ble_mac = the module's MAC unless it names ble_mac or
ble_name. The console then also shows "sim T:" lines: the BLE link line
(connects, link losses, chunks, lost chunks) every 5 s and the radio faults.

The network outputs (docs/network.md): --mqtt HOST:PORT, --web PORT and
--influx HOST:PORT set the firmware config's mqtt_host / mqtt_port,
web_port and influx_host / influx_port (and wifi_ssid "sim" unless the
config names one; intervals and the rest come from --config, e.g.
{"mqtt_interval_s": 1}); the firmware then runs with the stub network
module of host/fakenet (a Wi-Fi station that connects at once, address
127.0.0.1: the outputs reach the services on this host) and the vendor
mqtt_as (../shared/vendor/micropython-mqtt; JKGW_MQTT_AS_PATH overrides;
absent, the firmware says so and runs without MQTT). A config with
wifi_ssid, or a wifi-* fault, runs the stub network too.

Faults (NAME@SECONDS[:DURATION], seconds after start, e.g. bms-silent@8:5;
without a duration to the end; the bms-* faults also as
NAME@SECONDS:[DURATION]:ADDRESS for the pack at ADDRESS only, e.g.
bms-silent@8:5:2, or bms-silent@8::2 to the end): bms-silent, bms-garbage, bms-slow,
bms-partial (the BMS simulator; over BLE the module stays connected and
passes on what the BMS sends, or nothing), inverter-silent (the inverter
sends nothing), inverter-command@SECONDS (the protocol's command frame,
once: luxpower 0x300 01 00 00 00 00 00 00 00, the battery-shutdown
request; a usage error for a protocol without one), and
over BLE only: ble-disconnect (the module drops the link and is not
connectable until the end of the fault) and ble-burst (12-16 notifications
of 20 bytes per connection event, 15 per frame; MTU exchange refused from
the next link on); wifi-down (the access point is gone: the link drops,
every attempt fails) and wifi-storm (the link flaps up and down every
150-450 ms), applied to the stub WLAN (the firmware's console shows a
"sim T:" line at each start and end, the end with the stub's records).
Exit 0 when the run completed, 1 with a reason otherwise
(the firmware died, no CAN connection, aioble absent); bad arguments: 2,
with a one-line reason.
"""
import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (os.path.join(ROOT, "firmware", "lib"), ROOT):  # the firmware's code, the tools package
    if _p not in sys.path:
        sys.path.insert(0, _p)

import protocols  # noqa: E402
from app import config as gwconfig  # noqa: E402
from tools import can_watch, cli, jkbms_sim, state_json  # noqa: E402

INVERTER_FAULT = "inverter-silent"
COMMAND_FAULT = "inverter-command"
BLE_FAULTS = ("ble-disconnect", "ble-burst")  # applied inside host/sim_firmware.py
NET_FAULTS = ("wifi-down", "wifi-storm")  # likewise, to the stub WLAN (host/fakenet/network.py)
FAULTS = jkbms_sim.FAULTS + (INVERTER_FAULT, COMMAND_FAULT) + BLE_FAULTS + NET_FAULTS
SIM_SSID = "sim"  # wifi_ssid of a generated network config (any name connects to the stub)
SIM_MAC = "C8:47:8C:00:11:22"  # host/sim_firmware.py DEFAULT_MAC
HEAP = os.environ.get("JKGW_SIM_HEAP") or "2m"  # MicroPython heap of the firmware (-X heapsize)


def parse_fault(text):
    """'NAME@SECONDS[:DURATION[:ADDRESS]]' of any fault: the simulator's (a
    pack selector ADDRESS allowed), inverter-silent, ble-* -> (name, at,
    duration or None, address or None)."""
    f = jkbms_sim.parse_pack_fault(text, FAULTS)
    if f[3] is not None and f[0] not in jkbms_sim.FAULTS:
        raise ValueError("fault %r: a pack address is for the bms-* faults only" % text)
    return f


def parse_console(text):
    """'COMMAND@SECONDS' -> (seconds, command)."""
    cmd, at, when = text.rpartition("@")
    try:
        t = float(when)
    except ValueError:
        t = -1.0
    if not at or not cmd.strip() or not 0 <= t < float("inf") or "\n" in cmd:
        raise ValueError("--console %r: COMMAND@SECONDS (seconds after the start)" % text)
    return t, cmd.strip()


def endpoint(text):
    """argparse type: 'HOST:PORT' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    try:
        n = int(port)
    except ValueError:
        n = 0
    if not sep or not host or not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError("%r is not HOST:PORT" % text)
    return host, n


def net_config(cfg, mqtt=None, web=None, influx=None):
    """The config keys --mqtt / --web / --influx set (in place); True when the stub network is
    needed (an output given, or the config names wifi_ssid)."""
    if mqtt:
        cfg["mqtt_host"], cfg["mqtt_port"] = mqtt
    if web:
        cfg["web_port"] = web
    if influx:
        cfg["influx_host"], cfg["influx_port"] = influx
    if (mqtt or web or influx) and not cfg.get("wifi_ssid"):
        cfg["wifi_ssid"] = SIM_SSID
    return bool(cfg.get("wifi_ssid"))


def bus_config(n, bus_master):
    """The firmware config for n packs on the bus (no --config given): the
    gateway polls addresses 1..n; with a JK bus master it listens to 0..n-1
    and waits longer than the master's ~4.4 s period before data count as lost."""
    if bus_master:
        return {"bms_addresses": list(range(n)), "bms_bus_role": "listen", "bms_timeout_s": 15}
    return {"bms_addresses": list(range(1, n + 1))}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aioble_missing():
    """Why the BLE simulation cannot run (the vendor aioble is absent), or None."""
    sys.path.insert(0, os.path.join(ROOT, "host"))
    try:
        from fakeble import env  # its paths only: setup() would change this process
    finally:
        sys.path.pop(0)
    path = env.vendor_path()
    if os.path.exists(os.path.join(path, "aioble", "__init__.py")):
        return None
    return "aioble not found at %s (set JKGW_AIOBLE_PATH to the folder holding aioble/)" % path


def micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    return exe if os.path.exists(exe) else "micropython"


def decoder(protocol):
    """(can_watch.Decoder of the protocol's shipped DBC or None, why not)."""
    try:
        return can_watch.Decoder.for_protocol(protocol), ""
    except can_watch.InputError as e:
        return None, str(e)


def describe(dec, can_id, data):
    """--show: the frame decoded with dec (brief: raised bits only), or ''."""
    return dec.text(can_id, data, brief=True) if dec is not None else ""


class Firmware:
    """host/sim_firmware.py (the gateway app) under the MicroPython unix port,
    its console output collected line by line (and passed to on_line)."""

    def __init__(self, bms_port, can_port, cfg_path, seconds, on_line=None, ble=False, ble_faults=(),
                 epoch=None, console=False, net=False, net_faults=()):
        cmd = [micropython(), "-X", "heapsize=" + HEAP, os.path.join(ROOT, "host", "sim_firmware.py"),
               "--ble" if ble else "--bms", "127.0.0.1:%d" % bms_port, "--can-port", str(can_port),
               "--config", cfg_path, "--seconds", str(int(seconds))]
        for name, at, dur in ble_faults:
            cmd += ["--ble-fault", "%s@%g" % (name, at) + ("" if dur is None else ":%g" % dur)]
        if net:
            cmd.append("--net")
        for name, at, dur in net_faults:
            cmd += ["--net-fault", "%s@%g" % (name, at) + ("" if dur is None else ":%g" % dur)]
        if epoch is not None:
            cmd += ["--epoch", "%.3f" % epoch]
        if console:
            cmd.append("--console")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if console else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines = []
        self._reader = threading.Thread(target=self._pump, args=(on_line,), daemon=True)
        self._reader.start()

    def _pump(self, on_line):
        for line in self.proc.stdout:
            self.lines.append(line)
            if on_line is not None:
                on_line(line)

    def type_line(self, line):
        """Type one line into the firmware's console (started with console=True)."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def check_running(self):
        if self.proc.poll() is not None:
            raise RuntimeError("the firmware exited early (code %s)" % self.proc.returncode)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(2)


def _u16(d, o):
    return d[o] | d[o + 1] << 8


def _s16(d, o):
    v = _u16(d, o)
    return v - 0x10000 if v & 0x8000 else v


ZEROS = bytes(8)
GROWATT_QUERY = bytes.fromhex("1122334455667788")
VICTRON_307 = bytes.fromhex("1234567856494300")  # ... 'V' 'I' 'C' 0, as a GX sends it
# the command frame an inverter of the protocol can send (simulate.py's inverter-command fault)
COMMANDS = {"luxpower": (0x300, bytes([1, 0, 0, 0, 0, 0, 0, 0]))}  # byte 0 bit 0: shut the battery down


class Inverter:
    """The host side of the CAN bus: python-can over SLCAN, sending what an
    inverter of protocol sends (docs/inverter-can.md; see the module's help).
    tick() once a second sends the periodic frames, seen() is told every frame
    the gateway sent (Deye answers 0x356, the SI repeats the values);
    on_send(can_id, data) is called for every frame sent."""

    def __init__(self, port, deadline, protocol="pylon", on_send=None):
        import can
        self.protocol = protocol
        self.on_send = on_send
        self.last = {}  # id -> data the gateway sent last
        self.silent = False  # inverter-silent: nothing at all
        last = None
        while time.monotonic() < deadline:
            try:
                self.bus = can.Bus(interface="slcan", channel="socket://127.0.0.1:%d" % port,
                                   bitrate=500000, sleep_after_open=0)
                return
            except Exception as e:  # noqa: BLE001 - the firmware may still be starting
                last = e
                time.sleep(0.1)
        raise RuntimeError("no SLCAN connection to the firmware: %s" % last)

    def send(self, can_id, data):
        import can
        self.bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=False))
        if self.on_send is not None:
            self.on_send(can_id, data)

    def heartbeat(self):
        """The Pylontech keep-alive: 0x305, 8 zero bytes."""
        self.send(0x305, ZEROS)

    def tick(self):
        """The frames the protocol's inverter sends every second."""
        if self.silent:
            return
        p = self.protocol
        if p == "growatt":
            self.send(0x301, GROWATT_QUERY)
        elif p == "sma":
            for can_id, data in self.sma_frames():
                self.send(can_id, data)
        elif p == "victron":
            self.send(0x305, ZEROS)
            self.send(0x307, VICTRON_307)
        elif p != "deye":  # pylon, pylon_plus, luxpower (and any other Pylontech-family protocol)
            self.heartbeat()

    def seen(self, can_id, data):
        """A frame the gateway sent."""
        self.last[can_id] = data
        if self.protocol == "deye" and can_id == 0x356 and len(data) == 8 and not self.silent:
            self.heartbeat()  # Deye acknowledges each 0x356

    def sma_frames(self):
        """The Sunny Island's 0x305 / 0x306 / 0x307 from what the gateway sent
        last (0x356 0.01 V / 0.1 A + = charging / 0.1 degC, 0x355 SOC / SOH,
        0x351 CVL); zeros before it sent them."""
        m = self.last.get(0x356, ZEROS)
        soc = self.last.get(0x355, ZEROS)
        lim = self.last.get(0x351, ZEROS)
        cv, da, dc = _s16(m, 0), _s16(m, 2), _s16(m, 4)
        dv = (cv + 5) // 10 if cv >= 0 else 0
        f305 = struct.pack("<Hhhh", dv, -da, dc, _u16(soc, 0) * 10)
        f306 = struct.pack("<HBBHH", _u16(soc, 2), 10, 1, 0, _u16(lim, 0))
        return ((0x305, f305), (0x306, f306), (0x307, bytes(2) + bytes(6)))

    def command(self):
        """Send the protocol's command frame once (KeyError: it has none)."""
        can_id, data = COMMANDS[self.protocol]
        self.send(can_id, data)

    def close(self):
        self.bus.shutdown()


def main(argv=None):
    ap = cli.ArgumentParser(prog="simulate.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", help="battery state JSON (schema of tools/jk_decode.py)")
    ap.add_argument("--pack", action="append", default=[], metavar="STATE.json",
                    help="instead of --state, JK-PB only: one pack on the RS485 bus (repeatable), the k-th at "
                         "address k (with --bus-master the first is the master at 0); without --config the "
                         "config gets bms_addresses for them")
    ap.add_argument("--bus-master", action="store_true",
                    help="the simulated bank has its own bus master at address 0 (the first --pack, or "
                         "--state); the gateway must only listen (without --config: bms_bus_role listen)")
    ap.add_argument("--config", help="gateway.json for the firmware (default: the firmware defaults)")
    ap.add_argument("--protocol", choices=protocols.NAMES, default=None,
                    help="inverter protocol of the firmware and of the simulated inverter (default: the "
                         "config's protocol, else pylon)")
    ap.add_argument("--bms-protocol", choices=("jk-pb", "jk-nw"), default=None,
                    help="BMS protocol (default: the config's bms_protocol)")
    ap.add_argument("--bms-transport", choices=("uart", "ble"), default=None,
                    help="BMS link (default: the config's bms_transport): ble = aioble on the simulated radio")
    ap.add_argument("--seconds", type=cli.number(float, 0.1, 86400), default=10.0,
                    help="length of the run (default 10)")
    ap.add_argument("--fault", action="append", default=[], metavar=jkbms_sim.PACK_FAULT_FORMAT,
                    help="inject a fault: " + ", ".join(FAULTS) + " (ADDRESS: only that pack)")
    ap.add_argument("--candump", required=True, metavar="OUT.log",
                    help="write received frames here (candump -l format; name it *.log)")
    ap.add_argument("--candump-tx", action="store_true",
                    help="also write the simulated inverter's frames into the candump log (lines marked T; "
                         "the gateway's R)")
    ap.add_argument("--show", action="store_true",
                    help="print the frames (decoded with the protocol's DBC) and the firmware console live")
    ap.add_argument("--log", help="write the firmware console output here")
    ap.add_argument("--sim-log", metavar="SIM.log",
                    help="write the BMS simulator's record here (requests, replies, faults; its counters at "
                         "the end)")
    ap.add_argument("--console", action="append", default=[], metavar="COMMAND@SECONDS",
                    help="type COMMAND into the firmware's console SECONDS after the start (repeatable)")
    ap.add_argument("--drift", action="store_true", help="let the simulated current and SOC drift slowly")
    ap.add_argument("--mqtt", type=endpoint, metavar="HOST:PORT",
                    help="MQTT output to this broker (config mqtt_host / mqtt_port; wifi_ssid 'sim')")
    ap.add_argument("--web", type=cli.number(int, 1, 65535), metavar="PORT",
                    help="the web page and JSON API on this port of 127.0.0.1 (config web_port)")
    ap.add_argument("--influx", type=endpoint, metavar="HOST:PORT",
                    help="InfluxDB line protocol over UDP to this listener (config influx_host / influx_port)")
    args = ap.parse_args(argv)
    if bool(args.state) == bool(args.pack):
        ap.error("give the battery as --state STATE.json or as --pack STATE.json (repeatable), one of the two")
    try:
        typed = sorted(parse_console(c) for c in args.console)
        faults = [parse_fault(f) for f in args.fault]
        state = state_json.load(args.state) if args.state else None
        packs = [state_json.load(p) for p in args.pack] or None
    except ValueError as e:
        ap.error(str(e))

    cfg = {}
    if args.config:
        try:
            with open(args.config) as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            ap.error("config: %s" % e)
    if (args.bms_protocol or args.bms_transport or args.protocol or args.mqtt or args.web or args.influx
            or any(f[0] in NET_FAULTS for f in faults)):
        if not isinstance(cfg, dict):
            ap.error("config: not a JSON object")
    if args.protocol:
        cfg["protocol"] = args.protocol
    if args.bms_protocol:
        cfg["bms_protocol"] = args.bms_protocol
    if args.bms_transport:
        cfg["bms_transport"] = args.bms_transport
    net_faults = [f[:3] for f in faults if f[0] in NET_FAULTS]
    if net_faults and isinstance(cfg, dict) and not cfg.get("wifi_ssid"):
        cfg["wifi_ssid"] = SIM_SSID  # Wi-Fi alone: the faults still meet the station
    net = isinstance(cfg, dict) and net_config(cfg, args.mqtt, args.web, args.influx)
    n_packs = len(args.pack) or 1
    if not args.config and (n_packs > 1 or args.bus_master):
        cfg.update(bus_config(n_packs, args.bus_master))
    # the BMS simulator must speak what the firmware will actually use: the
    # firmware's own validation decides (an invalid key falls back to its
    # default there too, and the firmware says so on its console)
    effective = gwconfig.validate(cfg, [])
    protocol = effective["bms_protocol"]
    ble = effective["bms_transport"] == "ble"
    if (packs or args.bus_master) and (ble or protocol != "jk-pb"):
        ap.error("--pack / --bus-master: JK-PB packs on the RS485 bus (bms_protocol jk-pb, bms_transport uart)")
    if ble:
        if args.bms_protocol == "jk-nw":
            ap.error("--bms-protocol jk-nw: over BLE the BMS speaks the JK BLE protocol (the simulated "
                     "module is fed through JK-PB triggers)")
        protocol = "jk-pb"  # what the simulated BLE module asks the BMS simulator in
        if not effective["ble_mac"] and not effective["ble_name"]:
            cfg["ble_mac"] = SIM_MAC  # the module sim_firmware.py puts on air
    ble_faults = [f[:3] for f in faults if f[0] in BLE_FAULTS]
    if ble_faults and not ble:
        ap.error("%s: only over BLE (--bms-transport ble)" % ble_faults[0][0])
    bms_faults = [f for f in faults if f[0] in jkbms_sim.FAULTS]
    inv_faults = [f[:3] for f in faults if f[0] == INVERTER_FAULT]
    inv_protocol = effective["protocol"]  # what the simulated inverter speaks: the firmware's own
    commands = sorted(f[1] for f in faults if f[0] == COMMAND_FAULT)
    for f in faults:
        if f[0] == COMMAND_FAULT and f[2] is not None:
            ap.error("%s is one frame: %s@SECONDS, without a duration" % (COMMAND_FAULT, COMMAND_FAULT))
    if commands and inv_protocol not in COMMANDS:
        ap.error("%s: the %s inverter has no command frame (%s only)" % (COMMAND_FAULT, inv_protocol,
                                                                         ", ".join(sorted(COMMANDS))))
    sim_lines = []  # list.append is atomic: the simulator's threads add to it
    sim_log = None
    if args.sim_log:
        def sim_log(msg):
            sim_lines.append("%.3f %s\n" % (sim.elapsed(), msg))
    try:
        if packs:
            bus = dict(packs=packs)
        else:
            bus = dict(state=state, address=None if args.bus_master else effective["bms_address"])
        sim = jkbms_sim.JkBmsSim(protocol=protocol, faults=bms_faults, drift=args.drift,
                                 bus_master=args.bus_master, log=sim_log, **bus)
    except ValueError as e:  # a bad state, or a fault for an address without a pack
        ap.error(str(e) if str(e).startswith("fault") else "state: %s" % e)
    # the output files first: a bad path is a usage error, not a failure after the start
    try:
        out = open(args.candump, "w")
    except OSError as e:
        ap.error("--candump: %s" % e)
    made = [args.candump]
    for opt, path in (("--log", args.log), ("--sim-log", args.sim_log)):
        if path:
            try:
                open(path, "w").close()
            except OSError as e:
                out.close()
                for p in made:
                    os.remove(p)  # a usage error leaves no output behind
                ap.error("%s: %s" % (opt, e))
            made.append(path)
    if ble:
        why = aioble_missing()
        if why:
            out.close()
            os.remove(args.candump)
            print("simulate: --bms-transport ble: %s" % why, file=sys.stderr)
            return 1
    if not args.candump.endswith(".log"):
        sys.stderr.write("simulate: note: python-can's can.LogReader reads candump logs only from *.log "
                         "files\n")
    tmp = tempfile.mkdtemp(prefix="gw-sim-")
    cfg_path = os.path.join(tmp, "gateway.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)

    sim.start()
    epoch = time.time()  # the simulator's time zero, for the BLE faults in the firmware process
    can_port = free_port()
    lock = threading.Lock()

    def show(text):
        with lock:
            sys.stdout.write(text)
            sys.stdout.flush()

    fw = Firmware(sim.port, can_port, cfg_path, args.seconds + 3,
                  (lambda line: show("  firmware | " + line)) if args.show else None,
                  ble=ble, ble_faults=ble_faults, epoch=epoch, console=bool(typed), net=net,
                  net_faults=net_faults)

    rc = 0
    inv = None
    dec, _ = decoder(inv_protocol) if args.show else (None, "")
    tx = args.candump_tx

    def record(rel, can_id, data, direction):
        if direction == "R" or tx:
            out.write("(%.6f) can0 %03X#%s%s\n" % (rel, can_id, data.hex().upper(), (" " + direction) if tx else ""))
            out.flush()
        if args.show:
            show("%8.3f  %03X#%-16s %s %s\n" % (rel, can_id, data.hex().upper(), "<" if direction == "T" else " ",
                                               describe(dec, can_id, data)))

    def sent(can_id, data):
        if tx or args.show:
            record(time.monotonic() - t0, can_id, bytes(data), "T")

    try:
        t0 = time.monotonic()
        inv = Inverter(can_port, t0 + 10, inv_protocol, on_send=sent)
        next_hb = t0
        end = t0 + args.seconds
        while True:
            now = time.monotonic()
            if now >= end:
                break
            fw.check_running()
            rel = now - t0
            inv.silent = any(at <= rel and (dur is None or rel < at + dur) for _, at, dur in inv_faults)
            while typed and typed[0][0] <= rel:
                fw.type_line(typed.pop(0)[1])
            while commands and commands[0] <= rel:
                commands.pop(0)
                inv.command()
            if now >= next_hb:
                inv.tick()
                next_hb += 1.0
            # wake for the next inverter frame on time: a real inverter keeps its 1 s grid
            msg = inv.bus.recv(timeout=max(0.0, min(0.05, end - now, next_hb - now)))
            if msg is None:
                continue
            rel = time.monotonic() - t0
            data = bytes(msg.data)
            record(rel, msg.arbitration_id, data, "R")
            inv.seen(msg.arbitration_id, data)
    except RuntimeError as e:
        print("simulate: %s" % e, file=sys.stderr)
        rc = 1
    finally:
        out.close()
        if inv is not None:
            inv.close()
        fw.stop()
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the firmware's gateway.json (and what it saved there)
        if args.bus_master and sim.foreign_rx_bytes:
            print("simulate: the gateway sent %d byte(s) on a bus with a JK master (a listener must never "
                  "transmit)" % sim.foreign_rx_bytes, file=sys.stderr)
        if args.log:
            with open(args.log, "w") as f:
                f.writelines(fw.lines)
        if args.sim_log:
            counts = dict(sim.stats, foreign_rx_bytes=sim.foreign_rx_bytes)
            sim_log("jkbms_sim: stats " + " ".join("%s=%d" % (k, counts[k]) for k in sorted(counts)))
            with open(args.sim_log, "w") as f:
                f.writelines(sim_lines)
    if rc and fw.lines:
        sys.stderr.write("".join(fw.lines[-30:]))
    return rc


if __name__ == "__main__":
    sys.exit(main())
