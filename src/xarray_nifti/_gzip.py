"""Random access into gzip streams: one shared inflate stream with checkpoints.

Reading a 4-D ``.nii.gz`` chunk by chunk must not re-inflate the file from its
start for every chunk (quadratic), and jumping back to an earlier volume must
not cost a full pass. A :class:`GzipStream` keeps one inflate state per file
and process and moves it forward for sequential reads.

**Checkpoints.** It drops a checkpoint (a copy of the inflate state) at the
uncompressed offsets where chunks start -- the reader is told the chunk grid
(``first`` + n × ``stride``, the backend's preferred chunks) -- so a backward
jump re-inflates exactly the chunk it asks for. Without a grid, or when chunks
are smaller than ``spacing`` (``max(1 MiB, data_end / 1024)``), checkpoints
sit on every m-th grid point, m = ceil(spacing / stride), so there are never
more than about 1024 of them.

**Checkpoint size** is bounded by how :mod:`._inflate` feeds zlib (about
40 kB of inflate state and window plus at most 64 KiB of input each).

**Skip cache.** dask runs independent chunk reads out of order (descending
string order of their keys: 99, 98, ..., 90, 9, 89, ...). When a read lies
ahead of the stream, the whole chunks inflated on the way (and otherwise
thrown away) are kept, most recent first, in a small cache, so the next
requests -- typically the chunks just before the one asked for -- are served
without inflating them again. A cached chunk is dropped when it is served.

**Concurrent reads.** Reads of a local file run in parallel: a read that
starts near a checkpoint the stream has already passed inflates from a private
copy of that checkpoint (positional ``pread`` on the shared descriptor, no
shared seek position), while one thread at a time -- the owner of the *main*
cursor -- moves the stream forward, drops checkpoints and verifies the CRC.
A thread whose region lies ahead of the busy main cursor waits until the
cursor passes it (or is free), then reads privately (or takes the main
cursor): the main cursor may be on its way there, and a private read of the
same bytes would inflate them twice (reads in file order stay one pass).
Each thread keeps its last private cursor (without its input block), so the
many ranges of one strided box continue one cursor. dask asks for chunks in
descending order (13, 12, 11, ...): the read of 13 moves the main cursor
through the file once, and every other chunk is re-inflated from its own
checkpoint by whichever thread asked for it, so with two threads the second
pass runs beside the first instead of after it. Files without a descriptor
(in-memory buffers, remote files) are read one request at a time through the
main cursor.

**Memory bound** per stream (i.e. per file and process): checkpoints
≤ (1024 + 1) × (~40 kB + 64 KiB) ≈ 105 MiB in the worst case and about
``n_checkpoints`` × 50 kB in practice (20 MiB for 400 volumes); plus the skip
cache ≤ ``min(_SKIP_CACHE_BYTES = 32 MiB, _SKIP_CACHE_CHUNKS = 16 chunks)``
(chunks larger than that bound are not cached at all); plus one 1 MiB input
block.

The inflating itself -- a cursor that reads forward through the members of
the file -- is :mod:`._inflate`.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from typing import IO

from ._errors import NiftiFormatError, NiftiTruncatedError
from ._inflate import OUT_STEP, READ_SIZE, Checkpoint, Cursor, new_inflater

__all__ = ["GzipStream"]

_MAX_CHECKPOINTS = 1024
_TRAILER_SLACK = 1 << 20  # bytes inflated past the data block while looking for the CRC
# Skip cache: whole chunks inflated while moving forward to a later read.
# 16 chunks cover the run of chunks dask asks for after a jump (the ten
# "siblings" 98..90 of 99 in string order) with room to spare; 32 MiB keeps
# the cache small next to the chunks dask itself holds (a temporal mean of a
# 442 MB scan may use at most 110 MB above the import floor).
_SKIP_CACHE_BYTES = 32 << 20
_SKIP_CACHE_CHUNKS = 16


class GzipStream:
    """Seekable reads of the uncompressed bytes of a (multi-member) gzip file.

    Thread-safe: concurrent reads of a local file inflate in parallel (see the
    module notes); other file objects are read one request at a time.

    Parameters
    ----------
    fileobj
        Binary file object positioned anywhere; it must support ``seek``. If
        it has a file descriptor (``fileno()``), reads use ``os.pread`` on it.
    name
        File name used in error messages.
    data_end
        Uncompressed offset where the image data ends. Reading never inflates
        more than this (plus a bounded look for the gzip trailer, whose CRC is
        checked when a read reaches ``data_end``).
    first, stride
        Optional chunk grid: the uncompressed offsets ``first + n * stride``
        where chunks start (e.g. the data offset and the bytes of one volume).
        Checkpoints are placed on this grid; see :meth:`set_chunk_grid`.
    spacing
        Least distance between checkpoints (default ``max(1 MiB, data_end / 1024)``).
    cache_bytes, cache_chunks
        Bounds of the skip cache (whole chunks inflated on the way to a later read).

    Attributes
    ----------
    inflated
        Total uncompressed bytes inflated so far (including bytes skipped and
        the look for the trailer); ``inflated / bytes read`` measures waste.

    Examples
    --------
    >>> import gzip, io
    >>> stream = GzipStream(io.BytesIO(gzip.compress(bytes(range(10)))), "x.gz", 10)
    >>> out = bytearray(3)
    >>> stream.read_into(4, memoryview(out))
    >>> bytes(out)
    b'\\x04\\x05\\x06'
    """

    def __init__(
        self,
        fileobj: IO[bytes],
        name: str,
        data_end: int,
        first: int | None = None,
        stride: int | None = None,
        *,
        spacing: int | None = None,
        cache_bytes: int = _SKIP_CACHE_BYTES,
        cache_chunks: int = _SKIP_CACHE_CHUNKS,
    ) -> None:
        self._file = fileobj
        self._fd = _descriptor(fileobj)
        self.name = name
        self.data_end = int(data_end)
        default_spacing = max(1 << 20, self.data_end // _MAX_CHECKPOINTS)
        self.spacing = default_spacing if spacing is None else int(spacing)
        self.cache_bytes, self.cache_chunks = int(cache_bytes), int(cache_chunks)
        self.first = 0
        self.stride: int | None = None
        self.unit = 0
        self.inflated = 0
        self._checkpoints: list[Checkpoint] = []
        self._checkpoint_positions: list[int] = []
        self._skipped: OrderedDict[int, bytes] = OrderedDict()
        self._skipped_bytes = 0
        self._verified = False
        # Guards the checkpoints, the skip cache and who owns the main cursor.
        self._changed = threading.Condition()
        self._main_busy = False
        # Each thread's last private cursor: the next range of the same region (a strided
        # box is read as many ranges, in file order) continues from it.
        self._own = threading.local()
        if stride is not None:
            self.set_chunk_grid(0 if first is None else first, stride)
        self._main = Cursor(new_inflater())
        self._add_checkpoint(self._main)

    @property
    def checkpoint_positions(self) -> tuple[int, ...]:
        """Uncompressed offsets where a read can restart without inflating from byte 0."""
        with self._changed:
            return tuple(self._checkpoint_positions)

    @property
    def cached(self) -> tuple[int, int]:
        """(chunks, bytes) held in the skip cache."""
        with self._changed:
            return len(self._skipped), self._skipped_bytes

    @property
    def concurrent(self) -> bool:
        """Whether several threads may read at once (the file has a descriptor)."""
        return self._fd is not None

    def set_chunk_grid(self, first: int, stride: int, unit: int | None = None) -> None:
        """Chunks start at ``first + n * stride``: skip-cache entries are whole chunks.

        Checkpoints go on the finer grid ``first + n * unit`` (``unit`` divides
        ``stride``, e.g. one volume of a chunk of whole volumes; default
        ``stride``), every m-th point so that they are about ``spacing`` apart:
        a read inside a chunk then restarts near it, not at the chunk start.
        """
        unit = stride if unit is None else unit
        if stride <= 0 or first < 0 or unit <= 0 or stride % unit:
            raise ValueError(f"invalid chunk grid first={first}, stride={stride}, unit={unit}")
        with self._changed:
            self.first, self.stride, self.unit = int(first), int(stride), int(unit)

    # -- grid -------------------------------------------------------------------
    def _chunk(self) -> tuple[int, int]:
        """(first, chunk size) of the grid chunks (spacing-sized without a grid)."""
        if self.stride is None:
            return 0, self.spacing
        return self.first, self.stride

    def _checkpoint_step(self) -> tuple[int, int]:
        """(first, step) of the checkpoint grid: every m-th grid unit, ≤ ~1024 in all."""
        first, stride = self._chunk()
        unit = stride if self.stride is None else self.unit
        units, needed = stride // unit, -(-self.spacing // unit)
        if needed >= units:  # every m-th chunk start
            return first, stride * -(-self.spacing // stride)
        # every d-th unit, d dividing the units of a chunk: chunk starts stay checkpoints
        every = next(d for d in range(needed, units + 1) if units % d == 0)
        return first, unit * every

    def _due_after(self, pos: int) -> int:
        """The first checkpoint grid position strictly after ``pos``."""
        first, step = self._checkpoint_step()
        if pos < first:
            return first
        return first + ((pos - first) // step + 1) * step

    def _on_grid(self, pos: int) -> bool:
        first, step = self._checkpoint_step()
        return pos == 0 or (pos >= first and (pos - first) % step == 0)

    # -- checkpoints (callers hold ``_changed``) ------------------------------------
    def _add_checkpoint(self, cursor: Cursor) -> None:
        n = bisect.bisect_left(self._checkpoint_positions, cursor.out_pos)
        if n < len(self._checkpoint_positions) and self._checkpoint_positions[n] == cursor.out_pos:
            return
        resume = cursor.in_pos - len(cursor.pending)
        checkpoint = Checkpoint(cursor.out_pos, resume, cursor.inflater.copy())
        self._checkpoints.insert(n, checkpoint)
        self._checkpoint_positions.insert(n, cursor.out_pos)

    def _checkpoint_before(self, target: int) -> Checkpoint:
        n = bisect.bisect_right(self._checkpoint_positions, target) - 1
        return self._checkpoints[max(n, 0)]

    # -- inflating with a cursor ------------------------------------------------------
    def read_block(self, position: int) -> bytes:
        """Up to 1 MiB of compressed input at ``position`` (what a :class:`Cursor` reads)."""
        if self._fd is not None:
            return os.pread(self._fd, READ_SIZE, position)
        # only the owner of the main cursor reads through the shared file position
        self._file.seek(position)
        return self._file.read(READ_SIZE)

    def _step(self, cursor: Cursor, max_out: int) -> tuple[bytes, bool]:
        """Inflate once with ``cursor``: (output, whether a gzip member ended)."""
        return cursor.step(self, max_out)

    def _inflate(self, cursor: Cursor, max_out: int) -> bytes:
        """Up to ``max_out`` more uncompressed bytes (at least one, or raise)."""
        while True:
            out, _ = self._step(cursor, max_out)
            if out:
                return out

    def _gap(self, cursor: Cursor, limit: int) -> int:
        """Output bytes to ask for: up to ``limit``, stopping at the next checkpoint."""
        return max(1, min(limit, OUT_STEP, self._due_after(cursor.out_pos) - cursor.out_pos))

    def _fill_out(self, cursor: Cursor, out: memoryview) -> None:
        main = cursor is self._main  # only the main cursor drops checkpoints
        filled = 0
        while filled < len(out):
            chunk = self._inflate(cursor, self._gap(cursor, len(out) - filled))
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
            if main:
                self._maybe_checkpoint()

    # -- the main cursor (one owner at a time) ------------------------------------------
    def _maybe_checkpoint(self) -> None:
        main = self._main
        if main.out_pos < self.data_end and self._on_grid(main.out_pos):
            with self._changed:
                self._add_checkpoint(main)
                self._changed.notify_all()

    def _cacheable(self) -> int:
        """Size of the grid chunk starting at the main cursor if it may be cached, else 0."""
        first, size = self._chunk()
        pos = self._main.out_pos
        if pos < first or (pos - first) % size:
            return 0
        if size > self.cache_bytes // 2:  # too big: caching it would not pay for itself
            return 0
        return size

    def _skip_to(self, target: int) -> None:
        main = self._main
        while main.out_pos < target:
            size = self._cacheable()
            if size and main.out_pos + size <= target:
                self._cache_chunk(size)
                continue
            self._inflate(main, self._gap(main, target - main.out_pos))
            self._maybe_checkpoint()

    def _cache_chunk(self, size: int) -> None:
        """Inflate one whole grid chunk and keep it in the skip cache."""
        start = self._main.out_pos
        chunk = bytearray(size)
        self._fill_out(self._main, memoryview(chunk))
        with self._changed:
            self._skipped.pop(start, None)
            self._skipped[start] = bytes(chunk)
            self._skipped_bytes += size
            while self._skipped and (
                self._skipped_bytes > self.cache_bytes or len(self._skipped) > self.cache_chunks
            ):
                _, old = self._skipped.popitem(last=False)
                self._skipped_bytes -= len(old)
            self._changed.notify_all()

    def _read_main(self, offset: int, out: memoryview) -> None:
        main = self._main
        before = main.inflated
        try:
            _, step = self._checkpoint_step()
            # Go back to a checkpoint when the target is behind us, or far ahead
            # of us in a region already indexed.
            with self._changed:
                if main.out_pos > offset or (
                    offset - main.out_pos > step and self._checkpoint_positions[-1] > main.out_pos
                ):
                    self._main = main = Cursor.at(self._checkpoint_before(offset))
                    before = 0
            self._skip_to(offset)
            self._fill_out(main, out)
            if offset + len(out) == self.data_end and not self._verified:
                self._verify_trailer()
        finally:
            self._count(main.inflated - before)

    def _verify_trailer(self) -> None:
        """Inflate to the end of the gzip member so zlib checks its CRC32 and size."""
        main = self._main
        probe = Cursor(main.inflater.copy(), main.out_pos, main.in_pos, main.pending, main.ended)
        extra = 0
        try:
            while extra < _TRAILER_SLACK and not probe.ended:
                out, member_ended = self._step(probe, _TRAILER_SLACK)
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
        finally:
            self._count(probe.inflated)
        self._verified = True

    # -- skip cache and private reads (callers hold ``_changed``) -------------------------
    def _from_cache(self, offset: int, out: memoryview) -> bool:
        if not self._skipped:
            return False
        first, size = self._chunk()
        start = offset - (offset - first) % size if offset >= first else -1
        chunk = self._skipped.get(start)
        if chunk is None or offset + len(out) > start + len(chunk):
            return False
        out[:] = memoryview(chunk)[offset - start : offset - start + len(out)]
        if offset + len(out) == start + len(chunk):  # fully consumed (the usual case): drop it
            del self._skipped[start]
            self._skipped_bytes -= len(chunk)
        return True

    def _private_start(self, offset: int, end: int) -> Cursor | None:
        """A private cursor for a read near a known checkpoint, or None to use the main one."""
        if self._fd is None or not self._checkpoints:
            return None
        if end == self.data_end and not self._verified:  # the main cursor checks the CRC
            return None
        checkpoint = self._checkpoint_before(offset)
        _, step = self._checkpoint_step()
        if offset - checkpoint.out_pos > step:  # not indexed yet: the main cursor must go there
            return None
        own: Cursor | None = getattr(self._own, "cursor", None)
        if own is not None and checkpoint.out_pos <= own.out_pos <= offset and not own.ended:
            return own  # this thread's last cursor is at least as close as the checkpoint
        frontier = self._main.out_pos
        if self._main_busy:
            # Only behind the busy main cursor: ahead of it, it may be on its way there
            # (reads in file order), and waiting for it costs less than inflating twice.
            return Cursor.at(checkpoint) if offset < frontier else None
        if checkpoint.out_pos <= frontier <= offset:
            return None  # the idle main cursor is at least as close: keep reading forward
        return Cursor.at(checkpoint)

    # -- public API ----------------------------------------------------------------
    def read_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the uncompressed bytes starting at ``offset``."""
        size = len(out)
        end = offset + size
        if end > self.data_end:
            raise ValueError(f"read past the image data of {self.name} ({end} > {self.data_end})")
        if not size:
            return
        with self._changed:
            while True:
                if (self._verified or end < self.data_end) and self._from_cache(offset, out):
                    return
                private = self._private_start(offset, end)
                if private is not None or not self._main_busy:
                    break
                self._changed.wait()  # the main cursor moves: a checkpoint or chunk may come
            if private is None:
                self._main_busy = True
        if private is not None:
            before = private.inflated
            self._own.cursor = None  # not reused if this read fails half way
            try:
                self._skip_private(private, offset)
                self._fill_out(private, out)
            finally:
                self._count(private.inflated - before)
            # Kept without its input block (re-read from the file when it goes on): a kept
            # cursor then costs its inflate state only, about 100 kB per thread and file.
            private.in_pos -= len(private.pending)
            private.pending = memoryview(b"")
            self._own.cursor = private
            return
        try:
            self._read_main(offset, out)
        finally:
            with self._changed:
                self._main_busy = False
                self._changed.notify_all()

    def _count(self, inflated: int) -> None:
        """Add a read's inflated bytes to :attr:`inflated` (threads add at once)."""
        with self._changed:
            self.inflated += inflated

    def _skip_private(self, cursor: Cursor, target: int) -> None:
        while cursor.out_pos < target:
            self._inflate(cursor, min(OUT_STEP, target - cursor.out_pos))

    def close(self) -> None:
        """Drop the inflate state, checkpoints and cached chunks (the owner closes the file)."""
        with self._changed:
            self._own = threading.local()
            self._checkpoints.clear()
            self._checkpoint_positions.clear()
            self._skipped.clear()
            self._skipped_bytes = 0


def _descriptor(fileobj: IO[bytes]) -> int | None:
    """The OS file descriptor behind ``fileobj`` for positional reads, if it has one."""
    try:
        fd = fileobj.fileno()
    except (AttributeError, OSError, ValueError):  # BytesIO, fsspec files, closed files
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None
