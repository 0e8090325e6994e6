"""Why images are drawn with ``origin="lower"`` after reorienting to RAS+."""

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import xarray as xr

import xarray_nifti  # noqa: F401

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"

bold = xr.open_dataset(path, engine="nifti").data.isel(time=0)
# after to_canonical: rows run along x (left → right), columns along y
axial = bold.nifti.to_canonical().isel(k=14).values

figure, axes = plt.subplots(1, 3, figsize=(9.0, 3.4), constrained_layout=True)
panels = [
    (axial, "upper", "array as stored\n(rows = x)"),
    (axial.T, "upper", "transposed, origin='upper'\n(anterior at the bottom)"),
    (axial.T, "lower", "transposed, origin='lower'\n(neurological)"),
]
for ax, (shown, origin, title) in zip(axes, panels, strict=True):
    ax.imshow(shown, origin=origin, cmap="gray", interpolation="nearest")
    ax.set(title=title, xticks=[], yticks=[])
figure.savefig(OUT / "display_origin.png", dpi=80)
