"""The ``engine="nifti"`` backend against nibabel: real files, generated files, chunks."""

from __future__ import annotations

import glob
import gzip
import io
import pickle
import shutil
from pathlib import Path
from typing import Any

import dask
import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from helpers import NIBABEL_DATA, process_cluster
from xarray_nifti import NiftiBackendEntrypoint, NiftiFormatError
from xarray_nifti import backend as backend_module
from xarray_nifti._chunks import TARGET_CHUNK_BYTES, preferred_chunks, target_chunk_bytes

DIMS = ("i", "j", "k", "time", "u", "v", "w")
TIME_SCALE = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}
NIBABEL_FILES = sorted(
    {
        Path(p).name
        for pattern in ("*.nii", "*.nii.gz", "*.hdr", "*.img", "*.hdr.gz", "*.img.gz")
        for p in glob.glob(str(NIBABEL_DATA / pattern))
    }
)


def nibabel_values(path: Path | str) -> np.ndarray:
    """The oracle: nibabel's (scaled) voxel values, RGB records split into a last axis."""
    data = np.asanyarray(nib.load(path).dataobj)
    if data.dtype.names is not None:
        data = np.stack([data[name] for name in data.dtype.names], axis=-1)
    return np.asarray(data)


def expected_times(path: Path | str, ntime: int) -> np.ndarray:
    header = nib.load(path).header
    unit = header.get_xyzt_units()[1]
    toffset = float(header["toffset"])
    return (toffset + np.arange(ntime) * float(header["pixdim"][4])) * TIME_SCALE[unit]


def assert_matches_nibabel(ds: xr.Dataset, path: Path | str) -> None:
    expected = nibabel_values(path)
    data = ds["data"]
    ndim = len(nib.load(path).shape)
    dims = DIMS[:ndim] + (("rgb",) if data.ndim > ndim else ())
    assert data.dims == dims
    assert data.shape == expected.shape
    values = data.values
    if np.issubdtype(values.dtype, np.floating) and values.dtype != expected.dtype:
        np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(values, expected)


# -- nibabel's own test files -------------------------------------------------------------


def test_nibabel_data_is_found() -> None:
    assert {"anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz"} <= set(NIBABEL_FILES)


@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_nibabel_test_file(name: str) -> None:
    path = NIBABEL_DATA / name
    img = nib.load(path)
    try:
        nibabel_values(path)
    except FileNotFoundError:
        # a header whose .img is not shipped: we must say the same, naming the file
        with pytest.raises(FileNotFoundError, match=name):
            xr.open_dataset(path, engine="nifti")
        return
    if isinstance(img, nib.Cifti2Image):
        with pytest.raises(NiftiFormatError, match="CIFTI") as info:
            xr.open_dataset(path, engine="nifti")
        assert name in str(info.value)
        return
    with xr.open_dataset(path, engine="nifti") as ds:
        assert_matches_nibabel(ds, path)
        scaled = np.asanyarray(img.dataobj).dtype != img.get_data_dtype()
        assert ("scale_factor" in ds["data"].encoding) == scaled
        if len(img.shape) > 3:
            np.testing.assert_allclose(ds["time"].values, expected_times(path, img.shape[3]))
            assert ds["time"].attrs["units"] == "s"
        np.testing.assert_allclose(ds.nifti.affine, img.affine)


@pytest.mark.parametrize("name", ["analyze.hdr", "nifti1.hdr", "nifti2.hdr"])
def test_nibabel_header_only_files_with_made_up_image(name: str, tmp_path: Path) -> None:
    """nibabel ships these headers without data: supply random data and compare."""
    shutil.copy(NIBABEL_DATA / name, tmp_path / name)
    hdr_class = {
        "analyze.hdr": nib.AnalyzeHeader,
        "nifti1.hdr": nib.nifti1.Nifti1PairHeader,
        "nifti2.hdr": nib.nifti2.Nifti2PairHeader,
    }[name]
    with open(tmp_path / name, "rb") as f:
        hdr = hdr_class.from_fileobj(f)
    nbytes = int(np.prod(hdr.get_data_shape())) * hdr.get_data_dtype().itemsize
    offset = int(hdr.get_data_offset())
    rng = np.random.default_rng(0)
    (tmp_path / name).with_suffix(".img").write_bytes(
        bytes(offset) + rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    )
    path = tmp_path / name
    with xr.open_dataset(path, engine="nifti") as ds:
        values = ds["data"].values
    expected = nibabel_values(path)
    np.testing.assert_allclose(values, expected, rtol=1e-6, equal_nan=True)
    assert values.dtype.kind == expected.dtype.kind


# -- generated files --------------------------------------------------------------------


def _ramp(shape: tuple[int, ...], dtype: Any, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)
    if dtype.kind == "f":
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


GENERATED_DTYPES = [
    np.uint8,
    np.int8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
]


@pytest.mark.parametrize("dtype", GENERATED_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_generated_dtypes(dtype: Any, suffix: str, tmp_path: Path) -> None:
    data = _ramp((5, 4, 3, 2), dtype)
    path = tmp_path / ("img" + suffix)
    nib.save(nib.Nifti1Image(data, np.eye(4), dtype=dtype), path)
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(ds["data"].values, data)
        assert_matches_nibabel(ds, path)


def test_scaled_int16_decodes_to_float32(make_image: Any) -> None:
    data = _ramp((6, 5, 4, 3), np.int16)
    path = make_image(data, name="scaled.nii.gz", scl_slope=0.25, scl_inter=-10.0)
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].dtype == np.float32
        assert ds["data"].encoding["scale_factor"] == np.float32(0.25)
        assert ds["data"].encoding["add_offset"] == np.float32(-10.0)
        assert ds["data"].encoding["dtype"] == np.int16
        np.testing.assert_allclose(ds["data"].values, data * 0.25 - 10.0, rtol=1e-6)
        assert_matches_nibabel(ds, path)
    with xr.open_dataset(path, engine="nifti", mask_and_scale=False) as raw:
        assert raw["data"].dtype == np.int16
        np.testing.assert_array_equal(raw["data"].values, data)
        assert raw["data"].attrs["scale_factor"] == np.float32(0.25)
        assert raw["data"].attrs["add_offset"] == np.float32(-10.0)


@pytest.mark.parametrize(
    ("dtype", "decoded"),
    [
        (np.uint8, np.float32),
        (np.int8, np.float32),
        (np.uint16, np.float32),
        (np.float32, np.float64),
        (np.float64, np.float64),
        (np.complex64, np.complex128),
        (np.complex128, np.complex128),
    ],
)
def test_scaled_dtypes(dtype: Any, decoded: Any, tmp_path: Path) -> None:
    data = _ramp((4, 3, 2, 2), dtype)
    img = nib.Nifti1Image(data, np.eye(4), dtype=dtype)
    img.header["scl_slope"], img.header["scl_inter"] = 2.0, 1.0
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    expected = data.astype(decoded) * 2.0 + 1.0
    with xr.open_dataset(path, engine="nifti", chunks={}) as ds:
        assert ds["data"].dtype == decoded
        np.testing.assert_allclose(ds["data"].values, expected, rtol=1e-6)
        np.testing.assert_allclose(ds["data"][1, ::-1, 0, 1].values, expected[1, ::-1, 0, 1])
        assert_matches_nibabel(ds, path)
        roundtrip = pickle.loads(pickle.dumps(ds))
        np.testing.assert_allclose(roundtrip["data"].values, expected, rtol=1e-6)


def test_scaled_int32_decodes_to_float64(make_image: Any) -> None:
    data = _ramp((4, 3, 2), np.int32)
    path = make_image(data, name="scaled32.nii", scl_slope=1.5, scl_inter=3.0)
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].dtype == np.float64
        np.testing.assert_allclose(ds["data"].values, data * 1.5 + 3.0)
        assert_matches_nibabel(ds, path)


def test_scaled_nifti2_int16_keeps_float64_factors(make_image: Any) -> None:
    slope = 0.1234567891234  # not representable in float32: NIfTI-2 stores float64
    data = _ramp((4, 3, 2), np.int16)
    path = make_image(
        data, name="s2.nii", image_class=nib.Nifti2Image, scl_slope=slope, scl_inter=0.0
    )
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].dtype == np.float64
        np.testing.assert_allclose(ds["data"].values, data * slope, rtol=1e-12)


@pytest.mark.parametrize(("slope", "inter"), [(1.0, 0.0), (np.nan, np.nan), (0.0, 0.0)])
def test_identity_or_unset_scaling_keeps_raw_dtype(
    slope: float, inter: float, make_image: Any
) -> None:
    data = _ramp((4, 3, 2), np.int16)
    path = make_image(data, name="unscaled.nii", scl_slope=slope, scl_inter=inter)
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].dtype == np.int16
        assert "scale_factor" not in ds["data"].encoding
        assert "scale_factor" not in ds["data"].attrs
        np.testing.assert_array_equal(ds["data"].values, data)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_big_endian(suffix: str, tmp_path: Path) -> None:
    data = _ramp((5, 4, 3, 2), np.int16)
    header = nib.Nifti1Header(endianness=">")
    header.set_data_dtype(np.int16)
    img = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]), header=header)
    img.header.set_slope_inter(2.0, 1.0)
    path = tmp_path / ("big" + suffix)
    nib.save(img, path)
    assert nib.load(path).header.endianness == ">"
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].encoding["byteorder"] == "big"
        assert ds["data"].dtype == np.float32
        assert ds["data"].dtype.isnative
        assert_matches_nibabel(ds, path)
    with xr.open_dataset(path, engine="nifti", mask_and_scale=False) as raw:
        assert raw["data"].dtype == np.dtype("=i2")
        np.testing.assert_array_equal(raw["data"].values, data)


@pytest.mark.parametrize(
    "dtype", [np.uint16, np.int32, np.float32, np.float64, np.complex64, np.complex128]
)
@pytest.mark.parametrize("image_class", [nib.Nifti1Image, nib.Nifti2Image])
def test_big_endian_dtypes(dtype: Any, image_class: type, tmp_path: Path) -> None:
    data = _ramp((5, 4, 3), dtype)
    header = image_class.header_class(endianness=">")
    header.set_data_dtype(dtype)
    path = tmp_path / "big.nii"
    nib.save(image_class(data, np.eye(4), header=header), path)
    assert nib.load(path).header.endianness == ">"
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].dtype == np.dtype(dtype)
        assert ds["data"].dtype.isnative
        np.testing.assert_array_equal(ds["data"].values, data)
        np.testing.assert_array_equal(ds["data"][::-2, 1:, -1].values, data[::-2, 1:, -1])


@pytest.mark.parametrize(
    "shape", [(7,), (6, 5), (5, 4, 3), (4, 3, 2, 3), (4, 3, 2, 2, 3), (3, 2, 2, 2, 2, 2, 2)]
)
def test_number_of_dimensions(shape: tuple[int, ...], make_image: Any) -> None:
    data = _ramp(shape, np.float32)
    path = make_image(data, name="nd.nii")
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].dims == DIMS[: len(shape)]
        np.testing.assert_array_equal(ds["data"].values, data)
        assert ("time" in ds.coords) == (len(shape) > 3)
        assert "x" in ds.xindexes


def test_trailing_singleton_dims_are_not_created(make_image: Any) -> None:
    data = _ramp((4, 3, 1, 1), np.int16)
    path = make_image(data, name="single.nii")
    with xr.open_dataset(path, engine="nifti") as ds:
        assert dict(ds.sizes) == {"i": 4, "j": 3, "k": 1, "time": 1}


@pytest.mark.parametrize(
    ("unit", "scale"), [("sec", 1.0), ("msec", 1e-3), ("usec", 1e-6), ("unknown", 1.0)]
)
def test_time_coordinate(unit: str, scale: float, tmp_path: Path) -> None:
    img = nib.Nifti1Image(_ramp((2, 2, 2, 4), np.int16), np.eye(4))
    img.header.set_xyzt_units("mm", unit)
    img.header["pixdim"][4] = 2.5
    img.header["toffset"] = 1.5
    path = tmp_path / "t.nii"
    nib.save(img, path)
    with xr.open_dataset(path, engine="nifti") as ds:
        np.testing.assert_allclose(ds["time"].values, (1.5 + np.arange(4) * 2.5) * scale)
        np.testing.assert_allclose(ds["time"].values, expected_times(path, 4))


def test_nifti2(make_image: Any) -> None:
    data = _ramp((5, 4, 3, 2), np.int16)
    path = make_image(data, name="two.nii.gz", image_class=nib.Nifti2Image)
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].encoding["format"] == "nifti2"
        assert_matches_nibabel(ds, path)


@pytest.mark.parametrize(
    ("image_class", "name"),
    [
        (nib.Nifti1Pair, "pair.img"),
        (nib.Nifti1Pair, "pair.hdr"),
        (nib.Nifti1Pair, "pair.img.gz"),
        (nib.Nifti2Pair, "pair2.hdr"),
        (nib.AnalyzeImage, "analyze.img"),
        (nib.Spm2AnalyzeImage, "spm2.hdr"),
        (nib.Spm99AnalyzeImage, "spm99.img.gz"),
    ],
)
def test_pairs_and_analyze(image_class: type, name: str, tmp_path: Path) -> None:
    data = _ramp((5, 4, 3), np.int16)
    img = image_class(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    path = tmp_path / name
    nib.save(img, path)
    header_path = tmp_path / name.replace(".img", ".hdr")
    for opened in {path, header_path}:
        with xr.open_dataset(opened, engine="nifti") as ds:
            assert_matches_nibabel(ds, opened)
            np.testing.assert_allclose(ds.nifti.affine, nib.load(opened).affine)


def test_spm_analyze_scaling(tmp_path: Path) -> None:
    data = _ramp((4, 3, 2), np.int16)
    img = nib.Spm2AnalyzeImage(data, np.eye(4))
    img.header["scl_slope"] = 0.5
    path = tmp_path / "scaled.img"
    nib.save(img, path)
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].dtype == np.float32
        assert_matches_nibabel(ds, path)


@pytest.mark.parametrize("code", ["RGB", "RGBA"])
def test_rgb(code: str, make_image: Any) -> None:
    names = list(code)
    dtype = np.dtype([(n, "u1") for n in names])
    raw = _ramp((4, 3, 2, len(names)), np.uint8)
    data = np.zeros((4, 3, 2), dtype=dtype)
    for c, n in enumerate(names):
        data[n] = raw[..., c]
    path = make_image(data, name="rgb.nii")
    with xr.open_dataset(path, engine="nifti") as ds:
        assert ds["data"].dims == ("i", "j", "k", "rgb")
        assert ds["data"].dtype == np.uint8
        np.testing.assert_array_equal(ds["data"].values, raw)
        np.testing.assert_array_equal(ds["data"].isel(rgb=1, k=0).values, raw[:, :, 0, 1])
        np.testing.assert_array_equal(ds["data"][::-1, 1, :, ::-2].values, raw[::-1, 1, :, ::-2])


def test_bz2(make_image: Any) -> None:
    data = _ramp((5, 4, 3, 2), np.int16)
    path = make_image(data, name="img.nii.bz2")
    with xr.open_dataset(path, engine="nifti") as ds:
        np.testing.assert_array_equal(ds["data"].values, data)
        np.testing.assert_array_equal(ds["data"][1:4, ::-1, 2, 1].values, data[1:4, ::-1, 2, 1])


@pytest.mark.parametrize("compress", [False, True])
def test_bytesio(compress: bool, make_image: Any) -> None:
    data = _ramp((5, 4, 3, 2), np.int16)
    path = make_image(data, name="img.nii.gz" if compress else "img.nii")
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == compress
    with xr.open_dataset(io.BytesIO(raw), engine="nifti") as ds:
        np.testing.assert_array_equal(ds["data"].values, data)
        np.testing.assert_array_equal(ds["data"][:, 1:3, ::-1, 0].values, data[:, 1:3, ::-1, 0])
        assert ds["data"].encoding["compression"] == ("gzip" if compress else None)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_open_binary_file(suffix: str, make_image: Any) -> None:
    data = _ramp((5, 4, 3, 2), np.int16)
    path = make_image(data, name="img" + suffix)
    with open(path, "rb") as f, xr.open_dataset(f, engine="nifti") as ds:
        np.testing.assert_array_equal(ds["data"].values, data)


def test_gzip_bytes_with_other_name(make_image: Any, tmp_path: Path) -> None:
    data = _ramp((5, 4, 3), np.int16)
    path = make_image(data, name="img.nii")
    renamed = tmp_path / "scan.dat"
    renamed.write_bytes(gzip.compress(path.read_bytes()))
    with xr.open_dataset(renamed, engine="nifti") as ds:
        np.testing.assert_array_equal(ds["data"].values, data)


def test_multi_member_gzip_file(make_image: Any, tmp_path: Path) -> None:
    data = _ramp((6, 5, 4, 3), np.int16)
    raw = make_image(data, name="img.nii").read_bytes()
    pieces = [raw[:100], raw[100:352], raw[352:1000], b"", raw[1000:]]
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(b"".join(gzip.compress(p) for p in pieces))
    with xr.open_dataset(path, engine="nifti") as ds:
        np.testing.assert_array_equal(ds["data"].values, data)
        np.testing.assert_array_equal(ds["data"][..., 2].values, data[..., 2])


def test_var_name_and_drop_variables(make_image: Any) -> None:
    path = make_image(_ramp((4, 3, 2, 2), np.int16), name="v.nii")
    with xr.open_dataset(path, engine="nifti", var_name="bold") as ds:
        assert list(ds.data_vars) == ["bold"]
    with xr.open_dataset(path, engine="nifti", drop_variables="time") as ds:
        assert "time" not in ds.variables
    with xr.open_dataarray(path, engine="nifti") as da:
        assert da.name == "data"
        assert da.dims == ("i", "j", "k", "time")


@pytest.mark.parametrize("name", ["i", "j", "k", "time", "u", "v", "w", "rgb", "x", "y", "z"])
def test_var_name_clashing_with_a_dimension_or_coordinate(make_image: Any, name: str) -> None:
    path = make_image(_ramp((4, 3, 2, 2), np.int16), name="clash.nii")
    with pytest.raises(ValueError, match=rf"var_name='{name}' clashes with the .*'{name}'") as err:
        xr.open_dataset(path, engine="nifti", var_name=name)
    assert not isinstance(err.value, NiftiFormatError)  # the file is fine, the argument is not


@pytest.mark.parametrize("name", ["", None, 3])
def test_var_name_must_be_a_non_empty_string(make_image: Any, name: Any) -> None:
    path = make_image(_ramp((4, 3, 2), np.int16), name="vn.nii")
    with pytest.raises(TypeError, match="var_name must be a non-empty string"):
        xr.open_dataset(path, engine="nifti", var_name=name)


@pytest.mark.parametrize(
    "option",
    [
        {"decode_times": False},
        {"decode_times": True},
        {"decode_timedelta": False},
        {"use_cftime": True},
        {"concat_characters": False},
        {"decode_coords": False},
        {"decode_coords": "all"},
        {"decode_cf": False},
        {"decode_cf": True},
    ],
    ids=lambda option: "-".join(f"{k}={v}" for k, v in option.items()),
)
@pytest.mark.parametrize("chunks", [None, {}], ids=["chunks=None", "chunks={}"])
def test_cf_decoding_options_are_accepted_and_ignored(
    make_image: Any, option: dict[str, Any], chunks: Any
) -> None:
    data = _ramp((4, 3, 2, 3), np.int16)
    path = make_image(data, name="cf.nii.gz", pixdim=[1, 1, 1, 1, 2.5, 1, 1, 1])
    with xr.open_dataset(path, engine="nifti", chunks=chunks, **option) as ds:
        np.testing.assert_array_equal(ds["data"].values, data)
        np.testing.assert_array_equal(ds["time"].values, [0.0, 2.5, 5.0])
        assert ds["time"].dtype == np.float64
        assert {"x", "y", "z"} <= set(ds.coords)


def test_decode_cf_false_returns_stored_values(make_image: Any) -> None:
    data = _ramp((4, 3, 2), np.int16)
    path = make_image(data, name="raw.nii", scl_slope=2.0, scl_inter=1.0)
    with xr.open_dataset(path, engine="nifti", decode_cf=False) as ds:
        assert ds["data"].dtype == np.int16
        assert ds["data"].attrs["scale_factor"] == 2.0


def test_bug_while_building_the_dataset_is_not_called_a_header_problem(
    make_image: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_image(_ramp((4, 3, 2, 2), np.int16), name="bug.nii")

    def broken(*args: Any) -> Any:
        raise KeyError("a bug in the package")

    monkeypatch.setattr(backend_module, "preferred_chunks", broken)
    with pytest.raises(KeyError, match="a bug in the package"):
        xr.open_dataset(path, engine="nifti")


def test_header_value_that_cannot_be_interpreted_names_the_file(
    make_image: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_image(_ramp((4, 3, 2, 2), np.int16), name="odd.nii")

    def unknown_code(*args: Any) -> Any:
        raise KeyError(77)

    monkeypatch.setattr(backend_module, "attrs_from_header", unknown_code)
    with pytest.raises(NiftiFormatError, match=r"odd\.nii: invalid header field value \(KeyError"):
        xr.open_dataset(path, engine="nifti")


def test_open_mfdataset(make_image: Any, tmp_path: Path) -> None:
    data = _ramp((4, 3, 2, 2), np.int16)
    first = make_image(data, name="a.nii")
    second = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(data + 1, np.eye(4)), second)
    with xr.open_mfdataset(
        [first, second], engine="nifti", combine="nested", concat_dim="run"
    ) as ds:
        np.testing.assert_array_equal(ds["data"].values, np.stack([data, data + 1]))


def test_affine_and_metadata(make_image: Any) -> None:
    from helpers import oblique_affine

    affine = oblique_affine(3)
    path = make_image(_ramp((5, 4, 3), np.int16), affine=affine, name="o.nii", descrip=b"hello")
    with xr.open_dataset(path, engine="nifti") as ds:
        np.testing.assert_allclose(ds.nifti.affine, nib.load(path).affine, atol=1e-5)
        assert ds["data"].attrs["descrip"] == "hello"
        assert ds["data"].encoding["source"] == str(path)
        assert "affine" not in ds["data"].attrs


@pytest.mark.parametrize("qform_code", [0, 1])
def test_nan_sform_falls_back_with_warning(qform_code: int, make_image: Any) -> None:
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    img_path = make_image(_ramp((4, 3, 2), np.int16), affine=affine, qform_code=qform_code)
    header = nib.load(img_path).header
    expected = header.get_qform() if qform_code else header.get_base_affine()
    raw = bytearray(img_path.read_bytes())
    raw[280:284] = np.float32(np.nan).tobytes()  # srow_x[0]
    img_path.write_bytes(bytes(raw))
    with (
        pytest.warns(UserWarning, match="NaN"),
        xr.open_dataset(img_path, engine="nifti") as ds,
    ):
        np.testing.assert_allclose(ds.nifti.affine, expected)


# -- chunks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [None, {}, "auto", {"time": 2, "i": 3}, -1])
def test_chunks_keep_the_index(chunks: Any, make_image: Any) -> None:
    data = _ramp((6, 5, 4, 5), np.int16)
    path = make_image(data, name="c.nii.gz")
    with xr.open_dataset(path, engine="nifti", chunks=chunks) as ds:
        assert "x" in ds.xindexes
        assert set(ds.xindexes) >= {"x", "y", "z"}
        np.testing.assert_array_equal(ds["data"].values, data)
        sub = ds.isel(i=slice(1, 4))
        assert "x" in sub.xindexes


def test_preferred_chunks_group_whole_volumes(make_image: Any) -> None:
    data = _ramp((6, 5, 4, 7), np.int16)
    path = make_image(data, name="p.nii")
    volume = 6 * 5 * 4 * 2
    with dask.config.set({"array.chunk-size": f"{3 * volume}B"}):
        for chunks in ({}, "auto"):
            with xr.open_dataset(path, engine="nifti", chunks=chunks) as ds:
                assert ds["data"].chunks == ((6,), (5,), (4,), (3, 3, 1)), chunks
                np.testing.assert_array_equal(ds["data"].values, data)
    with xr.open_dataset(path, engine="nifti", chunks={}) as ds:  # default target: one chunk
        assert ds["data"].chunks == ((6,), (5,), (4,), (7,))
        assert ds["data"].encoding["preferred_chunks"] == {"time": 7, "k": 4}


@pytest.mark.parametrize("suffix", ["nii", "nii.gz"])
def test_grouped_chunks_read_right_in_any_order(make_image: Any, suffix: str) -> None:
    data = _ramp((6, 5, 4, 11), np.int16)
    path = make_image(data, name=f"g.{suffix}")
    with (
        dask.config.set({"array.chunk-size": f"{3 * 6 * 5 * 4 * 2}B"}),
        xr.open_dataset(path, engine="nifti", chunks={}) as ds,
    ):
        assert ds["data"].chunks[3] == (3, 3, 3, 2)
        for t in (10, 2, 7, 0, 5):
            np.testing.assert_array_equal(ds["data"].isel(time=t).values, data[..., t])
        np.testing.assert_array_equal(ds["data"].mean("time").values, data.mean(-1))


def test_preferred_chunks_3d_k_slabs(make_image: Any) -> None:
    data = _ramp((6, 5, 8), np.int16)
    path = make_image(data, name="p3.nii")
    with xr.open_dataset(path, engine="nifti", chunks={}) as ds:
        assert ds["data"].chunks == ((6,), (5,), (8,))
    with (
        dask.config.set({"array.chunk-size": f"{6 * 5 * 2 * 3}B"}),
        xr.open_dataset(path, engine="nifti", chunks={}) as ds,
    ):
        assert ds["data"].chunks == ((6,), (5,), (3, 3, 2))
        assert ds["data"].encoding["preferred_chunks"] == {"k": 3}
        np.testing.assert_array_equal(ds["data"].values, data)


def test_preferred_chunks_sizes() -> None:
    target = 32 << 20
    chunks = preferred_chunks(("i", "j", "k"), (512, 512, 512), 4, target)
    assert chunks == {"k": 32}
    chunks = preferred_chunks(("i", "j", "k", "time"), (96, 96, 60, 400), 2, target)
    assert chunks == {"time": 30, "k": 60}  # 30 whole volumes of 1.1 MB
    chunks = preferred_chunks(("i", "j", "k", "time"), (512, 512, 200, 10), 4, target)
    assert chunks == {"time": 1, "k": 32}  # a volume above the target: k-slabs
    chunks = preferred_chunks(("i", "j", "k", "time", "u"), (8, 8, 8, 5, 3), 2, target)
    assert chunks == {"time": 5, "u": 1, "k": 8}
    chunks = preferred_chunks(("i", "j", "k", "rgb"), (2048, 2048, 10, 3), 1, target)
    assert chunks == {"k": 2}


def test_chunk_target_follows_dask_config_only_when_set() -> None:
    assert target_chunk_bytes() == TARGET_CHUNK_BYTES  # dask's default is not a user choice
    with dask.config.set({"array.chunk-size": "4MiB"}):
        assert target_chunk_bytes() == 4 << 20
    with dask.config.set({"array.chunk-size": "128MiB"}):
        assert target_chunk_bytes() == TARGET_CHUNK_BYTES


# -- engine guessing --------------------------------------------------------------------


@pytest.fixture
def entrypoint() -> NiftiBackendEntrypoint:
    return NiftiBackendEntrypoint()


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz", "a.hdr", "a.img", "a.img.gz"])
def test_guess_can_open_generated(name: str, tmp_path: Path, entrypoint: Any) -> None:
    image_class = nib.Nifti1Pair if ".hdr" in name or ".img" in name else nib.Nifti1Image
    path = tmp_path / name
    nib.save(image_class(_ramp((3, 2, 2), np.int16), np.eye(4)), path)
    assert entrypoint.guess_can_open(path)
    assert entrypoint.guess_can_open(str(path))


def test_guess_can_open_by_magic_in_renamed_gzip(make_image: Any, entrypoint: Any) -> None:
    path = make_image(_ramp((3, 2, 2), np.int16), name="img.nii.gz")
    renamed = path.with_name("scan.dat")
    path.rename(renamed)
    assert entrypoint.guess_can_open(renamed)
    with open(renamed, "rb") as f:
        assert entrypoint.guess_can_open(f)
        assert f.tell() == 0
    assert entrypoint.guess_can_open(io.BytesIO(renamed.read_bytes()))


def test_guess_can_open_by_suffix(tmp_path: Path, entrypoint: Any) -> None:
    assert entrypoint.guess_can_open(tmp_path / "missing.nii")
    assert entrypoint.guess_can_open(str(tmp_path / "missing.nii.gz"))
    assert entrypoint.guess_can_open(str(tmp_path / "MISSING.NII.GZ"))
    broken = tmp_path / "broken.nii"
    broken.write_bytes(b"not a header")
    assert entrypoint.guess_can_open(broken)  # then open_dataset explains what is wrong


def test_guess_can_open_rejects_other_files(tmp_path: Path, entrypoint: Any) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    assert not entrypoint.guess_can_open(text)
    netcdf = tmp_path / "data.nc"
    xr.Dataset({"a": ("x", np.arange(3))}).to_netcdf(netcdf)
    assert not entrypoint.guess_can_open(netcdf)
    envi = tmp_path / "envi.hdr"  # ENVI headers are text files called .hdr
    envi.write_text("ENVI\nsamples = 3\n")
    assert not entrypoint.guess_can_open(envi)
    raster = tmp_path / "erdas.img"  # an .img without a NIfTI/Analyze .hdr partner
    raster.write_bytes(b"EHFA_HEADER_TAG" + bytes(400))
    assert not entrypoint.guess_can_open(raster)
    assert not entrypoint.guess_can_open(io.BytesIO(b"CDF\x01" + bytes(600)))
    assert not entrypoint.guess_can_open(12)
    assert not entrypoint.guess_can_open(tmp_path)


def test_engine_is_picked_without_engine_argument(make_image: Any) -> None:
    data = _ramp((4, 3, 2, 2), np.int16)
    path = make_image(data, name="auto.nii.gz")
    with xr.open_dataset(path) as ds:
        np.testing.assert_array_equal(ds["data"].values, data)
    assert "nifti" in xr.backends.list_engines()


def test_entrypoint_description() -> None:
    entry = xr.backends.list_engines()["nifti"]
    assert "NIfTI" in entry.description
    assert entry.url.startswith("https://")
    assert "mask_and_scale" in entry.open_dataset_parameters
    assert "var_name" in entry.open_dataset_parameters


def test_unknown_keyword_is_rejected(make_image: Any) -> None:
    path = make_image(_ramp((3, 2, 2), np.int16), name="k.nii")
    with pytest.raises(TypeError):
        xr.open_dataset(path, engine="nifti", not_an_option=1)


# -- a distributed cluster --------------------------------------------------------------


def test_local_cluster_temporal_mean(make_image: Any) -> None:
    data = _ramp((8, 7, 6, 10), np.int16)
    path = make_image(data, name="bold.nii.gz", scl_slope=0.5, scl_inter=2.0)
    with process_cluster(2), xr.open_dataset(path, engine="nifti", chunks={}) as ds:
        mean = ds["data"].mean("time").compute()
    np.testing.assert_allclose(mean.values, (data * 0.5 + 2.0).mean(axis=-1), rtol=1e-5)


@pytest.mark.parametrize(
    ("shape", "dtype", "fields"),
    [
        ((4, 3, 2), np.int16, {}),
        ((4, 3), np.float32, {}),
        ((4, 3, 2, 3), np.int16, {"scl_slope": 2.0, "scl_inter": 1.0}),
        ((4, 3, 2, 3, 2), np.complex64, {"scl_slope": 2.0, "scl_inter": 0.0}),
    ],
    ids=["3d", "2d", "4d-scaled", "5d-complex-scaled"],
)
def test_dataset_is_the_one_the_public_constructor_builds(
    make_image: Any, shape: tuple[int, ...], dtype: Any, fields: dict[str, Any]
) -> None:
    # The backend assembles its Dataset without xarray's constructor (which costs more than
    # parsing the header): it must be exactly the constructor's, in the same order.
    path = make_image(_ramp(shape, dtype), name="assembled.nii", **fields)
    ds = NiftiBackendEntrypoint().open_dataset(path)
    coords = xr.Coordinates(
        {name: ds[name].variable for name in ds.coords}, indexes=dict(ds.xindexes)
    )
    built = xr.Dataset({"data": ds["data"].variable}, coords=coords)
    xr.testing.assert_identical(ds, built)
    assert list(ds.variables) == list(built.variables)
    assert list(ds.dims) == list(built.dims)
    assert set(ds.xindexes) == set(built.xindexes)
    assert ds.data.encoding == built.data.encoding
    ds.close()
