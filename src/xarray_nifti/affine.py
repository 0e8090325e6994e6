"""Pure functions on 4×4 voxel-to-world affines.

Every function here takes and returns plain numpy arrays and Python numbers,
so the maths can be tested on its own against nibabel and against
:func:`nibabel.affines.apply_affine`.

Conventions: an affine ``A`` maps voxel *centres* ``(i, j, k, 1)`` to world
RAS+ millimetres ``(x, y, z, 1)``. A voxel-space transform ``T`` maps voxel
indices of a derived grid (sliced, flipped, permuted) to voxel indices of the
original grid, so the derived grid's affine is ``A @ T``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from nibabel.orientations import (
    aff2axcodes,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

__all__ = [
    "XFORM_CODES",
    "axcodes",
    "check_affine",
    "grid_transform",
    "inverse_affine",
    "orientation_plan",
    "space_code",
    "space_name",
    "voxel_sizes",
]

#: NIfTI xform codes and the space names used in attrs and by ``.nifti.space``.
XFORM_CODES: dict[int, str] = {
    0: "unknown",
    1: "scanner",
    2: "aligned",
    3: "talairach",
    4: "mni",
    5: "template",
}

FloatArray = npt.NDArray[np.float64]
Indexer = int | slice


def space_name(code: int) -> str:
    """Name of the world space for a NIfTI sform/qform code.

    Examples
    --------
    >>> space_name(4)
    'mni'
    >>> space_name(99)
    'unknown'
    """
    return XFORM_CODES.get(int(code), "unknown")


def space_code(space: str) -> int:
    """NIfTI xform code of a world space name (the inverse of :func:`space_name`).

    Examples
    --------
    >>> space_code("MNI")
    4
    """
    if not isinstance(space, str):
        raise TypeError(
            f"a world space is named by a string, one of {list(XFORM_CODES.values())}; "
            f"got {type(space).__name__} {space!r}"
        )
    codes = {name: code for code, name in XFORM_CODES.items()}
    try:
        return codes[space.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown world space {space!r}: use one of {list(XFORM_CODES.values())}"
        ) from None


def check_affine(affine: npt.ArrayLike) -> FloatArray:
    """Return ``affine`` as a float64 4×4 array, or raise ``ValueError``.

    Examples
    --------
    >>> check_affine(np.eye(4)).shape
    (4, 4)
    """
    arr = np.asarray(affine, dtype=np.float64)
    if arr.shape != (4, 4):
        raise ValueError(f"an affine must be a 4×4 matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"the affine contains NaN or infinite values:\n{arr}")
    return arr


def inverse_affine(affine: npt.ArrayLike) -> FloatArray:
    """Inverse of a 4×4 affine, or a ``ValueError`` when it is singular.

    Examples
    --------
    >>> inverse_affine(np.diag([2.0, 4.0, 5.0, 1.0])).diagonal().tolist()
    [0.5, 0.25, 0.2, 1.0]
    """
    arr = np.asarray(affine, dtype=np.float64)
    if abs(np.linalg.det(arr[:3, :3])) < 1e-12:
        raise ValueError(
            "cannot map world coordinates to voxels: the affine is singular (a zero voxel "
            f"size or collinear axes):\n{arr}"
        )
    return np.asarray(np.linalg.inv(arr), dtype=np.float64)


def grid_transform(
    indexers: Sequence[Indexer], shape: Sequence[int]
) -> tuple[FloatArray, tuple[int, ...], tuple[bool, ...]]:
    """Voxel transform ``T`` for basic indexing of a grid.

    Parameters
    ----------
    indexers
        One ``int`` or ``slice`` per grid axis.
    shape
        Size of each grid axis before indexing.

    Returns
    -------
    transform
        4×4 matrix with the slice step on the diagonal and the slice start
        (from :meth:`slice.indices`) in the translation column, so that the
        new affine is ``affine @ transform``. Integer indexers contribute a
        translation with unit step.
    new_shape
        Size of each axis after indexing (1 for integer indexers).
    kept
        Whether each axis survives (``False`` for integer indexers).

    Examples
    --------
    >>> t, shape, kept = grid_transform([slice(None, None, -1), 3, slice(1, 5, 2)], (4, 5, 6))
    >>> t[:3, 3].tolist(), shape, kept
    ([3.0, 3.0, 1.0], (4, 1, 2), (True, False, True))
    """
    if len(indexers) != len(shape):
        raise ValueError(f"need one indexer per axis: {len(indexers)} for shape {tuple(shape)}")
    transform = np.eye(4)
    new_shape: list[int] = []
    kept: list[bool] = []
    for axis, (idx, size) in enumerate(zip(indexers, shape, strict=True)):
        if isinstance(idx, slice):
            start, stop, step = idx.indices(size)
            transform[axis, axis] = step
            transform[axis, 3] = start
            new_shape.append(len(range(start, stop, step)))
            kept.append(True)
        else:
            position = int(idx)
            if not -size <= position < size:
                raise IndexError(f"index {position} is out of bounds for an axis of size {size}")
            transform[axis, 3] = position % size
            new_shape.append(1)
            kept.append(False)
    return transform, tuple(new_shape), tuple(kept)


def voxel_sizes(affine: npt.ArrayLike) -> FloatArray:
    """Length in mm of each voxel axis (the column norms of the 3×3 part).

    Examples
    --------
    >>> voxel_sizes(np.diag([2.0, -3.0, 4.0, 1.0])).tolist()
    [2.0, 3.0, 4.0]
    """
    arr = np.asarray(affine, dtype=np.float64)
    return np.asarray(np.sqrt(np.sum(arr[:3, :3] ** 2, axis=0)), dtype=np.float64)


def axcodes(affine: npt.ArrayLike) -> tuple[str, ...]:
    """Closest axis direction codes, as :func:`nibabel.aff2axcodes`.

    Axes with no direction (a zero column) get ``"?"``.

    Examples
    --------
    >>> axcodes(np.diag([-2.0, 2.0, 2.0, 1.0]))
    ('L', 'A', 'S')
    """
    codes = aff2axcodes(np.asarray(affine, dtype=np.float64))
    return tuple("?" if c is None else str(c) for c in codes)


def _axis_letters(target: object) -> tuple[str, ...]:
    """``target`` as three upper-case letters, or a ``TypeError``/``ValueError`` saying why not."""
    example = "a string such as 'RAS' or 'LPS', or a sequence such as ('L', 'P', 'S')"
    if isinstance(target, str):
        letters: tuple[object, ...] = tuple(target)
    elif isinstance(target, Sequence):
        letters = tuple(target)
    else:
        raise TypeError(f"axis codes must be {example}, not {type(target).__name__} {target!r}")
    if not all(isinstance(c, str) and len(c) == 1 for c in letters):
        raise TypeError(f"axis codes must be one letter per axis, {example}; got {target!r}")
    if len(letters) != 3:
        raise ValueError(
            f"axis codes need one letter for each of the three spatial axes, {example}; got "
            f"{target!r} ({len(letters)} letters)"
        )
    return tuple(str(c).upper() for c in letters)


def orientation_plan(
    affine: npt.ArrayLike, target: str | Sequence[str], shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[bool, ...], FloatArray]:
    """Plan a reorientation made of flips and an axis permutation only.

    Parameters
    ----------
    affine
        Current 4×4 affine.
    target
        Wanted axis codes, e.g. ``"RAS"`` or ``("L", "P", "S")`` (case-insensitive).
    shape
        Current spatial shape (3 values).

    Returns
    -------
    order
        ``order[n]`` is the current axis that becomes new axis ``n``.
    flips
        Whether each *current* axis is reversed.
    transform
        4×4 voxel transform so that the new affine is ``affine @ transform``.

    Examples
    --------
    >>> order, flips, t = orientation_plan(np.diag([-1.0, 1, 1, 1]), "RAS", (10, 4, 4))
    >>> order, flips
    ((0, 1, 2), (True, False, False))
    """
    codes = _axis_letters(target)
    invalid = ValueError(
        f"invalid axis codes {target!r}: use one of R/L, one of A/P and one of S/I, each "
        "once, e.g. 'RAS' or 'LPS'"
    )
    try:
        wanted = axcodes2ornt(codes)
    except ValueError as err:
        raise invalid from err
    # nibabel accepts repeated directions such as "RRS" or "RLS"; they are not an orientation.
    if sorted(wanted[:, 0].tolist()) != [0.0, 1.0, 2.0]:
        raise invalid
    current = io_orientation(np.asarray(affine, dtype=np.float64))
    if np.isnan(current).any():
        raise ValueError(
            "cannot reorient: the affine has an axis with no direction (zero or degenerate "
            "column), so its orientation is undefined"
        )
    ornt = ornt_transform(current, wanted)
    transform = inv_ornt_aff(ornt, tuple(int(n) for n in shape))
    new_axis_of_old = ornt[:, 0].astype(int)
    order = tuple(int(a) for a in np.argsort(new_axis_of_old))
    flips = tuple(bool(f == -1) for f in ornt[:, 1])
    return order, flips, np.asarray(transform, dtype=np.float64)
