"""Resampling onto another grid, against nibabel and against SPM-made files."""

from __future__ import annotations

from pathlib import Path

import dask
import nibabel as nib
import numpy as np
import numpy.linalg as npl
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from nibabel.affines import apply_affine, from_matvec
from nibabel.eulerangles import euler2mat
from nibabel.processing import resample_from_to
from tests.conftest import grid_dataset, oblique_affine

import xarray_nifti


def _raise_on_compute(*args: object, **kwargs: object) -> None:
    raise AssertionError("something was computed")


def _image(data: np.ndarray, affine: np.ndarray) -> xr.DataArray:
    return xarray_nifti.from_nibabel(nib.Nifti1Image(data, affine)).data


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    order=st.sampled_from([0, 1, 3]),
    chunk=st.integers(4, 12),
)
def test_matches_nibabel_resample_from_to_on_oblique_grids(
    seed: int, order: int, chunk: int
) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(14, 12, 10)).astype("f4")
    source_affine = oblique_affine(seed)
    target_affine = oblique_affine(seed + 1)
    target_affine[:3, 3] = source_affine[:3, 3] + rng.uniform(-5, 5, 3)
    shape = (11, 13, 9)
    expected = resample_from_to(
        nib.Nifti1Image(data, source_affine), (shape, target_affine), order=order
    )
    out = _image(data, source_affine).nifti.resample_to(
        (target_affine, shape), order=order, chunks=(chunk, chunk, chunk)
    )
    tolerance = 1e-4 if order == 3 else 1e-5
    np.testing.assert_allclose(
        out.values, expected.get_fdata(), atol=tolerance * max(1, np.abs(data).max())
    )
    np.testing.assert_allclose(out.nifti.affine, target_affine)


def test_identity_resampling_returns_the_input_exactly() -> None:
    data = np.random.default_rng(0).normal(size=(9, 8, 7)).astype("f4")
    affine = oblique_affine(3)
    image = _image(data, affine)
    for order in (0, 1, 3):
        out = image.nifti.resample_to(image, order=order)
        np.testing.assert_allclose(out.values, data, rtol=0, atol=1e-5 if order == 3 else 0)


def test_result_is_lazy_and_on_the_target_grid() -> None:
    data = np.arange(8 * 9 * 10, dtype="f4").reshape(8, 9, 10)
    source = _image(data, oblique_affine(1)).chunk({"k": 3})
    target = _image(np.zeros((7, 6, 5), "f4"), oblique_affine(2))
    with dask.config.set(scheduler=_raise_on_compute):
        out = source.nifti.resample_to(target)
        combined = out + target  # passes the grid guard: same index
    assert combined.shape == (7, 6, 5)
    assert out.xindexes["x"].equals(target.xindexes["x"])
    with pytest.raises(ValueError, match="different voxel grids"):
        _ = out + source


def test_4d_resamples_every_volume_and_keeps_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    data = rng.normal(size=(10, 9, 8, 4)).astype("f4")
    affine = oblique_affine(7)
    path = tmp_path / "bold.nii.gz"
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.5
    nib.save(img, path)
    ds = xr.open_dataset(path, engine="nifti", chunks={})
    target = (oblique_affine(8), (6, 7, 5))
    out = ds.data.nifti.resample_to(target)
    assert out.dims == ("i", "j", "k", "time")
    np.testing.assert_allclose(out.time.values, [0, 2.5, 5, 7.5])
    assert out.attrs["repetition_time"] == 2.5
    for t in range(4):
        expected = resample_from_to(nib.Nifti1Image(data[..., t], affine), (target[1], target[0]))
        np.testing.assert_allclose(out.isel(time=t).values, expected.get_fdata(), atol=1e-5)


def test_fill_value_outside_the_source() -> None:
    image = _image(np.ones((5, 5, 5), "f4"), np.eye(4))
    far_away = np.eye(4)
    far_away[:3, 3] = 100
    out = image.nifti.resample_to((far_away, (4, 4, 4)), fill_value=-1)
    assert np.all(out.values == -1)


def test_against_spm_resampled_files(nibabel_data: Path) -> None:
    # The set-up of nibabel's own test_against_spm_resample: a rotated anatomical
    # image resampled into the first functional volume's grid by SPM12.
    anat = nib.load(nibabel_data / "anatomical.nii")
    extra = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])
    moved = nib.Nifti1Image(anat.get_fdata(), extra @ anat.affine, anat.header)
    spm = nib.load(nibabel_data / "resampled_anat_moved.nii")
    ours = xarray_nifti.from_nibabel(moved).data.nifti.resample_to(
        (spm.affine, spm.shape), order=1, fill_value=np.nan
    )
    # SPM and scipy differ within one voxel of the source's edge: mask those, as nibabel does.
    coords = apply_affine(
        npl.inv(moved.affine) @ spm.affine, np.indices(spm.shape).transpose(1, 2, 3, 0)
    )
    outside = np.any((coords < 0) | (coords - np.array(moved.shape) > -1), axis=-1)
    expected = np.where(outside, np.nan, np.asanyarray(spm.dataobj))
    got = ours.values
    both = ~np.isnan(expected) & ~np.isnan(got)
    assert both.sum() > 800  # most of the 17 x 21 x 3 functional grid
    # The moved affine goes through a float32 header field, which shifts sample
    # points by ~1e-6 voxel: at steep edges that is a 1e-4 relative difference.
    np.testing.assert_allclose(got[both], expected[both], rtol=1e-3, atol=1e-3)


def test_bad_target_and_order() -> None:
    image = _image(np.zeros((3, 3, 3), "f4"), np.eye(4))
    with pytest.raises(TypeError, match="target must be"):
        image.nifti.resample_to("nonsense")
    with pytest.raises(ValueError, match="order"):
        image.nifti.resample_to(image, order=7)
    singular = grid_dataset(np.diag([1.0, 0.0, 1.0, 1.0]), (3, 3, 3), chunks=None).data
    with pytest.raises(ValueError, match="singular"):
        singular.nifti.resample_to(image)
