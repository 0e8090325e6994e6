"""Lazy reorientation (``.nifti.to_canonical()`` / ``.nifti.reorient()``)."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from nibabel.affines import apply_affine
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from xarray.backends import BackendArray
from xarray.core.indexing import (
    BasicIndexer,
    IndexingSupport,
    LazilyIndexedArray,
    OuterIndexer,
    VectorizedIndexer,
    explicit_indexing_adapter,
)

from helpers import affines, grid_dataset, oblique_affine, raising_scheduler, spatial_shapes
from xarray_nifti import VoxelAffineIndex
from xarray_nifti.reorient import TransposedLazyArray

SETTINGS = settings(max_examples=60, deadline=None)
CODES = ["RAS", "LPS", "LAS", "ASR", "IPL", "SRA", "PIR"]


def the_index(obj: xr.Dataset | xr.DataArray) -> VoxelAffineIndex:
    (index,) = [i for i in obj.xindexes.get_unique() if isinstance(i, VoxelAffineIndex)]
    return index


def world(obj: xr.Dataset | xr.DataArray) -> np.ndarray:
    """x, y, z as one (i, j, k, 3) array in the object's spatial dim order."""
    dims = obj["data"].dims if isinstance(obj, xr.Dataset) else obj.dims
    spatial = [d for d in dims if d in obj["x"].dims]
    return np.stack([obj[n].transpose(*spatial).values for n in "xyz"], -1)


def nibabel_image(ds: xr.Dataset) -> nib.Nifti1Image:
    g = the_index(ds).geometry
    img = nib.Nifti1Image(np.asarray(ds.data.values), g.affine)
    img.set_sform(g.sform, g.sform_code)
    img.set_qform(g.qform, g.qform_code)
    return img


def check_world_positions(original: xr.Dataset, out: xr.Dataset) -> None:
    """Each voxel value of ``out`` sits at the world position it had in ``original``."""
    # data values are unique (arange), so they identify the original voxel
    values = np.asarray(out.data.values)
    spatial_shape = original.data.shape[:3]
    flat = values[..., 0] if values.ndim == 4 else values
    if values.ndim == 4:
        flat = flat // original.sizes["time"]
    orig_ijk = np.stack(np.unravel_index(flat.astype(np.int64), spatial_shape), -1)
    expected = apply_affine(the_index(original).geometry.affine, orig_ijk)
    np.testing.assert_allclose(world(out), expected, atol=1e-9)
    new_ijk = np.indices(out.data.shape[:3]).transpose(1, 2, 3, 0)
    np.testing.assert_allclose(apply_affine(out.nifti.affine, new_ijk), expected, atol=1e-9)


# -- agreement with nibabel ---------------------------------------------------------------


@SETTINGS
@given(affine=affines(), shape=spatial_shapes(), four_d=st.booleans())
def test_to_canonical_matches_nibabel(
    affine: np.ndarray, shape: tuple[int, int, int], four_d: bool
) -> None:
    full = (*shape, 2) if four_d else shape
    ds = grid_dataset(affine, full, sform_code=4, qform_code=1)
    img = nibabel_image(ds)
    canonical = nib.as_closest_canonical(img)
    with dask.config.set(scheduler=raising_scheduler):
        out = ds.nifti.to_canonical()
    assert isinstance(out.data.data, da.Array)
    np.testing.assert_allclose(out.nifti.affine, canonical.affine, atol=1e-4)  # float32 header
    np.testing.assert_array_equal(out.data.values, np.asanyarray(canonical.dataobj))
    assert out.data.dims == ("i", "j", "k", "time")[: len(full)]
    assert out.nifti.axcodes == ("R", "A", "S")
    # nibabel #1427: as_closest_canonical resets the codes; we keep them
    g = the_index(out).geometry
    assert (g.sform_code, g.qform_code) == (4, 1)
    check_world_positions(ds, out)


@SETTINGS
@given(affine=affines(), shape=spatial_shapes(), target=st.sampled_from(CODES))
def test_reorient_keeps_every_voxel_in_place(
    affine: np.ndarray, shape: tuple[int, int, int], target: str
) -> None:
    ds = grid_dataset(affine, shape, sform_code=2, qform_code=3, qform=affine + 1.0)
    with dask.config.set(scheduler=raising_scheduler):
        out = ds.nifti.reorient(target)
    assert "".join(out.nifti.axcodes) == target
    check_world_positions(ds, out)
    g_in, g_out = the_index(ds).geometry, the_index(out).geometry
    assert (g_out.sform_code, g_out.qform_code) == (2, 3)
    # sform/qform followed the same voxel transform as the affine
    t = np.linalg.inv(g_in.affine) @ g_out.affine
    np.testing.assert_allclose(g_out.sform, g_in.sform @ t, atol=1e-9)  # type: ignore[operator]
    np.testing.assert_allclose(g_out.qform, g_in.qform @ t, atol=1e-9)  # type: ignore[operator]
    # and back again
    back = out.nifti.reorient("".join(ds.nifti.axcodes))
    np.testing.assert_allclose(back.nifti.affine, ds.nifti.affine, atol=1e-9)
    np.testing.assert_array_equal(back.data.values, ds.data.values)


def test_nibabel_changes_codes_we_keep_them() -> None:
    ds = grid_dataset(np.diag([-2.0, 2, 2, 1]), (3, 4, 5), sform_code=4, qform_code=1)
    img = nibabel_image(ds)
    canonical = nib.as_closest_canonical(img)
    assert int(canonical.header["sform_code"]) != 4  # nibabel #1427
    g = the_index(ds.nifti.to_canonical()).geometry
    assert (g.sform_code, g.qform_code) == (4, 1)
    assert ds.nifti.to_canonical().nifti.space == "mni"


def test_lps(nibabel_data: Path) -> None:
    ds = xr.open_dataset(nibabel_data / "example4d.nii.gz", engine="nifti", chunks={})
    with dask.config.set(scheduler=raising_scheduler):
        lps = ds.nifti.reorient("LPS")
    assert lps.nifti.axcodes == ("L", "P", "S")
    assert ds.nifti.axcodes == ("L", "A", "S")
    # only j flipped: voxel (i, j, k) of the LPS image is voxel (i, nj-1-j, k)
    nj = ds.sizes["j"]
    for ijk in [(0, 0, 0), (5, 7, 3), (127, 95, 23)]:
        original = (ijk[0], nj - 1 - ijk[1], ijk[2])
        np.testing.assert_allclose(
            lps.nifti.voxel_to_world(*ijk), ds.nifti.voxel_to_world(*original), atol=1e-6
        )
        np.testing.assert_array_equal(lps.data[ijk].values, ds.data[original].values)
    assert lps.data.dims == ("i", "j", "k", "time")


def test_real_file_to_canonical(nibabel_data: Path) -> None:
    path = nibabel_data / "example4d.nii.gz"
    img = nib.load(path)
    canonical = nib.as_closest_canonical(img)
    ds = xr.open_dataset(path, engine="nifti", chunks={})
    out = ds.nifti.to_canonical()
    np.testing.assert_allclose(out.nifti.affine, canonical.affine, atol=1e-5)
    np.testing.assert_array_equal(out.data.values, np.asanyarray(canonical.dataobj))
    assert (the_index(out).geometry.sform_code, the_index(out).geometry.qform_code) == (1, 1)


# -- objects, layouts and laziness -----------------------------------------------------------


@pytest.fixture
def permuted() -> xr.Dataset:
    # axis codes "AIL": needs a permutation and flips
    affine = np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -5], [0, -3.0, 0, 7], [0, 0, 0, 1]])
    return grid_dataset(affine, (4, 5, 6, 3), sform_code=1, qform_code=1)


def test_reorient_dataarray(permuted: xr.Dataset) -> None:
    arr = permuted.data
    with dask.config.set(scheduler=raising_scheduler):
        out = arr.nifti.to_canonical()
    assert isinstance(out, xr.DataArray)
    assert isinstance(out.data, da.Array)
    expected = permuted.nifti.to_canonical()
    np.testing.assert_array_equal(out.values, expected.data.values)
    np.testing.assert_allclose(out.nifti.affine, expected.nifti.affine)
    assert out.dims == ("i", "j", "k", "time")
    assert out.x.dims == ("i", "j", "k")


def test_reorient_with_numpy_data() -> None:
    ds = grid_dataset(oblique_affine(4), (3, 4, 5), chunks=None)
    out = ds.nifti.reorient("LPS")
    assert isinstance(out.data.data, np.ndarray)
    check_world_positions(ds, out)


def test_reorient_keeps_time_first_layout(permuted: xr.Dataset) -> None:
    ds = permuted.transpose("time", "i", "j", "k")
    out = ds.nifti.to_canonical()
    assert out.data.dims == ("time", "i", "j", "k")
    reference = permuted.nifti.to_canonical()
    np.testing.assert_array_equal(
        out.data.values, reference.data.transpose("time", "i", "j", "k").values
    )
    np.testing.assert_allclose(out.nifti.affine, reference.nifti.affine)


def test_reorient_transposed_input(permuted: xr.Dataset) -> None:
    ds = permuted.transpose("k", "j", "i", "time")
    out = ds.nifti.to_canonical()
    assert out.nifti.axcodes == ("R", "A", "S")
    np.testing.assert_array_equal(out.data.values, permuted.nifti.to_canonical().data.values)


def test_reorient_sliced_input(permuted: xr.Dataset) -> None:
    sub = permuted.isel(i=slice(None, None, -1), k=slice(1, 5, 2))
    out = sub.nifti.reorient("LPS")
    assert out.nifti.axcodes == ("L", "P", "S")
    check_world_positions(permuted, out)


def test_reorient_noop_returns_same_grid() -> None:
    ds = grid_dataset(np.diag([2.0, 2, 2, 1]), (3, 4, 5))
    out = ds.nifti.to_canonical()
    assert the_index(out).equals(the_index(ds))
    np.testing.assert_array_equal(out.data.values, ds.data.values)


def test_reorient_keeps_other_variables_and_attrs(permuted: xr.Dataset) -> None:
    ds = permuted.assign(mask=permuted.data.isel(time=0) > 10)
    ds["data"].attrs["units"] = "a.u."
    ds = ds.assign_coords(slice_time=("k", np.linspace(0, 1, 6)))
    out = ds.nifti.to_canonical()
    assert out.data.attrs["units"] == "a.u."
    np.testing.assert_array_equal(out.mask.values, (out.data.isel(time=0) > 10).values)
    assert "slice_time" in out.coords
    assert len(out.slice_time.dims) == 1


def test_reorient_twice_is_composition(permuted: xr.Dataset) -> None:
    once = permuted.nifti.reorient("SRA")
    twice = once.nifti.reorient("LPS")
    direct = permuted.nifti.reorient("LPS")
    np.testing.assert_allclose(twice.nifti.affine, direct.nifti.affine)
    np.testing.assert_array_equal(twice.data.values, direct.data.values)


# -- errors ---------------------------------------------------------------------------------


def test_reorient_after_integer_selection_errors(permuted: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="needs all three spatial dims"):
        permuted.isel(k=2).nifti.reorient("RAS")


def test_reorient_after_reduction_errors(permuted: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="no NIfTI voxel grid"):
        permuted.mean("k").nifti.to_canonical()


def test_reorient_without_grid_errors() -> None:
    with pytest.raises(ValueError, match="no NIfTI voxel grid"):
        xr.DataArray(np.zeros((2, 2, 2)), dims=("i", "j", "k")).nifti.reorient("LPS")


@pytest.mark.parametrize("codes", ["RA", "RRS", "XYZ", "RLA"])
def test_reorient_invalid_codes(permuted: xr.Dataset, codes: str) -> None:
    with pytest.raises(ValueError, match="axis codes"):
        permuted.nifti.reorient(codes)


def test_reorient_accepts_tuples_and_lowercase(permuted: xr.Dataset) -> None:
    assert permuted.nifti.reorient(("L", "P", "S")).nifti.axcodes == ("L", "P", "S")
    assert permuted.nifti.reorient("lps").nifti.axcodes == ("L", "P", "S")


def test_reorient_dataset_whose_first_variable_is_1d(permuted: xr.Dataset) -> None:
    transposed = permuted.data.isel(time=0).transpose("k", "j", "i")
    ds = xr.Dataset({"slice_order": ("k", np.arange(6.0)), "data": transposed})
    out = ds.nifti.to_canonical()
    reference = permuted.isel(time=0).nifti.to_canonical()
    assert out.data.nifti.axcodes == ("R", "A", "S")
    np.testing.assert_array_equal(out.data.values, reference.data.values)
    np.testing.assert_allclose(out.data.nifti.affine, reference.nifti.affine)
    np.testing.assert_allclose(world(out), world(reference))


# -- every axis orientation, every way of opening ---------------------------------------------

ORIENTATIONS = [
    (perm, signs)
    for perm in itertools.permutations(range(3))
    for signs in itertools.product((1.0, -1.0), repeat=3)
]
OPENINGS: list[Any] = [None, {}, "auto", "chunk before", "chunk after"]


def orientation_affine(perm: tuple[int, ...], signs: tuple[float, ...]) -> np.ndarray:
    """Voxel axis n points along world axis perm[n] (sign signs[n]), zooms 1.1, 1.2, 1.3."""
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world_axis, sign) in enumerate(zip(perm, signs, strict=True)):
        affine[world_axis, axis] = sign * (1.1 + 0.1 * axis)
    affine[:3, 3] = [10.0, -20.0, 5.0]
    return affine


@pytest.fixture(
    scope="module",
    params=ORIENTATIONS,
    ids=lambda o: "".join(nib.aff2axcodes(orientation_affine(*o))),
)
def oriented_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    perm, signs = request.param
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    path = tmp_path_factory.mktemp("orientation") / "image.nii"
    nib.save(nib.Nifti1Image(data, orientation_affine(perm, signs)), path)
    return path


def open_as(path: Path, opening: Any, kind: str, target: str) -> xr.Dataset | xr.DataArray:
    """Open ``path`` one way, take a Dataset or DataArray and reorient it to ``target``."""
    chunks = None if isinstance(opening, str) and opening.startswith("chunk") else opening
    ds = xr.open_dataset(path, engine="nifti", chunks=chunks)
    obj: xr.Dataset | xr.DataArray = ds if kind == "Dataset" else ds["data"]
    if opening == "chunk before":
        obj = obj.chunk()
    out = obj.nifti.reorient(target)
    return out.chunk() if opening == "chunk after" else out


def values_of(obj: xr.Dataset | xr.DataArray) -> np.ndarray:
    return np.asarray((obj["data"] if isinstance(obj, xr.Dataset) else obj).values)


def oracle(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    """nibabel's data and affine of the image reoriented to ``target``."""
    img = nib.load(path)
    if target == "RAS":
        canonical = nib.as_closest_canonical(img)
        return np.asanyarray(canonical.dataobj), canonical.affine
    ornt = ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(target)))
    data = apply_orientation(np.asanyarray(img.dataobj), ornt)
    return data, img.affine @ inv_ornt_aff(ornt, img.shape)


@pytest.mark.parametrize("target", ["RAS", "PIL"])
def test_selection_after_reorientation_in_every_orientation(
    oriented_file: Path, target: str
) -> None:
    expected, affine = oracle(oriented_file, target)
    point = apply_affine(affine, [[1, 2, 3], [3, 0, 2]])
    failures = []
    for opening in OPENINGS:
        for kind in ("Dataset", "DataArray"):
            with dask.config.set(scheduler=raising_scheduler):
                out = open_as(oriented_file, opening, kind, target)
                selections = {
                    "integers": (out.isel(i=1, j=2, k=3), expected[1, 2, 3]),
                    "integer and slice": (
                        out.isel(i=1, j=slice(1, 3), k=3),
                        expected[1, 1:3, 3],
                    ),
                    "slice, step and integer": (
                        out.isel(i=slice(None, None, -2), j=2),
                        expected[::-2, 2, :],
                    ),
                    "nearest": (
                        out.sel(x=point[0, 0], y=point[0, 1], z=point[0, 2], method="nearest"),
                        expected[1, 2, 3],
                    ),
                    "nearest points": (
                        out.sel(x=point[:, 0], y=point[:, 1], z=point[:, 2], method="nearest"),
                        expected[[1, 3], [2, 0], [3, 2]],
                    ),
                }
            np.testing.assert_allclose(out.nifti.affine, affine, atol=1e-5)
            for name, (selected, wanted) in selections.items():
                if not np.array_equal(values_of(selected), wanted):
                    failures.append(f"{opening!r} {kind} {name}")
            if not np.array_equal(values_of(out), expected):
                failures.append(f"{opening!r} {kind} whole image")
    assert not failures


def test_reoriented_object_describes_itself(oriented_file: Path) -> None:
    canonical = nib.as_closest_canonical(nib.load(oriented_file))
    zooms = [round(float(z), 3) for z in canonical.header.get_zooms()[:3]]
    for opening in (None, {}):
        out = open_as(oriented_file, opening, "Dataset", "RAS")
        assert isinstance(out, xr.Dataset)
        assert list(out.sizes) == list(out["data"].dims) == ["i", "j", "k"]
        assert f"Dimensions:  (i: {canonical.shape[0]}, j: {canonical.shape[1]}," in repr(out)
        index_line = the_index(out)._repr_inline_(200)
        assert f"VoxelAffineIndex(i:R j:A k:S, zooms={zooms}, space=aligned)" == index_line
        assert f"VoxelAffineIndex(i:R j:A k:S, zooms={zooms}" in repr(out)
        assert out.nifti.axcodes == ("R", "A", "S")
        assert out.nifti.zooms == pytest.approx(zooms, abs=1e-3)
        # the geometry itself is in the new order, so headers written from it are too
        np.testing.assert_allclose(the_index(out).geometry.affine, canonical.affine, atol=1e-5)
        assert the_index(out).geometry.shape == canonical.shape


# -- laziness of the transposed lazy array ------------------------------------------------------


class CountingBackend(BackendArray):
    """A backend array that records every key it is read with."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape = values.shape
        self.dtype = values.dtype
        self.reads: list[tuple[Any, ...]] = []

    def __getitem__(self, key: Any) -> np.ndarray:
        return explicit_indexing_adapter(key, self.shape, IndexingSupport.BASIC, self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        self.reads.append(key)
        return np.asarray(self.values[key])


def counting_dataset(
    affine: np.ndarray, shape: tuple[int, ...]
) -> tuple[xr.Dataset, CountingBackend]:
    backend = CountingBackend(np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    lazy = LazilyIndexedArray(backend)
    ds = grid_dataset(affine, shape, data=np.zeros(shape, dtype=np.float32), chunks=None)
    ds["data"] = xr.Variable(ds["data"].dims, lazy)
    return ds, backend


def test_reorientation_and_selection_read_nothing_until_asked() -> None:
    affine = orientation_affine((1, 2, 0), (1.0, -1.0, 1.0))
    ds, backend = counting_dataset(affine, (4, 5, 6, 2))
    out = ds.nifti.to_canonical()
    voxel = out.isel(i=1, j=2, k=3, time=1)
    plane = out.isel(k=3)
    repr(out), repr(voxel), repr(plane)
    assert backend.reads == []
    expected, _ = oracle_from_array(backend.values, affine)
    assert float(voxel["data"].values) == expected[1, 2, 3, 1]
    assert len(backend.reads) == 1
    assert np.asarray(backend.values[backend.reads[0]]).size == 1  # one voxel read, not the volume
    np.testing.assert_array_equal(plane["data"].values, expected[:, :, 3])


def oracle_from_array(values: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nib.Nifti1Image(values, affine)
    canonical = nib.as_closest_canonical(img)
    return np.asanyarray(canonical.dataobj), canonical.affine


def test_transposed_lazy_array_composes_and_pickles() -> None:
    values = np.arange(24).reshape(2, 3, 4)
    seen = TransposedLazyArray(LazilyIndexedArray(values), (2, 0, 1))
    np.testing.assert_array_equal(np.asarray(seen), values.transpose(2, 0, 1))
    back = seen.transpose((1, 2, 0))
    np.testing.assert_array_equal(np.asarray(back), values)
    outer = seen.oindex[OuterIndexer((np.array([0, 3]), 1, slice(None)))]
    np.testing.assert_array_equal(np.asarray(outer), values.transpose(2, 0, 1)[[0, 3], 1, :])
    point = seen.vindex[VectorizedIndexer((np.array([0, 3]), np.array([1, 0]), np.array([2, 1])))]
    np.testing.assert_array_equal(
        np.asarray(point), values.transpose(2, 0, 1)[[0, 3], [1, 0], [2, 1]]
    )
    np.testing.assert_array_equal(np.asarray(pickle.loads(pickle.dumps(seen))), np.asarray(seen))
    with pytest.raises(ValueError, match="not a permutation"):
        TransposedLazyArray(LazilyIndexedArray(values), (0, 0, 1))


@pytest.mark.parametrize(
    ("codes", "error"),
    [
        (None, TypeError),
        (3, TypeError),
        (("R", "A", None), TypeError),
        ("RAX", ValueError),
        ("RRS", ValueError),
        ("RA", ValueError),
        ("RASS", ValueError),
    ],
)
def test_reorient_bad_axis_codes_say_what_they_must_be(
    permuted: xr.Dataset, codes: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="axis codes") as info:
        permuted.nifti.reorient(codes)
    assert "'RAS'" in str(info.value)


def test_reoriented_permuted_file_pickles_and_saves(tmp_path: Path) -> None:
    affine = orientation_affine((1, 2, 0), (-1.0, 1.0, 1.0))  # axis codes PSR
    data = np.arange(4 * 5 * 6 * 2, dtype=np.int16).reshape(4, 5, 6, 2)
    source = tmp_path / "sagittal.nii.gz"
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, 2)
    nib.save(img, source)
    canonical = nib.as_closest_canonical(nib.load(source))
    out = xr.open_dataset(source, engine="nifti").nifti.to_canonical()
    assert isinstance(out["data"].variable._data, TransposedLazyArray)
    back = pickle.loads(pickle.dumps(out))
    np.testing.assert_array_equal(back["data"].isel(time=1).values, canonical.dataobj[..., 1])
    written = nib.load(out.nifti.to_nifti(tmp_path / "canonical.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), canonical.dataobj)
    np.testing.assert_allclose(written.affine, canonical.affine, atol=1e-5)
    assert nib.aff2axcodes(written.affine) == ("R", "A", "S")
    assert int(written.header["sform_code"]) == 2


@st.composite
def transposed_selections(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, ...], tuple[Any, ...]]:
    """An array, a permutation of its axes and a basic key (ints, slices) of the permuted view."""
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple))
    order = tuple(draw(st.permutations(range(len(shape)))))
    key: list[Any] = []
    for size in (shape[axis] for axis in order):
        if draw(st.booleans()):
            key.append(draw(st.integers(-size, size - 1)))
        else:
            # starts before -size with a negative step are left out: xarray's own
            # lazily indexed arrays (and dask) select differently from numpy there,
            # see test_geometry_props.py
            start, stop = (
                draw(st.none() | st.integers(-size, size + 1)),
                draw(st.none() | st.integers(-size - 1, size + 1)),
            )
            key.append(slice(start, stop, draw(st.sampled_from([None, 1, 2, -1, -2]))))
    return np.arange(int(np.prod(shape))).reshape(shape), order, tuple(key)


@SETTINGS
@given(case=transposed_selections(), twice=st.booleans())
def test_transposed_lazy_array_indexes_like_numpy(
    case: tuple[np.ndarray, tuple[int, ...], tuple[Any, ...]], twice: bool
) -> None:
    values, order, key = case
    seen = TransposedLazyArray(LazilyIndexedArray(values), order)
    expected = values.transpose(order)[key]
    selected = seen[BasicIndexer(key)]
    assert selected.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(selected), expected)
    outer = seen.oindex[OuterIndexer(key)]
    np.testing.assert_array_equal(np.asarray(outer), expected)
    if twice and expected.ndim:
        # a selection of a selection composes like numpy's
        again = tuple(slice(None, None, -1) for _ in range(expected.ndim))
        np.testing.assert_array_equal(np.asarray(selected[BasicIndexer(again)]), expected[again])
