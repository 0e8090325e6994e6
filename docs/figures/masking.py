"""The first PCA component of a masked EPI series, back on its grid (``.nifti.mask/unmask``)."""

import sys
from pathlib import Path

import nibabel as nib
import xarray as xr
from sklearn.decomposition import PCA

import xarray_nifti  # noqa: F401  (registers engine="nifti" and the .nifti accessor)

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"

bold = xr.open_dataset(path, engine="nifti", chunks={}).data
X = bold.nifti.mask(bold.nifti.compute_mask())  # (time, voxel)
pca = PCA(n_components=1).fit(X.values)
component = X.isel(time=0, drop=True).copy(data=pca.components_[0])
image = component.nifti.unmask()  # back on the grid, 0 outside the brain
figure = image.nifti.plot(
    at=(-40.0, 60.0, 30.0), cmap="RdBu_r", vmin=-0.01, vmax=0.01, figsize=(9.0, 3.3)
)
figure.savefig(OUT / "masking_pca.png", dpi=80)
