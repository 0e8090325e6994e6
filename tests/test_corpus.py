"""Every file of the malformed-file corpus gives its documented outcome, within a time limit.

Each case is opened with ``xr.open_dataset(engine="nifti")``, then one voxel
and the whole data are read. An :class:`~corpus.cases.Opens` case must read
values equal to nibabel's (when nibabel can read the file at all) and warn
exactly as documented; a :class:`~corpus.cases.Raises` case must raise the
documented exception type (not a subclass, not a bare numpy/struct error) with
a message naming the file and the field.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from corpus.cases import (
    AFFINE,
    CASES,
    Case,
    Opens,
    Raises,
    case_named,
    quiet_nibabel,
    write_valid,
)
from corpus.table import markdown_table
from xarray_nifti import NiftiFormatError
from xarray_nifti._errors import NiftiHeaderWarning

ROOT = Path(__file__).resolve().parent.parent


def _read(ds: xr.Dataset) -> tuple[Any, np.ndarray]:
    """One voxel, then the whole data."""
    data = ds["data"]
    voxel = data[(0,) * data.ndim].values
    return voxel, data.values


def nibabel_values(path: Path) -> np.ndarray | None:
    """nibabel's (scaled) voxel values, RGB split into a last axis; ``None`` if it cannot."""
    try:
        with quiet_nibabel():
            values = np.asanyarray(nib.load(path).dataobj)
    except Exception:  # nibabel refuses the file: nothing to compare with
        return None
    if values.dtype.names is not None:
        values = np.stack([values[name] for name in values.dtype.names], axis=-1)
    return values


def _check_opens(case: Case, outcome: Opens, path: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with xr.open_dataset(path, engine="nifti") as ds:
            voxel, whole = _read(ds)
            if case.check is not None:
                case.check(ds)
    assert np.array_equal(voxel, whole[(0,) * whole.ndim], equal_nan=True)
    expected = nibabel_values(path)
    if expected is not None:
        assert whole.shape == expected.shape
        np.testing.assert_allclose(whole, expected, rtol=1e-6, equal_nan=True)
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    if outcome.warning is None:
        assert not caught, messages
    else:
        ours = [w for w in caught if issubclass(w.category, outcome.warning)]
        assert ours, messages
        assert all(path.name in str(w.message) for w in ours), messages
        others = [w for w in caught if not issubclass(w.category, NiftiHeaderWarning)]
        assert not others, messages


def _error_of(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except BaseException as err:  # any type: the test checks it is the documented one
        return err
    pytest.fail("no exception was raised")


def _check_raises(case: Case, outcome: Raises, path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if outcome.when == "open":
            error = _error_of(lambda: xr.open_dataset(path, engine="nifti"))
        else:
            ds = xr.open_dataset(path, engine="nifti")
            try:
                if case.after_open is not None:
                    case.after_open(path, ds)
                error = _error_of(lambda: _read(ds))
            finally:
                ds.close()
    assert type(error) is outcome.exception, f"{type(error).__name__}: {error}"
    message = str(error)
    assert path.name in message, message
    assert outcome.field.lower() in message.lower(), message
    others = [w for w in caught if not issubclass(w.category, NiftiHeaderWarning)]
    assert not others, [str(w.message) for w in others]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case: Case, tmp_path: Path) -> None:
    path = case.build(tmp_path)
    if isinstance(case.outcome, Opens):
        assert case.after_open is None, "two-step cases describe read-time errors"
        _check_opens(case, case.outcome, path, tmp_path)
    else:
        _check_raises(case, case.outcome, path)


def test_corpus_size_and_names() -> None:
    assert len(CASES) >= 40
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names), "case names must be unique"
    assert sum(isinstance(case.outcome, Opens) for case in CASES) >= 15
    assert sum(isinstance(case.outcome, Raises) for case in CASES) >= 15
    assert any(case.after_open is not None for case in CASES)


def test_table_lists_every_case() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.corpus.table"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == markdown_table()
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "| case | what is wrong | outcome |"
    assert len(lines) == len(CASES) + 2
    for case, line in zip(CASES, lines[2:], strict=True):
        assert line.startswith(f"| `{case.name}` |"), line
    assert "nibabel 5.4" in markdown_table(nibabel=True)


# -- geometry robustness: degenerate affines open, and say why they cannot map back --------------

DEGENERATE = ["sform-singular-no-qform", "sform-collinear-no-qform"]


def _open_degenerate(name: str, folder: Path) -> xr.Dataset:
    path = case_named(name).build(folder)
    with pytest.warns(NiftiHeaderWarning, match="singular"):
        return xr.open_dataset(path, engine="nifti")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_affine_opens_and_reads(name: str, tmp_path: Path) -> None:
    with _open_degenerate(name, tmp_path) as ds:
        assert np.linalg.matrix_rank(ds.nifti.affine[:3, :3]) < 3
        repr(ds)
        x = ds["x"].values  # world coordinates still compute (forward direction)
        assert np.all(np.isfinite(x))
        np.testing.assert_array_equal(ds["data"].isel(i=1).values, nibabel_values_of(ds)[1])


def nibabel_values_of(ds: xr.Dataset) -> np.ndarray:
    values = nibabel_values(Path(ds["data"].encoding["source"]))
    assert values is not None
    return values


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_affine_world_to_voxel(name: str, tmp_path: Path) -> None:
    with _open_degenerate(name, tmp_path) as ds:
        with pytest.raises(ValueError, match="singular"):
            ds.nifti.world_to_voxel(0.0, 0.0, 0.0)
        with pytest.raises(ValueError, match="singular"):
            ds["data"].nifti.world_to_voxel(np.zeros(3), np.zeros(3), np.zeros(3), round=True)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_affine_sel_nearest(name: str, tmp_path: Path) -> None:
    with _open_degenerate(name, tmp_path) as ds:
        with pytest.raises(ValueError, match="singular"):
            ds.sel(x=10.0, y=-20.0, z=-30.0, method="nearest")
        with pytest.raises(ValueError, match="singular"):
            ds["data"].sel(x=[10.0, 12.0], y=[-20.0, -20.0], z=[-30.0, -26.0], method="nearest")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_affine_resample_to(name: str, tmp_path: Path) -> None:
    target_path = write_valid(tmp_path, "target.nii")
    with _open_degenerate(name, tmp_path) as ds, xr.open_dataset(target_path, engine="nifti") as t:
        with pytest.raises(ValueError, match="singular"):
            ds["data"].nifti.resample_to(t)
        with pytest.raises(ValueError, match="singular"):
            ds.nifti.resample_to((AFFINE, (4, 5, 6)))


@pytest.mark.timeout(20)
def test_singular_sform_falls_back_to_qform_with_a_warning_naming_both(tmp_path: Path) -> None:
    path = case_named("sform-singular").build(tmp_path)
    with pytest.warns(NiftiHeaderWarning) as record:
        ds = xr.open_dataset(path, engine="nifti")
    message = str(record[0].message)
    assert "sform" in message
    assert "qform" in message
    assert path.name in message
    with ds:
        np.testing.assert_allclose(ds.nifti.affine, AFFINE, atol=1e-5)
        i, j, k = ds.nifti.world_to_voxel(*(AFFINE @ [1, 2, 3, 1])[:3], round=True)
        assert (i, j, k) == (1, 2, 3)
        point = AFFINE @ [1, 2, 3, 1]
        value = ds["data"].isel(time=0).sel(x=point[0], y=point[1], z=point[2], method="nearest")
        assert int(value) == int(nibabel_values_of(ds)[1, 2, 3, 0])


# -- no allocation proportional to header dims at open time ----------------------------------

LYING_DIMS = [
    "dims-huge",
    "dims-huge-gzip",
    "nifti2-dims-huge",
    "nifti2-dims-overflow-int64",
    "nifti2-long-time-gzip",
    "ext-size-huge-gzip",
    "vox-offset-past-gzip-data",
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", LYING_DIMS)
def test_open_allocates_nothing_proportional_to_dims(name: str, tmp_path: Path) -> None:
    path = case_named(name).build(tmp_path)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NiftiHeaderWarning)
            with contextlib.suppress(NiftiFormatError):
                xr.open_dataset(path, engine="nifti").close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB allocated while opening {name}"
