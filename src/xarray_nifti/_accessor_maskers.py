"""The ``.nifti`` accessor's mask and atlas members: thin delegations to the masker modules.

Kept apart from ``accessor.py`` so that each file stays small; the accessor
classes inherit these members, so they are documented and used as
``obj.nifti.mask(...)`` like every other member.
"""

from __future__ import annotations

from typing import Generic

import xarray as xr

from .epi_mask import compute_mask as compute_epi_mask
from .grid import T_Xarray
from .masking import GridImage
from .masking import mask as mask_voxels
from .masking import unmask as unmask_voxels
from .regions import RegionNames
from .regions import regions as region_signals

__all__ = ["MaskerMembers"]


class MaskerMembers(Generic[T_Xarray]):
    """``mask``, ``unmask``, ``regions`` and ``compute_mask`` of the ``.nifti`` accessor."""

    _obj: T_Xarray

    def mask(self, mask: GridImage) -> T_Xarray:
        """The voxels inside a brain mask, as a ``(…, voxel)`` array (image → matrix).

        Parameters
        ----------
        mask
            A boolean (or 0/1) 3-D image on the same grid: a DataArray or
            Dataset opened with this package, a nibabel image, or the path of
            a NIfTI file.

        Returns
        -------
        DataArray or Dataset
            The non-spatial dims first (e.g. ``time``), then ``voxel``, in
            nilearn's voxel order (``data[mask]``: C order over the grid's
            axes ``i, j, k``, whatever the order of the object's dims), with
            the same values as ``NiftiMasker(mask_img=mask).fit_transform``
            and the input's dtype (nilearn casts integers to float32). Along
            ``voxel`` the coordinates ``i, j, k`` (voxel indices) and
            ``x, y, z`` (world mm) are kept, and the attributes of ``i, j, k``
            hold the grid for :meth:`unmask`. Dask input gives a lazy result
            with the same chunks along the other dims; the mask itself is
            read (or computed) right away, as its voxel count is the
            result's size.

        Raises
        ------
        ValueError
            If the mask is not on the data's grid (resample it first with
            ``mask.nifti.resample_to(data, order=0)``), is not binary, or is
            empty.
        """
        return mask_voxels(self._obj, mask)

    def unmask(self, fill_value: float = 0) -> T_Xarray:
        """Put ``(…, voxel)`` values made by :meth:`mask` back onto their grid (matrix → image).

        Parameters
        ----------
        fill_value
            Value of the voxels outside the mask. A value that is not a whole
            number turns integer data into floats.

        Returns
        -------
        DataArray or Dataset
            The spatial dims ``i, j, k`` first, then the other dims, with the
            grid's index (so ``to_nifti``, ``plot`` and arithmetic with the
            original image work); equal to nilearn's
            ``NiftiMasker.inverse_transform``. Dask input stays lazy.

        Raises
        ------
        ValueError
            If there is no ``voxel`` dim, or its ``i, j, k`` coordinates or
            the grid attributes on them were dropped.
        """
        return unmask_voxels(self._obj, fill_value)

    def regions(
        self, labels: GridImage, reduce: str = "mean", names: RegionNames | None = None
    ) -> T_Xarray:
        """One signal per atlas region (as nilearn's ``NiftiLabelsMasker``).

        Parameters
        ----------
        labels
            A 3-D atlas of integer labels (0 is background): DataArray,
            Dataset, nibabel image or path. On another grid it is resampled
            onto the data's with nearest neighbour, as nilearn does by
            default; labels that vanish in that resampling are left out with
            a :class:`~xarray_nifti.LabelsResamplingWarning`.
        reduce
            ``"mean"``, ``"median"``, ``"sum"``, ``"std"``
            (``"standard_deviation"``), ``"variance"``, ``"minimum"`` or
            ``"maximum"`` (nilearn's ``strategy``).
        names
            Region names: a mapping ``{label: name}``, a pandas Series, or a
            lookup table (DataFrame with ``index`` and ``name`` columns).

        Returns
        -------
        DataArray or Dataset
            The non-spatial dims, then ``region`` with the label values as
            its coordinate (and a ``name`` coordinate when ``names`` is
            given); float32 for float32 data, float64 otherwise. Voxels
            holding NaN make their region's value NaN (nilearn counts them
            as 0). Dask input stays lazy (the atlas is read right away); the
            reduction runs through xarray's ``groupby`` (flox).

        Raises
        ------
        ValueError
            For an unknown ``reduce``, labels that are not whole numbers, or
            an atlas with no labelled voxel on the data's grid.
        """
        return region_signals(self._obj, labels, reduce=reduce, names=names)

    def compute_mask(self, *, var: str | None = None) -> xr.DataArray:
        """Brain mask of a 3-D or 4-D EPI image, as ``nilearn.masking.compute_epi_mask``.

        With nilearn's default parameters (``lower_cutoff=0.2``,
        ``upper_cutoff=0.85``, ``connected=True``, ``opening=2``,
        ``exclude_zeros=False``). The temporal mean is computed chunk by
        chunk; the mask itself is computed right away.

        Parameters
        ----------
        var
            Data variable to use, for a Dataset with several.

        Returns
        -------
        xarray.DataArray
            Boolean, named ``mask``, on the image's grid (with its index, so
            it can be passed to :meth:`mask` or saved with ``to_nifti``).
        """
        return compute_epi_mask(self._obj, var=var)
