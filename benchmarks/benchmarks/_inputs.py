"""Shared ``setup_cache`` for the asv benchmark classes, and small helpers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import xarray as xr

import xarray_nifti  # noqa: F401  (registers the engine and the .nifti accessor)

from . import _data

__all__ = [
    "BOLD_SHAPE",
    "KINDS",
    "SLOPE_INTER",
    "T1_SAGITTAL_SHAPE",
    "T1_SHAPE",
    "Inputs",
    "load",
    "open_ours",
    "simpleitk",
]

# Moderate sizes: a 31 MB int16 series, an 8 MB float32 volume, a 9 MB int16 volume.
BOLD_SHAPE = (64, 64, 32, 120)
T1_SHAPE = (128, 128, 128)
T1_SAGITTAL_SHAPE = (128, 192, 192)
KINDS = ["nii", "nii.gz"]
#: scl_slope, scl_inter of the scaled copy of the BOLD series
SLOPE_INTER = (0.5, 10.0)


def load(path: str, **kwargs: Any) -> Any:
    """``nib.load(path)``; typed ``Any`` as the images' attributes depend on the format."""
    return nib.load(path, **kwargs)


def simpleitk() -> Any:
    """The ``SimpleITK`` module; ``NotImplementedError`` (asv: skipped) if it is missing."""
    try:
        import SimpleITK
    except ImportError as error:
        raise NotImplementedError("SimpleITK is not installed") from error
    return SimpleITK


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
        """Write every input as ``.nii`` and ``.nii.gz``.

        ``bold``: the BOLD-like series; ``bold-scaled``: the same stored with
        :data:`SLOPE_INTER`; ``t1``: the T1-like float32 volume; ``t1-sagittal``:
        an int16 T1 in oblique sagittal slices.
        """
        root = Path.cwd()
        slope, inter = SLOPE_INTER
        writers: dict[str, Callable[[Path], str]] = {
            "bold": lambda path: _data.write_bold(path, BOLD_SHAPE),
            "bold-scaled": lambda path: _data.write_bold(path, BOLD_SHAPE, 0, slope, inter),
            "t1": lambda path: _data.write_t1(path, T1_SHAPE),
            "t1-sagittal": lambda path: _data.write_t1_sagittal(path, T1_SAGITTAL_SHAPE),
        }
        paths: dict[str, str] = {}
        for name, write in writers.items():
            nii = write(root / f"{name}.nii")
            paths[f"{name}.nii"] = nii
            paths[f"{name}.nii.gz"] = _data.gzip_with_nibabel(nii, root / f"{name}.nii.gz")
        return {key: os.path.abspath(value) for key, value in paths.items()}


def fortran_empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """A Fortran-ordered output array (NIfTI's own layout)."""
    return np.empty(shape, dtype=dtype, order="F")
