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

import xarray_nifti
from helpers import grid_dataset, oblique_affine
from xarray_nifti import _resample_engine


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
    for order in (7, 1.5, 1.0, True):
        with pytest.raises(ValueError, match="order must be an integer"):
            image.nifti.resample_to(image, order=order)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fill_value must be a real number"):
        image.nifti.resample_to(image, fill_value="zero")  # type: ignore[arg-type]
    singular = grid_dataset(np.diag([1.0, 0.0, 1.0, 1.0]), (3, 3, 3), chunks=None).data
    with pytest.raises(ValueError, match="singular"):
        singular.nifti.resample_to(image)


def _scaled_file(tmp_path: Path, shape: tuple[int, ...] = (9, 8, 7, 3)) -> Path:
    rng = np.random.default_rng(11)
    img = nib.Nifti1Image(rng.integers(-300, 300, size=shape).astype("i2"), oblique_affine(4))
    img.header.set_slope_inter(0.5, 3.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    return path


def _oracle(path: Path, target: tuple[np.ndarray, tuple[int, ...]], order: int) -> np.ndarray:
    img = nib.load(path)
    data = img.get_fdata()
    volumes = [
        resample_from_to(
            nib.Nifti1Image(data[..., t], img.affine), (target[1], target[0]), order=order
        ).get_fdata()
        for t in range(data.shape[3])
    ]
    return np.stack(volumes, axis=-1)


@pytest.mark.parametrize("chunks", [None, {}])
@pytest.mark.parametrize("kind", ["Dataset", "DataArray"])
def test_same_kind_and_laziness_out_as_in(tmp_path: Path, kind: str, chunks: dict | None) -> None:
    path = _scaled_file(tmp_path)
    ds = xr.open_dataset(path, engine="nifti", chunks=chunks)
    obj = ds if kind == "Dataset" else ds.data
    target = (oblique_affine(9), (6, 5, 4))
    if chunks is None:
        out = obj.nifti.resample_to(target)
    else:
        with dask.config.set(scheduler=_raise_on_compute):
            out = obj.nifti.resample_to(target)
    assert type(out) is type(obj)
    result = out.data if kind == "Dataset" else out
    # dask in gives lazy dask out; the lazily indexed file (chunks=None) gives numpy
    assert isinstance(result.variable._data, np.ndarray) == (chunks is None)
    np.testing.assert_allclose(result.values, _oracle(path, target, 1), atol=1e-4)
    assert result.dims == ("i", "j", "k", "time")
    np.testing.assert_allclose(out.nifti.affine, target[0])


def test_in_memory_result_groups_without_compute() -> None:
    labels = _image(np.repeat(np.arange(4, dtype="i2"), 16).reshape(4, 4, 4), np.eye(4))
    moved = labels.nifti.resample_to((np.eye(4), (4, 4, 4)), order=0)
    assert moved.dtype == np.int16
    assert isinstance(moved.variable._data, np.ndarray)
    sizes = moved.groupby(moved.rename("label")).count()
    np.testing.assert_array_equal(sizes.values, [16, 16, 16, 16])


def test_dataset_resamples_every_grid_variable_and_keeps_the_others() -> None:
    data = np.random.default_rng(2).normal(size=(6, 5, 4, 2)).astype("f4")
    ds = xarray_nifti.from_nibabel(nib.Nifti1Image(data, oblique_affine(1)))
    ds["mask"] = ds.data.isel(time=0) > 0
    ds["motion"] = ("time", np.array([0.1, 0.2]))
    target = (oblique_affine(2), (5, 4, 3))
    out = ds.nifti.resample_to(target, order=0)
    assert set(out.data_vars) == {"data", "mask", "motion"}
    np.testing.assert_array_equal(out.motion.values, [0.1, 0.2])
    expected_mask = resample_from_to(
        nib.Nifti1Image((data[..., 0] > 0).astype("u1"), oblique_affine(1)),
        (target[1], target[0]),
        order=0,
    ).get_fdata()
    assert out.mask.dtype == bool
    np.testing.assert_array_equal(out.mask.values, expected_mask.astype(bool))
    only = ds.nifti.resample_to(target, var="data")
    assert set(only.data_vars) == {"data", "motion"}
    ds["plane"] = ds.data.isel(k=0, time=0)
    with pytest.raises(ValueError, match=r"'plane'.*drop it first"):
        ds.nifti.resample_to(target)


@pytest.mark.parametrize("chunks", [(8, 8, 8), 8, {"k": 2}, {"i": -1, "j": 3}, "auto"])
def test_chunks_forms_give_the_same_values(chunks: object) -> None:
    data = np.random.default_rng(3).normal(size=(10, 9, 8)).astype("f4")
    image = _image(data, oblique_affine(5))
    target = (oblique_affine(6), (9, 10, 7))
    expected = image.nifti.resample_to(target)
    out = image.nifti.resample_to(target, chunks=chunks)
    assert out.chunks is not None  # explicit chunks ask for a dask result
    np.testing.assert_allclose(out.values, expected.values, atol=1e-5)
    if chunks == {"k": 2}:
        assert out.chunks[2] == (2, 2, 2, 1)


@pytest.mark.parametrize(
    ("chunks", "error", "message"),
    [
        ((32, 32), ValueError, r"one size per spatial dim .* got 2"),
        ({"q": 3}, ValueError, r"dims \['q'\]"),
        ({"i": 0}, ValueError, "positive"),
        ("big", ValueError, "'auto'"),
        (2.5, TypeError, "chunks must be"),
        ({"i": 2.5}, TypeError, "must be an int"),
    ],
)
def test_bad_chunks_are_named(chunks: object, error: type, message: str) -> None:
    image = _image(np.zeros((4, 4, 4), "f4"), np.eye(4))
    with pytest.raises(error, match=message):
        image.nifti.resample_to(image, chunks=chunks)


def test_fill_value_that_integers_cannot_hold() -> None:
    labels = _image(np.ones((4, 4, 4), "i2"), np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 2  # half the target lies outside the source
    half = labels.nifti.resample_to((shifted, (4, 4, 4)), order=0, fill_value=0.5)
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half.values[:2], 1)
    np.testing.assert_array_equal(half.values[2:], 0.5)
    nan = labels.nifti.resample_to((shifted, (4, 4, 4)), order=0, fill_value=np.nan)
    assert nan.dtype == np.float32
    assert np.isnan(nan.values[2:]).all()
    kept = labels.nifti.resample_to((shifted, (4, 4, 4)), order=0, fill_value=-7)
    assert kept.dtype == np.int16
    assert np.all(kept.values[2:] == -7)
    with pytest.raises(ValueError, match=r"fill_value=1000000.0 does not fit .* int16"):
        labels.nifti.resample_to((shifted, (4, 4, 4)), order=0, fill_value=1e6)
    wide = _image(np.ones((4, 4, 4), "i4"), np.eye(4))
    assert wide.nifti.resample_to((shifted, (4, 4, 4)), order=0, fill_value=0.5).dtype == "f8"
    assert labels.nifti.resample_to((shifted, (4, 4, 4)), order=1).dtype == np.float32


def test_large_targets_are_split_into_blocks_that_read_only_their_region() -> None:
    data = np.random.default_rng(4).normal(size=(12, 11, 10)).astype("f4")
    image = _image(data, oblique_affine(12)).chunk({"k": 3})
    target = (oblique_affine(13), (13, 12, 11))
    for order in (0, 1, 3):
        out = image.nifti.resample_to(target, order=order, chunks=5)
        assert out.chunks == ((5, 5, 3), (5, 5, 2), (5, 5, 1))
        expected = resample_from_to(
            nib.Nifti1Image(data, oblique_affine(12)), (target[1], target[0]), order=order
        ).get_fdata()
        np.testing.assert_allclose(out.values, expected, atol=1e-4 if order == 3 else 1e-5)


def test_big_endian_and_axis_aligned_grids_match_nibabel(tmp_path: Path) -> None:
    data = np.arange(6 * 5 * 4, dtype=">i2").reshape(6, 5, 4)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    path = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(data, affine), path)
    ds = xr.open_dataset(path, engine="nifti")
    target = (np.diag([1.5, 1.5, 1.5, 1.0]), (7, 9, 10))
    for order in (0, 1):
        # nibabel keeps int16 for linear output: compare with float input
        as_float = nib.Nifti1Image(nib.load(path).get_fdata(), affine)
        expected = resample_from_to(as_float, (target[1], target[0]), order=order)
        out = ds.data.nifti.resample_to(target, order=order)
        np.testing.assert_allclose(out.values, expected.get_fdata(), atol=1e-4)


def test_a_large_source_is_read_in_bounded_blocks_even_for_a_small_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Scaled-down limits stand in for a source larger than memory.
    monkeypatch.setattr(_resample_engine, "_SINGLE_BLOCK_VOXELS", 1000)
    monkeypatch.setattr(_resample_engine, "_BLOCK_SIDE", 16)
    data = np.random.default_rng(6).normal(size=(20, 20, 20)).astype("f4")
    image = _image(data, np.eye(4)).chunk({"k": 5})
    target = (np.diag([2.0, 2.0, 2.0, 1.0]), (10, 10, 10))  # 1000 voxels: "small"
    out = image.nifti.resample_to(target)
    assert out.chunks == ((8, 2),) * 3  # 16 source voxels per block side at 2 mm steps
    expected = resample_from_to(nib.Nifti1Image(data, np.eye(4)), (target[1], target[0]))
    np.testing.assert_allclose(out.values, expected.get_fdata(), atol=1e-5)


def test_volumes_are_resampled_in_batches_not_one_task_each() -> None:
    data = np.random.default_rng(7).normal(size=(6, 5, 4, 12)).astype("f4")
    image = _image(data, oblique_affine(3)).chunk({"time": 1})
    target = (oblique_affine(4), (5, 6, 4))
    out = image.nifti.resample_to(target, order=1)
    assert out.chunks[3] == (12,)
    kept = image.nifti.resample_to(target, order=1, chunks={"time": 3})
    assert kept.chunks[3] == (3, 3, 3, 3)
    np.testing.assert_allclose(out.values, kept.values)
    for t in (0, 11):
        expected = resample_from_to(
            nib.Nifti1Image(data[..., t], oblique_affine(3)), (target[1], target[0])
        )
        np.testing.assert_allclose(out.values[..., t], expected.get_fdata(), atol=1e-5)
