"""Malformed and unusual NIfTI files, each with the outcome a user can rely on.

Every :class:`Case` builds its file from a valid image written by nibabel into
a scratch folder (nothing binary is committed) and states what opening it
with ``xr.open_dataset(path, engine="nifti")`` and reading its data does:

* :class:`Opens`: the data reads (equal to nibabel's values whenever nibabel
  can read the file), with a specific warning and a documented fallback, or
  with no warning at all;
* :class:`Raises`: a specific exception whose message names the file and the
  header field (or part of the file) at fault, at open time or, for damage
  that can only be seen while reading (a gzip stream cut short, a file cut
  after it was opened), at read time.

``tests/test_corpus.py`` runs every case; ``python -m tests.corpus.table``
prints the table of the docs section "What happens with broken files".
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import logging
import shutil
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import xarray as xr

from xarray_nifti import NiftiFileChangedError, NiftiFormatError, NiftiTruncatedError
from xarray_nifti._errors import NiftiHeaderWarning

__all__ = [
    "AFFINE",
    "CASES",
    "DATA",
    "Case",
    "Opens",
    "Raises",
    "quiet_nibabel",
    "set_fields",
    "write_valid",
]

# -- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opens:
    """The file opens and reads, with ``warning`` (or none); ``fallback`` says what is used."""

    warning: type[Warning] | None
    fallback: str

    def describe(self) -> str:
        if self.warning is None:
            return f"opens: {self.fallback}"
        return f"opens, warns `{self.warning.__name__}`: {self.fallback}"


@dataclass(frozen=True)
class Raises:
    """Opening (``when="open"``) or reading (``when="read"``) raises ``exception``.

    The message names the file and contains ``field``.
    """

    exception: type[BaseException]
    field: str
    when: str = "open"

    def describe(self) -> str:
        when = "opening" if self.when == "open" else "reading the data (opening works)"
        return f"`{self.exception.__name__}` on {when}, naming the file and `{self.field}`"


@dataclass(frozen=True)
class Case:
    """One corpus file: how to build it, what is wrong with it, and what happens."""

    name: str
    description: str
    build: Callable[[Path], Path]
    outcome: Opens | Raises
    #: Step 2 of a two-step case: called with the path and the open dataset
    #: (e.g. to read a voxel, then truncate the file); the outcome is for the
    #: reads that follow.
    after_open: Callable[[Path, xr.Dataset], None] | None = None
    #: Extra assertions on the opened dataset (e.g. which affine was chosen).
    check: Callable[[xr.Dataset], None] | None = None
    #: What nibabel 5.4 does where it differs from us (documentation only).
    nibabel: str = ""


# -- valid images and field edits ----------------------------------------------------------------

SHAPE = (4, 5, 6, 3)
DATA = np.arange(int(np.prod(SHAPE)), dtype=np.int16).reshape(SHAPE)
#: An axis-swapping affine, so sform, qform and the zooms-only affine all differ.
AFFINE = np.array(
    [[0.0, -3.0, 0.0, 10.0], [2.0, 0.0, 0.0, -20.0], [0.0, 0.0, 4.0, -30.0], [0.0, 0.0, 0.0, 1.0]]
)
ZOOMS_ONLY = nib.Nifti1Header()
ZOOMS_ONLY.set_data_shape(SHAPE)
ZOOMS_ONLY.set_zooms((2.0, 3.0, 4.0, 1.0))
ZOOMS_AFFINE = ZOOMS_ONLY.get_base_affine()


@contextlib.contextmanager
def quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's log messages and warnings while it reads a broken file (the oracle)."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def write_valid(
    folder: Path,
    name: str = "img.nii",
    *,
    data: np.ndarray | None = None,
    image_class: type = nib.Nifti1Image,
    sform_code: int = 1,
    qform_code: int = 1,
    big_endian: bool = False,
    extensions: tuple[tuple[int, bytes], ...] = (),
) -> Path:
    """A valid image written by nibabel (``name`` decides .nii/.nii.gz/.hdr/.img)."""
    data = DATA if data is None else data
    header = None
    if big_endian:
        header = image_class.header_class(endianness=">")
        header.set_data_dtype(data.dtype)
    img = image_class(data, AFFINE, header)
    nifti = hasattr(img.header, "set_sform")
    if nifti:
        img.header.set_xyzt_units("mm", "sec")
        for code, content in extensions:
            img.header.extensions.append(nib.nifti1.Nifti1Extension(code, content))
    path = folder / name
    nib.save(img, path)
    if nifti:  # nibabel's save picks its own codes: write both forms with ours
        forms = nib.Nifti1Header()
        forms.set_qform(AFFINE, code=1)
        forms.set_sform(AFFINE, code=1)
        names = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")
        values = {name: forms[name] for name in (*names, "srow_x", "srow_y", "srow_z")}
        header_path = path.with_suffix(".hdr") if path.suffix == ".img" else path
        set_fields(header_path, sform_code=sform_code, qform_code=qform_code, **values)
    return path


def _is_gzip(raw: bytes) -> bool:
    return raw[:2] == b"\x1f\x8b"


def _header_view(raw: bytearray) -> np.ndarray:
    """A writable structured view of the header at the start of ``raw``."""
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", bytes(raw[:4]))
        if size in (348, 540):
            module = nib.nifti1 if size == 348 else nib.nifti2
            dtype = module.header_dtype.newbyteorder(endian)
            return np.ndarray((), dtype=dtype, buffer=raw, offset=0)
    raise ValueError("no NIfTI header at the start of the file")


def set_fields(path: Path, **fields: Any) -> Path:
    """Overwrite header fields in place (decompressing/recompressing .gz files).

    A value for an array field may be a ``{index: value}`` dict.
    """
    raw_in = path.read_bytes()
    compressed = _is_gzip(raw_in)
    raw = bytearray(gzip.decompress(raw_in) if compressed else raw_in)
    view = _header_view(raw)
    for name, value in fields.items():
        if isinstance(value, dict):
            for index, item in value.items():
                view[name][index] = item
        else:
            view[name] = value
    path.write_bytes(gzip.compress(bytes(raw), mtime=0) if compressed else bytes(raw))
    return path


def put_bytes(path: Path, offset: int, data: bytes) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))
    return path


def _edited(name: str = "img.nii", /, **valid: Any) -> Callable[..., Callable[[Path], Path]]:
    """``_edited(name, **valid)(**fields)``: a builder writing a valid file, then editing it."""

    def fields(**changes: Any) -> Callable[[Path], Path]:
        def build(folder: Path) -> Path:
            return set_fields(write_valid(folder, name, **valid), **changes)

        return build

    return fields


nii = _edited("img.nii")
nii_gz = _edited("img.nii.gz")
qform_only = _edited("img.nii", sform_code=0, qform_code=1)
sform_only = _edited("img.nii", sform_code=2, qform_code=0)
nii2 = _edited("img.nii", image_class=nib.Nifti2Image)
nii2_gz = _edited("img.nii.gz", image_class=nib.Nifti2Image)


def _raw_edit(edit: Callable[[bytes], bytes], name: str = "img.nii") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = write_valid(folder, name)
        path.write_bytes(edit(path.read_bytes()))
        return path

    return build


def _gzip_edit(edit: Callable[[bytes], bytes], data: np.ndarray | None = None) -> Callable:
    """A .nii.gz whose *compressed* bytes are edited."""

    def build(folder: Path) -> Path:
        path = write_valid(folder, "img.nii.gz", data=data)
        path.write_bytes(edit(path.read_bytes()))
        return path

    return build


def _flip(position: int, mask: int = 0x55) -> Callable[[bytes], bytes]:
    def edit(raw: bytes) -> bytes:
        out = bytearray(raw)
        out[position] ^= mask
        return bytes(out)

    return edit


_NOISE = np.random.default_rng(0).integers(-3000, 3000, size=(40, 40, 30, 3), dtype=np.int16)
_BIG_NOISE = np.random.default_rng(1).integers(-30000, 30000, (64, 64, 64, 3), dtype=np.int16)


# -- builders that need more than a field edit ------------------------------------------------


def _empty(name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(b"")
        return path

    return build


def _directory(folder: Path) -> Path:
    path = folder / "scan.nii"
    path.mkdir()
    return path


def _missing(folder: Path) -> Path:
    return folder / "nowhere.nii.gz"


def _text(folder: Path) -> Path:
    path = folder / "notes.nii"
    path.write_text("this is not an image\n" * 50)
    return path


def _sizeof_hdr(value: int) -> Callable[[Path], Path]:
    return _raw_edit(lambda raw: struct.pack("<i", value) + raw[4:])


def _header_only(folder: Path) -> Path:
    path = write_valid(folder)
    path.write_bytes(path.read_bytes()[:200])
    return path


def _data_short(folder: Path) -> Path:
    path = write_valid(folder)
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _data_short_gzip(folder: Path) -> Path:
    """A complete, valid gzip stream of a .nii whose data was cut short before compressing."""
    raw = write_valid(folder).read_bytes()
    path = folder / "img.nii.gz"
    path.write_bytes(gzip.compress(raw[:-100], mtime=0))
    return path


def _data_long(folder: Path) -> Path:
    path = write_valid(folder)
    path.write_bytes(path.read_bytes() + b"trailing bytes after the data" * 4)
    return path


def _vox_offset_unaligned(folder: Path) -> Path:
    """vox_offset = 356 (valid NIfTI, not a multiple of 16), data moved accordingly."""
    raw = bytearray(write_valid(folder).read_bytes())
    moved = bytes(raw[:352]) + b"\x00" * 4 + bytes(raw[352:])
    path = folder / "img.nii"
    path.write_bytes(moved)
    return set_fields(path, vox_offset=356)


def _with_extension(name: str = "img.nii", count: int = 2) -> Callable[..., Callable[[Path], Path]]:
    """A file with ``count`` 32-byte comment extensions; ``first=``/``second=`` edit their esize."""
    contents = ((6, b"first comment 123456"), (6, b"second comment 12345"))[:count]

    def sizes(first: int | None = None, second: int | None = None) -> Callable[[Path], Path]:
        def build(folder: Path) -> Path:
            path = write_valid(folder, name, extensions=contents)
            raw_in = path.read_bytes()
            raw = bytearray(gzip.decompress(raw_in) if _is_gzip(raw_in) else raw_in)
            (esize1,) = struct.unpack("<i", raw[352:356])
            if first is not None:
                struct.pack_into("<i", raw, 352, first)
            if second is not None:
                struct.pack_into("<i", raw, 352 + esize1, second)
            out = gzip.compress(bytes(raw), mtime=0) if _is_gzip(raw_in) else bytes(raw)
            path.write_bytes(out)
            return path

        return build

    return sizes


def _ext_flag_no_room(folder: Path) -> Path:
    return put_bytes(write_valid(folder), 348, b"\x01\x00\x00\x00")


def _ext_pair_bad(folder: Path) -> Path:
    write_valid(folder, "pair.img", image_class=nib.Nifti1Pair)
    header = folder / "pair.hdr"
    raw = header.read_bytes()[:348] + b"\x01\x00\x00\x00" + struct.pack("<2i", 0, 6) + bytes(24)
    header.write_bytes(raw)
    return header


def _multi_member(folder: Path) -> Path:
    raw = write_valid(folder).read_bytes()
    cut1, cut2 = 200, 352 + 700  # header split across members, data in two more
    path = folder / "img.nii.gz"
    path.write_bytes(
        b"".join(gzip.compress(p, mtime=0) for p in (raw[:cut1], raw[cut1:cut2], raw[cut2:]))
    )
    return path


def _trailing(junk: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = write_valid(folder, "img.nii.gz")
        path.write_bytes(path.read_bytes() + junk)
        return path

    return build


def _not_compressed(folder: Path) -> Path:
    raw = write_valid(folder).read_bytes()
    path = folder / "img.nii.gz"
    path.write_bytes(raw)
    return path


def _truncate_compressed(fraction: float, data: np.ndarray | None = None) -> Callable:
    return _gzip_edit(lambda raw: raw[: int(len(raw) * fraction)], data)


def _truncate_at(keep: int) -> Callable[[bytes], bytes]:
    return lambda raw: raw[:keep]


def _pair_without(missing: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        write_valid(folder, "pair.img", image_class=nib.Nifti1Pair, data=DATA[..., 0])
        (folder / f"pair.{missing}").unlink()
        return folder / ("pair.hdr" if missing == "img" else "pair.img")

    return build


def _pair_short_image(folder: Path) -> Path:
    path = write_valid(folder, "pair.img", image_class=nib.Nifti1Pair, data=DATA[..., 0])
    path.write_bytes(path.read_bytes()[:50])
    return folder / "pair.hdr"


def _big_endian_header_little_data(folder: Path) -> Path:
    """A big-endian header followed by data a buggy writer stored little-endian."""
    big = write_valid(folder, "big.nii", big_endian=True).read_bytes()
    little = write_valid(folder, "little.nii").read_bytes()
    path = folder / "img.nii"
    path.write_bytes(big[:352] + little[352:])
    return path


def _mixed_endian_header(big_fields: bool) -> Callable[[Path], Path]:
    """``sizeof_hdr`` in one byte order, every other field (and the data) in the other."""

    def build(folder: Path) -> Path:
        raw = write_valid(folder, "fields.nii", big_endian=big_fields).read_bytes()
        path = folder / "img.nii"
        path.write_bytes(struct.pack("<i" if big_fields else ">i", 348) + raw[4:])
        return path

    return build


def _rgb(folder: Path) -> Path:
    rgb_type = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
    values = np.arange(4 * 5 * 6 * 3, dtype=np.uint8).reshape(4, 5, 6, 3)
    data = values.copy().view(rgb_type).reshape(4, 5, 6)
    return write_valid(folder, data=data)


def _complex(folder: Path) -> Path:
    data = (DATA + 1j * DATA[::-1]).astype(np.complex64)
    return write_valid(folder, data=data)


def _descrip_binary(folder: Path) -> Path:
    return set_fields(write_valid(folder), descrip=bytes(range(200, 255)) + b"x" * 25)


def _dims_beyond_ndim(folder: Path) -> Path:
    path = write_valid(folder, data=DATA[..., 0])
    return set_fields(path, dim={4: -7, 5: 0, 6: 32767, 7: -1})


def _analyze(folder: Path) -> Path:
    write_valid(folder, "scan.img", image_class=nib.AnalyzeImage, data=DATA[..., 0])
    return folder / "scan.hdr"


def _cifti_intent(folder: Path) -> Path:
    return set_fields(write_valid(folder), intent_code=3001)


def _truncate_file(fraction: float, read_first: bool = True) -> Callable[[Path, xr.Dataset], None]:
    """Cut the file to ``fraction`` of its size (after reading one voxel if ``read_first``)."""

    def cut(path: Path, ds: xr.Dataset) -> None:
        if read_first:
            ds["data"][(0,) * ds["data"].ndim].values  # noqa: B018  (opens the reader)
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(int(size * fraction))

    return cut


def _delete_file(path: Path, ds: xr.Dataset) -> None:
    path.unlink()


def _bz2(edit: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    """A .nii.bz2 in 100 kB blocks (so the header block survives damage later on), edited."""

    def build(folder: Path) -> Path:
        raw = write_valid(folder, data=_NOISE).read_bytes()
        path = folder / "img.nii.bz2"
        path.write_bytes(edit(bz2.compress(raw, 1)))
        return path

    return build


LONG_TIME = 5_000_000


def _long_time_axis(folder: Path) -> Path:
    """A 5 kB NIfTI-2 .nii.gz holding 1 × 1 × 1 × 5·10⁶ uint8 volumes (zeros but the last)."""
    header = nib.Nifti2Header()
    header.set_data_shape((1, 1, 1, LONG_TIME))
    header.set_data_dtype(np.uint8)
    header.set_zooms((1.0, 1.0, 1.0, 2.0))
    header.set_xyzt_units("mm", "sec")
    header["vox_offset"] = 544
    data = bytearray(LONG_TIME)
    data[-1] = 7
    path = folder / "long.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + bytes(4) + bytes(data), 6, mtime=0))
    return path


def _lazy_time(ds: xr.Dataset) -> None:
    assert type(ds.xindexes["time"]).__name__ == "RangeIndex"
    assert ds.sizes["time"] == LONG_TIME
    assert float(ds["time"][-1]) == 2.0 * (LONG_TIME - 1)
    assert int(ds["data"][0, 0, 0, -1]) == 7


def _valid_big_gzip(folder: Path) -> Path:
    return write_valid(folder, "img.nii.gz", data=_BIG_NOISE)


# -- checks of the documented fallbacks ----------------------------------------------------------


def _affine_is(expected: np.ndarray, space: str | None = None) -> Callable[[xr.Dataset], None]:
    def check(ds: xr.Dataset) -> None:
        np.testing.assert_allclose(ds.nifti.affine, expected, atol=1e-5)
        if space is not None:
            assert ds.nifti.space == space, ds.nifti.space

    return check


def _units_unknown(which: str) -> Callable[[xr.Dataset], None]:
    def check(ds: xr.Dataset) -> None:
        assert ds["data"].attrs[f"{which}_units"] == "unknown", ds["data"].attrs

    return check


def _no_time_coordinate(ds: xr.Dataset) -> None:
    assert "time" not in ds.coords


def _unscaled(ds: xr.Dataset) -> None:
    assert ds["data"].dtype == np.int16, ds["data"].dtype


def _extensions(count: int) -> Callable[[xr.Dataset], None]:
    def check(ds: xr.Dataset) -> None:
        assert len(ds["data"].encoding["extensions"]) == count, ds["data"].encoding["extensions"]

    return check


def _sizes(**sizes: int) -> Callable[[xr.Dataset], None]:
    def check(ds: xr.Dataset) -> None:
        assert dict(ds.sizes) == sizes, dict(ds.sizes)

    return check


_NAN = float("nan")
_INF = float("inf")
_SINGULAR = np.array([[0.0, -3.0, 0.0, 10.0], [0.0, 0.0, 0.0, -20.0], [0.0, 0.0, 4.0, -30.0]])
_COLLINEAR = np.array([[2.0, 2.0, 0.0, 10.0], [1.0, 1.0, 0.0, -20.0], [0.0, 0.0, 4.0, -30.0]])
_SINGULAR_FIELDS = {"srow_x": _SINGULAR[0], "srow_y": _SINGULAR[1], "srow_z": _SINGULAR[2]}
_COLLINEAR_FIELDS = {"srow_x": _COLLINEAR[0], "srow_y": _COLLINEAR[1], "srow_z": _COLLINEAR[2]}
_EXT_WARNING = (
    "the bad extension and any after it are ignored (the data is intact); earlier ones are kept"
)
_SINGULAR_KEPT = (
    "the singular sform is kept (the file's geometry); `world_to_voxel`, "
    "`sel(method='nearest')` and `resample_to` raise `ValueError`"
)

W = NiftiHeaderWarning
F = NiftiFormatError
T = NiftiTruncatedError

CASES: list[Case] = [
    # -- what the path points at --------------------------------------------------------------
    Case("empty-file", "zero-length `.nii`", _empty("empty.nii"), Raises(F, "empty")),
    Case("empty-gzip", "zero-length `.nii.gz`", _empty("empty.nii.gz"), Raises(F, "empty")),
    Case(
        "directory", "the path is a directory", _directory, Raises(IsADirectoryError, "directory")
    ),
    Case(
        "missing-file",
        "the path does not exist",
        _missing,
        Raises(FileNotFoundError, "no such file"),
    ),
    Case("text-file", "a text file named `.nii`", _text, Raises(F, "not a NIfTI")),
    # -- magic and sizeof_hdr ---------------------------------------------------------------------
    Case("magic-wrong", "magic is `xyz`", nii(magic=b"xyz"), Raises(F, "magic")),
    Case(
        "magic-absent",
        "magic is four zero bytes (an Analyze header in a `.nii`)",
        nii(magic=b""),
        Raises(F, "magic"),
    ),
    Case(
        "magic-pair-in-single",
        "magic `ni1` (header of a `.hdr`/`.img` pair) in a `.nii`",
        nii(magic=b"ni1"),
        Raises(F, "magic"),
    ),
    Case(
        "sizeof-hdr-wrong",
        "`sizeof_hdr` = 349, the magic `n+1` intact",
        _sizeof_hdr(349),
        Opens(W, "the magic identifies a NIfTI-1 header, read as one (as nibabel)"),
    ),
    Case(
        "sizeof-hdr-wrong-no-magic",
        "`sizeof_hdr` = 349 and no magic",
        nii(sizeof_hdr=349, magic=b"abc"),
        Raises(F, "sizeof_hdr"),
    ),
    Case(
        "sizeof-hdr-540-on-nifti1",
        "a NIfTI-1 header with `sizeof_hdr` = 540 (the NIfTI-2 value)",
        _sizeof_hdr(540),
        Opens(W, "the NIfTI-1 magic decides, read as NIfTI-1 (as nibabel)"),
    ),
    Case(
        "header-truncated",
        "file cut inside the header (200 bytes)",
        _header_only,
        Raises(T, "header"),
    ),
    # -- dims -------------------------------------------------------------------------------------
    Case("dim0-zero", "`dim[0]` = 0", nii(dim={0: 0}), Raises(F, "dim[0]")),
    Case("dim0-eight", "`dim[0]` = 8 (> 7)", nii(dim={0: 8}), Raises(F, "dim[0]")),
    Case("dim-negative", "`dim[2]` = -5", nii(dim={2: -5}), Raises(F, "dim")),
    Case("dim-zero", "`dim[3]` = 0", nii(dim={3: 0}), Raises(F, "dim")),
    Case(
        "dims-huge",
        "dims 32767 × 32767 × 32767 × 3 (far larger than the file)",
        nii(dim={1: 32767, 2: 32767, 3: 32767}),
        Raises(T, "dim"),
    ),
    Case(
        "dims-huge-gzip",
        "dims 32767³ × 3 in a `.nii.gz` (more than deflate can hold)",
        nii_gz(dim={1: 32767, 2: 32767, 3: 32767}),
        Raises(T, "dim"),
    ),
    Case(
        "nifti2-dims-huge",
        "NIfTI-2 with dims 2⁴⁰ × 2⁴⁰ × 2⁴⁰ × 3",
        nii2(dim={1: 2**40, 2: 2**40, 3: 2**40}),
        Raises(T, "dim"),
    ),
    Case(
        "nifti2-dims-overflow-int64",
        "NIfTI-2 with dims whose product overflows int64 (2⁶² × 2⁶² × 6 × 3)",
        nii2(dim={1: 2**62, 2: 2**62}),
        Raises(T, "dim"),
    ),
    Case(
        "nifti2-dim-negative",
        "NIfTI-2 with `dim[1]` = -2⁴⁰",
        nii2(dim={1: -(2**40)}),
        Raises(F, "dim"),
    ),
    Case(
        "dims-beyond-ndim",
        "`dim[0]` = 3 with garbage in `dim[4..7]`",
        _dims_beyond_ndim,
        Opens(None, "only `dim[1..dim[0]]` are used (NIfTI rule)"),
        check=_sizes(i=4, j=5, k=6),
    ),
    Case("data-short", "`.nii` shorter than its dims imply", _data_short, Raises(T, "truncated")),
    Case(
        "data-short-gzip",
        "valid gzip stream of a `.nii` shorter than its dims imply",
        _data_short_gzip,
        Raises(T, "truncated", when="read"),
    ),
    Case(
        "data-long",
        "extra bytes after the data block",
        _data_long,
        Opens(None, "the bytes after the data block are never read"),
    ),
    # -- datatype ---------------------------------------------------------------------------------
    Case("datatype-unknown", "`datatype` = 999", nii(datatype=999), Raises(F, "datatype")),
    Case(
        "datatype-binary",
        "`datatype` = 1 (DT_BINARY, 1 bit)",
        nii(datatype=1),
        Raises(F, "datatype"),
    ),
    Case(
        "datatype-bitpix-mismatch",
        "`bitpix` = 32 for int16 data",
        nii(bitpix=32),
        Opens(W, "`datatype` decides, `bitpix` is ignored (as nibabel)"),
    ),
    Case(
        "datatype-rgb24",
        "RGB24 data (unusual but valid)",
        _rgb,
        Opens(None, "an `rgb` dim of 3 uint8 channels"),
        check=_sizes(i=4, j=5, k=6, rgb=3),
    ),
    Case(
        "datatype-complex64",
        "complex64 data (unusual but valid)",
        _complex,
        Opens(None, "complex values"),
    ),
    # -- vox_offset -------------------------------------------------------------------------------
    Case(
        "vox-offset-in-header", "`vox_offset` = 100", nii(vox_offset=100), Raises(F, "vox_offset")
    ),
    Case(
        "vox-offset-zero",
        "`vox_offset` = 0 in a single file",
        nii(vox_offset=0),
        Raises(F, "vox_offset"),
    ),
    Case("vox-offset-past-end", "`vox_offset` = 10⁶", nii(vox_offset=1e6), Raises(F, "vox_offset")),
    Case(
        "vox-offset-non-integral",
        "`vox_offset` = 352.5",
        nii(vox_offset=352.5),
        Raises(F, "vox_offset"),
    ),
    Case(
        "vox-offset-unaligned",
        "`vox_offset` = 356, not a multiple of 16 (valid)",
        _vox_offset_unaligned,
        Opens(None, "the data is read at byte 356"),
    ),
    Case(
        "vox-offset-past-gzip-data",
        "`vox_offset` = 4000 in a `.nii.gz` whose stream is shorter",
        nii_gz(vox_offset=4000),
        Raises(T, "truncated", when="read"),
    ),
    Case(
        "nifti2-vox-offset-huge",
        "NIfTI-2 with `vox_offset` = 2⁶²",
        nii2(vox_offset=2**62),
        Raises(F, "vox_offset"),
    ),
    Case(
        "nifti2-vox-offset-negative",
        "NIfTI-2 with `vox_offset` = -8",
        nii2(vox_offset=-8),
        Raises(F, "vox_offset"),
    ),
    # -- pixdim -----------------------------------------------------------------------------------
    Case(
        "pixdim-nan",
        "`pixdim[1..3]` = NaN (the sform is valid)",
        nii(pixdim={1: _NAN, 2: _NAN, 3: _NAN}),
        Opens(W, "voxel sizes set to 1; the affine is the sform"),
        check=_affine_is(AFFINE),
    ),
    Case(
        "pixdim-inf-qform",
        "`pixdim[2]` = inf, only a qform",
        qform_only(pixdim={2: _INF}),
        Opens(W, "that voxel size is set to 1 in the qform"),
        check=_affine_is(AFFINE @ np.diag([1.0, 1 / 3, 1.0, 1.0])),
    ),
    Case(
        "pixdim-zero-qform",
        "`pixdim[1]` = 0, only a qform",
        qform_only(pixdim={1: 0.0}),
        Opens(W, "that voxel size is set to 1 (as nibabel)"),
        check=_affine_is(AFFINE @ np.diag([0.5, 1.0, 1.0, 1.0])),
    ),
    Case(
        "pixdim-negative-qform",
        "`pixdim[3]` = -4, only a qform",
        qform_only(pixdim={3: -4.0}),
        Opens(W, "its absolute value is used (as nibabel)"),
        check=_affine_is(AFFINE),
    ),
    Case(
        "pixdim-time-nan",
        "`pixdim[4]` (TR) = NaN in a 4-D image",
        nii(pixdim={4: _NAN}),
        Opens(W, "no `time` coordinate"),
        check=_no_time_coordinate,
    ),
    Case(
        "qfac-zero",
        "`pixdim[0]` (qfac) = 0",
        qform_only(pixdim={0: 0.0}),
        Opens(None, "qfac 0 means 1 (NIfTI rule, as nibabel)"),
        check=_affine_is(AFFINE),
    ),
    # -- scaling ----------------------------------------------------------------------------------
    Case(
        "scl-slope-nan",
        "`scl_slope` = NaN",
        nii(scl_slope=_NAN, scl_inter=5.0),
        Opens(W, "unscaled values (as nibabel)"),
        check=_unscaled,
    ),
    Case(
        "scl-slope-inf",
        "`scl_slope` = inf",
        nii(scl_slope=_INF),
        Opens(W, "unscaled values (as nibabel)"),
        check=_unscaled,
    ),
    Case(
        "scl-slope-zero",
        "`scl_slope` = 0",
        nii(scl_slope=0.0, scl_inter=5.0),
        Opens(None, "unscaled values (NIfTI: 0 means no scaling)"),
        check=_unscaled,
    ),
    Case(
        "scl-inter-nan",
        "`scl_slope` = 2 with `scl_inter` = NaN",
        nii(scl_slope=2.0, scl_inter=_NAN),
        Raises(F, "scl_inter"),
    ),
    # -- qform / sform ----------------------------------------------------------------------------
    Case(
        "quaternion-invalid",
        "quaternion with b² + c² + d² > 1, only a qform",
        qform_only(quatern_b=0.8, quatern_c=0.8, quatern_d=0.8),
        Opens(W, "the qform is ignored; zooms-only affine from `pixdim`"),
        check=_affine_is(ZOOMS_AFFINE, "unknown"),
    ),
    Case(
        "quaternion-invalid-with-sform",
        "quaternion with b² + c² + d² > 1 beside a valid sform",
        nii(quatern_b=0.8, quatern_c=0.8, quatern_d=0.8),
        Opens(W, "the qform is ignored; the sform is used"),
        check=_affine_is(AFFINE, "scanner"),
    ),
    Case(
        "qoffset-inf",
        "`qoffset_x` = inf, only a qform",
        qform_only(qoffset_x=_INF),
        Opens(W, "the qform is ignored; zooms-only affine from `pixdim`"),
        check=_affine_is(ZOOMS_AFFINE, "unknown"),
    ),
    Case(
        "sform-singular",
        "singular sform (a zero row) beside a valid qform",
        nii(**_SINGULAR_FIELDS),
        Opens(W, "the qform is used; the warning names the sform and the qform"),
        check=_affine_is(AFFINE, "scanner"),
    ),
    Case(
        "sform-singular-no-qform",
        "singular sform (a zero voxel axis), `qform_code` = 0",
        sform_only(**_SINGULAR_FIELDS),
        Opens(W, _SINGULAR_KEPT),
        check=_affine_is(np.vstack([_SINGULAR, [0, 0, 0, 1]])),
    ),
    Case(
        "sform-collinear-no-qform",
        "sform with two parallel voxel axes, `qform_code` = 0",
        sform_only(**_COLLINEAR_FIELDS),
        Opens(W, _SINGULAR_KEPT),
        check=_affine_is(np.vstack([_COLLINEAR, [0, 0, 0, 1]])),
    ),
    Case(
        "sform-nan",
        "sform with NaN beside a valid qform",
        nii(srow_y={1: _NAN}),
        Opens(W, "the qform is used; the warning names both"),
        check=_affine_is(AFFINE, "scanner"),
    ),
    Case(
        "sform-nan-no-qform",
        "sform with NaN, `qform_code` = 0",
        sform_only(srow_x={3: _NAN}),
        Opens(W, "zooms-only affine from `pixdim`"),
        check=_affine_is(ZOOMS_AFFINE, "unknown"),
    ),
    Case(
        "codes-both-zero",
        "`sform_code` = `qform_code` = 0",
        nii(sform_code=0, qform_code=0),
        Opens(None, "zooms-only affine from `pixdim`, space `unknown` (as nibabel)"),
        check=_affine_is(ZOOMS_AFFINE, "unknown"),
    ),
    Case(
        "sform-code-unknown",
        "`sform_code` = 7 (not a NIfTI code)",
        nii(sform_code=7),
        Opens(W, "the sform is ignored (code set to 0, as nibabel); the qform is used"),
        check=_affine_is(AFFINE, "scanner"),
    ),
    Case(
        "qform-code-negative",
        "`qform_code` = -1, no sform",
        qform_only(qform_code=-1),
        Opens(W, "the qform is ignored (code set to 0, as nibabel); zooms-only affine"),
        check=_affine_is(ZOOMS_AFFINE, "unknown"),
    ),
    # -- extensions -------------------------------------------------------------------------------
    Case(
        "ext-size-not-16",
        "an extension's `esize` = 24 (fits, but not a multiple of 16)",
        _with_extension(count=1)(first=24),
        Opens(W, "the extensions are read as sized (as nibabel)"),
    ),
    Case(
        "ext-size-zero",
        "first extension's `esize` = 0",
        _with_extension()(first=0),
        Opens(W, _EXT_WARNING),
        check=_extensions(0),
    ),
    Case(
        "ext-size-negative",
        "first extension's `esize` = -64",
        _with_extension()(first=-64),
        Opens(W, _EXT_WARNING),
        check=_extensions(0),
    ),
    Case(
        "ext-size-past-data",
        "second extension's `esize` reaches past `vox_offset`",
        _with_extension()(second=4096),
        Opens(W, _EXT_WARNING),
        check=_extensions(1),
    ),
    Case(
        "ext-size-huge-gzip",
        "`esize` = 2³¹ - 1 in a `.nii.gz`",
        _with_extension("img.nii.gz")(first=2**31 - 1),
        Opens(W, _EXT_WARNING),
        check=_extensions(0),
    ),
    Case(
        "ext-flag-no-room",
        "extension flag set but `vox_offset` = 352 leaves no room",
        _ext_flag_no_room,
        Opens(None, "no extensions (as nibabel)"),
        check=_extensions(0),
    ),
    Case(
        "ext-pair-bad-size",
        "`.hdr` of a pair with an extension of `esize` = 0",
        _ext_pair_bad,
        Opens(W, _EXT_WARNING),
        check=_extensions(0),
    ),
    # -- gzip -------------------------------------------------------------------------------------
    Case(
        "gzip-truncated-header",
        "`.nii.gz` cut inside the header",
        _gzip_edit(_truncate_at(40)),
        Raises(T, "header"),
    ),
    Case(
        "gzip-truncated-data",
        "`.nii.gz` cut inside the data",
        _truncate_compressed(0.6, _NOISE),
        Raises(T, "truncated", when="read"),
    ),
    Case(
        "gzip-crc-corrupt",
        "gzip CRC32 wrong",
        _gzip_edit(lambda raw: _flip(len(raw) - 8)(raw)),
        Raises(F, "checksum", when="read"),
    ),
    Case(
        "gzip-isize-corrupt",
        "gzip ISIZE (length) field wrong",
        _gzip_edit(lambda raw: _flip(len(raw) - 2)(raw)),
        Raises(F, "checksum", when="read"),
    ),
    Case(
        "gzip-deflate-corrupt",
        "a byte of the compressed data changed",
        _gzip_edit(lambda raw: _flip(len(raw) * 2 // 3)(raw), _NOISE),
        Raises(F, "gzip", when="read"),
    ),
    Case(
        "gzip-trailing-garbage",
        "bytes that are not gzip after the last member",
        _trailing(b"this is garbage" * 8),
        Opens(None, "the garbage is ignored (like `gzip -d`)"),
    ),
    Case(
        "gzip-trailing-zeros",
        "zero padding after the last member",
        _trailing(bytes(512)),
        Opens(None, "the padding is ignored"),
    ),
    Case(
        "gzip-multi-member",
        "three gzip members (header split across two)",
        _multi_member,
        Opens(None, "the members are read as one stream"),
    ),
    Case(
        "gzip-suffix-not-compressed",
        "an uncompressed `.nii` named `.nii.gz`",
        _not_compressed,
        Opens(None, "detected from the magic bytes"),
    ),
    Case(
        "bz2-truncated",
        "`.nii.bz2` cut inside the data",
        _bz2(lambda raw: raw[: len(raw) * 6 // 10]),
        Raises(T, "truncated", when="read"),
    ),
    Case(
        "bz2-corrupt",
        "a byte of a `.nii.bz2` changed inside the data",
        _bz2(lambda raw: _flip(len(raw) * 3 // 4, 0xFF)(raw)),
        Raises(F, "decompress", when="read"),
    ),
    # -- pairs and Analyze ------------------------------------------------------------------------
    Case(
        "pair-hdr-without-img",
        "`.hdr` whose `.img` is missing",
        _pair_without("img"),
        Raises(FileNotFoundError, ".img"),
    ),
    Case(
        "pair-img-without-hdr",
        "`.img` whose `.hdr` is missing",
        _pair_without("hdr"),
        Raises(FileNotFoundError, ".hdr"),
    ),
    Case(
        "pair-img-short",
        "`.img` shorter than the `.hdr` dims imply",
        _pair_short_image,
        Raises(T, "truncated"),
    ),
    Case(
        "analyze-75",
        "an Analyze 7.5 pair (old but valid)",
        _analyze,
        Opens(None, "zooms-only affine (Analyze has no orientation)"),
    ),
    # -- byte order -------------------------------------------------------------------------------
    Case(
        "big-endian",
        "big-endian header and data (valid)",
        _edited("img.nii", big_endian=True)(),
        Opens(None, "native-order values"),
    ),
    Case(
        "big-endian-header-little-data",
        "big-endian header, data written little-endian by a buggy writer",
        _big_endian_header_little_data,
        Opens(
            None,
            "read big-endian, as the header says: nothing in a NIfTI header can say "
            "otherwise (same as nibabel)",
        ),
    ),
    Case(
        "mixed-endian-header",
        "`sizeof_hdr` little-endian, every other field big-endian",
        _mixed_endian_header(big_fields=True),
        Opens(W, "`dim[0]` decides: read big-endian (as nibabel and niftilib)"),
    ),
    Case(
        "mixed-endian-header-reversed",
        "`sizeof_hdr` big-endian, every other field (and the data) little-endian",
        _mixed_endian_header(big_fields=False),
        Opens(W, "`dim[0]` decides: read little-endian (as nibabel and niftilib)"),
    ),
    # -- files changed after opening --------------------------------------------------------------
    Case(
        "truncated-after-open",
        "`.nii` cut to half its size after it was opened",
        lambda folder: write_valid(folder),
        Raises(NiftiFileChangedError, "shrank", when="read"),
        after_open=_truncate_file(0.5),
    ),
    Case(
        "truncated-after-open-gzip",
        "`.nii.gz` (1.5 MB) cut to half its size after it was opened",
        _valid_big_gzip,
        Raises(NiftiFileChangedError, "truncated", when="read"),
        after_open=_truncate_file(0.5),
    ),
    Case(
        "emptied-after-open",
        "`.nii` truncated to 0 bytes after opening, before any read",
        lambda folder: write_valid(folder),
        Raises(NiftiFileChangedError, "shrank", when="read"),
        after_open=_truncate_file(0.0, read_first=False),
    ),
    Case(
        "deleted-after-open",
        "`.nii` deleted after opening, before any read",
        lambda folder: write_valid(folder),
        Raises(FileNotFoundError, "removed", when="read"),
        after_open=_delete_file,
    ),
    # -- other fields -----------------------------------------------------------------------------
    Case(
        "xyzt-units-unknown",
        "`xyzt_units` = 255 (no such codes)",
        nii(xyzt_units=255),
        Opens(W, "both units read as `unknown`"),
        check=_units_unknown("spatial"),
    ),
    Case(
        "xyzt-units-time-unknown",
        "`xyzt_units` = mm + time code 56 (no such code)",
        nii(xyzt_units=2 + 56),
        Opens(W, "time unit read as `unknown`, the spatial unit kept"),
        check=_units_unknown("time"),
    ),
    Case(
        "descrip-binary",
        "`descrip` full of non-ASCII bytes, no NUL",
        _descrip_binary,
        Opens(None, "decoded as latin-1"),
    ),
    Case("cifti-intent", "intent code 3001 (CIFTI-2)", _cifti_intent, Raises(F, "CIFTI")),
    # -- NIfTI-2 ----------------------------------------------------------------------------------
    Case(
        "nifti2-gzip", "a valid NIfTI-2 `.nii.gz`", nii2_gz(), Opens(None, "as any NIfTI-2 image")
    ),
    Case(
        "nifti2-long-time-gzip",
        "a 5 kB NIfTI-2 `.nii.gz` holding 5·10⁶ one-voxel volumes",
        _long_time_axis,
        Opens(
            None,
            "the `time` coordinate is a lazy `RangeIndex`: opening allocates nothing per volume",
        ),
        check=_lazy_time,
    ),
    Case("nifti2-magic-wrong", "NIfTI-2 with magic `n+3`", nii2(magic=b"n+3"), Raises(F, "magic")),
    Case(
        "nifti2-sform-singular",
        "NIfTI-2 with a singular sform beside a valid qform",
        _edited("img.nii", image_class=nib.Nifti2Image)(**_SINGULAR_FIELDS),
        Opens(W, "the qform is used"),
        check=_affine_is(AFFINE, "scanner"),
    ),
]

#: What nibabel 5.4.2 (with indexed_gzip) does with the same file, where that differs.
NIBABEL: dict[str, str] = {
    "directory": "`ImageFileError`: cannot work out file type",
    "magic-pair-in-single": "reads it as a pair whose image file is the `.nii` itself",
    "dim0-zero": "returns an empty array of shape (0,)",
    "dim0-eight": "`HeaderDataError` about `vox_offset` (a byte-order misguess)",
    "dim-negative": "bare `OverflowError` from `mmap`",
    "dim-zero": "returns an empty array",
    "dims-huge": "bare `MemoryError`",
    "dims-huge-gzip": "bare `MemoryError`",
    "nifti2-dims-huge": "bare `OverflowError` and a numpy overflow `RuntimeWarning`",
    "nifti2-dims-overflow-int64": "bare `OverflowError` and a numpy overflow `RuntimeWarning`",
    "nifti2-dim-negative": "bare `OverflowError` from `mmap`",
    "vox-offset-zero": "reads the header bytes as voxel values, silently",
    "vox-offset-non-integral": "truncates to 352, logs 'not divisible by 16'",
    "nifti2-vox-offset-huge": "bare `OSError` [Errno 22]",
    "pixdim-nan": "reads; zooms are NaN",
    "pixdim-inf-qform": "an affine with inf/NaN and a numpy `RuntimeWarning`",
    "pixdim-zero-qform": "same fix, logged to stderr without the file name",
    "pixdim-negative-qform": "same fix, logged to stderr without the file name",
    "quaternion-invalid": "`nib.load` raises `ValueError` ('w2 should be positive')",
    "qoffset-inf": "an affine with inf",
    "sform-singular": "uses the singular sform, silently",
    "nifti2-sform-singular": "uses the singular sform, silently",
    "sform-singular-no-qform": "uses the singular sform, silently",
    "sform-collinear-no-qform": "uses the singular sform, silently",
    "sform-nan": "an affine with NaN",
    "sform-nan-no-qform": "an affine with NaN",
    "sform-code-unknown": "same fix, logged to stderr without the file name",
    "qform-code-negative": "same fix, logged to stderr without the file name",
    "ext-size-not-16": "same, with a `UserWarning` that does not name the file",
    "ext-size-zero": "bare `ValueError` ('read length must be non-negative')",
    "ext-size-negative": "bare `ValueError` ('read length must be non-negative')",
    "ext-size-past-data": "`HeaderDataError`: failed to read extension content",
    "ext-size-huge-gzip": "reads the rest of the stream, then `HeaderDataError`",
    "ext-pair-bad-size": "bare `ValueError` ('read length must be non-negative')",
    "gzip-truncated-header": "`ImageFileError`: cannot work out file type",
    "gzip-crc-corrupt": "large files: returns the data, never checks the CRC; small files: "
    "`ImageFileError` (cannot work out file type)",
    "gzip-isize-corrupt": "large files: returns the data, never checks the length; small "
    "files: `ImageFileError` (cannot work out file type)",
    "gzip-deflate-corrupt": "damage that inflate accepts gives silently wrong voxels (seen: one "
    "voxel of an 8 MB image), as the CRC is never checked",
    "gzip-suffix-not-compressed": "`ImageFileError`: not a gzip file",
    "bz2-truncated": "bare `EOFError` without the file name",
    "bz2-corrupt": "returns the array with 44 097 wrong voxels, silently (`BZ2File.readinto` "
    "swallows the decompression error)",
    "pair-img-without-hdr": "`ImageFileError`: cannot work out file type",
    "truncated-after-open": "re-reading raises `OSError`; an array taken before (`np.asanyarray("
    "img.dataobj)` is a `numpy.memmap`) kills the process with SIGBUS when touched",
    "xyzt-units-unknown": "`header.get_xyzt_units()` raises `KeyError`",
    "xyzt-units-time-unknown": "`header.get_xyzt_units()` raises `KeyError`",
    "cifti-intent": "opens it as a NIfTI-1 image",
    "sizeof-hdr-wrong-no-magic": "`ImageFileError`: cannot work out file type",
}
CASES = [replace(case, nibabel=NIBABEL.get(case.name, "")) for case in CASES]


def case_named(name: str) -> Case:
    """The case called ``name``."""
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(name)


def copy_case(case: Case, folder: Path) -> Path:
    """Build ``case`` in a fresh sub-folder of ``folder`` and return its path."""
    target = folder / case.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    return case.build(target)
