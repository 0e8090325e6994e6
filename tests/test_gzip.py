"""``GzipStream``: random access into (multi-member) gzip files, integrity, bounded inflation."""

from __future__ import annotations

import gzip
import io
import os
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import run_in_threads
from xarray_nifti import NiftiFormatError, NiftiTruncatedError, _gzip, _inflate
from xarray_nifti._gzip import GzipStream

SIZE = 300_000


def _payload(size: int = SIZE, seed: int = 0) -> bytes:
    """Compressible but not trivial bytes (a noisy ramp)."""
    rng = np.random.default_rng(seed)
    ramp = (np.arange(size) // 7 % 251).astype(np.uint8)
    noise = (rng.random(size) < 0.05) * rng.integers(0, 255, size)
    return (ramp ^ noise.astype(np.uint8)).tobytes()


PAYLOAD = _payload()
SINGLE = gzip.compress(PAYLOAD, compresslevel=6)
# members of uneven sizes, one empty, one stored without compression
MULTI = b"".join(
    [
        gzip.compress(PAYLOAD[:1000]),
        gzip.compress(b""),
        gzip.compress(PAYLOAD[1000:123_457], compresslevel=1),
        gzip.compress(PAYLOAD[123_457:123_458]),
        gzip.compress(PAYLOAD[123_458:], compresslevel=0),
    ]
)


def _stream(
    blob: bytes, data_end: int = SIZE, spacing: int | None = 4096, cache_chunks: int = 16
) -> GzipStream:
    # a small spacing: many checkpoints in little data
    blob_file = io.BytesIO(blob)
    return GzipStream(
        blob_file, "test.nii.gz", data_end, spacing=spacing, cache_chunks=cache_chunks
    )


def _read(stream: GzipStream, offset: int, size: int) -> bytes:
    out = bytearray(size)
    stream.read_into(offset, memoryview(out))
    return bytes(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blob=st.sampled_from([SINGLE, MULTI]),
    reads=st.lists(
        st.tuples(st.integers(0, SIZE - 1), st.integers(0, 40_000)), min_size=1, max_size=8
    ),
    spacing=st.sampled_from([None, 1000, 65_536]),
)
def test_random_reads_equal_the_bytes(
    blob: bytes, reads: list[tuple[int, int]], spacing: int | None
) -> None:
    stream = _stream(blob, spacing=spacing)
    for offset, size in reads:
        size = min(size, SIZE - offset)
        assert _read(stream, offset, size) == PAYLOAD[offset : offset + size]


def test_backward_and_forward_jumps_use_checkpoints() -> None:
    stream = _stream(SINGLE, spacing=10_000, cache_chunks=0)  # no skip cache: checkpoints only
    assert _read(stream, SIZE - 10, 10) == PAYLOAD[-10:]
    assert len(stream.checkpoint_positions) >= SIZE // 10_000
    before = stream.inflated
    assert _read(stream, 150_000, 100) == PAYLOAD[150_000:150_100]
    assert 100 <= stream.inflated - before <= 10_000 + 100  # one interval, not the prefix
    before = stream.inflated
    assert _read(stream, 280_000, 100) == PAYLOAD[280_000:280_100]
    assert 100 <= stream.inflated - before <= 10_000 + 100


def test_read_of_nothing_and_past_the_end() -> None:
    stream = _stream(SINGLE)
    assert _read(stream, 5, 0) == b""
    with pytest.raises(ValueError, match="past the image data"):
        _read(stream, SIZE - 5, 10)


def test_multi_member_with_trailing_garbage() -> None:
    blob = MULTI + b"\x00" * 100  # zero padding after the last member (seen in the wild)
    stream = _stream(blob)
    assert _read(stream, 0, SIZE) == PAYLOAD


def _flip(blob: bytes, position: int) -> bytes:
    damaged = bytearray(blob)
    damaged[position] ^= 0xFF
    return bytes(damaged)


@pytest.mark.parametrize("where", ["crc", "isize"])
def test_corrupt_trailer_raises_at_read_time(where: str) -> None:
    blob = _flip(SINGLE, len(SINGLE) - (8 if where == "crc" else 2))
    stream = _stream(blob)  # constructing reads nothing
    assert _read(stream, 0, 1000) == PAYLOAD[:1000]  # reads short of the end work
    with pytest.raises(NiftiFormatError, match=r"test\.nii\.gz.*(checksum|corrupt)") as info:
        _read(stream, SIZE - 100, 100)
    assert type(info.value) is NiftiFormatError
    assert _read(stream, 5, 10) == PAYLOAD[5:15]  # the stream stays usable


def test_corrupt_member_in_the_middle_of_a_multi_member_file() -> None:
    first = gzip.compress(PAYLOAD[:100_000])
    blob = _flip(first, len(first) - 6) + gzip.compress(PAYLOAD[100_000:])
    stream = _stream(blob)
    with pytest.raises(NiftiFormatError, match="corrupt"):
        _read(stream, 150_000, 10)


def test_corrupt_deflate_data() -> None:
    blob = SINGLE[:20] + bytes(range(256)) * 4 + SINGLE[20 + 1024 :]
    with pytest.raises(NiftiFormatError, match=r"test\.nii\.gz") as info:
        _read(_stream(blob), 0, SIZE)
    assert "corrupt" in str(info.value) or "checksum" in str(info.value)


@pytest.mark.parametrize("keep", [10, 1000, len(SINGLE) // 2, len(SINGLE) - 4])
def test_truncated_stream(keep: int) -> None:
    stream = _stream(SINGLE[:keep])
    with pytest.raises(NiftiTruncatedError, match=r"test\.nii\.gz.*truncated"):
        _read(stream, 0, SIZE)


def test_stream_shorter_than_data_end() -> None:
    stream = _stream(SINGLE, data_end=SIZE + 10)
    with pytest.raises(NiftiTruncatedError, match="truncated"):
        _read(stream, SIZE - 5, 10)


class _Recording(GzipStream):
    """Records the largest uncompressed position ever reached."""

    max_out = 0

    def _step(self, cursor: Any, max_out: int) -> tuple[bytes, bool]:
        result = super()._step(cursor, max_out)
        self.max_out = max(self.max_out, cursor.out_pos)
        return result


def test_inflation_is_bounded_by_data_end() -> None:
    data_end = 200_000
    blob = gzip.compress(PAYLOAD[:data_end] + bytes(64 << 20))  # 64 MiB of zeros after the data
    stream = _Recording(io.BytesIO(blob), "big.nii.gz", data_end)
    assert _read(stream, data_end - 1000, 1000) == PAYLOAD[data_end - 1000 : data_end]
    assert _read(stream, 0, 10) == PAYLOAD[:10]
    assert stream.max_out <= data_end + _gzip._TRAILER_SLACK


def test_inflation_stops_at_data_end_without_trailer_look() -> None:
    stream = _Recording(io.BytesIO(SINGLE), "x.nii.gz", SIZE)
    _read(stream, 1000, 5000)
    assert stream.max_out <= 6000


def test_zlib_fallback_is_compatible() -> None:
    """Checkpoints need copyable inflate objects: true for zlib-ng and for zlib."""
    inflater = _inflate.new_inflater()
    inflater.decompress(SINGLE[:1000], 100)
    assert inflater.copy() is not None
    assert zlib.decompressobj(31).copy() is not None


def test_thread_safety_through_the_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(-1000, 1000, size=(20, 18, 12, 24), dtype=np.int16)
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with xr.open_dataset(path, engine="nifti", cache=False) as ds:
        var = ds["data"]

        def worker(seed: int) -> None:
            local = np.random.default_rng(seed)
            for _ in range(15):
                t = int(local.integers(0, data.shape[3]))
                k = slice(int(local.integers(0, 6)), int(local.integers(6, 12)))
                np.testing.assert_array_equal(var.isel(time=t, k=k).values, data[:, :, k, t])

        run_in_threads(worker)


def test_thread_safety_with_dask_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    data = rng.integers(0, 3000, size=(16, 16, 10, 30), dtype=np.uint16)
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    order = rng.permutation(30)
    with xr.open_dataset(path, engine="nifti", chunks={}) as ds:
        shuffled = ds["data"].isel(time=order)
        result: Any = shuffled.compute(scheduler="threads", num_workers=8)
    np.testing.assert_array_equal(result.values, data[..., order])


# -- concurrent reads of a local file ------------------------------------------------------


def _local_stream(
    tmp_path: Path, blob: bytes = SINGLE, stride: int = 10_000, cache_chunks: int = 16
) -> GzipStream:
    path = tmp_path / "local.nii.gz"
    path.write_bytes(blob)
    fileobj = path.open("rb")
    return GzipStream(
        fileobj, "local.nii.gz", SIZE, 0, stride, spacing=stride, cache_chunks=cache_chunks
    )


def test_only_files_with_a_descriptor_read_concurrently(tmp_path: Path) -> None:
    assert _local_stream(tmp_path).concurrent
    assert not GzipStream(io.BytesIO(SINGLE), "buffer.nii.gz", SIZE).concurrent


@pytest.mark.parametrize("blob", [SINGLE, MULTI], ids=["single", "members"])
def test_concurrent_random_reads_of_a_local_file_are_exact(tmp_path: Path, blob: bytes) -> None:
    stream = _local_stream(tmp_path, blob)

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(25):
            offset = int(rng.integers(0, SIZE - 1))
            size = int(min(rng.integers(1, 30_000), SIZE - offset))
            assert _read(stream, offset, size) == PAYLOAD[offset : offset + size]

    run_in_threads(worker, count=6)


def test_a_read_behind_the_main_cursor_leaves_it_at_the_frontier(tmp_path: Path) -> None:
    stream = _local_stream(tmp_path)
    assert _read(stream, 200_000, 10_000) == PAYLOAD[200_000:210_000]
    frontier = stream._main.out_pos
    before = stream.inflated
    # chunk 1: older than the chunks kept in the skip cache, so re-inflated from its checkpoint
    assert _read(stream, 10_000, 10_000) == PAYLOAD[10_000:20_000]
    assert stream.inflated - before == 10_000
    assert stream._main.out_pos == frontier
    before = stream.inflated
    assert _read(stream, 210_000, 10_000) == PAYLOAD[210_000:220_000]  # the main cursor goes on
    assert stream.inflated - before == 10_000


def test_descending_chunk_reads_by_two_threads_inflate_each_byte_at_most_twice(
    tmp_path: Path,
) -> None:
    """dask's order (last chunk first): one pass to the end, then one re-inflate per chunk."""
    stream = _local_stream(tmp_path)
    chunks = list(range(SIZE // 10_000 - 1, -1, -1))
    lock = threading.Lock()

    def worker(seed: int) -> None:
        while True:
            with lock:
                if not chunks:
                    return
                n = chunks.pop(0)
            assert _read(stream, n * 10_000, 10_000) == PAYLOAD[n * 10_000 : (n + 1) * 10_000]

    run_in_threads(worker, count=2)
    assert stream.inflated <= 2 * SIZE + _gzip._TRAILER_SLACK


def test_the_crc_is_checked_even_when_other_threads_read_privately(tmp_path: Path) -> None:
    corrupt = bytearray(SINGLE)
    corrupt[-8] ^= 0xFF  # the stored CRC32
    stream = _local_stream(tmp_path, bytes(corrupt))
    assert _read(stream, 100_000, 10_000) == PAYLOAD[100_000:110_000]
    with pytest.raises(NiftiFormatError, match="checksum"):
        _read(stream, SIZE - 10_000, 10_000)
    with pytest.raises(NiftiFormatError, match="checksum"):  # never served unchecked later
        _read(stream, SIZE - 10_000, 10_000)


# -- checkpoints and the skip cache on a chunk grid ------------------------------------------------

N_CHUNKS = 400
STRIDE = 8192
VOX_OFFSET = 352
GRID_DATA = _payload(VOX_OFFSET + N_CHUNKS * STRIDE)
GRID_BLOB = gzip.compress(GRID_DATA, compresslevel=1)


def _grid_stream(spacing: int = STRIDE, **cache: int) -> GzipStream:
    # real volumes are ≥ 1 MiB, the default spacing: small chunks need a small spacing
    blob = io.BytesIO(GRID_BLOB)
    return GzipStream(
        blob, "grid.nii.gz", len(GRID_DATA), VOX_OFFSET, STRIDE, spacing=spacing, **cache
    )


def _read_chunk(stream: GzipStream, n: int) -> None:
    out = bytearray(STRIDE)
    start = VOX_OFFSET + n * STRIDE
    stream.read_into(start, memoryview(out))
    assert bytes(out) == GRID_DATA[start : start + STRIDE], n


def test_checkpoints_keep_no_large_compressed_input() -> None:
    """A checkpoint retains at most one feed (64 KiB) of compressed input, not a 1 MiB block."""
    payload = os.urandom(3 << 20)  # incompressible: 3 MiB of compressed input
    blob = io.BytesIO(gzip.compress(payload, 1))
    stream = GzipStream(blob, "rand.nii.gz", len(payload), spacing=128 << 10)
    out = bytearray(len(payload))
    stream.read_into(0, memoryview(out))
    assert bytes(out) == payload
    assert len(stream._checkpoints) >= 20
    tails = [sys.getsizeof(cp.inflater.unconsumed_tail) for cp in stream._checkpoints]
    assert max(tails) <= _inflate.FEED + 100
    # the pending input is a view of the block read from the file, not a copy of it
    assert isinstance(stream._main.pending, memoryview)


def test_checkpoints_sit_at_chunk_starts() -> None:
    stream = _grid_stream()
    _read_chunk(stream, N_CHUNKS - 1)
    expected = [0] + [VOX_OFFSET + n * STRIDE for n in range(N_CHUNKS)]
    assert list(stream.checkpoint_positions) == expected


def test_small_chunks_use_every_mth_chunk_start() -> None:
    stream = _grid_stream(spacing=3 * STRIDE - 5)  # m = 3
    _read_chunk(stream, N_CHUNKS - 1)
    expected = [0] + [VOX_OFFSET + n * STRIDE for n in range(0, N_CHUNKS, 3)]
    assert list(stream.checkpoint_positions) == expected


def test_checkpoint_count_stays_bounded_by_default_spacing() -> None:
    stream = GzipStream(io.BytesIO(GRID_BLOB), "grid.nii.gz", len(GRID_DATA), VOX_OFFSET, 16)
    _read_chunk(stream, N_CHUNKS - 1)
    assert len(stream.checkpoint_positions) <= _gzip._MAX_CHECKPOINTS + 1
    assert all((p - VOX_OFFSET) % 16 == 0 for p in stream.checkpoint_positions[1:])


DASK_ORDER = [int(key) for key in sorted(map(str, range(N_CHUNKS)), reverse=True)]


def test_ascending_order_inflates_every_byte_once() -> None:
    stream = _grid_stream()
    for n in range(N_CHUNKS):
        _read_chunk(stream, n)
    assert stream.inflated == VOX_OFFSET + N_CHUNKS * STRIDE


def test_backward_jump_costs_exactly_one_chunk() -> None:
    stream = _grid_stream()
    _read_chunk(stream, 300)  # chunks 284-299 stay in the skip cache: read far from them
    for n in (250, 17, 280, 0):
        before = stream.inflated
        _read_chunk(stream, n)
        assert stream.inflated - before == STRIDE


def test_dask_string_order_uses_the_skip_cache() -> None:
    """Replay dask's descending-string key order (99, 98, ..., 90, 9, 89, ...).

    Every chunk is inflated once on the way to a later one (the skips to 99
    and to 399) and, unless the skip cache still holds it, once more when it
    is asked for. A bounded cache can only absorb the chunks asked for right
    after a skip, so the ratio stays near 2 minus the cache size per skip.
    """
    ratios = {}
    for chunks in (0, _gzip._SKIP_CACHE_CHUNKS):
        stream = _grid_stream(cache_chunks=chunks)
        peak = 0
        for n in DASK_ORDER:
            _read_chunk(stream, n)
            held, held_bytes = stream.cached
            peak = max(peak, held_bytes)
            assert held <= chunks
        ratios[chunks] = stream.inflated / (N_CHUNKS * STRIDE)
        assert peak <= chunks * STRIDE
    data_ratio = 1 + (N_CHUNKS - 2) / N_CHUNKS  # two skips: 0..98 and 100..398
    assert ratios[0] == pytest.approx(data_ratio, abs=0.01)
    cache = _gzip._SKIP_CACHE_CHUNKS
    assert ratios[cache] <= data_ratio - 2 * cache / N_CHUNKS + 0.01


def test_skip_cache_respects_its_byte_bound() -> None:
    stream = _grid_stream(cache_bytes=5 * STRIDE)
    _read_chunk(stream, 99)
    assert 0 < stream.cached[1] <= 5 * STRIDE
    stream = _grid_stream(cache_bytes=STRIDE)  # chunks too big to cache
    _read_chunk(stream, 99)
    assert stream.cached == (0, 0)


def test_ranges_of_one_region_read_privately_continue_one_cursor(tmp_path: Path) -> None:
    """A strided box is many ranges in file order: each continues where the last one ended."""
    stream = _local_stream(tmp_path, stride=100_000, cache_chunks=0)
    assert _read(stream, 200_000, 10_000) == PAYLOAD[200_000:210_000]  # main cursor ahead
    before = stream.inflated
    for n in range(20):
        start = 150_000 + n * 1_000
        assert _read(stream, start, 100) == PAYLOAD[start : start + 100]
    # from the checkpoint at 100 000 to the last range's end, once (not 20 times)
    assert stream.inflated - before <= 150_000 + 20 * 1_000 - 100_000
    assert stream._main.out_pos == 210_000
