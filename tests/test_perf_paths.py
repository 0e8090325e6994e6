"""The fast, memory-bounded read paths of issue 6 (one test group per fix).

1. gzip checkpoints keep no large compressed input alive;
2. checkpoints sit at chunk starts;
3. dask's out-of-order chunk reads inflate each chunk about once, with a
   bounded cache of chunks skipped over;
4. a contiguous region is read straight into the output array;
5. uncompressed files are read with ``pread`` (no whole-file map), a file that
   shrinks after opening still raises;
6. closing one Dataset keeps the reader that other Datasets of the file share.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import dask
import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from xarray_nifti import NiftiFileChangedError, NiftiTruncatedError, _gzip
from xarray_nifti import _readers as readers_module
from xarray_nifti import array as array_module
from xarray_nifti._gzip import GzipStream
from xarray_nifti._region import read_region
from xarray_nifti._resolve import open_source
from xarray_nifti.array import NiftiBackendArray

N_CHUNKS = 400
STRIDE = 8192
VOX_OFFSET = 352


def _noisy(size: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    ramp = (np.arange(size) // 7 % 251).astype(np.uint8)
    noise = (rng.random(size) < 0.05) * rng.integers(0, 255, size)
    return (ramp ^ noise.astype(np.uint8)).tobytes()


DATA = _noisy(VOX_OFFSET + N_CHUNKS * STRIDE)
BLOB = gzip.compress(DATA, compresslevel=1)


def _grid_stream(spacing: int = STRIDE) -> GzipStream:
    stream = GzipStream(io.BytesIO(BLOB), "grid.nii.gz", len(DATA), VOX_OFFSET, STRIDE)
    stream.spacing = spacing  # real volumes are ≥ 1 MiB = the default spacing
    return stream


def _read_chunk(stream: GzipStream, n: int) -> None:
    out = bytearray(STRIDE)
    start = VOX_OFFSET + n * STRIDE
    stream.read_into(start, memoryview(out))
    assert bytes(out) == DATA[start : start + STRIDE], n


# -- 1. checkpoint memory -----------------------------------------------------------------------


def test_checkpoints_keep_no_large_compressed_input() -> None:
    """A checkpoint retains at most one feed (64 KiB) of compressed input, not a 1 MiB block."""
    payload = os.urandom(3 << 20)  # incompressible: 3 MiB of compressed input
    stream = GzipStream(io.BytesIO(gzip.compress(payload, 1)), "rand.nii.gz", len(payload))
    stream.spacing = 128 << 10
    out = bytearray(len(payload))
    stream.read_into(0, memoryview(out))
    assert bytes(out) == payload
    assert len(stream._checkpoints) >= 20
    tails = [sys.getsizeof(cp.inflater.unconsumed_tail) for cp in stream._checkpoints]
    assert max(tails) <= _gzip._FEED + 100
    # the pending input is a view of the block read from the file, not a copy of it
    assert isinstance(stream._main.pending, memoryview)


# -- 2. checkpoints at chunk starts ---------------------------------------------------------------


def test_checkpoints_sit_at_chunk_starts() -> None:
    stream = _grid_stream()
    _read_chunk(stream, N_CHUNKS - 1)
    expected = [0] + [VOX_OFFSET + n * STRIDE for n in range(N_CHUNKS)]
    assert stream._checkpoint_positions == expected


def test_small_chunks_use_every_mth_chunk_start() -> None:
    stream = _grid_stream(spacing=3 * STRIDE - 5)  # m = 3
    _read_chunk(stream, N_CHUNKS - 1)
    expected = [0] + [VOX_OFFSET + n * STRIDE for n in range(0, N_CHUNKS, 3)]
    assert stream._checkpoint_positions == expected


def test_checkpoint_count_stays_bounded_by_default_spacing() -> None:
    stream = GzipStream(io.BytesIO(BLOB), "grid.nii.gz", len(DATA), VOX_OFFSET, 16)
    _read_chunk(stream, N_CHUNKS - 1)
    assert len(stream._checkpoints) <= _gzip._MAX_CHECKPOINTS + 1
    assert all((p - VOX_OFFSET) % 16 == 0 for p in stream._checkpoint_positions[1:])


def test_dataset_tells_the_gzip_reader_its_volume_grid(tmp_path: Path) -> None:
    shape = (8, 7, 6, 5)
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    volume = 8 * 7 * 6 * 2
    with (
        dask.config.set({"array.chunk-size": f"{2 * volume}B"}),  # two volumes per chunk
        xr.open_dataset(path, engine="nifti") as ds,
    ):
        np.testing.assert_array_equal(ds["data"][..., 4].values, data[..., 4])
        array = _backend_array(ds)
        assert array._grid == (352, 2 * volume, volume)
        with array._manager.acquire_context() as reader:
            stream = reader._stream
        assert (stream.first, stream.stride) == (352, 2 * volume)


# -- 3. out-of-order chunk reads ------------------------------------------------------------------

DASK_ORDER = [int(key) for key in sorted(map(str, range(N_CHUNKS)), reverse=True)]


def test_ascending_order_inflates_every_byte_once() -> None:
    stream = _grid_stream()
    for n in range(N_CHUNKS):
        _read_chunk(stream, n)
    assert stream.inflated == VOX_OFFSET + N_CHUNKS * STRIDE


def test_backward_jump_costs_exactly_one_chunk() -> None:
    stream = _grid_stream()
    _read_chunk(stream, 300)
    stream._skipped.clear()
    for n in (250, 17, 299, 0):
        before = stream.inflated
        _read_chunk(stream, n)
        assert stream.inflated - before == STRIDE


def test_dask_string_order_uses_the_skip_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay dask's descending-string key order (99, 98, ..., 90, 9, 89, ...).

    Every chunk is inflated once on the way to a later one (the skips to 99
    and to 399) and, unless the skip cache still holds it, once more when it
    is asked for. A bounded cache can only absorb the chunks asked for right
    after a skip, so the ratio stays near 2 minus the cache size per skip.
    """
    ratios = {}
    for chunks in (0, _gzip._SKIP_CACHE_CHUNKS):
        monkeypatch.setattr(_gzip, "_SKIP_CACHE_CHUNKS", chunks)
        stream = _grid_stream()
        peak = 0
        for n in DASK_ORDER:
            _read_chunk(stream, n)
            peak = max(peak, stream._skipped_bytes)
            assert len(stream._skipped) <= chunks
        ratios[chunks] = stream.inflated / (N_CHUNKS * STRIDE)
        assert peak <= chunks * STRIDE
    data_ratio = 1 + (N_CHUNKS - 2) / N_CHUNKS  # two skips: 0..98 and 100..398
    assert ratios[0] == pytest.approx(data_ratio, abs=0.01)
    cache = _gzip._SKIP_CACHE_CHUNKS
    assert ratios[cache] <= data_ratio - 2 * cache / N_CHUNKS + 0.01


def test_skip_cache_respects_its_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gzip, "_SKIP_CACHE_BYTES", 5 * STRIDE)
    stream = _grid_stream()
    _read_chunk(stream, 99)
    assert stream._skipped_bytes <= 5 * STRIDE
    monkeypatch.setattr(_gzip, "_SKIP_CACHE_BYTES", STRIDE)  # chunks too big to cache
    stream = _grid_stream()
    _read_chunk(stream, 99)
    assert not stream._skipped


# -- 4. contiguous regions are read in place ------------------------------------------------------


def test_contiguous_region_is_read_into_the_output() -> None:
    shape = (4, 3, 5, 6)
    data = np.arange(np.prod(shape), dtype="<i2").reshape(shape, order="F")
    raw = data.tobytes(order="F")
    location = open_source(_nifti_bytes(data)).data
    offset = location.offset
    calls: list[memoryview] = []

    def read_into(start: int, out: memoryview) -> None:
        calls.append(out)
        out[:] = (b"\0" * offset + raw)[start : start + len(out)]

    for selection, expected in [
        ([(0, 4, 1), (0, 3, 1), (0, 5, 1), (2, 1, 1)], data[..., 2:3]),  # one volume
        ([(0, 4, 1), (0, 3, 1), (1, 3, 1), (4, 1, 1)], data[:, :, 1:4, 4:5]),  # a k-slab
        ([(0, 4, 1), (0, 3, 1), (0, 5, 1), (1, 3, 1)], data[..., 1:4]),  # volumes 1..3
        ([(1, 2, 1), (2, 1, 1), (3, 1, 1), (5, 1, 1)], data[1:3, 2:3, 3:4, 5:6]),  # a row
    ]:
        calls.clear()
        got = read_region(read_into, location, selection)
        np.testing.assert_array_equal(got, expected)
        assert len(calls) == 1
        assert np.shares_memory(got, np.frombuffer(calls[0], np.uint8))


def test_strided_region_still_uses_a_buffer() -> None:
    shape = (4, 3, 5, 2)
    data = np.arange(np.prod(shape), dtype="<i2").reshape(shape, order="F")
    location = open_source(_nifti_bytes(data)).data
    raw = b"\0" * location.offset + data.tobytes(order="F")
    calls: list[memoryview] = []

    def read_into(start: int, out: memoryview) -> None:
        calls.append(out)
        out[:] = raw[start : start + len(out)]

    got = read_region(read_into, location, [(0, 2, 2), (0, 3, 1), (0, 5, 1), (1, 1, 1)])
    np.testing.assert_array_equal(got, data[0:4:2, :, :, 1:2])
    assert not np.shares_memory(got, np.frombuffer(calls[0], np.uint8))


def _nifti_bytes(data: np.ndarray) -> io.BytesIO:
    image = nib.Nifti1Image(np.asarray(data), np.eye(4))
    image.header.set_data_dtype(data.dtype)
    return io.BytesIO(image.to_bytes())


# -- 5. pread for uncompressed files --------------------------------------------------------------


@pytest.fixture
def nii(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.arange(6 * 5 * 4 * 3, dtype=np.int32).reshape(6, 5, 4, 3)
    path = tmp_path / "img.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path, data


def test_volume_reads_use_pread_not_a_map(
    nii: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = nii
    calls: list[int] = []
    original = os.preadv

    def counting(fd: int, buffers: Any, offset: int) -> int:
        calls.append(offset)
        return original(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", counting)
    reader = readers_module.open_reader(open_source(path).data)
    try:
        for t in range(3):
            got = reader.read_region([(0, 6, 1), (0, 5, 1), (0, 4, 1), (t, 1, 1)])
            np.testing.assert_array_equal(got[..., 0], data[..., t])
        assert len(calls) == 3
        assert reader._map is None
        strided = reader.read_region([(0, 3, 2), (0, 5, 1), (0, 4, 1), (0, 3, 1)])
        np.testing.assert_array_equal(strided, data[::2])
        assert reader._map is not None
    finally:
        reader.close()


def test_short_pread_raises_naming_the_file(
    nii: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = nii
    reader = readers_module.open_reader(open_source(path).data)
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: 0)  # shrank between checks
    try:
        with pytest.raises(NiftiTruncatedError, match=r"img\.nii.*shrank"):
            reader.read_region([(0, 6, 1), (0, 5, 1), (0, 4, 1), (1, 1, 1)])
    finally:
        reader.close()


@pytest.mark.parametrize("region", ["volume", "strided"])
def test_truncation_after_open_raises(nii: tuple[Path, np.ndarray], region: str) -> None:
    path, _ = nii
    ds = xr.open_dataset(path, engine="nifti", cache=False)
    ds["data"][..., 0].values  # noqa: B018  (opens the reader)
    with open(path, "r+b") as f:
        f.truncate(400)
    part = ds["data"][..., 2] if region == "volume" else ds["data"][::2]
    with pytest.raises(NiftiFileChangedError, match=r"img\.nii.*shrank"):
        part.values  # noqa: B018
    ds.close()


# -- 6. the shared reader survives one Dataset closing -------------------------------------------


def _backend_array(ds: xr.Dataset) -> NiftiBackendArray:
    data: Any = ds["data"].variable._data
    while not isinstance(data, NiftiBackendArray):
        data = data.array
    return data


@pytest.fixture
def bold_gz(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.arange(10 * 9 * 8 * 12, dtype=np.int16).reshape(10, 9, 8, 12)
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path, data


def test_closing_one_dataset_keeps_the_shared_reader(bold_gz: tuple[Path, np.ndarray]) -> None:
    path, data = bold_gz
    first = xr.open_dataset(path, engine="nifti")
    array = _backend_array(first)
    with array._manager.acquire_context() as reader:
        stream = reader._stream
    stream.spacing = 1  # a checkpoint at every volume (real volumes are ≥ the 1 MiB default)
    np.testing.assert_array_equal(first["data"][..., 11].values, data[..., 11])
    other = xr.open_dataset(path, engine="nifti", chunks={})
    np.testing.assert_array_equal(other["data"][..., 0].values, data[..., 0])
    other.close()
    other.close()  # idempotent: does not count as a second user leaving
    before = stream.inflated
    np.testing.assert_array_equal(first["data"][..., 11].values, data[..., 11])
    with array._manager.acquire_context() as reader:
        assert reader._stream is stream  # same reader, checkpoints kept
    assert stream.inflated - before == 10 * 9 * 8 * 2  # one volume, not a pass from byte 0
    first.close()
    assert array._key not in array_module._USERS
    assert not stream._checkpoints  # the last user closed the reader


def test_unpickled_copy_counts_as_a_user(bold_gz: tuple[Path, np.ndarray]) -> None:
    path, data = bold_gz
    array = NiftiBackendArray(open_source(path).data)
    key = array._key
    assert array_module._USERS[key] == 1
    copy = pickle.loads(pickle.dumps(array))
    assert array_module._USERS[key] == 2
    array.close()
    array.close()
    assert array_module._USERS[key] == 1
    copy.close()
    assert key not in array_module._USERS
    with xr.open_dataset(path, engine="nifti") as ds:  # reading after close reopens
        np.testing.assert_array_equal(ds["data"].values, data)


def test_grouped_chunks_keep_a_checkpoint_per_volume(tmp_path: Path) -> None:
    """Reading a volume again inside a chunk of several volumes re-inflates about that volume."""
    shape = (64, 64, 128, 12)  # 1 MiB volumes: the checkpoint spacing
    data = np.random.default_rng(2).integers(0, 1000, shape).astype(np.int16)
    path = tmp_path / "grouped.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    volume = 64 * 64 * 128 * 2
    with (
        dask.config.set({"array.chunk-size": f"{4 * volume}B"}),  # 4 volumes per chunk
        xr.open_dataset(path, engine="nifti") as ds,
    ):
        array = _backend_array(ds)
        assert array._grid == (352, 4 * volume, volume)
        np.testing.assert_array_equal(ds["data"][..., 11].values, data[..., 11])
        with array._manager.acquire_context() as reader:
            stream = reader._stream
        before = stream.inflated
        np.testing.assert_array_equal(ds["data"][..., 10].values, data[..., 10])
        assert stream.inflated - before <= volume + (1 << 16)  # not the chunk from volume 8
