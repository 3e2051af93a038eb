"""A small two-layer grid maze router (A*) used by gen_pcb.py.

No KiCad dependency: it works on plain copper shapes in millimetres and returns
track segments and vias. Clearances are enforced on the grid with a safety
margin, so the result passes KiCad's DRC; kicad-cli DRC is the real check.

Copper objects (all mm):
  ("rect",   layers, net, cx, cy, half_w, half_h)
  ("circle", layers, net, cx, cy, r)
  ("seg",    layers, net, x1, y1, x2, y2, half_width)
layers is a tuple of layer indices (0 = F.Cu, 1 = B.Cu); net None = a hole.
"""

import heapq
import math

import numpy as np

F, B = 0, 1


class Router:
    def __init__(self, width, height, grid=0.25, edge_clearance=0.5, margin=0.06):
        self.g = grid
        self.nx = int(round(width / grid)) + 1
        self.ny = int(round(height / grid)) + 1
        self.w, self.h = width, height
        self.edge = edge_clearance
        self.margin = margin
        self.objects = []          # copper shapes
        self.exempt = np.zeros((self.ny, self.nx), dtype=bool)  # no HV spacing here
        xs = np.arange(self.nx) * grid
        ys = np.arange(self.ny) * grid
        self.X, self.Y = np.meshgrid(xs, ys)

    # ---- geometry -------------------------------------------------------------
    def cell(self, x, y):
        return int(round(y / self.g)), int(round(x / self.g))

    def _window(self, x0, y0, x1, y1):
        i0 = max(0, int(math.floor(y0 / self.g)))
        i1 = min(self.ny, int(math.ceil(y1 / self.g)) + 1)
        j0 = max(0, int(math.floor(x0 / self.g)))
        j1 = min(self.nx, int(math.ceil(x1 / self.g)) + 1)
        return i0, i1, j0, j1

    def _dist(self, obj, win):
        """Distance from each grid point in win to the copper of obj."""
        i0, i1, j0, j1 = win
        X = self.X[i0:i1, j0:j1]
        Y = self.Y[i0:i1, j0:j1]
        kind = obj[0]
        if kind == "rect":
            _, _, _, cx, cy, hw, hh = obj
            dx = np.maximum(np.abs(X - cx) - hw, 0)
            dy = np.maximum(np.abs(Y - cy) - hh, 0)
            return np.hypot(dx, dy)
        if kind == "circle":
            _, _, _, cx, cy, r = obj
            return np.maximum(np.hypot(X - cx, Y - cy) - r, 0)
        _, _, _, x1, y1, x2, y2, hw = obj
        vx, vy = x2 - x1, y2 - y1
        ll = vx * vx + vy * vy
        if ll == 0:
            t = 0
        else:
            t = np.clip(((X - x1) * vx + (Y - y1) * vy) / ll, 0, 1)
        return np.maximum(np.hypot(X - (x1 + t * vx), Y - (y1 + t * vy)) - hw, 0)

    def _bbox(self, obj):
        kind = obj[0]
        if kind == "rect":
            return obj[3] - obj[5], obj[4] - obj[6], obj[3] + obj[5], obj[4] + obj[6]
        if kind == "circle":
            return obj[3] - obj[5], obj[4] - obj[5], obj[3] + obj[5], obj[4] + obj[5]
        return (min(obj[3], obj[5]) - obj[7], min(obj[4], obj[6]) - obj[7],
                max(obj[3], obj[5]) + obj[7], max(obj[4], obj[6]) + obj[7])

    def mark(self, grid, obj, radius):
        x0, y0, x1, y1 = self._bbox(obj)
        win = self._window(x0 - radius, y0 - radius, x1 + radius, y1 + radius)
        i0, i1, j0, j1 = win
        if i0 >= i1 or j0 >= j1:
            return
        grid[i0:i1, j0:j1] |= self._dist(obj, win) < radius

    def set_exempt(self, x0, y0, x1, y1):
        i0, i1, j0, j1 = self._window(x0, y0, x1, y1)
        self.exempt[i0:i1, j0:j1] = True

    # ---- obstacle maps for one net --------------------------------------------------
    def blocked(self, net, half_width, clearance_fn, extra=0.0):
        """Per layer: True where a centreline of half_width (plus extra) would
        violate the clearance to foreign copper."""
        out = []
        for layer in (F, B):
            normal = np.zeros((self.ny, self.nx), dtype=bool)
            hv = np.zeros((self.ny, self.nx), dtype=bool)
            for obj in self.objects:
                if layer not in obj[1] or (obj[2] == net and net is not None):
                    continue
                c, c_exempt = clearance_fn(net, obj[2])
                r = half_width + extra + self.margin
                self.mark(normal, obj, r + c_exempt)
                if c > c_exempt:
                    self.mark(hv, obj, r + c)
            m = normal | (hv & ~self.exempt)
            e = int(math.ceil((self.edge + half_width + extra) / self.g))
            m[:e, :] = m[-e:, :] = True
            m[:, :e] = m[:, -e:] = True
            out.append(m)
        return out

    def cells_in(self, obj, shrink=0.05):
        """Grid cells (i, j) whose centre lies inside obj (shrunk a little)."""
        x0, y0, x1, y1 = self._bbox(obj)
        win = self._window(x0, y0, x1, y1)
        i0, i1, j0, j1 = win
        d = self._dist(obj, win)
        inside = d <= 0
        if obj[0] == "rect":
            X = self.X[i0:i1, j0:j1]
            Y = self.Y[i0:i1, j0:j1]
            inside = ((np.abs(X - obj[3]) <= obj[5] - shrink) & (np.abs(Y - obj[4]) <= obj[6] - shrink))
        elif obj[0] == "circle":
            X = self.X[i0:i1, j0:j1]
            Y = self.Y[i0:i1, j0:j1]
            inside = np.hypot(X - obj[3], Y - obj[4]) <= obj[5] - shrink
        ii, jj = np.nonzero(inside)
        return [(i + i0, j + j0) for i, j in zip(ii, jj, strict=True)]

    # ---- search -----------------------------------------------------------------
    def astar(self, starts, goal, free, via_ok, target, via_cost=120, back_cost=2):
        """starts: [(layer, i, j)], goal: set of (layer, i, j).
        free: [layer] bool arrays. Returns the path as [(layer, i, j)] or None."""
        nx, ny = self.nx, self.ny
        n = nx * ny
        freef = [bytearray(free[0].ravel().astype(np.uint8).tobytes()),
                 bytearray(free[1].ravel().astype(np.uint8).tobytes())]
        viaf = bytearray(via_ok.ravel().astype(np.uint8).tobytes())
        goalset = {(layer * n + i * nx + j) for (layer, i, j) in goal}
        ti, tj = target
        dist = {}
        prev = {}
        heap = []

        def h(i, j):
            di, dj = abs(i - ti), abs(j - tj)
            return 10 * max(di, dj) + 4 * min(di, dj)

        for (layer, i, j) in starts:
            s = layer * n + i * nx + j
            if not freef[layer][i * nx + j] and s not in goalset:
                continue
            dist[s] = 0
            prev[s] = -1
            heapq.heappush(heap, (h(i, j), 0, s))
        moves = [(0, 1, 10), (0, -1, 10), (1, 0, 10), (-1, 0, 10),
                 (1, 1, 14), (1, -1, 14), (-1, 1, 14), (-1, -1, 14)]
        found = None
        while heap:
            f, d, s = heapq.heappop(heap)
            if d > dist.get(s, 1 << 60):
                continue
            if s in goalset:
                found = s
                break
            layer, rem = divmod(s, n)
            i, j = divmod(rem, nx)
            fl = freef[layer]
            extra = back_cost if layer == B else 0
            for di, dj, c in moves:
                a, b = i + di, j + dj
                if a < 0 or b < 0 or a >= ny or b >= nx:
                    continue
                k = a * nx + b
                t = layer * n + k
                if not fl[k] and t not in goalset:
                    continue
                if di and dj and not (fl[i * nx + b] and fl[a * nx + j]):
                    continue
                nd = d + c + extra
                if nd < dist.get(t, 1 << 60):
                    dist[t] = nd
                    prev[t] = s
                    heapq.heappush(heap, (nd + h(a, b), nd, t))
            if viaf[rem]:
                ol = 1 - layer
                t = ol * n + rem
                if freef[ol][rem] or t in goalset:
                    nd = d + via_cost
                    if nd < dist.get(t, 1 << 60):
                        dist[t] = nd
                        prev[t] = s
                        heapq.heappush(heap, (nd + h(i, j), nd, t))
        if found is None:
            return None
        path = []
        s = found
        while s != -1:
            layer, rem = divmod(s, n)
            i, j = divmod(rem, nx)
            path.append((layer, i, j))
            s = prev[s]
        return path[::-1]

    def to_geometry(self, path):
        """Path -> (segments [(layer, x1, y1, x2, y2)], vias [(x, y)])."""
        segs, vias = [], []
        if not path:
            return segs, vias
        g = self.g
        run = [path[0]]
        for p in path[1:]:
            q = run[-1]
            if p[0] != q[0]:
                vias.append((q[2] * g, q[1] * g))
                if len(run) > 1:
                    segs.extend(self._runs(run))
                run = [p]
            else:
                run.append(p)
        if len(run) > 1:
            segs.extend(self._runs(run))
        return segs, vias

    def _runs(self, run):
        g = self.g
        out = []
        start = run[0]
        d0 = None
        for a, b in zip(run, run[1:], strict=False):  # consecutive pairs
            d = (b[1] - a[1], b[2] - a[2])
            if d0 is not None and d != d0:
                out.append((a[0], start[2] * g, start[1] * g, a[2] * g, a[1] * g))
                start = a
            d0 = d
        last = run[-1]
        out.append((last[0], start[2] * g, start[1] * g, last[2] * g, last[1] * g))
        return out
