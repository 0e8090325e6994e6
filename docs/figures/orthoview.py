"""Orthogonal views of a real EPI scan in both display conventions (``.nifti.plot``)."""

import sys
from pathlib import Path

import nibabel as nib
import xarray as xr

import xarray_nifti  # noqa: F401  (registers engine="nifti" and the .nifti accessor)

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"

mean = xr.open_dataset(path, engine="nifti", chunks={}).data.mean("time")
for convention in ("neurological", "radiological"):
    # a point 30 mm to the subject's left of the scan centre (x = -10 mm)
    figure = mean.nifti.plot(at=(-40.0, 60.0, 30.0), convention=convention, figsize=(9.0, 3.3))
    figure.savefig(OUT / f"orthoview_{convention}.png", dpi=80)
