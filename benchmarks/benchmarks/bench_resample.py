"""Resampling benchmarks: ``.nifti.resample_to`` vs nilearn's ``resample_img`` (orders 0, 1, 3)."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import nibabel as nib
import numpy as np

from ._inputs import Inputs, open_ours

_INTERPOLATION = {0: "nearest", 1: "linear", 3: "continuous"}


def _axis_aligned_grid(img: Any, zoom: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """A ``zoom`` mm axis-aligned grid covering the image's field of view."""
    shape = img.shape[:3]
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in shape], indexing="ij")).reshape(3, -1)
    world = img.affine[:3, :3] @ corners + img.affine[:3, 3:4]
    low, high = world.min(axis=1), world.max(axis=1)
    affine = np.diag([zoom, zoom, zoom, 1.0])
    affine[:3, 3] = low
    return affine, tuple(int(n) for n in np.ceil((high - low) / zoom) + 1)


class Resample(Inputs):
    """The oblique T1 volume onto a 3 mm grid, the BOLD series onto a 2.5 mm grid."""

    params: ClassVar[list[Any]] = [["t1", "bold"], [0, 1, 3]]
    param_names: ClassVar[list[str]] = ["image", "order"]

    def setup(self, paths: dict[str, str], image: str, order: int) -> None:
        """Build the target grid; skip if ``resample_to`` does not exist yet."""
        self.path = paths[f"{image}.nii"]
        ds = open_ours(self.path)
        ds.close()
        self.target = _axis_aligned_grid(nib.load(self.path), 3.0 if image == "t1" else 2.5)

    def time_resample_to(self, paths: dict[str, str], image: str, order: int) -> None:
        """Open, then ``.nifti.resample_to(target, order)`` in memory."""
        ds = open_ours(self.path)
        ds["data"].nifti.resample_to(self.target, order=order).values  # noqa: B018
        ds.close()

    def time_resample_to_dask(self, paths: dict[str, str], image: str, order: int) -> None:
        """Open with ``chunks={}``, then ``.nifti.resample_to(target, order)`` computed."""
        ds = open_ours(self.path, chunks={})
        ds["data"].nifti.resample_to(self.target, order=order).values  # noqa: B018
        ds.close()

    def time_nilearn_resample_img(self, paths: dict[str, str], image: str, order: int) -> None:
        """``nilearn.image.resample_img`` on the loaded image (the reference)."""
        from nilearn.image import resample_img  # type: ignore[import-untyped]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = resample_img(
                nib.load(self.path),
                target_affine=self.target[0],
                target_shape=self.target[1],
                interpolation=_INTERPOLATION[order],
                clip=False,
                force_resample=True,
                copy_header=True,
            )
        np.asarray(out.dataobj)
