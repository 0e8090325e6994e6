"""Saving cases of ``compare.py``: ``.nifti.to_nifti`` against ``nib.save`` and SimpleITK.

* ``save_nii``, ``save_gz``: in-memory data saved to ``.nii`` / ``.nii.gz`` on both
  sides (time; size of the gzip output);
* ``save_lazy``: a scaled int16 BOLD series read and saved again (``.nii.gz`` →
  ``.nii.gz`` and ``.nii`` → ``.nii``): a lazily opened dataset streamed to the
  output, against ``nib.save(nib.load(p))`` and ``sitk.WriteImage(sitk.ReadImage(p))``,
  every output read back and compared with the source; and the peak RSS of the
  streaming save in a fresh process.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np
import xarray as xr
from cases._harness import Row, Sample, best_of, load, run_child, verify_copy, verify_saved
from cases._inputs import INTER, SLOPE, Context, open_ours, raw_mib, scratch
from cases._peers import compare_saves, simpleitk

__all__ = ["case_save_gz", "case_save_lazy", "case_save_nii"]


def _in_memory_sources(path: str) -> tuple[xr.DataArray, nib.Nifti1Image, np.ndarray]:
    ds = open_ours(path).load()
    da = ds["data"]
    img = load(path, mmap=False)
    data = np.asarray(img.dataobj)
    in_memory = nib.Nifti1Image(data, img.affine, img.header)
    return da, in_memory, data


def _save_pair(ctx: Context, suffix: str) -> tuple[dict[str, Sample], dict[str, int]]:
    source = ctx.files.bold()
    da, img, data = _in_memory_sources(source)
    sizes: dict[str, int] = {}
    with scratch(ctx.workdir) as out:
        targets = {"ours": out / f"ours{suffix}", "nib": out / f"nib{suffix}"}

        def clean(who: str) -> None:
            targets[who].unlink(missing_ok=True)
            os.sync()  # no write-back of the previous output during the next timing

        def check(_: dict[str, Any]) -> None:
            for who, path in targets.items():
                sizes[who] = path.stat().st_size
                verify_saved(f"save {suffix} ({who})", os.fspath(path), data, img)

        best = best_of(
            {
                "ours": lambda: da.nifti.to_nifti(targets["ours"]),
                "nib": lambda: nib.save(img, targets["nib"]),
            },
            ctx.sizes.repeat,
            check,
            before_each=clean,
        )
    return best, sizes


def case_save_nii(ctx: Context) -> list[Row]:
    """Save an in-memory image to ``.nii``: ``.nifti.to_nifti`` vs ``nib.save``."""
    best, _ = _save_pair(ctx, ".nii")
    return [
        Row(
            "save .nii (in-memory data) vs nib.save",
            best["ours"].seconds,
            "nib.save",
            best["nib"].seconds,
            best["ours"].seconds / best["nib"].seconds,
            "ours/nib",
            best["ours"].peak_mib,
            goal=("≤", 1.2),
        )
    ]


def case_save_gz(ctx: Context) -> list[Row]:
    """Save an in-memory image to ``.nii.gz``: time and size vs ``nib.save`` (zlib level 1)."""
    best, sizes = _save_pair(ctx, ".nii.gz")
    return [
        Row(
            "save .nii.gz (in-memory) vs nib.save: time",
            best["ours"].seconds,
            "nib.save (zlib level 1)",
            best["nib"].seconds,
            best["nib"].seconds / best["ours"].seconds,
            "nib/ours",
            best["ours"].peak_mib,
            goal=("≥", 2.0),
        ),
        Row(
            "save .nii.gz (in-memory) vs nib.save: size",
            None,
            f"nib.save: {sizes['nib'] / 1e6:.1f} MB",
            None,
            sizes["ours"] / sizes["nib"],
            "ours/nib size",
            goal=("≤", 1.1),
            note=f"output sizes: ours {sizes['ours']} bytes, nib.save {sizes['nib']} bytes",
        ),
    ]


def _read_and_save(ctx: Context, suffix: str, sitk: ModuleType | None) -> list[Row]:
    """Rows of the scaled series read and saved to ``suffix`` by ours and the peers."""
    source = ctx.files.bold_scaled(gz=suffix == ".nii.gz")

    def ours(target: str) -> None:
        ds = open_ours(source, chunks={})
        try:
            ds["data"].nifti.to_nifti(target)
        finally:
            ds.close()

    def with_nibabel(target: str) -> None:
        nib.save(load(source), target)

    def with_sitk(target: str) -> None:
        assert sitk is not None
        sitk.WriteImage(sitk.ReadImage(source), target)

    def strict(target: str) -> None:
        verify_copy(f"save lazy {suffix} (ours)", target, source)

    return compare_saves(
        f"save lazy {suffix} → {suffix} vs nib load+save",
        workdir=ctx.workdir,
        suffix=suffix,
        ours=ours,
        peers={
            "nibabel": ("nib.save(nib.load(p))", with_nibabel),
            "SimpleITK": ("WriteImage(ReadImage(p))", with_sitk if sitk is not None else None),
        },
        expected=load(source),
        repeat=ctx.sizes.repeat,
        strict=strict,
        note=f"the source stores int16 with scl_slope {SLOPE:g}, scl_inter {INTER:g}; "
        "ours opens it with chunks={} and streams it to the output",
    )


def case_save_lazy(ctx: Context) -> list[Row]:
    """Read a scaled int16 series and save it again: ours streamed, vs nibabel and SimpleITK."""
    sitk = simpleitk()
    raw = raw_mib(ctx.sizes.bold, 2)
    rows = _read_and_save(ctx, ".nii.gz", sitk) + _read_and_save(ctx, ".nii", sitk)
    # Peak memory in fresh processes (in-process peaks miss reused heap memory).
    source = ctx.files.bold_scaled(gz=True)
    children: dict[str, dict[str, Any]] = {}
    with scratch(ctx.workdir) as out:
        for who in ("ours", "nib", "sitk"):
            if who == "sitk" and sitk is None:
                continue
            children[who] = run_child(
                f"save_{who}", source, out=os.fspath(out / f"child-{who}.nii.gz")
            )
    above = {who: child["peak"] - child["floor"] for who, child in children.items()}
    others = ", ".join(
        f"{name} +{above[who]:.0f} MiB"
        for who, name in (("nib", "nibabel"), ("sitk", "SimpleITK"))
        if who in above
    )
    rows.append(
        Row(
            "  save lazy .nii.gz → .nii.gz, peak RSS in a fresh process",
            children["ours"]["seconds"],
            f"nib.save(nib.load(p)): +{above['nib']:.0f} MiB",
            children["nib"]["seconds"],
            above["ours"] / raw,
            "(peak-floor)/raw",
            above["ours"],
            note=f"streaming save: ours +{above['ours']:.0f} MiB above the post-import floor, "
            f"{others}, for {raw:.0f} MiB of raw data",
        )
    )
    return rows
