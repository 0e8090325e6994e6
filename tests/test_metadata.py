"""Header ⇄ attrs/encoding (``_metadata``): each field against nibabel's own reading."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import NIBABEL_DATA, oblique_affine
from xarray_nifti._metadata import (
    attrs_from_header,
    build_header,
    encoding_from_header,
    geometry_from_header,
    time_values,
)
from xarray_nifti._time_axis import time_step
from xarray_nifti.transform import NiftiGeometry


def header_of(img: nib.Nifti1Image) -> nib.Nifti1Header:
    """The header as it is in the file (what the backend parses), or of an in-memory image."""
    filename = img.get_filename()
    if filename is None:
        return type(img.header).from_header(img.header)
    with nib.openers.ImageOpener(filename) as fobj:
        return img.header_class.from_fileobj(fobj)


def rebuild(header: nib.Nifti1Header, **kwargs: object) -> nib.Nifti1Header:
    shape = header.get_data_shape()
    affine = header.get_best_affine()
    geometry = geometry_from_header(header, affine, shape)
    attrs = attrs_from_header(header, geometry)
    encoding = encoding_from_header(header, "nifti1")
    version = 2 if isinstance(header, nib.Nifti2Header) else 1
    return build_header(
        geometry,
        shape,
        header.get_data_dtype(),
        attrs,
        encoding,
        version=version,
        times=time_values(header, shape[3]) if len(shape) > 3 else None,
        **kwargs,
    )


@pytest.mark.parametrize(
    "name", ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii"]
)
def test_rebuilt_header_equals_the_file_header(name: str) -> None:
    original = nib.load(NIBABEL_DATA / name)
    header = header_of(original)
    rebuilt = rebuild(header)
    for field in header:
        if field in ("vox_offset", "scl_slope", "scl_inter"):
            continue
        a, b = np.asarray(header[field]), np.asarray(rebuilt[field])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), field


def test_attrs_hold_grid_independent_fields() -> None:
    img = nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.float32), oblique_affine())
    hdr = img.header
    hdr.set_xyzt_units("mm", "msec")
    hdr["pixdim"][4] = 2500
    hdr["toffset"] = 100
    hdr.set_intent("t test", (8.0,), name="tstat")
    hdr["descrip"] = b"a description"
    hdr["cal_min"], hdr["cal_max"] = -1.0, 2.0
    hdr.set_dim_info(0, 1, 2)
    hdr["slice_code"] = 4
    hdr["slice_duration"] = 0.05
    geometry = geometry_from_header(hdr, img.affine, img.shape)
    attrs = attrs_from_header(hdr, geometry)
    assert attrs["repetition_time"] == 2.5
    assert attrs["toffset"] == pytest.approx(0.1)
    assert attrs["intent"] == "t test"
    assert attrs["intent_params"] == [8.0, 0.0, 0.0]
    assert attrs["intent_name"] == "tstat"
    assert attrs["descrip"] == "a description"
    assert (attrs["cal_min"], attrs["cal_max"]) == (-1.0, 2.0)
    assert (attrs["freq_dim"], attrs["phase_dim"], attrs["slice_dim"]) == (0, 1, 2)
    assert attrs["slice_code"] == "alternating decreasing"
    assert attrs["slice_duration"] == pytest.approx(0.05)
    assert time_values(hdr, 3).tolist() == pytest.approx([0.1, 2.6, 5.1])
    assert not any("affine" in key or "form" in key for key in attrs)


def test_unknown_intent_and_slice_codes_do_not_break_reading() -> None:
    hdr = nib.Nifti1Header()
    hdr["intent_code"] = 9999
    hdr["slice_code"] = 77
    geometry = NiftiGeometry(np.eye(4), (1, 1, 1))
    attrs = attrs_from_header(hdr, geometry)
    assert attrs["intent_code"] == 9999
    assert attrs["intent"] == "unknown (9999)"
    assert attrs["slice_code"] == 77
    rebuilt = build_header(geometry, (1, 1, 1), np.dtype("f4"), attrs, {})
    assert (rebuilt["intent_code"], rebuilt["slice_code"]) == (9999, 77)


def test_encoding_keeps_raw_fields() -> None:
    header = header_of(nib.load(NIBABEL_DATA / "example4d.nii.gz"))
    encoding = encoding_from_header(header, "nifti1")
    assert encoding["dtype"] == np.dtype("int16")
    assert encoding["byteorder"] == "little"
    assert encoding["dim"] == [128, 96, 24, 2]
    assert len(encoding["affine"]) == 16
    assert len(encoding["quatern"]) == 6
    assert encoding["legacy"]["regular"] == b"r"
    assert [(code, content) for code, content in encoding["extensions"]] == [
        (ext.get_code(), ext.content) for ext in header.extensions
    ]
    assert len(encoding["extensions"]) == 2
    big = encoding_from_header(header_of(nib.load(NIBABEL_DATA / "anatomical.nii")), "nifti1")
    assert (big["byteorder"], big["dtype"]) == ("big", np.dtype("int16"))


def test_raw_quaternion_only_while_the_qform_is_the_same() -> None:
    header = header_of(nib.load(NIBABEL_DATA / "example4d.nii.gz"))
    assert header["quatern_b"] != 0  # a tiny raw value that nibabel would recompute as 0
    rebuilt = rebuild(header)
    assert rebuilt["quatern_b"] == header["quatern_b"]
    geometry = geometry_from_header(header, header.get_best_affine(), header.get_data_shape())
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = 127  # new voxel i is old voxel 127 - i
    flipped = geometry.transformed(flip, (128, 96, 24))
    attrs = attrs_from_header(header, geometry)
    encoding = encoding_from_header(header, "nifti1")
    new = build_header(flipped, (128, 96, 24, 2), np.dtype("int16"), attrs, encoding)
    assert np.allclose(new.get_qform(), flipped.qform, atol=1e-4)
    assert np.allclose(new.get_sform(), flipped.sform, atol=1e-4)
    assert new.get_dim_info() == header.get_dim_info()


def test_codes_zero_grid_is_recorded_as_aligned_sform() -> None:
    """With both codes 0 a sliced grid would fall back to zooms only: keep it in the sform."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    geometry = NiftiGeometry(affine, (4, 5, 6))
    header = build_header(geometry, (4, 5, 6), np.dtype("int16"), {}, {})
    assert header["sform_code"] == 2
    assert np.allclose(header.get_best_affine(), affine)


def test_units_and_time_follow_attrs() -> None:
    geometry = NiftiGeometry(np.eye(4), (2, 2, 2))
    attrs = {"time_units": "msec", "spatial_units": "micron", "repetition_time": 0.75}
    header = build_header(geometry, (2, 2, 2, 3), np.dtype("f4"), attrs, {})
    assert header.get_xyzt_units() == ("micron", "msec")
    assert header.get_zooms()[3] == 750.0
    # A time coordinate wins over stale attrs: a sliced time axis keeps its times.
    sliced = build_header(
        geometry, (2, 2, 2, 2), np.dtype("f4"), attrs, {}, times=np.array([1.5, 3.0])
    )
    assert sliced.get_zooms()[3] == 1500.0
    assert sliced["toffset"] == 1500.0


def test_unstorable_dtype_is_a_type_error() -> None:
    geometry = NiftiGeometry(np.eye(4), (2, 2, 2))
    with pytest.raises(TypeError, match="NIfTI cannot store dtype float16"):
        build_header(geometry, (2, 2, 2), np.dtype("float16"), {}, {})


def test_nifti2_and_pair_header_classes() -> None:
    geometry = NiftiGeometry(np.eye(4), (2, 2, 2), sform_code=1)
    for version, pair, expected in [
        (1, False, b"n+1"),
        (1, True, b"ni1"),
        (2, False, b"n+2"),
        (2, True, b"ni2"),
    ]:
        header = build_header(
            geometry, (2, 2, 2), np.dtype("u1"), {}, {}, version=version, pair=pair
        )
        assert bytes(header["magic"]).rstrip(b"\0") == expected


@given(
    start=st.floats(-1e4, 1e4),
    step=st.floats(0.01, 100),
    count=st.integers(2, 50),
    tr=st.none() | st.floats(0.1, 10),
)
def test_time_step_of_evenly_spaced_times(
    start: float, step: float, count: int, tr: float | None
) -> None:
    times = start + np.arange(count) * step
    found, regular = time_step(times, tr)
    assert regular
    assert found is not None
    assert found == pytest.approx(step, rel=1e-6)


@given(
    times=st.lists(st.floats(0, 1000), min_size=3, max_size=20, unique=True).filter(
        lambda t: (
            not np.allclose(np.diff(t), np.diff(t)[0], rtol=1e-6, atol=0) or np.diff(t)[0] <= 0
        )
    ),
    tr=st.none() | st.floats(0.1, 10),
)
def test_time_step_of_uneven_times_is_the_acquisition_tr(
    times: list[float], tr: float | None
) -> None:
    found, regular = time_step(np.array(times), tr)
    assert not regular
    steps = np.abs(np.diff(times))
    assert found == (tr if tr is not None else steps[steps > 0].min())
