"""Helpers shared by the tests: nibabel's real files, generated grids, strategies, comparisons.

Imported as ``from helpers import ...`` (``tests/`` is on ``sys.path`` under pytest);
fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import nibabel as nib
import numpy as np
import xarray as xr
from hypothesis import strategies as st

from xarray_nifti import NiftiGeometry, VoxelAffineIndex

NIBABEL_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"


def oblique_affine(seed: int = 0) -> np.ndarray:
    """A rotated, anisotropic, translated affine (no axis aligned with the world)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag(rng.uniform(0.5, 3.0, size=3))
    affine[:3, 3] = rng.uniform(-100, 100, size=3)
    return affine


# -- geometry helpers (used by test_affine/transform/index/reorient/geometry_props) --


def grid_dataset(
    affine: np.ndarray,
    shape: tuple[int, ...],
    *,
    data: np.ndarray | None = None,
    chunks: int | None = 2,
    sform: np.ndarray | None = None,
    qform: np.ndarray | None = None,
    sform_code: int = 1,
    qform_code: int = 1,
) -> xr.Dataset:
    """A Dataset on a NIfTI grid built directly (no file): dims i, j, k (+ time).

    ``shape`` has 3 (or 4, with ``time``) entries; ``data`` defaults to
    ``arange`` so every voxel has a distinct value; ``chunks=None`` keeps
    numpy data, otherwise the data is a dask array.
    """
    if data is None:
        data = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    geometry = NiftiGeometry(
        affine,
        (shape[0], shape[1], shape[2]),
        sform=affine if sform is None else sform,
        qform=affine if qform is None else qform,
        sform_code=sform_code,
        qform_code=qform_code,
    )
    dims = ("i", "j", "k", "time")[: len(shape)]
    values = data if chunks is None else da.from_array(data, chunks=chunks)
    coords = xr.Coordinates.from_xindex(VoxelAffineIndex.from_geometry(geometry))
    ds = xr.Dataset({"data": (dims, values)}, coords=coords)
    if len(shape) > 3:
        ds = ds.assign_coords(time=np.arange(shape[3], dtype=np.float64) * 2.0)
    return ds


@st.composite
def affines(draw: st.DrawFn, *, oblique: bool = True) -> np.ndarray:
    """Random voxel→world affines: rotated (or not), permuted, flipped, anisotropic."""
    angle = st.one_of(st.just(0.0), st.floats(-np.pi, np.pi, allow_nan=False))
    rotation = np.eye(3)
    if oblique:
        for axis in range(3):
            theta = draw(angle)
            c, s = np.cos(theta), np.sin(theta)
            r = np.eye(3)
            a, b = [n for n in range(3) if n != axis]
            r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
            rotation = rotation @ r
    perm = draw(st.permutations([0, 1, 2]))
    signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3))
    zooms = draw(st.lists(st.floats(0.5, 4.0), min_size=3, max_size=3))
    flip_perm = np.eye(3)[:, list(perm)] * np.array(signs)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ flip_perm @ np.diag(zooms)
    affine[:3, 3] = draw(st.lists(st.floats(-100.0, 100.0), min_size=3, max_size=3))
    return affine


def spatial_shapes(max_size: int = 6) -> st.SearchStrategy[tuple[int, int, int]]:
    """Random small 3-D shapes."""
    side = st.integers(1, max_size)
    return st.tuples(side, side, side)


# -- comparing NIfTI files with nibabel as the oracle (used by the writer tests) --------------


def nifti_differences(expected: object, actual: object, *, layout: bool = False) -> list[str]:
    """What differs between two NIfTI images (paths or nibabel images), read by nibabel.

    Compares every header field (``vox_offset`` only with ``layout=True``;
    ``magic`` only when both are single files or both pairs), the stored
    dtype, the scaling, the raw voxel bits and the extensions.
    """
    a = nib.load(expected) if isinstance(expected, str | os.PathLike) else expected
    b = nib.load(actual) if isinstance(actual, str | os.PathLike) else actual
    ha, hb = a.header, b.header
    differences = []
    if type(ha) is not type(hb) and {type(ha), type(hb)} not in (
        {nib.Nifti1Header, nib.nifti1.Nifti1PairHeader},
        {nib.Nifti2Header, nib.nifti2.Nifti2PairHeader},
    ):
        differences.append(f"header class {type(ha).__name__} != {type(hb).__name__}")
    skip = {"scl_slope", "scl_inter"}
    if not layout:
        skip.add("vox_offset")
    if type(ha) is not type(hb):
        skip.add("magic")
    for field in ha:
        if field in skip or field not in hb:
            continue
        va, vb = np.asarray(ha[field]), np.asarray(hb[field])
        if va.dtype.kind == "f":
            same = np.array_equal(va.astype(float), vb.astype(float), equal_nan=True)
        else:
            same = np.array_equal(va, vb)
        if not same:
            differences.append(f"{field}: {va!r} != {vb!r}")
    if a.get_data_dtype() != b.get_data_dtype():
        differences.append(f"dtype {a.get_data_dtype()} != {b.get_data_dtype()}")
    for name in ("slope", "inter"):
        sa, sb = getattr(a.dataobj, name), getattr(b.dataobj, name)
        if not np.array_equal(np.float64(sa), np.float64(sb), equal_nan=True):
            differences.append(f"{name} {sa} != {sb}")
    raw_a = np.asanyarray(a.dataobj.get_unscaled())
    raw_b = np.asanyarray(b.dataobj.get_unscaled())
    if raw_a.shape != raw_b.shape or raw_a.dtype != raw_b.dtype:
        differences.append(f"raw data {raw_a.shape} {raw_a.dtype} != {raw_b.shape} {raw_b.dtype}")
    elif raw_a.tobytes() != raw_b.tobytes():
        differences.append("raw voxel bits differ")
    ext_a = [(e.get_code(), e.content) for e in getattr(ha, "extensions", [])]
    ext_b = [(e.get_code(), e.content) for e in getattr(hb, "extensions", [])]
    if ext_a != ext_b:
        differences.append(f"extensions {ext_a!r} != {ext_b!r}")
    return differences


def run_in_threads(worker: Callable[[int], None], count: int = 8) -> None:
    """Run ``worker(seed)`` for ``seed`` in ``range(count)`` at once; re-raise the first failure."""
    errors: list[BaseException] = []

    def guarded(seed: int) -> None:
        try:
            worker(seed)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(seed,)) for seed in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def raising_scheduler(*args: Any, **kwargs: Any) -> Any:
    """A dask scheduler for ``dask.config.set(scheduler=...)`` that fails on any compute."""
    raise AssertionError("something was computed")


@contextlib.contextmanager
def process_cluster(n_workers: int = 2) -> Iterator[Any]:
    """A client of a real ``LocalCluster`` of single-threaded worker processes."""
    import distributed

    # dashboard_address=None still serves the scheduler's HTTP routes on :8787, which
    # clashes between pytest-xdist workers: ":0" picks a free port.
    cluster = distributed.LocalCluster(
        n_workers=n_workers, processes=True, threads_per_worker=1, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
