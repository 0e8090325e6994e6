"""What every one-run comparison in ``benchmarks/cases`` shares: timing and the report.

The scripts are run as ``python benchmarks/cases/NAME.py``, so this folder is on
``sys.path`` and they import this module as ``_common``.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import nibabel as nib

__all__ = ["best_of", "load", "report"]


def load(path: str | os.PathLike[str]) -> Any:
    """``nib.load(path)``; typed ``Any`` as the images' attributes depend on the format."""
    return nib.load(path)


def best_of(repeat: int, functions: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Best wall time of each function, runs interleaved so that machine noise hits all."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeat):
        for name, fn in functions.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def report(rows: list[str], reference: str, failures: list[str]) -> int:
    """Print the markdown table and the failures; the exit status (1 if anything failed)."""
    print(f"| case | ours | {reference} | ratio | target | met? |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    for failure in failures:
        print(f"\nFAILED {failure}", file=sys.stderr)
    return 1 if failures else 0
