"""Lazy reorientation: flips via ``isel`` with negative steps, then a transpose and renames.

xarray transposes a lazily indexed backend array by turning it into a lazily
*vectorised* indexed array, whose integer indexing fails (``IndexError``) and
whose chunking breaks (``TypeError`` from ``reshape``). Every permuted file
(sagittal, coronal) meets that right after ``to_canonical()``, so the
transpose of lazy data is done here by :class:`TransposedLazyArray` instead,
which maps each basic or outer indexer back onto the untransposed array.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, cast

import numpy as np
import xarray as xr
from xarray.core.indexing import (
    BasicIndexer,
    ExplicitIndexer,
    ExplicitlyIndexedNDArrayMixin,
    IndexingAdapter,
    OuterIndexer,
    VectorizedIndexer,
    expanded_indexer,
)

from .affine import orientation_plan
from .grid import T_Xarray, find_index, with_index
from .index import VoxelAffineIndex
from .transform import NiftiGeometry, VoxelAffineTransform

__all__ = ["TransposedLazyArray", "reorient"]


def _is_identity(order: Sequence[int]) -> bool:
    return list(order) == list(range(len(order)))


class TransposedLazyArray(ExplicitlyIndexedNDArrayMixin):
    """A lazily indexed array seen with its axes permuted, still lazy and basic-indexable.

    ``order[n]`` is the axis of ``array`` that becomes axis ``n``, as in
    :func:`numpy.transpose`. Integer, slice and outer indexers are permuted
    back onto ``array``; only loading the values transposes real data.

    Examples
    --------
    >>> import numpy as np
    >>> from xarray.core.indexing import BasicIndexer, LazilyIndexedArray
    >>> values = np.arange(24).reshape(2, 3, 4)
    >>> seen = TransposedLazyArray(LazilyIndexedArray(values), (2, 0, 1))
    >>> seen.shape
    (4, 2, 3)
    >>> int(np.asarray(seen[BasicIndexer((3, 1, 2))]))
    23
    """

    __slots__ = ("array", "order")

    def __init__(self, array: Any, order: Sequence[int]) -> None:
        if sorted(order) != list(range(array.ndim)):
            raise ValueError(f"{tuple(order)} is not a permutation of {array.ndim} axes")
        self.array = array
        self.order = tuple(int(axis) for axis in order)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[axis] for axis in self.order)

    def _untransposed(self, key: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[int, ...]]:
        """``key`` in ``array``'s axis order, and the permutation left after indexing."""
        full = expanded_indexer(key, self.ndim)
        inner: list[Any] = [slice(None)] * self.ndim
        for position, axis in enumerate(self.order):
            inner[axis] = full[position]
        kept_axes = [
            axis
            for position, axis in enumerate(self.order)
            if isinstance(full[position], slice) or np.ndim(full[position]) > 0
        ]
        rank = {axis: n for n, axis in enumerate(sorted(kept_axes))}
        return tuple(inner), tuple(rank[axis] for axis in kept_axes)

    def _wrap(self, indexed: Any, order: tuple[int, ...]) -> Any:
        return indexed if _is_identity(order) else type(self)(indexed, order)

    def __getitem__(self, indexer: ExplicitIndexer) -> Any:
        self._check_and_raise_if_non_basic_indexer(indexer)
        inner, order = self._untransposed(indexer.tuple)
        return self._wrap(self.array[BasicIndexer(inner)], order)

    def _oindex_get(self, indexer: OuterIndexer) -> Any:
        inner, order = self._untransposed(indexer.tuple)
        return self._wrap(self.array.oindex[OuterIndexer(inner)], order)

    def _vindex_get(self, indexer: VectorizedIndexer) -> Any:
        # Vectorised (point-wise) keys are combined correctly by xarray's own
        # lazily vectorised array; only its basic and chunked paths are broken.
        return self.array.transpose(self.order).vindex[indexer]

    def transpose(self, order: Sequence[int]) -> Any:
        composed = tuple(self.order[axis] for axis in order)
        return self.array if _is_identity(composed) else type(self)(self.array, composed)

    def get_duck_array(self) -> Any:
        return self.array.get_duck_array().transpose(self.order)

    async def async_get_duck_array(self) -> Any:
        return (await self.array.async_get_duck_array()).transpose(self.order)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(array={self.array!r}, order={self.order})"


def _lazy_transposed(before: xr.Variable, after: xr.Variable) -> xr.Variable | None:
    """``after`` (a transpose of ``before``) over a :class:`TransposedLazyArray`, if needed.

    ``None`` when xarray's own transpose is fine: loaded (numpy), dask and
    index-backed data, or an unchanged dim order.
    """
    data = before._data
    if after.dims == before.dims or not isinstance(data, ExplicitlyIndexedNDArrayMixin):
        return None
    if isinstance(data, IndexingAdapter):
        return None
    order = [before.dims.index(dim) for dim in after.dims]
    lazy = (
        data.transpose(order)
        if isinstance(data, TransposedLazyArray)
        else TransposedLazyArray(data, order)
    )
    return after.copy(deep=False, data=cast(Any, lazy))


def _transpose(obj: T_Xarray, layout: Sequence[Hashable]) -> T_Xarray:
    """``obj.transpose(*layout, ...)``, keeping lazily indexed data basic-indexable."""
    transposed = obj.transpose(*layout, ...)
    coords = {
        name: var
        for name in obj.coords
        if name not in obj.xindexes
        and (var := _lazy_transposed(obj.coords[name].variable, transposed.coords[name].variable))
        is not None
    }
    if isinstance(transposed, xr.DataArray):
        assert isinstance(obj, xr.DataArray)
        main = _lazy_transposed(obj.variable, transposed.variable)
        if main is not None:
            transposed = transposed.copy(deep=False, data=main._data)
        return transposed.assign_coords(coords) if coords else transposed
    data_vars = {
        name: var
        for name in obj.data_vars
        if (var := _lazy_transposed(obj[name].variable, transposed[name].variable)) is not None
    }
    return transposed.assign(data_vars).assign_coords(coords)


def _layout(obj: xr.Dataset | xr.DataArray, spatial: Sequence[str]) -> list[Hashable]:
    """Dim order of the object's main array (a data variable holding the whole grid)."""
    if isinstance(obj, xr.DataArray):
        return list(obj.dims)
    for var in obj.data_vars.values():
        if set(spatial) <= set(var.dims):
            return list(var.dims)
    return list(obj.dims)


def _grid_in_order(index: VoxelAffineIndex, dims: Sequence[str]) -> NiftiGeometry:
    """The index's geometry with its voxel axes in the order of ``dims``."""
    t = index.transform
    axes = [t.axis_dims.index(name) for name in dims]
    permutation = np.zeros((4, 4))
    permutation[3, 3] = 1.0
    for new_axis, old_axis in enumerate(axes):
        permutation[old_axis, new_axis] = 1.0
    return t.geometry.transformed(permutation, [t.geometry.shape[a] for a in axes])


def _rename_with_grid(obj: T_Xarray, old: Sequence[str], new: Sequence[str]) -> T_Xarray:
    """Rename spatial dims ``old`` to ``new`` and rebuild the index in that order.

    The index's axes then follow the data's axes, so its repr, ``.geometry``
    and the header written by ``to_nifti`` all describe the reoriented grid.
    """
    index = find_index(obj)
    t = index.transform
    geometry = _grid_in_order(index, old)
    grid = VoxelAffineIndex(VoxelAffineTransform(geometry, new, t.coord_names, t.source))
    # two steps, because reorientation may swap names
    temporary = {name: f"__reorient_{name}" for name in old}
    final = {f"__reorient_{a}": b for a, b in zip(old, new, strict=True)}
    return with_index(obj.rename(temporary).rename(final), grid)


def reorient(obj: T_Xarray, axcodes: str | Sequence[str]) -> T_Xarray:
    """Reorient ``obj`` to ``axcodes`` without resampling (see ``.nifti.reorient``).

    Spatial axes are flipped with negative-step slices (the index derives the
    new affine exactly) and permuted with a lazy transpose; the spatial dims
    are then renamed so that the first spatial dim keeps the first name
    (``i``), and so on, and the index is rebuilt with its axes in that order.
    Non-spatial dims (``time``, ...) keep their positions. Nothing is
    computed.

    Examples
    --------
    >>> import numpy as np
    >>> from xarray_nifti import NiftiGeometry, VoxelAffineIndex
    >>> psr = np.array([[0, 0, 2.0, 0], [-2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1]])
    >>> index = VoxelAffineIndex.from_geometry(NiftiGeometry(psr, (4, 5, 6)))
    >>> image = xr.DataArray(np.zeros((4, 5, 6)), dims=("i", "j", "k"))
    >>> image = image.assign_coords(xr.Coordinates.from_xindex(index))
    >>> ras = reorient(image, "RAS")
    >>> ras.dims, ras.nifti.axcodes
    (('i', 'j', 'k'), ('R', 'A', 'S'))
    >>> ras.sizes["i"]
    6
    """
    index = find_index(obj)
    transform = index.transform
    if len(transform.present_axes) != 3:
        raise ValueError(
            "reorientation needs all three spatial dims; this grid has only "
            f"{list(transform.dims)} (an integer selection dropped the others)"
        )
    spatial = [str(d) for d in transform.dims]
    layout = _layout(obj, spatial)
    # spatial dims in the order of the data (file order if no variable has all three)
    names = [str(d) for d in layout if d in spatial]
    if len(names) != 3:
        names, layout = spatial, list(spatial)
    axes: list[int] = [transform.axis_dims.index(name) for name in names]
    geometry = index.geometry
    affine = geometry.affine[:, [*axes, 3]]
    shape = [geometry.shape[a] for a in axes]
    order, flips, _ = orientation_plan(affine, axcodes, shape)
    flipped = obj.isel(
        {name: slice(None, None, -1) for name, flip in zip(names, flips, strict=True) if flip}
    )
    new_order = [names[axis] for axis in order]
    if new_order != names:
        replacements = iter(new_order)
        new_layout = [next(replacements) if dim in names else dim for dim in layout]
        flipped = _transpose(flipped, new_layout)
    # Dims keep positional names: the first spatial dim is always "i", etc.
    return _rename_with_grid(flipped, new_order, names)
