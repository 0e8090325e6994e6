"""Reorient or slice, then save: ``.nifti`` against nibabel and SimpleITK.

The input is an int16 T1 stored as oblique sagittal slices; the output has the
input's format. SimpleITK's orientation codes name where the axes point to, so
nibabel's RAS+ canonical orientation is ``"RAS"`` for ``DICOMOrient`` too.
Benchmarks of SimpleITK are skipped where it is not installed.
"""

from __future__ import annotations

import os
import tempfile
from typing import ClassVar

import nibabel as nib

from ._inputs import KINDS, Inputs, load, open_ours, simpleitk

SLAB = slice(10, 60)


class _SaveBench(Inputs):
    """A fresh output folder per benchmark; the output keeps the input's format."""

    params: ClassVar[list[str]] = KINDS
    param_names: ClassVar[list[str]] = ["kind"]

    def setup(self, paths: dict[str, str], kind: str) -> None:
        """The source path and an output path."""
        self.source = paths[f"t1-sagittal.{kind}"]
        self.out_dir = tempfile.mkdtemp(prefix="asv-geometry-")
        self.out = os.path.join(self.out_dir, f"out.{kind}")

    def teardown(self, paths: dict[str, str], kind: str) -> None:
        """Remove the outputs."""
        for name in os.listdir(self.out_dir):
            os.unlink(os.path.join(self.out_dir, name))
        os.rmdir(self.out_dir)


class ReorientSave(_SaveBench):
    """Closest canonical (RAS+) orientation, then save."""

    def time_ours(self, paths: dict[str, str], kind: str) -> None:
        """``open_dataset(p)["data"].nifti.to_canonical().nifti.to_nifti(out)``."""
        ds = open_ours(self.source)
        ds["data"].nifti.to_canonical().nifti.to_nifti(self.out)
        ds.close()

    def time_nibabel(self, paths: dict[str, str], kind: str) -> None:
        """``nib.save(nib.as_closest_canonical(nib.load(p)), out)``."""
        nib.save(nib.as_closest_canonical(nib.load(self.source)), self.out)

    def time_simpleitk(self, paths: dict[str, str], kind: str) -> None:
        """``WriteImage(DICOMOrient(ReadImage(p), "RAS"), out)``."""
        sitk = simpleitk()
        sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(self.source), "RAS"), self.out)


class SliceSave(_SaveBench):
    """Keep the k planes 10 to 59, then save."""

    def time_ours(self, paths: dict[str, str], kind: str) -> None:
        """``.isel(k=slice(10, 60)).nifti.to_nifti(out)``."""
        ds = open_ours(self.source)
        ds["data"].isel(k=SLAB).nifti.to_nifti(self.out)
        ds.close()

    def time_nibabel(self, paths: dict[str, str], kind: str) -> None:
        """``nib.save(nib.load(p).slicer[:, :, 10:60], out)``."""
        img = load(self.source)
        nib.save(img.slicer[:, :, SLAB], self.out)

    def time_simpleitk(self, paths: dict[str, str], kind: str) -> None:
        """``WriteImage(ReadImage(p)[:, :, 10:60], out)``."""
        sitk = simpleitk()
        sitk.WriteImage(sitk.ReadImage(self.source)[:, :, SLAB], self.out)
