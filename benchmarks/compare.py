"""Side-by-side comparison of xarray-nifti with nibabel, numpy, SimpleITK and spatial-image.

Generates realistic images at run time, then, in one process and after all
imports, times this package and the nibabel (numpy, SimpleITK) equivalent of each
operation on the same files, interleaving them and keeping the best of
``--repeat`` runs. Peak memory of the temporal reductions and of the streaming
save is measured in fresh subprocesses (``VmHWM`` from ``/proc/self/status``
minus the post-import floor). Prints one table row per measurement: times, the
ratio that the target is about, peak RSS and whether the target is met.

Usage::

    python benchmarks/compare.py             # full size (20 to 25 minutes on 2 cores)
    python benchmarks/compare.py --quick     # CI smoke test, small inputs (1 to 1.5 minutes)
    python benchmarks/compare.py --markdown --cases read_gz,random

The cases live in ``benchmarks/cases/_*.py`` (one module per topic, with the
measuring harness, the inputs and the fresh-process program beside them). The
exit status is 0 even when a performance target is not met (times are never
asserted); it is 1 if a correctness check fails (data read or written differ
from the reference) or a case crashes (its row says FAILED and the traceback is
printed), so that CI notices.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import dask
from cases._access import case_random, case_threads
from cases._child import MiB
from cases._chunks import case_chunks
from cases._cluster import case_cluster
from cases._cluster_mean import case_cluster_mean
from cases._geometry import case_reorient, case_slice
from cases._harness import CorrectnessError, Row, log, render
from cases._inputs import FULL, QUICK, Context, Files, Sizes, fmt_size, raw_mib, shape_tag
from cases._read import case_open, case_read_gz, case_read_nii
from cases._save import case_save_gz, case_save_lazy, case_save_nii
from cases._temporal import case_mean

CASES: dict[str, Callable[[Context], list[Row]]] = {
    "open": case_open,
    "read_nii": case_read_nii,
    "read_gz": case_read_gz,
    "random": case_random,
    "mean": case_mean,
    "save_nii": case_save_nii,
    "save_gz": case_save_gz,
    "save_lazy": case_save_lazy,
    "reorient": case_reorient,
    "slice": case_slice,
    "threads": case_threads,
    "chunks": case_chunks,
    "cluster": case_cluster,
    "cluster_mean": case_cluster_mean,
}


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "–"


def _raw(shape: tuple[int, ...], itemsize: int) -> str:
    """Raw data size of an array, e.g. ``422 MiB``."""
    return fmt_size(raw_mib(shape, itemsize) * MiB)


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
        "SimpleITK",
    ]
    versions = ", ".join(f"{name} {_version(name)}" for name in packages)
    return (
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"dask scheduler: {dask.config.get('scheduler', 'threads (default)')}\n{versions}\n"
        f"4-D: {shape_tag(sizes.bold)} int16 ({_raw(sizes.bold, 2)}), "
        f"short series {sizes.bold_short} volumes; 3-D: {shape_tag(sizes.t1)} float32 "
        f"({_raw(sizes.t1, 4)}) and {shape_tag(sizes.t1_sagittal)} int16 "
        f"({_raw(sizes.t1_sagittal, 2)}); best of {sizes.repeat} interleaved runs, "
        "timed in-process after imports"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (CI smoke test)")
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
    # The imports' objects live to the end: frozen, every gc.collect() before a timing
    # scans only what the cases made (tens of ms less per timing with xarray and dask).
    gc.freeze()
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
            log(f"[{name}] {(CASES[name].__doc__ or '').splitlines()[0]}")
            case_start = time.perf_counter()
            try:
                rows.extend(CASES[name](ctx))
            except CorrectnessError as err:
                wrong.append(str(err))
                rows.append(Row(name, status="WRONG DATA", note=str(err)))
            except Exception as err:  # reported in the table; the exit status is 1
                crashed.append(name)
                message = f"{type(err).__name__}: {err}".strip().splitlines()[0][:300]
                rows.append(Row(name, status="FAILED", note=message))
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
