"""Random access into gzip streams: one shared inflate stream with checkpoints.

Reading a 4-D ``.nii.gz`` chunk by chunk must not re-inflate the file from its
start for every chunk (quadratic), and jumping back to an earlier volume must
not cost a full pass. A :class:`GzipStream` keeps one inflate state per file
and process, moves it forward for sequential reads, and drops a checkpoint (a
copy of the inflate state, about 40 kB) every ``spacing`` bytes of output, so a
backward jump re-inflates at most ``spacing`` bytes. zlib-ng inflates about
twice as fast as CPython's zlib and its inflate objects can be copied, which
is what a checkpoint needs.
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass
from types import ModuleType
from typing import IO, Any

from ._errors import NiftiFormatError, NiftiTruncatedError

_zlib: ModuleType
try:  # zlib-ng is a dependency; zlib keeps working if a platform lacks its wheel
    from zlib_ng import zlib_ng

    _zlib = zlib_ng
except ImportError:  # pragma: no cover
    _zlib = zlib
_ZLIB_ERROR: tuple[type[BaseException], ...] = (_zlib.error, zlib.error)

__all__ = ["GzipStream"]

_GZIP_WBITS = 31  # gzip wrapper: zlib parses the member header and checks CRC32 + ISIZE
_READ_SIZE = 1 << 20
_MAX_CHECKPOINTS = 1024
_TRAILER_SLACK = 1 << 20  # bytes inflated past the data block while looking for the CRC


@dataclass
class _Checkpoint:
    out_pos: int
    in_pos: int
    inflater: Any


class GzipStream:
    """Seekable reads of the uncompressed bytes of a (multi-member) gzip file.

    Parameters
    ----------
    fileobj
        Binary file object positioned anywhere; it must support ``seek``.
    name
        File name used in error messages.
    data_end
        Uncompressed offset where the image data ends. Reading never inflates
        more than this (plus a bounded look for the gzip trailer, whose CRC is
        checked when a read reaches ``data_end``).

    Examples
    --------
    >>> import gzip, io
    >>> stream = GzipStream(io.BytesIO(gzip.compress(bytes(range(10)))), "x.gz", 10)
    >>> out = bytearray(3)
    >>> stream.read_into(4, memoryview(out))
    >>> bytes(out)
    b'\\x04\\x05\\x06'
    """

    def __init__(self, fileobj: IO[bytes], name: str, data_end: int) -> None:
        self._file = fileobj
        self.name = name
        self.data_end = int(data_end)
        self.spacing = max(1 << 20, self.data_end // _MAX_CHECKPOINTS)
        self._checkpoints: list[_Checkpoint] = []
        self._checkpoint_positions: list[int] = []
        self._verified = False
        self._restart()

    # -- stream state -----------------------------------------------------------
    # Invariant: ``_pending`` is always the file's bytes ``[_in_pos - len(_pending), _in_pos)``,
    # so a checkpoint only needs the resume position, not the pending bytes.
    def _restart(self) -> None:
        self._inflater = _zlib.decompressobj(_GZIP_WBITS)
        self._out_pos = 0
        self._in_pos = 0
        self._pending = b""
        self._ended = False
        self._add_checkpoint()

    def _add_checkpoint(self) -> None:
        if self._checkpoint_positions and self._checkpoint_positions[-1] >= self._out_pos:
            return
        resume = self._in_pos - len(self._pending)
        self._checkpoints.append(_Checkpoint(self._out_pos, resume, self._inflater.copy()))
        self._checkpoint_positions.append(self._out_pos)

    def _restore(self, target: int) -> None:
        n = bisect.bisect_right(self._checkpoint_positions, target) - 1
        cp = self._checkpoints[max(n, 0)]
        self._inflater = cp.inflater.copy()
        self._out_pos = cp.out_pos
        self._in_pos = cp.in_pos
        self._pending = b""
        self._ended = False

    def _next_input(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        self._file.seek(self._in_pos)
        data = self._file.read(_READ_SIZE)
        self._in_pos += len(data)
        return data

    def _step(self, max_out: int) -> tuple[bytes, bool]:
        """Inflate once: (output, whether a gzip member ended)."""
        if self._ended:
            raise NiftiTruncatedError(
                f"{self.name}: the gzip stream ends after {self._out_pos} uncompressed bytes, "
                f"but the image data ends at byte {self.data_end}; the file is truncated"
            )
        data = self._next_input()
        if not data:
            raise NiftiTruncatedError(
                f"{self.name}: the gzip stream is cut short after {self._out_pos} uncompressed "
                f"bytes, but the image data ends at byte {self.data_end}; the file is truncated"
            )
        try:
            out = self._inflater.decompress(data, max_out)
        except _ZLIB_ERROR as err:
            if "check" in str(err):  # zlib's "incorrect data check" / "incorrect length check"
                raise NiftiFormatError(
                    f"{self.name}: gzip checksum (CRC32/size) mismatch at the end of a member "
                    f"(near compressed byte {self._in_pos}): the file is corrupt ({err})"
                ) from err
            raise NiftiFormatError(
                f"{self.name}: corrupt gzip data near compressed byte {self._in_pos}: {err}; "
                "the file is damaged"
            ) from err
        self._out_pos += len(out)
        member_ended = bool(self._inflater.eof)
        if member_ended:
            self._pending = self._inflater.unused_data + self._pending
            self._start_next_member()
        else:
            self._pending = self._inflater.unconsumed_tail + self._pending
        return out, member_ended

    def _start_next_member(self) -> None:
        if len(self._pending) < 2:
            self._file.seek(self._in_pos)
            more = self._file.read(_READ_SIZE)
            self._in_pos += len(more)
            self._pending += more
        if self._pending[:2] == b"\x1f\x8b":
            self._inflater = _zlib.decompressobj(_GZIP_WBITS)
        else:  # end of file, or trailing bytes that are not another gzip member
            self._ended = True

    def _inflate(self, max_out: int) -> bytes:
        """Up to ``max_out`` more uncompressed bytes (at least one, or raise)."""
        while True:
            out, _ = self._step(max_out)
            if out:
                return out

    def _skip_to(self, target: int) -> None:
        while self._out_pos < target:
            step = min(target - self._out_pos, self._next_checkpoint_gap())
            self._inflate(step)
            self._maybe_checkpoint()

    def _next_checkpoint_gap(self) -> int:
        """Output bytes until the next checkpoint is due (so checkpoints land on time)."""
        due = self._checkpoint_positions[-1] + self.spacing - self._out_pos
        return max(1, min(_READ_SIZE, due))

    def _maybe_checkpoint(self) -> None:
        if self._out_pos >= self._checkpoint_positions[-1] + self.spacing:
            self._add_checkpoint()

    # -- public API ----------------------------------------------------------------
    def read_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the uncompressed bytes starting at ``offset``."""
        size = len(out)
        end = offset + size
        if end > self.data_end:
            raise ValueError(f"read past the image data of {self.name} ({end} > {self.data_end})")
        # Go back to a checkpoint when the target is behind us, or far ahead
        # of us in a region already indexed.
        if self._out_pos > offset or (
            offset - self._out_pos > self.spacing and self._checkpoint_positions[-1] > self._out_pos
        ):
            self._restore(offset)
        self._skip_to(offset)
        filled = 0
        while filled < size:
            chunk = self._inflate(min(size - filled, _READ_SIZE))
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
            self._maybe_checkpoint()
        if end == self.data_end and not self._verified:
            self._verify_trailer()

    def _verify_trailer(self) -> None:
        """Inflate to the end of the gzip member so zlib checks its CRC32 and size."""
        saved = (self._inflater.copy(), self._out_pos, self._in_pos, self._pending, self._ended)
        extra = 0
        try:
            while extra < _TRAILER_SLACK and not self._ended:
                out, member_ended = self._step(_TRAILER_SLACK)
                extra += len(out)
                if member_ended:
                    break
        except NiftiTruncatedError as err:
            raise NiftiTruncatedError(
                f"{self.name}: the gzip stream is cut short before its end-of-member checksum; "
                "the file is truncated"
            ) from err
        except NiftiFormatError as err:
            raise NiftiFormatError(
                f"{self.name}: gzip checksum (CRC32/size) mismatch at the end of the data: the "
                f"file is corrupt ({err.__cause__})"
            ) from err
        self._verified = True
        self._inflater, self._out_pos, self._in_pos, self._pending, self._ended = saved

    def close(self) -> None:
        """Drop the inflate state and checkpoints (the file is closed by its owner)."""
        self._checkpoints.clear()
        self._checkpoint_positions.clear()
