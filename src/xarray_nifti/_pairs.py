"""Header/image pairs (``.hdr`` + ``.img``, either maybe gzipped) and Analyze 7.5 images.

Local pairs go through :func:`nibabel.load`, which finds the partner file and
an SPM ``.mat`` affine beside it. Remote pairs (fsspec URLs) are parsed from
the header object's bytes with the class :func:`nibabel.load` would choose;
their data is then read by byte ranges of the image object like any remote
image. Either way the header's extensions are read by our checked reader
(nibabel reads a detached header's extensions to the end of the file and
fails on an impossible ``esize``).
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Callable
from typing import Any

import nibabel as nib
from nibabel.filebasedimages import ImageFileError
from nibabel.imageglobals import LoggingOutputSuppressor
from nibabel.openers import ImageOpener

from ._affine_choice import choose_affine
from ._errors import NiftiFormatError
from ._extensions import read_extensions
from ._header import (
    _COMPRESSED_SUFFIXES,
    _GZIP_MAGIC,
    _HEAD_BYTES,
    _PAIR_SUFFIXES,
    _PARSE_OR_OS_ERRORS,
    _check_raw_header,
    _cifti_error,
    _is_cifti,
    _RawHeader,
    _reject_non_nifti,
    _sanitize_header,
)
from ._identity import FileStamp, stamp_fsspec, stamp_local
from ._source import ImageSource, _location

__all__ = ["header_file_of", "is_pair_path", "open_fsspec_pair", "open_pair_path"]

# The classes nibabel.load tries for a .hdr file, in its order.
_PAIR_CLASSES: tuple[type, ...] = (
    nib.Nifti1Pair,
    nib.Nifti2Pair,
    nib.Spm2AnalyzeImage,
    nib.Spm99AnalyzeImage,
    nib.AnalyzeImage,
)


def _split_suffix(path: str) -> tuple[str, str]:
    """``(path without .gz/.bz2/.zst, that suffix or "")``."""
    for suffix in _COMPRESSED_SUFFIXES:
        if path.lower().endswith(suffix):
            return path[: -len(suffix)], path[-len(suffix) :]
    return path, ""


def is_pair_path(path: str) -> bool:
    """Whether ``path`` names one file of a ``.hdr``/``.img`` pair (maybe compressed)."""
    return _split_suffix(path)[0].lower().endswith(_PAIR_SUFFIXES)


def _partner(path: str, kind: str, exists: Callable[[str], bool]) -> str:
    """The ``kind`` (".hdr" or ".img") file of the pair ``path`` belongs to (may not exist).

    The partner with the same compression suffix is preferred, then the
    uncompressed one, then the others; the first candidate is returned when
    none exists, so that the error can name it.
    """
    base, compression = _split_suffix(path)
    stem = base[:-4]
    ext = kind.upper() if base[-4:].isupper() else kind
    variants = [compression, "", *(s for s in _COMPRESSED_SUFFIXES if s != compression)]
    candidates = [stem + ext + (v.upper() if compression.isupper() else v) for v in variants]
    for candidate in candidates:
        if exists(candidate):
            return candidate
    return candidates[0]


def header_file_of(path: str, exists: Callable[[str], bool] = os.path.exists) -> str:
    """The header file of a .hdr/.img pair given either file (may not exist)."""
    if not _split_suffix(path)[0].lower().endswith(".img"):
        return path
    return _partner(path, ".hdr", exists)


def _pair_extensions(header_name: str, raw: bytes, layout: _RawHeader) -> tuple[bytes, Any]:
    """The header bytes of a NIfTI pair without extensions, and its checked extensions."""
    block = raw[: layout.sizeof_hdr]
    header_class = (
        nib.nifti1.Nifti1PairHeader if layout.sizeof_hdr == 348 else nib.nifti2.Nifti2PairHeader
    )
    header = header_class(block, layout.endian, check=False)
    stream = io.BytesIO(raw[layout.sizeof_hdr + 4 :])
    extensions, _ = read_extensions(header_name, stream, header, layout.endian, None)
    return block + bytes(4), extensions


def _has_extensions(head: bytes, layout: _RawHeader) -> bool:
    flag = head[layout.sizeof_hdr : layout.sizeof_hdr + 1]
    return layout.kind in ("nifti1-pair", "nifti2-pair") and flag not in (b"", b"\x00")


def _finish(
    name: str,
    img: Any,
    header: Any,
    image: tuple[str | None, Any, str | None, int | None],
    stamps: tuple[FileStamp, ...],
) -> ImageSource:
    """The source of a parsed pair; ``image`` = (path, fileobj, compression, size)."""
    try:
        offset = int(img.dataobj.offset)
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    except _PARSE_OR_OS_ERRORS as err:
        raise NiftiFormatError(f"{name}: cannot parse the image header: {err}") from err
    if _is_cifti(header):
        raise _cifti_error(name, header)
    _sanitize_header(name, header)
    path, fileobj, compression, size = image
    location = _location(name, header, path, fileobj, compression, offset, size, stamps)
    affine = choose_affine(name, header, lambda: img.affine)
    return ImageSource(name, type(img), header, affine, location, slope, inter)


# -- local pairs ----------------------------------------------------------------------------


def _load_pair(path: str, header_path: str, layout: _RawHeader | None, block: bytes | None) -> Any:
    with LoggingOutputSuppressor():  # header problems are reported as warnings later
        if block is None or layout is None:
            return nib.load(path)
        klass = nib.Nifti1Pair if layout.sizeof_hdr == 348 else nib.Nifti2Pair
        file_map = klass.filespec_to_file_map(header_path)
        file_map["header"].fileobj = io.BytesIO(block)
        return klass.from_file_map(file_map)


def _compression_of(path: str) -> str | None:
    with open(path, "rb") as f:
        if f.read(2) == _GZIP_MAGIC:
            return "gzip"
    if path.lower().endswith(_COMPRESSED_SUFFIXES[1:]):
        return "other"
    return None


def _read_local_header(header_path: str, count: int | None) -> bytes:
    try:
        with ImageOpener(header_path, "rb") as fobj:
            raw: bytes = fobj.read() if count is None else fobj.read(count)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise NiftiFormatError(f"{header_path}: cannot read the header: {err}") from err
    return raw


def open_pair_path(path: str) -> ImageSource:
    """Parse a local pair (or Analyze image) given its ``.hdr`` or ``.img`` file."""
    header_path = header_file_of(path)
    layout: _RawHeader | None = None
    block: bytes | None = None
    extensions: Any = None
    stamps: tuple[FileStamp, ...] = ()
    if os.path.isfile(header_path) and os.path.getsize(header_path) > 0:
        stamps = (stamp_local(header_path),)
        head = _read_local_header(header_path, _HEAD_BYTES)
        layout = _check_raw_header(header_path, head, single=False)
        if _has_extensions(head, layout):
            raw = _read_local_header(header_path, None)
            block, extensions = _pair_extensions(header_path, raw, layout)
    elif header_path != path and not os.path.exists(header_path):
        raise FileNotFoundError(
            f"{path}: the header file {header_path} of this header/image pair is missing"
        )
    img: Any
    try:
        img = _load_pair(path, header_path, layout, block)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{path}: a file of this header/image pair is missing ({err})"
        ) from err
    except ImageFileError as err:
        raise NiftiFormatError(
            f"{path}: not a NIfTI-1, NIfTI-2 or Analyze image (no valid header found: {err})"
        ) from err
    except (PermissionError, IsADirectoryError):
        raise
    except _PARSE_OR_OS_ERRORS as err:
        raise NiftiFormatError(f"{path}: cannot parse the image header: {err}") from err
    _reject_non_nifti(path, img)
    header_file = (img.file_map.get("header") or img.file_map["image"]).filename
    image_file = os.path.abspath(img.file_map["image"].filename)
    if not os.path.exists(image_file):
        raise FileNotFoundError(
            f"{header_file}: the image data file {image_file} of this header/image pair is missing"
        )
    if os.path.abspath(header_file) != image_file:
        stamps = (*stamps[:1], stamp_local(image_file))
    else:
        stamps = (stamp_local(image_file),)
    try:
        if block is not None:
            header = img.header_class.from_fileobj(io.BytesIO(block), check=False)
            header.extensions = extensions
        else:
            with ImageOpener(header_file) as fobj:
                header = img.header_class.from_fileobj(fobj, check=False)
    except _PARSE_OR_OS_ERRORS as err:
        raise NiftiFormatError(f"{header_file}: cannot parse the image header: {err}") from err
    image = (image_file, None, _compression_of(image_file), stamps[-1].size)
    return _finish(path, img, header, image, stamps)


# -- remote pairs ----------------------------------------------------------------------------


def _remote_bytes(fs: Any, path: str, name: str, end: int | None = None) -> bytes:
    try:
        data: bytes = fs.cat_file(path, start=0 if end is not None else None, end=end)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{name}: no such object ({err})") from err
    except PermissionError as err:
        raise PermissionError(f"{name}: access denied, check the credentials ({err})") from err
    return data


def _pair_class(name: str, raw: bytes) -> type:
    for klass in _PAIR_CLASSES:
        if klass.header_class.may_contain_header(raw[: klass._meta_sniff_len]):  # type: ignore[attr-defined]
            return klass
    raise NiftiFormatError(f"{name}: not a NIfTI-1, NIfTI-2 or Analyze header")


def open_fsspec_pair(
    fs: Any, path: str, name: str, open_file: Callable[[Any, str], Any]
) -> ImageSource:
    """Parse a remote pair given the fsspec path of its ``.hdr`` or ``.img`` object.

    ``name`` is the URL the user gave (used in messages); ``open_file(fs, path)``
    makes the picklable ``fsspec.core.OpenFile`` the data is read through.
    """
    header_path = path if _is_header(path) else _partner(path, ".hdr", fs.exists)
    image_path = _partner(header_path, ".img", fs.exists)
    header_name, image_name = fs.unstrip_protocol(header_path), fs.unstrip_protocol(image_path)
    for p, n in ((header_path, header_name), (image_path, image_name)):
        if not fs.exists(p):
            raise FileNotFoundError(f"{name}: the file {n} of this header/image pair is missing")
    stamps = (stamp_fsspec(fs, header_path, header_name), stamp_fsspec(fs, image_path, image_name))
    raw = _remote_bytes(fs, header_path, header_name)
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise NiftiFormatError(f"{header_name}: cannot decompress the header: {err}") from err
    layout = _check_raw_header(header_name, raw[:_HEAD_BYTES], single=False)
    block, extensions = raw[: layout.sizeof_hdr], None
    if _has_extensions(raw, layout):
        block, extensions = _pair_extensions(header_name, raw, layout)
    klass: Any = _pair_class(header_name, raw)
    mat_path = _split_suffix(header_path)[0][:-4] + ".mat"
    mat = _remote_bytes(fs, mat_path, fs.unstrip_protocol(mat_path)) if fs.exists(mat_path) else b""
    holders = {"header": io.BytesIO(block), "image": io.BytesIO(b""), "mat": io.BytesIO(mat)}
    try:
        with LoggingOutputSuppressor():
            img = klass.from_file_map(klass.make_file_map(holders))
        header = img.header_class.from_fileobj(io.BytesIO(block), check=False)
    except _PARSE_OR_OS_ERRORS as err:
        raise NiftiFormatError(f"{header_name}: cannot parse the image header: {err}") from err
    if extensions is not None:
        header.extensions = extensions
    start = _remote_bytes(fs, image_path, image_name, end=2)
    compression = "gzip" if start == _GZIP_MAGIC else None
    if compression is None and _split_suffix(image_path)[1]:
        raise NiftiFormatError(
            f"{image_name}: .bz2/.zst image files are read from local paths only; "
            "decompress it or use gzip"
        )
    image = (None, open_file(fs, image_path), compression, stamps[-1].size)
    return _finish(name, img, header, image, stamps)


def _is_header(path: str) -> bool:
    return _split_suffix(path)[0].lower().endswith(".hdr")
