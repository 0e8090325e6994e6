"""Everything lazy runs on a real ``dask.distributed`` cluster of worker processes.

One ``LocalCluster(processes=True)`` (two single-threaded workers, each a
separate Python process behind a nanny) is shared by the module. Results are
checked against nibabel/numpy computed in the test process; task graphs are
pickled task by task to prove that they carry no open file handle; and a
worker is killed in the middle of a computation to prove that the scheduler
reruns its tasks on a fresh worker and still returns the right answer.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import signal
import socket
import time
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from nibabel.processing import resample_from_to

import xarray_nifti  # noqa: F401  (registers the accessor)
from helpers import process_cluster

pytestmark = [
    pytest.mark.timeout(120),
    # The dataset's encoding keeps the stored int16 dtype with the scale factors:
    # xarray warns that NaN would have no integer value when writing to Zarr.
    pytest.mark.filterwarnings("ignore:saving variable:xarray.SerializationWarning"),
    pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning"),
]

SHAPE = (12, 10, 8, 6)
TR = 2.0
# Oblique-free but flipped and permuted (axcodes L, S, A) so that to_canonical transposes.
AFFINE = np.array(
    [
        [-2.0, 0.0, 0.0, 10.0],
        [0.0, 0.0, 3.0, -20.0],
        [0.0, 2.5, 0.0, 5.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SLOPE, INTER = 0.5, 3.0


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 1000, SHAPE).astype(np.int16)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, raw: np.ndarray) -> dict[str, Path]:
    """A scaled 4-D int16 image, uncompressed (memory mapped) and gzipped."""
    img = nib.Nifti1Image(raw, AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = TR
    img.header.set_slope_inter(SLOPE, INTER)
    folder = tmp_path_factory.mktemp("dist")
    paths = {}
    for suffix in (".nii", ".nii.gz"):
        paths[suffix] = folder / f"bold{suffix}"
        nib.save(img, paths[suffix])
    return paths


@pytest.fixture(params=[".nii", ".nii.gz"])
def image(request: pytest.FixtureRequest, images: dict[str, Path]) -> Path:
    return images[request.param]


def expected_values(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).get_fdata(), dtype=np.float64)


def open_chunked(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, engine="nifti", chunks={})


# -- results on the cluster ---------------------------------------------------------------


def test_open_and_isel_on_workers(client: Any, image: Path) -> None:
    ds = open_chunked(image)
    assert ds.data.chunks is not None
    assert ds.data.chunks[3] == (SHAPE[3],)  # whole volumes, grouped: a small series is one chunk
    expected = expected_values(image)
    np.testing.assert_allclose(ds.data.compute().values, expected, rtol=1e-6)
    sub = ds.data.isel(i=slice(2, 9, 2), j=slice(None, None, -1), time=[1, 4])
    np.testing.assert_allclose(sub.compute().values, expected[2:9:2, ::-1][..., [1, 4]], rtol=1e-6)
    # the work ran on the cluster's workers, not in this process
    assert dask.base.get_scheduler() == client.get


def test_to_canonical_on_workers(client: Any, image: Path) -> None:
    ds = open_chunked(image)
    canonical = ds.nifti.to_canonical()
    reference = nib.as_closest_canonical(nib.load(image))
    np.testing.assert_allclose(canonical.nifti.affine, reference.affine)
    assert canonical.nifti.axcodes == ("R", "A", "S")
    np.testing.assert_allclose(canonical.data.compute().values, reference.get_fdata(), rtol=1e-6)


def test_resample_to_on_workers(client: Any, image: Path) -> None:
    ds = open_chunked(image)
    target_affine = np.diag([3.0, 3.0, 3.0, 1.0])
    target_affine[:3, 3] = [-15.0, -12.0, -8.0]
    target_shape = (6, 7, 5)
    out = ds.data.nifti.resample_to((target_affine, target_shape), order=1)
    values = out.compute().values
    assert values.shape == (*target_shape, SHAPE[3])
    source = nib.load(image)
    expected = expected_values(image)
    for t in (0, SHAPE[3] - 1):
        reference = resample_from_to(
            nib.Nifti1Image(expected[..., t], source.affine), (target_shape, target_affine), order=1
        )
        np.testing.assert_allclose(values[..., t], reference.get_fdata(), rtol=1e-5, atol=1e-3)


def test_temporal_mean_and_to_nifti_on_workers(client: Any, image: Path, tmp_path: Path) -> None:
    ds = open_chunked(image)
    mean = ds.data.mean("time")
    expected = expected_values(image).mean(axis=-1)
    np.testing.assert_allclose(mean.compute().values, expected, rtol=1e-5)
    written = mean.nifti.to_nifti(tmp_path / "mean.nii.gz")
    img = nib.load(written)
    np.testing.assert_allclose(img.get_fdata(), expected, rtol=1e-5)
    np.testing.assert_allclose(img.affine, AFFINE)
    # the whole 4-D image, streamed from the workers into one file
    copy = ds.nifti.to_nifti(tmp_path / "copy.nii")
    np.testing.assert_array_equal(
        np.asarray(nib.load(copy).dataobj.get_unscaled()),
        np.asarray(nib.load(image).dataobj.get_unscaled()),
    )


def test_encode_to_zarr_on_workers(client: Any, image: Path, tmp_path: Path) -> None:
    ds = open_chunked(image)
    store = tmp_path / "bold.zarr"
    ds.nifti.encode().to_zarr(store, mode="w")
    back = xr.open_zarr(store).nifti.decode()
    np.testing.assert_allclose(back.data.values, expected_values(image), rtol=1e-6)
    np.testing.assert_allclose(back.nifti.affine, AFFINE)
    # and back to NIfTI, bit for bit in the stored values
    out = back.nifti.to_nifti(tmp_path / "from_zarr.nii.gz")
    np.testing.assert_array_equal(
        np.asarray(nib.load(out).dataobj.get_unscaled()),
        np.asarray(nib.load(image).dataobj.get_unscaled()),
    )


# -- no file handles in task graphs ------------------------------------------------------


class _HandleFinder(cloudpickle.Pickler):
    """A cloudpickle pickler that records every file, mmap or socket it meets."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.found: list[str] = []

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, io.IOBase | mmap.mmap | socket.socket):
            self.found.append(f"{type(obj).__module__}.{type(obj).__name__}")
            return (type(None), ())  # stand-in: keep pickling to find them all
        return super().reducer_override(obj)


def open_handles_in_graph(obj: Any) -> dict[str, list[str]]:
    """Pickle every task of a dask collection's graph; report any file-like object inside."""
    found: dict[str, list[str]] = {}
    graph = dict(obj.__dask_graph__())
    assert graph
    for key, task in graph.items():
        finder = _HandleFinder(io.BytesIO())
        finder.dump(task)
        if finder.found:
            found[str(key)] = finder.found
    return found


def test_the_handle_finder_finds_handles(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    with open(path, "rb") as f:
        finder = _HandleFinder(io.BytesIO())
        finder.dump({"task": (len, [f])})
    assert finder.found == ["_io.BufferedReader"]


def test_task_graphs_hold_no_open_files(client: Any, image: Path) -> None:
    ds = open_chunked(image)
    # Before and after a read (the read opens this process's cached reader).
    assert open_handles_in_graph(ds.data.data) == {}
    ds.data.isel(time=0).values  # noqa: B018
    derived = [
        ds.data.data,
        ds.data.isel(i=slice(1, None, 2)).data,
        ds.nifti.to_canonical().data.data,
        ds.data.nifti.resample_to((np.diag([4.0, 4, 4, 1]), (4, 4, 3))).data,
        ds.data.mean("time").data,
    ]
    for array in derived:
        assert open_handles_in_graph(array) == {}
    # The whole dataset pickles too, and the copy still reads (on a worker).
    copy = pickle.loads(cloudpickle.dumps(ds))
    np.testing.assert_allclose(
        copy.data.isel(time=2).compute().values, expected_values(image)[..., 2], rtol=1e-6
    )


# -- a worker dies in the middle of a computation -----------------------------------------


def _slow_copy(block: np.ndarray) -> np.ndarray:
    time.sleep(0.25)
    return block.copy()


def test_killed_worker_is_survived(images: dict[str, Path]) -> None:
    # A cluster of its own: the killed worker comes back under a new address, which the
    # shared cluster's other tests should not have to wait out.
    with process_cluster(2) as client:
        _kill_a_worker_mid_compute(client, images[".nii.gz"])


def _kill_a_worker_mid_compute(client: Any, image: Path) -> None:
    ds = open_chunked(image)
    expected = expected_values(image)
    # 12 tasks (6 volumes × 2 slabs) of 0.25 s each on two single-threaded workers: ~1.5 s.
    data = ds.data.chunk({"time": 1, "k": 4}).data.map_blocks(_slow_copy, dtype=ds.data.dtype)
    before = set(client.scheduler_info()["workers"])
    future = client.compute(data)
    deadline = time.monotonic() + 10
    while not any(client.processing().values()):
        assert time.monotonic() < deadline, "the computation never started"
        time.sleep(0.02)
    time.sleep(0.3)  # some tasks done, others running
    assert not future.done()
    victim = next(addr for addr, keys in client.processing().items() if keys)
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # no goodbye to the scheduler: the worker just dies
    result = future.result(timeout=60)
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    # the nanny restarted the killed worker under a new address
    client.wait_for_workers(2, timeout=30)
    after = set(client.scheduler_info()["workers"])
    assert victim not in after
    assert len(after - before) == 1


# -- one inflate stream per gzip file per cluster ----------------------------------------------


_INFLATED: dict[str, int] = {}


def _count_inflated_bytes() -> None:
    """On a worker: count the uncompressed bytes each gzip file's streams produce."""
    from xarray_nifti import _gzip

    _INFLATED.clear()
    if getattr(_gzip.GzipStream, "_counted", False):
        return
    original = _gzip.GzipStream._step

    def counting(self: Any, cursor: Any, max_out: int) -> Any:
        out = original(self, cursor, max_out)
        _INFLATED[self.name] = _INFLATED.get(self.name, 0) + len(out[0])
        return out

    _gzip.GzipStream._step = counting  # type: ignore[method-assign]
    _gzip.GzipStream._counted = True  # type: ignore[attr-defined]


def _inflated_bytes() -> dict[str, int]:
    return dict(_INFLATED)


@pytest.mark.parametrize("n_files", [1, 4])
def test_each_gzip_file_is_inflated_by_one_worker(
    client: Any, tmp_path: Path, raw: np.ndarray, n_files: int
) -> None:
    volume = int(np.prod(SHAPE[:3])) * 2
    paths = []
    for n in range(n_files):
        path = tmp_path / f"owned-{n}.nii.gz"
        nib.save(nib.Nifti1Image(raw + n, AFFINE), path)
        paths.append(path)
    with dask.config.set({"array.chunk-size": f"{volume}B"}):  # one volume per chunk: 6 tasks
        datasets = [xr.open_dataset(p, engine="nifti", chunks={}) for p in paths]
    assert datasets[0].data.chunks[3] == (1,) * SHAPE[3]
    client.run(_count_inflated_bytes)
    totals = dask.compute(*(ds.data.sum(dtype="float64") for ds in datasets))
    for n, total in enumerate(totals):
        assert float(total) == float((raw.astype(np.float64) + n).sum())
    per_worker = client.run(_inflated_bytes)
    for path in paths:
        inflating = {
            w: counts[str(path)] for w, counts in per_worker.items() if str(path) in counts
        }
        assert len(inflating) == 1, per_worker  # one worker inflates the file for all
        # about one pass (+ the look for the gzip trailer), not one per worker
        assert sum(inflating.values()) <= 352 + SHAPE[3] * volume + (1 << 20)
    for ds in datasets:
        ds.close()
