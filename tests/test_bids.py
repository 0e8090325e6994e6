"""BIDS JSON sidecars: found beside the image, read as storable attrs, TR checked."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xarray_nifti
from xarray_nifti._bids import (
    BidsSidecarWarning,
    applicable_sidecars,
    check_repetition_time,
    read_sidecar,
    sidecar_attrs,
    sidecar_files,
    sidecar_path,
)
from xarray_nifti._bids_names import ENTITIES, parse_name

BOLD_SIDECAR: dict[str, Any] = {
    "RepetitionTime": 2.0,
    "EchoTime": 0.03,
    "FlipAngle": 77,
    "SliceTiming": [0, 1.0, 0.5, 1.5],
    "PhaseEncodingDirection": "j-",
    "TaskName": "rest",
    "EffectiveEchoSpacing": 0.00058,
    "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
    "SkullStripped": False,
    "Manufacturer": "Siemens",
    "InstitutionName": None,
    "CogAtlasID": {"url": "https://www.cognitiveatlas.org/task/id/trm_4c8a834779883"},
    "MultibandAccelerationFactor": 4,
}

HYPOTHESIS = settings(max_examples=60, deadline=None)


def write_bold(folder: Path, name: str = "sub-01_task-rest_bold.nii.gz", tr: float = 2.0) -> Path:
    data = np.arange(4 * 5 * 4 * 3, dtype=np.int16).reshape(4, 5, 4, 3)
    img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.5, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    path = folder / name
    nib.save(img, path)
    return path


def write_json(path: Path, fields: Any) -> Path:
    path.write_text(json.dumps(fields))
    return path


# -- finding the sidecar --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("sub-01_task-rest_bold.nii.gz", "sub-01_task-rest_bold.json"),
        ("sub-01_task-rest_bold.nii", "sub-01_task-rest_bold.json"),
        ("sub-01_T1w.hdr", "sub-01_T1w.json"),
        ("sub-01_T1w.img", "sub-01_T1w.json"),
        ("sub-01_T1w.img.gz", "sub-01_T1w.json"),
        ("SUB-01_T1W.NII.GZ", "SUB-01_T1W.json"),
        ("a.b.nii", "a.b.json"),
        ("/data/ds/sub-01/func/x_bold.nii.gz", "/data/ds/sub-01/func/x_bold.json"),
        ("s3://bucket/sub-01/x_bold.nii.gz", "s3://bucket/sub-01/x_bold.json"),
    ],
)
def test_sidecar_path(image: str, expected: str) -> None:
    assert sidecar_path(image) == expected
    if "://" not in image:
        assert sidecar_path(Path(image)) == str(Path(expected))


@pytest.mark.parametrize("name", ["notes.txt", "x.json", "x.gz", "nii", ""])
def test_no_sidecar_path_for_other_files(name: str) -> None:
    assert sidecar_path(name) is None


def test_missing_sidecar_is_none(tmp_path: Path) -> None:
    image = write_bold(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_sidecar(image) is None
        assert sidecar_attrs(image, {"repetition_time": 2.0}) == {}
    # a sidecar of another image in the same folder is not picked up
    write_json(tmp_path / "sub-02_task-rest_bold.json", BOLD_SIDECAR)
    assert read_sidecar(image) is None


# -- values -------------------------------------------------------------------------------


def test_fields_keep_bids_names_and_become_attr_values(tmp_path: Path) -> None:
    image = write_bold(tmp_path)
    write_json(tmp_path / "sub-01_task-rest_bold.json", BOLD_SIDECAR)
    fields = read_sidecar(str(image))
    assert fields is not None
    assert fields["RepetitionTime"] == 2.0
    assert fields["EchoTime"] == 0.03
    assert fields["FlipAngle"] == 77
    assert fields["MultibandAccelerationFactor"] == 4
    assert fields["SliceTiming"] == [0.0, 1.0, 0.5, 1.5]
    assert all(isinstance(v, float) for v in fields["SliceTiming"])
    assert fields["PhaseEncodingDirection"] == "j-"
    assert fields["TaskName"] == "rest"
    assert fields["ImageType"] == ["ORIGINAL", "PRIMARY", "M", "ND"]
    assert fields["SkullStripped"] == 0  # bool → 0/1: netCDF has no boolean attributes
    assert "InstitutionName" not in fields  # null: nothing to store
    # nested objects are kept, as JSON text
    assert json.loads(fields["CogAtlasID"]) == BOLD_SIDECAR["CogAtlasID"]


def test_attrs_survive_netcdf_and_zarr(tmp_path: Path) -> None:
    image = write_bold(tmp_path)
    write_json(tmp_path / "sub-01_task-rest_bold.json", BOLD_SIDECAR)
    fields = read_sidecar(image)
    assert fields is not None
    array = xr.DataArray(np.zeros((2, 3)), dims=("i", "j"), attrs=fields, name="data")
    netcdf = tmp_path / "out.nc"
    array.to_netcdf(netcdf, engine="h5netcdf")
    with xr.open_dataarray(netcdf, engine="h5netcdf") as back:
        assert back.attrs["PhaseEncodingDirection"] == "j-"
        np.testing.assert_allclose(back.attrs["SliceTiming"], [0.0, 1.0, 0.5, 1.5])
        assert list(back.attrs["ImageType"]) == fields["ImageType"]
        assert json.loads(back.attrs["CogAtlasID"]) == BOLD_SIDECAR["CogAtlasID"]
    store = tmp_path / "out.zarr"
    array.to_dataset().to_zarr(store, mode="w", consolidated=False)
    back = xr.open_zarr(store, consolidated=False)["data"]
    assert back.attrs["RepetitionTime"] == 2.0
    assert back.attrs["SliceTiming"] == [0.0, 1.0, 0.5, 1.5]


json_scalars = st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=5)
json_scalars = json_scalars | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)


def storable(value: Any) -> bool:
    """What xarray writes to netCDF/Zarr attributes: numbers, strings, flat homogeneous lists."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float | str):
        return True
    if isinstance(value, list) and value:
        kinds = {type(v) for v in value}
        return kinds in ({str}, {int}, {float})
    return False


@HYPOTHESIS
@given(fields=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=6))
def test_any_json_sidecar_gives_storable_attrs(
    tmp_path_factory: pytest.TempPathFactory, fields: dict[str, Any]
) -> None:
    folder = tmp_path_factory.mktemp("prop")
    write_json(folder / "x.json", fields)
    out = read_sidecar(folder / "x.nii")
    assert out is not None
    assert set(out) == {k for k, v in fields.items() if v is not None}
    for key, value in out.items():
        assert storable(value), (key, value)
        original = fields[key]
        if isinstance(value, str) and not isinstance(original, str):
            assert json.loads(value) == original  # structured values: JSON text, losslessly
        elif isinstance(value, list) and value and isinstance(value[0], int | float):
            assert [float(v) for v in value] == [float(v) for v in original]


@pytest.mark.parametrize(
    ("text", "what"),
    [("{not json", "cannot read"), ("[1, 2]", "not an object"), ("", "cannot read")],
)
def test_unreadable_sidecar_warns_and_is_skipped(tmp_path: Path, text: str, what: str) -> None:
    image = write_bold(tmp_path)
    (tmp_path / "sub-01_task-rest_bold.json").write_text(text)
    with pytest.warns(BidsSidecarWarning, match=what) as record:
        assert read_sidecar(image) is None
    assert "sub-01_task-rest_bold.json" in str(record[0].message)


# -- repetition time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sidecar_tr", "header_tr"),
    [(2.0, 2.0), (2.0, 2.0009), (0.72, 0.7205), (None, 2.0), (2.0, None)],
)
def test_matching_or_missing_tr_is_silent(sidecar_tr: Any, header_tr: float | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_repetition_time(sidecar_tr, header_tr, "sub-01_bold.nii.gz")


@pytest.mark.parametrize(
    ("sidecar_tr", "header_tr"), [(2.0, 2.5), (2.0, 2.002), (2000, 2.0), (2.0, 1.0)]
)
def test_tr_mismatch_warns_with_both_values(sidecar_tr: float, header_tr: float) -> None:
    with pytest.warns(BidsSidecarWarning) as record:
        check_repetition_time(sidecar_tr, header_tr, "sub-01_bold.nii.gz")
    message = str(record[0].message)
    assert "sub-01_bold.nii.gz" in message
    assert f"{float(sidecar_tr)} s" in message
    assert f"{float(header_tr)} s" in message
    assert issubclass(BidsSidecarWarning, UserWarning)


@pytest.mark.parametrize("sidecar_tr", ["2.0s", [2.0], float("nan")])
def test_non_numeric_sidecar_tr_warns(sidecar_tr: Any) -> None:
    with pytest.warns(BidsSidecarWarning, match="RepetitionTime"):
        check_repetition_time(sidecar_tr, 2.0, "x.nii")


def test_sidecar_attrs_checks_the_tr(tmp_path: Path) -> None:
    image = write_bold(tmp_path, tr=2.5)
    write_json(tmp_path / "sub-01_task-rest_bold.json", BOLD_SIDECAR)
    with pytest.warns(BidsSidecarWarning, match=r"RepetitionTime \(2.0 s\).*2.5 s"):
        fields = sidecar_attrs(image, {"repetition_time": 2.5})
    assert fields["RepetitionTime"] == 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sidecar_attrs(image, {"repetition_time": 2.0})["TaskName"] == "rest"
        assert sidecar_attrs(image, {})["TaskName"] == "rest"  # 3-D header: no TR to check


def test_header_tr_in_milliseconds_is_compared_in_seconds(tmp_path: Path) -> None:
    data = np.zeros((2, 2, 2, 3), np.int16)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 2000.0
    path = tmp_path / "sub-01_task-rest_bold.nii"
    nib.save(img, path)
    ds = xr.open_dataset(path, engine="nifti")
    assert math.isclose(ds.data.attrs["repetition_time"], 2.0)
    write_json(tmp_path / "sub-01_task-rest_bold.json", {"RepetitionTime": 2.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sidecar_attrs(path, ds.data.attrs)


# -- through the backend (hook: NiftiBackendEntrypoint.open_dataset(..., sidecar=True)) -------


def test_without_sidecar_attrs_are_unchanged(tmp_path: Path) -> None:
    image = write_bold(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_dataset(image, engine="nifti")
    assert not any(key[:1].isupper() for key in ds.data.attrs)


def test_open_dataset_adds_sidecar_fields(tmp_path: Path) -> None:
    image = write_bold(tmp_path)
    write_json(tmp_path / "sub-01_task-rest_bold.json", BOLD_SIDECAR)
    ds = xr.open_dataset(image, engine="nifti")
    attrs = ds.data.attrs
    assert attrs["RepetitionTime"] == 2.0
    assert attrs["SliceTiming"] == [0.0, 1.0, 0.5, 1.5]
    assert attrs["PhaseEncodingDirection"] == "j-"
    assert attrs["EchoTime"] == 0.03
    assert attrs["repetition_time"] == 2.0  # the header's own fields stay
    # still lazy, still savable (Zarr keeps the sidecar fields)
    store = tmp_path / "bold.zarr"
    ds.nifti.encode().to_zarr(store, mode="w", consolidated=False)
    back = xr.open_zarr(store, consolidated=False).nifti.decode()
    assert back.data.attrs["PhaseEncodingDirection"] == "j-"


def test_sidecar_false_opts_out(tmp_path: Path) -> None:
    image = write_bold(tmp_path, tr=3.0)
    write_json(tmp_path / "sub-01_task-rest_bold.json", BOLD_SIDECAR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no TR warning either
        ds = xr.open_dataset(image, engine="nifti", sidecar=False)
    assert "RepetitionTime" not in ds.data.attrs


def test_open_dataset_warns_on_tr_mismatch(tmp_path: Path) -> None:
    image = write_bold(tmp_path, tr=2.5)
    write_json(tmp_path / "sub-01_task-rest_bold.json", BOLD_SIDECAR)
    with pytest.warns(BidsSidecarWarning, match=r"2\.0 s.*2\.5 s") as record:
        ds = xr.open_dataset(image, engine="nifti")
    assert "sub-01_task-rest_bold" in str(record[0].message)
    assert ds.data.attrs["RepetitionTime"] == 2.0
    assert ds.data.attrs["repetition_time"] == 2.5


def test_pair_finds_its_sidecar(tmp_path: Path) -> None:
    data = np.zeros((3, 3, 3), np.float32)
    nib.save(nib.Nifti1Pair(data, np.eye(4)), tmp_path / "sub-01_T1w.img")
    write_json(tmp_path / "sub-01_T1w.json", {"MagneticFieldStrength": 3})
    for name in ("sub-01_T1w.hdr", "sub-01_T1w.img"):
        ds = xr.open_dataset(tmp_path / name, engine="nifti")
        assert ds.data.attrs["MagneticFieldStrength"] == 3


def test_huge_integers_become_floats(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", {"Big": 2**70, "Bigs": [1, 2**64], "Small": [1, 2]})
    fields = read_sidecar(tmp_path / "x.nii")
    assert fields == {"Big": float(2**70), "Bigs": [1.0, float(2**64)], "Small": [1, 2]}


def test_header_attrs_win_over_sidecar_fields(tmp_path: Path) -> None:
    image = write_bold(tmp_path)
    write_json(
        tmp_path / "sub-01_task-rest_bold.json", {"descrip": "from json", "TaskName": "rest"}
    )
    header_attrs = {"descrip": "from header", "repetition_time": 2.0}
    assert sidecar_attrs(image, header_attrs) == {"TaskName": "rest"}


def test_bids_sidecar_warning_is_exported() -> None:
    assert xarray_nifti.BidsSidecarWarning is BidsSidecarWarning
    assert "BidsSidecarWarning" in xarray_nifti.__all__


# -- BIDS names -----------------------------------------------------------------------------

LABELS = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=6
)
KEYS = st.sampled_from(sorted(set(ENTITIES.values())))


@HYPOTHESIS
@given(
    entities=st.dictionaries(KEYS, LABELS, max_size=6),
    suffix=LABELS,
    extension=st.sampled_from([".nii", ".nii.gz", ".json", ".hdr", ".tsv"]),
)
def test_parse_name_reads_back_what_was_joined(
    entities: dict[str, str], suffix: str, extension: str
) -> None:
    name = "_".join([*(f"{k}-{v}" for k, v in entities.items()), suffix]) + extension
    parsed = parse_name(name)
    assert parsed is not None
    assert parsed.entities == entities
    assert parsed.suffix == suffix
    assert parsed.extension == extension


@pytest.mark.parametrize(
    "name",
    [
        "sub-01_T1w_final.nii",
        "sub-01-02_T1w.nii",
        "sub_01_T1w.nii",
        "sub-01_sub-02_bold.nii",
        "bold final.nii.gz",
        "sub-01_.nii",
    ],
)
def test_names_that_break_bids_are_not_parsed(name: str) -> None:
    assert parse_name(name) is None


# -- inheritance ----------------------------------------------------------------------------

FOLDERS = ["/ds", "/ds/sub-01", "/ds/sub-01/ses-1", "/ds/sub-01/ses-1/func"]
IMAGE_ENTITIES = {"sub": "01", "ses": "1", "task": "rest", "run": "1"}


@HYPOTHESIS
@given(
    sidecars=st.lists(
        st.tuples(
            st.integers(0, 3),  # folder depth
            st.dictionaries(
                st.sampled_from(["sub", "ses", "task", "run", "acq"]),
                st.sampled_from(["01", "1", "2", "rest", "nback"]),
                max_size=4,
            ),
            st.sampled_from(["bold", "T1w"]),
        ),
        max_size=8,
        unique_by=lambda t: (t[0], tuple(sorted(t[1].items())), t[2]),
    )
)
def test_applicable_sidecars_follow_the_inheritance_principle(
    sidecars: list[tuple[int, dict[str, str], str]],
) -> None:
    image = FOLDERS[3] + "/sub-01_ses-1_task-rest_run-1_bold.nii.gz"
    named = {}
    for depth, entities, suffix in sidecars:
        name = "_".join([*(f"{k}-{v}" for k, v in entities.items()), suffix]) + ".json"
        named[f"{FOLDERS[depth]}/{name}"] = (depth, entities, suffix)
    found = applicable_sidecars(image, list(named), "/ds")
    applies = {
        path
        for path, (_, entities, suffix) in named.items()
        if suffix == "bold" and all(IMAGE_ENTITIES.get(k) == v for k, v in entities.items())
    }
    assert set(found) == applies
    order = [(named[p][0], len(named[p][1])) for p in found]
    assert order == sorted(order)  # farthest (then least specific) first


def test_sidecars_outside_the_dataset_or_other_folders_do_not_apply() -> None:
    image = "/ds/sub-01/func/sub-01_task-rest_bold.nii.gz"
    candidates = [
        "/task-rest_bold.json",  # above the root
        "/ds/sub-02/sub-02_task-rest_bold.json",  # another subject's folder
        "/ds/sub-01/anat/task-rest_bold.json",  # a sibling folder
        "/ds/sub-01/func/sub-01_task-rest_bold.json",
    ]
    assert applicable_sidecars(image, candidates, "/ds") == [candidates[-1]]


def _bids_dataset(root: Path) -> Path:
    write_json(root / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.9.0"})
    write_json(
        root / "task-rest_bold.json", {"RepetitionTime": 2.0, "EchoTime": 0.03, "TaskName": "rest"}
    )
    write_json(root / "sub-01" / "sub-01_task-rest_bold.json", {"EchoTime": 0.031})
    folder = root / "sub-01" / "ses-1" / "func"
    folder.mkdir(parents=True)
    write_json(root / "sub-01" / "ses-1" / "sub-01_ses-1_bold.json", {"FlipAngle": 80})
    write_json(folder / "sub-01_ses-1_task-rest_bold.json", {"FlipAngle": 90})
    return write_bold(folder, "sub-01_ses-1_task-rest_bold.nii.gz")


def test_open_dataset_merges_inherited_sidecars_nearest_first(tmp_path: Path) -> None:
    (tmp_path / "sub-01").mkdir()
    image = _bids_dataset(tmp_path)
    attrs = xr.open_dataset(image, engine="nifti").data.attrs
    assert attrs["RepetitionTime"] == 2.0  # dataset level
    assert attrs["TaskName"] == "rest"
    assert attrs["EchoTime"] == 0.031  # subject level overrides the dataset level
    assert attrs["FlipAngle"] == 90  # file level overrides the session level
    assert [Path(p).name for p in sidecar_files(image)] == [
        "task-rest_bold.json",
        "sub-01_task-rest_bold.json",
        "sub-01_ses-1_bold.json",
        "sub-01_ses-1_task-rest_bold.json",
    ]


def test_without_dataset_description_only_the_same_stem_applies(tmp_path: Path) -> None:
    (tmp_path / "sub-01").mkdir()
    image = _bids_dataset(tmp_path)
    (tmp_path / "dataset_description.json").unlink()
    assert sidecar_files(image) == [str(image.with_suffix("").with_suffix(".json"))]
    assert "TaskName" not in xr.open_dataset(image, engine="nifti").data.attrs
