"""The same file read at once from many threads and from several processes.

Readers are shared per file and process (one memory map, one inflate stream
with checkpoints, one file object), so concurrent reads of random regions
must neither mix up positions nor corrupt the shared inflate state.
"""

from __future__ import annotations

import io
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import nibabel as nib
import numpy as np
import pytest
import xarray as xr

import xarray_nifti  # noqa: F401  (registers the accessor)

SHAPE = (20, 18, 16, 10)
N_THREADS = 8
READS_PER_THREAD = 25
N_PROCESSES = 3

pytestmark = pytest.mark.timeout(120)


def make_data() -> np.ndarray:
    return np.random.default_rng(42).integers(-30000, 30000, SHAPE).astype(np.int16)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("concurrency")
    data = make_data()
    paths = {}
    for suffix, cls in (
        (".nii", nib.Nifti1Image),
        (".nii.gz", nib.Nifti1Image),
        (".img.gz", nib.Nifti1Pair),
    ):
        paths[suffix] = folder / f"bold{suffix}"
        nib.save(cls(data, np.diag([2.0, 2.0, 2.0, 1.0])), paths[suffix])
    return paths


def random_key(rng: np.random.Generator) -> dict[str, Any]:
    """A random region: a slice (any sign of step) or an integer per dimension."""
    key: dict[str, Any] = {}
    for dim, size in zip(("i", "j", "k", "time"), SHAPE, strict=True):
        kind = rng.integers(4)
        if kind == 0:
            key[dim] = int(rng.integers(size))
        elif kind == 1:
            continue  # whole dimension
        else:
            start, stop = sorted(rng.integers(0, size + 1, 2))
            step = int(rng.integers(1, 4)) * (-1 if kind == 3 else 1)
            key[dim] = slice(start, stop, step) if step > 0 else slice(stop, start, step)
    return key


def numpy_key(key: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(key.get(dim, slice(None)) for dim in ("i", "j", "k", "time"))


def read_randomly(
    open_ds: Callable[[], xr.Dataset], expected: np.ndarray, seed: int, barrier: Any
) -> int:
    """Read random regions and compare; returns the number of regions checked."""
    rng = np.random.default_rng(seed)
    ds = open_ds()
    barrier.wait()
    for _ in range(READS_PER_THREAD):
        key = random_key(rng)
        got = ds.data.isel(key).values
        want = expected[numpy_key(key)]
        if got.shape != want.shape or not np.array_equal(got, want):
            raise AssertionError(f"region {key}: wrong data read")
    return READS_PER_THREAD


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".img.gz"])
@pytest.mark.parametrize("shared", [True, False], ids=["one-dataset", "dataset-per-thread"])
def test_threads_read_random_regions(files: dict[str, Path], suffix: str, shared: bool) -> None:
    path = files[suffix]
    expected = make_data()
    ds = xr.open_dataset(path, engine="nifti")
    barrier = threading.Barrier(N_THREADS)

    def open_ds() -> xr.Dataset:
        return ds if shared else xr.open_dataset(path, engine="nifti")

    with ThreadPoolExecutor(N_THREADS) as pool:
        futures = [
            pool.submit(read_randomly, open_ds, expected, seed, barrier)
            for seed in range(N_THREADS)
        ]
        assert sum(f.result(timeout=60) for f in futures) == N_THREADS * READS_PER_THREAD


def test_threads_read_one_file_object(files: dict[str, Path]) -> None:
    """A file object (here in memory) has one position: reads must not interleave."""
    expected = make_data()
    ds = xr.open_dataset(io.BytesIO(files[".nii.gz"].read_bytes()), engine="nifti")
    barrier = threading.Barrier(N_THREADS)
    with ThreadPoolExecutor(N_THREADS) as pool:
        futures = [
            pool.submit(read_randomly, lambda: ds, expected, seed, barrier)
            for seed in range(N_THREADS)
        ]
        assert sum(f.result(timeout=60) for f in futures) == N_THREADS * READS_PER_THREAD


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.filterwarnings("ignore:The specified chunks separate the stored chunks")
def test_dask_threads_compute_chunks_at_once(files: dict[str, Path], suffix: str) -> None:
    expected = make_data()
    ds = xr.open_dataset(files[suffix], engine="nifti", chunks={"k": 4, "time": 1})
    assert ds.data.data.npartitions == 40
    with dask.config.set(scheduler="threads", num_workers=N_THREADS):
        # the volumes in reverse and shuffled order: random access into the gzip stream
        order = np.random.default_rng(1).permutation(SHAPE[3])
        np.testing.assert_array_equal(ds.data.isel(time=order).values, expected[..., order])
        np.testing.assert_allclose(ds.data.mean(("i", "time")).values, expected.mean(axis=(0, 3)))


def _read_in_process(paths: list[str], seed: int, barrier: Any) -> int:
    """Run in a spawned process: open each file and read random regions, all at once."""
    expected = make_data()
    count = 0
    for path in paths:

        def open_ds(path: str = path) -> xr.Dataset:
            return xr.open_dataset(path, engine="nifti")

        count += read_randomly(open_ds, expected, seed, barrier)
    return count


def _process_main(paths: list[str], seed: int, barrier: Any, results: Any) -> None:
    try:
        results.put((seed, _read_in_process(paths, seed, barrier), None))
    except BaseException as err:  # report anything to the parent
        results.put((seed, 0, repr(err)))


def test_processes_read_the_same_file(files: dict[str, Path]) -> None:
    """Three spawned processes read the same .nii, then the same .nii.gz, in step."""
    paths = [str(files[".nii"]), str(files[".nii.gz"])]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(N_PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=_process_main, args=(paths, seed, barrier, results))
        for seed in range(N_PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=90) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert sorted(seed for seed, _, _ in outcomes) == list(range(N_PROCESSES))
    for seed, count, error in outcomes:
        assert error is None, f"process {seed}: {error}"
        assert count == len(paths) * READS_PER_THREAD
    assert all(process.exitcode == 0 for process in processes)
