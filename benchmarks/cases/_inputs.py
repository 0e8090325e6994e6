"""The inputs of ``compare.py``: sizes of each mode, the generated files and the context.

The images come from the benchmarks' deterministic generators
(``benchmarks/benchmarks/_data.py``); :class:`Files` makes each one on first use
and, with ``--workdir``, keeps it for later runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from benchmarks import _data
from cases._child import MiB
from cases._harness import load, log

import xarray_nifti  # noqa: F401  (registers the engine and the accessor)

__all__ = [
    "FULL",
    "INTER",
    "QUICK",
    "SLOPE",
    "Context",
    "Files",
    "Sizes",
    "fmt_size",
    "memmap_copy",
    "open_ours",
    "raw_mib",
    "reference_data",
    "scratch",
    "shape_tag",
]

#: scl_slope and scl_inter of the scaled BOLD series
SLOPE, INTER = 0.5, 10.0


@dataclass(frozen=True)
class Sizes:
    """Input sizes and repetition counts of one mode (full or quick)."""

    bold: tuple[int, int, int, int]
    bold_short: int
    t1: tuple[int, int, int]
    t1_sagittal: tuple[int, int, int]
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
    t1_sagittal=(176, 256, 256),  # 22 MiB of int16
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
    t1_sagittal=(48, 64, 64),
    open_small=(64, 64, 64, 8),
    open_big=(128, 128, 128, 16),  # 64 MiB, sparse
    repeat=3,
    open_repeat=10,
    thread_reads=8,
)


def fmt_size(nbytes: float) -> str:
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


def shape_tag(shape: tuple[int, ...]) -> str:
    """``96x96x60x400``."""
    return "x".join(str(n) for n in shape)


def raw_mib(shape: tuple[int, ...], itemsize: int) -> float:
    """Size in MiB of an array of ``shape`` and ``itemsize``."""
    return float(np.prod(shape)) * itemsize / MiB


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
        name = f"{stem}_{shape_tag(shape)}.nii"
        nii = self._make(name, lambda p: write(p, shape))
        if not gz:
            return nii
        return self._make(name + ".gz", lambda p: _data.gzip_with_nibabel(nii, p))

    def bold(self, n_time: int | None = None, gz: bool = False) -> str:
        """The BOLD-like series with ``n_time`` volumes (default: all), ``.nii`` or ``.nii.gz``."""
        shape = (*self.sizes.bold[:3], n_time or self.sizes.bold[3])
        return self._pair("bold", shape, _data.write_bold, gz)

    def bold_scaled(self, gz: bool = False) -> str:
        """The same series stored with ``scl_slope`` :data:`SLOPE`, ``scl_inter`` :data:`INTER`."""
        return self._pair(
            "bold-scaled",
            self.sizes.bold,
            lambda p, shape: _data.write_bold(p, shape, slope=SLOPE, inter=INTER),
            gz,
        )

    def t1(self, gz: bool = False) -> str:
        """The T1-like float32 volume, ``.nii`` or ``.nii.gz``."""
        return self._pair("t1", tuple(self.sizes.t1), _data.write_t1, gz)

    def t1_sagittal(self, gz: bool = False) -> str:
        """The T1-like volume as int16 oblique sagittal slices, ``.nii`` or ``.nii.gz``."""
        return self._pair("t1-sagittal", tuple(self.sizes.t1_sagittal), _data.write_t1_sagittal, gz)

    def subject_copies(self, n: int) -> list[str]:
        """``n`` copies of the short ``.nii.gz`` series, as ``subject-<i>.nii.gz``.

        Copies, not links: each file has its own identity, so no reader state is
        shared between them.
        """
        short = self.bold(self.sizes.bold_short, gz=True)
        copies = []
        for index in range(n):
            copy = self.root / f"subject-{index}.nii.gz"
            if not copy.exists():
                shutil.copyfile(short, copy)
            copies.append(os.fspath(copy))
        return copies

    def open_small(self, gz: bool = False) -> str:
        """A 4 MiB series for the open-time yardstick."""
        return self._pair("small", tuple(self.sizes.open_small), _data.write_bold, gz)

    def open_big(self) -> str:
        """A sparse multi-GB ``.nii`` (header plus a truncate()d data block)."""
        shape = self.sizes.open_big
        return self._make(f"sparse_{shape_tag(shape)}.nii", lambda p: _data.write_sparse(p, shape))


@dataclass
class Context:
    """What every case gets."""

    files: Files
    sizes: Sizes
    quick: bool
    workdir: Path


def open_ours(path: str, **kwargs: Any) -> xr.Dataset:
    """``xr.open_dataset(path, engine="nifti", **kwargs)``."""
    return xr.open_dataset(path, engine="nifti", **kwargs)


def memmap_copy(path: str) -> np.ndarray:
    """A plain ``np.memmap`` copy of the data block: the upper bound for ``.nii`` reads."""
    img = load(path)
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


@contextmanager
def scratch(root: Path) -> Iterator[Path]:
    """A fresh folder under ``root`` for outputs, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="out-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
