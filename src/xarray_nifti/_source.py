"""Resolve what the user passed (path, file object, URL) into a parsed header and a data location.

Parsing is nibabel's: we only pick the right header class, read the header
(never the data), and check that the data block the header describes can
exist, so that broken files fail at open time with a message naming the file
and the field at fault.

Single files (``.nii``, ``.nii.gz``, file objects) are parsed by handing the
(decompressed) header bytes to nibabel's header class: this never touches the
voxel data or the gzip trailer, so a damaged stream fails when the damaged
part is read, with a message that says so. ``.hdr``/``.img`` pairs and Analyze
images go through :func:`nibabel.load`, which knows how to find the partner
file.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.imageglobals import LoggingOutputSuppressor
from nibabel.openers import ImageOpener

from ._errors import NiftiFormatError, NiftiTruncatedError
from ._header import (
    _COMPRESSED_SUFFIXES,
    _HEAD_BYTES,
    _MAX_DEFLATE_RATIO,
    _PAIR_SUFFIXES,
    _PARSE_ERRORS,
    _PARSE_OR_OS_ERRORS,
    _check_dtype,
    _check_offset_in_file,
    _check_raw_header,
    _check_shape,
    _check_single_offset,
    _checked_path,
    _choose_affine,
    _cifti_error,
    _is_cifti,
    _RawHeader,
    _read_extensions,
    _reject_non_nifti,
    _sanitize_header,
)

__all__ = ["DataLocation", "ImageSource", "open_source"]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class DataLocation:
    """Where the voxel data of an image lives, and how it is stored.

    Exactly one of ``path`` and ``fileobj`` is set. ``fileobj`` must be
    picklable for the dataset to pickle (``io.BytesIO`` and fsspec
    ``OpenFile`` objects are).
    """

    name: str
    path: str | None
    fileobj: Any
    compression: str | None  # None, "gzip" or "other" (read through nibabel's opener)
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    file_size: int | None
    mtime_ns: int | None

    @property
    def nbytes(self) -> int:
        """Bytes of the data block (Python int: never overflows)."""
        n = self.dtype.itemsize
        for size in self.shape:
            n *= size
        return n

    def cache_key(self) -> str:
        """Identifies the file's current content for per-process reader sharing."""
        if self.path is not None:
            return f"{self.path}|{self.mtime_ns}|{self.file_size}"
        return f"fileobj-{id(self.fileobj)}"


@dataclass(frozen=True)
class ImageSource:
    """A parsed image: its nibabel class, raw header, chosen affine and data location."""

    name: str
    image_class: type
    header: Any
    affine: np.ndarray
    data: DataLocation
    slope: float
    inter: float

    @property
    def format(self) -> str:
        """``"nifti1"``, ``"nifti2"`` or ``"analyze"``."""
        if issubclass(self.image_class, nib.Nifti2Image | nib.Nifti2Pair):
            return "nifti2"
        if issubclass(self.image_class, nib.Nifti1Image | nib.Nifti1Pair):
            return "nifti1"
        return "analyze"


# -- reading the first bytes ---------------------------------------------------------


def _inflate_head(fileobj: IO[bytes], name: str, count: int) -> bytes:
    """The first ``count`` uncompressed bytes of a gzip stream (fewer if it ends)."""
    fileobj.seek(0)
    inflater = zlib.decompressobj(31)
    out = bytearray()
    data = b""
    try:
        while len(out) < count:
            if not data:
                data = fileobj.read(1 << 16)
                if not data:
                    raise NiftiTruncatedError(
                        f"{name}: the gzip stream is cut short after {len(out)} uncompressed "
                        "bytes, inside the header; the file is truncated"
                    )
            out += inflater.decompress(data, count - len(out))
            if inflater.eof:
                data = inflater.unused_data
                if not data:
                    data = fileobj.read(1 << 16)
                if data[:2] != _GZIP_MAGIC:
                    break
                inflater = zlib.decompressobj(31)
            else:
                data = inflater.unconsumed_tail
    except zlib.error as err:
        raise NiftiFormatError(
            f"{name}: corrupt gzip stream at the start of the file: {err}"
        ) from err
    return bytes(out)


def _read_head(fileobj: IO[bytes], name: str, count: int = _HEAD_BYTES) -> bytes:
    start = _peek(fileobj)
    if isinstance(start, str):
        raise TypeError(
            f"{name}: the file object is open in text mode; open it in binary mode ('rb')"
        )
    if start == _GZIP_MAGIC:
        return _inflate_head(fileobj, name, count)
    fileobj.seek(0)
    head: bytes = fileobj.read(count)
    return head


def _peek(fileobj: Any) -> Any:
    fileobj.seek(0)
    start = fileobj.read(2)
    fileobj.seek(0)
    return start


def _size_of(fileobj: Any) -> int | None:
    try:
        end = int(fileobj.seek(0, io.SEEK_END))
        fileobj.seek(0)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return end


def _location(
    name: str,
    header: Any,
    path: str | None,
    fileobj: Any,
    compression: str | None,
    offset: int,
    size: int | None,
) -> DataLocation:
    """The data location, after checking that the file can hold the data block.

    ``size`` is the (compressed, for gzip) size of the file holding the data.
    """
    shape = _check_shape(name, header)
    dtype = _check_dtype(name, header)
    mtime = None
    if path is not None:
        stat = os.stat(path)
        size, mtime = stat.st_size, stat.st_mtime_ns
    location = DataLocation(name, path, fileobj, compression, offset, shape, dtype, size, mtime)
    end = offset + location.nbytes
    if size is None or compression == "other":
        return location
    if compression is None:
        if offset > size:
            raise NiftiFormatError(
                f"{name}: header field vox_offset = {offset} is past the end of the file "
                f"({size} bytes)"
            )
        if end > size:
            raise NiftiTruncatedError(
                f"{name}: the header describes {location.nbytes} bytes of data at offset "
                f"{offset} (dim {list(shape)}, {dtype}), but the file has only {size} bytes; "
                "the file is truncated or its dims are wrong"
            )
    elif offset > _MAX_DEFLATE_RATIO * size:
        raise NiftiFormatError(
            f"{name}: header field vox_offset = {offset} is past the end of the file: a gzip "
            f"file of {size} bytes cannot hold more than {_MAX_DEFLATE_RATIO * size} "
            "uncompressed bytes"
        )
    elif end > _MAX_DEFLATE_RATIO * size:
        raise NiftiTruncatedError(
            f"{name}: the header describes {location.nbytes} bytes of data at offset {offset} "
            f"(dim {list(shape)}, {dtype}), but a gzip file of {size} bytes cannot hold more "
            f"than {_MAX_DEFLATE_RATIO * size} uncompressed bytes; the file is truncated or its "
            "dims are wrong"
        )
    return location


# -- single files -------------------------------------------------------------------


def _open_single(
    name: str, fileobj: IO[bytes], path: str | None, head: bytes, file_size: int | None
) -> ImageSource:
    """Parse a single-file NIfTI-1/2 image from an open binary file (maybe gzip)."""
    layout = _check_raw_header(name, head, single=True)
    header_class, image_class = {
        "nifti1": (nib.Nifti1Header, nib.Nifti1Image),
        "nifti2": (nib.Nifti2Header, nib.Nifti2Image),
    }[layout.kind]
    compressed = _peek(fileobj) == _GZIP_MAGIC
    compression: str | None = "gzip" if compressed else None
    if path is not None and not compressed and path.lower().endswith(_COMPRESSED_SUFFIXES[1:]):
        compression = "other"
    if path is not None and compression != "other":
        file_size = os.stat(path).st_size
    size_known = None if compression == "other" else file_size
    try:
        # check=False: the checks nibabel would log without a file name are ours
        header = header_class(head[: layout.sizeof_hdr], layout.endian, check=False)
        offset = int(header.get_data_offset())
    except _PARSE_ERRORS as err:
        raise NiftiFormatError(f"{name}: cannot parse the image header: {err}") from err
    _check_single_offset(name, layout, offset)
    _check_offset_in_file(name, offset, size_known, compressed)
    flag = head[layout.sizeof_hdr : layout.sizeof_hdr + 1]
    if flag not in (b"", b"\x00") and offset - layout.sizeof_hdr - 4 >= 16:
        try:
            fileobj.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=fileobj, mode="rb") as stream:
                    stream.read(layout.sizeof_hdr + 4)
                    extensions, _ = _read_extensions(
                        name, stream, header, layout.endian, offset - layout.sizeof_hdr - 4
                    )
            else:
                fileobj.read(layout.sizeof_hdr + 4)
                extensions, _ = _read_extensions(
                    name, fileobj, header, layout.endian, offset - layout.sizeof_hdr - 4
                )
        except (zlib.error, gzip.BadGzipFile) as err:
            raise NiftiFormatError(f"{name}: corrupt gzip stream in the header: {err}") from err
        except EOFError as err:
            raise NiftiTruncatedError(
                f"{name}: the file ends inside the header extensions: {err}"
            ) from err
        header.extensions = extensions
    if _is_cifti(header):
        raise _cifti_error(name, header)
    _sanitize_header(name, header)
    try:
        slope, inter = header.get_slope_inter()
    except _PARSE_ERRORS as err:
        raise NiftiFormatError(f"{name}: invalid header field: {err}") from err
    location = _location(
        name, header, path, None if path is not None else fileobj, compression, offset, file_size
    )
    affine = _choose_affine(name, header, header.get_best_affine)
    return ImageSource(
        name,
        image_class,
        header,
        affine,
        location,
        1.0 if slope is None else float(slope),
        0.0 if inter is None else float(inter),
    )


def _is_pair_path(path: str) -> bool:
    lower = path.lower()
    for suffix in _COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
            break
    return lower.endswith(_PAIR_SUFFIXES)


def _open_single_path(path: str) -> ImageSource:
    opener: Any
    with open(path, "rb") as raw:
        compressed_other = raw.read(2) != _GZIP_MAGIC and path.lower().endswith(
            _COMPRESSED_SUFFIXES[1:]
        )
    if compressed_other:  # .bz2 / .zst: nibabel's opener decompresses by suffix
        try:
            opener = ImageOpener(path, "rb")
        except (OSError, ValueError, ImportError) as err:
            raise NiftiFormatError(f"{path}: cannot decompress the file: {err}") from err
    else:
        opener = open(path, "rb")  # noqa: SIM115 - closed below
    try:
        try:
            head = _read_head(opener, path)
        except (OSError, EOFError, ValueError) as err:
            if isinstance(err, NiftiFormatError):
                raise
            raise NiftiFormatError(f"{path}: cannot decompress the file: {err}") from err
        return _open_single(path, opener, path, head, None)
    finally:
        opener.close()


# -- pairs and Analyze ------------------------------------------------------------------


def _header_file_of(path: str) -> str:
    """The header file of a .hdr/.img pair given either file (may not exist)."""
    base, compression = path, ""
    for suffix in _COMPRESSED_SUFFIXES:
        if base.lower().endswith(suffix):
            base, compression = base[: -len(suffix)], base[-len(suffix) :]
            break
    if not base.lower().endswith(".img"):
        return path
    hdr = ".HDR" if base.endswith(".IMG") else ".hdr"
    stem = base[: -len(".img")]
    variants = [compression, "", *(s for s in _COMPRESSED_SUFFIXES if s != compression)]
    candidates = [stem + hdr + (v.upper() if compression.isupper() else v) for v in variants]
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    return candidates[0]


def _pair_extensions(header_path: str, layout: _RawHeader) -> tuple[bytes, Any]:
    """The header bytes of a NIfTI pair without extensions, and its checked extensions.

    nibabel reads a detached header's extensions to the end of the file and
    fails on an impossible ``esize``; ours are read by :func:`_read_extensions`
    (bad ones are dropped with a warning) and nibabel gets the header alone.
    """
    try:
        with ImageOpener(header_path, "rb") as fobj:
            raw = fobj.read()
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise NiftiFormatError(f"{header_path}: cannot read the header: {err}") from err
    block = raw[: layout.sizeof_hdr]
    header_class = (
        nib.nifti1.Nifti1PairHeader if layout.sizeof_hdr == 348 else nib.nifti2.Nifti2PairHeader
    )
    header = header_class(block, layout.endian, check=False)
    stream = io.BytesIO(raw[layout.sizeof_hdr + 4 :])
    extensions, _ = _read_extensions(header_path, stream, header, layout.endian, None)
    return block + bytes(4), extensions


def _load_pair(path: str, header_path: str, layout: _RawHeader | None, block: bytes | None) -> Any:
    with LoggingOutputSuppressor():  # header problems are reported as warnings later
        if block is None or layout is None:
            return nib.load(path)
        klass = nib.Nifti1Pair if layout.sizeof_hdr == 348 else nib.Nifti2Pair
        file_map = klass.filespec_to_file_map(header_path)
        file_map["header"].fileobj = io.BytesIO(block)
        return klass.from_file_map(file_map)


def _open_pair_path(path: str) -> ImageSource:
    header_path = _header_file_of(path)
    layout: _RawHeader | None = None
    block: bytes | None = None
    extensions: Any = None
    if os.path.isfile(header_path) and os.path.getsize(header_path) > 0:
        try:
            with ImageOpener(header_path, "rb") as fobj:
                head = fobj.read(_HEAD_BYTES)
        except (OSError, EOFError, zlib.error, ValueError) as err:
            raise NiftiFormatError(f"{header_path}: cannot read the header: {err}") from err
        layout = _check_raw_header(header_path, head, single=False)
        flag = head[layout.sizeof_hdr : layout.sizeof_hdr + 1]
        if layout.kind in ("nifti1-pair", "nifti2-pair") and flag not in (b"", b"\x00"):
            block, extensions = _pair_extensions(header_path, layout)
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
    try:
        if block is not None:
            header = img.header_class.from_fileobj(io.BytesIO(block), check=False)
            header.extensions = extensions
        else:
            with ImageOpener(header_file) as fobj:
                header = img.header_class.from_fileobj(fobj, check=False)
        offset = int(img.dataobj.offset)
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    except _PARSE_OR_OS_ERRORS as err:
        raise NiftiFormatError(f"{header_file}: cannot parse the image header: {err}") from err
    if _is_cifti(header):
        raise _cifti_error(path, header)
    _sanitize_header(path, header)
    location = _location(path, header, image_file, None, _compression_of(image_file), offset, None)
    affine = _choose_affine(path, header, lambda: img.affine)
    return ImageSource(path, type(img), header, affine, location, slope, inter)


def _compression_of(path: str) -> str | None:
    with open(path, "rb") as f:
        if f.read(2) == _GZIP_MAGIC:
            return "gzip"
    if path.lower().endswith(_COMPRESSED_SUFFIXES[1:]):
        return "other"
    return None


def _open_path(path: str) -> ImageSource:
    path = os.path.abspath(path)
    _checked_path(path)
    if _is_pair_path(path):
        return _open_pair_path(path)
    return _open_single_path(path)


# -- file objects and URLs ---------------------------------------------------------------


def _local_path_of(fileobj: Any) -> str | None:
    """The path of a regular local file object (so that we can reopen it), or ``None``."""
    name = getattr(fileobj, "name", None)
    if not isinstance(fileobj, io.BufferedReader | io.FileIO) or not isinstance(name, str):
        return None
    try:
        opened, named = os.fstat(fileobj.fileno()), os.stat(name)
    except (OSError, ValueError):
        return None
    if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
        return None
    return os.path.abspath(name)


def _open_fileobj(fileobj: Any, name: str) -> ImageSource:
    head = _read_head(fileobj, name)
    size = _size_of(fileobj)
    return _open_single(name, fileobj, None, head, size)


def _is_url(value: str) -> bool:
    return "://" in value and not value.startswith("file://")


def open_source(filename_or_obj: Any, storage_options: dict[str, Any] | None = None) -> ImageSource:
    """Parse the header of a path, URL or binary file object.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        For a missing path (or the missing half of a pair) or a directory.
    NiftiFormatError
        For anything that is not a readable NIfTI-1/2 or Analyze header.
    """
    if isinstance(filename_or_obj, str | os.PathLike):
        text = os.fspath(filename_or_obj)
        if isinstance(text, bytes):
            text = text.decode()
        if _is_url(text):
            return _open_url(text, storage_options or {})
        if text.startswith("file://"):
            text = text[len("file://") :]
        return _open_path(str(Path(text).expanduser()))
    if hasattr(filename_or_obj, "read") and hasattr(filename_or_obj, "seek"):
        local = _local_path_of(filename_or_obj)
        if local is not None:  # reopen by path: memory mapped, picklable
            return _open_path(local)
        name = str(getattr(filename_or_obj, "name", None) or f"<{type(filename_or_obj).__name__}>")
        return _open_fileobj(filename_or_obj, name)
    if hasattr(filename_or_obj, "open") and hasattr(filename_or_obj, "path"):  # fsspec OpenFile
        return _open_fsspec(filename_or_obj, str(filename_or_obj.path))
    raise TypeError(
        "engine='nifti' opens a path, a URL or a binary file object, not "
        f"{type(filename_or_obj).__name__}"
    )


def _open_url(url: str, storage_options: dict[str, Any]) -> ImageSource:
    try:
        import fsspec
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading {url} needs fsspec: pip install 'xarray-nifti[remote]'"
        ) from err
    open_file = fsspec.open(url, mode="rb", **storage_options)
    return _open_fsspec(open_file, url)


def _open_fsspec(open_file: Any, name: str) -> ImageSource:
    try:
        # A small read-ahead: filesystems such as s3fs default to 50 MiB
        # blocks, which would download whole images to parse a header.
        fileobj = open_file.fs.open(
            open_file.path, mode="rb", block_size=1 << 16, cache_type="readahead"
        )
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{name}: no such object ({err})") from err
    except PermissionError as err:
        raise PermissionError(f"{name}: access denied, check the credentials ({err})") from err
    try:
        source = _open_fileobj(fileobj, name)
    finally:
        fileobj.close()
    return replace(source, data=replace(source.data, fileobj=open_file))
