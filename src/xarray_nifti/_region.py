"""Plan and read a strided voxel region as contiguous byte ranges, in file order.

Pure arithmetic over the stored (Fortran-order) layout, apart from the
``read_into(offset, buffer)`` callable it is given: the readers in
:mod:`._readers` supply that callable for memory maps, file objects and gzip
streams alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._source import DataLocation

__all__ = ["contiguous_start", "read_region"]

# Read a region as one covering byte range unless that wastes more than this
# factor of the needed bytes (and more than _SPAN_FLOOR bytes).
_SPAN_WASTE = 4
_SPAN_FLOOR = 8 << 20


def contiguous_start(shape: Sequence[int], selection: Sequence[tuple[int, int, int]]) -> int | None:
    """Flat element index where the region starts if it is one contiguous range, else ``None``.

    True when, for some axis ``p``, every faster axis is selected whole, axis
    ``p`` has step 1 (or one element), and every slower axis has one element.
    """
    start_flat, stride = 0, 1
    partial = False  # a faster axis is not selected whole: slower axes must have count 1
    for (start, count, step), size in zip(selection, shape, strict=True):
        if partial and count != 1:
            return None
        if count > 1 and step != 1:
            return None
        if count != size:
            partial = True
        start_flat += start * stride
        stride *= size
    return start_flat


def _bytes_of(array: np.ndarray) -> memoryview:
    """Writable byte view of a contiguous array's buffer."""
    flat: Any = array.reshape(-1, order="A").view(np.uint8)
    return memoryview(flat)


def read_region(
    read_into: Callable[[int, memoryview], None],
    location: DataLocation,
    selection: Sequence[tuple[int, int, int]],
) -> np.ndarray:
    """Assemble a strided region from contiguous byte ranges, in file order.

    The innermost axes are read as one covering range per combination of the
    outer indices; the split point is the deepest axis whose covering range
    wastes no more than ``_SPAN_WASTE`` times the bytes it needs.
    """
    shape = location.shape
    dtype = location.dtype
    itemsize = dtype.itemsize
    ndim = len(shape)
    counts = tuple(count for _, count, _ in selection)
    out = np.empty(counts, dtype=dtype, order="F")
    if out.size == 0:
        return out
    flat_start = contiguous_start(shape, selection)
    if flat_start is not None:
        # One byte range in the file, laid out exactly as ``out``: read it in place.
        read_into(location.offset + flat_start * itemsize, _bytes_of(out))
        return out
    strides = [1]
    for size in shape[:-1]:
        strides.append(strides[-1] * size)

    # The covering box for axes < p: full extent on axes < p-1, the selected
    # range on axis p-1.
    split, needed = 0, 1
    for axis in range(ndim):
        _, count, step = selection[axis]
        box = strides[axis] * ((count - 1) * step + 1)
        needed_here = needed * count
        if box * itemsize > max(_SPAN_WASTE * needed_here * itemsize, _SPAN_FLOOR) and axis > 0:
            break
        split, needed = axis + 1, needed_here

    inner_shape = [*shape[: split - 1], (counts[split - 1] - 1) * selection[split - 1][2] + 1]
    inner_key = (
        *(
            slice(start, start + (count - 1) * step + 1, step)
            for start, count, step in selection[: split - 1]
        ),
        slice(None, None, selection[split - 1][2]),
    )
    buffer = np.empty(int(np.prod(inner_shape)), dtype=dtype)
    raw = buffer.view(np.uint8).data
    box_view = buffer.reshape(inner_shape, order="F")[inner_key]
    first_inner = selection[split - 1][0] * strides[split - 1]

    outer_axes = list(range(split, ndim))
    # Iterate with the slowest (last) axis outermost so byte offsets only grow.
    ranges = [
        range(selection[a][0], selection[a][0] + selection[a][1] * selection[a][2], selection[a][2])
        for a in reversed(outer_axes)
    ]
    for combo in itertools.product(*ranges):
        outer = tuple(reversed(combo))
        flat = first_inner + sum(i * strides[a] for i, a in zip(outer, outer_axes, strict=True))
        read_into(location.offset + flat * itemsize, raw)
        position: tuple[int, ...] = tuple(
            (i - selection[a][0]) // selection[a][2] for i, a in zip(outer, outer_axes, strict=True)
        )
        where: tuple[Any, ...] = (Ellipsis, *position)
        out[where] = box_view
    return out
