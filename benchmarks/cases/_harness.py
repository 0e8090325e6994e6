"""Measuring and reporting for ``compare.py``: timings, peak RSS, correctness, the table.

* :func:`measure` times one call in this process and the peak RSS it adds (``VmHWM``
  reset through ``/proc/self/clear_refs`` before the call); :func:`best_of` runs
  candidates interleaved and keeps each one's fastest sample.
* :func:`run_child` runs one operation of ``_child.py`` in a fresh interpreter, for
  peaks that heap memory kept by earlier cases cannot hide.
* :class:`Row` is one line of the table, :func:`render` prints them.
* :class:`CorrectnessError` (data differ from the reference) makes ``compare.py``
  exit with status 1; :func:`assert_equal` and :func:`verify_saved` are the checks.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np
from cases._child import reset_peak, status_mib

__all__ = [
    "CorrectnessError",
    "Row",
    "Sample",
    "assert_equal",
    "best_of",
    "fmt_mib",
    "has_module",
    "load",
    "log",
    "measure",
    "optional_module",
    "render",
    "run_child",
    "verify_copy",
    "verify_geometry",
    "verify_saved",
]

CHILD = Path(__file__).with_name("_child.py")


def log(message: str) -> None:
    """Progress output on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def optional_module(name: str) -> ModuleType | None:
    """The module ``name``, or None if it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def load(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """``nib.load(path)``; typed ``Any`` as the images' attributes depend on the format."""
    return nib.load(path, **kwargs)


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported."""
    return optional_module(name) is not None


# -- measuring -------------------------------------------------------------------------------
@dataclass
class Sample:
    """One timed call: wall seconds, its result and its peak RSS increase in MiB."""

    seconds: float
    result: Any
    peak_mib: float | None


def measure(fn: Callable[[], Any]) -> Sample:
    """Time ``fn()`` and the peak RSS it adds above the RSS at its start."""
    gc.collect()
    peak_ok = reset_peak()
    start_rss = status_mib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    hwm = status_mib("VmHWM")
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


def run_child(op: str, path: str, *, chunks: str = "{}", out: str | None = None) -> dict[str, Any]:
    """Run ``_child.py OP PATH`` in a fresh interpreter; its time, RSS floor and peak (MiB).

    The floor is the RSS after the operation's imports; the peak is ``VmHWM``
    after the operation (reset to the floor first). Raises ``RuntimeError``
    with the child's error output if it fails.
    """
    command = [sys.executable, os.fspath(CHILD), op, path, "--chunks", chunks]
    if out is not None:
        command += ["--out", out]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"subprocess {op} on {path} failed:\n{completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["floor"] is None or result["peak"] is None:
        raise RuntimeError("this system has no /proc/self/status: peak RSS cannot be measured")
    return result


# -- correctness -----------------------------------------------------------------------------
class CorrectnessError(AssertionError):
    """Data read or written by the package differ from the reference."""


def assert_equal(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    """Raise :class:`CorrectnessError` unless the arrays have equal shape and values."""
    got = np.asarray(got)
    if got.shape != expected.shape:
        raise CorrectnessError(f"{name}: shape {got.shape}, expected {expected.shape}")
    if not np.array_equal(got, expected):
        wrong = int(np.count_nonzero(got != expected))
        raise CorrectnessError(f"{name}: {wrong} of {got.size} values differ from the reference")


def verify_saved(name: str, path: str, expected: np.ndarray, like: Any) -> None:
    """Raise :class:`CorrectnessError` unless ``path`` holds ``expected`` on ``like``'s grid."""
    img = load(path)
    assert_equal(name, np.asanyarray(img.dataobj), expected)
    verify_geometry(name, img, like)


def verify_copy(name: str, path: str, source: str) -> None:
    """Raise :class:`CorrectnessError` unless ``path`` stores exactly what ``source`` stores.

    Stored dtype, ``scl_slope``/``scl_inter``, the stored values, the affine and
    the qform/sform codes.
    """
    got, src = load(path), load(source)
    if got.get_data_dtype() != src.get_data_dtype():
        raise CorrectnessError(
            f"{name}: stored as {got.get_data_dtype()}, the source as {src.get_data_dtype()}"
        )
    scaling = (float(got.dataobj.slope), float(got.dataobj.inter))
    if scaling != (float(src.dataobj.slope), float(src.dataobj.inter)):
        raise CorrectnessError(f"{name}: scl_slope/scl_inter {scaling}, the source's differ")
    assert_equal(
        name,
        np.asanyarray(got.dataobj.get_unscaled()),
        np.asanyarray(src.dataobj.get_unscaled()),
    )
    verify_geometry(name, got, src)


def verify_geometry(name: str, got: Any, like: Any) -> None:
    """Raise :class:`CorrectnessError` unless the affines and qform/sform codes agree."""
    if not np.allclose(got.affine, like.affine, atol=1e-5):
        raise CorrectnessError(f"{name}: affine differs:\n{got.affine}\nvs\n{like.affine}")
    for key in ("qform_code", "sform_code"):
        if int(got.header[key]) != int(like.header[key]):
            raise CorrectnessError(
                f"{name}: {key} {int(got.header[key])} != {int(like.header[key])}"
            )


# -- result rows -----------------------------------------------------------------------------
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


def fmt_s(value: float | None) -> str:
    """Seconds as ``0.123`` or, below 0.1 s, as ``12.34 ms``."""
    if value is None:
        return "–"
    return f"{value:.3f}" if value >= 0.1 else f"{value * 1000:.2f} ms"


def fmt_ratio(value: float | None) -> str:
    """A ratio with two decimals."""
    return "–" if value is None else f"{value:.2f}"


def fmt_mib(value: float | None) -> str:
    """MiB without decimals."""
    return "–" if value is None else f"{value:.0f}"


HEADERS = ("case", "ours s", "reference", "ref s", "ratio", "peak RSS MiB", "target", "met?")


def _cells(row: Row) -> list[str]:
    return [
        row.case,
        fmt_s(row.ours),
        row.reference,
        fmt_s(row.ref),
        fmt_ratio(row.ratio),
        fmt_mib(row.peak_mib),
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
