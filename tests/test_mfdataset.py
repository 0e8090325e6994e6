"""Many files at once: ``xr.open_mfdataset(paths, engine="nifti", ...)``.

Subjects on one grid stack along a new ``subject`` dimension and runs of one
subject along ``time``; a file on another grid is refused with a message that
shows both grids and points to ``.nifti.resample_to``. The recipe for subjects
on different grids is to resample each onto a template while opening::

    template = xr.open_dataset("tpl.nii.gz", engine="nifti")
    ds = xr.open_mfdataset(
        paths, engine="nifti", combine="nested", concat_dim="subject",
        preprocess=lambda ds: ds.data.nifti.resample_to(template).to_dataset(),
    )

Task graphs stay proportional to the number of chunks (one volume per chunk),
never to the number of voxels.
"""

from __future__ import annotations

import time
from pathlib import Path

import dask
import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from nibabel.processing import resample_from_to

import xarray_nifti  # noqa: F401  (registers the accessor)

SHAPE = (8, 8, 6, 5)
TR = 2.0
N_SUBJECTS = 10
N_MANY = 100


def grid_affine(zoom_i: float = 2.0, shift: float = 0.0) -> np.ndarray:
    affine = np.diag([zoom_i, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-8.0 + shift, -8.0, -9.0]
    return affine


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = TR
    nib.save(img, path)
    return path


def make_subjects(folder: Path, count: int, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(-500, 500, (count, *SHAPE)).astype(np.int16)
    paths = [
        save(folder / f"sub-{n:03d}_task-rest_bold.nii.gz", data[n], grid_affine())
        for n in range(count)
    ]
    return paths, data


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray]:
    """Ten subjects of 8×8×6×5 int16 voxels on one grid."""
    return make_subjects(tmp_path_factory.mktemp("subjects"), N_SUBJECTS)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray]:
    """A hundred small subjects on one grid."""
    return make_subjects(tmp_path_factory.mktemp("many"), N_MANY, seed=1)


def open_subjects(paths: list[Path], **kwargs: object) -> xr.Dataset:
    return xr.open_mfdataset(
        paths, engine="nifti", combine="nested", concat_dim="subject", **kwargs
    )


# -- same grid ------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True])
def test_subjects_stack_along_a_new_dimension(
    subjects: tuple[list[Path], np.ndarray], parallel: bool
) -> None:
    paths, data = subjects
    ds = open_subjects(paths, parallel=parallel)
    assert ds.data.dims == ("subject", "i", "j", "k", "time")
    assert ds.data.shape == (N_SUBJECTS, *SHAPE)
    np.testing.assert_array_equal(ds.data.values, data)
    # The grid survives the concatenation: one index, the subjects' affine.
    np.testing.assert_array_equal(ds.nifti.affine, grid_affine())
    np.testing.assert_array_equal(ds.time.values, np.arange(SHAPE[3]) * TR)
    # Lazy; each small series is one chunk of whole volumes.
    assert ds.data.chunks is not None
    assert ds.data.chunks[4] == (SHAPE[3],)
    assert ds.data.data.npartitions == N_SUBJECTS
    # Per-subject results keep the geometry and save as NIfTI.
    mean = ds.data.mean("subject")
    np.testing.assert_allclose(mean.values, data.mean(axis=0))
    np.testing.assert_array_equal(mean.nifti.affine, grid_affine())


def test_subject_coordinate_from_file_names(subjects: tuple[list[Path], np.ndarray]) -> None:
    paths, data = subjects
    labels = [p.name.split("_")[0] for p in paths]
    ds = open_subjects(paths).assign_coords(subject=labels)
    np.testing.assert_array_equal(ds.data.sel(subject="sub-003").values, data[3])


def test_runs_concatenate_along_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    runs = [rng.integers(0, 100, SHAPE).astype(np.int16) for _ in range(3)]
    paths = [
        save(tmp_path / f"sub-01_task-rest_run-{n + 1}_bold.nii.gz", run, grid_affine())
        for n, run in enumerate(runs)
    ]
    ds = xr.open_mfdataset(paths, engine="nifti", combine="nested", concat_dim="time")
    assert ds.data.dims == ("i", "j", "k", "time")
    np.testing.assert_array_equal(ds.data.values, np.concatenate(runs, axis=-1))
    # Each run's clock starts at 0 s; the runs follow each other along time.
    np.testing.assert_array_equal(ds.time.values, np.tile(np.arange(SHAPE[3]) * TR, 3))
    np.testing.assert_array_equal(ds.nifti.affine, grid_affine())
    np.testing.assert_allclose(ds.data.mean("time").values, np.concatenate(runs, -1).mean(-1))


# -- different grids ------------------------------------------------------------------------


@pytest.fixture
def odd_subject(tmp_path: Path, subjects: tuple[list[Path], np.ndarray]) -> Path:
    """A subject whose voxels are 2.5 mm along i instead of 2 mm."""
    _, data = subjects
    return save(tmp_path / "sub-odd_task-rest_bold.nii.gz", data[0], grid_affine(zoom_i=2.5))


@pytest.mark.parametrize("concat_dim", ["subject", "time"])
@pytest.mark.filterwarnings("ignore:In a future version of xarray the default value for join")
def test_different_grid_is_refused_with_both_grids(
    subjects: tuple[list[Path], np.ndarray], odd_subject: Path, concat_dim: str
) -> None:
    paths, _ = subjects
    with pytest.raises(ValueError, match="different voxel grids") as info:
        xr.open_mfdataset(
            [*paths[:3], odd_subject], engine="nifti", combine="nested", concat_dim=concat_dim
        )
    message = str(info.value)
    assert "resample_to" in message
    assert "2.5" in message  # the odd grid's affine
    assert "-8." in message  # the first grid's affine
    assert "(i=8, j=8, k=6)" in message


@pytest.mark.filterwarnings("ignore:In a future version of xarray the default value for join")
def test_different_shape_is_refused(
    subjects: tuple[list[Path], np.ndarray], tmp_path: Path
) -> None:
    paths, data = subjects
    bigger = save(
        tmp_path / "sub-big_bold.nii.gz",
        np.pad(data[0], ((0, 1), (0, 0), (0, 0), (0, 0))),
        grid_affine(),
    )
    with pytest.raises(ValueError, match="different voxel grids") as info:
        open_subjects([paths[0], bigger])
    assert "(i=9, j=8, k=6)" in str(info.value)
    assert "resample_to" in str(info.value)


@pytest.mark.filterwarnings("ignore:In a future version of xarray the default value for join")
def test_different_grid_error_names_the_file(
    subjects: tuple[list[Path], np.ndarray], odd_subject: Path
) -> None:
    paths, _ = subjects
    with pytest.raises(ValueError, match="different voxel grids") as info:
        open_subjects([*paths[:3], odd_subject])
    assert odd_subject.name in str(info.value)
    assert paths[0].name in str(info.value)


def test_recipe_resample_every_subject_to_a_template(
    subjects: tuple[list[Path], np.ndarray], odd_subject: Path
) -> None:
    paths, data = subjects
    template = xr.open_dataset(paths[0], engine="nifti")
    ds = open_subjects(
        [*paths[:2], odd_subject],
        preprocess=lambda ds: ds.data.nifti.resample_to(template).to_dataset(),
    )
    assert ds.data.shape == (3, *SHAPE)
    np.testing.assert_array_equal(ds.nifti.affine, grid_affine())
    values = ds.data.values
    # Subjects already on the template grid come through unchanged ...
    np.testing.assert_allclose(values[:2], data[:2], atol=1e-3)
    # ... and the odd one equals nibabel's resampling onto the template.
    odd = nib.load(odd_subject)
    for t in (0, SHAPE[3] - 1):
        expected = resample_from_to(
            nib.Nifti1Image(np.asarray(odd.dataobj[..., t], dtype=np.float64), odd.affine),
            (SHAPE[:3], grid_affine()),
            order=1,
        )
        np.testing.assert_allclose(values[2, ..., t], expected.get_fdata(), atol=1e-3)


def test_recipe_with_an_affine_and_shape_template(
    subjects: tuple[list[Path], np.ndarray], odd_subject: Path
) -> None:
    paths, _ = subjects
    target = (np.diag([4.0, 4.0, 4.0, 1.0]), (4, 4, 4))
    ds = open_subjects(
        [paths[0], odd_subject],
        preprocess=lambda ds: ds.data.nifti.resample_to(target).to_dataset(),
    )
    assert ds.data.shape == (2, 4, 4, 4, SHAPE[3])
    np.testing.assert_array_equal(ds.nifti.affine, target[0])


# -- graph size and speed for a hundred files ----------------------------------------------


def graph_size(array: xr.DataArray) -> tuple[int, int]:
    """Tasks in the graph as built, and after dask's optimisation (what runs)."""
    (optimized,) = dask.optimize(array.data)
    return len(array.data.__dask_graph__()), len(optimized.__dask_graph__())


def test_graph_size_is_proportional_to_files_not_voxels(
    many: tuple[list[Path], np.ndarray],
) -> None:
    paths, data = many
    sizes = {}
    for count in (N_MANY // 2, N_MANY):
        ds = open_subjects(paths[:count])
        sizes[count] = graph_size(ds.data.mean("subject"))
    raw, optimized = sizes[N_MANY]
    voxels_per_file = int(np.prod(SHAPE))
    print(f"\nmean over {N_MANY} subjects: {raw} tasks ({optimized} after optimisation)")
    # A few tasks per file (read, expand, concatenate, reduce), < 20 per file once fused.
    assert raw < 6 * max(ds.data.data.npartitions, N_MANY)
    assert optimized < 20 * N_MANY
    assert raw / N_MANY < voxels_per_file / 50  # nothing per voxel
    # Linear in the number of files: doubling the files at most doubles the tasks (+ slack).
    assert sizes[N_MANY][0] <= 2 * sizes[N_MANY // 2][0] + 20
    ds = open_subjects(paths)
    np.testing.assert_allclose(ds.data.mean("subject").values, data.mean(axis=0), rtol=1e-6)


def test_hundred_files_temporal_mean_timing(many: tuple[list[Path], np.ndarray]) -> None:
    paths, data = many
    start = time.perf_counter()
    ds = open_subjects(paths)
    opened = time.perf_counter()
    mean = ds.data.mean("time")
    raw, optimized = graph_size(mean)
    values = mean.values
    done = time.perf_counter()
    np.testing.assert_allclose(values, data.mean(axis=-1), rtol=1e-6)
    print(
        f"\n{N_MANY} files of {SHAPE} int16 (.nii.gz): open_mfdataset {opened - start:.2f} s, "
        f"temporal mean {done - opened:.2f} s, total {done - start:.2f} s; graph {raw} tasks "
        f"({optimized} after optimisation, {ds.data.data.npartitions} chunks)"
    )
    assert raw <= 7 * N_MANY  # a few tasks per file, however many volumes it holds
    assert optimized < 20 * N_MANY
