"""Cluster case of ``compare.py``: full chunked reads on a ``LocalCluster`` of processes.

``cluster``: a float64 sum over one ``.nii.gz`` and over six files opened with
``open_mfdataset``, on 1 and 2 worker processes (8 on the short series in full
mode); the target is the total worker CPU with N workers over that with one.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from benchmarks import _cluster
from cases._harness import CorrectnessError, Row, load
from cases._inputs import Context, reference_data

__all__ = ["case_cluster"]


def _nibabel_pass(path: str) -> float:
    """Seconds for nibabel's single pass over the whole image (its ``dataobj``)."""
    start = time.perf_counter()
    np.asanyarray(load(path).dataobj)
    return time.perf_counter() - start


def case_cluster(ctx: Context) -> list[Row]:
    """Full chunked reads on LocalCluster(processes=True, threads_per_worker=1): worker CPU."""
    gz, short = ctx.files.bold(gz=True), ctx.files.bold(ctx.sizes.bold_short, gz=True)
    cases: dict[str, Any] = {"one file": gz, "6 files": ctx.files.subject_copies(6)}
    runs: dict[tuple[str, int], _cluster.ClusterRead] = {}
    cases["short file"] = short
    for n_workers in (1, 2):
        for run in _cluster.cluster_reads(n_workers, cases):
            runs[run.label, n_workers] = run
    if not ctx.quick:  # eight worker processes take too long to start for the CI smoke test
        for run in _cluster.cluster_reads(8, {"short file": short}):
            runs[run.label, 8] = run
    expected = {
        "one file": float(reference_data(ctx.files).sum(dtype=np.float64)),
        "short file": float(reference_data(ctx.files, ctx.sizes.bold_short).sum(dtype=np.float64)),
    }
    expected["6 files"] = 6 * expected["short file"]
    for (label, n_workers), run in runs.items():
        if not np.isclose(run.total, expected[label], rtol=1e-12):
            raise CorrectnessError(
                f"cluster read of {label} on {n_workers} workers sums to {run.total!r}, "
                f"not {expected[label]!r}"
            )
    nib_gz, nib_short = _nibabel_pass(gz), _nibabel_pass(short)
    rows = []
    for label, n_workers, nib_seconds in (
        ("one file", 2, nib_gz),
        ("6 files", 2, 6 * nib_short),
        ("short file", 8, nib_short),
    ):
        if (label, n_workers) not in runs:
            continue
        one, many = runs[label, 1], runs[label, n_workers]
        rows.append(
            Row(
                f"cluster {label} .nii.gz, {n_workers} vs 1 worker: worker CPU",
                many.worker_cpu,
                f"nibabel single pass {nib_seconds:.2f} s",
                one.worker_cpu,
                many.worker_cpu / one.worker_cpu,
                f"cpu{n_workers}/cpu1",
                goal=("≤", 1.3),
                note=f"{label}: worker CPU {one.worker_cpu:.2f} s on 1 worker, "
                f"{many.worker_cpu:.2f} s on {n_workers}",
            )
        )
        net_one, net_many = one.worker_cpu - one.idle_cpu, many.worker_cpu - many.idle_cpu
        rows.append(
            Row(
                "  same, net of the workers' idle CPU over the read's wall time",
                net_many,
                "1 worker, net of its idle CPU",
                net_one,
                net_many / net_one if net_one > 0 else None,  # CPU times tick in 10 ms
                f"net cpu{n_workers}/cpu1",
                note=f"idle CPU over the same wall time: {one.idle_cpu:.2f} s (1 worker), "
                f"{many.idle_cpu:.2f} s ({n_workers} workers)",
            )
        )
        rows.append(
            Row(
                f"  wall, {n_workers} vs 1 worker",
                many.wall,
                "1 worker",
                one.wall,
                many.wall / one.wall,
                f"wall{n_workers}/wall1",
                note=f"{os.cpu_count()} CPUs shared by all workers",
            )
        )
    return rows
