"""Resolve what the user passed (path, file object, URL) into a parsed header and a data location.

Parsing is nibabel's: we only pick the right header class, read the header
(never the data), and check that the data block the header describes can
exist, so that broken files fail at open time with a message naming the file
and the field at fault.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError

from ._errors import NiftiFormatError, NiftiTruncatedError

__all__ = ["DataLocation", "ImageSource", "open_source", "sniff_format"]

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_CLASSES: tuple[type, ...] = (
    nib.Nifti1Image,
    nib.Nifti2Image,
    nib.Nifti1Pair,
    nib.Nifti2Pair,
    nib.AnalyzeImage,
    nib.Spm99AnalyzeImage,
    nib.Spm2AnalyzeImage,
)
_CIFTI_INTENTS = range(3000, 3100)


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


def sniff_format(head: bytes) -> str | None:
    """Name the format of a file from its first (uncompressed) 348+ bytes, or ``None``.

    Examples
    --------
    >>> sniff_format(b"")
    """
    if len(head) < 348:
        return None
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", head[:4])
        if size == 348:
            magic = head[344:348]
            if magic == b"n+1\x00":
                return "nifti1"
            if magic == b"ni1\x00":
                return "nifti1-pair"
            return "analyze"
        if size == 540 and len(head) >= 12:
            magic = head[4:12]
            if magic[:3] == b"n+2":
                return "nifti2"
            if magic[:3] == b"ni2":
                return "nifti2-pair"
    return None


def _read_head(fileobj: IO[bytes], count: int = 552) -> bytes:
    fileobj.seek(0)
    start = fileobj.read(2)
    fileobj.seek(0)
    if start == _GZIP_MAGIC:
        try:
            with gzip.GzipFile(fileobj=fileobj, mode="rb") as stream:
                return stream.read(count)
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise NiftiFormatError(f"corrupt gzip stream: {err}") from err
    return fileobj.read(count)


def _checked_path(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a NIfTI file")
    if os.path.getsize(path) == 0:
        raise NiftiFormatError(f"{path}: the file is empty (0 bytes), not a NIfTI image")
    return path


def _reject_non_nifti(name: str, img: Any, header: Any) -> None:
    if isinstance(img, nib.Cifti2Image) or (
        "intent_code" in header and int(header["intent_code"]) in _CIFTI_INTENTS
    ):
        raise NiftiFormatError(
            f"{name}: this is a CIFTI-2 file (intent code {int(header['intent_code'])}): it "
            "stores surface/greyordinate data, not a voxel grid. Open it with "
            "nibabel.load() instead."
        )
    if img is not None and not isinstance(img, _NIFTI_CLASSES):
        raise NiftiFormatError(
            f"{name}: this is a {type(img).__name__} image, not NIfTI or Analyze; "
            "engine='nifti' reads NIfTI-1, NIfTI-2 and Analyze 7.5 files only"
        )


def _check_shape(name: str, header: Any) -> tuple[int, ...]:
    dims = header["dim"]
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise NiftiFormatError(
            f"{name}: header field dim[0] = {ndim} must be between 1 and 7 (number of dimensions)"
        )
    shape = tuple(int(n) for n in dims[1 : ndim + 1])
    bad = [n for n in shape if n <= 0]
    if bad:
        raise NiftiFormatError(
            f"{name}: header field dim = {list(shape)} has a zero or negative size; every "
            "dimension needs at least one voxel"
        )
    return shape


def _check_dtype(name: str, header: Any) -> np.dtype[Any]:
    try:
        return np.dtype(header.get_data_dtype())
    except (HeaderDataError, KeyError, TypeError, ValueError) as err:
        code = int(header["datatype"]) if "datatype" in header else None
        raise NiftiFormatError(
            f"{name}: unknown or unsupported datatype code {code} in the header ({err})"
        ) from err


def _location(
    name: str,
    header: Any,
    path: str | None,
    fileobj: Any,
    compression: str | None,
    offset: int,
) -> DataLocation:
    shape = _check_shape(name, header)
    dtype = _check_dtype(name, header)
    size = mtime = None
    if path is not None:
        stat = os.stat(path)
        size, mtime = stat.st_size, stat.st_mtime_ns
    location = DataLocation(name, path, fileobj, compression, offset, shape, dtype, size, mtime)
    if compression is None and size is not None and offset + location.nbytes > size:
        raise NiftiTruncatedError(
            f"{name}: the header describes {location.nbytes} bytes of data at offset {offset} "
            f"(dim {list(shape)}, {dtype}), but the file has only {size} bytes; the file is "
            "truncated or its dims are wrong"
        )
    if compression is None and size is not None and offset > size:
        raise NiftiFormatError(f"{name}: vox_offset {offset} is past the end of the file ({size} bytes)")
    return location


def _compression_of(path: str) -> str | None:
    with open(path, "rb") as f:
        if f.read(2) == _GZIP_MAGIC:
            return "gzip"
    if path.endswith((".bz2", ".zst")):
        return "other"
    return None


def _open_path(path: str) -> ImageSource:
    _checked_path(path)
    try:
        img = nib.load(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: {err}") from err
    except ImageFileError as err:
        raise NiftiFormatError(
            f"{path}: not a NIfTI-1, NIfTI-2 or Analyze image (no valid header found: {err})"
        ) from err
    except (HeaderDataError, ValueError, struct.error, OSError, EOFError) as err:
        raise NiftiFormatError(f"{path}: cannot parse the image header: {err}") from err
    header_file = (img.file_map.get("header") or img.file_map["image"]).filename
    image_file = img.file_map["image"].filename
    try:
        with ImageOpener(header_file) as fobj:
            header = img.header_class.from_fileobj(fobj)
    except (HeaderDataError, ValueError, struct.error, OSError, EOFError) as err:
        raise NiftiFormatError(f"{header_file}: cannot parse the image header: {err}") from err
    _reject_non_nifti(path, img, header)
    if not os.path.exists(image_file):
        raise FileNotFoundError(
            f"{header_file}: the image data file {image_file} of this header/image pair is missing"
        )
    offset = int(img.dataobj.offset)
    location = _location(path, header, image_file, None, _compression_of(image_file), offset)
    return ImageSource(
        path,
        type(img),
        header,
        np.asarray(img.affine, dtype=np.float64),
        location,
        float(img.dataobj.slope),
        float(img.dataobj.inter),
    )


def _open_fileobj(fileobj: Any, name: str) -> ImageSource:
    head = _read_head(fileobj)
    kind = sniff_format(head)
    classes: dict[str, tuple[type, type]] = {
        "nifti1": (nib.Nifti1Header, nib.Nifti1Image),
        "nifti2": (nib.Nifti2Header, nib.Nifti2Image),
    }
    if kind is None:
        raise NiftiFormatError(
            f"{name}: not a NIfTI-1 or NIfTI-2 image (no valid sizeof_hdr/magic in the first bytes)"
        )
    if kind not in classes:
        raise NiftiFormatError(
            f"{name}: a {kind} header needs its separate .img file; open the pair by path"
        )
    header_class, image_class = classes[kind]
    compressed = head is not None and _peek(fileobj) == _GZIP_MAGIC
    try:
        if compressed:
            fileobj.seek(0)
            with gzip.GzipFile(fileobj=fileobj, mode="rb") as stream:
                header = header_class.from_fileobj(stream)
        else:
            fileobj.seek(0)
            header = header_class.from_fileobj(fileobj)
    except (HeaderDataError, ValueError, struct.error, OSError, EOFError) as err:
        raise NiftiFormatError(f"{name}: cannot parse the image header: {err}") from err
    _reject_non_nifti(name, None, header)
    slope, inter = header.get_slope_inter()
    location = _location(
        name, header, None, fileobj, "gzip" if compressed else None, int(header.get_data_offset())
    )
    return ImageSource(
        name,
        image_class,
        header,
        np.asarray(header.get_best_affine(), dtype=np.float64),
        location,
        1.0 if slope is None else float(slope),
        0.0 if inter is None else float(inter),
    )


def _peek(fileobj: Any) -> bytes:
    fileobj.seek(0)
    start: bytes = fileobj.read(2)
    fileobj.seek(0)
    return start


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
        fileobj = open_file.open()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{name}: no such object ({err})") from err
    except PermissionError as err:
        raise PermissionError(f"{name}: access denied, check the credentials ({err})") from err
    try:
        source = _open_fileobj(fileobj, name)
    finally:
        fileobj.close()
    location = DataLocation(**{**source.data.__dict__, "fileobj": open_file})
    return ImageSource(**{**source.__dict__, "data": location})


def is_openable_fileobj(value: Any) -> bool:
    """Whether ``value`` looks like a binary file object we can read."""
    return isinstance(value, io.IOBase | io.BytesIO) or (
        hasattr(value, "read") and hasattr(value, "seek")
    )
