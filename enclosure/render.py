"""Headless PNG preview of the exported STLs (matplotlib 3D, Agg backend).

    python render.py out/base.stl out/lid.stl images/preview.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402
from gateway_case import Enclosure  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

EXPLODE = 28.0   # lid lifted above the base in the picture [mm]
LIGHT = np.array([0.4, -0.6, 0.7])


def shaded(mesh, color):
    light = LIGHT / np.linalg.norm(LIGHT)
    k = 0.35 + 0.65 * np.clip(mesh.face_normals @ light, 0, 1)
    rgb = np.array(matplotlib.colors.to_rgb(color))
    return np.clip(k[:, None] * rgb[None, :], 0, 1)


def fine(mesh, max_edge=2.5):
    """Split long sliver triangles: matplotlib sorts whole polygons by depth."""
    v, f = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge=max_edge)
    return trimesh.Trimesh(v, f, process=False)


def draw(ax, meshes, elev, azim, title):
    ax.set_proj_type("ortho")
    for mesh, color in meshes:
        mesh = fine(mesh)
        fc = shaded(mesh, color)
        pc = Poly3DCollection(mesh.triangles, facecolors=fc, edgecolors=fc, linewidths=0.3)
        ax.add_collection3d(pc)
    pts = np.vstack([m.vertices for m, _ in meshes])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(hi - lo)
    ax.view_init(elev=elev, azim=azim)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)


def main(base_stl, lid_stl, png):
    enc = Enclosure()
    base = trimesh.load(base_stl)
    lid = trimesh.load(lid_stl)
    # lid.stl is in print orientation (upside down): flip it back and lift it
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    flip[2, 3] = enc.total_h + EXPLODE
    lid.apply_transform(flip)
    fig = plt.figure(figsize=(12, 5.6), dpi=110)
    ax1 = fig.add_subplot(1, 2, 1, projection="3d")
    draw(ax1, [(base, "#4a7fb0"), (lid, "#d9a441")], 25, -28,
         "+x side: DevKit USB, BMS lead window + cable-tie post")
    ax2 = fig.add_subplot(1, 2, 2, projection="3d")
    draw(ax2, [(base, "#4a7fb0"), (lid, "#d9a441")], 25, 148,
         "-x side: RJ45 window; lid vents (none above the VBAT side)")
    fig.suptitle("Gateway enclosure (base blue, lid amber, exploded) - " + enc.summary().split(",")[0],
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(png)
    print(f"wrote {png}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
