"""Header parsing and bad input: every broken file gets the right exception naming the file."""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from helpers import NIBABEL_DATA
from xarray_nifti import NiftiFormatError, NiftiTruncatedError
from xarray_nifti._header import _check_raw_header, sniff_format
from xarray_nifti._pairs import header_file_of
from xarray_nifti._resolve import open_source

# NIfTI-1 / Analyze field offsets
DIM, DATATYPE, BITPIX, VOX_OFFSET, SCL_SLOPE, SCL_INTER, MAGIC = 40, 70, 72, 108, 112, 116, 344
XYZT_UNITS, INTENT_CODE, SRow_X, QFORM_CODE, SFORM_CODE = 123, 68, 280, 252, 254


def write_valid(
    folder: Path,
    name: str = "good.nii",
    shape: tuple[int, ...] = (4, 5, 6, 3),
    image_class: type = nib.Nifti1Image,
) -> Path:
    data = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    path = folder / name
    nib.save(image_class(data, np.eye(4)), path)
    return path


def patch(path: Path, offset: int, fmt: str, *values: Any) -> Path:
    raw = bytearray(path.read_bytes())
    struct.pack_into("<" + fmt, raw, offset, *values)
    path.write_bytes(bytes(raw))
    return path


def gzipped(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


def open_and_read(target: Any) -> None:
    with xr.open_dataset(target, engine="nifti") as ds:
        ds["data"].values  # noqa: B018


def assert_fails(
    target: Any, exc_type: type[BaseException], *fragments: str, name: str | None = None
) -> BaseException:
    """Opening+reading ``target`` raises exactly ``exc_type``, naming the file and the problem."""
    with pytest.raises(exc_type) as info:
        open_and_read(target)
    assert type(info.value) is exc_type, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    expected_name = name or (Path(target).name if isinstance(target, str | Path) else None)
    if expected_name is not None:
        assert expected_name in message, message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return info.value


# -- single-file headers broken in one field ------------------------------------------------

BROKEN_FIELDS: list[tuple[str, Callable[[Path], Path], type[BaseException], tuple[str, ...]]] = [
    ("wrong-magic", lambda p: patch(p, MAGIC, "4s", b"xyz\0"), NiftiFormatError, ("magic",)),
    ("negative-dim", lambda p: patch(p, DIM + 2, "h", -4), NiftiFormatError, ("dim", "negative")),
    ("zero-dim", lambda p: patch(p, DIM + 4, "h", 0), NiftiFormatError, ("dim", "zero")),
    ("dim0-zero", lambda p: patch(p, DIM, "h", 0), NiftiFormatError, ("dim[0] = 0",)),
    ("dim0-eight", lambda p: patch(p, DIM, "h", 8), NiftiFormatError, ("dim[0] = 8",)),
    ("dim0-negative", lambda p: patch(p, DIM, "h", -1), NiftiFormatError, ("dim[0] = -1",)),
    ("datatype-999", lambda p: patch(p, DATATYPE, "h", 999), NiftiFormatError, ("datatype", "999")),
    ("datatype-none", lambda p: patch(p, DATATYPE, "h", 0), NiftiFormatError, ("datatype", "0")),
    (
        "datatype-float128",
        lambda p: patch(p, DATATYPE, "h", 1536),
        NiftiFormatError,
        ("datatype", "1536"),
    ),
    (
        "vox-offset-past-end",
        lambda p: patch(p, VOX_OFFSET, "f", 1e6),
        NiftiFormatError,
        ("vox_offset", "past the end"),
    ),
    (
        "vox-offset-negative",
        lambda p: patch(p, VOX_OFFSET, "f", -352.0),
        NiftiFormatError,
        ("vox_offset",),
    ),
    (
        "vox-offset-nan",
        lambda p: patch(p, VOX_OFFSET, "f", float("nan")),
        NiftiFormatError,
        ("vox_offset",),
    ),
    (
        "vox-offset-inf",
        lambda p: patch(p, VOX_OFFSET, "f", float("inf")),
        NiftiFormatError,
        ("vox_offset",),
    ),
    (
        "huge-dims",
        lambda p: patch(p, DIM + 2, "3h", 32767, 32767, 32767),
        NiftiTruncatedError,
        ("truncated",),
    ),
    (
        "truncated-data",
        lambda p: p.write_bytes(p.read_bytes()[:600]) and p,
        NiftiTruncatedError,
        ("truncated", "600"),
    ),
    (
        "truncated-header",
        lambda p: p.write_bytes(p.read_bytes()[:200]) and p,
        NiftiTruncatedError,
        ("header", "200 bytes"),
    ),
    (
        "intercept-inf",  # nibabel raises first: our message still names file and field
        lambda p: patch(p, SCL_SLOPE, "2f", 2.0, float("inf")),
        NiftiFormatError,
        ("intercept",),
    ),
    (
        "cifti-intent",
        lambda p: patch(p, INTENT_CODE, "h", 3001),
        NiftiFormatError,
        ("CIFTI", "not a voxel grid"),
    ),
    (
        "text",
        lambda p: p.write_text("hello world\n" * 100) and p,
        NiftiFormatError,
        ("not a NIfTI",),
    ),
    (
        "netcdf-like",
        lambda p: p.write_bytes(b"CDF\x01" + bytes(1000)) and p,
        NiftiFormatError,
        ("not a NIfTI",),
    ),
]


@pytest.mark.parametrize(
    ("breaker", "exc_type", "fragments"),
    [case[1:] for case in BROKEN_FIELDS],
    ids=[case[0] for case in BROKEN_FIELDS],
)
@pytest.mark.parametrize("form", ["nii", "nii.gz", "bytesio", "bytesio.gz"])
def test_broken_single_file(
    breaker: Callable[[Path], Path],
    exc_type: type[BaseException],
    fragments: tuple[str, ...],
    form: str,
    tmp_path: Path,
) -> None:
    path = breaker(write_valid(tmp_path, "broken.nii"))
    compressed = form.endswith(".gz")
    if compressed:
        path = gzipped(path)
    if form.startswith("bytesio"):
        assert_fails(io.BytesIO(path.read_bytes()), exc_type, *fragments, name="<BytesIO>")
    else:
        assert_fails(path, exc_type, *fragments)


def test_truncated_gzip_data_fails_at_read_time(tmp_path: Path) -> None:
    path = gzipped(write_valid(tmp_path, shape=(30, 30, 20, 4)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with xr.open_dataset(path, engine="nifti") as ds:  # the header is intact: opens
        ds["data"].isel(time=0, k=0).values  # noqa: B018  (the start is readable)
    assert_fails(path, NiftiTruncatedError, "truncated", "gzip")


def test_truncated_gzip_header(tmp_path: Path) -> None:
    path = gzipped(write_valid(tmp_path))
    path.write_bytes(path.read_bytes()[:25])
    assert_fails(path, NiftiTruncatedError, "gzip", "header")


@pytest.mark.parametrize("where", ["middle", "crc", "isize"])
def test_corrupt_gzip_data_fails_at_read_time(where: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 50, size=(40, 40, 30, 3), dtype=np.int16)
    path = tmp_path / "corrupt.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    position = {"middle": len(raw) * 2 // 3, "crc": len(raw) - 8, "isize": len(raw) - 3}[where]
    raw[position] ^= 0x55
    path.write_bytes(bytes(raw))
    with xr.open_dataset(path, engine="nifti") as ds:
        if where != "middle":  # the data before the damage still reads correctly
            np.testing.assert_array_equal(ds["data"].isel(time=0).values, data[..., 0])
    error = assert_fails(path, NiftiFormatError)
    assert "gzip" in str(error) or "corrupt" in str(error)


def test_corrupt_gzip_header_stream(tmp_path: Path) -> None:
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 3)
    assert_fails(path, NiftiFormatError, "gzip")


def test_empty_file(tmp_path: Path) -> None:
    for name in ("empty.nii", "empty.nii.gz", "empty.hdr"):
        (tmp_path / name).write_bytes(b"")
        assert_fails(tmp_path / name, NiftiFormatError, "empty")
    assert_fails(io.BytesIO(b""), NiftiFormatError, "empty", name="<BytesIO>")


def test_missing_path(tmp_path: Path) -> None:
    assert_fails(tmp_path / "nope.nii.gz", FileNotFoundError)
    assert_fails(str(tmp_path / "nope.hdr"), FileNotFoundError)


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.nii"
    folder.mkdir()
    assert_fails(folder, IsADirectoryError, "directory")


@pytest.mark.parametrize("suffix", [".img", ".img.gz"])
def test_pair_with_missing_image(suffix: str, tmp_path: Path) -> None:
    path = write_valid(tmp_path, "pair" + suffix, shape=(3, 4, 5), image_class=nib.Nifti1Pair)
    path.unlink()
    header = tmp_path / ("pair" + suffix.replace("img", "hdr"))
    error = assert_fails(header, FileNotFoundError, "missing")
    assert "pair" + suffix in str(error)


def test_pair_with_missing_header(tmp_path: Path) -> None:
    path = write_valid(tmp_path, "pair.img", shape=(3, 4, 5), image_class=nib.Nifti1Pair)
    (tmp_path / "pair.hdr").unlink()
    error = assert_fails(path, FileNotFoundError, "missing")
    assert "pair.hdr" in str(error)


def test_pair_with_short_image(tmp_path: Path) -> None:
    path = write_valid(tmp_path, "pair.img", shape=(3, 4, 5), image_class=nib.Nifti1Pair)
    path.write_bytes(bytes(7))
    assert_fails(path, NiftiTruncatedError, "7 bytes")
    assert_fails(tmp_path / "pair.hdr", NiftiTruncatedError, "7 bytes")


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "fragment"),
    [
        (DIM, "h", 8, "dim[0]"),
        (DIM + 2, "h", -3, "dim"),
        (DATATYPE, "h", 999, "datatype"),
        (DATATYPE, "h", 512, "datatype"),  # uint16 is NIfTI-only, not Analyze
    ],
)
def test_analyze_header_broken(
    offset: int, fmt: str, value: int, fragment: str, tmp_path: Path
) -> None:
    path = write_valid(tmp_path, "ana.img", shape=(3, 4, 5), image_class=nib.AnalyzeImage)
    patch(tmp_path / "ana.hdr", offset, fmt, value)
    assert_fails(tmp_path / "ana.hdr", NiftiFormatError, fragment)
    assert_fails(path, NiftiFormatError, fragment, name="ana.hdr")


def test_pair_header_given_as_single_file(tmp_path: Path) -> None:
    write_valid(tmp_path, "pair.hdr", shape=(3, 4, 5), image_class=nib.Nifti1Pair)
    renamed = tmp_path / "pair_header.nii"
    shutil.copy(tmp_path / "pair.hdr", renamed)
    assert_fails(renamed, NiftiFormatError, "magic", ".hdr")
    raw = (tmp_path / "pair.hdr").read_bytes()
    assert_fails(io.BytesIO(raw), NiftiFormatError, ".img", name="<BytesIO>")


def test_cifti_from_nibabel_data(tmp_path: Path) -> None:
    path = NIBABEL_DATA / "row_major.dconn.nii"
    assert isinstance(nib.load(path), nib.Cifti2Image)
    assert_fails(path, NiftiFormatError, "CIFTI")
    assert_fails(io.BytesIO(path.read_bytes()), NiftiFormatError, "CIFTI", name="<BytesIO>")


def test_cifti_extension_without_intent(tmp_path: Path) -> None:
    img = nib.Nifti2Image(np.zeros((2, 3, 4), np.float32), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(32, b"<CIFTI/>"))
    path = tmp_path / "ext.nii"
    nib.save(img, path)
    assert_fails(path, NiftiFormatError, "CIFTI")


@pytest.mark.parametrize("name", ["test.mgz", "tiny.mnc", "minc2_4d.mnc", "example4d+orig.HEAD"])
def test_other_nibabel_formats_are_refused(name: str) -> None:
    assert_fails(NIBABEL_DATA / name, NiftiFormatError, "not a NIfTI")


def _opens_or_names_the_file(path: Path, check: Callable[[xr.Dataset], None]) -> None:
    """Opening either works (then ``check`` runs) or raises a NiftiFormatError naming the file."""
    error: NiftiFormatError | None = None
    try:
        with xr.open_dataset(path, engine="nifti") as ds:
            check(ds)
    except NiftiFormatError as err:
        error = err
    if error is not None:
        assert path.name in str(error)


def test_invalid_units_never_escape_as_key_error(tmp_path: Path) -> None:
    path = patch(write_valid(tmp_path), XYZT_UNITS, "B", 255)
    # the metadata layer may tolerate unknown unit codes; nothing else may escape
    _opens_or_names_the_file(path, lambda ds: ds["data"].values)


@pytest.mark.parametrize(
    ("offset", "fmt", "values"),
    [
        (256, "f", (5.0,)),  # impossible quaternion
        (76, "4f", (float("nan"),) * 4),  # pixdim
        (132, "f", (float("nan"),)),  # toffset
        (122, "B", (200,)),  # unknown slice code
        (INTENT_CODE, "h", (9999,)),
        (124, "2f", (float("nan"), float("inf"))),  # cal_max/min
        (BITPIX, "h", (3,)),
        (39, "B", (255,)),  # dim_info
        (348, "4B", (1, 0, 0, 0)),  # extension flag with no room for an extension
    ],
)
def test_odd_but_readable_fields(
    offset: int, fmt: str, values: tuple[Any, ...], tmp_path: Path
) -> None:
    """Header oddities nibabel tolerates: no bare IndexError/KeyError/... escapes."""
    path = patch(write_valid(tmp_path), offset, fmt, *values)
    expected = np.asanyarray(nib.load(path).dataobj)
    _opens_or_names_the_file(
        path, lambda ds: np.testing.assert_array_equal(ds["data"].values, expected)
    )


def test_text_mode_file_object(tmp_path: Path) -> None:
    path = write_valid(tmp_path)
    with (
        open(path, encoding="latin-1") as f,
        pytest.raises(TypeError, match="binary"),
    ):
        xr.open_dataset(f, engine="nifti")


def test_unsupported_object() -> None:
    with pytest.raises(TypeError, match="int"):
        open_source(12)


# -- the parsed source ------------------------------------------------------------------------


def test_source_of_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_valid(tmp_path)
    monkeypatch.chdir(tmp_path)
    source = open_source("good.nii")
    assert source.name == str(path)  # absolute: survives a change of directory
    assert source.data.path == str(path)
    assert source.data.offset == 352
    assert source.data.shape == (4, 5, 6, 3)
    assert source.data.nbytes == 4 * 5 * 6 * 3 * 2
    assert source.format == "nifti1"


def test_open_file_object_is_reopened_by_path(tmp_path: Path) -> None:
    path = write_valid(tmp_path)
    with open(path, "rb") as f:
        source = open_source(f)
    assert source.data.path == str(path)
    assert source.data.fileobj is None


def test_bytesio_source() -> None:
    raw = (NIBABEL_DATA / "example4d.nii.gz").read_bytes()
    source = open_source(io.BytesIO(raw))
    assert source.data.compression == "gzip"
    assert source.data.path is None
    np.testing.assert_allclose(source.affine, nib.load(NIBABEL_DATA / "example4d.nii.gz").affine)


def test_sniff_format() -> None:
    assert sniff_format(b"") is None
    assert sniff_format(nib.Nifti1Header().binaryblock) == "nifti1"
    assert sniff_format(nib.nifti1.Nifti1PairHeader().binaryblock) == "nifti1-pair"
    assert sniff_format(nib.Nifti2Header().binaryblock) == "nifti2"
    assert sniff_format(nib.nifti2.Nifti2PairHeader().binaryblock) == "nifti2-pair"
    assert sniff_format(nib.AnalyzeHeader().binaryblock) == "analyze"
    big = nib.Nifti1Header(endianness=">").binaryblock
    assert sniff_format(big) == "nifti1"
    assert sniff_format(nib.Nifti2Header(endianness=">").binaryblock) == "nifti2"
    assert sniff_format(big[:300]) is None
    assert sniff_format(b"hello" * 100) is None


def test_raw_header_checks_use_sizeof_hdr_for_byte_order() -> None:
    for endianness in "<>":
        header = nib.Nifti1Header(endianness=endianness)
        header.set_data_shape((2, 3, 4))
        raw = bytearray(header.binaryblock)
        assert _check_raw_header("x.nii", bytes(raw), single=True).endian == endianness
        struct.pack_into(endianness + "h", raw, DIM, 8)  # nibabel would guess swapped
        with pytest.raises(NiftiFormatError, match=r"x\.nii.*dim\[0\] = 8"):
            _check_raw_header("x.nii", bytes(raw), single=True)
    header2 = nib.Nifti2Header(endianness=">")
    header2.set_data_shape((2, 3, 4))
    raw2 = bytearray(header2.binaryblock)
    struct.pack_into(">q", raw2, 16 + 16, -5)
    with pytest.raises(NiftiFormatError, match="negative"):
        _check_raw_header("y.nii", bytes(raw2), single=True)


@pytest.mark.parametrize(
    ("given", "existing", "expected"),
    [
        ("a.img", ["a.hdr"], "a.hdr"),
        ("a.img.gz", ["a.hdr.gz"], "a.hdr.gz"),
        ("a.img.gz", ["a.hdr"], "a.hdr"),
        ("A.IMG", ["A.HDR"], "A.HDR"),
        ("a.img", [], "a.hdr"),
        ("a.hdr", [], "a.hdr"),
    ],
)
def testheader_file_of(given: str, existing: list[str], expected: str, tmp_path: Path) -> None:
    for name in existing:
        (tmp_path / name).write_bytes(b"x")
    assert header_file_of(str(tmp_path / given)) == str(tmp_path / expected)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_fsspec_url_and_file_url(suffix: str, tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6 * 3, dtype=np.int16).reshape(4, 5, 6, 3)
    path = write_valid(tmp_path, "remote" + suffix)
    memory = fsspec.filesystem("memory")
    memory.pipe(f"/xarray-nifti-tests/remote{suffix}", path.read_bytes())
    try:
        url = f"memory://xarray-nifti-tests/remote{suffix}"
        with xr.open_dataset(url, engine="nifti") as ds:
            np.testing.assert_array_equal(ds["data"].values, data)
            np.testing.assert_array_equal(ds["data"][::-1, 2, :, 1].values, data[::-1, 2, :, 1])
            assert url in ds["data"].encoding["source"]
            restored = pickle.loads(pickle.dumps(ds))
            np.testing.assert_array_equal(restored["data"].values, data)
        with pytest.raises(FileNotFoundError, match="missing"):
            xr.open_dataset(f"memory://xarray-nifti-tests/missing{suffix}", engine="nifti")
    finally:
        memory.rm("/xarray-nifti-tests", recursive=True)
    with xr.open_dataset(f"file://{path}", engine="nifti") as ds:
        np.testing.assert_array_equal(ds["data"].values, data)
