"""Brain mask of an EPI series, as ``nilearn.masking.compute_epi_mask`` with its defaults.

The temporal mean is computed by xarray (lazily and chunk by chunk for dask
data, so a long series is never loaded at once); the rest works on that one
3-D volume with nilearn's steps: a light smoothing (FWHM of one voxel), a
threshold at the least dense point of the intensity histogram between the
20 % and 85 % quantiles (T. Nichols' heuristic), an erosion, the largest
connected component, and a closing.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from ._errors import EmptyMaskWarning
from .grid import find_index, select_variable
from .masking import grid_dims

__all__ = ["EmptyMaskWarning", "brain_mask_of_mean", "compute_mask"]

LOWER_CUTOFF = 0.2
UPPER_CUTOFF = 0.85
OPENING = 2
# nilearn smooths the mean with a FWHM of one voxel before thresholding.
_SIGMA = 1.0 / np.sqrt(8 * np.log(2))


def _smooth(mean: np.ndarray) -> np.ndarray:
    from scipy import ndimage  # scipy loads with the first mask, not with the package

    nan = np.isnan(mean)
    smoothed = np.where(np.isfinite(mean), mean, 0).astype(mean.dtype)
    for axis in range(3):
        ndimage.gaussian_filter1d(smoothed, _SIGMA, output=smoothed, axis=axis)
    smoothed[nan] = np.nan
    return smoothed


def _threshold(mean: np.ndarray) -> float:
    values = np.sort(np.ravel(mean))
    lower = int(np.floor(LOWER_CUTOFF * len(values)))
    upper = min(int(np.floor(UPPER_CUTOFF * len(values))), len(values) - 1)
    gaps = values[lower + 1 : upper + 1] - values[lower:upper]
    if gaps.size == 0:
        raise ValueError(
            f"the image has too few voxels ({values.size}) to find a brain mask threshold"
        )
    widest = int(gaps.argmax())
    return float(0.5 * (values[widest + lower] + values[widest + lower + 1]))


def _largest_component(selected: np.ndarray) -> np.ndarray:
    from scipy import ndimage  # scipy loads with the first mask, not with the package

    labels, count = ndimage.label(selected)
    if count <= 1:
        return selected
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == sizes.argmax())


def brain_mask_of_mean(mean: np.ndarray) -> np.ndarray:
    """nilearn's EPI mask of a 3-D mean volume (a numpy array), as a boolean array.

    Examples
    --------
    >>> import nibabel as nib
    >>> from nilearn.masking import compute_epi_mask
    >>> volume = np.zeros((12, 12, 12), "float32")
    >>> volume[3:9, 3:9, 3:9] = 100.0
    >>> ours = brain_mask_of_mean(volume)
    >>> theirs = compute_epi_mask(nib.Nifti1Image(volume, np.eye(4))).get_fdata()
    >>> int(ours.sum()), bool((ours == theirs.astype(bool)).all())
    (304, True)
    """
    from scipy import ndimage  # scipy loads with the first mask, not with the package

    if mean.dtype.kind in "iu":
        mean = mean.astype(np.float64 if mean.dtype.itemsize == 8 else np.float32)
    smoothed = _smooth(mean)
    # nilearn then counts non-finite voxels as 0, for the threshold and the mask
    mean = np.where(np.isfinite(smoothed), smoothed, 0).astype(smoothed.dtype)
    selected = mean >= _threshold(mean)
    selected = ndimage.binary_erosion(selected, iterations=OPENING)
    if not selected.any():
        warnings.warn(
            "the computed brain mask is empty: is the input a raw (not detrended) EPI series?",
            EmptyMaskWarning,
            stacklevel=4,  # the caller of .nifti.compute_mask
        )
    else:
        selected = _largest_component(selected)
    selected = ndimage.binary_dilation(selected, iterations=2 * OPENING)
    return np.asarray(ndimage.binary_erosion(selected, iterations=OPENING), dtype=bool)


def compute_mask(obj: xr.Dataset | xr.DataArray, *, var: str | None = None) -> xr.DataArray:
    """Boolean brain mask of a 3-D or 4-D EPI image on its grid (see ``.nifti.compute_mask``)."""
    array = select_variable(obj, var)
    index = find_index(array)
    dims = grid_dims(array, index)
    extra = [str(d) for d in array.dims if d not in dims]
    if len(extra) > 1:
        raise ValueError(
            f"compute_mask takes a 3-D image or a 4-D series; this one also has the dims {extra}:"
            f" select one, e.g. .isel({extra[-1]}=0)"
        )
    if extra:
        # numpy's mean of a float32 series is float32 (integers give float64), as nilearn's.
        out_dtype = array.dtype if array.dtype.kind == "f" else np.dtype(np.float64)
        mean_array = array.astype(np.float64).mean(extra[0]).astype(out_dtype)
    else:
        mean_array = array
    mean = np.asarray(mean_array.transpose(*dims).values)
    selected = brain_mask_of_mean(mean)
    coords = xr.Coordinates.from_xindex(index)
    return xr.DataArray(selected, dims=dims, coords=coords, name="mask")
