"""Shared fixtures: nibabel's real test files, small generated images, a process cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

import xarray_nifti  # noqa: F401  (registers the accessor)
from helpers import NIBABEL_DATA, process_cluster


@pytest.fixture
def nibabel_data() -> Path:
    """Folder of the real NIfTI/Analyze files shipped inside the nibabel wheel."""
    return NIBABEL_DATA


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


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A real cluster of two single-threaded worker processes, shared by a test module."""
    with process_cluster(2) as client:
        yield client
