"""The `.nifti` accessor façade: properties, headers and errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from nilearn.image import resample_to_img

from helpers import grid_dataset


@pytest.fixture
def bold(nibabel_data: Path) -> xr.Dataset:
    return xr.open_dataset(nibabel_data / "example4d.nii.gz", engine="nifti")


def test_properties_match_nibabel(bold: xr.Dataset, nibabel_data: Path) -> None:
    img = nib.load(nibabel_data / "example4d.nii.gz")
    for obj in (bold, bold.data):
        np.testing.assert_allclose(obj.nifti.affine, img.affine)
        assert obj.nifti.axcodes == nib.aff2axcodes(img.affine)
        np.testing.assert_allclose(obj.nifti.zooms, img.header.get_zooms(), rtol=1e-6)
        assert obj.nifti.space == "scanner"


def test_zooms_follow_slicing_steps_and_time_step(bold: xr.Dataset) -> None:
    sliced = bold.data.isel(i=slice(None, None, 2), k=slice(1, None, -1), time=slice(None, None, 2))
    zooms = sliced.nifti.zooms
    np.testing.assert_allclose(
        zooms[:3], np.array(bold.data.nifti.zooms[:3]) * [2, 1, 1], rtol=1e-6
    )
    assert len(zooms) == 4
    assert sliced.sizes["time"] == 1
    assert zooms[3] == bold.data.attrs["repetition_time"]


def test_integer_selection_keeps_a_plane_that_knows_its_world_position(bold: xr.Dataset) -> None:
    plane = bold.data.isel(k=5, time=0)
    assert plane.dims == ("i", "j")
    assert plane.nifti.axcodes == ("L", "A")
    affine = plane.nifti.affine
    assert affine.shape == (4, 4)
    expected = bold.data.nifti.affine @ np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]], dtype=float
    )
    np.testing.assert_allclose(affine, expected)
    x, y, z = plane.nifti.voxel_to_world(3, 4, 0)
    np.testing.assert_allclose(
        [float(x), float(y), float(z)], nib.affines.apply_affine(bold.data.nifti.affine, [3, 4, 5])
    )


def test_affine_columns_follow_transposed_dims(bold: xr.Dataset) -> None:
    transposed = bold.data.transpose("time", "k", "i", "j")
    np.testing.assert_allclose(transposed.nifti.affine, bold.data.nifti.affine[:, [2, 0, 1, 3]])


def test_voxel_to_world_returns_the_same_kind(bold: xr.Dataset) -> None:
    i = xr.DataArray([0, 10], dims="p")
    x, _, _ = bold.nifti.voxel_to_world(i, i, i)
    assert isinstance(x, xr.DataArray)
    assert x.dims == ("p",)
    xs, _, _ = bold.nifti.voxel_to_world(np.array([0, 1]), 0, 0)
    assert isinstance(xs, np.ndarray)
    back = bold.nifti.world_to_voxel(*bold.nifti.voxel_to_world(i, i, i), round=True)
    for axis in back:
        assert isinstance(axis, xr.DataArray)
        assert axis.dtype == np.int64
        np.testing.assert_array_equal(axis.values, [0, 10])


def test_header_is_what_to_nifti_writes(bold: xr.Dataset, tmp_path: Path) -> None:
    header = bold.data.nifti.header
    written = nib.load(bold.data.nifti.to_nifti(tmp_path / "out.nii")).header
    for field in ("dim", "pixdim", "sform_code", "qform_code", "srow_x", "xyzt_units", "datatype"):
        np.testing.assert_array_equal(header[field], written[field])


def test_no_grid_gives_a_clear_error(bold: xr.Dataset) -> None:
    reduced = bold.data.mean("k")
    with pytest.raises(ValueError, match="no NIfTI voxel grid"):
        _ = reduced.nifti.affine
    fancy = bold.data.isel(i=[0, 5, 7])
    with pytest.raises(ValueError, match="fancy"):
        fancy.nifti.to_canonical()
    plain = xr.DataArray(np.zeros((2, 2, 2)), dims=("i", "j", "k"))
    with pytest.raises(ValueError, match="engine='nifti'"):
        plain.nifti.to_nifti("never-written.nii")
    assert not Path("never-written.nii").exists()


def test_world_to_voxel_singular_affine() -> None:
    da = grid_dataset(np.diag([1.0, 1.0, 0.0, 1.0]), (2, 2, 2), chunks=None).data
    with pytest.raises(ValueError, match="singular"):
        da.nifti.world_to_voxel(0, 0, 0)


def test_dataset_geometry_follows_the_image_not_a_1d_variable(bold: xr.Dataset) -> None:
    transposed = bold.transpose("k", "j", "i", "time")
    mixed = xr.Dataset({"slice_times": ("k", np.arange(24.0)), "data": transposed.data})
    assert mixed.nifti.axcodes == transposed.data.nifti.axcodes
    np.testing.assert_allclose(mixed.nifti.affine, transposed.data.nifti.affine)


# -- world space labels ----------------------------------------------------------------------


@pytest.fixture
def nilearn_mask(nibabel_data: Path, tmp_path: Path) -> Path:
    """A brain mask made on example4d's grid as sform_code 2, resampled by nilearn onto it."""
    bold = nib.load(nibabel_data / "example4d.nii.gz")
    volume = np.asanyarray(bold.dataobj)[..., 0]
    mask = nib.Nifti1Image((volume > np.median(volume)).astype(np.uint8), bold.affine)
    mask.set_sform(bold.affine, 2)
    reference = nib.Nifti1Image(np.zeros(bold.shape[:3], np.float32), bold.affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resampled = resample_to_img(
            mask, reference, interpolation="nearest", force_resample=True, copy_header=True
        )
    assert int(resampled.header["sform_code"]) == 2
    np.testing.assert_array_equal(resampled.affine, bold.affine)
    path = tmp_path / "mask.nii.gz"
    nib.save(resampled, path)
    return path


def test_space_only_difference_is_named_and_set_space_fixes_it(
    bold: xr.Dataset, nilearn_mask: Path
) -> None:
    mask = xr.open_dataset(nilearn_mask, engine="nifti", chunks={})
    assert (bold.nifti.space, mask.nifti.space) == ("scanner", "aligned")
    for combine in (
        lambda m: bold.data * m.data,
        lambda m: xr.align(bold, m),
        lambda m: xr.merge([bold, m.rename(data="mask")], join="outer"),
    ):
        with pytest.raises(ValueError, match="labelled as different world spaces") as info:
            combine(mask)
        assert "set_space('scanner')" in str(info.value)
        assert "mask.nii.gz" in str(info.value)
        combine(mask.nifti.set_space("scanner"))
    relabelled = mask.nifti.set_space("scanner")
    masked = bold.data * relabelled.data
    expected = (
        np.asanyarray(nib.load(bold.encoding["source"]).dataobj)
        * np.asanyarray(nib.load(nilearn_mask).dataobj)[..., None]
    )
    np.testing.assert_array_equal(masked.values, expected)
    np.testing.assert_array_equal(relabelled.nifti.affine, mask.nifti.affine)
    assert int(relabelled.data.nifti.header["sform_code"]) == 1


@pytest.mark.parametrize(
    ("space", "code"),
    [("scanner", 1), ("aligned", 2), ("talairach", 3), ("mni", 4), ("template", 5), ("MNI", 4)],
)
def test_set_space_on_dataset_and_dataarray(bold: xr.Dataset, space: str, code: int) -> None:
    for obj in (bold, bold.data):
        out = obj.nifti.set_space(space)
        assert type(out) is type(obj)
        assert out.nifti.space == space.lower()
        # example4d's sform and qform both hold the affine: both are relabelled
        assert (out.nifti.geometry.sform_code, out.nifti.geometry.qform_code) == (code, code)
        assert out.nifti.geometry.same_voxels(obj.nifti.geometry)
        assert obj.nifti.space == "scanner"  # the input is unchanged


def test_set_space_unknown_and_bad_names(bold: xr.Dataset) -> None:
    unknown = bold.nifti.set_space("unknown")
    assert unknown.nifti.space == "unknown"
    np.testing.assert_array_equal(unknown.nifti.affine, bold.nifti.affine)
    with pytest.raises(ValueError, match=r"unknown world space 'MNI152'.*'mni'"):
        bold.nifti.set_space("MNI152")
    with pytest.raises(TypeError, match="world space is named by a string"):
        bold.nifti.set_space(4)  # type: ignore[arg-type]
