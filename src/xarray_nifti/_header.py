"""Checks and repairs of a parsed NIfTI/Analyze header, done before any voxel is read.

Raw checks look at the header bytes themselves (sizeof_hdr, magic, dim[0],
byte order, vox_offset); parsed checks look at nibabel's header object
(shape, dtype, units, pixdim, scaling, the sform/qform choice) and at the
header extensions, which are read here with their sizes checked. A field that
cannot be used either raises :class:`NiftiFormatError` naming the file and the
field, or falls back to a documented value with a :class:`NiftiHeaderWarning`.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass, replace
from typing import Any, cast

import nibabel as nib
import numpy as np
import xarray
from nibabel.analyze import AnalyzeHeader
from nibabel.filebasedimages import FileBasedImage
from nibabel.spatialimages import HeaderDataError

from ._errors import NiftiFormatError, NiftiHeaderWarning, NiftiTruncatedError

__all__ = ["is_url", "sniff_format"]

# nibabel rebuilds a code table's value set on every call: once here.
_XFORM_CODES = frozenset(nib.nifti1.xform_codes.value_set())

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
_CIFTI_ECODE = 32
_HEAD_BYTES = 552  # a NIfTI-2 header (540) + the 4-byte extension flag, rounded up
# deflate cannot expand data by more than 1032:1 (zlib FAQ), so a gzip file of
# n bytes holds at most this many uncompressed bytes per compressed byte.
_MAX_DEFLATE_RATIO = 1032
_PAIR_SUFFIXES = (".hdr", ".img")
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst")
_GZIP_MAGIC = b"\x1f\x8b"
# Suffixes the backend claims even without a readable header (open_dataset then
# explains what is wrong); .hdr/.img are also used by ENVI, ERDAS and others, so
# those are claimed only when a NIfTI/Analyze header is found.
_SINGLE_SUFFIXES = (".nii", ".nii.gz", ".nii.bz2", ".nii.zst")


def is_url(value: str) -> bool:
    """Whether ``value`` is an fsspec URL (``file://`` URLs are local paths)."""
    return "://" in value and not value.startswith("file://")


# Errors nibabel (and the numpy/struct code under it) raise for malformed headers.
_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    HeaderDataError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    struct.error,
    OverflowError,
    ZeroDivisionError,
    MemoryError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
)
_PARSE_OR_OS_ERRORS: tuple[type[BaseException], ...] = (*_PARSE_ERRORS, OSError)


# -- raw header checks --------------------------------------------------------------


@dataclass(frozen=True)
class _RawHeader:
    kind: str  # "nifti1", "nifti1-pair", "nifti2", "nifti2-pair" or "analyze"
    endian: str
    sizeof_hdr: int
    stored_sizeof_hdr: int | None = None  # set when the stored value is wrong


_NIFTI1_MAGICS = {b"n+1\x00": "nifti1", b"ni1\x00": "nifti1-pair"}
_NIFTI2_MAGICS = {b"n+2\x00": "nifti2", b"ni2\x00": "nifti2-pair"}


def _ndim_endian(head: bytes, offset: int, fmt: str) -> str | None:
    """The byte order in which ``dim[0]`` (at ``offset``) is 1..7, or ``None``."""
    for endian in "<>":
        (ndim,) = struct.unpack(endian + fmt, head[offset : offset + struct.calcsize(fmt)])
        if 1 <= ndim <= 7:
            return endian
    return None


def _raw_layout(head: bytes) -> _RawHeader | None:
    """Format and byte order from ``sizeof_hdr`` and the magic, or ``None``.

    A wrong ``sizeof_hdr`` is accepted when the NIfTI magic is intact (the
    byte order then comes from ``dim[0]``, as nibabel and niftilib read it).
    """
    if len(head) < 4:
        return None
    bad_magic: _RawHeader | None = None
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", head[:4])
        if size == 348:
            return _RawHeader(_NIFTI1_MAGICS.get(head[344:348], "analyze"), endian, 348)
        if size == 540:
            if head[4:8] in _NIFTI2_MAGICS:
                return _RawHeader(_NIFTI2_MAGICS[head[4:8]], endian, 540)
            bad_magic = _RawHeader("nifti2-badmagic", endian, 540)
            break  # unless a NIfTI-1 magic says what it is
    if len(head) >= 348 and head[344:348] in _NIFTI1_MAGICS:
        endian1 = _ndim_endian(head, 40, "h")
        if endian1 is not None:
            (stored,) = struct.unpack(endian1 + "i", head[:4])
            return _RawHeader(_NIFTI1_MAGICS[head[344:348]], endian1, 348, stored)
    if len(head) >= 540 and head[4:8] in _NIFTI2_MAGICS and head[8:12] == b"\r\n\x1a\n":
        endian2 = _ndim_endian(head, 16, "q")
        if endian2 is not None:
            (stored,) = struct.unpack(endian2 + "i", head[:4])
            return _RawHeader(_NIFTI2_MAGICS[head[4:8]], endian2, 540, stored)
    return bad_magic


def sniff_format(head: bytes) -> str | None:
    """Name the format of a file from its first (uncompressed) 348+ bytes, or ``None``.

    Examples
    --------
    >>> sniff_format(b"")
    >>> import nibabel
    >>> sniff_format(nibabel.Nifti1Header().binaryblock)
    'nifti1'
    """
    layout = _raw_layout(head)
    if layout is None or len(head) < layout.sizeof_hdr or layout.kind == "nifti2-badmagic":
        return None
    return layout.kind


def _check_raw_header(name: str, head: bytes, *, single: bool) -> _RawHeader:
    """Check the fields nibabel would misread or reject with an unclear message.

    ``single`` says that the file must be a single-file NIfTI image (data
    after the header in the same file).
    """
    layout = _raw_layout(head)
    if layout is None:
        what = "is empty" if not head else f"starts with {head[:8]!r}"
        raise NiftiFormatError(
            f"{name}: not a NIfTI-1, NIfTI-2 or Analyze image: the file {what}, but a "
            "header starts with sizeof_hdr = 348 or 540"
        )
    if len(head) < layout.sizeof_hdr:
        raise NiftiTruncatedError(
            f"{name}: the header is cut short: {len(head)} bytes, but a "
            f"{'NIfTI-2' if layout.sizeof_hdr == 540 else 'NIfTI-1/Analyze'} header has "
            f"{layout.sizeof_hdr}; the file is truncated"
        )
    if layout.stored_sizeof_hdr is not None:
        _warn(
            f"{name}: header field sizeof_hdr = {layout.stored_sizeof_hdr} is wrong (expected "
            f"{layout.sizeof_hdr}); the magic identifies a "
            f"{'NIfTI-1' if layout.sizeof_hdr == 348 else 'NIfTI-2'} header, read as one"
        )
    if layout.sizeof_hdr == 348:
        magic, expected = head[344:348], b"n+1\x00"
    else:
        magic, expected = head[4:8], b"n+2\x00"
    if layout.kind == "nifti2-badmagic" or (single and layout.kind not in ("nifti1", "nifti2")):
        hint = {
            "nifti1-pair": " (it is the header of a .hdr/.img pair: open the .hdr file by path)",
            "nifti2-pair": " (it is the header of a .hdr/.img pair: open the .hdr file by path)",
            "analyze": " (an Analyze 7.5 header has no magic; its data is in a separate .img "
            "file: open the .hdr file by path)",
        }.get(layout.kind, "")
        raise NiftiFormatError(
            f"{name}: wrong magic {bytes(magic)!r} in the header, expected {expected!r} for a "
            f"single-file image{hint}"
        )
    layout = _mixed_byte_order(name, head, layout)
    e = layout.endian
    if layout.sizeof_hdr == 348:
        dims = struct.unpack(e + "8h", head[40:56])
        (code,) = struct.unpack(e + "h", head[70:72])
        (vox_offset,) = struct.unpack(e + "f", head[108:112])
    else:
        dims = struct.unpack(e + "8q", head[16:80])
        (code,) = struct.unpack(e + "h", head[12:14])
        (vox_offset,) = struct.unpack(e + "q", head[168:176])
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise NiftiFormatError(
            f"{name}: header field dim[0] = {ndim} is out of range: the number of dimensions "
            "must be between 1 and 7"
        )
    shape = list(dims[1 : ndim + 1])
    if any(n <= 0 for n in shape):
        raise NiftiFormatError(
            f"{name}: header field dim = {shape} has a zero or negative size; every "
            "dimension needs at least one voxel"
        )
    codes = nib.analyze.data_type_codes if layout.kind == "analyze" else nib.nifti1.data_type_codes
    if code not in codes.code:
        raise NiftiFormatError(f"{name}: unknown datatype code {code} in the header")
    dtype: np.dtype[Any] = np.dtype(cast(Any, codes.dtype[code]))
    if dtype.kind == "V" and dtype.fields is None:
        raise NiftiFormatError(
            f"{name}: datatype code {code} ({codes.label[code]}) in the header is not supported"
        )
    if not np.isfinite(vox_offset) or vox_offset < 0:
        raise NiftiFormatError(
            f"{name}: header field vox_offset = {vox_offset} is not a valid byte offset"
        )
    if vox_offset != int(vox_offset):
        raise NiftiFormatError(
            f"{name}: header field vox_offset = {vox_offset} is not a whole number of bytes, "
            "so where the data starts is unknown"
        )
    return layout


def _mixed_byte_order(name: str, head: bytes, layout: _RawHeader) -> _RawHeader:
    """Follow ``dim[0]`` when it contradicts the byte order of ``sizeof_hdr`` (as nibabel)."""
    offset, fmt = (40, "h") if layout.sizeof_hdr == 348 else (16, "q")
    (ndim,) = struct.unpack(layout.endian + fmt, head[offset : offset + struct.calcsize(fmt)])
    if 1 <= ndim <= 7:
        return layout
    endian = _ndim_endian(head, offset, fmt)
    if endian is None:
        return layout  # dim[0] is invalid in both byte orders: reported by the caller
    order = {"<": "little", ">": "big"}
    _warn(
        f"{name}: header field sizeof_hdr is stored {order[layout.endian]}-endian but dim[0] "
        f"and the other fields are {order[endian]}-endian; the header and data are read "
        f"{order[endian]}-endian (as nibabel and niftilib do)"
    )
    return replace(layout, endian=endian, stored_sizeof_hdr=layout.sizeof_hdr)


def _check_single_offset(name: str, layout: _RawHeader, offset: int) -> None:
    first = layout.sizeof_hdr + 4
    if offset < first:
        raise NiftiFormatError(
            f"{name}: header field vox_offset = {offset} points inside the header: the data "
            f"of a single-file image starts at byte {first} or later"
        )


# -- checks on the parsed header -----------------------------------------------------------


def _checked_path(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a NIfTI file")
    if os.path.getsize(path) == 0:
        raise NiftiFormatError(f"{path}: the file is empty (0 bytes), not a NIfTI image")
    return path


def _is_cifti(header: AnalyzeHeader) -> bool:
    if "intent_code" in header and int(header["intent_code"]) in _CIFTI_INTENTS:
        return True
    extensions = getattr(header, "extensions", ())
    return any(int(ext.get_code()) == _CIFTI_ECODE for ext in extensions)


def _cifti_error(name: str, header: AnalyzeHeader) -> NiftiFormatError:
    code = int(header["intent_code"]) if "intent_code" in header else None
    return NiftiFormatError(
        f"{name}: this is a CIFTI-2 file (intent code {code}): it stores "
        "surface/greyordinate data, not a voxel grid. Open it with nibabel.load() instead."
    )


def _reject_non_nifti(name: str, img: FileBasedImage) -> None:
    if isinstance(img, nib.Cifti2Image):
        raise _cifti_error(name, img.nifti_header)
    if not isinstance(img, _NIFTI_CLASSES):
        raise NiftiFormatError(
            f"{name}: this is a {type(img).__name__} image, not NIfTI or Analyze; "
            "engine='nifti' reads NIfTI-1, NIfTI-2 and Analyze 7.5 files only"
        )


def _check_shape(name: str, header: AnalyzeHeader) -> tuple[int, ...]:
    dims = header["dim"]
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise NiftiFormatError(
            f"{name}: header field dim[0] = {ndim} is out of range: the number of dimensions "
            "must be between 1 and 7"
        )
    shape = tuple(int(n) for n in dims[1 : ndim + 1])
    if any(n <= 0 for n in shape):
        raise NiftiFormatError(
            f"{name}: header field dim = {list(shape)} has a zero or negative size; every "
            "dimension needs at least one voxel"
        )
    return shape


def _check_dtype(name: str, header: AnalyzeHeader) -> np.dtype[Any]:
    try:
        dtype: np.dtype[Any] = np.dtype(header.get_data_dtype())
    except (HeaderDataError, KeyError, TypeError, ValueError) as err:
        code = int(header["datatype"]) if "datatype" in header else None
        raise NiftiFormatError(
            f"{name}: unknown or unsupported datatype code {code} in the header ({err})"
        ) from err
    return dtype


_INTERNAL_DIRS = tuple(
    os.path.dirname(path) + os.sep for path in (nib.__file__, xarray.__file__, __file__) if path
)


def _warn(message: str) -> None:
    """Warn with a :class:`NiftiHeaderWarning` attributed to the caller's code.

    The warning points at the first frame outside this package, xarray and
    nibabel (usually the user's ``xr.open_dataset`` line).
    """
    level = 2
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        frame = frame.f_back
        level += 1
    warnings.warn(message, NiftiHeaderWarning, stacklevel=level)


_XYZ_UNIT_CODES = frozenset((0, 1, 2, 3))
_T_UNIT_CODES = frozenset((0, 8, 16, 24, 32, 40, 48))


def _sanitize_header(name: str, header: AnalyzeHeader) -> None:
    """Check the header fields nibabel reads without complaint but cannot use, in place.

    Fixes are nibabel's where nibabel has one (its header checks set zero
    voxel sizes to 1, take the absolute value of negative ones and reset
    invalid xform codes to 0), and each is reported as a
    :class:`NiftiHeaderWarning` naming the file and the field, instead of
    nibabel's log message without a file name. Raises :class:`NiftiFormatError`
    for fields that make the data unreadable.
    """
    ndim = int(header["dim"][0])
    if int(header["sizeof_hdr"]) != header.sizeof_hdr:  # reported by _check_raw_header
        header["sizeof_hdr"] = header.sizeof_hdr
    _check_bitpix(name, header)
    pixdim = header["pixdim"]
    for axis in (1, 2, 3):
        value = float(pixdim[axis])
        if np.isfinite(value) and value > 0:
            continue
        fixed = abs(value) if np.isfinite(value) and value < 0 else 1.0
        pixdim[axis] = fixed
        if axis <= ndim:
            _warn(
                f"{name}: header field pixdim[{axis}] = {value:g} is not a valid voxel size; "
                f"using {fixed:g}" + (" (its absolute value, as nibabel does)" if value < 0 else "")
            )
    if isinstance(header, nib.Nifti1Header) and float(pixdim[0]) not in (-1.0, 1.0):
        pixdim[0] = 1.0  # qfac: anything but -1 means 1 (NIfTI, nibabel); unused by Analyze
    if ndim >= 4:
        step = float(pixdim[4])
        if not np.isfinite(step) or step < 0:
            _warn(
                f"{name}: header field pixdim[4] = {step:g} is not a valid time step; the "
                "time axis gets no coordinate"
            )
    if "scl_slope" in header:
        slope = float(header["scl_slope"])
        inter = float(header["scl_inter"]) if "scl_inter" in header else 0.0
        if not np.isfinite(slope):
            _warn(
                f"{name}: header field scl_slope = {slope:g} is not a number; the data is "
                "read unscaled (as nibabel does)"
            )
        elif slope != 0 and not np.isfinite(inter):
            raise NiftiFormatError(
                f"{name}: header field scl_inter = {inter:g} (the intercept) is not a number "
                f"but scl_slope = {slope:g} asks for scaling: the values cannot be computed"
            )
    if not isinstance(header, nib.Nifti1Header):
        return
    for field in ("sform_code", "qform_code"):
        code = int(header[field])
        if code not in _XFORM_CODES:
            header[field] = 0
            form = field[0] + "form"
            _warn(
                f"{name}: header field {field} = {code} is not a valid NIfTI code; the {form} "
                "is ignored (code set to 0, as nibabel does)"
            )
    units = int(header["xyzt_units"])
    xyz, t = units % 8, units - units % 8
    if xyz not in _XYZ_UNIT_CODES or t not in _T_UNIT_CODES:
        header["xyzt_units"] = (xyz if xyz in _XYZ_UNIT_CODES else 0) + (
            t if t in _T_UNIT_CODES else 0
        )
        _warn(
            f"{name}: header field xyzt_units = {units} holds an unknown unit code "
            f"(space {xyz}, time {t}); that unit is read as 'unknown'"
        )


def _check_bitpix(name: str, header: AnalyzeHeader) -> None:
    code = int(header["datatype"])
    try:
        bits = np.dtype(cast(Any, header._data_type_codes.dtype[code])).itemsize * 8
    except (KeyError, TypeError, ValueError):
        return  # an unknown datatype is reported by _check_dtype
    bitpix = int(header["bitpix"])
    if bits and bitpix != bits:
        header["bitpix"] = bits
        _warn(
            f"{name}: header field bitpix = {bitpix} does not match datatype {code} "
            f"({header._data_type_codes.label[code]}, {bits} bits); the datatype is used, as "
            "nibabel does"
        )


def _check_offset_in_file(name: str, offset: int, size: int | None, compressed: bool) -> None:
    if size is None:
        return
    if not compressed and offset > size:
        raise NiftiFormatError(
            f"{name}: header field vox_offset = {offset} is past the end of the file ({size} bytes)"
        )
    if compressed and offset > _MAX_DEFLATE_RATIO * size:
        raise NiftiFormatError(
            f"{name}: header field vox_offset = {offset} is past the end of the file: a gzip "
            f"file of {size} bytes cannot hold more than {_MAX_DEFLATE_RATIO * size} "
            "uncompressed bytes"
        )
