"""``.nifti.regions`` against nilearn's ``NiftiLabelsMasker`` on the same images."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import dask
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nilearn import datasets
from nilearn.maskers import NiftiLabelsMasker
from scipy import ndimage

import xarray_nifti
from helpers import affines, oblique_affine, spatial_shapes
from xarray_nifti.regions import LabelsResamplingWarning

SHAPE = (10, 9, 8, 7)
STRATEGIES = ["mean", "median", "sum", "standard_deviation", "variance", "minimum", "maximum"]
#: reduce= aliases of nilearn's strategy names
ALIASES = {"standard_deviation": "std"}


def _raise_on_compute(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("dask computed something")


def nilearn_signals(img: Any, labels_img: Any, strategy: str = "mean") -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiLabelsMasker(labels_img, strategy=strategy)
        return np.asarray(masker.fit_transform(img))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A float32 and a scaled int16 series on one oblique grid, and a 5-label atlas."""
    folder = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(2)
    affine = oblique_affine(5)
    values = rng.normal(100.0, 20.0, SHAPE).astype(np.float32)
    nib.save(nib.Nifti1Image(values, affine), folder / "float.nii.gz")
    scaled = nib.Nifti1Image(rng.integers(-2000, 2000, SHAPE).astype(np.int16), affine)
    scaled.header.set_slope_inter(0.5, 3.0)
    nib.save(scaled, folder / "scaled.nii.gz")
    atlas = rng.choice([0, 0, 1, 2, 5, 7, 40], size=SHAPE[:3]).astype(np.int16)
    nib.save(nib.Nifti1Image(atlas, affine), folder / "atlas.nii")
    return {"float": folder / "float.nii.gz", "scaled": folder / "scaled.nii.gz",
            "atlas": folder / "atlas.nii"}  # fmt: skip


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("chunks", [None, {}])
@pytest.mark.parametrize("kind", ["dataarray", "dataset"])
def test_every_reduction_equals_nilearn(
    files: dict[str, Path], strategy: str, chunks: Any, kind: str
) -> None:
    ds = xr.open_dataset(files["float"], engine="nifti", chunks=chunks)
    obj = ds if kind == "dataset" else ds["data"]
    out = obj.nifti.regions(files["atlas"], reduce=ALIASES.get(strategy, strategy))
    signals = out if kind == "dataarray" else out["data"]
    expected = nilearn_signals(nib.load(files["float"]), nib.load(files["atlas"]), strategy)
    assert signals.dims == ("time", "region")
    assert signals["region"].values.tolist() == [1, 2, 5, 7, 40]
    assert signals.dtype == expected.dtype == np.float32
    assert isinstance(signals.data, np.ndarray) == (chunks is None)
    np.testing.assert_allclose(signals.values, expected, rtol=1e-6)


@pytest.mark.parametrize("strategy", ["mean", "standard_deviation", "maximum"])
def test_scaled_integers(files: dict[str, Path], strategy: str) -> None:
    # xarray decodes int16 × float32 slope as float32, nibabel as float64: equal in float32
    data = xr.open_dataarray(files["scaled"], engine="nifti", chunks={})
    out = data.nifti.regions(nib.load(files["atlas"]), reduce=ALIASES.get(strategy, strategy))
    expected = nilearn_signals(nib.load(files["scaled"]), nib.load(files["atlas"]), strategy)
    np.testing.assert_allclose(out.values, expected, rtol=2e-6)


def test_raw_integers_give_float64(tmp_path: Path) -> None:
    raw = np.arange(4 * 4 * 4 * 3, dtype=np.int16).reshape(4, 4, 4, 3)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), tmp_path / "raw.nii")
    atlas = nib.Nifti1Image(np.repeat([0, 1, 2, 3], 16).reshape(4, 4, 4).astype("uint8"), np.eye(4))
    out = xr.open_dataarray(tmp_path / "raw.nii", engine="nifti").nifti.regions(atlas)
    expected = nilearn_signals(tmp_path / "raw.nii", atlas)
    assert out.dtype == expected.dtype == np.float64
    np.testing.assert_array_equal(out.values, expected)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    affine=affines(),
    shape=spatial_shapes(5),
    seed=st.integers(0, 2**16),
    strategy=st.sampled_from(STRATEGIES),
    chunked=st.booleans(),
)
def test_reductions_equal_scipy_ndimage_on_any_grid(
    affine: np.ndarray, shape: tuple[int, int, int], seed: int, strategy: str, chunked: bool
) -> None:
    # nilearn reduces each volume with scipy.ndimage.<strategy>(labels=..., index=...)
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(*shape, 3))
    atlas = rng.integers(0, 4, shape)
    atlas.flat[0] = 3
    data = xarray_nifti.from_nibabel(nib.Nifti1Image(values, affine))["data"]
    if chunked:
        data = data.chunk(time=2)
    labels = xarray_nifti.from_nibabel(nib.Nifti1Image(atlas.astype(np.int16), affine))
    out = data.nifti.regions(labels, reduce=ALIASES.get(strategy, strategy))
    present = np.unique(atlas[atlas > 0])
    reduce = getattr(ndimage, strategy)
    expected = np.array([reduce(values[..., t], labels=atlas, index=present) for t in range(3)])
    assert out["region"].values.tolist() == present.tolist()
    np.testing.assert_allclose(out.values, expected, rtol=1e-12, atol=1e-12)


def test_transposed_data_give_the_same_signals(files: dict[str, Path]) -> None:
    data = xr.open_dataarray(files["float"], engine="nifti", chunks={})
    expected = data.nifti.regions(files["atlas"])
    out = data.transpose("k", "time", "j", "i").nifti.regions(files["atlas"])
    xr.testing.assert_allclose(out, expected)


def test_atlas_on_another_grid_is_resampled_like_nilearn(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(6, 6, 6, 4)).astype(np.float32)
    img = nib.Nifti1Image(values, np.diag([2.0, 2.0, 2.0, 1.0]))
    fine = np.zeros((12, 12, 12), np.int16)
    fine[:6], fine[6:] = 1, 2
    fine[:, :4] = 3
    fine[1, 1, 1] = 7  # one odd voxel: no voxel centre of the data samples it
    atlas = nib.Nifti1Image(fine, np.eye(4))
    data = xarray_nifti.from_nibabel(img)["data"]
    with pytest.warns(LabelsResamplingWarning, match=r"labels \[7\] vanished"):
        out = data.nifti.regions(atlas)
    expected = nilearn_signals(img, atlas)
    assert out["region"].values.tolist() == [1, 2, 3]
    np.testing.assert_allclose(out.values, expected, rtol=1e-6)


def test_names_from_a_mapping_a_series_or_a_lookup_table(files: dict[str, Path]) -> None:
    data = xr.open_dataarray(files["float"], engine="nifti")
    names = {0: "background", 1: "one", 2: "two", 5: "five", 7: "seven", 40: "forty", 99: "x"}
    lut = pd.DataFrame({"index": list(names), "name": list(names.values())})
    expected = ["one", "two", "five", "seven", "forty"]
    for given_names in (names, pd.Series(names), lut):
        out = data.nifti.regions(files["atlas"], names=given_names)
        assert out["name"].values.tolist() == expected
    with pytest.raises(ValueError, match=r"no entry for the labels \[40\]"):
        data.nifti.regions(files["atlas"], names={1: "a", 2: "b", 5: "c", 7: "d"})
    with pytest.raises(ValueError, match=r"'index'.*'name'"):
        data.nifti.regions(files["atlas"], names=lut.rename(columns={"name": "label"}))
    with pytest.raises(TypeError, match="names must be a mapping"):
        data.nifti.regions(files["atlas"], names=["a", "b"])


def test_bad_atlases_and_arguments(files: dict[str, Path]) -> None:
    data = xr.open_dataarray(files["float"], engine="nifti")
    affine = nib.load(files["atlas"]).affine
    halves = nib.Nifti1Image(np.full(SHAPE[:3], 1.5, np.float32), affine)
    with pytest.raises(ValueError, match=r"not whole numbers \(1\.5"):
        data.nifti.regions(halves)
    empty = nib.Nifti1Image(np.zeros(SHAPE[:3], np.int16), affine)
    with pytest.raises(ValueError, match="no labelled voxel"):
        data.nifti.regions(empty)
    far = affine.copy()
    far[:3, 3] += 1000.0
    away = nib.Nifti1Image(np.ones(SHAPE[:3], np.int16), far)
    with (
        pytest.warns(LabelsResamplingWarning, match=r"\[1\] vanished"),
        pytest.raises(ValueError, match="no labelled voxel"),
    ):
        data.nifti.regions(away)
    with pytest.raises(ValueError, match="reduce must be one of"):
        data.nifti.regions(files["atlas"], reduce="mode")
    with pytest.raises(ValueError, match="labels must be a 3-D image"):
        data.nifti.regions(data)


def test_whole_numbers_in_a_float_atlas_are_labels(files: dict[str, Path]) -> None:
    data = xr.open_dataarray(files["float"], engine="nifti")
    atlas = nib.load(files["atlas"])
    as_float = nib.Nifti1Image(np.asanyarray(atlas.dataobj).astype(np.float32), atlas.affine)
    xr.testing.assert_identical(data.nifti.regions(as_float), data.nifti.regions(atlas))


def test_regions_stay_lazy(files: dict[str, Path]) -> None:
    data = xr.open_dataarray(files["float"], engine="nifti", chunks={}).chunk(time=3)
    with dask.config.set(scheduler=_raise_on_compute):
        out = data.nifti.regions(files["atlas"], reduce="median")
    assert out.data.chunks[0] == (3, 3, 1)
    expected = nilearn_signals(nib.load(files["float"]), nib.load(files["atlas"]), "median")
    np.testing.assert_allclose(out.values, expected, rtol=1e-6)


def test_mni152_template_over_a_slab_atlas() -> None:
    # as saved to disk: the in-memory template holds floats that its uint8 header quantises
    template = nib.Nifti1Image.from_bytes(datasets.load_mni152_template(resolution=2).to_bytes())
    brain = datasets.load_mni152_brain_mask(resolution=2)
    inside = np.asanyarray(brain.dataobj) > 0
    slabs = np.where(inside, 1 + np.arange(inside.shape[2]) // 10, 0).astype(np.int16)
    atlas = nib.Nifti1Image(slabs, brain.affine)
    data = xarray_nifti.from_nibabel(template)["data"].chunk({"k": 32})
    for strategy in ("mean", "maximum"):
        out = data.nifti.regions(atlas, reduce=strategy)
        assert out.dims == ("region",)
        expected = nilearn_signals(template, atlas, strategy)
        np.testing.assert_allclose(out.values, np.ravel(expected), rtol=1e-6)


@pytest.mark.timeout(180)
def test_regions_and_mask_on_a_cluster_of_processes(
    client: Any,
    files: dict[str, Path],
) -> None:
    data = xr.open_dataarray(files["scaled"], engine="nifti", chunks={}).chunk(time=2)
    signals = data.nifti.regions(files["atlas"], reduce="mean")
    masked = data.nifti.mask(xr.open_dataarray(files["atlas"], engine="nifti") > 0)
    computed = client.compute([signals.data, masked.nifti.unmask().data], sync=True)
    expected = nilearn_signals(nib.load(files["scaled"]), nib.load(files["atlas"]))
    np.testing.assert_allclose(computed[0], expected, rtol=2e-6)
    inside = nib.load(files["atlas"]).get_fdata() > 0
    np.testing.assert_allclose(
        computed[1],
        np.where(inside[..., None], nib.load(files["scaled"]).get_fdata(), 0),
        rtol=2e-6,
    )
