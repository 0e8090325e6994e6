"""A nilearn plot of an image computed with xarray-nifti (``.nifti.to_nibabel()``)."""

import sys
from pathlib import Path

import nibabel as nib
import xarray as xr
from nilearn import plotting

import xarray_nifti  # noqa: F401

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"

bold = xr.open_dataset(path, engine="nifti", chunks={}).data
mean = bold.mean("time").nifti.to_canonical()  # still lazy
image = mean.nifti.to_nibabel()  # a Nifti1Image; nibabel reads the dask array when asked
display = plotting.plot_epi(image, cut_coords=(-40, 60, 30), title="mean EPI (xarray-nifti)")
display.savefig(OUT / "nilearn_epi.png", dpi=80)
display.close()
