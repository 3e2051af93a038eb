"""Where the CPython tests find their data: the captured frames in the repository
(host_tests/fixtures), and the optional third-party Pylontech DBC beside the checkout
(../shared/dbc, GPL, never copied). Without the DBC, the checks that need it skip with a reason."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_FILE = ROOT / "host_tests" / "fixtures" / "jk_frames.json"
DBC_PATH = ROOT.parent / "shared" / "dbc" / "pylontech_plewka_PylontechUSX00C_CAN2MQTT.dbc"
NO_DBC = ("../shared/dbc is absent (%s not found): the third-party Pylontech DBC is not part of the "
          "repository, so this DBC cross-check is skipped" % DBC_PATH)

_DB = []


def fixtures():
    return json.loads(FIXTURE_FILE.read_text())


def pylon_dbc():
    """The cantools database of the third-party DBC, or pytest.skip() with the reason."""
    if not DBC_PATH.is_file():
        pytest.skip(NO_DBC)
    if not _DB:
        import cantools
        _DB.append(cantools.database.load_file(str(DBC_PATH), strict=True))
    return _DB[0]
