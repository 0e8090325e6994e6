"""Resampling onto another grid: every target voxel samples the source at inv(A) @ B."""

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import xarray as xr

import xarray_nifti  # noqa: F401

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"

source = xr.open_dataset(path, engine="nifti").data  # 2 mm, LAS
A = source.nifti.affine

# Target grid B: 1.5 mm voxels, turned 30° about z, centred on the source.
angle = np.deg2rad(30)
B = np.eye(4)
cos, sin = np.cos(angle), np.sin(angle)
B[:2, :2] = 1.5 * np.array([[cos, -sin], [sin, cos]])
B[2, 2] = 1.5
shape = (48, 60, 32)
centre = A[:3, :3] @ (np.array(source.shape) - 1) / 2 + A[:3, 3]
B[:3, 3] = centre - B[:3, :3] @ (np.array(shape) - 1) / 2

# lazy and chunked: target voxel w samples the source at voxel inv(A) @ B @ w
moved = source.nifti.resample_to((B, shape), order=1)


def corners(image, k):
    n0, n1 = image.sizes["i"], image.sizes["j"]
    ic, jc = np.meshgrid(np.arange(n0 + 1) - 0.5, np.arange(n1 + 1) - 0.5, indexing="ij")
    return image.nifti.voxel_to_world(ic, jc, k)[:2]


z = 10.0  # an axial plane, in world mm
k_src = int(source.nifti.world_to_voxel(0.0, 0.0, z, round=True)[2])
k_dst = int(moved.nifti.world_to_voxel(0.0, 0.0, z, round=True)[2])
n0, n1 = shape[0] - 1, shape[1] - 1
outline = np.array([[0, 0], [n0, 0], [n0, n1], [0, n1], [0, 0]], dtype=float)
ox, oy, _ = moved.nifti.voxel_to_world(outline[:, 0], outline[:, 1], k_dst)

figure, axes = plt.subplots(1, 3, figsize=(10.0, 3.6), constrained_layout=True)
axes[0].pcolormesh(*corners(source, k_src), source.isel(k=k_src).values, cmap="gray")
axes[0].plot(ox, oy, color="orange")
axes[0].set(title="source A (2 mm) + target grid B", xlabel="x (mm)", ylabel="y (mm)")
axes[1].imshow(moved.isel(k=k_dst).values.T, origin="lower", cmap="gray")
axes[1].set(title="resampled: B's voxel array", xlabel="i (index)", ylabel="j (index)")
axes[2].pcolormesh(*corners(moved, k_dst), moved.isel(k=k_dst).values, cmap="gray")
axes[2].set(title="resampled, drawn in world mm", xlabel="x (mm)", ylabel="y (mm)")
for ax in (axes[0], axes[2]):
    ax.set_aspect("equal")
    ax.set_xlim(-45, 45)
    ax.set_ylim(-55, 55)
figure.savefig(OUT / "resample.png", dpi=80)
