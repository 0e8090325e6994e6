"""A cursor through a (multi-member) gzip file: an inflate state that reads forward.

A :class:`Cursor` reads compressed input in 1 MiB blocks from a
:class:`Source`, feeds zlib at most ``FEED`` (64 KiB) of it at a time -- an
inflate object keeps a reference to the input it has not consumed yet, and so
does every copy of it, so small feeds keep each :class:`Checkpoint` (a copy of
the inflate state) at about 40 kB of state and window plus at most 64 KiB of
input -- moves on to the next member at the end of one, and turns zlib's
errors into errors naming the file. zlib checks each member's CRC32 and size
as the member ends.

zlib-ng inflates about twice as fast as CPython's zlib and its inflate objects
can be copied, which is what a checkpoint needs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from ._errors import NiftiFormatError, NiftiTruncatedError

_zlib: ModuleType
try:  # zlib-ng is a dependency; zlib keeps working if a platform lacks its wheel
    from zlib_ng import zlib_ng

    _zlib = zlib_ng
except ImportError:  # pragma: no cover
    _zlib = zlib
_ZLIB_ERROR: tuple[type[BaseException], ...] = (_zlib.error, zlib.error)


__all__ = ["FEED", "OUT_STEP", "READ_SIZE", "Checkpoint", "Cursor", "Source", "new_inflater"]

GZIP_WBITS = 31  # gzip wrapper: zlib parses the member header and checks CRC32 + ISIZE
READ_SIZE = 1 << 20  # compressed bytes read from the file at once
FEED = 64 << 10  # compressed bytes given to decompress() at once (bounds checkpoint size)
OUT_STEP = 1 << 20  # uncompressed bytes asked of decompress() at once


def new_inflater() -> Any:
    """A fresh inflate state for one gzip member."""
    return _zlib.decompressobj(GZIP_WBITS)


class Source(Protocol):
    """What a cursor reads from: compressed blocks, and a name and data end for errors."""

    name: str
    data_end: int

    def read_block(self, position: int) -> bytes: ...


@dataclass
class Checkpoint:
    out_pos: int
    in_pos: int
    inflater: Any


@dataclass
class Cursor:
    """One position in the stream: an inflate state and where it stands in and out.

    Invariant: ``pending`` is always the file's bytes ``[in_pos - len(pending), in_pos)``,
    so a checkpoint only needs the resume position, not the pending bytes.
    """

    inflater: Any
    out_pos: int = 0
    in_pos: int = 0
    pending: memoryview = field(default_factory=lambda: memoryview(b""))
    ended: bool = False
    inflated: int = 0  # uncompressed bytes this cursor produced (waste accounting)

    @classmethod
    def at(cls, checkpoint: Checkpoint) -> Cursor:
        return cls(checkpoint.inflater.copy(), checkpoint.out_pos, checkpoint.in_pos)

    def fill(self, source: Source) -> None:
        """Read the next block of compressed input (keeps the ``pending`` invariant)."""
        block = source.read_block(self.in_pos)
        self.in_pos += len(block)
        if self.pending:
            self.pending = memoryview(bytes(self.pending) + block)
        else:
            self.pending = memoryview(block)

    def step(self, source: Source, max_out: int) -> tuple[bytes, bool]:
        """Inflate once: (output, whether a gzip member ended)."""
        if self.ended:
            raise NiftiTruncatedError(
                f"{source.name}: the gzip stream ends after {self.out_pos} uncompressed bytes, "
                f"but the image data ends at byte {source.data_end}; the file is truncated"
            )
        if not self.pending:
            self.fill(source)
        data = self.pending[:FEED]
        if not data:
            raise NiftiTruncatedError(
                f"{source.name}: the gzip stream is cut short after {self.out_pos} uncompressed "
                f"bytes, but the image data ends at byte {source.data_end}; the file is truncated"
            )
        try:
            out = self.inflater.decompress(data, max_out)
        except _ZLIB_ERROR as err:
            near = self.in_pos - len(self.pending)
            if "check" in str(err):  # zlib's "incorrect data check" / "incorrect length check"
                raise NiftiFormatError(
                    f"{source.name}: gzip checksum (CRC32/size) mismatch at the end of a member "
                    f"(near compressed byte {near}): the file is corrupt ({err})"
                ) from err
            raise NiftiFormatError(
                f"{source.name}: corrupt gzip data near compressed byte {near}: {err}; "
                "the file is damaged"
            ) from err
        self.out_pos += len(out)
        self.inflated += len(out)
        member_ended = bool(self.inflater.eof)
        inflater = self.inflater
        left = len(inflater.unused_data if member_ended else inflater.unconsumed_tail)
        self.pending = self.pending[len(data) - left :]
        if member_ended:
            self._start_next_member(source)
        return out, member_ended

    def _start_next_member(self, source: Source) -> None:
        if len(self.pending) < 2:
            self.fill(source)
        if bytes(self.pending[:2]) == b"\x1f\x8b":
            self.inflater = new_inflater()
        else:  # end of file, or trailing bytes that are not another gzip member
            self.ended = True
