"""Chunk-size case of ``compare.py``: how the preferred chunks were chosen.

``chunks``: the temporal mean with ``chunks={}`` and ``chunks="auto"`` beside the
same mean without dask (``chunks=None``), each in a fresh process (time, and peak
RSS above the import floor relative to the raw data size), with nibabel's
``get_fdata().mean(-1)`` for scale.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from cases._harness import CorrectnessError, Row, load, measure, run_child
from cases._inputs import Context, raw_mib

__all__ = ["case_chunks"]


def _fastest(path: str, chunks: str, runs: int) -> dict[str, Any]:
    """The fastest of ``runs`` fresh-process temporal means with ``chunks``."""
    results = [run_child("mean_ours", path, chunks=chunks) for _ in range(runs)]
    return min(results, key=lambda result: result["seconds"])


def _nibabel_mean(path: str) -> np.ndarray:
    return np.asarray(load(path).get_fdata().mean(-1))


def case_chunks(ctx: Context) -> list[Row]:
    """Temporal mean with chunks={} and "auto" beside the same mean without dask."""
    raw = raw_mib(ctx.sizes.bold, 2)
    rows = []
    runs = 1 if ctx.quick else 2
    for label, gz in ((".nii", False), (".nii.gz", True)):
        path = ctx.files.bold(gz=gz)
        plain = _fastest(path, "none", runs)
        nib_runs = [measure(partial(_nibabel_mean, path)) for _ in range(runs)]
        nib_seconds = min(sample.seconds for sample in nib_runs)
        nib_sum = float(np.sum(nib_runs[0].result, dtype=np.float64))
        del nib_runs
        if not np.isclose(plain["sum"], nib_sum, rtol=1e-9):
            raise CorrectnessError(
                f"temporal mean {label} chunks=None sums to {plain['sum']!r}, nibabel's to "
                f"{nib_sum!r}"
            )
        for chunks in ("{}", "auto"):
            ours = _fastest(path, chunks, runs)
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
                    note=f"{ours['time_chunks']} chunks along time; peak +{above:.0f} MiB "
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
