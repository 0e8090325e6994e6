"""The voxel → world coordinate transform behind the lazy ``x, y, z`` coordinates."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from xarray.indexes import CoordinateTransform

from .affine import FloatArray, Indexer, axcodes, check_affine, grid_transform, space_name

__all__ = ["GRID_TOLERANCE_MM", "NiftiGeometry", "VoxelAffineTransform"]

#: Two grids are the same when their shapes are equal and every affine entry
#: differs by at most this much (in mm). Headers store affines as float32, so
#: the same grid written by two tools can differ in the last float32 bits.
GRID_TOLERANCE_MM = 1e-4

SPATIAL_DIMS = ("i", "j", "k")
WORLD_COORDS = ("x", "y", "z")


def _optional_form(form: npt.ArrayLike | None) -> FloatArray | None:
    return None if form is None else check_affine(form)


@dataclass(frozen=True, eq=False)
class NiftiGeometry:
    """The full NIfTI geometry of a (possibly sliced) voxel grid.

    Columns of every affine follow the three voxel axes of the *file*
    (``i, j, k`` as first opened), also for axes dropped by integer
    selection: a dropped axis keeps its column and has size 1.

    Parameters
    ----------
    affine
        The chosen voxel → world affine (nibabel's ``img.affine`` rule).
    shape
        Size of each of the three voxel axes.
    sform, qform
        The header's forms on the same grid, or ``None`` if absent.
    sform_code, qform_code
        NIfTI xform codes (0 = unknown).

    Examples
    --------
    >>> import numpy as np
    >>> g = NiftiGeometry(np.diag([2.0, 2.0, 2.0, 1.0]), (4, 5, 6), sform_code=1)
    >>> g.space, g.axcodes
    ('scanner', ('R', 'A', 'S'))
    """

    affine: FloatArray
    shape: tuple[int, int, int]
    sform: FloatArray | None = None
    qform: FloatArray | None = None
    sform_code: int = 0
    qform_code: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "affine", check_affine(self.affine))
        object.__setattr__(self, "sform", _optional_form(self.sform))
        object.__setattr__(self, "qform", _optional_form(self.qform))
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "sform_code", int(self.sform_code))
        object.__setattr__(self, "qform_code", int(self.qform_code))
        if len(self.shape) != 3:
            raise ValueError(f"a NIfTI grid has three voxel axes, got shape {self.shape}")

    @property
    def code(self) -> int:
        """The xform code of the chosen affine (sform first, then qform)."""
        if self.sform_code > 0:
            return self.sform_code
        return self.qform_code

    @property
    def space(self) -> str:
        """Name of the world space of the chosen affine."""
        return space_name(self.code)

    @property
    def axcodes(self) -> tuple[str, ...]:
        """Axis direction codes of the three voxel axes."""
        return axcodes(self.affine)

    def transformed(self, voxel_transform: FloatArray, shape: Sequence[int]) -> NiftiGeometry:
        """The geometry of a derived grid (a slice or reorientation of this one).

        Parameters
        ----------
        voxel_transform
            4×4 matrix ``T``: voxel ``v`` of the derived grid is voxel
            ``T @ v`` of this one. Every form is multiplied by it; the codes
            are kept.
        shape
            The derived grid's size along each of the three voxel axes.
        """

        def apply(form: FloatArray | None) -> FloatArray | None:
            return None if form is None else form @ voxel_transform

        new_affine = apply(self.affine)
        assert new_affine is not None
        return NiftiGeometry(
            new_affine,
            (int(shape[0]), int(shape[1]), int(shape[2])),
            sform=apply(self.sform),
            qform=apply(self.qform),
            sform_code=self.sform_code,
            qform_code=self.qform_code,
        )

    def in_space(self, code: int) -> NiftiGeometry:
        """The same grid labelled as world space ``code``.

        Every form (sform, qform) that holds the chosen affine gets the new
        code; with ``code`` 0 (unknown) they lose their label. A form that maps
        elsewhere (another space) keeps its own code. With no labelled form,
        the sform takes the affine and the code.

        Examples
        --------
        >>> g = NiftiGeometry(np.eye(4), (2, 2, 2), sform=np.eye(4), sform_code=2)
        >>> g.in_space(1).space, g.in_space(1).qform_code
        ('scanner', 0)
        """
        code = int(code)

        def holds_affine(form: FloatArray | None, form_code: int) -> bool:
            return (
                form is not None
                and form_code > 0
                and bool(np.allclose(form, self.affine, rtol=0.0, atol=GRID_TOLERANCE_MM))
            )

        sform, sform_code = self.sform, self.sform_code
        qform_code = self.qform_code
        relabel_s = holds_affine(self.sform, self.sform_code)
        relabel_q = holds_affine(self.qform, self.qform_code)
        if not relabel_s and not relabel_q:
            sform, relabel_s = self.affine, True
        return NiftiGeometry(
            self.affine,
            self.shape,
            sform=sform,
            qform=self.qform,
            sform_code=code if relabel_s else sform_code,
            qform_code=code if relabel_q else qform_code,
        )

    def same_grid(self, other: NiftiGeometry, tolerance: float = GRID_TOLERANCE_MM) -> bool:
        """Whether two geometries describe the same voxel grid in the same space.

        Parameters
        ----------
        other
            The geometry to compare with.
        tolerance
            Largest difference (mm) between corresponding affine entries.
        """
        return self.code == other.code and self.same_voxels(other, tolerance)

    def same_voxels(self, other: NiftiGeometry, tolerance: float = GRID_TOLERANCE_MM) -> bool:
        """Whether two geometries have the same shape and affine, whatever their space labels."""
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, rtol=0.0, atol=tolerance)
        )

    def token(self) -> tuple[Any, ...]:
        """A hashable summary used for dask tokens."""

        def raw(form: FloatArray | None) -> bytes:
            return b"" if form is None else form.tobytes()

        return (
            raw(self.affine),
            self.shape,
            raw(self.sform),
            raw(self.qform),
            self.sform_code,
            self.qform_code,
        )


class VoxelAffineTransform(CoordinateTransform):
    """Lazy voxel → world (RAS+ mm) coordinates of a NIfTI grid.

    Parameters
    ----------
    geometry
        The grid's geometry.
    axis_dims
        For each of the three voxel axes, the name of its dimension, or
        ``None`` if the axis was dropped by integer selection (or is absent
        from a 2-D file).
    coord_names
        Names of the world coordinates.
    source
        Name of the file the grid comes from, for error messages only: it
        survives slicing and renaming and plays no part in equality or tokens.

    Examples
    --------
    >>> import numpy as np
    >>> geometry = NiftiGeometry(np.diag([2.0, 3, 4, 1]), (2, 2, 2))
    >>> t = VoxelAffineTransform(geometry, ("i", "j", "k"))
    >>> {k: float(v) for k, v in t.forward({"i": 1, "j": 1, "k": 1}).items()}
    {'x': 2.0, 'y': 3.0, 'z': 4.0}
    """

    geometry: NiftiGeometry
    axis_dims: tuple[str | None, str | None, str | None]
    source: str | None

    def __init__(
        self,
        geometry: NiftiGeometry,
        axis_dims: Sequence[str | None] = SPATIAL_DIMS,
        coord_names: Sequence[Hashable] = WORLD_COORDS,
        source: str | None = None,
    ) -> None:
        dims = tuple(axis_dims)
        if len(dims) != 3:
            raise ValueError(f"axis_dims needs one entry per voxel axis, got {dims}")
        sizes = {
            str(name): geometry.shape[axis] for axis, name in enumerate(dims) if name is not None
        }
        super().__init__(tuple(coord_names), sizes, dtype=np.dtype(np.float64))
        self.geometry = geometry
        self.axis_dims = (dims[0], dims[1], dims[2])
        self.source = source
        # asked for at every Dataset copy (index variables): computed once
        self._present_axes = tuple(
            axis for axis, name in enumerate(self.axis_dims) if name is not None
        )

    # -- helpers -------------------------------------------------------------
    @property
    def present_axes(self) -> tuple[int, ...]:
        """Voxel axes that still have a dimension."""
        return self._present_axes

    def with_dims(
        self, axis_dims: Sequence[str | None], coord_names: Sequence[Hashable] | None = None
    ) -> VoxelAffineTransform:
        """The same geometry with other dimension or coordinate names.

        ``axis_dims`` and ``coord_names`` are as for the class; coordinate
        names are kept by default.
        """
        return type(self)(
            self.geometry,
            axis_dims,
            self.coord_names if coord_names is None else coord_names,
            self.source,
        )

    def isel(self, indexers: Mapping[str, Indexer]) -> VoxelAffineTransform:
        """Transform of the grid selected by ``indexers`` (dim name → int or slice).

        An integer drops its axis (its dim becomes ``None``); slices of any
        step derive the new affine exactly.
        """
        per_axis: list[Indexer] = []
        for name in self.axis_dims:
            if name is None:
                per_axis.append(slice(None))
            else:
                per_axis.append(indexers.get(name, slice(None)))
        voxel_transform, shape, kept = grid_transform(per_axis, self.geometry.shape)
        new_dims = tuple(
            name if (name is not None and keep) else None
            for name, keep in zip(self.axis_dims, kept, strict=True)
        )
        return type(self)(
            self.geometry.transformed(voxel_transform, shape),
            new_dims,
            self.coord_names,
            self.source,
        )

    # -- CoordinateTransform API -----------------------------------------------
    def forward(self, dim_positions: dict[str, Any]) -> dict[Hashable, Any]:
        matrix = self.geometry.affine
        positions = [
            np.asarray(dim_positions[str(self.axis_dims[a])], dtype=np.float64)
            for a in self.present_axes
        ]
        positions = list(np.broadcast_arrays(*positions)) if positions else []
        out: dict[Hashable, Any] = {}
        for row, name in enumerate(self.coord_names):
            value: Any = matrix[row, 3]
            for axis, pos in zip(self.present_axes, positions, strict=True):
                value = value + matrix[row, axis] * pos
            out[name] = value
        return out

    def voxel_positions(self, coord_labels: Mapping[Hashable, Any]) -> FloatArray:
        """Continuous voxel coordinates of world points along all three file axes.

        ``coord_labels`` maps each world coordinate name (``x, y, z``) to
        positions in mm (numbers or arrays, broadcast together). Returns an
        array of shape ``(3, *points)``. For an axis dropped by integer
        selection the value is the offset from the selected plane (``0`` on
        it), so points off a 2-D grid can be recognised.

        Raises ``ValueError`` when the affine is singular on the grid's axes.
        """
        world = np.stack(
            np.broadcast_arrays(
                *(np.asarray(coord_labels[name], dtype=np.float64) for name in self.coord_names)
            )
        )
        points_shape = world.shape[1:]
        rhs = world.reshape(3, -1) - self.geometry.affine[:3, 3:4]
        full = self.geometry.affine[:3, :3]
        present = list(self.present_axes)
        solution: FloatArray = np.zeros((3, rhs.shape[1]))
        if np.linalg.matrix_rank(full) == 3:
            solution = np.asarray(np.linalg.solve(full, rhs), dtype=np.float64)
        elif present:
            # The kept axes may still span a plane or line even if a dropped
            # axis has no direction: use the nearest point on it.
            matrix = full[:, present]
            if np.linalg.matrix_rank(matrix) < len(present):
                raise ValueError(
                    "cannot map world coordinates to voxels: the affine is singular (a zero "
                    f"voxel size or collinear axes):\n{self.geometry.affine}"
                )
            solution[present] = np.linalg.lstsq(matrix, rhs, rcond=None)[0]
        return solution.reshape((3, *points_shape))

    def reverse(self, coord_labels: dict[Hashable, Any]) -> dict[str, Any]:
        positions = self.voxel_positions(coord_labels)
        return {str(self.axis_dims[axis]): positions[axis] for axis in self.present_axes}

    def equals(self, other: CoordinateTransform, **kwargs: Any) -> bool:
        if not isinstance(other, VoxelAffineTransform):
            return False
        return self.axis_dims == other.axis_dims and self.geometry.same_grid(other.geometry)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (type(self).__name__, self.geometry.token(), self.axis_dims, self.coord_names)

    def __repr__(self) -> str:
        g = self.geometry
        codes = "".join(g.axcodes)
        rows = np.array2string(g.affine[:3], precision=4, suppress_small=True, separator=", ")
        return (
            f"{type(self).__name__}(dims={self.dims}, shape={tuple(self.dim_size.values())}, "
            f"axcodes={codes}, space={g.space},\n  affine={rows})"
        )
