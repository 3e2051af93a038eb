"""firmware/main.py's safe boot and `make deploy`'s use of it.

The ESP32's watchdog cannot be stopped once it runs, so a deploy onto a running gateway could be
reset mid-copy. main.py starts nothing (no watchdog) while a file named "safeboot" exists, and
`make deploy` sets that flag and resets before it copies, removing it at the end. main.py runs here
under the real MicroPython unix port with a stand-in `machine` module.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))

# a machine module whose UART() ends the run with exit code 7: proves main() was reached
FAKE_MACHINE = """
def UART(*a, **k):
    raise SystemExit(7)

class WDT:
    def __init__(self, *a, **k):
        raise SystemExit(8)

def reset():
    raise SystemExit(9)
"""


def run_main(tmp_path, flag):
    (tmp_path / "machine.py").write_text(FAKE_MACHINE)
    if flag:
        (tmp_path / "safeboot").write_text("")
    env = dict(os.environ, MICROPYPATH=f"{tmp_path}:{ROOT / 'firmware' / 'lib'}:.frozen")
    return subprocess.run([MICROPYTHON, str(ROOT / "firmware" / "main.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_safe_boot_flag_starts_no_gateway_and_no_watchdog(tmp_path):
    r = run_main(tmp_path, flag=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "safe boot: gateway not started, no watchdog" in r.stdout


def test_without_the_flag_the_gateway_is_built(tmp_path):
    r = run_main(tmp_path, flag=False)
    assert r.returncode == 7, r.stdout + r.stderr  # main() reached the UART
    assert "safe boot" not in r.stdout
    assert "config: no gateway.json, using defaults" in r.stdout


def test_make_deploy_sets_the_flag_and_resets_before_copying_and_clears_it_last():
    out = subprocess.run(["make", "-n", "deploy", "PORT=/dev/ttyUSB9"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    lines = [ln for ln in out.splitlines() if "mpremote" in ln]
    assert "open('safeboot', 'w').close()" in lines[0] and lines[0].rstrip().endswith("+ reset")
    copy = next(i for i, ln in enumerate(lines) if " cp -r lib boot.py main.py :" in ln)
    assert copy > 0
    mip = next(i for i, ln in enumerate(lines) if " mip install aioble-central aioble-client" in ln)
    assert mip > copy  # rm -r :lib before removed it too
    assert lines[-1].rstrip().endswith("rm :safeboot + reset") and "safeboot" not in "".join(lines[copy:-1])


def test_make_deploy_romfs_keeps_the_same_order():
    out = subprocess.run(["make", "-n", "deploy-romfs", "PORT=/dev/ttyUSB9"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    lines = [ln for ln in out.splitlines() if "mpremote connect" in ln]
    assert "open('safeboot', 'w').close()" in lines[0] and lines[0].rstrip().endswith("+ reset")
    assert any("romfs --no-mpy deploy build/romfs" in ln for ln in lines[1:-1])
    assert lines[-1].rstrip().endswith("rm :safeboot + reset")


def test_make_deploy_refuses_without_a_port():
    r = subprocess.run(["make", "deploy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "usage: make deploy PORT=" in r.stdout + r.stderr


def test_a_damaged_config_file_never_stops_the_boot(tmp_path):
    # a non-UTF-8 byte used to raise UnicodeError out of config.load(): "fatal error, reset in 10 s" on every boot
    (tmp_path / "gateway.json").write_bytes(b'{"modules": 2, "battery_name": "\xffPYLON"}')
    r = run_main(tmp_path, flag=False)
    assert r.returncode == 7, r.stdout + r.stderr  # went on to build the gateway with the defaults
    assert "config: gateway.json is not valid UTF-8, using defaults" in r.stdout
    assert "fatal error" not in r.stdout
