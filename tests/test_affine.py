"""Pure affine maths (``xarray_nifti.affine``), checked against nibabel and by hand."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nibabel.affines import voxel_sizes as nib_voxel_sizes
from nibabel.orientations import (
    aff2axcodes,
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from helpers import affines, spatial_shapes
from xarray_nifti.affine import (
    XFORM_CODES,
    axcodes,
    check_affine,
    grid_transform,
    orientation_plan,
    space_code,
    space_name,
    voxel_sizes,
)

SETTINGS = settings(max_examples=75, deadline=None)
ALL_AXCODES = [
    "".join(pair[side] for pair, side in zip(pairs, sides, strict=True))
    for pairs in itertools.permutations(("RL", "AP", "SI"))
    for sides in itertools.product((0, 1), repeat=3)
]


def test_all_axcodes_list_is_complete() -> None:
    assert len(ALL_AXCODES) == 48  # 3! permutations x 2**3 flips
    assert {"RAS", "LPS", "LAS", "ASR"} <= set(ALL_AXCODES)


# -- codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [(0, "unknown"), (1, "scanner"), (2, "aligned"), (3, "talairach"), (4, "mni"), (5, "template")],
)
def test_space_name(code: int, name: str) -> None:
    assert space_name(code) == name
    assert XFORM_CODES[code] == name


@pytest.mark.parametrize("code", [-1, 6, 99])
def test_space_name_unknown_codes(code: int) -> None:
    assert space_name(code) == "unknown"


def test_space_name_accepts_numpy_integers() -> None:
    assert space_name(np.int16(4)) == "mni"


# -- check_affine -------------------------------------------------------------------


def test_check_affine_returns_float64() -> None:
    out = check_affine(np.eye(4, dtype=np.float32).tolist())
    assert out.dtype == np.float64
    assert out.shape == (4, 4)


@pytest.mark.parametrize("shape", [(3, 3), (4, 3), (16,), (4, 4, 1)])
def test_check_affine_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="4×4"):
        check_affine(np.zeros(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_affine_rejects_non_finite(bad: float) -> None:
    a = np.eye(4)
    a[1, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_affine(a)


# -- grid_transform -----------------------------------------------------------------


def test_grid_transform_by_hand() -> None:
    t, shape, kept = grid_transform([slice(None, None, -1), 3, slice(1, 5, 2)], (4, 5, 6))
    expected = np.array(
        [[-1.0, 0, 0, 3], [0, 1, 0, 3], [0, 0, 2, 1], [0, 0, 0, 1]],
    )
    np.testing.assert_array_equal(t, expected)
    assert shape == (4, 1, 2)
    assert kept == (True, False, True)


def test_grid_transform_negative_int_wraps() -> None:
    t, shape, kept = grid_transform([-1, slice(None), slice(-2, None)], (4, 5, 6))
    assert t[0, 3] == 3  # -1 -> last voxel
    assert t[2, 3] == 4  # -2 -> 6 - 2
    assert shape == (1, 5, 2)
    assert kept == (False, True, True)


@pytest.mark.parametrize("index", [4, -5, 100])
def test_grid_transform_int_out_of_bounds(index: int) -> None:
    with pytest.raises(IndexError, match="out of bounds"):
        grid_transform([index, slice(None), slice(None)], (4, 5, 6))


def test_grid_transform_needs_one_indexer_per_axis() -> None:
    with pytest.raises(ValueError, match="one indexer per axis"):
        grid_transform([slice(None)], (4, 5, 6))


def test_grid_transform_empty_slice() -> None:
    _, shape, _ = grid_transform([slice(3, 1), slice(None), slice(None)], (4, 5, 6))
    assert shape == (0, 5, 6)


slices = st.builds(
    slice,
    st.one_of(st.none(), st.integers(-9, 9)),
    st.one_of(st.none(), st.integers(-9, 9)),
    st.one_of(st.none(), st.integers(-3, 3).filter(bool)),
)


@SETTINGS
@given(shape=spatial_shapes(), data=st.data())
def test_grid_transform_matches_slice_indices(
    shape: tuple[int, int, int], data: st.DataObject
) -> None:
    indexers: list[int | slice] = [
        data.draw(st.one_of(slices, st.integers(-n, n - 1))) for n in shape
    ]
    t, new_shape, kept = grid_transform(indexers, shape)
    for axis, (idx, n) in enumerate(zip(indexers, shape, strict=True)):
        kept_voxels = np.arange(n)[idx]
        if isinstance(idx, slice):
            start, _, step = idx.indices(n)
            assert t[axis, axis] == step
            assert t[axis, 3] == start
            assert new_shape[axis] == kept_voxels.size
            assert kept[axis]
            # voxel m of the new grid is voxel start + m*step of the old one
            np.testing.assert_array_equal(
                t[axis, axis] * np.arange(new_shape[axis]) + t[axis, 3], kept_voxels
            )
        else:
            assert t[axis, axis] == 1
            assert t[axis, 3] == kept_voxels
            assert new_shape[axis] == 1
            assert not kept[axis]
    # no cross terms
    off_diag = t[:3, :3] - np.diag(np.diag(t[:3, :3]))
    assert not off_diag.any()
    np.testing.assert_array_equal(t[3], [0, 0, 0, 1])


# -- voxel sizes and axcodes --------------------------------------------------------------


@SETTINGS
@given(affine=affines())
def test_voxel_sizes_match_nibabel(affine: np.ndarray) -> None:
    np.testing.assert_allclose(voxel_sizes(affine), nib_voxel_sizes(affine))


def test_voxel_sizes_by_hand() -> None:
    assert voxel_sizes(np.diag([2.0, -3.0, 4.0, 1.0])).tolist() == [2.0, 3.0, 4.0]


@SETTINGS
@given(affine=affines())
def test_axcodes_match_aff2axcodes(affine: np.ndarray) -> None:
    assert axcodes(affine) == tuple(aff2axcodes(affine))
    assert axcodes(affine) == tuple(nib.aff2axcodes(affine))


@pytest.mark.parametrize(
    ("diag", "codes"),
    [
        ([1, 1, 1], ("R", "A", "S")),
        ([-1, 1, 1], ("L", "A", "S")),
        ([-1, -1, 1], ("L", "P", "S")),
        ([1, 1, -1], ("R", "A", "I")),
    ],
)
def test_axcodes_by_hand(diag: list[float], codes: tuple[str, ...]) -> None:
    assert axcodes(np.diag([*diag, 1.0])) == codes


def test_axcodes_permuted() -> None:
    a = np.array([[0, 0, -2.0, 0], [1.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]])
    assert axcodes(a) == ("A", "S", "L")


def test_axcodes_zero_column_gives_question_mark() -> None:
    a = np.diag([2.0, 2.0, 0.0, 1.0])
    assert axcodes(a) == ("R", "A", "?")
    assert aff2axcodes(a) == ("R", "A", None)


# -- orientation_plan ------------------------------------------------------------------------


@SETTINGS
@given(affine=affines(), shape=spatial_shapes(), target=st.sampled_from(ALL_AXCODES))
def test_orientation_plan_matches_nibabel(
    affine: np.ndarray, shape: tuple[int, int, int], target: str
) -> None:
    order, flips, transform = orientation_plan(affine, target, shape)
    ornt = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(target)))
    np.testing.assert_allclose(transform, inv_ornt_aff(ornt, shape))
    new_affine = affine @ transform
    assert "".join(aff2axcodes(new_affine)) == target
    # order/flips describe the same data rearrangement as apply_orientation
    data = np.arange(int(np.prod(shape))).reshape(shape)
    flipped = data[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    np.testing.assert_array_equal(flipped.transpose(order), apply_orientation(data, ornt))
    # only flips and permutations: the transform's 3x3 part is a signed permutation
    core = transform[:3, :3]
    assert sorted(np.abs(core).sum(axis=0).tolist()) == [1.0, 1.0, 1.0]
    assert set(np.unique(core)) <= {-1.0, 0.0, 1.0}


@SETTINGS
@given(affine=affines(), shape=spatial_shapes())
def test_orientation_plan_keeps_world_positions(
    affine: np.ndarray, shape: tuple[int, int, int]
) -> None:
    order, _flips, transform = orientation_plan(affine, "LPS", shape)
    new_shape = tuple(shape[a] for a in order)
    new_vox = np.stack(np.meshgrid(*[np.arange(n) for n in new_shape], indexing="ij"), -1)
    old_vox = nib.affines.apply_affine(transform, new_vox)
    # every new voxel is an old voxel inside the grid ...
    assert np.allclose(old_vox, np.round(old_vox))
    assert (old_vox >= 0).all()
    assert (old_vox < np.array(shape)).all()
    # ... at the same world position
    np.testing.assert_allclose(
        nib.affines.apply_affine(affine @ transform, new_vox),
        nib.affines.apply_affine(affine, old_vox),
        atol=1e-9,
    )


def test_orientation_plan_identity() -> None:
    order, flips, transform = orientation_plan(np.diag([2.0, 2, 2, 1]), "RAS", (3, 4, 5))
    assert order == (0, 1, 2)
    assert flips == (False, False, False)
    np.testing.assert_array_equal(transform, np.eye(4))


def test_orientation_plan_accepts_tuple_codes() -> None:
    a = np.diag([-1.0, 1, 1, 1])
    assert (
        orientation_plan(a, ("R", "A", "S"), (3, 4, 5))[:2]
        == orientation_plan(a, "RAS", (3, 4, 5))[:2]
    )


@pytest.mark.parametrize("target", ["RA", "RASX", "RRS", "XYZ", "RLS"])
def test_orientation_plan_invalid_codes(target: str) -> None:
    with pytest.raises(ValueError, match="axis codes"):
        orientation_plan(np.eye(4), target, (2, 2, 2))


def test_orientation_plan_degenerate_affine() -> None:
    with pytest.raises(ValueError, match="no direction"):
        orientation_plan(np.diag([1.0, 1.0, 0.0, 1.0]), "RAS", (2, 2, 2))


def test_orientation_plan_is_case_insensitive() -> None:
    a = np.diag([-1.0, 1, 1, 1])
    assert orientation_plan(a, "lps", (3, 4, 5))[:2] == orientation_plan(a, "LPS", (3, 4, 5))[:2]


@pytest.mark.parametrize("code", list(XFORM_CODES))
def test_space_code_inverts_space_name(code: int) -> None:
    assert space_code(space_name(code)) == code
    assert space_code(f" {space_name(code).upper()} ") == code


def test_space_code_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="'scanner', 'aligned'"):
        space_code("ras")
    with pytest.raises(TypeError, match="named by a string"):
        space_code(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", [None, 3, ("R", "A", None), ("RA", "S")])
def test_orientation_plan_non_letters_are_type_errors(target: object) -> None:
    with pytest.raises(TypeError, match="axis codes must be"):
        orientation_plan(np.eye(4), target, (2, 2, 2))  # type: ignore[arg-type]
