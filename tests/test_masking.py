"""``.nifti.mask`` / ``.nifti.unmask`` against nilearn's ``NiftiMasker`` on the same images."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import dask
import nibabel as nib
import numpy as np
import pytest
import sklearn.preprocessing as sklearn_preprocessing
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nilearn import datasets
from nilearn.maskers import NiftiMasker

import xarray_nifti
from helpers import affines, oblique_affine, spatial_shapes

SHAPE = (9, 8, 7, 6)


def _raise_on_compute(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("dask computed something")


def nilearn_masker(mask_img: Any) -> NiftiMasker:
    return NiftiMasker(mask_img=mask_img, standardize=None)


def nilearn_values(img: Any, mask_img: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(nilearn_masker(mask_img).fit_transform(img))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A scaled int16 4-D series on an oblique grid, and a random binary mask file."""
    folder = tmp_path_factory.mktemp("masking")
    rng = np.random.default_rng(1)
    raw = rng.integers(-3000, 3000, SHAPE).astype(np.int16)
    img = nib.Nifti1Image(raw, oblique_affine(3))
    img.header.set_slope_inter(0.25, 10.0)
    nib.save(img, folder / "bold.nii.gz")
    selected = rng.random(SHAPE[:3]) > 0.4
    nib.save(nib.Nifti1Image(selected.astype(np.uint8), oblique_affine(3)), folder / "mask.nii")
    return folder / "bold.nii.gz", folder / "mask.nii"


def open_image(path: Path, chunks: Any, kind: str) -> Any:
    ds = xr.open_dataset(path, engine="nifti", chunks=chunks)
    return ds if kind == "dataset" else ds["data"]


@pytest.mark.parametrize("chunks", [None, {}])
@pytest.mark.parametrize("kind", ["dataarray", "dataset"])
@pytest.mark.parametrize("mask_kind", ["path", "nibabel", "xarray"])
def test_mask_equals_nilearn(
    pair: tuple[Path, Path], chunks: Any, kind: str, mask_kind: str
) -> None:
    bold, mask_path = pair
    mask: Any = {
        "path": mask_path,
        "nibabel": nib.load(mask_path),
        "xarray": xr.open_dataarray(mask_path, engine="nifti"),
    }[mask_kind]
    out = open_image(bold, chunks, kind).nifti.mask(mask)
    array = out if kind == "dataarray" else out["data"]
    expected = nilearn_values(nib.load(bold), nib.load(mask_path))
    assert array.dims == ("time", "voxel")
    np.testing.assert_allclose(array.values, expected, rtol=1e-6)
    # the dtype is the data's (xarray decodes int16 × float32 slope to float32)
    assert array.dtype == np.float32
    assert isinstance(array.data, np.ndarray) == (chunks is None)


def test_voxel_coordinates_match_nibabel(pair: tuple[Path, Path]) -> None:
    bold, mask_path = pair
    out = xr.open_dataarray(bold, engine="nifti").nifti.mask(mask_path)
    selected = nib.load(mask_path).get_fdata() > 0
    i, j, k = np.nonzero(selected)
    assert [out[n].values.tolist() for n in "ijk"] == [i.tolist(), j.tolist(), k.tolist()]
    world = nib.affines.apply_affine(nib.load(bold).affine, np.column_stack([i, j, k]))
    np.testing.assert_allclose(np.column_stack([out[n].values for n in "xyz"]), world, atol=1e-4)


def test_raw_integers_keep_their_dtype(tmp_path: Path) -> None:
    raw = np.arange(2 * 3 * 4 * 2, dtype=np.int16).reshape(2, 3, 4, 2)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), tmp_path / "raw.nii")
    selected = np.zeros((2, 3, 4), np.uint8)
    selected[1, 2, :2] = 1
    mask_img = nib.Nifti1Image(selected, np.eye(4))
    out = xr.open_dataarray(tmp_path / "raw.nii", engine="nifti").nifti.mask(mask_img)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out.values, nilearn_values(tmp_path / "raw.nii", mask_img))


@pytest.mark.parametrize("order", [("time", "k", "i", "j"), ("j", "time", "k", "i")])
def test_voxel_order_is_the_grids_not_the_dims(pair: tuple[Path, Path], order: Any) -> None:
    bold, mask_path = pair
    data = xr.open_dataarray(bold, engine="nifti", chunks={})
    transposed = data.transpose(*order).nifti.mask(mask_path)
    xr.testing.assert_identical(transposed, data.nifti.mask(mask_path))


ALL_AXCODES = [
    "".join(pair[flip] for pair, flip in zip(axes, flips, strict=True))
    for axes in itertools.permutations([("R", "L"), ("A", "P"), ("S", "I")])
    for flips in itertools.product((0, 1), repeat=3)
]


@pytest.mark.parametrize("chunks", [None, {}])
@pytest.mark.parametrize("codes", ALL_AXCODES)
def test_after_reorientation_order_follows_the_new_grid(
    pair: tuple[Path, Path], codes: str, chunks: Any
) -> None:
    bold, mask_path = pair
    data = xr.open_dataarray(bold, engine="nifti", chunks=chunks).nifti.reorient(codes)
    mask = xr.open_dataarray(mask_path, engine="nifti").nifti.reorient(codes)
    out = data.nifti.mask(mask)
    # nilearn on the same reoriented images, written by nibabel
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(nib.load(bold).affine),
        nib.orientations.axcodes2ornt(tuple(codes)),
    )
    img = nib.load(bold).as_reoriented(ornt)
    mask_img = nib.load(mask_path).as_reoriented(ornt)
    np.testing.assert_allclose(out.values, nilearn_values(img, mask_img), rtol=1e-6)


def test_mask_on_a_different_grid_is_refused(pair: tuple[Path, Path]) -> None:
    bold, mask_path = pair
    shifted = nib.load(mask_path)
    affine = shifted.affine.copy()
    affine[:3, 3] += 5.0
    other = nib.Nifti1Image(np.asanyarray(shifted.dataobj), affine)
    with pytest.raises(ValueError, match=r"mask is not on the data's voxel grid.*resample_to"):
        xr.open_dataarray(bold, engine="nifti").nifti.mask(other)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (lambda s: s.astype(np.int16) * 3, "must be binary.*0, 3"),
        (lambda s: np.zeros(s.shape, np.uint8), "mask is empty"),
        (lambda s: np.where(s, 1.0, np.nan), "must be binary"),
    ],
)
def test_bad_masks(pair: tuple[Path, Path], values: Any, match: str) -> None:
    bold, mask_path = pair
    selected = nib.load(mask_path).get_fdata() > 0
    bad = nib.Nifti1Image(values(selected), nib.load(mask_path).affine)
    with pytest.raises(ValueError, match=match):
        xr.open_dataarray(bold, engine="nifti").nifti.mask(bad)


def test_mask_type_and_shape_errors(pair: tuple[Path, Path]) -> None:
    bold, mask_path = pair
    data = xr.open_dataarray(bold, engine="nifti")
    with pytest.raises(TypeError, match="mask must be a DataArray"):
        data.nifti.mask(np.ones(SHAPE[:3], bool))
    with pytest.raises(ValueError, match=r"mask must be a 3-D image.*isel"):
        data.nifti.mask(data > 0)
    with pytest.raises(ValueError, match="all three spatial dims"):
        data.isel(k=0).nifti.mask(mask_path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(affine=affines(), shape=spatial_shapes(5), seed=st.integers(0, 2**16), chunked=st.booleans())
def test_mask_and_unmask_equal_nilearn_on_any_grid(
    affine: np.ndarray, shape: tuple[int, int, int], seed: int, chunked: bool
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(*shape, 3)).astype(np.float32)
    selected = rng.random(shape) > 0.5
    selected.flat[0] = True
    img = nib.Nifti1Image(values, affine)
    mask_img = nib.Nifti1Image(selected.astype(np.uint8), affine)
    data = xarray_nifti.from_nibabel(img)["data"]
    if chunked:
        data = data.chunk(time=2)
    masked = data.nifti.mask(mask_img)
    expected = values[selected].T  # nilearn's definition: data[mask]
    np.testing.assert_array_equal(masked.values, expected)
    back = masked.nifti.unmask()
    np.testing.assert_array_equal(
        back.transpose("i", "j", "k", "time").values, np.where(selected[..., None], values, 0)
    )
    np.testing.assert_allclose(back.nifti.affine, data.nifti.affine, atol=1e-6)


@pytest.mark.parametrize("chunks", [None, {}])
def test_unmask_equals_nilearn_inverse_transform(pair: tuple[Path, Path], chunks: Any) -> None:
    bold, mask_path = pair
    data = xr.open_dataarray(bold, engine="nifti", chunks=chunks)
    masked = data.nifti.mask(mask_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = nilearn_masker(nib.load(mask_path)).fit()
        expected = masker.inverse_transform(masked.values).get_fdata()
    back = masked.nifti.unmask()
    assert back.dims == ("i", "j", "k", "time")
    assert isinstance(back.data, np.ndarray) == (chunks is None)
    np.testing.assert_array_equal(back.values, expected)
    np.testing.assert_allclose(back.nifti.affine, nib.load(bold).affine, atol=1e-5)
    xr.testing.assert_identical(back["time"], data["time"])
    # same grid as the source: combines with it
    assert (back - data).sizes == data.sizes


def test_unmask_fill_value_and_dtype(pair: tuple[Path, Path]) -> None:
    bold, mask_path = pair
    masked = xr.open_dataarray(bold, engine="nifti").nifti.mask(mask_path)
    back = masked.nifti.unmask(fill_value=np.nan)
    outside = nib.load(mask_path).get_fdata() == 0
    assert np.isnan(back.values[outside]).all()
    ints = masked.astype(np.int32).nifti.unmask(fill_value=0.5)
    assert ints.dtype.kind == "f"
    assert (ints.values[outside] == 0.5).all()
    assert masked.astype(np.int32).nifti.unmask(fill_value=-1).dtype == np.int32


def test_geometry_survives_arithmetic_reductions_ufuncs_and_zarr(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    bold, mask_path = pair
    data = xr.open_dataarray(bold, engine="nifti", chunks={})
    masked = data.nifti.mask(mask_path)
    grid = data.nifti.affine

    def scaled(x: np.ndarray) -> np.ndarray:
        return np.asarray(sklearn_preprocessing.StandardScaler().fit_transform(x))

    results = {
        "arithmetic": (masked - masked.mean("time")) / 2,
        "reduction": masked.std("time"),
        "ufunc": xr.apply_ufunc(
            scaled,
            masked,
            input_core_dims=[["time", "voxel"]],
            output_core_dims=[["time", "voxel"]],
            dask="allowed",
        ),
        "where": masked.where(masked > 0),
    }
    masked.to_dataset(name="signals").to_zarr(tmp_path / "m.zarr", mode="w")
    results["zarr"] = xr.open_zarr(tmp_path / "m.zarr")["signals"]
    for name, result in results.items():
        back = result.nifti.unmask()
        np.testing.assert_allclose(back.nifti.affine, grid, atol=1e-5, err_msg=name)
        assert back.sizes["i"] == SHAPE[0], name
    np.testing.assert_allclose(results["zarr"].nifti.unmask().values, masked.nifti.unmask().values)


def test_unmask_errors_say_what_is_missing(pair: tuple[Path, Path]) -> None:
    bold, mask_path = pair
    masked = xr.open_dataarray(bold, engine="nifti").nifti.mask(mask_path)
    with pytest.raises(ValueError, match="needs a 'voxel' dim"):
        masked.rename(voxel="v").nifti.unmask()
    with pytest.raises(ValueError, match=r"coordinates \['i', 'j', 'k'\].*missing \['j'\]"):
        masked.drop_vars("j").nifti.unmask()
    with pytest.raises(ValueError, match="lost the grid geometry"):
        masked.drop_vars(["i", "j", "k"]).nifti.unmask()
    plain = masked.copy()
    for name in "ijk":
        plain[name].attrs = {}
    with pytest.raises(ValueError, match="lost the grid geometry"):
        plain.nifti.unmask()
    with pytest.raises(ValueError, match="more than once"):
        masked.isel(voxel=[0, 0]).nifti.unmask()
    with pytest.raises(TypeError, match="fill_value"):
        masked.nifti.unmask(fill_value="0")  # type: ignore[arg-type]


def test_voxel_subsets_unmask_in_place(pair: tuple[Path, Path]) -> None:
    bold, mask_path = pair
    masked = xr.open_dataarray(bold, engine="nifti").nifti.mask(mask_path)
    subset = masked.isel(voxel=slice(None, None, -3))
    back = subset.nifti.unmask(fill_value=np.nan)
    i, j, k = (subset[n].values for n in "ijk")
    np.testing.assert_array_equal(back.values[i, j, k].T, subset.values)
    assert int(np.isfinite(back.isel(time=0)).sum()) == subset.sizes["voxel"]


def test_mask_and_unmask_stay_lazy(pair: tuple[Path, Path]) -> None:
    bold, mask_path = pair
    data = xr.open_dataarray(bold, engine="nifti", chunks={}).chunk(time=2)
    with dask.config.set(scheduler=_raise_on_compute):
        masked = data.nifti.mask(mask_path)
        back = (masked * 2).nifti.unmask()
    assert masked.data.chunks[0] == (2, 2, 2)
    assert back.data.chunks[-1] == (2, 2, 2)
    np.testing.assert_allclose(back.values, 2 * masked.nifti.unmask().values)


@pytest.mark.parametrize("resolution", [2])
def test_mni152_template_with_its_brain_mask(resolution: int) -> None:
    # as saved to disk: the in-memory template holds floats that its uint8 header quantises
    template = nib.Nifti1Image.from_bytes(
        datasets.load_mni152_template(resolution=resolution).to_bytes()
    )
    brain = datasets.load_mni152_brain_mask(resolution=resolution)
    data = xarray_nifti.from_nibabel(template)["data"].chunk({"k": 20})
    masked = data.nifti.mask(brain)
    expected = nilearn_values(template, brain)
    assert masked.dims == ("voxel",)
    np.testing.assert_allclose(masked.values, np.ravel(expected), rtol=1e-6)
    back = masked.nifti.unmask()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inverse = nilearn_masker(brain).fit().inverse_transform(expected).get_fdata()
    np.testing.assert_allclose(back.values, inverse.reshape(back.shape), rtol=1e-6)


def test_dataset_keeps_other_variables(pair: tuple[Path, Path]) -> None:
    bold, mask_path = pair
    ds = xr.open_dataset(bold, engine="nifti").assign(motion=("time", np.arange(SHAPE[3])))
    out = ds.nifti.mask(mask_path)
    assert list(out.data_vars) == ["data", "motion"]
    back = out.nifti.unmask()
    assert back["data"].dims == ("i", "j", "k", "time")
    np.testing.assert_array_equal(back["motion"].values, np.arange(SHAPE[3]))


@pytest.mark.parametrize(
    ("name", "image_class", "byteorder"),
    [
        ("big.nii", nib.Nifti1Image, ">"),
        ("two.nii.gz", nib.Nifti2Image, "<"),
        ("pair.img", nib.Nifti1Pair, "<"),
    ],
)
def test_file_kinds_equal_nilearn(
    tmp_path: Path, name: str, image_class: type, byteorder: str
) -> None:
    rng = np.random.default_rng(8)
    values = rng.integers(-500, 500, (6, 5, 4, 3)).astype(f"{byteorder}i2")
    img = image_class(values, oblique_affine(9))
    img.header.set_slope_inter(2.0, -1.0)
    nib.save(img, tmp_path / name)
    selected = rng.random((6, 5, 4)) > 0.3
    mask_img = nib.Nifti1Image(selected.astype(np.uint8), oblique_affine(9))
    data = xr.open_dataarray(tmp_path / name, engine="nifti", chunks={})
    masked = data.nifti.mask(mask_img)
    reference = nib.load(tmp_path / name)
    if isinstance(reference, nib.Nifti1Pair) and not isinstance(reference, nib.Nifti1Image):
        reference = nib.Nifti1Image.from_image(reference)  # nilearn takes no pairs
    np.testing.assert_allclose(masked.values, nilearn_values(reference, mask_img), rtol=1e-6)
    back = masked.nifti.unmask()
    expected = np.where(selected[..., None], nib.load(tmp_path / name).get_fdata(), 0)
    np.testing.assert_allclose(back.values, expected, rtol=1e-6)
