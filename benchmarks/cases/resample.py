"""Resampling speed against nilearn, with nilearn's values as the oracle.

Generates an oblique sagittal int16 T1 and a scaled int16 BOLD series at run
time, then times ``.nifti.resample_to`` (on data opened in memory and on
dask data opened with ``chunks={}``) and :func:`nilearn.image.resample_img`
on the same files and target grids, interleaved, best of ``--repeat`` runs.
Every result is checked against nilearn's: the script exits with status 1 if
values differ or a case crashes; speed targets are reported, never asserted.

Usage::

    python benchmarks/cases/resample.py            # full size (a few minutes)
    python benchmarks/cases/resample.py --quick    # small inputs (< 20 s)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import dask
import dask.array
import nibabel as nib
import numpy as np
import scipy.ndimage  # noqa: F401
import xarray as xr
from nilearn.image import resample_img  # type: ignore[import-untyped]

import xarray_nifti  # noqa: F401  (registers the engine and the accessor)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import best_of, load, report
from benchmarks import _data

TARGET_RATIO = 1.5
INTERPOLATION = {0: "nearest", 1: "linear", 3: "continuous"}


def _covering_grid(path: Path, zoom: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """An axis-aligned grid of ``zoom`` mm voxels covering the image's field of view."""
    img = load(path)
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in img.shape[:3]], indexing="ij"))
    world = img.affine[:3, :3] @ corners.reshape(3, -1) + img.affine[:3, 3:4]
    low, high = world.min(axis=1), world.max(axis=1)
    target = np.diag([zoom, zoom, zoom, 1.0])
    target[:3, 3] = low
    return target, tuple(int(n) for n in np.ceil((high - low) / zoom) + 1)


def make_inputs(folder: Path, quick: bool) -> list[tuple[str, Path, np.ndarray, tuple[int, ...]]]:
    """The images and their target grids: (label, path, target affine, target shape).

    The content comes from the benchmarks' image generators; the T1 is stored
    as int16 with an oblique sagittal affine, the BOLD series with
    ``scl_slope=0.5``.
    """
    t1_shape = (48, 64, 64) if quick else (96, 128, 128)
    t1_zooms = tuple(zoom * (2 if quick else 1) for zoom in (1.2, 1.0, 1.0))
    t1_path = folder / "t1.nii"
    _data.write_t1_sagittal(t1_path, t1_shape, t1_zooms)

    bold_shape = (32, 32, 18, 20) if quick else (64, 64, 36, 300)
    bold_header = _data.make_header(bold_shape, np.int16, (3.0, 3.0, 3.0), tr=2.0)
    bold_header.set_slope_inter(0.5, 0.0)
    bold_path = folder / "bold.nii"
    _data.write_nifti(bold_path, bold_header, _data.bold_volumes(bold_shape))

    images: list[tuple[str, tuple[int, ...], str, Path, float]] = [
        ("T1", t1_shape, "int16 oblique sagittal", t1_path, 3.0)
    ]
    images.append(("BOLD", bold_shape, "int16, scl_slope 0.5", bold_path, 2.5))
    return [
        (f"{name} {'×'.join(map(str, shape))} {what}", path, *_covering_grid(path, zoom))
        for name, shape, what, path, zoom in images
    ]


def ours(path: Path, target: tuple[np.ndarray, Any], order: int, chunks: Any) -> np.ndarray:
    ds = xr.open_dataset(path, engine="nifti", chunks=chunks)
    return np.asarray(ds.data.nifti.resample_to(target, order=order).values)


def nilearn(path: Path, target: tuple[np.ndarray, Any], order: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = resample_img(
            nib.load(path),
            target_affine=target[0],
            target_shape=target[1],
            interpolation=INTERPOLATION[order],
            clip=False,
            force_resample=True,
            copy_header=True,
        )
    return np.asarray(out.dataobj)


def oracle(path: Path, target: tuple[np.ndarray, Any], order: int) -> np.ndarray:
    """nilearn on the decoded float data: nilearn keeps int16 for linear output."""
    img = load(path)
    as_float = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = resample_img(
            as_float,
            target_affine=target[0],
            target_shape=target[1],
            interpolation=INTERPOLATION[order],
            clip=False,
            force_resample=True,
            copy_header=True,
        )
    return np.asarray(out.dataobj)


def check(label: str, got: np.ndarray, expected: np.ndarray, order: int) -> str | None:
    scale = max(1.0, float(np.abs(expected).max()))
    tolerance = (1e-4 if order == 3 else 1e-5) * scale
    if got.shape != expected.shape:
        return f"{label}: shape {got.shape} != nilearn's {expected.shape}"
    error = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if error > tolerance:
        return f"{label}: max |ours - nilearn| = {error:.3g} > {tolerance:.3g}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run every case, print a markdown table, return 1 if a value or a case failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, for CI (< 20 s)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per timing (best kept)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (2 if args.quick else 3)
    rows: list[str] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xarray-nifti-resample-") as tmp:
        for label, path, affine, shape in make_inputs(Path(tmp), args.quick):
            target = (affine, shape)
            for order in (0, 1, 3):
                case = f"{label} → {'×'.join(map(str, shape))}, order {order}"
                try:
                    expected = oracle(path, target, order)
                    for kind, chunks in (("in memory", None), ("dask", {})):
                        error = check(
                            f"{case} ({kind})", ours(path, target, order, chunks), expected, order
                        )
                        if error:
                            failures.append(error)
                    with dask.config.set(scheduler="threads"):
                        times = best_of(
                            repeat,
                            {
                                "memory": partial(ours, path, target, order, None),
                                "dask": partial(ours, path, target, order, {}),
                                "nilearn": partial(nilearn, path, target, order),
                            },
                        )
                except Exception:
                    failures.append(f"{case}: crashed\n{traceback.format_exc()}")
                    rows.append(f"| {case} | FAILED | | | ≤ {TARGET_RATIO}× | no |")
                    continue
                for kind in ("memory", "dask"):
                    ratio = times[kind] / times["nilearn"]
                    met = "yes" if ratio <= TARGET_RATIO else "no"
                    name = f"{case}, {'chunks=None' if kind == 'memory' else 'chunks={}'}"
                    rows.append(
                        f"| {name} | {times[kind]:.3f} s | {times['nilearn']:.3f} s "
                        f"| {ratio:.2f}× | ≤ {TARGET_RATIO}× | {met} |"
                    )
    return report(rows, "reference (nilearn resample_img)", failures)


if __name__ == "__main__":
    sys.exit(main())
