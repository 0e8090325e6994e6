"""Per-process readers: which may be shared by threads, and closing waits for reads."""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers import run_in_threads
from xarray_nifti._readers import open_reader
from xarray_nifti._resolve import open_source

DATA = np.arange(12 * 10 * 8 * 6, dtype=np.int16).reshape(12, 10, 8, 6)


@pytest.fixture(params=[".nii", ".nii.gz"])
def path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    out = tmp_path / f"bold{request.param}"
    nib.save(nib.Nifti1Image(DATA, np.eye(4)), out)
    return out


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
