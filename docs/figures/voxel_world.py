"""The same sagittal slice in voxel space (array indices) and in world space (mm)."""

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import xarray as xr

import xarray_nifti  # noqa: F401

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"

bold = xr.open_dataset(path, engine="nifti").data
plane = bold.isel(time=0, i=64)  # a 2-D (j, k) grid that keeps its geometry
values = plane.values
nj, nk = values.shape

# Voxel *corners* are half a voxel from the centres that the affine maps.
jc, kc = np.meshgrid(np.arange(nj + 1) - 0.5, np.arange(nk + 1) - 0.5, indexing="ij")
_, y_corner, z_corner = bold.nifti.voxel_to_world(64, jc, kc)
marked = (64, 48, 12)
x0, y0, z0 = bold.nifti.voxel_to_world(*marked)

figure, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.0), constrained_layout=True)
left.imshow(values.T, origin="lower", cmap="gray", interpolation="nearest")
left.plot(marked[1], marked[2], "o", color="orange")
left.set(title="voxel space: the array", xlabel="j (index)", ylabel="k (index)")

right.pcolormesh(y_corner, z_corner, values, cmap="gray")
right.plot(y0, z0, "o", color="orange")
for axis, colour in ((1, "tab:red"), (2, "tab:blue")):  # where the j and k axes point
    step = bold.nifti.affine[1:3, axis] * 12
    start = bold.nifti.voxel_to_world(64, 6, 3)[1:]  # near the first voxel
    right.annotate(
        "",
        xy=(start[0] + step[0], start[1] + step[1]),
        xytext=start,
        arrowprops={"color": colour, "width": 2, "headwidth": 8},
    )
    label = "jk"[axis - 1] + " axis"
    right.text(
        start[0] + step[0] * 1.6,
        start[1] + step[1] * 1.6,
        label,
        color=colour,
        fontweight="bold",
        ha="center",
        va="center",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1},
    )
right.set_aspect("equal")
right.set(
    title="world space: RAS+ mm (oblique grid)",
    xlabel="y (mm, anterior →)",
    ylabel="z (mm, superior →)",
)
title = f"voxel {marked} → world ({x0:.1f}, {y0:.1f}, {z0:.1f}) mm"
figure.suptitle(title, fontsize=10)
figure.savefig(OUT / "voxel_world.png", dpi=80)
