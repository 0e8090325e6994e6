"""``VoxelAffineIndex`` inside xarray: slicing, selection, grid guard, laziness."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from dask.base import tokenize
from nibabel.affines import apply_affine
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from helpers import grid_dataset, oblique_affine, process_cluster, raising_scheduler
from xarray_nifti import NiftiGeometry, VoxelAffineIndex, VoxelAffineTransform
from xarray_nifti.index import WorldCoordinateVariable
from xarray_nifti.transform import GRID_TOLERANCE_MM

SHAPE = (5, 6, 7)


def has_grid(obj: xr.Dataset | xr.DataArray) -> bool:
    return any(isinstance(i, VoxelAffineIndex) for i in obj.xindexes.get_unique())


def the_index(obj: xr.Dataset | xr.DataArray) -> VoxelAffineIndex:
    (index,) = [i for i in obj.xindexes.get_unique() if isinstance(i, VoxelAffineIndex)]
    return index


def world(obj: xr.Dataset | xr.DataArray) -> np.ndarray:
    """The lazy x, y, z coordinates as one (..., 3) array, in the data's dim order."""
    dims = [d for d in obj["data"].dims if d in obj["x"].dims] if "data" in obj else None
    return np.stack([obj[n].transpose(*(dims or obj[n].dims)).values for n in "xyz"], -1)


@pytest.fixture
def a() -> xr.Dataset:
    return grid_dataset(oblique_affine(1), SHAPE, sform_code=4, qform_code=1)


@pytest.fixture
def a4() -> xr.Dataset:
    return grid_dataset(oblique_affine(1), (*SHAPE, 3))


class Counter:
    """Counts world-coordinate values computed by ``VoxelAffineTransform.forward``."""

    def __init__(self) -> None:
        self.values = 0

    def reset(self) -> None:
        self.values = 0


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Counter:
    count = Counter()
    original = VoxelAffineTransform.forward

    def counting(self: VoxelAffineTransform, dim_positions: dict[str, Any]) -> Any:
        out = original(self, dim_positions)
        count.values += sum(int(np.size(v)) for v in out.values())
        return out

    monkeypatch.setattr(VoxelAffineTransform, "forward", counting)
    return count


# -- construction and display ----------------------------------------------------------------


def test_world_coords_are_lazy_index_coords(a: xr.Dataset) -> None:
    for name in "xyz":
        var = a[name].variable
        assert var.dims == ("i", "j", "k")
        assert var.dtype == np.float64
        assert var.attrs["units"] == "mm"
        assert "RAS+" in var.attrs["long_name"]
        assert isinstance(var, WorldCoordinateVariable)
    assert set(a.xindexes) == {"x", "y", "z"}
    assert "i" not in a.coords


def test_world_coords_values(a: xr.Dataset) -> None:
    expected = apply_affine(oblique_affine(1), np.indices(SHAPE).transpose(1, 2, 3, 0))
    np.testing.assert_allclose(world(a), expected)


def test_index_needs_voxel_affine_transform() -> None:
    from xarray.indexes import CoordinateTransform

    with pytest.raises(TypeError, match="VoxelAffineTransform"):
        VoxelAffineIndex(CoordinateTransform(["x"], {"i": 2}))  # type: ignore[arg-type]


def test_index_repr(a: xr.Dataset) -> None:
    index = the_index(a)
    text = repr(index)
    codes = index.geometry.axcodes
    assert f"i:{codes[0]} j:{codes[1]} k:{codes[2]}, zooms=" in text
    assert "space=mni" in text
    assert "affine=" in text
    assert "shape=(5, 6, 7)" in text
    inline = index._repr_inline_(40)
    assert len(inline) <= 40
    assert inline.endswith("...")
    assert "zooms=" in index._repr_inline_(200)
    assert "VoxelAffineIndex" in repr(a)


def test_index_repr_shows_only_the_axes_the_grid_still_has(a: xr.Dataset) -> None:
    index = the_index(a)
    codes, zooms = index.geometry.axcodes, np.sqrt((index.geometry.affine[:3, :3] ** 2).sum(0))
    plane = the_index(a.isel(j=3))._repr_inline_(200)
    assert plane.startswith(f"VoxelAffineIndex(i:{codes[0]} k:{codes[2]}, zooms=")
    assert f"zooms={np.round(zooms[[0, 2]], 3).tolist()}" in plane
    renamed = the_index(a.rename(i="row"))._repr_inline_(200)
    assert renamed.startswith(f"VoxelAffineIndex(row:{codes[0]} j:{codes[1]} k:{codes[2]},")


def test_geometry_property(a: xr.Dataset) -> None:
    index = the_index(a)
    assert index.geometry is index.transform.geometry
    assert index.geometry.sform_code == 4


# -- isel ----------------------------------------------------------------------------


def test_isel_slice_keeps_index_and_positions(a: xr.Dataset) -> None:
    out = a.isel(i=slice(4, 0, -2), k=slice(1, None, 3))
    assert has_grid(out)
    kept = np.array(np.meshgrid([4, 2], np.arange(6), [1, 4], indexing="ij")).transpose(1, 2, 3, 0)
    np.testing.assert_allclose(world(out), apply_affine(oblique_affine(1), kept))
    # the data moved with it
    np.testing.assert_array_equal(out.data.values, a.data.values[4:0:-2, :, 1::3])


def test_isel_int_keeps_world_plane(a: xr.Dataset) -> None:
    out = a.isel(k=3)
    assert has_grid(out)
    assert out.x.dims == ("i", "j")
    affine = out.nifti.affine
    assert affine.shape == (4, 4)
    np.testing.assert_allclose(affine[:3, 3], apply_affine(oblique_affine(1), [0, 0, 3]))
    np.testing.assert_allclose(affine[:, 2], oblique_affine(1)[:, 2])  # dropped axis keeps column
    ii, jj = np.meshgrid(np.arange(5), np.arange(6), indexing="ij")
    expected = apply_affine(oblique_affine(1), np.stack([ii, jj, np.full_like(ii, 3)], -1))
    np.testing.assert_allclose(world(out), expected)


def test_isel_two_ints_keeps_line_three_ints_drop(a: xr.Dataset) -> None:
    line = a.isel(i=1, k=-1)
    assert has_grid(line)
    assert line.x.dims == ("j",)
    point = a.isel(i=1, j=2, k=3)
    assert not has_grid(point)
    np.testing.assert_allclose(
        [float(point[n]) for n in "xyz"], apply_affine(oblique_affine(1), [1, 2, 3])
    )


def test_isel_numpy_integer_keeps(a: xr.Dataset) -> None:
    assert has_grid(a.isel(k=np.int64(2)))
    assert has_grid(a.isel(k=np.array(2)))


@pytest.mark.parametrize(
    "indexer",
    [[0, 2, 3], np.array([4, 1]), [True, False, True, False, True]],
)
def test_isel_fancy_drops_index_but_coords_stay_right(a: xr.Dataset, indexer: Any) -> None:
    out = a.isel(i=indexer)
    assert not has_grid(out)
    kept = np.arange(5)[indexer]
    grid = np.array(np.meshgrid(kept, np.arange(6), np.arange(7), indexing="ij"))
    np.testing.assert_allclose(
        world(out), apply_affine(oblique_affine(1), grid.transpose(1, 2, 3, 0))
    )


def test_isel_on_dataarray(a: xr.Dataset) -> None:
    arr = a.data.isel(j=slice(None, None, -1))
    assert has_grid(arr)
    np.testing.assert_allclose(arr.nifti.affine[:, 1], -oblique_affine(1)[:, 1])


def test_isel_sform_qform_follow(a: xr.Dataset) -> None:
    out = a.isel(i=slice(None, None, -1), j=2)
    g = the_index(out).geometry
    t = np.eye(4)
    t[0, 0], t[0, 3], t[1, 3] = -1, 4, 2
    np.testing.assert_allclose(g.sform, oblique_affine(1) @ t)  # type: ignore[arg-type]
    np.testing.assert_allclose(g.qform, oblique_affine(1) @ t)  # type: ignore[arg-type]
    assert (g.sform_code, g.qform_code) == (4, 1)


def test_isel_empty_slice(a: xr.Dataset) -> None:
    out = a.isel(i=slice(3, 1))
    assert out.sizes["i"] == 0
    assert has_grid(out)
    assert out.x.shape == (0, 6, 7)


# -- sel -----------------------------------------------------------------------------


def voxel_world(obj: xr.Dataset, ijk: Any) -> tuple[Any, Any, Any]:
    pts = apply_affine(obj.nifti.affine, np.asarray(ijk, dtype=float))
    return pts[..., 0], pts[..., 1], pts[..., 2]


def test_sel_scalar_every_voxel(a: xr.Dataset) -> None:
    for ijk in np.ndindex(*SHAPE):
        x, y, z = voxel_world(a, ijk)
        out = a.sel(x=float(x), y=float(y), z=float(z), method="nearest")
        assert float(out.data) == a.data.values[ijk]
        assert not has_grid(out)


def test_sel_arrays_of_points(a: xr.Dataset) -> None:
    ijk = np.array(list(np.ndindex(*SHAPE)))
    # a little off the centres (less than half a voxel)
    rng = np.random.default_rng(0)
    x, y, z = voxel_world(a, ijk + rng.uniform(-0.45, 0.45, ijk.shape))
    out = a.sel(x=x, y=y, z=z, method="nearest")
    assert out.data.dims == ("points",)
    np.testing.assert_array_equal(out.data.values, a.data.values[tuple(ijk.T)])


def test_sel_lists_and_scalar_broadcast(a: xr.Dataset) -> None:
    x, y, z = voxel_world(a, [[1, 2, 3], [1, 2, 4]])
    out = a.sel(x=list(x), y=list(y), z=list(z), method="nearest")
    np.testing.assert_array_equal(out.data.values, a.data.values[1, 2, [3, 4]])


def test_sel_dataarrays(a: xr.Dataset) -> None:
    ijk = np.array([[0, 0, 0], [4, 5, 6], [2, 3, 1]])
    x, y, z = voxel_world(a, ijk)
    labels = {n: xr.DataArray(v, dims="roi") for n, v in zip("xyz", (x, y, z), strict=True)}
    out = a.sel(labels, method="nearest")
    assert out.data.dims == ("roi",)
    np.testing.assert_array_equal(out.data.values, a.data.values[tuple(ijk.T)])
    # also on a DataArray
    out2 = a.data.sel(labels, method="nearest")
    np.testing.assert_array_equal(out2.values, out.data.values)


def test_sel_variables(a: xr.Dataset) -> None:
    x, y, z = voxel_world(a, [[1, 1, 1], [2, 2, 2]])
    labels = {n: xr.Variable("p", v) for n, v in zip("xyz", (x, y, z), strict=True)}
    out = a.sel(labels, method="nearest")
    np.testing.assert_array_equal(out.data.values, a.data.values[[1, 2], [1, 2], [1, 2]])


def test_sel_on_sliced_grid(a: xr.Dataset) -> None:
    sub = a.isel(i=slice(None, None, -1), k=slice(2, 6))
    x, y, z = voxel_world(a, (1, 4, 3))  # original voxel (1, 4, 3)
    out = sub.sel(x=float(x), y=float(y), z=float(z), method="nearest")
    assert float(out.data) == a.data.values[1, 4, 3]


def test_sel_on_plane(a: xr.Dataset) -> None:
    plane = a.isel(k=3)
    x, y, z = voxel_world(a, (2, 4, 3.3))
    assert float(plane.sel(x=x, y=y, z=z, method="nearest").data) == a.data.values[2, 4, 3]
    x, y, z = voxel_world(a, (2, 4, 0))  # three voxels off the plane
    with pytest.raises(KeyError, match="outside the field of view"):
        plane.sel(x=x, y=y, z=z, method="nearest")


@pytest.mark.parametrize("ijk", [(-1, 0, 0), (0, 6, 0), (0, 0, 7.6), (2, 2, -0.6)])
def test_sel_outside_raises_keyerror_naming_point(a: xr.Dataset, ijk: tuple[float, ...]) -> None:
    x, y, z = voxel_world(a, ijk)
    with pytest.raises(KeyError) as info:
        a.sel(x=float(x), y=float(y), z=float(z), method="nearest")
    message = str(info.value)
    assert "outside the field of view" in message
    assert f"{round(float(x), 3)}" in message
    assert f"{round(float(z), 3)}" in message


def test_sel_outside_array_names_first_bad_point(a: xr.Dataset) -> None:
    x, y, z = voxel_world(a, [[0, 0, 0], [10, 0, 0]])
    with pytest.raises(KeyError, match=str(round(float(x[1]), 3))):
        a.sel(x=x, y=y, z=z, method="nearest")


def test_sel_edge_within_half_voxel_is_inside(a: xr.Dataset) -> None:
    x, y, z = voxel_world(a, (4.45, -0.45, 6.4))
    assert float(a.sel(x=x, y=y, z=z, method="nearest").data) == a.data.values[4, 0, 6]


def test_sel_tolerance(a: xr.Dataset) -> None:
    x, y, z = voxel_world(a, (2.0, 2.0, 2.0))
    out = a.sel(x=x + 0.01, y=y, z=z, method="nearest", tolerance=0.1)
    assert float(out.data) == a.data.values[2, 2, 2]
    with pytest.raises(KeyError, match="tolerance"):
        a.sel(x=x + 0.5, y=y, z=z, method="nearest", tolerance=0.1)


@pytest.mark.parametrize("method", [None, "pad", "backfill"])
def test_sel_needs_nearest(a: xr.Dataset, method: str | None) -> None:
    with pytest.raises(ValueError, match="method='nearest'") as info:
        a.sel(x=0.0, y=0.0, z=0.0, method=method)
    assert "continuous" in str(info.value)


def test_sel_needs_all_three(a: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="missing y, z"):
        a.sel(x=0.0, method="nearest")


def test_sel_rejects_slices(a: xr.Dataset) -> None:
    with pytest.raises(TypeError, match="slices"):
        a.sel(x=slice(0, 10), y=0.0, z=0.0, method="nearest")


def test_sel_bad_point_shapes(a: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="same length"):
        a.sel(x=[0.0, 1.0], y=[0.0, 1.0, 2.0], z=0.0, method="nearest")
    with pytest.raises(ValueError, match="1-D"):
        a.sel(x=np.zeros((2, 2)), y=0.0, z=0.0, method="nearest")
    with pytest.raises(ValueError, match="same dims"):
        a.sel(
            x=xr.DataArray([0.0], dims="p"),
            y=xr.DataArray([0.0], dims="q"),
            z=xr.DataArray([0.0], dims="p"),
            method="nearest",
        )
    with pytest.raises(ValueError, match="same dims"):
        a.sel(x=xr.DataArray([0.0], dims="p"), y=[0.0], z=[0.0], method="nearest")


def test_sel_and_world_to_voxel_singular_affine() -> None:
    ds = grid_dataset(np.diag([1.0, 1.0, 0.0, 1.0]), (2, 3, 4))
    with pytest.raises(ValueError, match="singular"):
        ds.sel(x=0.0, y=0.0, z=0.0, method="nearest")
    with pytest.raises(ValueError, match="singular"):
        ds.nifti.world_to_voxel(0.0, 0.0, 0.0)


def test_sel_with_renamed_coords(a: xr.Dataset) -> None:
    renamed = a.rename(x="X", y="Y", z="Z")
    x, y, z = voxel_world(a, (3, 1, 2))
    out = renamed.sel(X=float(x), Y=float(y), Z=float(z), method="nearest")
    assert float(out.data) == a.data.values[3, 1, 2]


# -- world <-> voxel through the accessor -------------------------------------------------


def test_voxel_world_roundtrip_kinds(a: xr.Dataset) -> None:
    acc = a.nifti
    x, y, z = acc.voxel_to_world(1, 2, 3)
    np.testing.assert_allclose([x, y, z], apply_affine(oblique_affine(1), [1, 2, 3]))
    assert acc.world_to_voxel(x, y, z, round=True) == (1, 2, 3)
    assert all(isinstance(v, int) for v in acc.world_to_voxel(x, y, z, round=True))
    ijk = np.array([[0, 1, 2], [4, 5, 6]])
    xs, ys, zs = acc.voxel_to_world(ijk[:, 0], ijk[:, 1], ijk[:, 2])
    assert isinstance(xs, np.ndarray)
    back = acc.world_to_voxel(xs, ys, zs, round=True)
    np.testing.assert_array_equal(np.stack(back, -1), ijk)
    assert np.stack(back).dtype == np.int64
    cont = acc.world_to_voxel(xs, ys, zs)
    np.testing.assert_allclose(np.stack(cont, -1), ijk, atol=1e-9)
    i, j, k = (xr.DataArray(ijk[:, n], dims="p") for n in range(3))
    xd, yd, zd = acc.voxel_to_world(i, j, k)
    assert isinstance(xd, xr.DataArray)
    assert xd.dims == ("p",)
    bi, _bj, bk = acc.world_to_voxel(xd, yd, zd, round=True)
    assert isinstance(bi, xr.DataArray)
    np.testing.assert_array_equal(bk.values, ijk[:, 2])
    # and the lazy coords agree with voxel_to_world
    assert float(a.x[1, 2, 3]) == pytest.approx(float(x))


def test_voxel_world_on_sliced_grid(a: xr.Dataset) -> None:
    sub = a.isel(i=slice(None, None, -2), j=slice(1, None))
    x, y, z = sub.nifti.voxel_to_world(1, 0, 0)
    np.testing.assert_allclose([x, y, z], apply_affine(oblique_affine(1), [2, 1, 0]))
    assert sub.nifti.world_to_voxel(x, y, z, round=True) == (1, 0, 0)


# -- grid guard --------------------------------------------------------------------------


def other_grids(a: xr.Dataset) -> dict[str, xr.Dataset]:
    shifted = grid_dataset(oblique_affine(1) @ _translation(1, 0, 0), SHAPE, sform_code=4)
    return {
        "smaller": a.isel(i=slice(1, None)),
        "shifted": shifted,
        "other space": grid_dataset(oblique_affine(1), SHAPE, sform_code=2),
        "flipped": a.isel(j=slice(None, None, -1)),
    }


def _translation(*t: float) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


COMBINE: dict[str, Callable[[xr.Dataset, xr.Dataset], Any]] = {
    "add": lambda p, q: p + q,
    "add dataarrays": lambda p, q: p.data + q.data,
    "align": lambda p, q: xr.align(p, q),
    "align outer": lambda p, q: xr.align(p, q, join="outer"),
    "concat": lambda p, q: xr.concat([p, q], "subject", join="outer"),
    "concat dataarrays": lambda p, q: xr.concat([p.data, q.data], "subject", join="outer"),
    "merge": lambda p, q: xr.merge([p, q.rename(data="other")], join="outer"),
}


@pytest.mark.parametrize("op", list(COMBINE))
def test_grid_guard_says_when_only_the_space_differs(a: xr.Dataset, op: str) -> None:
    b = other_grids(a)["other space"]
    with pytest.raises(ValueError, match="labelled as different world spaces") as info:
        COMBINE[op](a, b)
    message = str(info.value)
    assert "identical (same shape and affine)" in message
    assert "space 'mni' (sform_code 4, qform_code 1)" in message
    assert "space 'aligned' (sform_code 2, qform_code 1)" in message
    assert "set_space('mni')" in message
    assert "resample" not in message.replace("resample_to_img", "")
    COMBINE[op](a, b.nifti.set_space("mni"))  # relabelled, they combine


@pytest.mark.parametrize("op", list(COMBINE))
@pytest.mark.parametrize("which", ["smaller", "shifted", "flipped"])
def test_grid_guard_rejects_different_grids(a: xr.Dataset, op: str, which: str) -> None:
    b = other_grids(a)[which]
    with pytest.raises(ValueError, match="different voxel grids") as info:
        COMBINE[op](a, b)
    message = str(info.value)
    assert "resample_to" in message
    assert message.count("affine") >= 2
    assert "first:" in message
    assert "second:" in message
    shape_b = ", ".join(f"{d}={n}" for d, n in zip("ijk", the_index(b).geometry.shape, strict=True))
    assert "i=5, j=6, k=7" in message
    assert shape_b in message


def test_grid_guard_message_shows_both_affines(a: xr.Dataset) -> None:
    b = other_grids(a)["shifted"]
    with pytest.raises(ValueError, match="resample_to") as info:
        a + b
    message = str(info.value)
    for geometry in (the_index(a).geometry, the_index(b).geometry):
        assert f"{geometry.affine[0, 3]:.4f}" in message


@pytest.mark.parametrize("op", list(COMBINE))
def test_grid_guard_accepts_same_grid(a: xr.Dataset, op: str) -> None:
    out = COMBINE[op](a, grid_dataset(oblique_affine(1), SHAPE, sform_code=4))
    for obj in out if isinstance(out, tuple) else (out,):
        assert has_grid(obj)


@pytest.mark.parametrize("op", list(COMBINE))
def test_grid_guard_within_tolerance(a: xr.Dataset, op: str) -> None:
    nudged = grid_dataset(oblique_affine(1) + GRID_TOLERANCE_MM / 3, SHAPE, sform_code=4)
    out = COMBINE[op](a, nudged)
    for obj in out if isinstance(out, tuple) else (out,):
        assert has_grid(obj)


def test_same_grid_arithmetic_values(a: xr.Dataset) -> None:
    out = a + a
    np.testing.assert_array_equal(out.data.values, 2 * a.data.values)
    assert the_index(out).equals(the_index(a))


def test_transposed_same_grid_combines(a: xr.Dataset) -> None:
    out = a.data + a.data.transpose("k", "i", "j")
    assert has_grid(out)
    np.testing.assert_array_equal(out.values, 2 * a.data.values)


def test_combine_with_plain_array_keeps_grid(a: xr.Dataset) -> None:
    plain = xr.DataArray(np.ones(SHAPE), dims=("i", "j", "k"))
    assert has_grid(a.data + plain)


def test_join_exact_is_rejected_by_xarray(a: xr.Dataset) -> None:
    # with join="exact" xarray raises its own AlignmentError (a ValueError)
    # before asking the index, so its message does not mention resample_to.
    with pytest.raises(ValueError, match="exact"):
        xr.align(a, other_grids(a)["shifted"], join="exact")


def test_concat_new_dim_and_time(a4: xr.Dataset) -> None:
    subjects = xr.concat([a4, a4 + 1], "subject")
    assert has_grid(subjects)
    assert subjects.data.dims == ("subject", "i", "j", "k", "time")
    assert subjects.x.dims == ("i", "j", "k")
    runs = xr.concat([a4, a4.assign_coords(time=a4.time + 6)], "time")
    assert has_grid(runs)
    assert runs.sizes["time"] == 6
    np.testing.assert_array_equal(runs.data.values[..., 3:], a4.data.values)


def test_concat_along_spatial_dim_is_rejected(a: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="spatial dimension 'i'"):
        xr.concat([a.isel(i=slice(0, 2)), a.isel(i=slice(2, None))], "i", join="outer")


def test_merge_same_grid(a: xr.Dataset) -> None:
    merged = xr.merge([a, (a * 2).rename(data="double")])
    assert has_grid(merged)
    assert set(merged.data_vars) == {"data", "double"}


# -- laziness --------------------------------------------------------------------------


@pytest.fixture
def big() -> xr.Dataset:
    # 30*40*50 = 60 000 voxels: a materialised grid would count 180 000 values
    return grid_dataset(oblique_affine(2), (30, 40, 50, 2), chunks=10)


LAZY_OPS: dict[str, tuple[Callable[[xr.Dataset], Any], int]] = {
    "repr": (repr, 1000),
    "repr dataarray": (lambda d: repr(d.data), 1000),
    "_repr_html_": (lambda d: d._repr_html_(), 1000),
    "isel": (lambda d: d.isel(i=slice(2, 20, 3), j=-1, k=slice(None, None, -1)), 0),
    "isel then repr": (lambda d: repr(d.isel(i=slice(None, None, -1))), 1000),
    "chunk": (lambda d: d.chunk(), 0),
    "chunk i=5": (lambda d: d.chunk(i=5), 0),
    "pickle": (lambda d: pickle.loads(pickle.dumps(d)), 0),
    "tokenize": (tokenize, 0),
    "tokenize dataarray": (lambda d: tokenize(d.data), 0),
    "tokenize coordinate": (lambda d: tokenize(d.x), 0),
    "transpose": (lambda d: d.transpose("time", "k", "j", "i"), 0),
    "rename": (lambda d: d.rename(i="a", x="X"), 0),
    "reorient": (lambda d: d.nifti.reorient("LPS"), 0),
    "to_canonical": (lambda d: d.nifti.to_canonical(), 0),
    "add": (lambda d: d + d, 0),
    "align": (lambda d: xr.align(d, d.copy()), 0),
    "concat subject": (lambda d: xr.concat([d, d], "subject"), 0),
    "concat time": (lambda d: xr.concat([d, d], "time"), 0),
    "merge": (lambda d: xr.merge([d, d.rename(data="other")]), 0),
    "equals": (lambda d: d.equals(d.copy()) and d.identical(d.copy()), 0),
    "where": (lambda d: d.where(d.data > 3), 0),
    "astype": (lambda d: d.astype(np.float64), 0),
    "mean time": (lambda d: d.mean("time"), 0),
    "copy deep": (lambda d: d.copy(deep=True), 0),
}


@pytest.mark.parametrize("name", list(LAZY_OPS))
def test_no_coordinate_grid_is_computed(big: xr.Dataset, counter: Counter, name: str) -> None:
    op, limit = LAZY_OPS[name]
    counter.reset()
    with dask.config.set(scheduler=raising_scheduler):
        op(big)
    assert counter.values <= limit


def test_map_blocks_needs_the_world_coordinates_dropped(big: xr.Dataset) -> None:
    # xarray.map_blocks calls `Coordinates.indexes`, which casts every index to
    # a pandas.Index; a 3-D world-coordinate index cannot be one (documented
    # limitation). The workaround drops x, y, z and reattaches them afterwards.
    with pytest.raises(TypeError):
        xr.map_blocks(lambda b: b, big)
    plain = big.drop_vars(["x", "y", "z"])
    doubled = xr.map_blocks(lambda b: b * 2, plain).assign_coords(big.coords)
    assert doubled.xindexes["x"].equals(big.xindexes["x"])
    np.testing.assert_array_equal(doubled.data.values, big.data.values * 2)


def test_map_blocks_without_world_coords(big: xr.Dataset) -> None:
    out = xr.map_blocks(lambda b: b + 1, big.drop_vars(["x", "y", "z"]))
    assert float(out.data[1, 1, 1, 1]) == float(big.data[1, 1, 1, 1]) + 1


def test_computing_a_slice_only_computes_its_coords(big: xr.Dataset, counter: Counter) -> None:
    counter.reset()
    big.data.isel(k=3, time=0).compute()  # loading a DataArray loads its coords
    # each of x, y, z asks `forward` for all three coordinates of the plane
    assert counter.values <= 3 * 3 * 30 * 40


def test_counter_sees_materialisation(big: xr.Dataset, counter: Counter) -> None:
    counter.reset()
    big.x.values  # noqa: B018
    assert counter.values >= 30 * 40 * 50


def test_tokenize_deterministic_and_grid_sensitive(big: xr.Dataset) -> None:
    token = tokenize(big)
    assert tokenize(big) == token
    assert tokenize(pickle.loads(pickle.dumps(big))) == token
    assert tokenize(grid_dataset(oblique_affine(2), (30, 40, 50, 2), chunks=10)) == token
    other = grid_dataset(oblique_affine(3), (30, 40, 50, 2), chunks=10)
    assert tokenize(other) != token
    assert tokenize(big.x) != tokenize(big.y)
    index = the_index(big)
    assert tokenize(index) == tokenize(pickle.loads(pickle.dumps(index)))
    assert tokenize(index) != tokenize(the_index(other))
    assert tokenize(index) != tokenize(the_index(big.isel(i=slice(1, None))))


def test_world_variable_equality_is_lazy_and_correct(a: xr.Dataset) -> None:
    same = grid_dataset(oblique_affine(1), SHAPE, sform_code=4)
    assert a.x.variable.equals(same.x.variable)
    assert not a.x.variable.equals(same.y.variable)
    assert not a.x.variable.equals(a.isel(i=slice(None, None, -1)).x.variable)
    # a materialised copy compares by value
    loaded = a.x.variable.copy(deep=True).load()
    assert a.x.variable.equals(loaded)
    assert loaded.equals(a.x.variable)


# -- transpose / rename -------------------------------------------------------------------


def test_transpose_keeps_index_and_coordinate_layout(a: xr.Dataset) -> None:
    t = a.transpose("k", "i", "j")
    assert has_grid(t)
    assert t.x.dims == ("k", "i", "j")
    np.testing.assert_allclose(world(t), world(a).transpose(2, 0, 1, 3))
    affine = t.nifti.affine
    np.testing.assert_allclose(affine, oblique_affine(1)[:, [2, 0, 1, 3]])


def test_rename_dims_and_coords(a: xr.Dataset) -> None:
    r = a.transpose("k", "j", "i").rename(i="a", j="b", k="c", x="X")
    assert has_grid(r)
    assert r.X.dims == ("c", "b", "a")
    assert the_index(r).transform.axis_dims == ("a", "b", "c")
    np.testing.assert_allclose(r.X.values, a.x.values.transpose(2, 1, 0))
    assert r.X.attrs["units"] == "mm"


def test_rename_swapping_dims_keeps_layout(a: xr.Dataset) -> None:
    r = a.rename(i="j", j="i")
    assert r.data.dims == ("j", "i", "k")
    assert r.x.dims == ("j", "i", "k")
    np.testing.assert_allclose(r.x.values, a.x.values)
    assert float(r.x.isel(j=4, i=0, k=0)) == pytest.approx(float(a.x.isel(i=4, j=0, k=0)))


# -- which operations keep, drop or reject the index ---------------------------------------


def _to_netcdf(d: xr.Dataset, path: Path) -> xr.Dataset:
    d.to_netcdf(path / "out.nc", engine="h5netcdf")
    return xr.open_dataset(path / "out.nc", engine="h5netcdf")


def _sel_nearest(d: xr.Dataset) -> xr.Dataset:
    x, y, z = d.nifti.voxel_to_world(1, 2, 3)
    return d.sel(x=x, y=y, z=z, method="nearest")


def _other(d: xr.Dataset) -> xr.Dataset:
    return d.isel(i=slice(1, None))


TABLE: dict[str, tuple[Callable[[xr.Dataset, Path], Any], str]] = {
    "isel int": (lambda d, p: d.isel(k=2), "keep"),
    "isel slice": (lambda d, p: d.isel(i=slice(1, 4)), "keep"),
    "isel negative step": (lambda d, p: d.isel(i=slice(None, None, -2)), "keep"),
    "isel all three ints": (lambda d, p: d.isel(i=0, j=0, k=0), "drop"),
    "isel array": (lambda d, p: d.isel(i=[0, 2]), "drop"),
    "sel nearest": (lambda d, p: _sel_nearest(d), "drop"),
    "transpose": (lambda d, p: d.transpose("time", "k", "j", "i"), "keep"),
    "rename": (lambda d, p: d.rename(i="a", x="X"), "keep"),
    "mean over time": (lambda d, p: d.mean("time"), "keep"),
    "mean over k": (lambda d, p: d.mean("k"), "drop"),
    "arithmetic same grid": (lambda d, p: d + d, "keep"),
    "arithmetic different grid": (lambda d, p: d + _other(d), "reject"),
    "align same grid": (lambda d, p: xr.align(d, d.copy())[0], "keep"),
    "align different grid": (lambda d, p: xr.align(d, _other(d))[0], "reject"),
    "concat new dim": (lambda d, p: xr.concat([d, d], "subject"), "keep"),
    "concat time": (lambda d, p: xr.concat([d, d], "time"), "keep"),
    "concat spatial dim": (
        lambda d, p: xr.concat([d.isel(i=slice(0, 2)), d.isel(i=slice(2, None))], "i"),
        "reject",
    ),
    "concat different grid": (
        lambda d, p: xr.concat([d, _other(d)], "subject", join="outer"),
        "reject",
    ),
    "merge same grid": (lambda d, p: xr.merge([d, d.rename(data="b")]), "keep"),
    "merge different grid": (
        lambda d, p: xr.merge([d, _other(d).rename(data="b")], join="outer"),
        "reject",
    ),
    "chunk": (lambda d, p: d.chunk(), "keep"),
    "pickle": (lambda d, p: pickle.loads(pickle.dumps(d)), "keep"),
    "where": (lambda d, p: d.where(d.data > 2), "keep"),
    "astype": (lambda d, p: d.astype(np.float64), "keep"),
    "to_netcdf + open": (_to_netcdf, "drop"),
}


def outcome(op: Callable[[xr.Dataset, Path], Any], d: xr.Dataset, path: Path) -> str:
    try:
        out = op(d, path)
    except ValueError:
        return "reject"
    return "keep" if has_grid(out) else "drop"


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("name", list(TABLE))
def test_keep_drop_reject_table(a4: xr.Dataset, tmp_path: Path, name: str) -> None:
    op, expected = TABLE[name]
    assert outcome(op, a4, tmp_path) == expected


def test_table_kept_results_have_correct_geometry(a4: xr.Dataset, tmp_path: Path) -> None:
    """Every 'keep' result still maps its voxels to the right world positions."""
    for name, (op, expected) in TABLE.items():
        if expected != "keep":
            continue
        out = op(a4, tmp_path)
        obj = out.data if "data" in out else out[next(iter(out.data_vars))]
        sizes = {d: obj.sizes[d] for d in the_index(out).transform.dims}
        pos = {d: np.arange(n) for d, n in sizes.items()}
        got = the_index(out).transform.forward(
            dict(zip(pos, np.meshgrid(*pos.values(), indexing="ij"), strict=True))
        )
        coords = {n: out[n].transpose(*sizes).values for n in the_index(out).transform.coord_names}
        for n, values in got.items():
            np.testing.assert_allclose(coords[n], values, err_msg=name)


def test_netcdf_writes_materialised_world_coords(a4: xr.Dataset, tmp_path: Path) -> None:
    back = _to_netcdf(a4, tmp_path)
    np.testing.assert_allclose(back.x.values, a4.x.values)


# -- pickling and a real distributed cluster ------------------------------------------------


def test_pickle_keeps_index_and_geometry(a: xr.Dataset) -> None:
    back = pickle.loads(pickle.dumps(a.isel(i=slice(None, None, -1), k=2)))
    assert has_grid(back)
    original = the_index(a.isel(i=slice(None, None, -1), k=2))
    assert the_index(back).equals(original)
    np.testing.assert_array_equal(the_index(back).geometry.sform, original.geometry.sform)  # type: ignore[arg-type]
    assert isinstance(back.x.variable, WorldCoordinateVariable)
    np.testing.assert_allclose(world(back), world(a.isel(i=slice(None, None, -1), k=2)))


def test_local_cluster_sliced_and_reoriented(make_image: Callable[..., Path]) -> None:
    affine = oblique_affine(5)
    data = np.arange(8 * 9 * 10 * 2, dtype=np.int16).reshape(8, 9, 10, 2)
    path = make_image(data, affine, name="bold.nii.gz")
    ds = xr.open_dataset(path, engine="nifti", chunks={})
    assert isinstance(ds.data.data, da.Array)
    result = ds.isel(i=slice(None, None, -2), k=slice(1, None)).nifti.reorient("LPS")

    # expected with plain numpy + nibabel orientation maths
    sliced = data[::-2, :, 1:]
    t = np.eye(4)
    t[0, 0], t[0, 3], t[2, 3] = -2, 7, 1
    sliced_affine = nib.load(path).affine @ t
    ornt = ornt_transform(io_orientation(sliced_affine), axcodes2ornt("LPS"))
    expected = nib.orientations.apply_orientation(sliced, ornt)
    expected_affine = sliced_affine @ nib.orientations.inv_ornt_aff(ornt, sliced.shape[:3])

    with process_cluster(2):
        computed = result.compute()
    np.testing.assert_array_equal(computed.data.values, expected)
    np.testing.assert_allclose(result.nifti.affine, expected_affine, atol=1e-5)
    assert result.nifti.axcodes == ("L", "P", "S")
    grid = np.indices(expected.shape[:3]).transpose(1, 2, 3, 0)
    np.testing.assert_allclose(world(computed), apply_affine(expected_affine, grid), atol=1e-4)


# -- real files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["example4d.nii.gz", "anatomical.nii"])
@pytest.mark.parametrize("chunks", [None, {}, "auto", {"i": 5}])
def test_real_files_have_lazy_grid(nibabel_data: Path, name: str, chunks: Any) -> None:
    path = nibabel_data / name
    img = nib.load(path)
    ds = xr.open_dataset(path, engine="nifti", chunks=chunks)
    assert has_grid(ds)
    np.testing.assert_allclose(ds.nifti.affine, img.affine)
    assert ds.nifti.axcodes == nib.aff2axcodes(img.affine) == ("L", "A", "S")
    g = the_index(ds).geometry
    sform, scode = img.header.get_sform(coded=True)
    qform, qcode = img.header.get_qform(coded=True)
    assert (g.sform_code, g.qform_code) == (int(scode), int(qcode))
    np.testing.assert_allclose(g.sform, sform)  # type: ignore[arg-type]
    np.testing.assert_allclose(g.qform, qform, atol=1e-5)  # type: ignore[arg-type]
    ijk = np.array(img.shape[:3]) // 3
    x, y, z = apply_affine(img.affine, ijk)
    out = ds.sel(x=x, y=y, z=z, method="nearest")
    np.testing.assert_array_equal(out.data.values, np.asanyarray(img.dataobj)[tuple(ijk)])


def test_zooms_and_space_follow_slicing(a: xr.Dataset) -> None:
    zooms = np.sqrt((oblique_affine(1)[:3, :3] ** 2).sum(0))
    np.testing.assert_allclose(a.nifti.zooms, zooms)
    sub = a.isel(i=slice(None, None, -2), k=slice(None, None, 3))
    np.testing.assert_allclose(sub.nifti.zooms, zooms * [2, 1, 3])
    np.testing.assert_allclose(a.isel(j=1).nifti.zooms, zooms[[0, 2]])
    assert sub.nifti.space == "mni"


def test_grid_guard_names_source_files() -> None:
    def on_file(affine: np.ndarray, name: str) -> xr.Dataset:
        index = VoxelAffineIndex.from_geometry(
            NiftiGeometry(affine, SHAPE, sform_code=1), source=name
        )
        return xr.Dataset(
            {"data": (("i", "j", "k"), np.zeros(SHAPE))},
            coords=xr.Coordinates.from_xindex(index),
        )

    p = on_file(oblique_affine(1), "sub-01_bold.nii.gz")
    q = on_file(oblique_affine(2), "sub-02_bold.nii.gz")
    # the source survives slicing and renaming but is not part of the grid's identity
    assert the_index(p.isel(i=slice(None, None, -1)).rename(i="a")).transform.source == (
        "sub-01_bold.nii.gz"
    )
    assert the_index(p).equals(the_index(on_file(oblique_affine(1), "other.nii")))
    assert tokenize(the_index(p)) == tokenize(the_index(on_file(oblique_affine(1), "o.nii")))
    with pytest.raises(ValueError, match=r"sub-01_bold\.nii\.gz") as info:
        p + q
    assert "sub-02_bold.nii.gz" in str(info.value)


@pytest.mark.parametrize("prepare", ["lazy", "load", "chunk"])
def test_isel_keeps_transposed_coordinate_layout(a: xr.Dataset, prepare: str) -> None:
    t = a.transpose("k", "j", "i")
    t = {"lazy": t, "load": t.load(), "chunk": t.chunk()}[prepare]
    out = t.isel(j=0, i=slice(None, None, -1))
    assert has_grid(out)
    assert out.x.dims == out.data.dims == ("k", "i")
    np.testing.assert_allclose(out.x.values, a.x.values[::-1, 0, :].T)


@pytest.mark.parametrize("chunks", [None, {}, "auto"])
def test_single_voxel_world_coordinates_compute_to_scalars(chunks: Any) -> None:
    from nibabel.testing import data_path

    ds = xr.open_dataset(Path(data_path) / "example4d.nii.gz", engine="nifti", chunks=chunks)
    expected = nib.affines.apply_affine(ds.nifti.affine, [64, 48, 12])
    picked = ds.data.isel(i=64, j=48, k=12)
    loaded = picked.compute()
    assert loaded.x.shape == ()
    np.testing.assert_allclose([float(loaded.x), float(loaded.y), float(loaded.z)], expected)
    point = ds.data.sel(x=expected[0], y=expected[1], z=expected[2], method="nearest").compute()
    np.testing.assert_array_equal(point.values, ds.data.values[64, 48, 12])
    assert ds.data.x[64, 48, 12].values.shape == ()


# -- operations over non-spatial dims: the grid is kept, or restored ----------------------------


def _time_weights(d: xr.Dataset | xr.DataArray) -> xr.DataArray:
    return xr.DataArray(
        np.linspace(0.5, 1.0, d.sizes["time"]), dims="time", coords={"time": d.time}
    )


def _parity(d: xr.Dataset | xr.DataArray) -> xr.DataArray:
    return xr.DataArray(
        np.arange(d.sizes["time"]) % 2, dims="time", coords={"time": d.time}, name="parity"
    )


def _seconds(d: Any) -> Any:
    return d.assign_coords(time=(d.time.values * 1e9).astype("timedelta64[ns]"))


def _map_blocks_with_restore(d: Any) -> Any:
    plain = d.drop_vars(["x", "y", "z"])
    return xr.map_blocks(lambda b: b * 2, plain).nifti.restore_grid(like=d)


#: operation -> "keep" (the result has the grid), "restore" (dropped, then
#: ``.nifti.restore_grid()`` gets it back) or "restore like" (only
#: ``.nifti.restore_grid(like=original)`` can). docs/concepts/coordinates.md has this table.
NON_SPATIAL_OPS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "coarsen time": (lambda d: d.coarsen(time=4).mean(), "restore"),
    "rolling time": (lambda d: d.rolling(time=3).mean(), "keep"),
    "rolling construct": (lambda d: d.rolling(time=3).construct("window").mean("window"), "keep"),
    "resample time": (lambda d: _seconds(d).resample(time="4s").mean(), "keep"),
    "groupby": (lambda d: d.groupby(_parity(d)).mean(), "keep"),
    "groupby map": (lambda d: d.groupby(_parity(d)).map(lambda g: g - g.mean("time")), "keep"),
    "groupby_bins time": (lambda d: d.groupby_bins("time", 2).mean(), "keep"),
    "weighted mean": (lambda d: d.weighted(_time_weights(d)).mean("time"), "keep"),
    "cumsum": (lambda d: d.cumsum("time"), "keep"),
    "cumulative": (lambda d: d.cumulative("time").sum(), "keep"),
    "map_blocks (x, y, z dropped first)": (_map_blocks_with_restore, "keep"),
    "apply_ufunc": (lambda d: xr.apply_ufunc(np.abs, d, dask="allowed"), "keep"),
    "apply_ufunc core time": (
        lambda d: xr.apply_ufunc(
            lambda a: a.mean(-1), d, input_core_dims=[["time"]], dask="allowed"
        ),
        "keep",
    ),
    "where": (lambda d: d.where(d > 3), "keep"),
    "fillna": (lambda d: d.fillna(0), "keep"),
    "interp time": (lambda d: d.interp(time=[1.0, 3.0]), "keep"),
    "concat time": (
        lambda d: xr.concat([d.isel(time=slice(0, 4)), d.isel(time=slice(4, None))], "time"),
        "keep",
    ),
    "pad time": (lambda d: d.pad(time=(1, 1)), "keep"),
    "diff time": (lambda d: d.diff("time"), "keep"),
    "shift time": (lambda d: d.shift(time=1), "keep"),
    "quantile time": (lambda d: d.quantile(0.5, "time"), "keep"),
    "polyfit time": (lambda d: d.polyfit("time", 1), "restore like"),
}


@pytest.fixture(params=["numpy", "dask"])
def bold(request: pytest.FixtureRequest) -> xr.Dataset:
    chunks = None if request.param == "numpy" else 2
    return grid_dataset(oblique_affine(2), (3, 4, 5, 8), chunks=chunks, sform_code=2)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("kind", ["Dataset", "DataArray"])
@pytest.mark.parametrize("name", list(NON_SPATIAL_OPS))
def test_operations_over_time_keep_or_restore_the_grid(
    bold: xr.Dataset, kind: str, name: str
) -> None:
    op, expected = NON_SPATIAL_OPS[name]
    obj: Any = bold if kind == "Dataset" else bold.data
    out = op(obj)
    if expected == "keep":
        assert has_grid(out)
    else:
        assert not has_grid(out)
        with pytest.raises(ValueError, match="restore_grid") as info:
            _ = out.nifti.affine
        assert "over i/j/k" not in str(info.value)
        out = (
            out.nifti.restore_grid() if expected == "restore" else out.nifti.restore_grid(like=obj)
        )
    assert the_index(out).equals(the_index(bold))
    assert the_index(out).geometry.sform_code == 2
    np.testing.assert_allclose(out.nifti.affine, bold.nifti.affine)


def test_restore_grid_is_lazy(big: xr.Dataset, counter: Counter) -> None:
    coarse = big.coarsen(time=2, boundary="trim").mean()
    counter.reset()
    with dask.config.set(scheduler=raising_scheduler):
        restored = coarse.nifti.restore_grid()
        assert counter.values == 0
        repr(restored)  # shows a few edge values, as for any opened file
    assert counter.values <= 1000
    assert restored.x.attrs == big.x.attrs


def test_restore_grid_refuses_what_it_cannot_prove(a4: xr.Dataset) -> None:
    loaded = a4.coarsen(time=3).mean().load()  # x, y, z are plain numbers now
    with pytest.raises(ValueError, match="restore_grid\\(like=original\\)"):
        loaded.nifti.restore_grid()
    assert has_grid(loaded.nifti.restore_grid(like=a4))
    with pytest.raises(ValueError, match="do not match"):
        a4.isel(i=slice(1, None)).mean("time").nifti.restore_grid(like=a4)
    assert a4.nifti.restore_grid() is a4


def test_missing_grid_messages_name_the_cause(a4: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="restore_grid\\(\\)"):
        _ = a4.coarsen(time=3).mean().nifti.affine
    with pytest.raises(ValueError, match="decode"):
        _ = a4.nifti.encode().nifti.affine
    with pytest.raises(ValueError, match="over i/j/k"):
        _ = a4.mean("k").nifti.affine
    with pytest.raises(ValueError, match="open_dataset"):
        _ = xr.DataArray(np.zeros(3), dims="i").nifti.affine


@pytest.mark.parametrize("chunks", [None, {}, "auto"])
def test_restore_grid_of_a_file_opened_with_any_chunks(nibabel_data: Path, chunks: Any) -> None:
    """``chunks=`` also makes dask arrays of x, y, z: the grid behind them is still found."""
    bold = xr.open_dataset(nibabel_data / "example4d.nii.gz", engine="nifti", chunks=chunks)
    coarse = bold.coarsen(time=2).mean()
    assert not has_grid(coarse)
    with dask.config.set(scheduler=raising_scheduler):
        restored = coarse.nifti.restore_grid()
    assert the_index(restored).equals(the_index(bold))
    np.testing.assert_array_equal(restored.x.values, bold.x.values)
