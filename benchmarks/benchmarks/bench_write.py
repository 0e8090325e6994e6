"""Write benchmarks: ``.nifti.to_nifti`` against ``nib.save`` (and SimpleITK)."""

from __future__ import annotations

import os
import tempfile
from typing import ClassVar

import nibabel as nib
import numpy as np

from ._inputs import KINDS, Inputs, load, open_ours, simpleitk


class Save(Inputs):
    """Save the 4-D series: from memory, and streamed from a lazy ``.nii.gz``."""

    params: ClassVar[list[str]] = KINDS
    param_names: ClassVar[list[str]] = ["kind"]

    def setup(self, paths: dict[str, str], kind: str) -> None:
        """Load the series into memory (ours and nibabel); skip if ``to_nifti`` is missing."""
        self.loaded = open_ours(paths["bold.nii"]).load()
        img = load(paths["bold.nii"], mmap=False)
        self.img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
        self.out_dir = tempfile.mkdtemp(prefix="asv-save-")
        self.out = os.path.join(self.out_dir, f"out.{kind}")

    def teardown(self, paths: dict[str, str], kind: str) -> None:
        """Remove the outputs."""
        for name in os.listdir(self.out_dir):
            os.unlink(os.path.join(self.out_dir, name))
        os.rmdir(self.out_dir)

    def time_to_nifti_in_memory(self, paths: dict[str, str], kind: str) -> None:
        """``.nifti.to_nifti`` of in-memory data."""
        self.loaded["data"].nifti.to_nifti(self.out)

    def time_nib_save_in_memory(self, paths: dict[str, str], kind: str) -> None:
        """``nib.save`` of an in-memory image (zlib level 1 for ``.nii.gz``)."""
        nib.save(self.img, self.out)

    def time_to_nifti_streamed(self, paths: dict[str, str], kind: str) -> None:
        """Lazy ``.nii.gz`` source (``chunks={}``) streamed to the output."""
        ds = open_ours(paths["bold.nii.gz"], chunks={})
        ds["data"].nifti.to_nifti(self.out)
        ds.close()

    def peakmem_to_nifti_streamed(self, paths: dict[str, str], kind: str) -> None:
        """Peak RSS of the streamed save."""
        ds = open_ours(paths["bold.nii.gz"], chunks={})
        ds["data"].nifti.to_nifti(self.out)
        ds.close()

    def track_gz_size_ratio(self, paths: dict[str, str], kind: str) -> float:
        """Output size of ``to_nifti`` relative to ``nib.save`` (target ≤ 1.1 for gzip)."""
        self.loaded["data"].nifti.to_nifti(self.out)
        ours = os.path.getsize(self.out)
        nib.save(self.img, self.out)
        return ours / os.path.getsize(self.out)

    track_gz_size_ratio.unit = "ratio"  # type: ignore[attr-defined]


class ReadSave(Inputs):
    """Read the scaled series and save it in the same format: ours, nibabel, SimpleITK.

    nibabel recomputes ``scl_slope``/``scl_inter`` on saving a loaded image, so its
    output values differ slightly from the source's; SimpleITK stores float32.
    """

    params: ClassVar[list[str]] = KINDS
    param_names: ClassVar[list[str]] = ["kind"]

    def setup(self, paths: dict[str, str], kind: str) -> None:
        """The source path and an output path."""
        self.source = paths[f"bold-scaled.{kind}"]
        self.out_dir = tempfile.mkdtemp(prefix="asv-read-save-")
        self.out = os.path.join(self.out_dir, f"out.{kind}")

    def teardown(self, paths: dict[str, str], kind: str) -> None:
        """Remove the outputs."""
        for name in os.listdir(self.out_dir):
            os.unlink(os.path.join(self.out_dir, name))
        os.rmdir(self.out_dir)

    def _ours(self) -> None:
        ds = open_ours(self.source, chunks={})
        ds["data"].nifti.to_nifti(self.out)
        ds.close()

    def time_ours(self, paths: dict[str, str], kind: str) -> None:
        """``open_dataset(p, chunks={})["data"].nifti.to_nifti(out)`` (streamed)."""
        self._ours()

    def peakmem_ours(self, paths: dict[str, str], kind: str) -> None:
        """Peak RSS of the same."""
        self._ours()

    def time_nibabel(self, paths: dict[str, str], kind: str) -> None:
        """``nib.save(nib.load(p), out)``."""
        nib.save(load(self.source), self.out)

    def time_simpleitk(self, paths: dict[str, str], kind: str) -> None:
        """``WriteImage(ReadImage(p), out)``; skipped if SimpleITK is not installed."""
        sitk = simpleitk()
        sitk.WriteImage(sitk.ReadImage(self.source), self.out)
