"""Shared ``setup_cache`` for the asv benchmark classes, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

import xarray_nifti  # noqa: F401  (registers the engine and the .nifti accessor)

from . import _data

__all__ = ["BOLD_SHAPE", "KINDS", "T1_SHAPE", "Inputs", "open_ours"]

# Moderate sizes: a 31 MB int16 series and an 8 MB float32 volume.
BOLD_SHAPE = (64, 64, 32, 120)
T1_SHAPE = (128, 128, 128)
KINDS = ["nii", "nii.gz"]


def open_ours(path: str, **kwargs: Any) -> xr.Dataset:
    """``xr.open_dataset(path, engine="nifti", **kwargs)``."""
    return xr.open_dataset(path, engine="nifti", **kwargs)


class Inputs:
    """Base class: one shared ``setup_cache`` that writes all inputs.

    asv keys the cache by the defining function, so every subclass shares the
    files, generated once per benchmark run in asv's cache directory.
    """

    timeout = 600.0

    def setup_cache(self) -> dict[str, str]:
        """Write the BOLD-like series and the T1-like volume, as ``.nii`` and ``.nii.gz``."""
        root = Path.cwd()
        paths: dict[str, str] = {}
        paths["bold.nii"] = _data.write_bold(root / "bold.nii", BOLD_SHAPE)
        paths["bold.nii.gz"] = _data.gzip_with_nibabel(paths["bold.nii"], root / "bold.nii.gz")
        paths["t1.nii"] = _data.write_t1(root / "t1.nii", T1_SHAPE)
        paths["t1.nii.gz"] = _data.gzip_with_nibabel(paths["t1.nii"], root / "t1.nii.gz")
        return {key: os.path.abspath(value) for key, value in paths.items()}


def fortran_empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """A Fortran-ordered output array (NIfTI's own layout)."""
    return np.empty(shape, dtype=dtype, order="F")
