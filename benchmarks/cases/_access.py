"""Random-access cases of ``compare.py``: single volumes of a ``.nii.gz``, and threads.

* ``random``: the last volume after its first access against volume 0 on a fresh
  open (the checkpointed inflate stream), and both against nibabel;
* ``threads``: eight threads read random boxes of one ``.nii.gz`` at once, half
  through one shared Dataset; every box must equal the reference.
"""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xarray as xr
from cases._harness import CorrectnessError, Row, assert_equal, has_module, load
from cases._inputs import Context, open_ours, reference_data

__all__ = ["case_random", "case_threads"]


def case_random(ctx: Context) -> list[Row]:
    """Random access into ``.nii.gz``: last volume after its first access vs volume 0."""
    gz = ctx.files.bold(gz=True)
    last = ctx.sizes.bold[3] - 1
    truth = reference_data(ctx.files)
    t0: list[float] = []
    first_last: list[float] = []
    again_last: list[float] = []
    again_first: list[float] = []
    nib_t0: list[float] = []
    nib_first_last: list[float] = []
    nib_again_last: list[float] = []
    after_other_close: list[float] = []

    def vol(da: xr.DataArray, t: int) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        values = da.isel(time=t).values
        return time.perf_counter() - start, values

    for _ in range(ctx.sizes.repeat):
        gc.collect()
        ds = open_ours(gz, chunks={})
        try:
            da = ds["data"]
            seconds, values = vol(da, 0)
            t0.append(seconds)
            assert_equal("volume 0", values, truth[..., 0])
            seconds, values = vol(da, last)
            first_last.append(seconds)
            assert_equal(f"volume {last} (first access)", values, truth[..., last])
            for _ in range(3):
                seconds, values = vol(da, last)
                again_last.append(seconds)
                assert_equal(f"volume {last} (again)", values, truth[..., last])
                seconds, values = vol(da, 0)
                again_first.append(seconds)
                assert_equal("volume 0 (again)", values, truth[..., 0])
        finally:
            ds.close()
        # Another Dataset of the same file, opened and closed, while ``ds`` stays open.
        ds = open_ours(gz, chunks={})
        try:
            vol(ds["data"], last)  # the shared reader now has seek points up to the end
            other = open_ours(gz, chunks={})
            other["data"].isel(time=0).values  # noqa: B018
            other.close()
            seconds, values = vol(ds["data"], last)
            after_other_close.append(seconds)
            assert_equal(f"volume {last} (after another Dataset closed)", values, truth[..., last])
        finally:
            ds.close()
        img = load(gz)
        start = time.perf_counter()
        np.asanyarray(img.dataobj[..., 0])
        nib_t0.append(time.perf_counter() - start)
        start = time.perf_counter()
        np.asanyarray(img.dataobj[..., last])
        nib_first_last.append(time.perf_counter() - start)
        for _ in range(3):
            start = time.perf_counter()
            np.asanyarray(img.dataobj[..., last])
            nib_again_last.append(time.perf_counter() - start)
        del img
    del truth
    opener = "indexed_gzip" if has_module("indexed_gzip") else "gzip"
    return [
        Row(
            f"vol {last} after 1st access vs vol 0 (.nii.gz)",
            min(again_last),
            "ours, vol 0 on a fresh open",
            min(t0),
            min(again_last) / min(t0),
            f"t{last}/t0",
            goal=("≤", 2.0),
        ),
        Row(
            f"  vol {last} after 1st access vs vol 0 again",
            min(again_last),
            f"ours, vol 0 after vol {last}",
            min(again_first),
            min(again_last) / min(again_first),
            f"t{last}/t0",
        ),
        Row(
            f"  vol {last} after 1st access vs nibabel",
            min(again_last),
            f"nibabel ({opener}), same",
            min(nib_again_last),
            min(again_last) / min(nib_again_last),
            "ours/nib",
        ),
        Row(
            f"  vol {last} 1st access vs nibabel",
            min(first_last),
            f"nibabel ({opener}), same",
            min(nib_first_last),
            min(first_last) / min(nib_first_last),
            "ours/nib",
        ),
        Row(
            f"  vol {last} again after another Dataset closed",
            min(after_other_close),
            f"ours, vol {last} after 1st access",
            min(again_last),
            min(after_other_close) / min(again_last),
            "after close/again",
            note="the first Dataset reads the last volume, then a second Dataset of the same "
            "file is opened, read and closed; the per-process reader both share counts its users, "
            "so the first Dataset keeps its seek points (ratio near 1)",
        ),
        Row(
            "  vol 0 on a fresh open vs nibabel",
            min(t0),
            f"nibabel ({opener}), same",
            min(nib_t0),
            min(t0) / min(nib_t0),
            "ours/nib",
        ),
    ]


def case_threads(ctx: Context) -> list[Row]:
    """Eight threads read random boxes of one ``.nii.gz`` at once; all must get correct data."""
    gz = ctx.files.bold(gz=True)
    truth = reference_data(ctx.files)
    shape = ctx.sizes.bold
    n_threads, n_reads = 8, ctx.sizes.thread_reads

    def plan(seed: int) -> list[tuple[slice, slice, slice, slice]]:
        rng = np.random.default_rng(seed)
        boxes = []
        for _ in range(n_reads):
            box = []
            for axis, n in enumerate(shape):
                span = 4 if axis == 3 else max(2, n // 2)  # at most 4 volumes per read
                start = int(rng.integers(0, n))
                stop = int(rng.integers(start + 1, min(n, start + span) + 1))
                box.append(slice(start, stop))
            boxes.append(tuple(box))
        return boxes  # type: ignore[return-value]

    plans = [plan(seed) for seed in range(n_threads)]
    shared = open_ours(gz)
    start_line, finish_line = threading.Barrier(n_threads), threading.Barrier(n_threads)

    def worker(tid: int) -> int:
        own = open_ours(gz) if tid % 2 else None  # half share one Dataset, half open their own
        da = (own if own is not None else shared)["data"]
        start_line.wait()
        wrong = 0
        try:
            for box in plans[tid]:
                if not np.array_equal(da[box].values, truth[box]):
                    wrong += 1
        finally:
            # Close only when every thread is done: closing a Dataset closes the per-process
            # reader that all Datasets of the file share (see the "random" case).
            finish_line.wait()
            if own is not None:
                own.close()
        return wrong

    start = time.perf_counter()
    with ThreadPoolExecutor(n_threads) as pool:
        wrong = sum(pool.map(worker, range(n_threads)))
    threaded = time.perf_counter() - start
    shared.close()

    serial_ds = open_ours(gz)
    start = time.perf_counter()
    for boxes in plans:
        for box in boxes:
            serial_ds["data"][box].values  # noqa: B018
    serial = time.perf_counter() - start
    serial_ds.close()
    if wrong:
        raise CorrectnessError(
            f"8 threads: {wrong} of {n_threads * n_reads} random reads returned wrong data"
        )
    return [
        Row(
            f"{n_threads} threads × {n_reads} random boxes, one .nii.gz",
            threaded,
            "same reads, 1 thread",
            serial,
            threaded / serial,
            "threads/serial",
            status="ok",
            goal=None,
            note=f"all {n_threads * n_reads} reads equal the reference",
        )
    ]
