"""``.nifti.compute_mask`` against ``nilearn.masking.compute_epi_mask`` on the same images."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import dask
import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nilearn import datasets
from nilearn.masking import compute_epi_mask

import xarray_nifti
from helpers import NIBABEL_DATA, oblique_affine
from xarray_nifti.epi_mask import EmptyMaskWarning


def nilearn_mask(img: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(compute_epi_mask(img).get_fdata() > 0)


def synthetic_epi(seed: int, shape: tuple[int, int, int, int], dtype: str) -> np.ndarray:
    """A bright noisy ellipsoid (the brain) in a dark noisy box, with a separate blob."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape[:3]).astype(float)
    centre = (np.array(shape[:3]) - 1) / 2
    radius = np.array(shape[:3]) / 3
    inside = (((grid - centre[:, None, None, None]) / radius[:, None, None, None]) ** 2).sum(0)
    volume = np.where(inside < 1, 800.0, 50.0)
    volume[:2, :2, :2] = 900.0  # a small bright blob that is not the largest component
    series = volume[..., None] + rng.normal(0, 40, shape)
    return series.astype(dtype)


@pytest.mark.parametrize("name", ["example4d.nii.gz", "anatomical.nii"])
@pytest.mark.parametrize("chunks", [None, {}])
@pytest.mark.parametrize("kind", ["dataarray", "dataset"])
def test_equals_nilearn_on_nibabels_files(name: str, chunks: Any, kind: str) -> None:
    path = NIBABEL_DATA / name
    ds = xr.open_dataset(path, engine="nifti", chunks=chunks)
    out = (ds if kind == "dataset" else ds["data"]).nifti.compute_mask()
    expected = nilearn_mask(path)
    assert out.dtype == bool
    assert out.dims == ("i", "j", "k")
    assert out.name == "mask"
    np.testing.assert_array_equal(out.values, expected)
    np.testing.assert_allclose(out.nifti.affine, nib.load(path).affine, atol=1e-5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from(["float32", "float64", "int16"]),
    volumes=st.sampled_from([1, 5]),
    chunked=st.booleans(),
)
def test_equals_nilearn_on_generated_series(
    seed: int, dtype: str, volumes: int, chunked: bool
) -> None:
    shape = (14, 12, 10, volumes)
    values = synthetic_epi(seed, shape, dtype)
    if volumes == 1:
        values = values[..., 0]
    img = nib.Nifti1Image(values, oblique_affine(seed % 7))
    data = xarray_nifti.from_nibabel(img)["data"]
    if chunked:
        data = data.chunk()
    np.testing.assert_array_equal(data.nifti.compute_mask().values, nilearn_mask(img))


def test_mni152_template() -> None:
    template = nib.Nifti1Image.from_bytes(datasets.load_mni152_template(resolution=2).to_bytes())
    out = xarray_nifti.from_nibabel(template)["data"].chunk({"k": 16}).nifti.compute_mask()
    np.testing.assert_array_equal(out.values, nilearn_mask(template))


def test_mask_follows_the_grid_after_reorientation(tmp_path: Path) -> None:
    values = synthetic_epi(4, (14, 12, 10, 3), "float32")
    path = tmp_path / "epi.nii"
    nib.save(nib.Nifti1Image(values, oblique_affine(1)), path)
    data = xr.open_dataarray(path, engine="nifti", chunks={}).nifti.reorient("PIL")
    out = data.nifti.compute_mask()
    img = data.nifti.to_nibabel()
    np.testing.assert_array_equal(out.transpose("i", "j", "k").values, nilearn_mask(img))
    # usable as the mask of its own data
    assert data.nifti.mask(out).sizes["voxel"] == int(out.sum())


def test_mean_is_computed_by_dask_in_chunks(tmp_path: Path) -> None:
    values = synthetic_epi(5, (14, 12, 10, 6), "float32")
    path = tmp_path / "epi.nii.gz"
    nib.save(nib.Nifti1Image(values, np.eye(4)), path)
    data = xr.open_dataarray(path, engine="nifti", chunks={}).chunk(time=2)
    computed: list[int] = []

    def counting(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        computed.append(1)
        return dask.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=counting):
        out = data.nifti.compute_mask()
    assert len(computed) == 1  # one graph: the temporal mean
    np.testing.assert_array_equal(out.values, nilearn_mask(path))


def test_empty_result_warns_like_nilearn() -> None:
    path = NIBABEL_DATA / "functional.nii"
    with pytest.warns(EmptyMaskWarning, match="empty"):
        out = xr.open_dataarray(path, engine="nifti").nifti.compute_mask()
    assert not out.values.any()
    np.testing.assert_array_equal(out.values, nilearn_mask(path))


def test_errors_name_the_problem() -> None:
    data = xr.open_dataarray(NIBABEL_DATA / "example4d.nii.gz", engine="nifti")
    with pytest.raises(ValueError, match="all three spatial dims"):
        data.isel(k=0).nifti.compute_mask()
    with pytest.raises(ValueError, match=r"also has the dims \['time', 'echo'\]"):
        data.expand_dims(echo=2, axis=-1).nifti.compute_mask()
    ds = xr.open_dataset(NIBABEL_DATA / "example4d.nii.gz", engine="nifti")
    with pytest.raises(ValueError, match="choose one with var="):
        ds.assign(other=ds["data"]).nifti.compute_mask()
    assert ds.assign(other=ds["data"]).nifti.compute_mask(var="other").shape == (128, 96, 24)


def test_single_volume_of_a_4d_file_equals_nilearn() -> None:
    path = os.fspath(NIBABEL_DATA / "example4d.nii.gz")
    volume = xr.open_dataarray(path, engine="nifti").isel(time=1)
    reference = nib.load(path).slicer[..., 1]
    np.testing.assert_array_equal(volume.nifti.compute_mask().values, nilearn_mask(reference))
