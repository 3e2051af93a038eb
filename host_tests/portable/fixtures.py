# Access to the test fixtures in host_tests/fixtures (captured JK-BMS frames, a copy of the shared
# capture set; provenance in host_tests/fixtures/README.md) for portable tests.
# No os.path under MicroPython: paths are built with plain string operations from __file__.
import gc
import json
import sys

_MICROPYTHON = sys.implementation.name == "micropython"


def _parent(path):
    i = path.rfind("/")
    if i < 0:
        return "."
    return path[:i] if i else "/"


# host_tests/portable -> host_tests/fixtures
_FIXTURES = _parent(__file__.replace("\\", "/")) + "/../fixtures"


def fixture_path(name):
    """Path string of `name` (e.g. "jk_frames.json") inside host_tests/fixtures."""
    return _FIXTURES + "/" + name


FRAMES = "jk_frames.json"


def load_frames():
    """The frames of host_tests/fixtures/jk_frames.json: 55 dicts (id, transport, layout, hex, expected ...).

    The parsed list, except on a small MicroPython heap (under 1 MB, e.g. the unix port run with
    -X heapsize=192k): the whole list needs ~215 KB there, so this returns a read-only sequence
    (len, iteration, indexing, slicing) that parses the file again on each pass (~50 ms on the
    unix port) and holds one frame at a time.
    """
    if _MICROPYTHON and gc.mem_alloc() + gc.mem_free() < 1024 * 1024:
        return _FrameSeq()
    with open(fixture_path(FRAMES)) as f:
        return json.load(f)


class _FrameSeq:
    def __init__(self):
        self._len = None

    def __iter__(self):
        return iter_frames()

    def __len__(self):
        if self._len is None:
            n = 0
            for _ in iter_frames():
                n += 1
            self._len = n
        return self._len

    def __getitem__(self, i):
        if not isinstance(i, int):  # a slice: a list holding only the selected frames
            idx = range(len(self))[i]
            got = {}
            for k, fr in enumerate(iter_frames()):
                if k in idx:
                    got[k] = fr
            return [got[k] for k in idx]
        if i < 0:
            i += len(self)
        if i >= 0:
            for k, fr in enumerate(iter_frames()):
                if k == i:
                    return fr
        raise IndexError("frame index out of range")


def iter_frames():
    """Yield the frames of host_tests/fixtures/jk_frames.json one by one (same dicts as load_frames())."""
    depth = 0
    in_str = esc = False
    parts = []
    with open(fixture_path(FRAMES), "rb") as f:
        while True:
            chunk = f.read(1024)
            if not chunk:
                break
            start = 0 if depth > 1 else -1
            for i in range(len(chunk)):
                c = chunk[i]
                if in_str:
                    if esc:
                        esc = False
                    elif c == 0x5C:  # backslash
                        esc = True
                    elif c == 0x22:  # closing quote
                        in_str = False
                elif c == 0x22:
                    in_str = True
                elif c == 0x7B or c == 0x5B:  # { [
                    depth += 1
                    if depth == 2:
                        start = i
                elif c == 0x7D or c == 0x5D:  # } ]
                    depth -= 1
                    if depth == 1:
                        parts.append(chunk[start : i + 1])
                        start = -1
                        yield json.loads(b"".join(parts).decode())
                        parts = []
            if start >= 0:
                parts.append(chunk[start:])


def find_frame(frame_id):
    """The fixture frame whose "id" is frame_id (KeyError if there is none)."""
    for fr in iter_frames():
        if fr["id"] == frame_id:
            return fr
    raise KeyError(frame_id)


def unhex(s):
    """Hex string (any whitespace allowed between digits) -> bytes."""
    s = "".join(s.split())
    if len(s) & 1:
        raise ValueError("odd-length hex string")
    try:
        return bytes.fromhex(s)
    except AttributeError:  # port built without bytes.fromhex
        pass
    out = bytearray(len(s) // 2)
    for i in range(len(out)):
        out[i] = int(s[2 * i : 2 * i + 2], 16)
    return bytes(out)
