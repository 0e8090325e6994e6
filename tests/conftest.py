"""Shared fixtures: nibabel's real test files and small generated images."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import xarray_nifti  # noqa: F401  (registers the accessor)

NIBABEL_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"


@pytest.fixture
def nibabel_data() -> Path:
    """Folder of the real NIfTI/Analyze files shipped inside the nibabel wheel."""
    return NIBABEL_DATA


def oblique_affine(seed: int = 0) -> np.ndarray:
    """A rotated, anisotropic, translated affine (no axis aligned with the world)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag(rng.uniform(0.5, 3.0, size=3))
    affine[:3, 3] = rng.uniform(-100, 100, size=3)
    return affine


@pytest.fixture
def make_image(tmp_path: Path):
    """Write a NIfTI image with nibabel and return its path."""

    def make(
        data: np.ndarray,
        affine: np.ndarray | None = None,
        name: str = "img.nii",
        image_class: type = nib.Nifti1Image,
        **header_fields: object,
    ) -> Path:
        img = image_class(data, np.eye(4) if affine is None else affine)
        for field, value in header_fields.items():
            img.header[field] = value
        path = tmp_path / name
        nib.save(img, path)
        return path

    return make
