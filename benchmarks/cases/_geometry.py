"""Geometry cases of ``compare.py``: reorient or slice a T1, then save, against peers.

On an int16 T1 stored as oblique sagittal slices (``.nii.gz`` → ``.nii.gz`` and
``.nii`` → ``.nii``):

* ``reorient``: ``open_dataset(p)["data"].nifti.to_canonical().nifti.to_nifti(out)``
  against ``nib.save(nib.as_closest_canonical(nib.load(p)), out)`` and SimpleITK's
  ``WriteImage(DICOMOrient(ReadImage(p), "RAS"), out)``;
* ``slice``: ``.isel(k=slice(10, 60))`` then ``to_nifti`` against
  ``nib.save(nib.load(p).slicer[:, :, 10:60], out)`` and
  ``WriteImage(ReadImage(p)[:, :, 10:60], out)``.

SimpleITK's orientation codes name the directions the axes point *to* (as
DICOM), so nibabel's RAS+ canonical orientation is ``"RAS"`` there too, whatever
its LPS world coordinates. Every output is read back with nibabel and compared
(values and affine) with nibabel's in-memory result.
"""

from __future__ import annotations

from types import ModuleType

import nibabel as nib
import numpy as np
from cases._harness import CorrectnessError, Row, load
from cases._inputs import Context, open_ours, shape_tag
from cases._peers import compare_saves, simpleitk

__all__ = ["SLAB", "case_reorient", "case_slice"]

#: the k planes that the slice case keeps
SLAB = slice(10, 60)
SUFFIXES = (".nii.gz", ".nii")


def _keeps_dtype(name: str, target: str, source: str) -> None:
    """Ours keeps the stored dtype of the source."""
    got, expected = load(target).get_data_dtype(), load(source).get_data_dtype()
    if got != expected:
        raise CorrectnessError(f"{name}: stored as {got}, the source as {expected}")


def _label(ctx: Context) -> str:
    return f"T1 {shape_tag(ctx.sizes.t1_sagittal)} int16 oblique sagittal"


def _reorient(ctx: Context, suffix: str, sitk: ModuleType | None) -> list[Row]:
    source = ctx.files.t1_sagittal(gz=suffix == ".nii.gz")
    canonical = nib.as_closest_canonical(load(source))
    expected = nib.Nifti1Image(np.asanyarray(canonical.dataobj), canonical.affine)

    def ours(target: str) -> None:
        ds = open_ours(source)
        try:
            ds["data"].nifti.to_canonical().nifti.to_nifti(target)
        finally:
            ds.close()

    def with_nibabel(target: str) -> None:
        nib.save(nib.as_closest_canonical(load(source)), target)

    def with_sitk(target: str) -> None:
        assert sitk is not None
        sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(source), "RAS"), target)

    axes = "".join(nib.aff2axcodes(load(source).affine))
    return compare_saves(
        f"reorient + save {suffix}, {_label(ctx)}",
        workdir=ctx.workdir,
        suffix=suffix,
        ours=ours,
        peers={
            "nibabel": ("as_closest_canonical + nib.save", with_nibabel),
            "SimpleITK": ('DICOMOrient(img, "RAS") + WriteImage', with_sitk if sitk else None),
        },
        expected=expected,
        repeat=ctx.sizes.repeat,
        strict=lambda target: _keeps_dtype(f"reorient {suffix} (ours)", target, source),
        note=f"{axes} → RAS (closest canonical), read and written whole",
    )


def _slice(ctx: Context, suffix: str, sitk: ModuleType | None) -> list[Row]:
    source = ctx.files.t1_sagittal(gz=suffix == ".nii.gz")
    sliced = load(source).slicer[:, :, SLAB]
    expected = nib.Nifti1Image(np.asanyarray(sliced.dataobj), sliced.affine)

    def ours(target: str) -> None:
        ds = open_ours(source)
        try:
            ds["data"].isel(k=SLAB).nifti.to_nifti(target)
        finally:
            ds.close()

    def with_nibabel(target: str) -> None:
        nib.save(load(source).slicer[:, :, SLAB], target)

    def with_sitk(target: str) -> None:
        assert sitk is not None
        sitk.WriteImage(sitk.ReadImage(source)[:, :, SLAB], target)

    planes = f"{SLAB.start}:{SLAB.stop}"
    return compare_saves(
        f"slice k={planes} + save {suffix}, {_label(ctx)}",
        workdir=ctx.workdir,
        suffix=suffix,
        ours=ours,
        peers={
            "nibabel": (f"img.slicer[:, :, {planes}] + nib.save", with_nibabel),
            "SimpleITK": (f"img[:, :, {planes}] + WriteImage", with_sitk if sitk else None),
        },
        expected=expected,
        repeat=ctx.sizes.repeat,
        strict=lambda target: _keeps_dtype(f"slice {suffix} (ours)", target, source),
        note=f"ours: .isel(k=slice({SLAB.start}, {SLAB.stop})) then .nifti.to_nifti",
    )


def case_reorient(ctx: Context) -> list[Row]:
    """Reorient an oblique sagittal T1 to RAS and save: vs nibabel and SimpleITK."""
    sitk = simpleitk()
    return [row for suffix in SUFFIXES for row in _reorient(ctx, suffix, sitk)]


def case_slice(ctx: Context) -> list[Row]:
    """Keep 50 planes of an oblique sagittal T1 and save: vs nibabel and SimpleITK."""
    sitk = simpleitk()
    return [row for suffix in SUFFIXES for row in _slice(ctx, suffix, sitk)]
