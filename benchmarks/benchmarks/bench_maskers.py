"""Maskers: region signals, masking and unmasking, EPI masks, against nilearn on the same files."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np

from ._inputs import BOLD_SHAPE, KINDS, Inputs, load, open_ours

PARCELS = 100


def _brain(shape: tuple[int, ...]) -> np.ndarray:
    """The brain ellipsoid of the generated BOLD series (see ``_data.bold_volumes``)."""
    u, v, w = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape[:3]), indexing="ij")
    return np.asarray((u / 0.74) ** 2 + (v / 0.78) ** 2 + (w / 0.70) ** 2 <= 1.0)


def _atlas(brain: np.ndarray, parcels: int) -> np.ndarray:
    """Slab parcels of the brain along the first axis, then the second: ``parcels`` labels."""
    i, j, _ = np.indices(brain.shape)
    side = int(np.ceil(np.sqrt(parcels)))
    labels = (i * side // brain.shape[0]) * side + (j * side // brain.shape[1])
    labels = labels % parcels + 1
    return np.where(brain, labels, 0).astype(np.int16)


class _MaskerInputs(Inputs):
    """Adds a brain mask and a 100-label atlas on the BOLD grid, written in ``setup``."""

    params: ClassVar[list[str]] = KINDS
    param_names: ClassVar[list[str]] = ["kind"]

    def setup(self, paths: dict[str, str], kind: str) -> None:
        """Write the mask and the atlas; skip if the maskers do not exist yet."""
        ds = open_ours(paths[f"bold.{kind}"])
        ds.close()
        self.folder = tempfile.TemporaryDirectory()
        affine = load(paths[f"bold.{kind}"]).affine
        brain = _brain(BOLD_SHAPE)
        self.mask = str(Path(self.folder.name) / "mask.nii")
        self.atlas = str(Path(self.folder.name) / "atlas.nii")
        nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), self.mask)
        nib.save(nib.Nifti1Image(_atlas(brain, PARCELS), affine), self.atlas)

    def teardown(self, paths: dict[str, str], kind: str) -> None:
        self.folder.cleanup()


def _quiet(masker: Any, path: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return masker.fit_transform(path)


class Regions(_MaskerInputs):
    """Mean signal of 100 regions, ``chunks={}``, vs ``NiftiLabelsMasker``."""

    def _ours(self, path: str) -> Any:
        return open_ours(path, chunks={})["data"].nifti.regions(self.atlas).values

    def _nilearn(self, path: str) -> Any:
        from nilearn.maskers import NiftiLabelsMasker  # type: ignore[import-untyped]

        return _quiet(NiftiLabelsMasker(self.atlas), path)

    def time_regions(self, paths: dict[str, str], kind: str) -> None:
        """``.nifti.regions(atlas)`` computed."""
        self._ours(paths[f"bold.{kind}"])

    def peakmem_regions(self, paths: dict[str, str], kind: str) -> None:
        """Peak RSS of ``.nifti.regions``."""
        self._ours(paths[f"bold.{kind}"])

    def time_nilearn_labels_masker(self, paths: dict[str, str], kind: str) -> None:
        """``NiftiLabelsMasker(atlas).fit_transform(path)``."""
        self._nilearn(paths[f"bold.{kind}"])

    def peakmem_nilearn_labels_masker(self, paths: dict[str, str], kind: str) -> None:
        """Peak RSS of ``NiftiLabelsMasker``."""
        self._nilearn(paths[f"bold.{kind}"])


class Mask(_MaskerInputs):
    """Brain voxels as a (time, voxel) matrix, and back, vs ``NiftiMasker``."""

    def _ours(self, path: str) -> Any:
        return open_ours(path, chunks={})["data"].nifti.mask(self.mask).values

    def _nilearn(self, path: str) -> Any:
        from nilearn.maskers import NiftiMasker

        return _quiet(NiftiMasker(mask_img=self.mask, standardize=None), path)

    def time_mask(self, paths: dict[str, str], kind: str) -> None:
        """``.nifti.mask(mask)`` computed."""
        self._ours(paths[f"bold.{kind}"])

    def peakmem_mask(self, paths: dict[str, str], kind: str) -> None:
        """Peak RSS of ``.nifti.mask``."""
        self._ours(paths[f"bold.{kind}"])

    def time_mask_unmask(self, paths: dict[str, str], kind: str) -> None:
        """``.nifti.mask(mask).nifti.unmask()`` computed (lazy round trip)."""
        data = open_ours(paths[f"bold.{kind}"], chunks={})["data"]
        data.nifti.mask(self.mask).nifti.unmask().values  # noqa: B018

    def time_nilearn_masker(self, paths: dict[str, str], kind: str) -> None:
        """``NiftiMasker(mask_img=mask).fit_transform(path)``."""
        self._nilearn(paths[f"bold.{kind}"])

    def peakmem_nilearn_masker(self, paths: dict[str, str], kind: str) -> None:
        """Peak RSS of ``NiftiMasker``."""
        self._nilearn(paths[f"bold.{kind}"])


class ComputeMask(_MaskerInputs):
    """EPI brain mask, vs ``nilearn.masking.compute_epi_mask``."""

    def time_compute_mask(self, paths: dict[str, str], kind: str) -> None:
        """``.nifti.compute_mask()`` (temporal mean with ``chunks={}``)."""
        open_ours(paths[f"bold.{kind}"], chunks={})["data"].nifti.compute_mask()

    def time_nilearn_compute_epi_mask(self, paths: dict[str, str], kind: str) -> None:
        """``compute_epi_mask(path)``."""
        from nilearn.masking import compute_epi_mask  # type: ignore[import-untyped]

        compute_epi_mask(paths[f"bold.{kind}"])
