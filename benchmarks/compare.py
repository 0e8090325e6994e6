"""Side-by-side comparison of xarray-nifti with nibabel and plain numpy (performance targets).

Generates realistic images at run time, then, in one process and after all
imports, times this package and the nibabel (or numpy) equivalent of each
operation on the same files, interleaving the two and keeping the best of
``--repeat`` runs. Peak memory of the temporal mean is measured in fresh
subprocesses (``VmHWM`` from ``/proc/self/status`` minus the post-import
floor). Prints one table row per measurement: times, the ratio that the
target is about, peak RSS and whether the target is met.

Usage::

    python benchmarks/compare.py             # full size (a few minutes)
    python benchmarks/compare.py --quick     # CI smoke test, small inputs (< 60 s)
    python benchmarks/compare.py --markdown --cases read_gz,random

The exit status is 0 even when a performance target is not met (times are
never asserted); it is 1 if a correctness check fails (data read or written
differ from the reference) or a case crashes (its row says FAILED and the
traceback is printed), so that CI notices.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import dask
import dask.array  # import cost paid before any timing
import nibabel as nib
import numpy as np
import xarray as xr

import xarray_nifti  # noqa: F401  (registers the engine and the accessor)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks import _cluster, _data

MiB = 1 << 20


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """Input sizes and repetition counts of one mode (full or quick)."""

    bold: tuple[int, int, int, int]
    bold_short: int
    t1: tuple[int, int, int]
    open_small: tuple[int, int, int, int]
    open_big: tuple[int, int, int, int]
    repeat: int
    open_repeat: int
    thread_reads: int

    @property
    def bold_short_shape(self) -> tuple[int, int, int, int]:
        """Shape of the short series (the first ``bold_short`` volumes of ``bold``)."""
        return (*self.bold[:3], self.bold_short)


FULL = Sizes(
    bold=(96, 96, 60, 400),
    bold_short=100,
    t1=(256, 256, 256),
    open_small=(64, 64, 64, 8),  # 4 MiB of int16
    open_big=(256, 256, 256, 128),  # 4 GiB of int16, sparse
    repeat=3,
    open_repeat=30,
    thread_reads=12,
)
QUICK = Sizes(
    bold=(32, 32, 16, 40),
    bold_short=10,
    t1=(64, 64, 64),
    open_small=(64, 64, 64, 8),
    open_big=(128, 128, 128, 16),  # 64 MiB, sparse
    repeat=3,
    open_repeat=10,
    thread_reads=8,
)


def _fmt_size(nbytes: float) -> str:
    """``4 GiB``, ``64 MiB``, ``1.7 MiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB)):
        if nbytes >= scale:
            value = nbytes / scale
            return (
                f"{value:.0f} {unit}"
                if value >= 10 or value == int(value)
                else f"{value:.1f} {unit}"
            )
    return f"{nbytes / 1024:.0f} KiB"


def _shape_tag(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


class Files:
    """The generated inputs, made on first use (and reused when ``root`` is kept)."""

    def __init__(self, root: Path, sizes: Sizes) -> None:
        self.root = root
        self.sizes = sizes
        self.generation_s = 0.0

    def _make(self, name: str, make: Callable[[Path], object]) -> str:
        path = self.root / name
        if not path.exists():
            start = time.perf_counter()
            _data.ensure(path, make)
            self.generation_s += time.perf_counter() - start
            log(f"  generated {name} ({path.stat().st_size / MiB:.1f} MiB on disk)")
        return os.fspath(path)

    def _pair(
        self,
        stem: str,
        shape: tuple[int, ...],
        write: Callable[[Path, tuple[int, ...]], object],
        gz: bool,
    ) -> str:
        """The generated ``.nii`` (and, with ``gz``, its nibabel-written ``.nii.gz``)."""
        name = f"{stem}_{_shape_tag(shape)}.nii"
        nii = self._make(name, lambda p: write(p, shape))
        if not gz:
            return nii
        return self._make(name + ".gz", lambda p: _data.gzip_with_nibabel(nii, p))

    def bold(self, n_time: int | None = None, gz: bool = False) -> str:
        """The BOLD-like series with ``n_time`` volumes (default: all), ``.nii`` or ``.nii.gz``."""
        shape = (*self.sizes.bold[:3], n_time or self.sizes.bold[3])
        return self._pair("bold", shape, _data.write_bold, gz)

    def t1(self, gz: bool = False) -> str:
        """The T1-like float32 volume, ``.nii`` or ``.nii.gz``."""
        return self._pair("t1", tuple(self.sizes.t1), _data.write_t1, gz)

    def open_small(self, gz: bool = False) -> str:
        """A 4 MiB series for the open-time yardstick."""
        return self._pair("small", tuple(self.sizes.open_small), _data.write_bold, gz)

    def open_big(self) -> str:
        """A sparse multi-GB ``.nii`` (header plus a truncate()d data block)."""
        shape = self.sizes.open_big
        return self._make(f"sparse_{_shape_tag(shape)}.nii", lambda p: _data.write_sparse(p, shape))


# -- measuring -------------------------------------------------------------------------------
def log(message: str) -> None:
    """Progress output on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def _status_mib(key: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB, if available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


@dataclass
class Sample:
    """One timed call: wall seconds, its result and its peak RSS increase in MiB."""

    seconds: float
    result: Any
    peak_mib: float | None


def measure(fn: Callable[[], Any]) -> Sample:
    """Time ``fn()`` and the peak RSS it adds above the RSS at its start."""
    gc.collect()
    peak_ok = _reset_peak()
    start_rss = _status_mib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    hwm = _status_mib("VmHWM")
    peak = hwm - start_rss if peak_ok and hwm is not None and start_rss is not None else None
    return Sample(seconds, result, peak)


def best_of(
    candidates: dict[str, Callable[[], Any]],
    repeat: int,
    check: Callable[[dict[str, Any]], None] | None = None,
    before_each: Callable[[str], None] | None = None,
) -> dict[str, Sample]:
    """Run the candidates interleaved ``repeat`` times; keep each one's fastest sample.

    The order alternates between rounds, so page-cache and first-touch
    effects hit every candidate alike. ``check`` gets the first round's
    results (for correctness checks); later results are dropped at once.
    """
    best: dict[str, Sample] = {}
    names = list(candidates)
    for round_ in range(repeat):
        order = names if round_ % 2 == 0 else names[::-1]
        results: dict[str, Any] = {}
        for name in order:
            if before_each is not None:
                before_each(name)
            sample = measure(candidates[name])
            if round_ == 0 and check is not None:
                results[name] = sample.result
            sample.result = None
            if name not in best or sample.seconds < best[name].seconds:
                best[name] = sample
        if results and check is not None:
            check(results)
        del results
    return best


# -- result rows -----------------------------------------------------------------------------
class CorrectnessError(AssertionError):
    """Data read or written by the package differ from the reference."""


@dataclass
class Row:
    """One line of the table.

    ``goal`` is ``(op, bound)`` for a target row (``ratio op bound`` must
    hold) or ``None`` for an informational row.
    """

    case: str
    ours: float | None = None
    reference: str = ""
    ref: float | None = None
    ratio: float | None = None
    ratio_means: str = ""
    peak_mib: float | None = None
    goal: tuple[str, float] | None = None
    status: str | None = None  # overrides the computed met/not met (ok, FAILED, n/a)
    note: str = ""

    @property
    def target(self) -> str:
        """The target as text, e.g. ``memmap/ours ≥ 0.9``."""
        if self.goal is None:
            return f"({self.ratio_means})" if self.ratio_means else ""
        op, bound = self.goal
        return f"{self.ratio_means} {op} {bound:g}"

    @property
    def met(self) -> str:
        """``met``, ``not met``, ``info`` or the explicit status."""
        if self.status is not None:
            return self.status
        if self.goal is None:
            return "info"
        if self.ratio is None or not np.isfinite(self.ratio):
            return "not met"
        op, bound = self.goal
        ok = self.ratio <= bound if op == "≤" else self.ratio >= bound
        return "met" if ok else "not met"


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value >= 0.1 else f"{value * 1000:.2f} ms"


def _fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _fmt_mib(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


HEADERS = ("case", "ours s", "reference", "ref s", "ratio", "peak RSS MiB", "target", "met?")


def _cells(row: Row) -> list[str]:
    return [
        row.case,
        _fmt_s(row.ours),
        row.reference,
        _fmt_s(row.ref),
        _fmt_ratio(row.ratio),
        _fmt_mib(row.peak_mib),
        row.target,
        row.met,
    ]


def render(rows: list[Row], markdown: bool) -> str:
    """The table as aligned text or as markdown, followed by numbered notes."""
    cells = [_cells(row) for row in rows]
    notes = [(i, row.note) for i, row in enumerate(rows) if row.note]
    note_ids = {index: n + 1 for n, (index, _) in enumerate(notes)}
    for index, number in note_ids.items():
        cells[index][0] += f" [{number}]"
    lines: list[str] = []
    if markdown:
        lines.append("| " + " | ".join(HEADERS) + " |")
        lines.append("|" + "|".join("---" for _ in HEADERS) + "|")
        lines.extend(
            "| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells
        )
    else:
        widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(HEADERS)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells
        )
    if notes:
        lines.append("")
        lines.extend(f"[{note_ids[index]}] {text}" for index, text in notes)
    return "\n".join(lines)


# -- helpers shared by cases -------------------------------------------------------------------
def open_ours(path: str, **kwargs: Any) -> xr.Dataset:
    """``xr.open_dataset(path, engine="nifti", **kwargs)``."""
    return xr.open_dataset(path, engine="nifti", **kwargs)


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


def memmap_copy(path: str) -> np.ndarray:
    """A plain ``np.memmap`` copy of the data block: the upper bound for ``.nii`` reads."""
    img = nib.load(path)
    header = img.header
    # Not header.get_data_offset(): the loaded image's header copy says 0 (nibabel recomputes it).
    offset = int(img.dataobj.offset)
    mapped = np.memmap(
        path,
        dtype=header.get_data_dtype(),
        mode="r",
        offset=offset,
        shape=header.get_data_shape(),
        order="F",
    )
    return np.array(mapped, order="K")


def reference_data(files: Files, n_time: int | None = None) -> np.ndarray:
    """The true voxel data of the BOLD series (from the ``.nii``)."""
    return memmap_copy(files.bold(n_time))


def assert_equal(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    """Raise :class:`CorrectnessError` unless the arrays have equal shape and values."""
    got = np.asarray(got)
    if got.shape != expected.shape:
        raise CorrectnessError(f"{name}: shape {got.shape}, expected {expected.shape}")
    if not np.array_equal(got, expected):
        wrong = int(np.count_nonzero(got != expected))
        raise CorrectnessError(f"{name}: {wrong} of {got.size} values differ from the reference")


def _raw_mib(shape: tuple[int, ...], itemsize: int) -> float:
    return float(np.prod(shape)) * itemsize / MiB


@contextmanager
def _tempdir(root: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="out-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- cases -----------------------------------------------------------------------------------
@dataclass
class Context:
    """What every case gets."""

    files: Files
    sizes: Sizes
    quick: bool
    workdir: Path
    failures: list[str] = field(default_factory=list)


def case_open(ctx: Context) -> list[Row]:
    """Header-only open: time on a (sparse) multi-GB file vs a 4 MiB file."""
    small, big = ctx.files.open_small(), ctx.files.open_big()
    small_gz, bold_gz = ctx.files.open_small(gz=True), ctx.files.bold(gz=True)
    big_size, small_size = _fmt_size(os.path.getsize(big)), _fmt_size(os.path.getsize(small))
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
            f"open .nii.gz {_fmt_size(os.path.getsize(bold_gz))} vs "
            f"{_fmt_size(os.path.getsize(small_gz))}",
            gz["big"].seconds,
            "ours, small .nii.gz",
            gz["small"].seconds,
            gz["big"].seconds / gz["small"].seconds,
            "big/small",
            goal=("≤", 2.0),
        )
    )
    vs_nib = best_of({"ours": opener(big), "nib": lambda: nib.load(big)}, n)
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
                "memmap": lambda p=path: memmap_copy(p),
                "ours": lambda p=path: read_ours(p),
                "ours_store": lambda p=path: store_ours(p),
                "ours_values": lambda p=path: read_ours(p, chunks={}),
                "nib": lambda p=path: np.asanyarray(nib.load(p, mmap=False).dataobj),
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
            "nib": lambda: np.asanyarray(nib.load(long_gz).dataobj),
            "nib_short": lambda: np.asanyarray(nib.load(short_gz).dataobj),
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
            note=f"nibabel peak RSS for the same read: {_fmt_mib(ref.peak_mib)} MiB",
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
            "nib": lambda: np.asanyarray(nib.load(t1_gz).dataobj),
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
        img = nib.load(gz)
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
    opener = "indexed_gzip" if _has("indexed_gzip") else "gzip"
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


_CHILD = r"""
import gc, json, sys, time
args = json.loads(sys.argv[1])
import numpy as np, nibabel as nib, dask.array, xarray as xr, xarray_nifti

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

gc.collect()
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    floor = status("VmRSS")
except OSError:
    floor = status("VmHWM")
op, path = args["op"], args["path"]
start = time.perf_counter()
result = {}
if op == "mean_ours":
    ds = xr.open_dataset(path, engine="nifti", chunks={})
    mean = ds["data"].mean("time").values
    ds.close()
elif op == "mean_dask_only":  # the same reduction on the same chunks, with no file behind
    ds = xr.open_dataset(path, engine="nifti", chunks={})
    chunks, dims, dtype = ds["data"].chunks, ds["data"].dims, ds["data"].dtype
    ds.close()
    ones = dask.array.ones(tuple(sum(c) for c in chunks), chunks=chunks, dtype=dtype)
    mean = xr.DataArray(ones, dims=dims).mean("time").values
elif op == "mean_nib":
    mean = nib.load(path).get_fdata().mean(-1)
elif op == "save_ours":
    ds = xr.open_dataset(path, engine="nifti", chunks={})
    ds["data"].nifti.to_nifti(args["out"])
    ds.close()
elif op == "save_nib":
    nib.save(nib.load(path), args["out"])
else:
    raise ValueError(op)
seconds = time.perf_counter() - start
result = {"seconds": seconds, "floor": floor, "peak": status("VmHWM")}
if op.startswith("mean"):
    result.update(sum=float(np.sum(mean, dtype=np.float64)),
                  sumsq=float(np.sum(np.square(mean, dtype=np.float64))),
                  shape=list(mean.shape), dtype=str(mean.dtype))
print(json.dumps(result))
"""


def run_child(op: str, path: str, out: str | None = None) -> dict[str, Any]:
    """Run ``op`` in a fresh interpreter; returns its time and RSS floor and peak (MiB).

    ``op`` is ``mean_ours``, ``mean_nib``, ``mean_dask_only``, ``save_ours``
    or ``save_nib``. The floor is the RSS after all imports; the peak is
    ``VmHWM`` after the operation (reset to the floor first when possible).
    """
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps({"op": op, "path": path, "out": out})],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"subprocess {op} on {path} failed:\n{completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def case_mean(ctx: Context) -> list[Row]:
    """Temporal mean with ``chunks={}``: peak RSS above the import floor, in fresh processes."""
    shape = ctx.sizes.bold
    raw = _raw_mib(shape, 2)
    rows: list[Row] = []
    for label, gz in ((".nii.gz", True), (".nii", False)):
        path = ctx.files.bold(gz=gz)
        ours = run_child("mean_ours", path)
        ref = run_child("mean_nib", path)
        if ours["shape"] != list(shape[:3]) or not np.isclose(
            ours["sum"], ref["sum"], rtol=1e-9, atol=0
        ):
            raise CorrectnessError(
                f"temporal mean {label}: ours sums to {ours['sum']!r} (shape {ours['shape']}), "
                f"nibabel to {ref['sum']!r}"
            )
        if not np.isclose(ours["sumsq"], ref["sumsq"], rtol=1e-9, atol=0):
            raise CorrectnessError(f"temporal mean {label}: sums of squares differ")
        ours_above, ref_above = ours["peak"] - ours["floor"], ref["peak"] - ref["floor"]
        rows.append(
            Row(
                f"temporal mean {label} chunks={{}}: peak RSS",
                ours["seconds"],
                f"get_fdata().mean(-1): +{ref_above:.0f} MiB",
                ref["seconds"],
                ours_above / raw,
                "(peak-floor)/raw",
                ours_above,
                goal=("≤", 0.25),
                note=f"{label}: raw int16 data {raw:.0f} MiB; ours floor {ours['floor']:.0f} MiB, "
                f"peak {ours['peak']:.0f} MiB; nibabel +{ref_above:.0f} MiB = "
                f"{ref_above / raw:.2f}× raw",
            )
        )
        rows.append(
            Row(
                f"  temporal mean {label} time vs nibabel",
                ours["seconds"],
                "get_fdata().mean(-1)",
                ref["seconds"],
                ref["seconds"] / ours["seconds"],
                "nib/ours",
            )
        )
    # What xarray + dask alone cost for the same reduction over the same chunks.
    alone = run_child("mean_dask_only", ctx.files.bold(gz=True))
    alone_above = alone["peak"] - alone["floor"]
    rows.append(
        Row(
            "  same mean on dask.array.ones, same chunks",
            alone["seconds"],
            "",
            None,
            alone_above / raw,
            "(peak-floor)/raw",
            alone_above,
            note="no file at all: xarray's .mean('time') over dask.array.ones with the chunks "
            "that chunks={} gives, i.e. the part of the peak and time that is xarray's and "
            "dask's, not the reader's",
        )
    )
    return rows


def _in_memory_sources(path: str) -> tuple[xr.DataArray, nib.Nifti1Image, np.ndarray]:
    ds = open_ours(path).load()
    da = ds["data"]
    img = nib.load(path, mmap=False)
    data = np.asarray(img.dataobj)
    in_memory = nib.Nifti1Image(data, img.affine, img.header)
    return da, in_memory, data


def verify_saved(name: str, path: str, expected: np.ndarray, like: nib.Nifti1Image) -> None:
    """Raise :class:`CorrectnessError` unless ``path`` holds ``expected`` on ``like``'s grid."""
    img = nib.load(path)
    assert_equal(name, np.asanyarray(img.dataobj), expected)
    if not np.allclose(img.affine, like.affine, atol=1e-5):
        raise CorrectnessError(f"{name}: affine differs:\n{img.affine}\nvs\n{like.affine}")
    for key in ("qform_code", "sform_code"):
        if int(img.header[key]) != int(like.header[key]):
            raise CorrectnessError(
                f"{name}: {key} {int(img.header[key])} != {int(like.header[key])}"
            )


def _save_pair(ctx: Context, suffix: str) -> tuple[dict[str, Sample], dict[str, int]]:
    source = ctx.files.bold()
    da, img, data = _in_memory_sources(source)
    sizes: dict[str, int] = {}
    with _tempdir(ctx.workdir) as out:
        targets = {"ours": out / f"ours{suffix}", "nib": out / f"nib{suffix}"}

        def clean(who: str) -> None:
            targets[who].unlink(missing_ok=True)
            os.sync()  # no write-back of the previous output during the next timing

        def check(_: dict[str, Any]) -> None:
            for who, path in targets.items():
                sizes[who] = path.stat().st_size
                verify_saved(f"save {suffix} ({who})", os.fspath(path), data, img)

        best = best_of(
            {
                "ours": lambda: da.nifti.to_nifti(targets["ours"]),
                "nib": lambda: nib.save(img, targets["nib"]),
            },
            ctx.sizes.repeat,
            check,
            before_each=clean,
        )
    return best, sizes


def case_save_nii(ctx: Context) -> list[Row]:
    """Save an in-memory image to ``.nii``: ``.nifti.to_nifti`` vs ``nib.save``."""
    best, _ = _save_pair(ctx, ".nii")
    return [
        Row(
            "save .nii (in-memory data) vs nib.save",
            best["ours"].seconds,
            "nib.save",
            best["nib"].seconds,
            best["ours"].seconds / best["nib"].seconds,
            "ours/nib",
            best["ours"].peak_mib,
            goal=("≤", 1.2),
        )
    ]


def case_save_gz(ctx: Context) -> list[Row]:
    """Save an in-memory image to ``.nii.gz``: time and size vs ``nib.save`` (zlib level 1)."""
    best, sizes = _save_pair(ctx, ".nii.gz")
    return [
        Row(
            "save .nii.gz (in-memory) vs nib.save: time",
            best["ours"].seconds,
            "nib.save (zlib level 1)",
            best["nib"].seconds,
            best["nib"].seconds / best["ours"].seconds,
            "nib/ours",
            best["ours"].peak_mib,
            goal=("≥", 2.0),
        ),
        Row(
            "save .nii.gz (in-memory) vs nib.save: size",
            None,
            f"nib.save: {sizes['nib'] / 1e6:.1f} MB",
            None,
            sizes["ours"] / sizes["nib"],
            "ours/nib size",
            goal=("≤", 1.1),
            note=f"output sizes: ours {sizes['ours']} bytes, nib.save {sizes['nib']} bytes",
        ),
    ]


def case_save_lazy(ctx: Context) -> list[Row]:
    """Streaming save of a lazily opened ``.nii.gz`` to ``.nii.gz`` (memory bounded by chunks)."""
    source = ctx.files.bold(gz=True)
    truth = reference_data(ctx.files)
    like = nib.load(source)
    raw = _raw_mib(ctx.sizes.bold, 2)
    with _tempdir(ctx.workdir) as out:
        targets = {"ours": out / "ours.nii.gz", "nib": out / "nib.nii.gz"}

        def clean(who: str) -> None:
            targets[who].unlink(missing_ok=True)
            os.sync()

        def ours() -> None:
            ds = open_ours(source, chunks={})
            try:
                ds["data"].nifti.to_nifti(targets["ours"])
            finally:
                ds.close()

        def check(_: dict[str, Any]) -> None:
            for who, path in targets.items():
                verify_saved(f"lazy save ({who})", os.fspath(path), truth, like)

        best = best_of(
            {"ours": ours, "nib": lambda: nib.save(nib.load(source), targets["nib"])},
            ctx.sizes.repeat,
            check,
            before_each=clean,
        )
        # Peak memory in fresh processes (in-process peaks miss reused heap memory).
        ours_child = run_child("save_ours", source, os.fspath(out / "child-ours.nii.gz"))
        nib_child = run_child("save_nib", source, os.fspath(out / "child-nib.nii.gz"))
    ours_above = ours_child["peak"] - ours_child["floor"]
    nib_above = nib_child["peak"] - nib_child["floor"]
    return [
        Row(
            "save lazy .nii.gz → .nii.gz vs nib load+save",
            best["ours"].seconds,
            "nib.save(nib.load(p))",
            best["nib"].seconds,
            best["nib"].seconds / best["ours"].seconds,
            "nib/ours",
            ours_above,
        ),
        Row(
            "  same, peak RSS in a fresh process",
            ours_child["seconds"],
            f"nib.save(nib.load(p)): +{nib_above:.0f} MiB",
            nib_child["seconds"],
            ours_above / raw,
            "(peak-floor)/raw",
            ours_above,
            note=f"streaming save: ours +{ours_above:.0f} MiB above the post-import floor, "
            f"nibabel +{nib_above:.0f} MiB, for {raw:.0f} MiB of raw data",
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


def _nibabel_pass(path: str) -> float:
    """Seconds for nibabel's single pass over the whole image (its ``dataobj``)."""
    start = time.perf_counter()
    np.asanyarray(nib.load(path).dataobj)
    return time.perf_counter() - start


def case_cluster(ctx: Context) -> list[Row]:
    """Full chunked reads on LocalCluster(processes=True, threads_per_worker=1): worker CPU."""
    gz, short = ctx.files.bold(gz=True), ctx.files.bold(ctx.sizes.bold_short, gz=True)
    copies = []
    for n in range(6):  # open_mfdataset over several files (copies: each has its own identity)
        copy = ctx.workdir / f"subject-{n}.nii.gz"
        if not copy.exists():
            shutil.copyfile(short, copy)
        copies.append(os.fspath(copy))
    cases: dict[str, Any] = {"one file": gz, "6 files": copies}
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


_CHUNK_CHILD = r"""
import gc, json, sys, time
args = json.loads(sys.argv[1])
import numpy as np, dask.array, xarray as xr, xarray_nifti

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

gc.collect()
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    floor = status("VmRSS")
except OSError:
    floor = status("VmHWM")
chunks = {"none": None, "{}": {}, "auto": "auto"}[args["chunks"]]
start = time.perf_counter()
ds = xr.open_dataset(args["path"], engine="nifti", chunks=chunks)
mean = ds["data"].mean("time").values
seconds = time.perf_counter() - start
n = 0 if chunks is None else len(ds["data"].chunks[3])
print(json.dumps({"seconds": seconds, "floor": floor, "peak": status("VmHWM"), "chunks": n,
                  "sum": float(np.sum(mean, dtype=np.float64))}))
"""


def _chunk_child(path: str, chunks: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", _CHUNK_CHILD, json.dumps({"path": path, "chunks": chunks})],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"temporal mean with chunks={chunks} failed:\n{completed.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def case_chunks(ctx: Context) -> list[Row]:
    """Temporal mean with chunks={} and "auto" beside the same mean without dask."""
    raw = _raw_mib(ctx.sizes.bold, 2)
    rows = []
    for label, gz in ((".nii", False), (".nii.gz", True)):
        path = ctx.files.bold(gz=gz)
        runs = 1 if ctx.quick else 2
        plain = min((_chunk_child(path, "none") for _ in range(runs)), key=lambda r: r["seconds"])
        nib_seconds = min(
            measure(lambda p=path: nib.load(p).get_fdata().mean(-1)).seconds for _ in range(runs)
        )
        for chunks in ("{}", "auto"):
            ours = min(
                (_chunk_child(path, chunks) for _ in range(runs)), key=lambda r: r["seconds"]
            )
            if not np.isclose(ours["sum"], plain["sum"], rtol=1e-9):
                raise CorrectnessError(f"temporal mean {label} chunks={chunks} differs")
            above = ours["peak"] - ours["floor"]
            rows.append(
                Row(
                    f"temporal mean {label} chunks={chunks} vs no dask",
                    ours["seconds"],
                    f"chunks=None (nibabel get_fdata().mean {nib_seconds:.2f} s)",
                    plain["seconds"],
                    ours["seconds"] / plain["seconds"],
                    "dask/none",
                    above,
                    goal=("≤", 1.5),
                    note=f"{ours['chunks']} chunks along time; peak +{above:.0f} MiB "
                    f"= {above / raw:.2f}x raw {raw:.0f} MiB",
                )
            )
            rows.append(
                Row(
                    f"  peak RSS, chunks={chunks}",
                    None,
                    "",
                    None,
                    above / raw,
                    "(peak-floor)/raw",
                    above,
                    goal=("≤", 0.25),
                )
            )
    return rows


CASES: dict[str, Callable[[Context], list[Row]]] = {
    "open": case_open,
    "read_nii": case_read_nii,
    "read_gz": case_read_gz,
    "random": case_random,
    "mean": case_mean,
    "save_nii": case_save_nii,
    "save_gz": case_save_gz,
    "save_lazy": case_save_lazy,
    "threads": case_threads,
    "chunks": case_chunks,
    "cluster": case_cluster,
}


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "–"


def describe_environment(sizes: Sizes) -> str:
    """One paragraph on versions, machine and input sizes."""
    packages = [
        "xarray-nifti",
        "numpy",
        "nibabel",
        "xarray",
        "dask",
        "isal",
        "zlib-ng",
        "indexed_gzip",
    ]
    versions = ", ".join(f"{name} {_version(name)}" for name in packages)
    return (
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"dask scheduler: {dask.config.get('scheduler', 'threads (default)')}\n{versions}\n"
        f"4-D: {_shape_tag(sizes.bold)} int16 ({_raw_mib(sizes.bold, 2):.0f} MiB), "
        f"short series {sizes.bold_short} volumes; 3-D: {_shape_tag(sizes.t1)} float32 "
        f"({_raw_mib(sizes.t1, 4):.0f} MiB); best of {sizes.repeat} interleaved runs, "
        "timed in-process after imports"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (CI smoke test, < 60 s)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of: {', '.join(CASES)} (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=None, help="interleaved runs per measurement")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep generated inputs here and reuse them (default: a temporary directory)",
    )
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases.split(",") if c and c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases and print the table; 1 if a check failed or a case crashed."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeat is not None:
        sizes = Sizes(**{**sizes.__dict__, "repeat": max(1, args.repeat)})
    selected = [c for c in args.cases.split(",") if c]
    keep = args.workdir is not None
    workdir = (
        args.workdir.resolve() if keep else Path(tempfile.mkdtemp(prefix="xarray-nifti-bench-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(Files(workdir, sizes), sizes, args.quick, workdir)
    rows: list[Row] = []
    wrong: list[str] = []
    crashed: list[str] = []
    started = time.perf_counter()
    try:
        for name in selected:
            log(f"[{name}] {CASES[name].__doc__.splitlines()[0]}")
            case_start = time.perf_counter()
            try:
                rows.extend(CASES[name](ctx))
            except CorrectnessError as err:
                wrong.append(str(err))
                rows.append(Row(name, status="WRONG DATA", note=str(err)))
            except Exception as err:  # reported in the table; the exit status is 1
                crashed.append(name)
                status = "FAILED"
                message = f"{type(err).__name__}: {err}".strip().splitlines()[0][:300]
                rows.append(Row(name, status=status, note=message))
                log(traceback.format_exc())
            log(f"  ({time.perf_counter() - case_start:.1f} s)")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(describe_environment(sizes))
    print(
        f"inputs generated in {ctx.files.generation_s:.1f} s; total run "
        f"{time.perf_counter() - started:.1f} s{' (--quick)' if args.quick else ''}\n"
    )
    print(render(rows, args.markdown))
    if wrong:
        print("\nCORRECTNESS FAILURES:\n" + "\n".join(wrong))
    if crashed:
        print(f"\nCRASHED: {', '.join(crashed)} (tracebacks above)")
    return 1 if wrong or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
