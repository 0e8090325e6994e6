"""``NiftiGeometry`` and ``VoxelAffineTransform``: lazy voxel → world maths."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from dask.base import tokenize
from hypothesis import given, settings
from hypothesis import strategies as st
from nibabel.affines import apply_affine

from helpers import affines, oblique_affine, spatial_shapes
from xarray_nifti.affine import grid_transform
from xarray_nifti.transform import (
    GRID_TOLERANCE_MM,
    NiftiGeometry,
    VoxelAffineTransform,
)

SETTINGS = settings(max_examples=60, deadline=None)


def geometry(seed: int = 0, shape: tuple[int, int, int] = (4, 5, 6), **kw: object) -> NiftiGeometry:
    a = oblique_affine(seed)
    kw.setdefault("sform", a)
    kw.setdefault("qform", a + 0.5)
    kw.setdefault("sform_code", 4)
    kw.setdefault("qform_code", 1)
    return NiftiGeometry(a, shape, **kw)  # type: ignore[arg-type]


def grid_points(shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)


# -- NiftiGeometry ----------------------------------------------------------------------


def test_geometry_normalises_types() -> None:
    g = NiftiGeometry(np.eye(4, dtype=np.float32), (np.int64(2), 3, 4), sform_code=np.int16(2))
    assert g.affine.dtype == np.float64
    assert g.shape == (2, 3, 4)
    assert all(type(n) is int for n in g.shape)
    assert type(g.sform_code) is int
    assert g.sform is None
    assert g.qform is None


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4, 5)])
def test_geometry_needs_three_axes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="three voxel axes"):
        NiftiGeometry(np.eye(4), shape)  # type: ignore[arg-type]


def test_geometry_rejects_bad_forms() -> None:
    with pytest.raises(ValueError, match="4×4"):
        NiftiGeometry(np.eye(3), (2, 2, 2))
    with pytest.raises(ValueError, match="4×4"):
        NiftiGeometry(np.eye(4), (2, 2, 2), sform=np.eye(3))


@pytest.mark.parametrize(
    ("sform_code", "qform_code", "code", "space"),
    [
        (0, 0, 0, "unknown"),
        (0, 1, 1, "scanner"),
        (2, 1, 2, "aligned"),
        (3, 0, 3, "talairach"),
        (4, 2, 4, "mni"),
        (5, 1, 5, "template"),
    ],
)
def test_geometry_code_prefers_sform(
    sform_code: int, qform_code: int, code: int, space: str
) -> None:
    g = NiftiGeometry(np.eye(4), (2, 2, 2), sform_code=sform_code, qform_code=qform_code)
    assert g.code == code
    assert g.space == space


def test_geometry_axcodes() -> None:
    assert NiftiGeometry(np.diag([-2.0, 2, 2, 1]), (2, 2, 2)).axcodes == ("L", "A", "S")


def test_geometry_transformed_moves_all_forms_and_keeps_codes() -> None:
    g = geometry()
    t, shape, _ = grid_transform([slice(None, None, -2), 1, slice(1, 5)], g.shape)
    new = g.transformed(t, shape)
    np.testing.assert_allclose(new.affine, g.affine @ t)
    assert g.sform is not None
    assert g.qform is not None
    np.testing.assert_allclose(new.sform, g.sform @ t)  # type: ignore[arg-type]
    np.testing.assert_allclose(new.qform, g.qform @ t)  # type: ignore[arg-type]
    assert (new.sform_code, new.qform_code) == (4, 1)
    assert new.shape == (2, 1, 4)


def test_geometry_transformed_without_forms() -> None:
    g = NiftiGeometry(np.eye(4), (3, 3, 3))
    new = g.transformed(np.eye(4), (3, 3, 3))
    assert new.sform is None
    assert new.qform is None


def test_same_grid_tolerance() -> None:
    g = geometry()
    close = NiftiGeometry(g.affine + GRID_TOLERANCE_MM / 2, g.shape, sform_code=4)
    far = NiftiGeometry(g.affine + GRID_TOLERANCE_MM * 10, g.shape, sform_code=4)
    assert g.same_grid(close)
    assert not g.same_grid(far)
    assert g.same_grid(far, tolerance=1.0)


def test_same_grid_needs_same_shape_and_space() -> None:
    g = geometry()
    assert not g.same_grid(geometry(shape=(4, 5, 7)))
    assert not g.same_grid(geometry(sform_code=1))
    assert g.same_grid(geometry(qform_code=2))  # the qform code does not pick the affine


def test_token_is_deterministic_and_sensitive() -> None:
    assert geometry().token() == geometry().token()
    assert geometry().token() != geometry(1).token()
    assert geometry().token() != geometry(sform_code=2).token()
    assert geometry().token() != geometry(qform=np.eye(4)).token()
    assert geometry().token() != geometry(shape=(4, 5, 7)).token()


# -- VoxelAffineTransform ------------------------------------------------------------------


def test_transform_dims_and_sizes() -> None:
    t = VoxelAffineTransform(geometry())
    assert t.dims == ("i", "j", "k")
    assert dict(t.dim_size) == {"i": 4, "j": 5, "k": 6}
    assert t.coord_names == ("x", "y", "z")
    assert t.present_axes == (0, 1, 2)
    assert t.dtype == np.float64


def test_transform_needs_three_axis_dims() -> None:
    with pytest.raises(ValueError, match="one entry per voxel axis"):
        VoxelAffineTransform(geometry(), ("i", "j"))


@SETTINGS
@given(affine=affines(), shape=spatial_shapes())
def test_forward_matches_apply_affine(affine: np.ndarray, shape: tuple[int, int, int]) -> None:
    t = VoxelAffineTransform(NiftiGeometry(affine, shape))
    coords = t.generate_coords()
    expected = apply_affine(affine, grid_points(shape))
    for n, name in enumerate("xyz"):
        np.testing.assert_allclose(coords[name], expected[..., n], atol=1e-9)


@SETTINGS
@given(affine=affines(), data=st.data())
def test_reverse_inverts_forward(affine: np.ndarray, data: st.DataObject) -> None:
    t = VoxelAffineTransform(NiftiGeometry(affine, (9, 9, 9)))
    n = data.draw(st.integers(1, 5))
    points = data.draw(
        st.lists(st.tuples(*[st.floats(-2.0, 10.0, allow_nan=False)] * 3), min_size=n, max_size=n)
    )
    ijk = np.array(points).T
    world = t.forward(dict(zip("ijk", ijk, strict=True)))
    back = t.reverse(world)
    np.testing.assert_allclose(np.stack([back[d] for d in "ijk"]), ijk, atol=1e-8)


def test_reverse_scalars() -> None:
    t = VoxelAffineTransform(geometry())
    world = t.forward({"i": 1.0, "j": 2.0, "k": 3.0})
    back = t.reverse(world)
    assert [round(float(back[d]), 9) for d in "ijk"] == [1.0, 2.0, 3.0]
    assert np.shape(back["i"]) == ()


def test_reverse_singular_affine_raises() -> None:
    t = VoxelAffineTransform(NiftiGeometry(np.diag([1.0, 1.0, 0.0, 1.0]), (2, 2, 2)))
    with pytest.raises(ValueError, match="singular"):
        t.reverse({"x": 0.0, "y": 0.0, "z": 0.0})


def test_isel_keeps_dropped_axis_column_and_moves_translation() -> None:
    g = geometry()
    t = VoxelAffineTransform(g).isel({"k": 3, "i": slice(1, None)})
    assert t.axis_dims == ("i", "j", None)
    assert t.dims == ("i", "j")
    assert dict(t.dim_size) == {"i": 3, "j": 5}
    expected = g.affine.copy()
    expected[:3, 3] = apply_affine(g.affine, [1, 0, 3])
    np.testing.assert_allclose(t.geometry.affine, expected)
    # world positions of the plane
    coords = t.generate_coords()
    ii, jj = np.meshgrid(np.arange(3), np.arange(5), indexing="ij")
    world = apply_affine(g.affine, np.stack([ii + 1, jj, np.full_like(ii, 3)], -1))
    np.testing.assert_allclose(coords["x"], world[..., 0])
    np.testing.assert_allclose(coords["z"], world[..., 2])


def test_isel_ignores_unknown_dims_and_dropped_axes() -> None:
    t = VoxelAffineTransform(geometry()).isel({"k": 0})
    again = t.isel({"k": 2, "time": 1})  # k is gone: nothing changes
    np.testing.assert_array_equal(again.geometry.affine, t.geometry.affine)
    assert again.axis_dims == t.axis_dims


def test_reverse_on_plane_and_voxel_positions_off_plane() -> None:
    g = geometry()
    t = VoxelAffineTransform(g).isel({"j": 2})
    world = dict(zip("xyz", apply_affine(g.affine, [3.0, 2.0, 4.0]), strict=True))
    back = t.reverse(world)
    assert set(back) == {"i", "k"}
    np.testing.assert_allclose([back["i"], back["k"]], [3.0, 4.0])
    off = dict(zip("xyz", apply_affine(g.affine, [3.0, 4.5, 4.0]), strict=True))
    positions = t.voxel_positions(off)
    np.testing.assert_allclose(positions, [3.0, 2.5, 4.0])  # 2.5 voxels off the plane


def test_voxel_positions_shape() -> None:
    t = VoxelAffineTransform(geometry())
    pts = {name: np.zeros((2, 3)) for name in "xyz"}
    assert t.voxel_positions(pts).shape == (3, 2, 3)


def test_two_d_transform_with_degenerate_dropped_axis() -> None:
    # a 2-D file whose third column is zero: the plane still maps back
    a = np.diag([2.0, 3.0, 0.0, 1.0])
    t = VoxelAffineTransform(NiftiGeometry(a, (4, 5, 1)), ("i", "j", None))
    back = t.reverse({"x": 4.0, "y": 6.0, "z": 7.0})
    np.testing.assert_allclose([back["i"], back["j"]], [2.0, 2.0])


def test_forward_broadcasts_and_handles_no_axes() -> None:
    g = geometry()
    t = VoxelAffineTransform(g)
    out = t.forward({"i": np.arange(3)[:, None], "j": np.arange(2)[None, :], "k": 1})
    assert np.shape(out["x"]) == (3, 2)
    point = VoxelAffineTransform(g, (None, None, None))
    np.testing.assert_allclose([point.forward({})[n] for n in "xyz"], g.affine[:3, 3])


def test_equals() -> None:
    t = VoxelAffineTransform(geometry())
    assert t.equals(VoxelAffineTransform(geometry()))
    assert not t.equals(VoxelAffineTransform(geometry(1)))
    assert not t.equals(t.with_dims(("a", "j", "k")))
    assert not t.equals(t.isel({"k": 0}))
    assert not t.equals(object())  # type: ignore[arg-type]
    nudged = NiftiGeometry(t.geometry.affine + 1e-6, t.geometry.shape, sform_code=4)
    assert t.equals(VoxelAffineTransform(nudged))


def test_dask_tokenize() -> None:
    t = VoxelAffineTransform(geometry())
    assert tokenize(t) == tokenize(VoxelAffineTransform(geometry()))
    assert tokenize(t) == tokenize(pickle.loads(pickle.dumps(t)))
    assert tokenize(t) != tokenize(VoxelAffineTransform(geometry(1)))
    assert tokenize(t) != tokenize(t.isel({"i": slice(None, None, -1)}))
    assert tokenize(t) != tokenize(t.with_dims(("i", "j", "k"), ("X", "Y", "Z")))


def test_with_dims() -> None:
    t = VoxelAffineTransform(geometry()).with_dims(("a", "b", "c"), ("X", "Y", "Z"))
    assert t.dims == ("a", "b", "c")
    assert t.coord_names == ("X", "Y", "Z")
    assert t.with_dims(("p", "q", "r")).coord_names == ("X", "Y", "Z")


def test_repr() -> None:
    text = repr(VoxelAffineTransform(geometry()))
    assert "VoxelAffineTransform" in text
    assert "axcodes=" in text
    assert "space=mni" in text
    assert "affine=" in text


def test_pickle_roundtrip() -> None:
    t = VoxelAffineTransform(geometry()).isel({"i": slice(None, None, -1), "k": 2})
    back = pickle.loads(pickle.dumps(t))
    assert back.equals(t)
    assert back.axis_dims == t.axis_dims
    np.testing.assert_array_equal(back.geometry.qform, t.geometry.qform)  # type: ignore[arg-type]


# -- world space labels ------------------------------------------------------------------------


def test_in_space_relabels_the_forms_that_hold_the_affine() -> None:
    affine = oblique_affine(3)
    scanner = affine + 5.0  # a qform in another space maps elsewhere
    g = NiftiGeometry(affine, (2, 3, 4), sform=affine, qform=scanner, sform_code=2, qform_code=1)
    mni = g.in_space(4)
    assert (mni.sform_code, mni.qform_code, mni.space) == (4, 1, "mni")
    np.testing.assert_array_equal(mni.affine, g.affine)
    assert mni.same_voxels(g)
    assert not mni.same_grid(g)
    both = NiftiGeometry(affine, (2, 3, 4), sform=affine, qform=affine, sform_code=2, qform_code=2)
    assert (both.in_space(1).sform_code, both.in_space(1).qform_code) == (1, 1)
    assert (both.in_space(0).code, both.in_space(0).space) == (0, "unknown")


def test_in_space_labels_an_unlabelled_grid_through_its_sform() -> None:
    g = NiftiGeometry(np.diag([2.0, 2, 2, 1]), (2, 2, 2))
    talairach = g.in_space(3)
    assert (talairach.sform_code, talairach.qform_code, talairach.space) == (3, 0, "talairach")
    np.testing.assert_array_equal(talairach.sform, g.affine)  # type: ignore[arg-type]
