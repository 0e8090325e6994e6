"""Maskers against nilearn: region signals, masking, and many subjects on a cluster.

Generates at run time, in a temporary folder, a BOLD-like int16 series with
``scl_slope`` as ``.nii.gz`` (64×64×36×300 in full size), an atlas of 100
parcels of its brain and the brain mask, then compares, on the same files:

* ``.nifti.regions(atlas)`` with ``NiftiLabelsMasker(atlas).fit_transform``,
* ``.nifti.mask(mask)`` with ``NiftiMasker(mask_img=mask).fit_transform``,
* region signals of 20 subjects opened with ``xr.open_mfdataset`` and
  computed on a ``LocalCluster`` of two worker processes, with a loop of
  nilearn calls in one process.

Times are wall-clock, in one process after all imports, interleaved and best
of ``--repeat`` runs. Peak memory is measured in fresh subprocesses: the
``VmHWM`` of ``/proc/self/status`` after the operation minus the resident
size after the imports (the operation's own peak), for both sides. Every
result is checked against nilearn's; the exit status is 1 if values differ
or a case crashes. Speed and memory targets are reported, never asserted.

Usage::

    python benchmarks/cases/maskers.py            # full size (a few minutes)
    python benchmarks/cases/maskers.py --quick    # small inputs (about 20 s)

The targets are about the full size: on ``--quick`` inputs fixed costs
(dask's thread pool, the cluster's start) dominate and the ratios say little.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array
import nibabel as nib
import numpy as np
import xarray as xr
from _common import best_of, load, report
from nilearn.maskers import NiftiLabelsMasker, NiftiMasker  # type: ignore[import-untyped]
from scipy.spatial import cKDTree

import xarray_nifti  # noqa: F401  (registers the engine and the accessor)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _data

TIME_TARGET = 0.5  # ours / nilearn
MEMORY_TARGET = 0.25  # ours / nilearn, peak above the import floor
ZOOMS = (3.0, 3.0, 3.5)
SLOPE, INTER = 0.5, 10.0
# Peak memory is that of the read chunks in flight: also measured with smaller ones.
SMALL_CHUNKS = "8MiB"


@dataclass(frozen=True)
class Sizes:
    bold: tuple[int, int, int, int]
    parcels: int
    subjects: int
    subject_volumes: int
    repeat: int


FULL = Sizes(bold=(64, 64, 36, 300), parcels=100, subjects=20, subject_volumes=150, repeat=3)
QUICK = Sizes(bold=(32, 32, 18, 40), parcels=20, subjects=4, subject_volumes=20, repeat=1)


# -- inputs ------------------------------------------------------------------------------------
def write_series(path: Path, shape: tuple[int, int, int, int], seed: int) -> Path:
    """A BOLD-like int16 series with scl_slope/scl_inter, written as ``.nii.gz`` by nibabel."""
    header = _data.make_header(shape, np.int16, ZOOMS, tr=2.0)
    plain = path.with_name(path.name.replace(".nii.gz", ".nii"))
    _data.write_nifti(plain, header, _data.bold_volumes(shape, seed))
    img = load(plain)
    scaled = nib.Nifti1Image(np.asanyarray(img.dataobj.get_unscaled()), img.affine, img.header)
    scaled.header.set_slope_inter(SLOPE, INTER)
    nib.save(scaled, path)
    plain.unlink()
    return path


def write_atlas(folder: Path, shape: tuple[int, ...], parcels: int) -> tuple[Path, Path]:
    """An atlas of ``parcels`` Voronoi parcels of the brain, and the brain mask."""
    u, v, w = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape[:3]), indexing="ij")
    brain = (u / 0.74) ** 2 + (v / 0.78) ** 2 + (w / 0.70) ** 2 <= 1.0
    points = np.column_stack([np.nonzero(brain)[n] for n in range(3)])
    rng = np.random.default_rng(7)
    seeds = points[rng.choice(len(points), parcels, replace=False)]
    labels = np.zeros(shape[:3], np.int16)
    labels[brain] = cKDTree(seeds).query(points)[1] + 1
    affine = _data.oblique_las_affine(shape, ZOOMS)
    nib.save(nib.Nifti1Image(labels, affine), folder / "atlas.nii.gz")
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), folder / "mask.nii.gz")
    return folder / "atlas.nii.gz", folder / "mask.nii.gz"


# -- the operations ----------------------------------------------------------------------------
def regions_ours(path: Path, atlas: Path) -> np.ndarray:
    data = xr.open_dataarray(path, engine="nifti", chunks={})
    return np.asarray(data.nifti.regions(atlas).values)


def regions_nilearn(path: Path, atlas: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(NiftiLabelsMasker(str(atlas)).fit_transform(str(path)))


def mask_ours(path: Path, mask: Path) -> np.ndarray:
    data = xr.open_dataarray(path, engine="nifti", chunks={})
    return np.asarray(data.nifti.mask(mask).values)


def mask_nilearn(path: Path, mask: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiMasker(mask_img=str(mask), standardize=None)
        return np.asarray(masker.fit_transform(str(path)))


#: the operations the table compares, by name
OPERATIONS: dict[str, Callable[[Path, Path], np.ndarray]] = {
    "regions_ours": regions_ours,
    "regions_nilearn": regions_nilearn,
    "mask_ours": mask_ours,
    "mask_nilearn": mask_nilearn,
}


def subjects_ours(paths: list[Path], atlas: Path) -> np.ndarray:
    ds = xr.open_mfdataset(paths, engine="nifti", combine="nested", concat_dim="subject", chunks={})
    return np.asarray(ds["data"].nifti.regions(atlas).values)


def subjects_nilearn(paths: list[Path], atlas: Path) -> np.ndarray:
    return np.stack([regions_nilearn(path, atlas) for path in paths])


# -- measuring ---------------------------------------------------------------------------------
# Each side imports only what it needs, so each peak is measured above its own floor.
_CHILD = r"""
import gc, json, sys, time, warnings
op, path, other, chunk_size = sys.argv[1:5]

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

if op.endswith("_ours"):
    import dask, xarray as xr, xarray_nifti
else:
    from nilearn.maskers import NiftiLabelsMasker, NiftiMasker
gc.collect()
try:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
except OSError:
    pass
floor = status("VmRSS")
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if op.endswith("_ours"):
        settings = {"scheduler": "threads"}
        if chunk_size:
            settings["array.chunk-size"] = chunk_size  # chunks={} follows it
        with dask.config.set(settings):
            data = xr.open_dataarray(path, engine="nifti", chunks={})
            if op == "regions_ours":
                data.nifti.regions(other).values
            elif op == "mask_ours":
                data.nifti.mask(other).values
            else:
                raise ValueError(op)
    elif op == "regions_nilearn":
        NiftiLabelsMasker(other).fit_transform(path)
    elif op == "mask_nilearn":
        NiftiMasker(mask_img=other, standardize=None).fit_transform(path)
    else:
        raise ValueError(op)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "floor": floor, "peak": status("VmHWM")}))
"""


def run_child(op: str, path: Path, other: Path, chunk_size: str = "") -> dict[str, float]:
    """Time and memory (MiB: RSS after imports, peak) of ``op`` in a fresh interpreter.

    ``chunk_size`` sets dask's ``array.chunk-size``, which ``chunks={}`` follows.
    """
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, op, str(path), str(other), chunk_size],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"subprocess {op} failed:\n{completed.stderr[-2000:]}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def check(label: str, got: np.ndarray, expected: np.ndarray) -> str | None:
    """ours decodes int16 × slope as float32 (xarray's rule), nibabel as float64."""
    if got.shape != expected.shape:
        return f"{label}: shape {got.shape} != nilearn's {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if error > 1e-6 * scale:
        return f"{label}: max |ours - nilearn| = {error:.3g} > {1e-6 * scale:.3g}"
    return None


def _row(case: str, ours: float, ref: float, target: float, unit: str) -> str:
    ratio = ours / ref
    met = "yes" if ratio <= target else "no"
    return f"| {case} | {ours:.3f} {unit} | {ref:.3f} {unit} | {ratio:.2f}× | ≤ {target}× | {met} |"


def single_file_cases(
    name: str, path: Path, other: Path, repeat: int, rows: list[str], failures: list[str]
) -> None:
    ours_fn, ref_fn = OPERATIONS[f"{name}_ours"], OPERATIONS[f"{name}_nilearn"]
    error = check(name, ours_fn(path, other), ref_fn(path, other))
    if error:
        failures.append(error)
    with dask.config.set(scheduler="threads"):
        times = best_of(
            repeat, {"ours": lambda: ours_fn(path, other), "ref": lambda: ref_fn(path, other)}
        )
    rows.append(_row(f"{name}: time", times["ours"], times["ref"], TIME_TARGET, "s"))
    ref_mem = run_child(f"{name}_nilearn", path, other)
    for chunk_size in ("", SMALL_CHUNKS):
        ours_mem = run_child(f"{name}_ours", path, other, chunk_size)
        chunks = f"chunks={{}} with array.chunk-size={chunk_size}" if chunk_size else "chunks={}"
        rows.append(
            _row(
                f"{name}: peak RSS above imports (fresh process), {chunks}",
                ours_mem["peak"] - ours_mem["floor"],
                ref_mem["peak"] - ref_mem["floor"],
                MEMORY_TARGET,
                "MiB",
            )
        )


def subjects_case(
    sizes: Sizes, folder: Path, atlas: Path, repeat: int, rows: list[str], failures: list[str]
) -> None:
    from distributed import Client, LocalCluster

    shape = (*sizes.bold[:3], sizes.subject_volumes)
    paths = [
        write_series(folder / f"sub-{n:02d}.nii.gz", shape, seed=100 + n)
        for n in range(sizes.subjects)
    ]
    expected = subjects_nilearn(paths, atlas)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    try:
        with Client(cluster):
            error = check("subjects", subjects_ours(paths, atlas), expected)
            if error:
                failures.append(error)
            times = best_of(
                repeat,
                {
                    "ours": lambda: subjects_ours(paths, atlas),
                    "ref": lambda: subjects_nilearn(paths, atlas),
                },
            )
    finally:
        cluster.close()
    case = (
        f"{sizes.subjects} subjects {'×'.join(map(str, shape))}: open_mfdataset on 2 worker "
        "processes vs a nilearn loop"
    )
    rows.append(_row(case, times["ours"], times["ref"], TIME_TARGET, "s"))


def main(argv: list[str] | None = None) -> int:
    """Run every case, print a markdown table, return 1 if a value or a case failed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, for CI (~20 s)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per timing (best kept)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    repeat = args.repeat or sizes.repeat
    rows: list[str] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xarray-nifti-maskers-") as tmp:
        folder = Path(tmp)
        bold = write_series(folder / "bold.nii.gz", sizes.bold, seed=0)
        atlas, brain = write_atlas(folder, sizes.bold, sizes.parcels)
        shape = "×".join(map(str, sizes.bold))
        cases: list[tuple[str, Callable[[], None]]] = [
            (
                f"regions ({sizes.parcels} labels, {shape} int16+slope .nii.gz)",
                lambda: single_file_cases("regions", bold, atlas, repeat, rows, failures),
            ),
            (
                f"mask ({shape} int16+slope .nii.gz)",
                lambda: single_file_cases("mask", bold, brain, repeat, rows, failures),
            ),
            (
                "subjects",
                lambda: subjects_case(sizes, folder, atlas, max(1, repeat - 1), rows, failures),
            ),
        ]
        for case, run in cases:
            rows.append(f"| **{case}** | | | | | |")
            try:
                run()
            except Exception:
                failures.append(f"{case}: crashed\n{traceback.format_exc()}")
                rows.append(f"| {case} | FAILED | | | | no |")
    return report(rows, "nilearn", failures)


if __name__ == "__main__":
    sys.exit(main())
