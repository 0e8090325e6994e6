"""Cutting an array into slabs that are contiguous in a NIfTI file, and bounded scans.

NIfTI stores voxels in Fortran order (the last axis is slowest). A slab is a
range along one axis (the *cut*) with every axis before it whole and every
axis after it at a single index, so slabs taken in order are consecutive
pieces of the file and each holds at most about ``SLAB_BYTES``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import xarray as xr

__all__ = ["SLAB_BYTES", "SlabPlan", "scan_blocks", "slab_keys", "slab_plan"]

SLAB_BYTES = 64 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class SlabPlan:
    """Where an array is cut into slabs."""

    cut: int  # axes < cut are whole in every slab; axes > cut are single indices
    bounds: tuple[tuple[int, int], ...]  # ranges along the cut axis
    slab_bytes: int
    moved: bool  # the cut moved outwards to follow the chunks


def slab_plan(
    shape: Sequence[int],
    itemsize: int,
    chunks: Sequence[Sequence[int]] | None,
    target: int | None = None,
) -> SlabPlan:
    """Where to cut an array of ``shape`` into slabs that are contiguous in the file.

    With dask ``chunks`` the slabs follow the chunk boundaries, so that no
    chunk is computed twice. Slabs hold at most about ``target`` bytes
    (default :data:`SLAB_BYTES`).

    Examples
    --------
    >>> plan = slab_plan((4, 5, 6), 8, None)
    >>> plan.cut, plan.bounds
    (2, ((0, 6),))
    """
    limit = SLAB_BYTES if target is None else max(1, int(target))
    ndim = len(shape)
    if ndim == 0:
        return SlabPlan(0, ((0, 1),), itemsize, False)
    inner = 1
    cut = ndim - 1
    for axis, size in enumerate(shape):
        if inner * size * itemsize > limit:
            cut = axis
            break
        inner *= size
    moved = False
    if chunks is not None:
        # Axes after the cut are written one index at a time: a chunk spanning
        # several indices there would be computed once per index. Move the cut
        # out to the slowest such axis.
        for axis in range(ndim - 1, cut, -1):
            if any(c > 1 for c in chunks[axis]):
                cut, moved = axis, True
                break
    inner = math.prod(shape[:cut])
    row = max(inner * itemsize, 1)
    if chunks is not None:
        edges = list(itertools.accumulate(chunks[cut], initial=0))
    else:
        step = max(1, limit // row)
        edges = [*range(0, shape[cut], step), shape[cut]]
    bounds: list[tuple[int, int]] = []
    start = previous = 0
    for edge in edges[1:]:
        # Close the slab at the previous edge when this piece would overflow it.
        if (edge - start) * row > limit and previous > start:
            bounds.append((start, previous))
            start = previous
        previous = edge
    if shape[cut] > start:
        bounds.append((start, shape[cut]))
    largest = max(stop - begin for begin, stop in bounds) if bounds else 0
    return SlabPlan(cut, tuple(bounds), largest * row, moved)


def slab_keys(shape: Sequence[int], plan: SlabPlan) -> Iterator[tuple[Any, ...]]:
    """Index keys of the slabs, in file order."""
    ndim = len(shape)
    if ndim == 0:
        yield ()
        return
    cut = plan.cut
    outer = [range(shape[a]) for a in range(ndim - 1, cut, -1)]
    for combo in itertools.product(*outer):
        for start, stop in plan.bounds:
            yield (slice(None),) * cut + (slice(start, stop),) + tuple(reversed(combo))


def scan_blocks(data: xr.DataArray, func: Callable[[np.ndarray], T]) -> Iterator[T]:
    """``func`` of every block of ``data``, holding only a few blocks in memory at a time.

    Dask data is scanned chunk by chunk by its scheduler (all at once); other
    data (numpy, xarray's lazily indexed arrays) slab by slab as the results
    are consumed, so that ``all(scan_blocks(...))`` stops at the first miss.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> list(scan_blocks(xr.DataArray(np.arange(6.0).reshape(2, 3)), np.max))
    [np.float64(5.0)]
    """
    if data.chunks is not None:
        from dask.base import compute
        from dask.delayed import delayed

        parts = data.data.to_delayed(optimize_graph=True).ravel()
        yield from compute(*[delayed(func)(part) for part in parts])
        return
    shape = tuple(int(n) for n in data.shape)
    plan = slab_plan(shape, max(data.dtype.itemsize, 8), None)
    variable = data.variable
    for key in slab_keys(shape, plan):
        yield func(np.asarray(variable[key].values))
