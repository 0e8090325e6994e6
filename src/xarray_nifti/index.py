"""``VoxelAffineIndex``: the xarray index that carries a NIfTI grid's geometry."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from xarray.core.indexing import CoordinateTransformIndexingAdapter, IndexSelResult
from xarray.indexes import CoordinateTransformIndex, Index

from ._world_coords import WORLD_COORD_ATTRS, WorldCoordinateArray, WorldCoordinateVariable
from .affine import Indexer, voxel_sizes
from .transform import (
    GRID_TOLERANCE_MM,
    SPATIAL_DIMS,
    WORLD_COORDS,
    NiftiGeometry,
    VoxelAffineTransform,
)

__all__ = ["VoxelAffineIndex", "WorldCoordinateVariable", "grid_mismatch_message"]


def _describe(geometry: NiftiGeometry, dims: Sequence[str | None], source: str | None) -> str:
    rows = np.array2string(geometry.affine, precision=4, suppress_small=True)
    named = ", ".join(f"{d or '-'}={n}" for d, n in zip(dims, geometry.shape, strict=True))
    origin = f"{source}: " if source else ""
    return f"{origin}shape ({named}), space {geometry.space}, affine\n{rows}"


def _space_label(geometry: NiftiGeometry, source: str | None) -> str:
    origin = f"{source}: " if source else ""
    return (
        f"{origin}space {geometry.space!r} (sform_code {geometry.sform_code}, "
        f"qform_code {geometry.qform_code})"
    )


def grid_mismatch_message(
    left: NiftiGeometry,
    right: NiftiGeometry,
    left_dims: Sequence[str | None] = SPATIAL_DIMS,
    right_dims: Sequence[str | None] = SPATIAL_DIMS,
    left_source: str | None = None,
    right_source: str | None = None,
) -> str:
    """Explain why two grids cannot be combined, and what to do about it.

    ``left_source``/``right_source`` name the files the grids come from, if known.
    """
    if left.same_voxels(right) and tuple(left_dims) == tuple(right_dims):
        return (
            "cannot combine images whose voxel grids are identical (same shape and affine) "
            "but labelled as different world spaces:\n"
            f"first:  {_space_label(left, left_source)}\n"
            f"second: {_space_label(right, right_source)}\n"
            "No resampling is needed. If both really are in the same space (nilearn's "
            "resample_to_img, for one, keeps the source image's sform_code), relabel one of "
            f"them, e.g. `second.nifti.set_space({left.space!r})`."
        )
    return (
        "cannot combine images on different voxel grids:\n"
        f"first:  {_describe(left, left_dims, left_source)}\n"
        f"second: {_describe(right, right_dims, right_source)}\n"
        "Resample one onto the other's grid first, e.g. "
        "`moving.nifti.resample_to(reference)`."
    )


def _is_basic(indexer: Any) -> bool:
    if isinstance(indexer, slice):
        return True
    arr = np.asarray(indexer)
    return arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer)


class VoxelAffineIndex(CoordinateTransformIndex):
    """Index of the world coordinates ``x, y, z`` of a NIfTI voxel grid.

    It is the single source of truth for a grid's geometry: the chosen
    affine, the sform and qform with their codes and the spatial shape. The
    coordinates it creates are computed lazily, only for the voxels that are
    looked at.

    * ``isel`` with integers and slices (any step) keeps the index and
      derives the new affine exactly; fancy (array) indexing drops it, and so
      does selecting a single voxel (the world position stays in the scalar
      ``x, y, z`` coordinates).
    * ``sel(x=..., y=..., z=..., method="nearest")`` finds the voxel nearest
      to world points and raises ``KeyError`` outside the field of view. A
      2-D grid left by integer selection is one voxel thick: points farther
      than half a voxel from its plane are outside.
    * Objects on different grids refuse to align with a ``ValueError``; grids
      whose affines differ by at most ``GRID_TOLERANCE_MM`` are the same grid.
    * ``repr``, ``isel``, ``chunk``, pickling, dask tokenising and the
      equality checks of ``concat``/``merge`` never compute the coordinate
      grid (see :class:`WorldCoordinateVariable`). Loading or computing an
      object loads its coordinates, like any other xarray coordinate.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from xarray_nifti import NiftiGeometry, VoxelAffineIndex
    >>> geometry = NiftiGeometry(np.diag([2.0, 2.0, 2.0, 1.0]), (4, 4, 4))
    >>> index = VoxelAffineIndex.from_geometry(geometry)
    >>> coords = xr.Coordinates.from_xindex(index)
    >>> sorted(coords)
    ['x', 'y', 'z']
    """

    transform: VoxelAffineTransform

    def __init__(self, transform: VoxelAffineTransform) -> None:
        if not isinstance(transform, VoxelAffineTransform):
            raise TypeError("VoxelAffineIndex needs a VoxelAffineTransform")
        super().__init__(transform)

    @classmethod
    def from_geometry(
        cls,
        geometry: NiftiGeometry,
        axis_dims: Sequence[str | None] = SPATIAL_DIMS,
        coord_names: Sequence[Hashable] = WORLD_COORDS,
        source: str | None = None,
    ) -> VoxelAffineIndex:
        """Index for ``geometry`` with the given dimension and coordinate names.

        The parameters are those of :class:`VoxelAffineTransform`; ``source``
        (the file name) is only used to name the file in errors.
        """
        return cls(VoxelAffineTransform(geometry, axis_dims, coord_names, source))

    @property
    def geometry(self) -> NiftiGeometry:
        """The grid's full geometry."""
        return self.transform.geometry

    def create_variables(
        self, variables: Mapping[Any, xr.Variable] | None = None
    ) -> dict[Hashable, xr.Variable]:
        t = self.transform
        new: dict[Hashable, xr.Variable] = {}
        for name in t.coord_names:
            var = None if variables is None else variables.get(name)
            dims = self._coord_dims(var)
            attrs = dict(var.attrs) if var is not None and var.attrs else {}
            attrs = attrs or dict(WORLD_COORD_ATTRS.get(str(name), {}))
            data = WorldCoordinateArray(t, name, dims)
            new[name] = WorldCoordinateVariable(dims, data, attrs, fastpath=True)
        return new

    def _coord_dims(self, var: xr.Variable | None) -> tuple[str, ...]:
        """Dim order for a world coordinate, keeping the order of ``var``'s dims.

        ``var`` may be the coordinate before a transpose (same dims, other
        order) or before a rename (old dim names): for lazy coordinates, the
        voxel axis behind each old dim is known, which also handles renames
        that swap names (as :func:`reorient` does).
        """
        t = self.transform
        default = t.dims
        if var is None:
            return default
        data = var._data
        if isinstance(data, CoordinateTransformIndexingAdapter) and isinstance(
            data._transform, VoxelAffineTransform
        ):
            old = data._transform
            if set(var.dims) == set(old.dims):
                axes = [old.axis_dims.index(str(d)) for d in var.dims]
                kept = [a for a in axes if a in t.present_axes]
                if sorted(kept) == list(t.present_axes):
                    return tuple(str(t.axis_dims[a]) for a in kept)
            return default
        # after `isel` the old variable may still have a dropped dim
        kept_dims = tuple(str(d) for d in var.dims if d in default)
        if set(kept_dims) == set(default):
            return kept_dims
        return default

    # -- selection -------------------------------------------------------------
    def isel(self, indexers: Mapping[Any, Any]) -> VoxelAffineIndex | None:
        if not all(_is_basic(v) for v in indexers.values()):
            return None
        basic: dict[str, Indexer] = {
            str(k): v if isinstance(v, slice) else int(v) for k, v in indexers.items()
        }
        new = self.transform.isel(basic)
        if not new.dims:
            return None
        return type(self)(new)

    def sel(
        self, labels: dict[Any, Any], method: str | None = None, tolerance: Any = None
    ) -> IndexSelResult:
        names = self.transform.coord_names
        if method != "nearest":
            raise ValueError(
                "world coordinates x, y, z are continuous and usually oblique, so no voxel "
                "centre matches a label exactly: use `.sel(x=..., y=..., z=..., "
                "method='nearest')` (or `.nifti.world_to_voxel`)"
            )
        missing = [str(n) for n in names if n not in labels]
        if missing:
            raise ValueError(
                f"selection by world position needs all of {', '.join(map(str, names))}; "
                f"missing {', '.join(missing)}"
            )
        for name in names:
            if isinstance(labels[name], slice):
                raise TypeError(
                    "slices of world coordinates are not supported; select a box in voxel "
                    "space with `.isel`, using `.nifti.world_to_voxel` to find its corners"
                )
        points, point_dims, as_dataarray = self._labels_to_points(labels)
        t = self.transform
        positions = t.voxel_positions(dict(zip(names, points, strict=True)))
        rounded = {
            str(t.axis_dims[axis]): np.round(positions[axis]).astype(np.int64)
            for axis in t.present_axes
        }
        # A 2-D grid (an axis dropped by integer selection) is one voxel thick.
        off_grid = np.zeros(positions.shape[1:], dtype=bool)
        for axis in range(3):
            if t.axis_dims[axis] is None:
                off_grid |= np.round(positions[axis]) != 0
        self._check_inside(points, rounded, tolerance, off_grid)
        results: dict[Any, Any] = {}
        for dim, pos in rounded.items():
            if not point_dims:
                results[dim] = int(pos)
            elif as_dataarray:
                results[dim] = xr.DataArray(pos, dims=point_dims)
            else:
                results[dim] = xr.Variable(point_dims, pos)
        return IndexSelResult(results)

    def _labels_to_points(
        self, labels: dict[Any, Any]
    ) -> tuple[list[np.ndarray], tuple[Hashable, ...], bool]:
        names = self.transform.coord_names
        values = [labels[n] for n in names]
        xr_objs = [v for v in values if isinstance(v, xr.DataArray | xr.Variable)]
        if xr_objs:
            dims = xr_objs[0].dims
            if any(v.dims != dims for v in xr_objs) or len(xr_objs) != len(values):
                raise ValueError(
                    "point-wise selection needs x, y and z as DataArrays with the same dims"
                )
            arrays = [np.asarray(v.values, dtype=np.float64) for v in xr_objs]
            return arrays, tuple(dims), any(isinstance(v, xr.DataArray) for v in xr_objs)
        arrays = [np.asarray(v, dtype=np.float64) for v in values]
        if all(a.ndim == 0 for a in arrays):
            return arrays, (), False
        try:
            broadcast = np.broadcast_arrays(*arrays)
        except ValueError as err:
            raise ValueError(
                "x, y and z must have the same length for point-wise selection"
            ) from err
        if broadcast[0].ndim != 1:
            raise ValueError("array labels for x, y, z must be 1-D (one entry per point)")
        return [np.asarray(b) for b in broadcast], ("points",), False

    def _check_inside(
        self,
        points: list[np.ndarray],
        rounded: dict[str, np.ndarray],
        tolerance: Any,
        off_grid: np.ndarray,
    ) -> None:
        outside = off_grid.copy()
        for dim, pos in rounded.items():
            outside |= (pos < 0) | (pos >= self.transform.dim_size[dim])
        if tolerance is not None:
            voxel = {d: np.clip(p, 0, self.transform.dim_size[d] - 1) for d, p in rounded.items()}
            centre = self.transform.forward(voxel)
            dist = np.sqrt(
                sum(
                    (np.asarray(centre[n]) - p) ** 2
                    for n, p in zip(self.transform.coord_names, points, strict=True)
                )
            )
            outside |= dist > float(tolerance)
        if np.any(outside):
            flat = [np.ravel(p) for p in points]
            first = int(np.flatnonzero(np.ravel(outside))[0])
            point = tuple(round(float(c[first]), 3) for c in flat)
            why = (
                "outside the field of view"
                if tolerance is None
                else (
                    f"outside the field of view or farther than tolerance={tolerance} mm from a "
                    "voxel centre"
                )
            )
            raise KeyError(
                f"world point (x, y, z) = {point} mm is {why} of this grid "
                f"(shape {tuple(self.transform.dim_size.values())}; voxel centres span "
                f"{self._world_extent()})"
            )

    def _world_extent(self) -> str:
        """The bounding box of the grid's voxel centres, for error messages."""
        t = self.transform
        corners = np.array(
            list(itertools.product(*[(0, t.dim_size[d] - 1) for d in t.dims])), dtype=float
        ).reshape(-1, len(t.dims))
        world = t.forward({d: corners[:, n] for n, d in enumerate(t.dims)})
        return (
            ", ".join(
                f"{name} {np.min(world[name]):.1f}..{np.max(world[name]):.1f}"
                for name in t.coord_names
            )
            + " mm"
        )

    # -- alignment -------------------------------------------------------------
    def equals(self, other: Index, *, exclude: frozenset[Hashable] | None = None) -> bool:
        """Whether ``other`` is the same grid (within ``GRID_TOLERANCE_MM``).

        With ``exclude`` (dims left out of an alignment, e.g. the dim of a
        ``concat``), only the other axes' sizes and directions are compared.
        """
        if not isinstance(other, VoxelAffineIndex):
            return False
        t, o = self.transform, other.transform
        excluded = {str(d) for d in exclude or ()} & set(t.dims)
        if not excluded:
            return t.equals(o)
        if t.axis_dims != o.axis_dims or t.geometry.code != o.geometry.code:
            return False
        axes = [a for a in t.present_axes if t.axis_dims[a] not in excluded]
        return all(t.geometry.shape[a] == o.geometry.shape[a] for a in axes) and bool(
            np.allclose(
                t.geometry.affine[:3, axes],
                o.geometry.affine[:3, axes],
                rtol=0.0,
                atol=GRID_TOLERANCE_MM,
            )
        )

    def _mismatch(self, other: Index) -> ValueError:
        if isinstance(other, VoxelAffineIndex):
            return ValueError(
                grid_mismatch_message(
                    self.geometry,
                    other.geometry,
                    self.transform.axis_dims,
                    other.transform.axis_dims,
                    self.transform.source,
                    other.transform.source,
                )
            )
        return ValueError(
            f"cannot align a NIfTI grid with a {type(other).__name__} on the same dimensions"
        )

    def join(self, other: Index, how: str = "inner") -> VoxelAffineIndex:
        if self.equals(other):
            return self
        raise self._mismatch(other)

    def reindex_like(self, other: Index) -> dict[Hashable, Any]:
        if self.equals(other):
            return {}
        raise self._mismatch(other)

    @classmethod
    def concat(
        cls,
        indexes: Sequence[VoxelAffineIndex],
        dim: Hashable,
        positions: Iterable[Iterable[int]] | None = None,
    ) -> VoxelAffineIndex:
        raise ValueError(
            f"cannot concatenate NIfTI images along the spatial dimension {dim!r}: their "
            "grids would have to be contiguous. Concatenate along a new dimension or 'time' "
            "instead, or build the grid with `.isel` on one image."
        )

    # -- renaming ------------------------------------------------------------------
    def rename(
        self, name_dict: Mapping[Any, Hashable], dims_dict: Mapping[Any, Hashable]
    ) -> VoxelAffineIndex:
        t = self.transform
        if not set(t.coord_names) & set(name_dict) and not set(t.dims) & set(dims_dict):
            return self
        new_dims = [None if d is None else str(dims_dict.get(d, d)) for d in t.axis_dims]
        new_names = [name_dict.get(n, n) for n in t.coord_names]
        return type(self)(t.with_dims(new_dims, new_names))

    # -- display ---------------------------------------------------------------------
    def _summary(self) -> str:
        """Each remaining dim with its axis code, then the voxel sizes and the space."""
        t = self.transform
        g = self.geometry
        axes = list(t.present_axes)
        dims = " ".join(f"{t.axis_dims[a]}:{g.axcodes[a]}" for a in axes)
        zooms = np.round(voxel_sizes(g.affine)[axes], 3).tolist()
        # the space last: a Dataset's repr cuts the inline repr to its width
        return f"{dims}, zooms={zooms}, space={g.space}"

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"VoxelAffineIndex({self._summary()}, "
            f"shape={tuple(self.transform.dim_size.values())},\n"
            f"  affine={np.array2string(g.affine[:3], precision=4, suppress_small=True)})"
        )

    def _repr_inline_(self, max_width: int) -> str:
        text = f"VoxelAffineIndex({self._summary()})"
        return text if len(text) <= max_width else text[: max(0, max_width - 3)] + "..."

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (type(self).__name__, self.transform.__dask_tokenize__())
