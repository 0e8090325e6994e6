"""An oblique grid before and after ``.nifti.to_canonical()``.

The stored array changes (flips and a transpose); the world positions do not.
"""

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

import xarray_nifti

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
anat = nib.load(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii")

# Make a strongly oblique image: the same voxels, the grid turned 110° about z.
angle = np.deg2rad(110)
turn = np.eye(4)
turn[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
image = nib.Nifti1Image(np.asarray(anat.dataobj), turn @ anat.affine)
oblique = xarray_nifti.from_nibabel(image)
before = oblique.data
after = before.nifti.to_canonical()  # lazy: flips and a transpose, no resampling


def world_panel(ax, image, title):
    k = image.sizes["k"] // 2
    plane = image.isel(k=k).values
    ni, nj = plane.shape
    ic, jc = np.meshgrid(np.arange(ni + 1) - 0.5, np.arange(nj + 1) - 0.5, indexing="ij")
    x, y, _ = image.nifti.voxel_to_world(ic, jc, k)
    ax.pcolormesh(x, y, plane, cmap="gray")
    origin = image.nifti.voxel_to_world(0, 0, k)[:2]
    for axis, name, colour in ((0, "i", "tab:red"), (1, "j", "tab:blue")):
        step = image.nifti.affine[:2, axis] * 10
        ax.annotate(
            "",
            xy=(origin[0] + step[0], origin[1] + step[1]),
            xytext=origin,
            arrowprops={"color": colour, "width": 2, "headwidth": 8},
        )
        ax.text(
            origin[0] + 1.3 * step[0],
            origin[1] + 1.3 * step[1],
            name,
            color=colour,
            fontweight="bold",
            ha="center",
            va="center",
        )
    ax.set_aspect("equal")
    ax.set(title=title, xlabel="x (mm, right →)", ylabel="y (mm, anterior →)")


figure, axes = plt.subplots(2, 2, figsize=(8.0, 7.6), constrained_layout=True)
panels = ((before, "before"), (after, "after to_canonical()"))
for column, (image, name) in enumerate(panels):
    codes = "".join(image.nifti.axcodes)
    axes[0, column].imshow(
        image.isel(k=image.sizes["k"] // 2).values.T,
        origin="lower",
        cmap="gray",
        interpolation="nearest",
    )
    axes[0, column].set(title=f"{name}: array ({codes})", xlabel="i (index)", ylabel="j (index)")
    world_panel(axes[1, column], image, f"{name}: world")
figure.savefig(OUT / "canonical.png", dpi=72)
