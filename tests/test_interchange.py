"""nibabel interchange (``to_nibabel``/``from_nibabel``) and NetCDF/Zarr (``encode``/``decode``)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from helpers import NIBABEL_DATA, nifti_differences, oblique_affine
from xarray_nifti import transform as transform_module
from xarray_nifti.interchange import GEOMETRY_ATTRS, decode, encode, from_nibabel

FILES = [
    "anatomical.nii",
    "example4d.nii.gz",
    "example_nifti2.nii.gz",
    "functional.nii",
    "standard.nii.gz",
]


def open_nifti(path: Path | str, **kwargs: object) -> xr.Dataset:
    return xr.open_dataset(path, engine="nifti", **kwargs)


def assert_same(expected: object, actual: object) -> None:
    differences = nifti_differences(expected, actual)
    assert not differences, "\n".join(differences)


# -- to_nibabel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_to_nibabel_header_is_what_to_nifti_writes(name: str, tmp_path: Path) -> None:
    with open_nifti(NIBABEL_DATA / name, chunks={}) as ds:
        img = ds.nifti.to_nibabel()
        ds.nifti.to_nifti(tmp_path / "out.nii")
        data = ds.data.values
    written = nib.load(tmp_path / "out.nii")
    assert type(img) is type(written)
    for field in written.header:
        if field in ("vox_offset", "scl_slope", "scl_inter"):
            continue
        ours, theirs = np.asarray(img.header[field]), np.asarray(written.header[field])
        nan = ours.dtype.kind == "f"
        assert np.array_equal(ours, theirs, equal_nan=nan), field
    assert np.array_equal(img.affine, written.affine)
    assert [e.content for e in img.header.extensions] == [
        e.content for e in written.header.extensions
    ]
    assert np.array_equal(np.asanyarray(img.dataobj), data, equal_nan=True)
    # nib.save of the lazy image: the same values.
    nib.save(img, tmp_path / "nibabel.nii")
    assert np.allclose(
        nib.load(tmp_path / "nibabel.nii").get_fdata(), written.get_fdata(), equal_nan=True
    )


def test_to_nibabel_is_lazy() -> None:
    computed: list[int] = []
    lock = threading.Lock()

    def make(x: np.ndarray) -> np.ndarray:
        with lock:
            computed.append(1)
        return x + 1

    template = from_nibabel(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), oblique_affine(2)))
    source = da.zeros((4, 5, 6), chunks=(4, 5, 2), dtype=np.float32)
    lazy = template.data.copy(data=da.map_blocks(make, source, dtype=np.float32))
    computed.clear()  # dask's meta inference ran ``make`` on empty arrays
    img = lazy.nifti.to_nibabel()
    assert computed == []
    assert img.shape == (4, 5, 6)
    assert img.get_data_dtype() == np.float32
    assert computed == []
    assert np.asanyarray(img.dataobj[:, :, 1:3]).sum() == 4 * 5 * 2
    assert len(computed) == 2  # only the two chunks that hold k = 1 and k = 2
    assert img.get_fdata().sum() == 4 * 5 * 6
    assert np.allclose(img.affine, oblique_affine(2), atol=1e-5)


def test_to_nibabel_reoriented_and_versions() -> None:
    with open_nifti(NIBABEL_DATA / "example4d.nii.gz") as ds:
        lps = ds.nifti.reorient("LPS")
        img = lps.nifti.to_nibabel()
        img2 = ds.nifti.to_nibabel(version=2)
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        assert (img.header["sform_code"], img.header["qform_code"]) == (1, 1)
        assert np.array_equal(np.asanyarray(img.dataobj), lps.data.values)
        assert isinstance(img2, nib.Nifti2Image)
        assert (
            img.header.get_zooms()[3]
            == nib.load(NIBABEL_DATA / "example4d.nii.gz").header.get_zooms()[3]
        )


def test_to_nibabel_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii")
    with open_nifti(tmp_path / "rgb.nii") as ds:
        img = ds.nifti.to_nibabel()
    assert img.get_data_dtype() == rgb.dtype
    assert np.array_equal(np.asanyarray(img.dataobj), rgb)


# -- from_nibabel --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_from_nibabel_file_backed_equals_open_dataset(name: str) -> None:
    path = NIBABEL_DATA / name
    with from_nibabel(nib.load(path)) as ours, open_nifti(path) as expected:
        xr.testing.assert_identical(ours, expected)
        assert ours.data.encoding["source"] == expected.data.encoding["source"]
        assert ours.nifti.space == expected.nifti.space


def test_from_nibabel_in_memory_equals_a_saved_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(4, 5, 6, 3)).astype(np.float32)
    img = nib.Nifti1Image(data, oblique_affine(5))
    img.set_sform(oblique_affine(5), code=4)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 1.5
    nib.save(img, tmp_path / "saved.nii")
    with from_nibabel(img) as ours, open_nifti(tmp_path / "saved.nii") as expected:
        xr.testing.assert_identical(ours.load(), expected.load())
        assert ours.nifti.space == "mni"
    for image_class in (nib.Nifti2Image, nib.Nifti1Pair, nib.Nifti2Pair):
        other = image_class(data, oblique_affine(5))
        ds = from_nibabel(other)
        assert ds.data.encoding["format"] == ("nifti2" if "2" in image_class.__name__ else "nifti1")
        np.testing.assert_array_equal(ds.data.values, data)


def test_from_nibabel_changed_header_is_not_read_from_the_file(tmp_path: Path) -> None:
    shutil.copy(NIBABEL_DATA / "anatomical.nii", tmp_path / "a.nii")
    img = nib.load(tmp_path / "a.nii")
    img.header["descrip"] = b"changed in memory"
    ds = from_nibabel(img)
    assert ds.data.attrs["descrip"] == "changed in memory"
    assert ds.data.encoding["source"] != str(tmp_path / "a.nii")
    unchanged = from_nibabel(nib.load(tmp_path / "a.nii"))
    assert unchanged.data.encoding["source"] == str(tmp_path / "a.nii")


def test_from_nibabel_rejects_other_images() -> None:
    with pytest.raises(TypeError, match="NIfTI or Analyze image"):
        from_nibabel(np.zeros((2, 2, 2)))


def test_from_nibabel_round_trip_to_nibabel(tmp_path: Path) -> None:
    path = NIBABEL_DATA / "example_nifti2.nii.gz"
    img = from_nibabel(nib.load(path)).nifti.to_nibabel()
    nib.save(img, tmp_path / "back.nii.gz")
    back = nib.load(tmp_path / "back.nii.gz")
    assert np.array_equal(back.affine, nib.load(path).affine)
    assert np.allclose(back.get_fdata(), nib.load(path).get_fdata())


# -- encode / decode -----------------------------------------------------------------------------


@pytest.fixture
def forward_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = transform_module.VoxelAffineTransform.forward

    def counting(self, dim_positions):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(self, dim_positions)

    monkeypatch.setattr(transform_module.VoxelAffineTransform, "forward", counting)
    return calls


def test_encode_computes_no_world_coordinates(forward_calls: list[int]) -> None:
    with open_nifti(NIBABEL_DATA / "example4d.nii.gz", chunks={}) as ds:
        plain = ds.nifti.encode()
        assert forward_calls == []
        assert not {"x", "y", "z"} & set(plain.variables)
        assert plain.xindexes == {} or "x" not in plain.xindexes
        for name in ("nifti_affine", "nifti_sform", "nifti_qform"):
            assert len(plain.data.attrs[name]) == 16
            assert all(isinstance(v, float) for v in plain.data.attrs[name])
        assert plain.attrs["nifti_sform_code"] == plain.attrs["nifti_qform_code"] == 1
        # The input is left as it was.
        assert "nifti_affine" not in ds.data.attrs
        assert "extensions" in ds.data.encoding
        assert forward_calls == []


@pytest.mark.filterwarnings("ignore:saving variable:xarray.SerializationWarning")
@pytest.mark.parametrize("name", FILES)
def test_nifti_zarr_nifti_is_exact(name: str, tmp_path: Path, forward_calls: list[int]) -> None:
    source = NIBABEL_DATA / name
    with open_nifti(source, chunks={}) as ds:
        ds.nifti.encode().to_zarr(tmp_path / "copy.zarr", consolidated=False)
    assert forward_calls == []
    with xr.open_zarr(tmp_path / "copy.zarr", consolidated=False) as stored:
        decoded = stored.nifti.decode()
        assert not set(GEOMETRY_ATTRS) & set(decoded.data.attrs)
        decoded.nifti.to_nifti(tmp_path / "back.nii.gz")
    assert_same(source, tmp_path / "back.nii.gz")


# xarray warns that scaled integers have no _FillValue: NIfTI data have none.
@pytest.mark.filterwarnings("ignore:saving variable:xarray.SerializationWarning")
@pytest.mark.parametrize("name", ["example4d.nii.gz", "anatomical.nii", "example_nifti2.nii.gz"])
def test_nifti_netcdf_nifti_is_exact(name: str, tmp_path: Path) -> None:
    source = NIBABEL_DATA / name
    with open_nifti(source, chunks={}) as ds:
        ds.nifti.encode().to_netcdf(tmp_path / "copy.nc", engine="h5netcdf")
    with xr.open_dataset(tmp_path / "copy.nc", engine="h5netcdf", decode_timedelta=False) as stored:
        decoded = stored.nifti.decode()
        decoded.nifti.to_nifti(tmp_path / "back.nii")
    assert_same(source, tmp_path / "back.nii")


def test_encode_decode_after_slicing_and_reorienting(tmp_path: Path) -> None:
    source = NIBABEL_DATA / "example4d.nii.gz"
    with open_nifti(source, chunks={}) as ds:
        changed = ds.isel(i=slice(None, None, -2), k=slice(3, 20)).nifti.reorient("PSR")
        changed.nifti.to_nifti(tmp_path / "direct.nii")
        changed.nifti.encode().to_zarr(tmp_path / "c.zarr", consolidated=False)
    with xr.open_zarr(tmp_path / "c.zarr", consolidated=False) as stored:
        decoded = stored.nifti.decode()
        assert decoded.nifti.axcodes == ("P", "S", "R")
        decoded.nifti.to_nifti(tmp_path / "via_zarr.nii")
    assert_same(tmp_path / "direct.nii", tmp_path / "via_zarr.nii")


def test_encode_decode_dataarray_and_dropped_axis() -> None:
    with open_nifti(NIBABEL_DATA / "example4d.nii.gz") as ds:
        plane = ds.data.isel(k=4)
        plain = encode(plane)
        assert isinstance(plain, xr.DataArray)
        back = decode(plain)
        np.testing.assert_array_equal(back.nifti.affine, plane.nifti.affine)
        assert back.nifti.geometry.shape == plane.nifti.geometry.shape
        assert back.dims == plane.dims


def test_decode_without_attributes() -> None:
    with pytest.raises(ValueError, match="no NIfTI geometry attributes"):
        decode(xr.Dataset({"a": ("i", [1, 2])}))


@pytest.mark.filterwarnings("ignore:saving variable")  # int16 storage has no NaN: expected
@pytest.mark.parametrize("store", ["zarr", "netcdf"])
@pytest.mark.parametrize("chunks", [None, {}])
def test_scaled_float32_survives_a_store_round_trip(
    store: str, chunks: object, tmp_path: Path
) -> None:
    """CF decoding after Zarr gives float64; decode() restores float32 and the encoding."""
    raw = np.arange(-300, 300, dtype=np.int16).reshape(6, 10, 10)
    img = nib.Nifti1Image(raw, oblique_affine(5))
    img.header.set_slope_inter(0.1, 3.0)
    nib.save(img, tmp_path / "scaled.nii")
    with open_nifti(tmp_path / "scaled.nii") as ds:
        expected = ds.data.values
        encoded = ds.nifti.encode()
        if store == "zarr":
            encoded.to_zarr(tmp_path / "copy.zarr", consolidated=False)
        else:
            encoded.to_netcdf(tmp_path / "copy.nc", engine="h5netcdf")
    if store == "zarr":
        stored = xr.open_zarr(tmp_path / "copy.zarr", consolidated=False, chunks=chunks)
    else:
        stored = xr.open_dataset(tmp_path / "copy.nc", chunks=chunks)
    with stored:
        decoded = stored.nifti.decode()
        assert decoded.data.dtype == np.float32
        assert np.array_equal(decoded.data.values, expected)
        decoded.nifti.to_nifti(tmp_path / "back.nii")
    assert_same(tmp_path / "scaled.nii", tmp_path / "back.nii")
