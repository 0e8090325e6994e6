"""Per-process readers: which may be shared by threads, and closing waits for reads."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from helpers import run_in_threads
from xarray_nifti import NiftiFileChangedError, NiftiTruncatedError
from xarray_nifti._readers import _pread_exactly, open_reader
from xarray_nifti._resolve import open_source

DATA = np.arange(12 * 10 * 8 * 6, dtype=np.int16).reshape(12, 10, 8, 6)


@pytest.fixture(params=[".nii", ".nii.gz"])
def path(request: pytest.FixtureRequest, make_image: Any) -> Path:
    return make_image(DATA, name=f"bold{request.param}")


def test_local_readers_are_shared_by_threads(path: Path) -> None:
    reader = open_reader(open_source(path).data)
    assert reader.thread_safe
    try:

        def worker(seed: int) -> None:
            rng = np.random.default_rng(seed)
            for _ in range(20):
                t, k = int(rng.integers(0, 6)), int(rng.integers(0, 8))
                block = reader.read_region([(0, 12, 1), (0, 10, 1), (k, 8 - k, 1), (t, 1, 1)])
                np.testing.assert_array_equal(block, DATA[:, :, k:, t : t + 1])

        run_in_threads(worker, count=6)
    finally:
        reader.close()


def test_close_waits_for_the_reads_in_progress(path: Path) -> None:
    reader = open_reader(open_source(path).data)
    reading, finish = threading.Event(), threading.Event()

    def read() -> None:
        with reader.in_use():
            reading.set()
            finish.wait(5)
            block = reader.read_region([(0, 12, 1), (0, 10, 1), (0, 8, 1), (5, 1, 1)])
            np.testing.assert_array_equal(block, DATA[..., 5:6])

    thread = threading.Thread(target=read)
    thread.start()
    assert reading.wait(5)
    closer = threading.Thread(target=reader.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()  # the read still holds the reader
    finish.set()
    thread.join(5)
    closer.join(5)
    assert not closer.is_alive()


# -- uncompressed files: pread, a memory map only for strided regions ---------------------------


@pytest.fixture
def nii(make_image: Any) -> tuple[Path, np.ndarray]:
    data = np.arange(6 * 5 * 4 * 3, dtype=np.int32).reshape(6, 5, 4, 3)
    return make_image(data, name="img.nii"), data


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
    reader = open_reader(open_source(path).data)
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
    reader = open_reader(open_source(path).data)
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


@pytest.mark.parametrize("size", [1, 999, 4096, 10_000 + 3])
def test_large_reads_split_over_threads_fill_every_byte(tmp_path: Path, size: int) -> None:
    payload = np.random.default_rng(size).integers(0, 256, size + 50, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)
    out = bytearray(size)
    with path.open("rb") as f:
        _pread_exactly(f.fileno(), 50, memoryview(out), AssertionError, split_bytes=1000)
    assert bytes(out) == payload[50:]


def test_a_split_read_past_the_end_raises_the_callers_error(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(bytes(5000))
    with path.open("rb") as f, pytest.raises(EOFError, match="shrank"):
        _pread_exactly(
            f.fileno(), 0, memoryview(bytearray(8000)), lambda: EOFError("shrank"), split_bytes=1000
        )


def _mapped_file_mib() -> float:
    """File pages mapped into this process (``RssFile``), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_strided_reads_leave_no_mapped_pages_in_rss(make_image: Any) -> None:
    """A strided read over a whole 48 MiB file leaves none of its pages mapped in the process."""
    data = np.arange(64 * 64 * 48 * 32, dtype=np.int32).reshape(64, 64, 48, 32)
    path = make_image(data, name="big.nii")
    expected = data[::2, :, 1:, :]
    del data
    reader = open_reader(open_source(path).data)
    try:
        before = _mapped_file_mib()
        for _ in range(2):  # the second read maps the same pages in again, and drops them
            got = reader.read_region([(0, 32, 2), (0, 64, 1), (1, 47, 1), (0, 32, 1)])
            np.testing.assert_array_equal(got, expected)
            del got
        assert _mapped_file_mib() - before < 6  # 24 MiB stay mapped without MADV_DONTNEED
    finally:
        reader.close()
