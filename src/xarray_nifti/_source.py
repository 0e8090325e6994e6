"""Parsed images and single-file parsing: header bytes in, :class:`ImageSource` out.

Parsing is nibabel's: we only pick the right header class, read the header
(never the data), and check that the data block the header describes can
exist, so that broken files fail at open time with a message naming the file
and the field at fault.

Single files (``.nii``, ``.nii.gz``, file objects) are parsed by handing the
(decompressed) header bytes to nibabel's header class: this never touches the
voxel data or the gzip trailer, so a damaged stream fails when the damaged
part is read, with a message that says so. Pairs are in :mod:`._pairs`; what
the user passed (path, URL, file object) is resolved in :mod:`._resolve`.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass
from typing import IO, Any

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from ._affine_choice import choose_affine
from ._errors import NiftiFormatError, NiftiTruncatedError
from ._extensions import read_extensions
from ._header import (
    _COMPRESSED_SUFFIXES,
    _GZIP_MAGIC,
    _HEAD_BYTES,
    _MAX_DEFLATE_RATIO,
    _PARSE_ERRORS,
    _check_dtype,
    _check_offset_in_file,
    _check_raw_header,
    _check_shape,
    _check_single_offset,
    _cifti_error,
    _is_cifti,
    _sanitize_header,
)
from ._identity import FileStamp, stamp_local

__all__ = ["DataLocation", "ImageSource", "open_fileobj", "open_single_path"]


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
    stamps: tuple[FileStamp, ...] = ()

    @property
    def nbytes(self) -> int:
        """Bytes of the data block (Python int: never overflows)."""
        n = self.dtype.itemsize
        for size in self.shape:
            n *= size
        return n

    def cache_key(self) -> str:
        """Identifies the file's content as opened, for per-process reader sharing.

        Stamped files (paths, URLs) share one reader per process across every
        dataset and unpickled copy opened on the same version of the file.
        """
        if self.stamps:
            return "|".join(f"{s.name}:{s.size}:{s.version}" for s in self.stamps)
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
    stamps: tuple[FileStamp, ...],
) -> DataLocation:
    """The data location, after checking that the file can hold the data block.

    ``size`` is the (compressed, for gzip) size of the file holding the data;
    ``stamps`` identify the files as they were when the header was read.
    """
    shape = _check_shape(name, header)
    dtype = _check_dtype(name, header)
    location = DataLocation(name, path, fileobj, compression, offset, shape, dtype, size, stamps)
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
    name: str,
    fileobj: IO[bytes],
    path: str | None,
    head: bytes,
    file_size: int | None,
    stamps: tuple[FileStamp, ...],
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
                    extensions, _ = read_extensions(
                        name, stream, header, layout.endian, offset - layout.sizeof_hdr - 4
                    )
            else:
                fileobj.read(layout.sizeof_hdr + 4)
                extensions, _ = read_extensions(
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
        name,
        header,
        path,
        None if path is not None else fileobj,
        compression,
        offset,
        file_size,
        stamps,
    )
    affine = choose_affine(name, header, header.get_best_affine)
    return ImageSource(
        name,
        image_class,
        header,
        affine,
        location,
        1.0 if slope is None else float(slope),
        0.0 if inter is None else float(inter),
    )


def open_single_path(path: str) -> ImageSource:
    """Parse a local single-file image (``.nii``, ``.nii.gz``, ``.nii.bz2``...)."""
    opener: Any
    with open(path, "rb") as raw:
        stamp = stamp_local(path, opened=raw)  # before reading: a change from now on is noticed
        raw.seek(0)
        compressed_other = raw.read(2) != _GZIP_MAGIC and path.lower().endswith(
            _COMPRESSED_SUFFIXES[1:]
        )
        if compressed_other:  # .bz2 / .zst: nibabel's opener decompresses by suffix
            try:
                opener = ImageOpener(path, "rb")
            except (OSError, ValueError, ImportError) as err:
                raise NiftiFormatError(f"{path}: cannot decompress the file: {err}") from err
        else:
            opener = raw
        try:
            try:
                head = _read_head(opener, path)
            except (OSError, EOFError, ValueError) as err:
                if isinstance(err, NiftiFormatError):
                    raise
                raise NiftiFormatError(f"{path}: cannot decompress the file: {err}") from err
            return _open_single(path, opener, path, head, stamp.size, (stamp,))
        finally:
            if opener is not raw:
                opener.close()


def open_fileobj(fileobj: Any, name: str, stamps: tuple[FileStamp, ...] = ()) -> ImageSource:
    """Parse a single-file image from a binary file object (``stamps``: the file it reads)."""
    head = _read_head(fileobj, name)
    size = _size_of(fileobj)
    return _open_single(name, fileobj, None, head, size, stamps)
