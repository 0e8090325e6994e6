"""Stored dtype and scaling: written files read back as the values in memory, to within the
stored type's resolution. nibabel's ``nib.save`` with ``set_data_dtype`` is the oracle."""

from __future__ import annotations

from pathlib import Path

import dask
import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xarray_nifti import _scaling
from xarray_nifti._scaling import Storage, encode_block, scaling_for_range

INTEGER_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32"]


def write_both(values: np.ndarray, dtype: str, folder: Path) -> tuple[nib.Nifti1Image, ...]:
    """Our file (via a loaded dataset of ``values``) and nibabel's, both stored as ``dtype``."""
    source = nib.Nifti1Image(values, np.eye(4))
    nib.save(source, folder / "source.nii")
    with xr.open_dataset(folder / "source.nii", engine="nifti") as ds:
        ds.nifti.to_nifti(folder / "ours.nii", dtype=dtype)
    theirs = nib.Nifti1Image(values, np.eye(4))
    theirs.set_data_dtype(np.dtype(dtype))
    nib.save(theirs, folder / "theirs.nii")
    return nib.load(folder / "ours.nii"), nib.load(folder / "theirs.nii")


def resolution(img: nib.Nifti1Image) -> float:
    """Half a stored step: the largest error a correctly rounded value may have."""
    slope = float(img.dataobj.slope)
    return 0.5 * (abs(slope) if np.isfinite(slope) and slope != 0 else 1.0)


@st.composite
def value_arrays(draw: st.DrawFn) -> np.ndarray:
    low = draw(st.floats(-1e6, 1e6))
    span = 10 ** draw(st.floats(-3, 7))
    unit = draw(st.lists(st.floats(0, 1), min_size=2, max_size=24).map(lambda v: np.array(v, "f8")))
    values = (low + span * unit).astype(np.float32)
    return values.reshape(-1, 1, 1)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=value_arrays(), dtype=st.sampled_from(INTEGER_DTYPES))
def test_explicit_integer_dtype_is_as_precise_as_nibabel(
    values: np.ndarray, dtype: str, tmp_path: Path
) -> None:
    ours, theirs = write_both(values, dtype, tmp_path)
    assert ours.get_data_dtype() == np.dtype(dtype)
    expected = values.astype(np.float64)
    error = np.abs(ours.get_fdata() - expected).max()
    tiny = 1e-12 * np.abs(expected).max()
    assert error <= resolution(ours) * (1 + 1e-9) + tiny
    nib_error = np.abs(theirs.get_fdata() - expected).max()
    # As fine a resolution as nibabel's (within 1%), or better.
    assert error <= max(nib_error, resolution(theirs) * 1.01) + tiny


def test_reported_cases_int8_and_int16(tmp_path: Path) -> None:
    """int8 of a wide float range, int16 of a 0-2.4 map: scaled, not rounded and clipped."""
    rng = np.random.default_rng(0)
    wide = (rng.normal(0, 1000, (6, 5, 4))).astype(np.float32)
    ours, theirs = write_both(wide, "int8", tmp_path)
    error = np.abs(ours.get_fdata() - wide).max()
    assert error <= resolution(ours) * (1 + 1e-9)
    assert resolution(ours) <= resolution(theirs) * 1.01
    fraction = rng.uniform(0, 2.4, (6, 5, 4)).astype(np.float32)
    ours, _ = write_both(fraction, "int16", tmp_path)
    assert np.abs(ours.get_fdata() - fraction).max() <= 2.4 / 65535


def test_whole_numbers_that_fit_are_stored_unscaled(tmp_path: Path) -> None:
    values = np.arange(-60, 60, dtype=np.float32).reshape(4, 5, 6)
    ours, _ = write_both(values, "int8", tmp_path)
    assert np.isnan(ours.dataobj.slope) or ours.dataobj.slope == 1
    assert np.array_equal(np.asanyarray(ours.dataobj), values)


def test_nan_is_stored_as_zero_with_scaling(tmp_path: Path) -> None:
    values = np.linspace(5.0, 9.5, 24, dtype=np.float32).reshape(2, 3, 4)
    values[0, 0, 0] = np.nan
    ours, _ = write_both(values, "int16", tmp_path)
    back = ours.get_fdata()
    assert abs(back[0, 0, 0]) <= resolution(ours)
    assert np.nanmax(np.abs(back - values)) <= resolution(ours) * (1 + 1e-9)


@given(
    low=st.floats(-1e9, 1e9),
    span=st.floats(0, 1e9),
    dtype=st.sampled_from(INTEGER_DTYPES),
)
def test_scaling_for_range_keeps_the_range_inside_the_type(
    low: float, span: float, dtype: str
) -> None:
    high = low + span
    slope, inter = scaling_for_range(low, high, np.dtype(dtype))
    assert float(np.float32(slope)) == slope
    assert float(np.float32(inter)) == inter
    info = np.iinfo(dtype)
    for value in (low, high):
        stored = np.rint((value - inter) / slope)
        assert info.min <= stored <= info.max


# -- keeping the source's encoding ----------------------------------------------------------


@pytest.fixture
def scaled(tmp_path: Path) -> Path:
    raw = np.arange(-500, 500, dtype=np.int16).reshape(10, 10, 10)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.25, 10.0)
    nib.save(img, tmp_path / "scaled.nii")
    return tmp_path / "scaled.nii"


@pytest.mark.parametrize("chunks", [None, {}, "auto"])
def test_unchanged_lazy_data_is_recognised_without_reading(scaled: Path, chunks: object) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was computed")

    with xr.open_dataset(scaled, engine="nifti", chunks=chunks) as ds:
        selected = ds.data.isel(i=slice(None, None, -2)).nifti.to_canonical()
        with dask.config.set(scheduler=refuse):
            assert _scaling._unchanged_since_read(ds.data)
            assert _scaling._unchanged_since_read(selected)
        edited = ds.data.copy()
        edited -= 1
        assert not _scaling._unchanged_since_read(edited)


def test_lazy_data_of_another_file_is_not_taken_as_unchanged(scaled: Path, tmp_path: Path) -> None:
    """``.copy(data=...)`` with another file's lazy values keeps this file's encoding."""
    other = np.arange(1000, dtype=np.float32).reshape(10, 10, 10) / 7
    nib.save(nib.Nifti1Image(other, np.eye(4)), tmp_path / "other.nii")
    with (
        xr.open_dataset(scaled, engine="nifti") as ds,
        xr.open_dataset(tmp_path / "other.nii", engine="nifti") as ds_other,
    ):
        swapped = ds.data.copy(data=ds_other.data.variable._data)
        assert not _scaling._unchanged_since_read(swapped)
        swapped.nifti.to_nifti(tmp_path / "swapped.nii")
    out = nib.load(tmp_path / "swapped.nii")
    assert out.get_data_dtype() == np.float32
    assert np.array_equal(out.get_fdata(), other)


def test_loaded_values_on_the_grid_keep_the_encoding(scaled: Path, tmp_path: Path) -> None:
    with xr.open_dataset(scaled, engine="nifti") as ds:
        data = ds.data.load()
    data += 0.5  # two stored steps: still on the int16 grid of slope 0.25
    data.nifti.to_nifti(tmp_path / "shifted.nii")
    out = nib.load(tmp_path / "shifted.nii")
    assert out.get_data_dtype() == np.int16
    assert (float(out.dataobj.slope), float(out.dataobj.inter)) == (0.25, 10.0)
    assert np.array_equal(out.get_fdata(), data.values.astype(np.float64))


def test_explicit_source_dtype_of_unchanged_data_needs_no_scan(
    scaled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_scan(*args: object) -> None:
        raise AssertionError("the data was scanned before writing")

    monkeypatch.setattr(_scaling, "scan_blocks", no_scan)
    with xr.open_dataset(scaled, engine="nifti", chunks={}) as ds:
        ds.nifti.to_nifti(tmp_path / "same.nii", dtype="int16")
    out = nib.load(tmp_path / "same.nii")
    assert (float(out.dataobj.slope), float(out.dataobj.inter)) == (0.25, 10.0)
    assert np.array_equal(out.dataobj.get_unscaled(), nib.load(scaled).dataobj.get_unscaled())


def test_stored_values_cannot_be_narrowed_silently(scaled: Path, tmp_path: Path) -> None:
    """mask_and_scale=False data are stored values: int8 would clip them."""
    with xr.open_dataset(scaled, engine="nifti", mask_and_scale=False) as ds:
        with pytest.raises(TypeError, match="mask_and_scale=True"):
            ds.nifti.to_nifti(tmp_path / "narrow.nii", dtype="int8")
        ds.nifti.to_nifti(tmp_path / "wide.nii", dtype="float32")
    wide, source = nib.load(tmp_path / "wide.nii"), nib.load(scaled)
    assert np.array_equal(wide.get_fdata(), source.get_fdata())
    assert list(p.name for p in tmp_path.iterdir() if p.name.startswith("narrow")) == []


@pytest.mark.parametrize("chunks", [None, 2])
def test_float64_beyond_float32_fails_before_touching_the_target(
    chunks: int | None, tmp_path: Path
) -> None:
    from helpers import grid_dataset

    values = np.ones((4, 4, 4))
    values[3, 3, 3] = 1e39  # float32 would store inf
    ds = grid_dataset(np.eye(4), (4, 4, 4), data=values, chunks=chunks)
    target = tmp_path / "big.nii"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match=r"do not fit float32.*dtype='float64'"):
        ds.nifti.to_nifti(target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.nii"]
    ds.nifti.to_nifti(target, dtype="float64")
    assert nib.load(target).get_fdata()[3, 3, 3] == 1e39


def test_complex_data_is_not_stored_as_real_silently(tmp_path: Path) -> None:
    from helpers import grid_dataset

    values = np.full((2, 3, 4), 1 + 2j)
    ds = grid_dataset(np.eye(4), (2, 3, 4), data=values, chunks=None)
    with pytest.raises(TypeError, match="imaginary part"):
        ds.nifti.to_nifti(tmp_path / "real.nii", dtype="float32")
    ds.nifti.to_nifti(tmp_path / "complex.nii")
    assert np.array_equal(nib.load(tmp_path / "complex.nii").dataobj[...], values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["complex.nii"]


@pytest.mark.parametrize("order", ["C", "F", "strided"])
@pytest.mark.parametrize("rescale", [False, True])
def test_quantising_rounds_clips_and_maps_nan_like_float64_maths(order: str, rescale: bool) -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(0, 30_000, (9, 8, 7)).astype(np.float32)
    values.flat[:4] = [np.inf, -np.inf, np.nan, 1e30]
    if order == "F":
        values = np.asfortranarray(values)
    elif order == "strided":
        values = values[::2, :, ::3]
    slope, inter = (0.75, -12.5) if rescale else (None, None)
    storage = Storage(np.dtype(np.int16), slope, inter, rescale=rescale)
    got = encode_block(values, storage, np.dtype(">i2"))
    expected = values.astype(np.float64)
    if rescale:
        expected = (expected - inter) / slope
    zero = np.clip(np.rint(-inter / slope), -32768, 32767) if rescale else 0.0
    expected = np.where(np.isnan(expected), zero, np.clip(np.rint(expected), -32768, 32767))
    assert got.dtype == np.dtype(">i2")
    np.testing.assert_array_equal(got, expected.astype(np.int16))
    if order == "F":
        assert got.flags.f_contiguous  # the writer then needs no transposing copy
