"""``.nifti.to_nifti``: exact round trips, geometry after slicing, dtype rules, streaming,
atomicity and bad input. nibabel is the oracle: every output is read back with nibabel."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import distributed
import fsspec
import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nibabel.affines import apply_affine

from helpers import NIBABEL_DATA, nifti_differences, oblique_affine
from s3_server import s3_endpoint
from xarray_nifti import _slabs, writer

# Files in nibabel/tests/data that nibabel loads and engine="nifti" opens.
NIBABEL_FILES = [
    "anatomical.nii",
    "example4d.nii.gz",
    "example_nifti2.nii.gz",
    "functional.nii",
    "reoriented_anat_moved.nii",
    "resampled_anat_moved.nii",
    "standard.nii.gz",
]
# Headers without their image file: paired with generated data below.
NIBABEL_HEADERS = ["nifti1.hdr", "nifti2.hdr"]
OUTPUT_SUFFIXES = [".nii", ".nii.gz", ".hdr", ".img", ".img.gz", ".hdr.gz"]


def open_nifti(path: Path | str, **kwargs: object) -> xr.Dataset:
    return xr.open_dataset(path, engine="nifti", **kwargs)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


def assert_same(expected: object, actual: object) -> None:
    differences = nifti_differences(expected, actual)
    assert not differences, "\n".join(differences)


def image_pair_files(path: Path) -> list[Path]:
    name = path.name
    for suffix in (".hdr.gz", ".img.gz", ".hdr", ".img"):
        if name.endswith(suffix):
            gz = ".gz" if suffix.endswith(".gz") else ""
            stem = name[: -len(suffix)]
            return [path.with_name(stem + ".hdr" + gz), path.with_name(stem + ".img" + gz)]
    return [path]


# -- exact round trips -------------------------------------------------------------------------


def test_nibabel_file_list_is_complete() -> None:
    """Every NIfTI file nibabel ships (and loads with data) is in the round-trip list."""
    candidates = sorted(
        p.name
        for p in NIBABEL_DATA.iterdir()
        if p.name.endswith((".nii", ".nii.gz")) and "dconn" not in p.name
    )
    assert candidates == sorted(NIBABEL_FILES)


@pytest.mark.parametrize("suffix", OUTPUT_SUFFIXES)
@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_round_trip_nibabel_files(name: str, suffix: str, tmp_path: Path) -> None:
    source = NIBABEL_DATA / name
    out = tmp_path / f"out{suffix}"
    with open_nifti(source) as ds:
        written = ds.nifti.to_nifti(out)
    assert written == out
    assert_same(source, out)
    original, copy = nib.load(source), nib.load(out)
    assert np.array_equal(original.affine, copy.affine)
    assert original.header.get_zooms() == copy.header.get_zooms()
    for field in ("sform_code", "qform_code", "xyzt_units", "toffset", "intent_code", "dim_info"):
        assert copy.header[field] == original.header[field]
    assert bytes(copy.header["descrip"]) == bytes(original.header["descrip"])
    assert all(p.exists() for p in image_pair_files(out))
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("chunks", [None, {}])
def test_round_trip_lazy_and_chunked_equal(chunks: dict[str, int] | None, tmp_path: Path) -> None:
    source = NIBABEL_DATA / "example4d.nii.gz"
    with open_nifti(source, chunks=chunks) as ds:
        ds.nifti.to_nifti(tmp_path / "a.nii.gz")
    assert_same(source, tmp_path / "a.nii.gz")


@pytest.mark.parametrize("name", NIBABEL_HEADERS)
@pytest.mark.parametrize("suffix", [".nii", ".hdr", ".img.gz"])
def test_round_trip_nibabel_pair_headers(name: str, suffix: str, tmp_path: Path) -> None:
    """nibabel's pair headers, completed with generated image data."""
    header = tmp_path / name
    shutil.copy(NIBABEL_DATA / name, header)
    hdr = nib.load(header).header
    rng = np.random.default_rng(0)
    raw = rng.integers(-3000, 3000, size=hdr.get_data_shape(), dtype=np.int16)
    # nibabel reads nifti2.hdr's data after 544 bytes (its magic is the single-file "n+2").
    padding = b"\0" * int(nib.load(header).dataobj.offset)
    header.with_suffix(".img").write_bytes(padding + raw.astype(hdr.get_data_dtype()).tobytes("F"))
    out = tmp_path / f"out{suffix}"
    with open_nifti(header) as ds:
        ds.nifti.to_nifti(out)
    assert_same(header, out)
    assert np.array_equal(np.asanyarray(nib.load(out).dataobj), raw)


def test_round_trip_analyze_data_and_affine(tmp_path: Path) -> None:
    """Analyze 7.5 sources are written as NIfTI-1 with the same data and affine."""
    header = tmp_path / "analyze.hdr"
    shutil.copy(NIBABEL_DATA / "analyze.hdr", header)
    img = nib.load(header)
    raw = np.arange(np.prod(img.shape), dtype=np.uint8).reshape(img.shape, order="F")
    header.with_suffix(".img").write_bytes(raw.tobytes(order="F"))
    with open_nifti(header) as ds:
        ds.nifti.to_nifti(tmp_path / "out.nii")
    out = nib.load(tmp_path / "out.nii")
    assert isinstance(out, nib.Nifti1Image)
    assert out.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(out.dataobj.get_unscaled()), raw)
    assert np.array_equal(np.asanyarray(out.dataobj), np.asanyarray(img.dataobj))  # SPM scaling
    assert np.allclose(out.affine, img.affine, atol=1e-5)


def test_round_trip_extensions_and_header_fields(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    img = nib.Nifti1Image(data, oblique_affine(3))
    hdr = img.header
    img.set_sform(oblique_affine(3), code=4)
    img.set_qform(oblique_affine(3), code=3)
    hdr.set_xyzt_units("mm", "msec")
    hdr["pixdim"][4] = 1500.0
    hdr["toffset"] = 250.0
    hdr.set_intent("t test", (12.0,), name="tmap")
    hdr["descrip"] = b"round trip\x00tail bytes"
    hdr.set_dim_info(freq=0, phase=1, slice=2)
    hdr["slice_code"] = 3
    hdr["slice_start"], hdr["slice_end"], hdr["slice_duration"] = 0, 3, 0.25
    hdr["cal_min"], hdr["cal_max"] = 1.5, 99.0
    hdr.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment\x00\x00\x00"))
    hdr.extensions.append(nib.nifti1.Nifti1Extension(4, b"<AFNI_attributes/>"))
    nib.save(img, tmp_path / "in.nii.gz")
    with open_nifti(tmp_path / "in.nii.gz") as ds:
        assert ds.nifti.header["slice_code"] == 3
        ds.nifti.to_nifti(tmp_path / "out.nii.gz")
    assert_same(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz")


# -- hypothesis: generated images --------------------------------------------------------------


KINDS = ["int16_scaled", "uint8", "float32", "float64", "int32", "int16", "rgb"]


@st.composite
def nifti_images(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(KINDS))
    ndim = draw(st.integers(2, 5)) if kind != "rgb" else 3
    shape = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    return {
        "kind": kind,
        "shape": shape,
        "seed": draw(st.integers(0, 2**16)),
        "big": draw(st.booleans()),
        "version": draw(st.sampled_from([1, 2])),
        "codes": (draw(st.integers(0, 4)), draw(st.integers(0, 4))),
        "units": draw(st.sampled_from([("mm", "sec"), ("mm", "msec"), ("micron", "usec")])),
        "tr": draw(st.floats(0.0, 3000.0, width=32)),
        "source": draw(st.sampled_from([".nii", ".nii.gz", ".hdr", ".img.gz"])),
        "out": draw(st.sampled_from(OUTPUT_SUFFIXES)),
        "chunks": draw(st.sampled_from([None, {}])),
    }


def make_nifti(spec: dict[str, object], folder: Path) -> Path:
    rng = np.random.default_rng(int(spec["seed"]))  # type: ignore[call-overload]
    kind = spec["kind"]
    shape = spec["shape"]
    if kind == "int16_scaled":
        data = rng.normal(100.0, 40.0, size=shape)
        dtype: object = np.int16
    elif kind == "rgb":
        data = np.zeros(shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        for channel in "RGB":
            data[channel] = rng.integers(0, 256, size=shape)
        dtype = data.dtype
    elif kind in ("float32", "float64"):
        data = rng.normal(size=shape).astype(kind)
        data.flat[0] = np.nan
        dtype = kind
    else:
        info = np.iinfo(kind)
        data = rng.integers(info.min, info.max, size=shape, dtype=kind, endpoint=True)
        dtype = kind
    pair = spec["source"] in (".hdr", ".img.gz")
    image_class = {
        (1, False): nib.Nifti1Image,
        (1, True): nib.Nifti1Pair,
        (2, False): nib.Nifti2Image,
        (2, True): nib.Nifti2Pair,
    }[(spec["version"], pair)]
    header = image_class.header_class(endianness=">" if spec["big"] else "<")
    header.set_data_dtype(dtype)
    affine = oblique_affine(int(spec["seed"]))  # type: ignore[call-overload]
    img = image_class(data, affine, header)
    sform_code, qform_code = spec["codes"]  # type: ignore[misc]
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    img.header.set_xyzt_units(*spec["units"])  # type: ignore[misc]
    if len(shape) > 3:  # type: ignore[arg-type]
        img.header["pixdim"][4] = spec["tr"]
    path = folder / f"source{spec['source']}"
    nib.save(img, path)
    return path


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=nifti_images())
def test_round_trip_generated_images(spec: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = make_nifti(spec, folder)
        out = folder / f"copy{spec['out']}"
        with open_nifti(source, chunks=spec["chunks"]) as ds:
            ds.nifti.to_nifti(out)
        assert_same(source, out)
        assert no_temp_files(folder)


def test_scaled_int16_round_trip_is_exact(tmp_path: Path) -> None:
    raw = np.arange(-500, 500, dtype=np.int16).reshape(10, 10, 10)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.037, -12.5)
    nib.save(img, tmp_path / "scaled.nii")
    with open_nifti(tmp_path / "scaled.nii") as ds:
        assert ds.data.dtype == np.float32
        ds.nifti.to_nifti(tmp_path / "out.nii")
    with open_nifti(tmp_path / "scaled.nii", mask_and_scale=False) as ds:
        assert ds.data.dtype == np.int16
        ds.nifti.to_nifti(tmp_path / "raw.nii")
    for out in ("out.nii", "raw.nii"):
        assert_same(tmp_path / "scaled.nii", tmp_path / out)


# -- geometry after slicing and reorientation --------------------------------------------------


def voxel_grid(shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)


def assert_world_kept(
    written: np.ndarray, original: np.ndarray, original_indices: np.ndarray, atol: float = 1e-4
) -> None:
    """Voxel n of the written grid sits where voxel ``original_indices[n]`` was."""
    new = voxel_grid(original_indices.shape[:-1])
    error = np.abs(apply_affine(written, new) - apply_affine(original, original_indices)).max()
    assert error < atol, f"voxels moved by up to {error} mm"


SLICES = [
    (slice(None, None, -1), slice(None), slice(None)),
    (slice(100, 10, -3), slice(5, 80, 2), slice(None, None, -2)),
    (slice(3, None), slice(None, None, -1), slice(20, 2, -1)),
]


@pytest.mark.parametrize("key", SLICES)
def test_sliced_affine_keeps_world_positions(key: tuple[slice, ...], tmp_path: Path) -> None:
    source = NIBABEL_DATA / "example4d.nii.gz"
    original = nib.load(source)
    with open_nifti(source, chunks={}) as ds:
        sliced = ds.isel(i=key[0], j=key[1], k=key[2])
        sliced.nifti.to_nifti(tmp_path / "ours.nii")
    ours = nib.load(tmp_path / "ours.nii")
    indices = np.stack(
        np.meshgrid(
            *[np.arange(n)[k] for n, k in zip(original.shape[:3], key, strict=True)], indexing="ij"
        ),
        axis=-1,
    )
    assert ours.shape[:3] == indices.shape[:3]
    # Every voxel keeps its world position, through both forms; codes are kept.
    assert_world_kept(ours.affine, original.affine, indices)
    assert_world_kept(ours.header.get_qform(), original.header.get_qform(), indices)
    assert_world_kept(ours.header.get_sform(), original.header.get_sform(), indices)
    assert ours.header["sform_code"] == original.header["sform_code"] == 1
    assert ours.header["qform_code"] == original.header["qform_code"] == 1
    expected = np.asanyarray(original.dataobj)[key]
    assert np.array_equal(np.asanyarray(ours.dataobj), expected)


def test_nibabel_slicer_gets_negative_steps_and_codes_wrong(tmp_path: Path) -> None:
    """nibabel #1533 (negative steps move voxels) and #1427 (codes reset on save)."""
    source = NIBABEL_DATA / "example4d.nii.gz"
    original = nib.load(source)
    key = (slice(None, None, -1), slice(10, 50, 3), slice(20, 2, -2))
    indices = np.stack(
        np.meshgrid(
            *[np.arange(n)[k] for n, k in zip(original.shape[:3], key, strict=True)], indexing="ij"
        ),
        axis=-1,
    )
    nib.save(original.slicer[key], tmp_path / "nibabel.nii")
    theirs = nib.load(tmp_path / "nibabel.nii")
    with pytest.raises(AssertionError, match="voxels moved"):
        assert_world_kept(theirs.affine, original.affine, indices)
    assert (theirs.header["qform_code"], theirs.header["sform_code"]) == (0, 2)
    with open_nifti(source) as ds:
        ds.isel(i=key[0], j=key[1], k=key[2]).nifti.to_nifti(tmp_path / "ours.nii")
    ours = nib.load(tmp_path / "ours.nii")
    assert_world_kept(ours.affine, original.affine, indices)
    assert (ours.header["qform_code"], ours.header["sform_code"]) == (1, 1)


@pytest.mark.parametrize("codes", [(0, 1), (1, 1), (2, 4), (3, 0)])
def test_canonical_keeps_codes_unlike_nibabel(codes: tuple[int, int], tmp_path: Path) -> None:
    """as_closest_canonical + save resets the codes (nibabel #1427); ours keeps them."""
    affine = oblique_affine(7)
    affine[:3, :3] = affine[:3, :3] @ np.diag([-1, 1, -1])  # far from RAS
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=codes[0])
    img.set_qform(affine, code=codes[1])
    nib.save(img, tmp_path / "in.nii")
    original = nib.load(tmp_path / "in.nii")
    canonical = nib.as_closest_canonical(original)
    nib.save(canonical, tmp_path / "nibabel.nii")
    with open_nifti(tmp_path / "in.nii") as ds:
        ds.nifti.to_canonical().nifti.to_nifti(tmp_path / "ours.nii")
    ours, theirs = nib.load(tmp_path / "ours.nii"), nib.load(tmp_path / "nibabel.nii")
    assert nib.aff2axcodes(ours.affine) == ("R", "A", "S")
    assert np.allclose(ours.affine, canonical.affine, atol=1e-4)
    assert np.array_equal(np.asanyarray(ours.dataobj), np.asanyarray(canonical.dataobj))
    assert (ours.header["sform_code"], ours.header["qform_code"]) == codes
    if codes != (0, 0) and codes[1] != 0:
        assert (theirs.header["sform_code"], theirs.header["qform_code"]) != codes


def test_reorient_lps_keeps_world_positions_and_codes(tmp_path: Path) -> None:
    source = NIBABEL_DATA / "example4d.nii.gz"
    original = nib.load(source)
    with open_nifti(source, chunks={}) as ds:
        lps = ds.nifti.reorient("LPS")
        lps.nifti.to_nifti(tmp_path / "lps.nii.gz")
    out = nib.load(tmp_path / "lps.nii.gz")
    assert nib.aff2axcodes(out.affine) == ("L", "P", "S")
    assert (out.header["sform_code"], out.header["qform_code"]) == (1, 1)
    # Map every written voxel back to the original voxel with the same data.
    ornt = nib.orientations.ornt_transform(
        nib.io_orientation(original.affine), nib.orientations.axcodes2ornt("LPS")
    )
    expected = nib.orientations.apply_orientation(np.asanyarray(original.dataobj), ornt)
    assert np.array_equal(np.asanyarray(out.dataobj), expected)
    inverse = np.linalg.inv(original.affine)
    back = apply_affine(inverse @ out.affine, voxel_grid(out.shape[:3]))
    assert np.allclose(back, np.round(back), atol=1e-3)
    assert_world_kept(out.affine, original.affine, np.round(back).astype(int))


def test_transposed_and_dropped_axes(tmp_path: Path) -> None:
    source = NIBABEL_DATA / "example4d.nii.gz"
    original = nib.load(source)
    data = np.asanyarray(original.dataobj)
    with open_nifti(source) as ds:
        ds.data.transpose("time", "k", "i", "j").nifti.to_nifti(tmp_path / "t.nii")
        ds.isel(k=5).nifti.to_nifti(tmp_path / "k5.nii")
        ds.isel(k=5, time=1).nifti.to_nifti(tmp_path / "k5t1.nii")
    t = nib.load(tmp_path / "t.nii")
    assert t.shape == (24, 128, 96, 2)
    assert np.array_equal(np.asanyarray(t.dataobj), data.transpose(2, 0, 1, 3))
    assert_world_kept(
        t.affine, original.affine, voxel_grid((128, 96, 24))[:, :, :].transpose(2, 0, 1, 3)
    )
    k5 = nib.load(tmp_path / "k5.nii")
    assert k5.shape == (128, 96, 1, 2)
    assert np.array_equal(np.asanyarray(k5.dataobj)[:, :, 0], data[:, :, 5])
    assert_world_kept(k5.affine, original.affine, voxel_grid((128, 96, 1)) + np.array([0, 0, 5]))
    plane = nib.load(tmp_path / "k5t1.nii")
    assert plane.shape == (128, 96)
    assert np.allclose(
        plane.affine, original.affine @ [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]]
    )


def test_time_slicing_updates_tr_and_toffset(tmp_path: Path) -> None:
    data = np.zeros((2, 2, 2, 10), dtype=np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 2000.0
    img.header["toffset"] = 500.0
    nib.save(img, tmp_path / "in.nii")
    with open_nifti(tmp_path / "in.nii") as ds:
        ds.isel(time=slice(3, None, 2)).nifti.to_nifti(tmp_path / "out.nii")
        ds.isel(time=slice(4, 5)).nifti.to_nifti(tmp_path / "one.nii")
    out = nib.load(tmp_path / "out.nii").header
    assert out.get_xyzt_units() == ("mm", "msec")
    assert out.get_zooms()[3] == 4000.0
    assert out["toffset"] == 500.0 + 3 * 2000.0
    one = nib.load(tmp_path / "one.nii").header
    assert one.get_zooms()[3] == 2000.0
    assert one["toffset"] == 500.0 + 4 * 2000.0


def test_slice_timing_follows_the_slice_axis(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((4, 5, 6), dtype=np.int16), np.eye(4))
    img.header.set_dim_info(freq=0, phase=1, slice=2)
    img.header["slice_code"] = 1  # sequential increasing
    img.header["slice_start"], img.header["slice_end"] = 1, 4
    img.header["slice_duration"] = 0.1
    nib.save(img, tmp_path / "in.nii")
    with open_nifti(tmp_path / "in.nii") as ds:
        ds.isel(k=slice(None, None, -1)).nifti.to_nifti(tmp_path / "flipped.nii")
        ds.isel(k=slice(1, 4)).nifti.to_nifti(tmp_path / "cropped.nii")
        ds.data.transpose("k", "j", "i").nifti.to_nifti(tmp_path / "transposed.nii")
        ds.isel(i=slice(None, None, -1)).nifti.to_nifti(tmp_path / "other_axis.nii")
    flipped = nib.load(tmp_path / "flipped.nii").header
    assert flipped.get_dim_info() == (0, 1, 2)
    assert flipped.get_value_label("slice_code") == "sequential decreasing"
    assert (flipped["slice_start"], flipped["slice_end"]) == (1, 4)
    cropped = nib.load(tmp_path / "cropped.nii").header
    assert cropped["slice_code"] == 0
    assert cropped["slice_duration"] == 0
    transposed = nib.load(tmp_path / "transposed.nii").header
    assert transposed.get_dim_info() == (2, 1, 0)
    assert transposed["slice_code"] == 1
    assert nib.load(tmp_path / "other_axis.nii").header["slice_code"] == 1


# -- dtype rules -------------------------------------------------------------------------------


@pytest.fixture
def functional() -> xr.Dataset:
    with open_nifti(NIBABEL_DATA / "functional.nii") as ds:
        yield ds.load()


def test_float_results_are_stored_as_float32(functional: xr.Dataset, tmp_path: Path) -> None:
    mean = functional.data.astype(np.float64).mean("time")
    assert mean.dtype == np.float64
    mean.nifti.to_nifti(tmp_path / "mean.nii")
    assert nib.load(tmp_path / "mean.nii").get_data_dtype() == np.float32
    mean.nifti.to_nifti(tmp_path / "mean64.nii", dtype="float64")
    out = nib.load(tmp_path / "mean64.nii")
    assert out.get_data_dtype() == np.float64
    assert np.array_equal(out.get_fdata(), mean.values)


def test_integer_output_with_scale_factor(functional: xr.Dataset, tmp_path: Path) -> None:
    mean = functional.data.mean("time")
    mean.encoding.update(scale_factor=0.25, add_offset=100.0)
    mean.nifti.to_nifti(tmp_path / "scaled.nii", dtype="int16")
    out = nib.load(tmp_path / "scaled.nii")
    assert out.get_data_dtype() == np.int16
    assert (out.dataobj.slope, out.dataobj.inter) == (0.25, 100.0)
    raw = np.asanyarray(out.dataobj.get_unscaled())
    assert np.array_equal(raw, np.rint((mean.values.astype(np.float64) - 100.0) / 0.25))
    assert np.abs(out.get_fdata() - mean.values).max() <= 0.125 + 1e-6


def test_nan_in_integer_output_is_stored_as_zero(tmp_path: Path, make_image) -> None:
    path = make_image(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    with open_nifti(path) as ds:
        data = ds.data.load().where(ds.data > 5)
    data.nifti.to_nifti(tmp_path / "int.nii", dtype="int16")
    raw = np.asanyarray(nib.load(tmp_path / "int.nii").dataobj)
    assert raw.dtype == np.int16
    values = np.arange(24).reshape(2, 3, 4)
    assert np.array_equal(raw, np.where(values > 5, values, 0))


def test_explicit_integer_dtype_scales_out_of_range_values(tmp_path: Path, make_image) -> None:
    """Values outside an explicit integer dtype get a slope, not clipping (as nib.save)."""
    values = np.array([[[-1e6, 1.4], [2.6, 1e6]]], dtype=np.float32)
    with open_nifti(make_image(values)) as ds:
        ds.nifti.to_nifti(tmp_path / "u8.nii", dtype="uint8")
        ds.nifti.to_nifti(tmp_path / "i16.nii", dtype=np.int16)
    for name, dtype in (("u8.nii", np.uint8), ("i16.nii", np.int16)):
        out = nib.load(tmp_path / name)
        assert out.get_data_dtype() == dtype
        slope = float(out.dataobj.slope)
        assert np.abs(out.get_fdata() - values).max() <= slope / 2 * (1 + 1e-6)


def test_bool_is_stored_as_uint8(functional: xr.Dataset, tmp_path: Path) -> None:
    mask = functional.data.isel(time=0) > 1000
    mask.nifti.to_nifti(tmp_path / "mask.nii.gz")
    out = nib.load(tmp_path / "mask.nii.gz")
    assert out.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(out.dataobj), mask.values.astype(np.uint8))


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(object),
        lambda a: a.astype(str),
        lambda a: xr.full_like(a, np.datetime64("2020-01-01"), dtype="datetime64[ns]"),
        lambda a: a.astype("timedelta64[ns]"),
    ],
    ids=["object", "str", "datetime", "timedelta"],
)
def test_unsupported_dtypes(convert, functional: xr.Dataset, tmp_path: Path) -> None:
    target = tmp_path / "bad.nii"
    target.write_bytes(b"old")
    with pytest.raises(TypeError, match="NIfTI cannot store dtype"):
        convert(functional.data.isel(time=0)).nifti.to_nifti(target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nii"]


@pytest.mark.parametrize("dtype", ["float16", "U3", "bool"])
def test_unsupported_requested_dtype(dtype: str, functional: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="NIfTI cannot store"):
        functional.nifti.to_nifti(tmp_path / "bad.nii", dtype=dtype)
    assert list(tmp_path.iterdir()) == []


def test_rgb_round_trip(tmp_path: Path) -> None:
    rgb = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    rgb["R"], rgb["A"] = 7, np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    nib.save(nib.Nifti1Image(rgb, oblique_affine(1)), tmp_path / "rgb.nii")
    with open_nifti(tmp_path / "rgb.nii") as ds:
        assert ds.data.dims == ("i", "j", "k", "rgb")
        ds.nifti.to_nifti(tmp_path / "out.nii.gz")
    assert_same(tmp_path / "rgb.nii", tmp_path / "out.nii.gz")


# -- streaming ---------------------------------------------------------------------------------


class BlockLog:
    """Records the order of computed blocks and how many are alive at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.order: list[tuple[int, ...]] = []
        self.live = 0
        self.max_live = 0

    def _release(self) -> None:
        with self.lock:
            self.live -= 1

    def make(self, block_info: dict | None = None) -> np.ndarray:
        import weakref

        info = block_info[None]
        shape = info["chunk-shape"]
        location = tuple(info["chunk-location"])
        block = np.full(shape, location[-1], dtype=np.int16)
        with self.lock:
            self.order.append(location)
            self.live += 1
            self.max_live = max(self.max_live, self.live)
        weakref.finalize(block, self._release)
        return block


def lazy_dataset(array: da.Array, affine: np.ndarray | None = None) -> xr.DataArray:
    """A DataArray on a NIfTI grid with dask data (via from_nibabel of a tiny header image)."""
    from xarray_nifti.interchange import from_nibabel

    shape = array.shape
    template = from_nibabel(nib.Nifti1Image(np.zeros(shape[:3], np.int16), affine or np.eye(4)))
    coords = {name: template.coords[name] for name in ("x", "y", "z")}
    dims = ("i", "j", "k", "time", "u")[: array.ndim]
    return xr.DataArray(array, dims=dims, coords=xr.Coordinates(coords, indexes=template.xindexes))


def test_streaming_pulls_chunks_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = (32, 32, 16)
    volume_bytes = int(np.prod(volume)) * 4
    monkeypatch.setattr(_slabs, "SLAB_BYTES", 2 * volume_bytes)
    log = BlockLog()
    template = da.zeros((*volume, 40), chunks=(*volume, 1), dtype=np.int16)
    lazy = da.map_blocks(lambda x, block_info=None: log.make(block_info), template, dtype=np.int16)
    lazy_dataset(lazy).nifti.to_nifti(tmp_path / "stream.nii")
    times = [location[3] for location in log.order]
    assert sorted(times) == list(range(40))
    # Pulled in file order, a slab (two volumes) at a time, one slab ahead.
    assert all(t <= n + 4 for n, t in enumerate(times))
    assert log.max_live <= 6
    out = np.asanyarray(nib.load(tmp_path / "stream.nii").dataobj)
    assert np.array_equal(out[0, 0, 0], np.arange(40))


def test_streaming_time_series_chunks_write_positionally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks holding whole time series (not in file order) are computed once each."""
    monkeypatch.setattr(_slabs, "SLAB_BYTES", 32 * 32 * 4 * 4)
    log = BlockLog()
    template = da.zeros((32, 32, 16, 12), chunks=(32, 32, 2, -1), dtype=np.int16)

    def make(x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        block = log.make(block_info)
        k0 = block_info[None]["array-location"][2][0]
        k = np.arange(k0, k0 + x.shape[2])[None, None, :, None]
        t = np.arange(12)[None, None, None, :]
        return (block * 0 + k * 100 + t).astype(np.int16)

    lazy = lazy_dataset(da.map_blocks(make, template, dtype=np.int16))
    for name in ("pos.nii", "pos.nii.gz", "pos.img"):
        log.order.clear()
        lazy.nifti.to_nifti(tmp_path / name)
        assert sorted(log.order) == [(0, 0, k, 0) for k in range(8)]  # each chunk once
        out = np.asanyarray(nib.load(tmp_path / name).dataobj)
        assert np.array_equal(
            out, np.broadcast_to(np.arange(16)[:, None] * 100 + np.arange(12), (32, 32, 16, 12))
        )
        assert no_temp_files(tmp_path)
    assert log.max_live <= 8


def test_gzip_output_goes_through_a_streaming_compressor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from isal import igzip

    monkeypatch.setattr(_slabs, "SLAB_BYTES", 32 * 32 * 16 * 4)
    sizes: list[int] = []
    original = igzip.IGzipFile.write

    def record(self, data):  # type: ignore[no-untyped-def]
        sizes.append(len(memoryview(data).cast("B")))
        return original(self, data)

    monkeypatch.setattr(igzip.IGzipFile, "write", record)
    lazy = lazy_dataset(da.ones((32, 32, 16, 20), chunks=(32, 32, 16, 1), dtype=np.int16))
    lazy.nifti.to_nifti(tmp_path / "z.nii.gz")
    data_writes = [s for s in sizes if s > 1000]
    assert len(data_writes) >= 10
    assert max(data_writes) <= 32 * 32 * 16 * 2 * 2
    assert np.asanyarray(nib.load(tmp_path / "z.nii.gz").dataobj).sum() == 32 * 32 * 16 * 20


PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    import dask.array as da, numpy as np, xarray as xr, nibabel as nib
    import xarray_nifti
    from xarray_nifti.interchange import from_nibabel

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    shape = (128, 128, 64, 200)  # 400 MiB of int16, one volume per chunk
    def volume(block_info=None):
        t = block_info[None]["chunk-location"][3]
        return np.full(block_info[None]["chunk-shape"], t, dtype=np.int16)

    chunks = tuple((n,) for n in shape[:3]) + ((1,) * shape[3],)
    data = da.map_blocks(volume, chunks=chunks, dtype=np.int16, meta=np.empty((0,) * 4, np.int16))
    template = from_nibabel(nib.Nifti1Image(np.zeros(shape[:3], np.int16), np.eye(4)))
    array = xr.DataArray(data, dims=("i", "j", "k", "time"), coords=template.coords)
    before = status("VmRSS")
    array.nifti.to_nifti(sys.argv[1])
    print(status("VmHWM") - before, data.nbytes)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_streaming_peak_memory_subprocess(tmp_path: Path) -> None:
    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "big.nii")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DASK_NUM_WORKERS": "2"},
    )
    growth, size = map(int, result.stdout.split())
    print(f"peak RSS growth {growth / 2**20:.0f} MiB writing {size / 2**20:.0f} MiB")
    assert (tmp_path / "big.nii").stat().st_size == size + 352
    assert growth < size / 2, (
        f"peak RSS grew by {growth / 2**20:.0f} MiB for {size / 2**20:.0f} MiB"
    )


# -- atomic writes and failure injection -------------------------------------------------------


@pytest.fixture
def old_target(tmp_path: Path) -> Path:
    target = tmp_path / "target.nii.gz"
    target.write_bytes(b"previous content")
    return target


def failing_dataset(fail_on: int, error: BaseException) -> xr.DataArray:
    def make(x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info[None]["chunk-location"][3] == fail_on:
            raise error
        return x + 1

    template = da.zeros((8, 8, 4, 10), chunks=(8, 8, 4, 1), dtype=np.float32)
    return lazy_dataset(da.map_blocks(make, template, dtype=np.float32))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".hdr"])
def test_exception_in_a_dask_task_leaves_nothing(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_slabs, "SLAB_BYTES", 8 * 8 * 4 * 4)
    target = tmp_path / f"target{suffix}"
    for existing in image_pair_files(target):
        existing.write_bytes(b"previous content")
    with pytest.raises(RuntimeError, match="block 3 failed"):
        failing_dataset(3, RuntimeError("block 3 failed")).nifti.to_nifti(target)
    for existing in image_pair_files(target):
        assert existing.read_bytes() == b"previous content"
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".img.gz"])
def test_write_failure_leaves_target_untouched(
    error: BaseException, suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_slabs, "SLAB_BYTES", 8 * 8 * 4 * 4)
    target = tmp_path / f"target{suffix}"
    for existing in image_pair_files(target):
        existing.write_bytes(b"previous content")
    calls = []
    original = writer._write_block

    def flaky(fileobj, block):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise error
        original(fileobj, block)

    monkeypatch.setattr(writer, "_write_block", flaky)
    with pytest.raises(type(error)):
        failing_dataset(-1, RuntimeError()).nifti.to_nifti(target)
    for existing in image_pair_files(target):
        assert existing.read_bytes() == b"previous content"
    assert no_temp_files(tmp_path)


def test_enospc_from_the_file_system_layer(
    old_target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure comes from the temp file's own ``write``, mid-way through the data."""
    real = tempfile.NamedTemporaryFile
    written = [0]

    def limited(*args, **kwargs):  # type: ignore[no-untyped-def]
        handle = real(*args, **kwargs)
        raw_write = handle.file.write

        def write(data):  # type: ignore[no-untyped-def]
            written[0] += len(memoryview(data).cast("B"))
            if written[0] > 20000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return raw_write(data)

        handle.file.write = write
        return handle

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", limited)
    data = lazy_dataset(da.random.random((40, 40, 20, 3), chunks=(40, 40, 20, 1)))
    with pytest.raises(OSError, match="No space left"):
        data.nifti.to_nifti(old_target)
    assert old_target.read_bytes() == b"previous content"
    assert no_temp_files(old_target.parent)


def test_refuses_to_overwrite_its_own_lazy_source(tmp_path: Path) -> None:
    source = tmp_path / "func.nii"
    shutil.copy(NIBABEL_DATA / "functional.nii", source)
    before = source.read_bytes()
    for chunks in (None, {}):
        ds = open_nifti(source, chunks=chunks)
        with pytest.raises(ValueError, match=r"reads from.*\.load\(\)"):
            ds.nifti.to_nifti(source)
        if chunks is not None:
            with pytest.raises(ValueError, match="reads from"):
                (ds.data * 2).nifti.to_nifti(source)  # derived: found through the dask graph
        assert source.read_bytes() == before
        ds.close()
    ds = open_nifti(source).load()
    (ds.data * 2).nifti.to_nifti(source)  # loaded: safe
    expected = 2 * nib.load(NIBABEL_DATA / "functional.nii").get_fdata()
    assert np.allclose(nib.load(source).get_fdata(), expected, rtol=1e-6)
    assert no_temp_files(tmp_path)


def test_refuses_to_overwrite_a_pair_source(tmp_path: Path) -> None:
    with open_nifti(NIBABEL_DATA / "anatomical.nii") as ds:
        ds.nifti.to_nifti(tmp_path / "pair.hdr")
    with open_nifti(tmp_path / "pair.hdr") as ds, pytest.raises(ValueError, match="reads from"):
        ds.nifti.to_nifti(tmp_path / "pair.img")


def test_overwrite_keeps_the_file_mode(tmp_path: Path, functional: xr.Dataset) -> None:
    target = tmp_path / "f.nii"
    target.write_bytes(b"old")
    target.chmod(0o640)
    functional.nifti.to_nifti(target)
    assert target.stat().st_mode & 0o777 == 0o640
    functional.nifti.to_nifti(tmp_path / "new.nii")
    assert (tmp_path / "new.nii").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- bad input ---------------------------------------------------------------------------------


def test_unsupported_suffix(functional: xr.Dataset, tmp_path: Path) -> None:
    for name in ("out.nc", "out.mgz", "out.gz", ".nii", "out.nii.bz2"):
        with pytest.raises(ValueError, match="unsupported suffix"):
            functional.nifti.to_nifti(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_several_variables_need_var(functional: xr.Dataset, tmp_path: Path) -> None:
    ds = functional.assign(mean=functional.data.mean("time"))
    with pytest.raises(ValueError, match=r"2 data variables \['data', 'mean'\].*var="):
        ds.nifti.to_nifti(tmp_path / "out.nii")
    with pytest.raises(KeyError, match="no data variable 'nope'"):
        ds.nifti.to_nifti(tmp_path / "out.nii", var="nope")
    assert list(tmp_path.iterdir()) == []
    ds.nifti.to_nifti(tmp_path / "mean.nii", var="mean")
    assert nib.load(tmp_path / "mean.nii").shape == (17, 21, 3)


def test_object_without_grid(tmp_path: Path) -> None:
    plain = xr.DataArray(np.zeros((2, 3, 4)), dims=("i", "j", "k"))
    with pytest.raises(ValueError, match="no NIfTI voxel grid"):
        plain.nifti.to_nifti(tmp_path / "out.nii")
    assert list(tmp_path.iterdir()) == []


def test_dims_not_mappable(functional: xr.Dataset, tmp_path: Path) -> None:
    subjects = xr.concat([functional.data, functional.data], dim="subject")
    with pytest.raises(ValueError, match=r"cannot map dims \['subject'\]"):
        subjects.nifti.to_nifti(tmp_path / "out.nii")
    eight = functional.data.expand_dims(u=1, v=1, w=1, extra=1)
    with pytest.raises(ValueError, match="extra"):
        eight.nifti.to_nifti(tmp_path / "out.nii")
    assert list(tmp_path.iterdir()) == []
    seven = functional.data.expand_dims(u=2, v=1, w=3).transpose("i", "j", "k", "time", ...)
    seven.nifti.to_nifti(tmp_path / "seven.nii")
    assert nib.load(tmp_path / "seven.nii").shape == (17, 21, 3, 20, 2, 1, 3)


def test_missing_directory(functional: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        functional.nifti.to_nifti(tmp_path / "nope" / "out.nii")
    assert list(tmp_path.iterdir()) == []


def test_no_write_permission(functional: xr.Dataset, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: inject the refusal instead

            def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
                raise PermissionError(errno.EACCES, "Permission denied", str(folder))

            monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
        with pytest.raises(PermissionError, match="no permission to write"):
            functional.nifti.to_nifti(folder / "out.nii")
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


def test_bad_version_and_compresslevel(functional: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        functional.nifti.to_nifti(tmp_path / "out.nii", version=3)
    with pytest.raises(ValueError, match="compresslevel"):
        functional.nifti.to_nifti(tmp_path / "out.nii.gz", compresslevel=12)
    assert list(tmp_path.iterdir()) == []


def test_version_2_and_compresslevels(functional: xr.Dataset, tmp_path: Path) -> None:
    functional.nifti.to_nifti(tmp_path / "v2.nii", version=2)
    assert isinstance(nib.load(tmp_path / "v2.nii"), nib.Nifti2Image)
    sizes = {}
    for level in (0, 1, 6, 9):
        functional.nifti.to_nifti(tmp_path / f"l{level}.nii.gz", compresslevel=level)
        assert_same(NIBABEL_DATA / "functional.nii", tmp_path / f"l{level}.nii.gz")
        sizes[level] = (tmp_path / f"l{level}.nii.gz").stat().st_size
    assert sizes[0] > max(sizes[1], sizes[6], sizes[9])


def test_distributed_client(tmp_path: Path) -> None:
    with (
        distributed.Client(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
        ),
        open_nifti(NIBABEL_DATA / "example4d.nii.gz", chunks={}) as ds,
    ):
        ds.nifti.to_nifti(tmp_path / "d.nii.gz")
    assert_same(NIBABEL_DATA / "example4d.nii.gz", tmp_path / "d.nii.gz")


def test_dask_scheduler_single_threaded(tmp_path: Path) -> None:
    with (
        dask.config.set(scheduler="synchronous"),
        open_nifti(NIBABEL_DATA / "functional.nii", chunks={}) as ds,
    ):
        ds.nifti.to_nifti(tmp_path / "s.nii")
    assert_same(NIBABEL_DATA / "functional.nii", tmp_path / "s.nii")


def test_large_dims_need_nifti2(tmp_path: Path) -> None:
    data = np.arange(40000 * 2, dtype=np.int32).reshape(40000, 2, 1)
    nib.save(nib.Nifti2Image(data, np.eye(4)), tmp_path / "long.nii")
    with open_nifti(tmp_path / "long.nii") as ds:
        array = ds.data.load()
    array.encoding.pop("format")
    with pytest.raises(ValueError, match="NIfTI-1 dims are at most 32767"):
        array.nifti.to_nifti(tmp_path / "v1.nii", version=1)
    array.nifti.to_nifti(tmp_path / "auto.nii")
    assert isinstance(nib.load(tmp_path / "auto.nii"), nib.Nifti2Image)
    # int32 values beyond int16 are scaled into its range, as nib.save does.
    array.nifti.to_nifti(tmp_path / "i16.nii", dtype="int16")
    out = nib.load(tmp_path / "i16.nii")
    assert np.abs(out.get_fdata() - data).max() <= float(out.dataobj.slope) / 2 + 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.nii", "i16.nii", "long.nii"]


@pytest.mark.filterwarnings("ignore:The specified chunks separate:UserWarning")
@pytest.mark.parametrize(
    "chunks",
    [{"i": 50}, {"time": -1, "k": 5}, {"i": 30, "j": 40, "k": 7, "time": 1}, {"time": -1, "i": 17}],
)
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_any_chunking_is_exact(
    chunks: dict[str, int], suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks split along fast axes, or whole time series per chunk, with small slabs."""
    monkeypatch.setattr(_slabs, "SLAB_BYTES", 200_000)
    source = NIBABEL_DATA / "example4d.nii.gz"
    with open_nifti(source, chunks=chunks) as ds:
        ds.nifti.to_nifti(tmp_path / f"out{suffix}")
    assert_same(source, tmp_path / f"out{suffix}")
    assert no_temp_files(tmp_path)


# -- edited data is never stored with a stale scaling --------------------------------------------


@pytest.fixture
def scaled_bold(tmp_path: Path) -> Path:
    """int16 with scl_slope 0.25 (values up to 8191.75), as many scanners write them."""
    rng = np.random.default_rng(3)
    raw = rng.integers(-2000, 32767, (8, 7, 6, 5)).astype(np.int16)
    img = nib.Nifti1Image(raw, oblique_affine(3))
    img.header.set_slope_inter(0.25, 0.0)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    nib.save(img, tmp_path / "scaled_bold.nii.gz")
    return tmp_path / "scaled_bold.nii.gz"


def _in_place_scale(data: xr.DataArray) -> xr.DataArray:
    data *= 100
    return data


def _in_place_zscore(data: xr.DataArray) -> xr.DataArray:
    mean, std = data.mean("time"), data.std("time")
    data -= mean
    data /= std
    return data


def _assign_values(data: xr.DataArray) -> xr.DataArray:
    data = data.load()
    data.values[...] = np.sqrt(np.abs(data.values))
    return data


def _copy_with_data(data: xr.DataArray) -> xr.DataArray:
    return data.copy(data=np.asarray(data.values) / 3.0)


EDITS = {
    "imul": _in_place_scale,
    "zscore": _in_place_zscore,
    "values": _assign_values,
    "copy_data": _copy_with_data,
}


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("chunks", [None, {}, "auto"])
def test_edited_scaled_data_is_saved_as_it_is_in_memory(
    scaled_bold: Path, edit: str, chunks: object, tmp_path: Path
) -> None:
    with open_nifti(scaled_bold, chunks=chunks) as ds:
        data = ds.data.copy()
        edited = EDITS[edit](data)
        assert edited.encoding.get("scale_factor") == 0.25  # the stale encoding is still there
        expected = edited.values
        edited.nifti.to_nifti(tmp_path / "edited.nii")
        edited.to_dataset(name="data").nifti.to_nifti(tmp_path / "edited_ds.nii.gz")
    for name in ("edited.nii", "edited_ds.nii.gz"):
        out = nib.load(tmp_path / name)
        assert out.get_data_dtype() == np.float32
        assert np.allclose(out.get_fdata(), expected, rtol=1e-6, atol=0, equal_nan=True)


def test_unchanged_scaled_data_keeps_its_encoding_bit_for_bit(
    scaled_bold: Path, tmp_path: Path
) -> None:
    for chunks in (None, {}):
        with open_nifti(scaled_bold, chunks=chunks) as ds:
            ds.nifti.to_nifti(tmp_path / "same.nii.gz")
            ds.data.load().nifti.to_nifti(tmp_path / "loaded.nii")
        assert_same(scaled_bold, tmp_path / "same.nii.gz")
        assert_same(scaled_bold, tmp_path / "loaded.nii")


def test_unchanged_lazy_data_is_read_once(
    scaled_bold: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keeping the source's scaling for unchanged lazy data needs no pass over the values."""
    from xarray_nifti import _scaling

    def no_scan(*args: object) -> None:
        raise AssertionError("the data was scanned before writing")

    monkeypatch.setattr(_scaling, "scan_blocks", no_scan)
    for chunks in (None, {}):
        with open_nifti(scaled_bold, chunks=chunks) as ds:
            ds.isel(time=slice(1, 4)).nifti.to_canonical().nifti.to_nifti(tmp_path / "once.nii")
        assert nib.load(tmp_path / "once.nii").get_data_dtype() == np.int16


# -- time axis --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "select",
    [lambda ds: ds.isel(time=[2, 0, 4]), lambda ds: ds.isel(time=[0, 1, 3, 4])],
    ids=["reordered", "scrubbed"],
)
def test_uneven_time_axis_warns_and_zooms_agree(
    scaled_bold: Path, select: object, tmp_path: Path
) -> None:
    from xarray_nifti import NiftiTimeAxisWarning

    with open_nifti(scaled_bold) as ds:
        selected = select(ds)  # type: ignore[operator]
        with pytest.warns(NiftiTimeAxisWarning, match="not evenly spaced"):
            selected.nifti.to_nifti(tmp_path / "uneven.nii")
        zooms = selected.nifti.zooms
    written = nib.load(tmp_path / "uneven.nii").header.get_zooms()
    assert written[3] == 2.0  # the acquisition TR, not the first gap
    assert zooms[3] == written[3]


def test_even_time_selection_does_not_warn(scaled_bold: Path, tmp_path: Path) -> None:
    import warnings

    with open_nifti(scaled_bold) as ds, warnings.catch_warnings():
        warnings.simplefilter("error")
        every_other = ds.isel(time=slice(1, None, 2))
        every_other.nifti.to_nifti(tmp_path / "even.nii")
        assert every_other.nifti.zooms[3] == 4.0
    assert nib.load(tmp_path / "even.nii").header.get_zooms()[3] == 4.0


# -- empty selections -------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [None, {}])
def test_empty_selection_is_refused_before_writing(
    functional: xr.Dataset, chunks: object, tmp_path: Path
) -> None:
    data = functional.data if chunks is None else functional.data.chunk()
    empty = data.isel(k=slice(-2, 1, -3)) if data.sizes["k"] == 3 else data.isel(k=slice(0, 0))
    assert empty.sizes["k"] == 0
    target = tmp_path / "empty.nii.gz"
    with pytest.raises(ValueError, match="dim 'k' has size 0"):
        empty.nifti.to_nifti(target)
    assert list(tmp_path.iterdir()) == []


def test_empty_selection_of_three_slices(tmp_path: Path, make_image) -> None:
    path = make_image(np.ones((4, 4, 3), dtype=np.float32))
    with open_nifti(path) as ds:
        empty = ds.isel(k=slice(-2, 1, -3))
        assert empty.sizes["k"] == 0
        with pytest.raises(ValueError, match="dim 'k' has size 0"):
            empty.nifti.to_nifti(tmp_path / "out.nii")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii"]


# -- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".img"])
def test_memory_url_output(suffix: str, tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    url = f"memory://writer-test/sub/out{suffix}"
    source = NIBABEL_DATA / "example4d.nii.gz"
    with open_nifti(source, chunks={}) as ds:
        assert ds.nifti.to_nifti(url) == url
    for remote in writer.output_paths("/writer-test/sub/out" + suffix):
        local = tmp_path / remote.rsplit("/", 1)[-1]
        local.write_bytes(fs.cat_file(remote))
    assert_same(source, tmp_path / f"out{suffix}")
    fs.rm("/writer-test", recursive=True)


def test_url_write_failure_leaves_no_object(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    data = failing_dataset(2, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        data.nifti.to_nifti("memory://writer-fail/out.nii.gz")
    assert not fs.exists("/writer-fail/out.nii.gz")


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[dict[str, Any]]:
    """A moto S3 server on 127.0.0.1 with one bucket; yields s3fs ``storage_options``."""
    with s3_endpoint("written") as endpoint:
        yield endpoint.options


@pytest.mark.parametrize("suffix", [".nii.gz", ".hdr"])
def test_s3_url_output_round_trips(moto_s3: dict[str, object], suffix: str) -> None:
    source = NIBABEL_DATA / "example4d.nii.gz"
    url = f"s3://written/sub-01/bold{suffix}"
    with open_nifti(source, chunks={}) as ds:
        ds.nifti.to_nifti(url, storage_options=moto_s3)
    with (
        xr.open_dataset(url, engine="nifti", storage_options=moto_s3) as back,
        open_nifti(source) as original,
    ):
        assert back.data.dtype == original.data.dtype
        assert np.array_equal(back.data.values, original.data.values)
        assert np.allclose(back.nifti.affine, original.nifti.affine)


def test_url_with_bad_suffix_is_refused_before_connecting(functional: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="unsupported suffix"):
        functional.nifti.to_nifti("s3://nowhere/out.txt")


def test_refuses_to_overwrite_its_own_lazy_url_source() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/writer-self/bold.nii", (NIBABEL_DATA / "functional.nii").read_bytes())
    url = "memory://writer-self/bold.nii"
    with open_nifti(url, chunks={}) as ds:
        with pytest.raises(ValueError, match="refusing to overwrite the file"):
            ds.nifti.to_nifti(url)
        assert (
            fs.cat_file("/writer-self/bold.nii") == (NIBABEL_DATA / "functional.nii").read_bytes()
        )
    fs.rm("/writer-self", recursive=True)


# -- file order: slabs of lazily read data and pieces of permuted blocks ------------------------
@pytest.mark.parametrize("flips", [(), (0,), (1, 2), (0, 1, 2)])
@pytest.mark.parametrize("permutation", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (2, 1, 0), (2, 0, 1)])
def test_blocks_are_written_in_file_order_piece_by_piece(
    permutation: tuple[int, ...], flips: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A permuted, flipped view (a reoriented block) written in pieces is its Fortran bytes."""
    import io

    # Three 7 x 5 planes per piece when the last axis is the 11-long one, else one plane.
    monkeypatch.setattr(writer, "_WRITE_PIECE_BYTES", 7 * 5 * 3 * 2)
    base = np.arange(7 * 5 * 11, dtype=np.int16).reshape(7, 5, 11, order="F")
    block = base.transpose(permutation)
    for axis in flips:
        block = np.flip(block, axis)
    buffer = io.BytesIO()
    writes: list[int] = []
    original = buffer.write

    def record(data: Any) -> int:
        writes.append(len(memoryview(data).cast("B")))
        return original(data)

    monkeypatch.setattr(buffer, "write", record)
    writer._write_block(buffer, block)
    assert buffer.getvalue() == block.tobytes(order="F")
    if block.flags.f_contiguous or block.flags.c_contiguous:
        assert len(writes) == 1  # written as it is, or by the whole-block tiled transpose
    else:
        assert len(writes) > 1  # a view: copied and written a piece at a time
    assert sum(writes) == block.nbytes


def _edge_blocks() -> dict[str, np.ndarray]:
    cube = np.arange(6 * 5 * 9, dtype=">i2").reshape(6, 5, 9)
    records = np.zeros((6, 5, 9), dtype=[("r", "u1"), ("g", "u1"), ("b", "u1")])
    records["r"] = np.arange(records.size).reshape(records.shape) % 251
    records["b"] = 7
    return {
        "0-D": np.array(3.5),
        "1-D strided": np.arange(100.0)[::-3],
        "zero planes": cube[..., :0][::-1],
        "zero rows": cube[:, :0, :].transpose(2, 0, 1),
        "big-endian, every other plane": cube[..., ::2],
        "one plane, flipped": cube[..., 3:4][::-1],
        "records, permuted and flipped": records.transpose(2, 1, 0)[:, ::-1],
        "F-ordered, strided": np.asfortranarray(cube)[::2, :, ::-1],
        "planes larger than a piece": np.arange(3 * 40 * 200.0).reshape(3, 40, 200)[:, ::-1],
    }


@pytest.mark.parametrize("name", list(_edge_blocks()))
def test_write_block_edge_cases_are_their_fortran_bytes(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0-D, 1-D, empty, record and byte-swapped blocks, and planes larger than a piece."""
    import io

    monkeypatch.setattr(writer, "_WRITE_PIECE_BYTES", 64)
    block = _edge_blocks()[name]
    buffer = io.BytesIO()
    writer._write_block(buffer, block)
    assert buffer.getvalue() == block.tobytes(order="F")


def test_sources_read_in_any_order_pairs_and_file_objects(tmp_path: Path) -> None:
    """Uncompressed pairs and Analyze are read like a .nii; .img.gz and file objects are not."""
    import io

    from xarray_nifti._targets import reads_in_any_order

    img = nib.load(NIBABEL_DATA / "anatomical.nii")
    values = np.asanyarray(img.dataobj)
    nib.save(nib.Nifti1Pair(values, img.affine), tmp_path / "pair.img")
    nib.save(nib.Nifti1Pair(values, img.affine), tmp_path / "packed.img.gz")
    nib.save(nib.AnalyzeImage(values, img.affine), tmp_path / "analyze.img")
    for name, expected in (("pair.hdr", True), ("analyze.hdr", True), ("packed.hdr.gz", False)):
        with open_nifti(tmp_path / name) as ds:
            assert reads_in_any_order(ds["data"].nifti.to_canonical()) is expected, name
    raw = io.BytesIO((NIBABEL_DATA / "anatomical.nii").read_bytes())
    with open_nifti(raw) as ds:
        assert not reads_in_any_order(ds["data"])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_lazily_read_image_is_saved_in_pipelined_slabs(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data read from a file (no dask) are pulled in several slabs, and the output is exact."""
    monkeypatch.setattr(writer, "_PIPELINE_SLAB_BYTES", 12_000)
    source = NIBABEL_DATA / "anatomical.nii"  # 33 x 41 x 25 big-endian int16, 66 kB
    keys: list[Any] = []
    original = writer._compute

    def record(data: xr.DataArray, key: tuple[Any, ...]) -> np.ndarray:
        keys.append(key)
        return original(data, key)

    monkeypatch.setattr(writer, "_compute", record)
    with open_nifti(source) as ds:
        ds["data"].nifti.to_canonical().nifti.to_nifti(tmp_path / f"out{suffix}")
    assert len(keys) >= 8  # two or three k planes per slab
    expected = nib.as_closest_canonical(nib.load(source))
    saved = nib.load(tmp_path / f"out{suffix}")
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), np.asanyarray(expected.dataobj))
    np.testing.assert_allclose(saved.affine, expected.affine, atol=1e-5)
    assert saved.get_data_dtype() == nib.load(source).get_data_dtype()


def test_sources_read_in_any_order(tmp_path: Path) -> None:
    """Small slabs only where a region out of file order costs no extra inflation or request."""
    from xarray_nifti._targets import reads_in_any_order

    shutil.copyfile(NIBABEL_DATA / "anatomical.nii", tmp_path / "a.nii")
    nib.save(nib.load(NIBABEL_DATA / "anatomical.nii"), tmp_path / "a.nii.gz")
    with open_nifti(tmp_path / "a.nii") as plain, open_nifti(tmp_path / "a.nii.gz") as packed:
        assert reads_in_any_order(plain["data"].nifti.to_canonical())
        assert reads_in_any_order(plain["data"].load())
        assert not reads_in_any_order(packed["data"].nifti.to_canonical())
        assert not reads_in_any_order(packed["data"].isel(k=slice(2, 9)))
    fs = fsspec.filesystem("memory")
    fs.pipe("/slabs/a.nii", (tmp_path / "a.nii").read_bytes())
    with open_nifti("memory://slabs/a.nii") as remote:
        assert not reads_in_any_order(remote["data"])


def test_gzip_source_is_read_in_one_slab_when_reoriented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out-of-order regions of a .nii.gz would each inflate the stream again."""
    monkeypatch.setattr(writer, "_PIPELINE_SLAB_BYTES", 12_000)
    source = nib.load(NIBABEL_DATA / "anatomical.nii")
    # Stored as sagittal slices (axes A, S, L): the canonical k (S) runs along the stored j,
    # so every output slab is a strided region spanning the whole stream.
    sagittal = np.zeros((4, 4))
    sagittal[1, 0], sagittal[2, 1], sagittal[0, 2], sagittal[3, 3] = 1.0, 1.0, -1.0, 1.0
    nib.save(
        nib.Nifti1Image(np.asanyarray(source.dataobj), sagittal @ source.affine),
        tmp_path / "a.nii.gz",
    )
    assert "".join(nib.aff2axcodes(nib.load(tmp_path / "a.nii.gz").affine)) != "RAS"
    keys: list[Any] = []
    original = writer._compute
    monkeypatch.setattr(writer, "_compute", lambda d, k: keys.append(k) or original(d, k))
    with open_nifti(tmp_path / "a.nii.gz") as ds:
        ds["data"].nifti.to_canonical().nifti.to_nifti(tmp_path / "out.nii")
    assert len(keys) == 1
    expected = nib.as_closest_canonical(nib.load(tmp_path / "a.nii.gz"))
    saved = nib.load(tmp_path / "out.nii")
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), np.asanyarray(expected.dataobj))
