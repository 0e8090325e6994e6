"""Orthogonal views (sagittal, coronal, axial) in world orientation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["orthoview"]


def _pyplot() -> Any:
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in (
            "agg",
            "module://matplotlib_inline.backend_inline",
        ):
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'xarray-nifti[plot]'") from err
    return plt


def orthoview(
    array: xr.DataArray,
    at: Sequence[float] | None = None,
    *,
    convention: str = "neurological",
    time: int | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    figsize: tuple[float, float] = (12.0, 4.4),
) -> Any:
    """Plot sagittal, coronal and axial slices through a world point.

    The image is first reoriented lazily to the closest RAS+ grid (flips and
    transposes only), so screen directions follow world axes: the sagittal
    view shows posterior → anterior left to right, the coronal and axial
    views show left → right (``"neurological"``) or right → left
    (``"radiological"``). Slices are drawn with ``origin="lower"`` and the
    aspect ratio of the voxel sizes.

    Parameters
    ----------
    array
        3-D image, or 4-D with ``time=``.
    at
        World point ``(x, y, z)`` in mm for the crosshair (default: grid centre).
    convention
        ``"neurological"`` (left on the left) or ``"radiological"``.
    time
        Volume index of a 4-D image.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if convention not in ("neurological", "radiological"):
        raise ValueError(f"convention must be 'neurological' or 'radiological', got {convention!r}")
    plt = _pyplot()
    if "time" in array.dims:
        array = array.isel(time=0 if time is None else time)
    extra = [d for d in array.dims if d not in ("i", "j", "k")]
    if extra:
        raise ValueError(f"plot needs a 3-D image; select along {extra} first (e.g. time=...)")
    canonical = array.nifti.to_canonical()
    shape = canonical.shape
    if at is None:
        voxel = [n // 2 for n in shape]
        at = tuple(float(v) for v in canonical.nifti.voxel_to_world(*voxel))
    else:
        if len(at) != 3:
            raise ValueError(f"at= needs a world point (x, y, z) in mm, got {at!r}")
        voxel = [int(v) for v in canonical.nifti.world_to_voxel(*at, round=True)]
        if any(not 0 <= v < n for v, n in zip(voxel, shape, strict=True)):
            raise ValueError(f"world point {tuple(at)} mm is outside the image's field of view")
    zooms = canonical.nifti.zooms[:3]
    values = canonical.transpose("i", "j", "k")
    views = [
        ("sagittal", values.isel(i=voxel[0]).values.T, (1, 2), ("P", "A", "I", "S")),
        ("coronal", values.isel(j=voxel[1]).values.T, (0, 2), ("L", "R", "I", "S")),
        ("axial", values.isel(k=voxel[2]).values.T, (0, 1), ("L", "R", "P", "A")),
    ]
    finite = np.concatenate([np.ravel(v[1][np.isfinite(v[1])]) for v in views])
    low = float(np.min(finite)) if vmin is None and finite.size else vmin
    high = float(np.max(finite)) if vmax is None and finite.size else vmax
    figure, axes = plt.subplots(1, 3, figsize=figsize, constrained_layout=True)
    image = None
    for ax, (title, plane, (h_axis, v_axis), labels) in zip(axes, views, strict=True):
        flip = convention == "radiological" and h_axis == 0
        shown = plane[:, ::-1] if flip else plane
        left, right = (labels[1], labels[0]) if flip else (labels[0], labels[1])
        image = ax.imshow(
            shown,
            origin="lower",
            cmap=cmap,
            vmin=low,
            vmax=high,
            aspect=zooms[v_axis] / zooms[h_axis],
            interpolation="nearest",
        )
        column = shape[h_axis] - 1 - voxel[h_axis] if flip else voxel[h_axis]
        ax.axvline(column, color="yellow", linewidth=0.8)
        ax.axhline(voxel[v_axis], color="yellow", linewidth=0.8)
        ax.set_title(title)
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
    figure.colorbar(image, ax=list(axes), shrink=0.8)
    figure.suptitle(
        f"{convention} view at (x, y, z) = ({at[0]:.1f}, {at[1]:.1f}, {at[2]:.1f}) mm", fontsize=10
    )
    return figure
