"""NIfTI header extensions, read with their sizes checked before any allocation.

nibabel reads a detached header's extensions to the end of the file and
fails on an impossible ``esize``; here an impossible size ends the list with
a :class:`NiftiHeaderWarning` and the extensions before it are kept.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

import nibabel as nib
from nibabel.nifti1 import Nifti1Extension, Nifti1Extensions, Nifti1Header

from ._errors import NiftiTruncatedError
from ._header import _warn

__all__ = ["read_extensions"]

_EXTENSION_READ = 1 << 20


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _read_exactly(stream: _Readable, count: int) -> bytes:
    """Up to ``count`` bytes, read in pieces so a lying size allocates nothing extra."""
    parts: list[bytes] = []
    while count > 0:
        part = stream.read(min(count, _EXTENSION_READ))
        if not part:
            break
        parts.append(part)
        count -= len(part)
    return b"".join(parts)


def read_extensions(
    name: str, stream: _Readable, header: Nifti1Header, endian: str, limit: int | None
) -> tuple[Nifti1Extensions, int]:
    """Header extensions from ``stream`` (positioned after the extension flag).

    ``limit`` is the number of bytes the extensions may occupy (up to
    ``vox_offset``), or ``None`` for a detached header (up to its end). An
    extension whose size is impossible (below 8 bytes, or reaching past the
    data offset) ends the list with a :class:`NiftiHeaderWarning`; the
    extensions before it are kept. Contents are read only after their size
    is checked, so a corrupt size never allocates memory. Returns the
    extensions and the bytes they occupy.
    """
    extensions = type(header.extensions)()
    position = header.sizeof_hdr + 4
    used = 0
    number = 0
    while limit is None or limit - used >= 16:
        start = stream.read(8)
        if not start and limit is None:
            break
        if len(start) < 8:
            raise NiftiTruncatedError(
                f"{name}: the file ends inside header extension #{number + 1} at byte "
                f"{position + used}; the file is truncated"
            )
        esize, ecode = struct.unpack(endian + "2i", start)
        number += 1
        where = f"header extension #{number} (code {ecode}) at byte {position + used}"
        if esize < 8 or (limit is not None and used + esize > limit):
            room = "" if limit is None else f", and vox_offset leaves {limit - used} bytes"
            _warn(
                f"{name}: {where} has an invalid size esize = {esize} (at least 8 bytes{room}); "
                "it and any extensions after it are ignored"
            )
            break
        content = _read_exactly(stream, esize - 8)
        if len(content) < esize - 8:
            if limit is None:
                _warn(
                    f"{name}: {where} has esize = {esize}, past the end of the header file; it "
                    "is ignored"
                )
                break
            raise NiftiTruncatedError(
                f"{name}: the file ends inside {where} (esize = {esize}); the file is truncated"
            )
        if esize % 16:
            _warn(
                f"{name}: {where} has esize = {esize}, not a multiple of 16 bytes; it is read as is"
            )
        used += esize
        extensions.append(_make_extension(int(ecode), content.rstrip(b"\x00")))
    return extensions, used


def _make_extension(code: int, content: bytes) -> Nifti1Extension[Any]:
    handler: Any = nib.nifti1.extension_codes.handler.get(code)  # a Nifti1Extension class
    if handler is None:
        return Nifti1Extension(code, content)
    try:
        extension: Nifti1Extension[Any] = handler(code, content)
        return extension
    # Broad on purpose: only third-party parsers (pydicom, XML) run here, on the
    # file's untrusted bytes, and pydicom's errors derive from Exception only.
    # The raw bytes are kept either way.
    except Exception:
        return Nifti1Extension(code, content)
