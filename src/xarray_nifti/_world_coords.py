"""The lazy ``x, y, z`` world coordinates: their array and their variable.

Values come from a :class:`~xarray_nifti.transform.VoxelAffineTransform` when
indexed; equality and dask tokens come from the grid's geometry, so that
nothing computes the full coordinate grid.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import xarray as xr
from xarray.core.indexing import (
    CoordinateTransformIndexingAdapter,
    ExplicitIndexer,
    OuterIndexer,
    expanded_indexer,
)

from .transform import VoxelAffineTransform

__all__ = ["WORLD_COORD_ATTRS", "WorldCoordinateArray", "WorldCoordinateVariable", "lazy_world_key"]

#: Attributes of the lazy world coordinates.
WORLD_COORD_ATTRS: dict[str, dict[str, str]] = {
    "x": {"units": "mm", "long_name": "world x (RAS+: towards subject's Right)"},
    "y": {"units": "mm", "long_name": "world y (RAS+: towards subject's Anterior)"},
    "z": {"units": "mm", "long_name": "world z (RAS+: towards subject's Superior)"},
}


def lazy_world_key(var: xr.Variable) -> tuple[Any, ...] | None:
    """What defines a lazy world coordinate's values, or ``None`` if it is not lazy."""
    data = var._data
    if isinstance(data, CoordinateTransformIndexingAdapter) and isinstance(
        data._transform, VoxelAffineTransform
    ):
        return (data._transform, data._coord_name, tuple(data._dims))
    return None


class WorldCoordinateArray(CoordinateTransformIndexingAdapter):
    """Lazy world-coordinate array whose integer indexers drop their axes.

    xarray's adapter drops integer axes in ``__getitem__`` but not in the outer-indexing
    path dask uses for chunked coordinates: three integers gave shape ``(1, 1, 1)``, not ``()``.
    Its shape is computed once: xarray asks for it at every Dataset construction and copy
    (dozens of times per operation), and the transform behind it never changes.
    """

    def __init__(
        self,
        transform: VoxelAffineTransform,
        coord_name: Hashable,
        dims: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(transform, coord_name, dims)
        self._shape = tuple(transform.dim_size[dim] for dim in self._dims)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def _oindex_get(self, indexer: OuterIndexer) -> np.ndarray:
        keys = expanded_indexer(indexer.tuple, self.ndim)
        result = np.asarray(super()._oindex_get(OuterIndexer(keys)))
        integer_axes = tuple(
            axis
            for axis, key in enumerate(keys)
            if not isinstance(key, slice) and np.ndim(key) == 0
        )
        return result.squeeze(integer_axes) if integer_axes else result

    def __getitem__(self, indexer: ExplicitIndexer) -> np.ndarray:
        self._check_and_raise_if_non_basic_indexer(indexer)
        return self._oindex_get(OuterIndexer(indexer.tuple))


class WorldCoordinateVariable(xr.Variable):
    """The variable behind a lazy ``x``, ``y`` or ``z`` coordinate.

    It behaves as a plain :class:`xarray.Variable`, except that dask
    tokenising and equality tests (``equals``, ``identical``, as used by
    ``concat`` and ``merge``) are answered from the grid's geometry instead of
    computing the full coordinate grid. Once the data is materialised or
    chunked, the ordinary ``Variable`` behaviour applies.
    """

    __slots__ = ()

    def __dask_tokenize__(self) -> object:
        key = lazy_world_key(self)
        if key is None:
            return super().__dask_tokenize__()
        from dask.base import normalize_token

        transform, name, dims = key
        return normalize_token(
            (type(self).__name__, self.dims, transform, name, dims, self.attrs or None)
        )

    def equals(self, other: Any, equiv: Any = None) -> bool:
        mine = lazy_world_key(self)
        theirs = lazy_world_key(getattr(other, "variable", other))
        if mine is not None and theirs is not None:
            return bool(
                self.dims == other.dims and mine[1:] == theirs[1:] and mine[0].equals(theirs[0])
            )
        if equiv is None:
            return bool(super().equals(other))
        return bool(super().equals(other, equiv=equiv))
