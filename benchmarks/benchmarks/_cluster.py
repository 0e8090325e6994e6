"""Full chunked reads on a ``LocalCluster`` of worker processes: wall time and worker CPU.

Used by ``compare.py`` (the ``cluster`` case). Worker CPU is the user + system
time of the worker processes, read with psutil before and after the compute,
so it counts every inflate pass any worker makes, wherever the scheduler
placed the tasks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["ClusterRead", "cluster_reads", "forget_readers", "open_data", "process_cluster"]


@dataclass(frozen=True)
class ClusterRead:
    """One full read: what, on how many workers, how long, how much worker CPU.

    ``idle_cpu`` is what the same workers use while idle for as long as the read
    took (heartbeats, the CPU readings themselves): with more workers than
    cores it is a visible part of ``worker_cpu`` that no read causes.
    """

    label: str
    workers: int
    wall: float
    worker_cpu: float
    total: float
    idle_cpu: float = 0.0


def _cpu_seconds() -> float:
    import psutil  # type: ignore[import-untyped]

    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _worker_cpu(client: Any) -> float:
    return float(sum(client.run(_cpu_seconds).values()))


def open_data(paths: str | Sequence[str]) -> xr.DataArray:
    """The image of one path, or of several stacked along ``subject``, with ``chunks={}``."""
    if isinstance(paths, str):
        return xr.open_dataset(paths, engine="nifti", chunks={})["data"]
    return xr.open_mfdataset(
        list(paths), engine="nifti", chunks={}, combine="nested", concat_dim="subject"
    )["data"]


def cluster_reads(
    n_workers: int, cases: dict[str, str | Sequence[str]], repeat: int = 1
) -> list[ClusterRead]:
    """Read every case in full (a float64 sum) on a fresh cluster of ``n_workers`` processes.

    Each case is best of ``repeat`` (by wall time); every read opens the files
    anew, so no worker keeps inflate state from an earlier round.
    """
    out = []
    with process_cluster(n_workers) as client:
        for label, paths in cases.items():
            best: ClusterRead | None = None
            for _ in range(repeat):
                data = open_data(paths)
                before = _worker_cpu(client)
                start = time.perf_counter()
                total = float(data.sum(dtype=np.float64).compute())
                wall = time.perf_counter() - start
                cpu = _worker_cpu(client) - before
                data.close()
                client.run(forget_readers)
                before = _worker_cpu(client)
                time.sleep(wall)
                idle = _worker_cpu(client) - before
                if best is None or wall < best.wall:
                    best = ClusterRead(label, n_workers, wall, cpu, total, idle)
            assert best is not None
            out.append(best)
    return out


@contextmanager
def process_cluster(n_workers: int) -> Iterator[Any]:
    """A ``LocalCluster`` of ``n_workers`` single-threaded processes and its ``Client``.

    The client is the default scheduler inside the block; the workers are up
    and have imported what a read needs before it starts.
    """
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_up)
        yield client


def _warm_up() -> None:
    """Read a small ``.nii.gz`` once: the worker imports what a read needs before it is timed.

    Measurements are after imports, as in one process: a worker's first read would
    otherwise add its imports (about 0.3 s of CPU per worker) to the decode work.
    """
    from nibabel.testing import data_path

    import xarray_nifti  # noqa: F401  (registers the engine)

    with xr.open_dataset(f"{data_path}/example4d.nii.gz", engine="nifti", chunks={}) as ds:
        ds["data"].sum(dtype=np.float64).compute(scheduler="sync")
    _cpu_seconds()  # imports psutil, which every CPU reading then uses


def forget_readers() -> None:
    """Drop this worker's open readers, so that the next round starts cold."""
    from xarray.backends.file_manager import FILE_CACHE

    from xarray_nifti import array

    array._OWNED.clear()
    for reader in list(FILE_CACHE.values()):
        reader.close()
    FILE_CACHE.clear()
