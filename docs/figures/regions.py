"""A quadrant atlas made from a brain mask and world coordinates (``.nifti.regions``)."""

import sys
from pathlib import Path

import nibabel as nib
import xarray as xr

import xarray_nifti  # noqa: F401  (registers engine="nifti" and the .nifti accessor)

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"

bold = xr.open_dataset(path, engine="nifti", chunks={}).data
brain = bold.nifti.compute_mask()
right = brain.x > float(brain.x.mean())  # world x grows to the subject's right
upper = brain.z > float(brain.z.mean())
atlas = xr.where(brain, 1 + right + 2 * upper, 0).astype("int16")
figure = atlas.nifti.plot(at=(-40.0, 60.0, 30.0), cmap="tab10", vmin=0, vmax=9, figsize=(9.0, 3.3))
figure.savefig(OUT / "regions.png", dpi=80)
