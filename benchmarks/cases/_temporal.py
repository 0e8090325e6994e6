"""Temporal case of ``compare.py``: mean and standard deviation over time against nibabel.

``mean``: on a BOLD-like int16 series stored with ``scl_slope``/``scl_inter``, as
``.nii.gz`` and ``.nii``, ``ds["data"].mean("time").values`` (and ``.std``) with
``chunks={}`` and with ``chunks=None`` against ``nib.load(p).get_fdata().mean(-1)``
(``.std(-1)``). Every result is first checked against nibabel's; times are the
best of interleaved runs in this process, peaks are measured in a fresh process
per candidate (``VmHWM`` above the RSS after the imports).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from cases._harness import CorrectnessError, Row, best_of, load, run_child
from cases._inputs import INTER, SLOPE, Context, open_ours, raw_mib

__all__ = ["case_mean", "check_float32_result"]

STATS = ("mean", "std")
#: ``--chunks`` of ``_child.py`` → what ``open_dataset`` gets
CHUNKINGS: dict[str, Any] = {"{}": {}, "none": None}
#: agreement with nibabel's float64 result: ours decodes int16 × slope to float32
RTOL = 1e-5


def _ours(path: str, stat: str, chunks: Any) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        ds = open_ours(path, chunks=chunks)
        try:
            return np.asarray(getattr(ds["data"], stat)("time").values)
        finally:
            ds.close()

    return run


def _nib(path: str, stat: str) -> Callable[[], np.ndarray]:
    return lambda: np.asarray(getattr(load(path).get_fdata(), stat)(-1))


def _chunk_label(chunks: str) -> str:
    return "chunks=None" if chunks == "none" else f"chunks={chunks}"


def check_float32_result(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    """Raise :class:`CorrectnessError` unless ``got`` equals nibabel's result to float32."""
    if got.shape != expected.shape:
        raise CorrectnessError(f"{name}: shape {got.shape}, nibabel's {expected.shape}")
    error = float(np.max(np.abs(got.astype(np.float64) - expected)))
    tolerance = RTOL * float(np.max(np.abs(expected)))
    if not error <= tolerance:
        raise CorrectnessError(f"{name}: max |result - nibabel| = {error:.3g} > {tolerance:.3g}")


def _same_checksum(name: str, child: dict[str, Any], expected: np.ndarray) -> None:
    """The fresh process computed what was checked in this process."""
    total = float(np.sum(expected, dtype=np.float64))
    if child["shape"] != list(expected.shape) or not np.isclose(child["sum"], total, rtol=1e-6):
        raise CorrectnessError(
            f"{name} in a fresh process: sum {child['sum']!r} (shape {child['shape']}), "
            f"expected {total!r}"
        )


def _stat_rows(ctx: Context, path: str, label: str, stat: str, raw: float) -> list[Row]:
    """Time (in-process) and peak (fresh processes) rows of one statistic on one file."""
    candidates = {f"ours {c}": _ours(path, stat, value) for c, value in CHUNKINGS.items()}
    candidates["nib"] = _nib(path, stat)
    checked: dict[str, np.ndarray] = {}

    def check(results: dict[str, Any]) -> None:
        for name, value in results.items():
            if name != "nib":
                check_float32_result(f"temporal {stat} {label} {name}", value, results["nib"])
            checked[name] = value

    best = best_of(candidates, ctx.sizes.repeat, check)
    nib_child = run_child(f"{stat}_nib", path)
    _same_checksum(f"nibabel {stat} {label}", nib_child, checked["nib"])
    nib_above = nib_child["peak"] - nib_child["floor"]
    nib_call = f"get_fdata().{stat}(-1)"
    rows: list[Row] = []
    for chunks in CHUNKINGS:
        chunked = _chunk_label(chunks)
        child = run_child(f"{stat}_ours", path, chunks=chunks)
        _same_checksum(f"temporal {stat} {label} {chunked}", child, checked[f"ours {chunks}"])
        above = child["peak"] - child["floor"]
        if stat == "mean" and chunks == "{}":
            rows.append(
                Row(
                    f"temporal mean {label} {chunked}: peak RSS",
                    child["seconds"],
                    f"{nib_call}: +{nib_above:.0f} MiB",
                    nib_child["seconds"],
                    above / raw,
                    "(peak-floor)/raw",
                    above,
                    goal=("≤", 0.25),
                    note=f"{label}: raw int16 data {raw:.0f} MiB (scl_slope {SLOPE:g}, "
                    f"scl_inter {INTER:g}); ours floor {child['floor']:.0f} MiB, peak "
                    f"{child['peak']:.0f} MiB; nibabel +{nib_above:.0f} MiB = "
                    f"{nib_above / raw:.2f}× raw; times of this row in the fresh processes",
                )
            )
        indent = "" if chunks == "{}" and stat == "std" else "  "
        rows.append(
            Row(
                f"{indent}temporal {stat} {label} {chunked} time vs nibabel",
                best[f"ours {chunks}"].seconds,
                nib_call,
                best["nib"].seconds,
                best[f"ours {chunks}"].seconds / best["nib"].seconds,
                "ours/nib",
            )
        )
        rows.append(
            Row(
                f"  temporal {stat} {label} {chunked} peak vs nibabel",
                None,
                f"{nib_call}: +{nib_above:.0f} MiB",
                None,
                above / nib_above if nib_above > 0 else None,
                "ours/nib peak",
                above,
            )
        )
    return rows


def case_mean(ctx: Context) -> list[Row]:
    """Temporal mean and std of a scaled int16 series: time and peak RSS vs nibabel."""
    shape = ctx.sizes.bold
    raw = raw_mib(shape, 2)
    rows: list[Row] = []
    for label, gz in ((".nii.gz", True), (".nii", False)):
        path = ctx.files.bold_scaled(gz=gz)
        for stat in STATS:
            rows.extend(_stat_rows(ctx, path, label, stat, raw))
    # What xarray + dask alone cost for the same reduction over the same chunks.
    alone = run_child("mean_dask_only", ctx.files.bold_scaled(gz=True))
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
