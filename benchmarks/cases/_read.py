"""Reading cases of ``compare.py``: header-only open, full reads of ``.nii`` and ``.nii.gz``.

* ``open``: open time of a (sparse) multi-GB file against a 4 MiB one, lazy and
  with ``chunks={}``, and against ``nib.load``;
* ``read_nii``: full reads of ``.nii`` against a plain ``np.memmap`` copy;
* ``read_gz``: chunked reads of ``.nii.gz``: linear in the number of volumes, and
  against nibabel's single pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import dask
import dask.array  # import cost paid before any timing
import numpy as np
from cases._harness import Row, assert_equal, best_of, fmt_mib, load
from cases._inputs import Context, fmt_size, memmap_copy, open_ours, reference_data

__all__ = ["case_open", "case_read_gz", "case_read_nii", "read_ours", "store_ours"]


def read_ours(path: str, **kwargs: Any) -> np.ndarray:
    """Open, read all voxel data with ``.values``, close (so the next read starts cold)."""
    ds = open_ours(path, **kwargs)
    try:
        return ds["data"].values
    finally:
        ds.close()


def store_ours(path: str) -> np.ndarray:
    """Open with ``chunks={}`` and let dask read every chunk into a Fortran-ordered array.

    This is the chunked read path without dask's C-order assembly of
    ``.values`` (a transposing copy for NIfTI's Fortran-ordered volumes).
    """
    ds = open_ours(path, chunks={})
    try:
        data = ds["data"].data
        out = np.empty(data.shape, dtype=data.dtype, order="F")
        dask.array.store(data, out, lock=False)
        return out
    finally:
        ds.close()


def _nibabel_read(path: str) -> np.ndarray:
    """nibabel's real read of a ``.nii`` (``mmap=False``; ``dataobj`` alone is a memmap)."""
    return np.asanyarray(load(path, mmap=False).dataobj)


def case_open(ctx: Context) -> list[Row]:
    """Header-only open: time on a (sparse) multi-GB file vs a 4 MiB file."""
    small, big = ctx.files.open_small(), ctx.files.open_big()
    small_gz, bold_gz = ctx.files.open_small(gz=True), ctx.files.bold(gz=True)
    big_size, small_size = fmt_size(os.path.getsize(big)), fmt_size(os.path.getsize(small))
    n = ctx.sizes.open_repeat

    def opener(path: str, **kwargs: Any) -> Callable[[], None]:
        def run() -> None:
            open_ours(path, **kwargs).close()

        return run

    open_ours(small).close()  # warm up xarray's engine lookup and our imports
    rows: list[Row] = []
    lazy = best_of({"big": opener(big), "small": opener(small)}, n)
    rows.append(
        Row(
            f"open .nii {big_size} vs {small_size} (lazy)",
            lazy["big"].seconds,
            "ours, small file",
            lazy["small"].seconds,
            lazy["big"].seconds / lazy["small"].seconds,
            "big/small",
            goal=("≤", 2.0),
        )
    )
    chunked = best_of({"big": opener(big, chunks={}), "small": opener(small, chunks={})}, n)
    rows.append(
        Row(
            f"open .nii {big_size} vs {small_size}, chunks={{}}",
            chunked["big"].seconds,
            "ours, small file",
            chunked["small"].seconds,
            chunked["big"].seconds / chunked["small"].seconds,
            "big/small",
            goal=("≤", 2.0),
            note="chunks={} builds one dask task per volume, so some growth with the volume count "
            f"({ctx.sizes.open_big[3]} vs {ctx.sizes.open_small[3]}) is inherent to dask",
        )
    )
    gz = best_of({"big": opener(bold_gz), "small": opener(small_gz)}, n)
    rows.append(
        Row(
            f"open .nii.gz {fmt_size(os.path.getsize(bold_gz))} vs "
            f"{fmt_size(os.path.getsize(small_gz))}",
            gz["big"].seconds,
            "ours, small .nii.gz",
            gz["small"].seconds,
            gz["big"].seconds / gz["small"].seconds,
            "big/small",
            goal=("≤", 2.0),
        )
    )
    vs_nib = best_of({"ours": opener(big), "nib": lambda: load(big)}, n)
    rows.append(
        Row(
            f"open .nii {big_size}: ours vs nib.load",
            vs_nib["ours"].seconds,
            "nib.load (header only)",
            vs_nib["nib"].seconds,
            vs_nib["ours"].seconds / vs_nib["nib"].seconds,
            "ours/nib",
        )
    )
    return rows


def case_read_nii(ctx: Context) -> list[Row]:
    """Full read of ``.nii``: ours vs a plain memmap copy (and nibabel's mmap=False read)."""
    rows: list[Row] = []
    # Reads of tens of ms are noisy on a shared VM: more rounds for the small volume.
    inputs = (
        ("4-D int16", ctx.files.bold(), max(ctx.sizes.repeat, 5)),
        ("3-D float32", ctx.files.t1(), max(ctx.sizes.repeat, 15)),
    )
    for label, path, repeat in inputs:

        def check(results: dict[str, Any], label: str = label) -> None:
            for name, value in results.items():
                if name != "memmap":
                    assert_equal(f"read .nii {label} ({name})", value, results["memmap"])

        best = best_of(
            {
                "memmap": partial(memmap_copy, path),
                "ours": partial(read_ours, path),
                "ours_store": partial(store_ours, path),
                "ours_values": partial(read_ours, path, chunks={}),
                "nib": partial(_nibabel_read, path),
            },
            repeat,
            check,
        )
        mb = os.path.getsize(path) / 1e6
        memmap_s = best["memmap"].seconds
        variants = (
            ("ours", f"full read .nii {label} {mb:.0f} MB", ("≥", 0.9), "memmap/ours"),
            ("ours_store", "  same, chunks={} (dask store)", None, "memmap/ours"),
            ("ours_values", "  same, chunks={} .values", None, "memmap/ours"),
            ("nib", "  nibabel mmap=False read", None, "memmap/nib"),
        )
        for key, case, goal, means in variants:
            rows.append(
                Row(
                    case,
                    best[key].seconds,
                    "np.memmap copy",
                    memmap_s,
                    memmap_s / best[key].seconds,
                    means,
                    best[key].peak_mib,
                    goal=goal,
                )
            )
    return rows


def case_read_gz(ctx: Context) -> list[Row]:
    """Full chunked read of ``.nii.gz``: linearity in volumes, and speed vs nibabel's one pass."""
    sizes = ctx.sizes
    n_long, n_short = sizes.bold[3], sizes.bold_short
    long_gz, short_gz = ctx.files.bold(gz=True), ctx.files.bold(n_short, gz=True)
    truth = {"long": reference_data(ctx.files), "short": reference_data(ctx.files, n_short)}

    def check(results: dict[str, Any]) -> None:
        for name, value in results.items():
            expected = truth["short" if name.endswith("short") else "long"]
            assert_equal(f"read .nii.gz ({name})", value, expected)

    best = best_of(
        {
            "ours": lambda: store_ours(long_gz),
            "ours_short": lambda: store_ours(short_gz),
            "nib": lambda: np.asanyarray(load(long_gz).dataobj),
            "nib_short": lambda: np.asanyarray(load(short_gz).dataobj),
            "ours_values": lambda: read_ours(long_gz, chunks={}),
            "ours_values_short": lambda: read_ours(short_gz, chunks={}),
            "ours_lazy": lambda: read_ours(long_gz),
        },
        max(sizes.repeat, 5),
        check,
    )
    truth.clear()
    ref = best["nib"]
    nib_label = "asanyarray(nib.load().dataobj)"
    rows = [
        Row(
            f"chunked read .nii.gz (dask store), {n_long} vs {n_short} vols",
            best["ours"].seconds,
            f"ours, {n_short} volumes",
            best["ours_short"].seconds,
            best["ours"].seconds / best["ours_short"].seconds,
            f"t{n_long}/t{n_short}",
            best["ours"].peak_mib,
            goal=("≤", 1.1 * n_long / n_short),
            note="'dask store': chunks={}, every chunk read by dask and stored into a "
            "preallocated Fortran-ordered array (what nibabel returns), so the time is the "
            "read path's, not dask's C-order assembly (see the '.values' rows)",
        ),
        Row(
            f"chunked read .nii.gz (dask store) vs nibabel, {n_long} vols",
            best["ours"].seconds,
            nib_label,
            ref.seconds,
            ref.seconds / best["ours"].seconds,
            "nib/ours",
            best["ours"].peak_mib,
            goal=("≥", 1.5),
            note=f"nibabel peak RSS for the same read: {fmt_mib(ref.peak_mib)} MiB",
        ),
        Row(
            f"  nibabel single pass, {n_long} vs {n_short} vols",
            ref.seconds,
            f"nibabel, {n_short} volumes",
            best["nib_short"].seconds,
            ref.seconds / best["nib_short"].seconds,
            f"t{n_long}/t{n_short}",
            ref.peak_mib,
        ),
        Row(
            f"  same, chunks={{}} .values, {n_long} vs {n_short} vols",
            best["ours_values"].seconds,
            f"ours, {n_short} volumes",
            best["ours_values_short"].seconds,
            best["ours_values"].seconds / best["ours_values_short"].seconds,
            f"t{n_long}/t{n_short}",
            best["ours_values"].peak_mib,
        ),
        Row(
            "  same, chunks={} .values vs nibabel",
            best["ours_values"].seconds,
            nib_label,
            ref.seconds,
            ref.seconds / best["ours_values"].seconds,
            "nib/ours",
            best["ours_values"].peak_mib,
            note="'.values' on a dask-backed variable lets dask concatenate the per-volume "
            "Fortran-ordered chunks into a C-ordered array: a strided transposing copy",
        ),
        Row(
            "  same, no dask (chunks=None) .values vs nibabel",
            best["ours_lazy"].seconds,
            nib_label,
            ref.seconds,
            ref.seconds / best["ours_lazy"].seconds,
            "nib/ours",
            best["ours_lazy"].peak_mib,
        ),
    ]
    t1_gz = ctx.files.t1(gz=True)
    truth_t1 = memmap_copy(ctx.files.t1())

    def check_t1(results: dict[str, Any]) -> None:
        for name, value in results.items():
            assert_equal(f"read 3-D .nii.gz ({name})", value, truth_t1)

    best = best_of(
        {
            "ours": lambda: store_ours(t1_gz),
            "nib": lambda: np.asanyarray(load(t1_gz).dataobj),
            "ours_values": lambda: read_ours(t1_gz, chunks={}),
        },
        sizes.repeat,
        check_t1,
    )
    rows.append(
        Row(
            "chunked read .nii.gz 3-D float32 (dask store) vs nibabel",
            best["ours"].seconds,
            nib_label,
            best["nib"].seconds,
            best["nib"].seconds / best["ours"].seconds,
            "nib/ours",
            best["ours"].peak_mib,
            goal=("≥", 1.5),
        )
    )
    rows.append(
        Row(
            "  same, chunks={} .values",
            best["ours_values"].seconds,
            nib_label,
            best["nib"].seconds,
            best["nib"].seconds / best["ours_values"].seconds,
            "nib/ours",
            best["ours_values"].peak_mib,
        )
    )
    return rows
