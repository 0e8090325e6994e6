"""Orthogonal views (sagittal, coronal, axial) in world orientation.

Figures are built with :class:`matplotlib.figure.Figure` directly, never
through pyplot, so plotting does not select or switch the user's matplotlib
backend: ``figure.savefig`` renders with the backend the file format needs,
and Jupyter shows the returned figure as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ._optional import require
from .affine import voxel_sizes
from .grid import current_affine, find_index

if TYPE_CHECKING:  # matplotlib is optional: the plot extra
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

__all__ = ["orthoview"]

# For each view: its title, the world axes drawn left→right and bottom→top,
# and the letters at the left, right, bottom and top edges.
_VIEWS = {
    0: ("sagittal", (1, 2), ("P", "A", "I", "S")),
    1: ("coronal", (0, 2), ("L", "R", "I", "S")),
    2: ("axial", (0, 1), ("L", "R", "P", "A")),
}


@dataclass
class _View:
    """One panel: an image whose columns and rows increase along two world axes."""

    title: str
    image: np.ndarray  # rows: vertical world axis, columns: horizontal world axis
    axes: tuple[int, int]  # world axes (0 x, 1 y, 2 z) of the columns and rows
    labels: tuple[str, str, str, str]
    crosshair: tuple[int, int]  # column, row
    zooms: tuple[float, float]  # mm per column, per row


def _figure_class() -> type[Figure]:
    require("matplotlib", "plot", "plotting")  # a missing matplotlib fails here, not later
    figure_class: type[Figure] = require("matplotlib.figure", "plot", "plotting").Figure
    return figure_class


def _select_volume(array: xr.DataArray, time: int | None) -> xr.DataArray:
    if "time" in array.dims:
        volumes = array.sizes["time"]
        volume = 0 if time is None else time
        if not 0 <= volume < volumes:
            raise IndexError(f"time={volume}: the image has {volumes} volumes (0..{volumes - 1})")
        array = array.isel(time=volume)
    elif time is not None:
        raise ValueError(f"time={time} was given but the image has no time dim {tuple(array.dims)}")
    extra = [str(d) for d in array.dims if d not in ("i", "j", "k")]
    if extra:
        raise ValueError(f"plot needs a 3-D image; select along {extra} first (e.g. .isel(...))")
    return array


def _volume_views(
    array: xr.DataArray, at: Sequence[float] | None
) -> tuple[list[_View], Sequence[float]]:
    """Sagittal, coronal and axial views of a 3-D image through the point ``at``."""
    canonical = array.nifti.to_canonical()
    shape = canonical.shape
    if at is None:
        voxel = [n // 2 for n in shape]
        at = tuple(float(v) for v in canonical.nifti.voxel_to_world(*voxel))
    else:
        voxel = [int(v) for v in canonical.nifti.world_to_voxel(*at, round=True)]
        if any(not 0 <= v < n for v, n in zip(voxel, shape, strict=True)):
            raise ValueError(f"world point {tuple(at)} mm is outside the image's field of view")
    zooms = canonical.nifti.zooms[:3]
    values = canonical.transpose("i", "j", "k")
    views = []
    for dropped, dim in enumerate(("i", "j", "k")):
        title, (h, v), labels = _VIEWS[dropped]
        image = np.asarray(values.isel({dim: voxel[dropped]}).values).T
        views.append(
            _View(title, image, (h, v), labels, (voxel[h], voxel[v]), (zooms[h], zooms[v]))
        )
    return views, at


def _plane_view(
    array: xr.DataArray, at: Sequence[float] | None
) -> tuple[list[_View], Sequence[float]]:
    """The one view of a 2-D plane of a grid (an integer selection dropped an axis)."""
    from nibabel.orientations import io_orientation

    affine = current_affine(array, find_index(array))
    orientation = io_orientation(affine)  # (world axis, ±1) of each column
    world = [int(orientation[n, 0]) for n in range(3)]
    dropped = world[2]
    title, (h, v), labels = _VIEWS[dropped]
    values = np.asarray(array.values)
    if world[0] != h:
        values = values.T
    first, second = (0, 1) if world[0] == h else (1, 0)
    flips = (orientation[first, 1] < 0, orientation[second, 1] < 0)
    shape = values.shape
    if at is None:
        voxel = [n // 2 for n in shape]
        original = [0, 0]
        original[first], original[second] = voxel
        at = tuple(float(c) for c in array.nifti.voxel_to_world(original[0], original[1], 0))
    else:
        found = array.nifti.world_to_voxel(*at, round=True)
        voxel = [int(found[first]), int(found[second])]
        if any(not 0 <= c < n for c, n in zip(voxel, shape, strict=True)):
            raise ValueError(f"world point {tuple(at)} mm is outside the plane's field of view")
    for axis, flip in enumerate(flips):
        if flip:
            values = np.flip(values, axis=axis)
            voxel[axis] = shape[axis] - 1 - voxel[axis]
    sizes = voxel_sizes(affine)
    view = _View(
        title, values.T, (h, v), labels, (voxel[0], voxel[1]), (sizes[first], sizes[second])
    )
    return [view], at


def orthoview(
    array: xr.DataArray,
    at: Sequence[float] | None = None,
    *,
    convention: str = "neurological",
    time: int | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Plot sagittal, coronal and axial slices through a world point.

    The image is first reoriented lazily to the closest RAS+ grid (flips and
    transposes only), so screen directions follow world axes: the sagittal
    view shows posterior → anterior left to right, the coronal and axial
    views show left → right (``"neurological"``) or right → left
    (``"radiological"``). Slices are drawn with ``origin="lower"`` and the
    aspect ratio of the voxel sizes. A 2-D plane of a grid (e.g.
    ``.isel(k=10)``) is drawn as its one view. The user's matplotlib backend
    is left alone.

    Parameters
    ----------
    array
        3-D image, 4-D with ``time=``, or a 2-D plane of a grid.
    at
        World point ``(x, y, z)`` in mm for the crosshair (default: grid centre).
    convention
        ``"neurological"`` (left on the left) or ``"radiological"``.
    time
        Volume index of a 4-D image (default 0); ``IndexError`` outside the series.
    cmap
        Matplotlib colour map name.
    vmin, vmax
        Value range of the colour map (default: the smallest and largest
        finite values in the views drawn).
    figsize
        Figure size in inches (default: 12 × 4.4 for three views, 5.5 × 4.4
        for one).

    Returns
    -------
    matplotlib.figure.Figure
        The views, titled ``sagittal``, ``coronal`` and ``axial``, and a colour bar.
    """
    if convention not in ("neurological", "radiological"):
        raise ValueError(f"convention must be 'neurological' or 'radiological', got {convention!r}")
    if at is not None and len(at) != 3:
        raise ValueError(f"at= needs a world point (x, y, z) in mm, got {at!r}")
    figure_class = _figure_class()
    array = _select_volume(array, time)
    present = len(find_index(array).transform.present_axes)
    if present == 3:
        views, at = _volume_views(array, at)
    elif present == 2:
        views, at = _plane_view(array, at)
    else:
        raise ValueError(
            f"plot needs a 3-D grid or a 2-D plane of one; this object has the spatial dims "
            f"{list(array.dims)} (select fewer integer positions)"
        )
    finite = np.concatenate([np.ravel(v.image[np.isfinite(v.image)]) for v in views])
    low = float(np.min(finite)) if vmin is None and finite.size else vmin
    high = float(np.max(finite)) if vmax is None and finite.size else vmax
    if figsize is None:
        figsize = (12.0, 4.4) if len(views) == 3 else (5.5, 4.4)
    figure = figure_class(figsize=figsize, layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(views)))
    images = [
        _draw(ax, view, convention, cmap, low, high) for ax, view in zip(axes, views, strict=True)
    ]
    figure.colorbar(images[-1], ax=list(axes), shrink=0.8)
    figure.suptitle(
        f"{convention} view at (x, y, z) = ({at[0]:.1f}, {at[1]:.1f}, {at[2]:.1f}) mm", fontsize=10
    )
    return figure


def _draw(
    ax: Axes, view: _View, convention: str, cmap: str, low: float | None, high: float | None
) -> AxesImage:
    flip = convention == "radiological" and view.axes[0] == 0
    shown = view.image[:, ::-1] if flip else view.image
    labels = view.labels
    left, right = (labels[1], labels[0]) if flip else (labels[0], labels[1])
    image = ax.imshow(
        shown,
        origin="lower",
        cmap=cmap,
        vmin=low,
        vmax=high,
        aspect=view.zooms[1] / view.zooms[0],
        interpolation="nearest",
    )
    column, row = view.crosshair
    if flip:
        column = view.image.shape[1] - 1 - column
    ax.axvline(column, color="yellow", linewidth=0.8)
    ax.axhline(row, color="yellow", linewidth=0.8)
    ax.set_title(view.title)
    ax.set_xticks([])
    ax.set_yticks([])
    for text, x, y, ha, va in (
        (left, 0.02, 0.5, "left", "center"),
        (right, 0.98, 0.5, "right", "center"),
        (labels[2], 0.5, 0.02, "center", "bottom"),
        (labels[3], 0.5, 0.98, "center", "top"),
    ):
        ax.text(
            x,
            y,
            text,
            transform=ax.transAxes,
            color="white",
            ha=ha,
            va=va,
            fontsize=11,
            fontweight="bold",
        )
    return image
