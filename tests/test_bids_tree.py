"""A BIDS dataset as one lazy DataTree: layout, filters, table agreement, errors, sidecars.

Every test runs on a small BIDS dataset generated here (three subjects, two
with two sessions, anat/func/fmap, sidecars at four levels, a derivatives
pipeline, a few files that break BIDS naming). The fixture records what it
wrote -- each image's entities, data and affine, and the sidecar fields each
image should inherit -- so the tests compare the tree with that record and
with nibabel, not with the package's own listing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import nibabel as nib
import numpy as np
import pytest
import xarray as xr

import xarray_nifti
from xarray_nifti import NiftiBackendEntrypoint
from xarray_nifti._bids_tree import bids_tree
from xarray_nifti.bids import BidsDatasetWarning

DESCRIPTION = {
    "Name": "generated",
    "BIDSVersion": "1.9.0",
    "Authors": ["A. Author", "B. Author"],
    "License": "CC0",
    "Funding": [],
}
PIPELINE_DESCRIPTION = {
    "Name": "prep",
    "BIDSVersion": "1.9.0",
    "DatasetType": "derivative",
    "GeneratedBy": [{"Name": "prep", "Version": "1.0"}],
}
# Sidecars at four levels: each later one is nearer to the images it applies to.
TOP_BOLD = {"RepetitionTime": 2.0, "TaskName": "rest", "EchoTime": 0.03, "FlipAngle": 70}
SUBJECT_BOLD = {"EchoTime": 0.031}  # sub-01/sub-01_task-rest_bold.json
SESSION_BOLD = {"EchoTime": 0.032, "PhaseEncodingDirection": "j-"}  # sub-01/ses-1/
FILE_BOLD = {"FlipAngle": 90}  # beside sub-01_ses-1_task-rest_run-1_bold.nii.gz
TOP_T1W = {"MagneticFieldStrength": 3, "SkullStripped": False}
PARTICIPANTS = "participant_id\tage\tsex\nsub-01\t34\tF\nsub-02\tn/a\tM\nsub-03\t29\tn/a\n"
PARTICIPANTS_JSON = {"age": {"Description": "age at scan", "Units": "year"}}


@dataclass
class Written:
    """One image written by the fixture, as BIDS and nibabel see it."""

    path: Path
    entities: dict[str, str]  # long names, plus suffix, datatype, extension
    tree_path: str
    data: np.ndarray
    affine: np.ndarray
    sidecar: dict[str, Any] = field(default_factory=dict)  # expected inherited fields


@dataclass
class Dataset:
    root: Path
    images: list[Written]
    not_bids: list[Path]
    derivatives: list[Written]

    def image(self, tree_path: str) -> Written:
        return next(w for w in [*self.images, *self.derivatives] if w.tree_path == tree_path)


def _write_json(path: Path, fields: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields))


def _oblique(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag(rng.uniform(1.0, 3.0, 3))
    affine[:3, 3] = rng.uniform(-50, 50, 3)
    return affine


def _save(path: Path, shape: tuple[int, ...], seed: int, scaled: bool = False) -> Written:
    rng = np.random.default_rng(seed)
    raw = rng.integers(-500, 500, shape).astype(np.int16)
    affine = _oblique(seed)
    img = nib.Nifti1Image(raw, affine)
    img.header.set_xyzt_units("mm", "sec")
    if len(shape) == 4:
        img.header["pixdim"][4] = 2.0
    if scaled:
        img.header.set_slope_inter(0.5, 10.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    loaded = nib.load(path)
    return Written(path, {}, "", np.asarray(loaded.get_fdata()), loaded.affine)


def _entities(filename: str) -> dict[str, str]:
    keys = {"sub": "subject", "ses": "session", "task": "task", "run": "run", "acq": "acquisition"}
    keys |= {"space": "space", "desc": "description"}
    stem = filename.split(".")[0]
    *pairs, suffix = stem.split("_")
    found = {keys[k]: v for k, v in (p.split("-") for p in pairs)}
    return found | {"suffix": suffix, "extension": filename[len(stem) :]}


def make_dataset(root: Path) -> Dataset:
    """Write a BIDS dataset under ``root``; return what was written."""
    _write_json(root / "dataset_description.json", DESCRIPTION)
    (root / "participants.tsv").write_text(PARTICIPANTS)
    _write_json(root / "participants.json", PARTICIPANTS_JSON)
    _write_json(root / "task-rest_bold.json", TOP_BOLD)
    _write_json(root / "T1w.json", TOP_T1W)
    _write_json(root / "sub-01" / "sub-01_task-rest_bold.json", SUBJECT_BOLD)
    _write_json(root / "sub-01" / "ses-1" / "sub-01_ses-1_task-rest_bold.json", SESSION_BOLD)
    (root / "README").write_text("generated for tests\n")
    images: list[Written] = []
    seed = 0

    def add(folder: str, filename: str, shape: tuple[int, ...], scaled: bool = False) -> Written:
        nonlocal seed
        seed += 1
        written = _save(root / folder / filename, shape, seed, scaled)
        written.entities = _entities(filename) | {"datatype": folder.rsplit("/", 1)[-1]}
        images.append(written)
        return written

    sessions = {"01": ["1", "2"], "02": ["1", "2"], "03": [None]}
    for subject, session_labels in sessions.items():
        for session in session_labels:
            base = f"sub-{subject}" + (f"/ses-{session}" if session else "")
            prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            for run in (1, 2):
                add(f"{base}/func", f"{prefix}_task-rest_run-{run}_bold.nii.gz", (4, 5, 3, 6), True)
            add(f"{base}/anat", f"{prefix}_T1w.nii.gz", (6, 5, 4))
            add(f"{base}/fmap", f"{prefix}_acq-gre_phasediff.nii", (4, 5, 3))
            add(f"{base}/fmap", f"{prefix}_acq-gre_magnitude1.nii", (4, 5, 3))
    # A session-less anat in a subject that has sessions.
    add("sub-01/anat", "sub-01_T1w.nii.gz", (6, 5, 4))
    # The same stem twice in one folder.
    add("sub-02/ses-2/func", "sub-02_ses-2_task-nback_bold.nii", (4, 5, 3, 2))
    add("sub-02/ses-2/func", "sub-02_ses-2_task-nback_bold.nii.gz", (4, 5, 3, 2))
    _write_json(
        root / "sub-01" / "ses-1" / "func" / "sub-01_ses-1_task-rest_run-1_bold.json", FILE_BOLD
    )
    for written in images:
        e = written.entities
        folders = written.path.parent.relative_to(root).parts
        stem = written.path.name[: -len(e["extension"])]
        name = "_".join(p for p in stem.split("_") if p.split("-")[0] not in ("sub", "ses"))
        twins = [w for w in images if w.path.parent == written.path.parent]
        if sum(w.path.name.startswith(stem + ".") for w in twins) > 1:
            name += e["extension"]
        written.tree_path = "/" + "/".join([*folders, name])
        if e["suffix"] == "bold" and e.get("task") == "rest":
            written.sidecar = dict(TOP_BOLD)
            if e["subject"] == "01":
                written.sidecar |= SUBJECT_BOLD
                if e.get("session") == "1":
                    written.sidecar |= SESSION_BOLD
                    if e["run"] == "1":
                        written.sidecar |= FILE_BOLD
        elif e["suffix"] == "T1w":
            written.sidecar = {"MagneticFieldStrength": 3, "SkullStripped": 0}
    # Not raw data: ignored without a word.
    shutil.copy(images[0].path, root / "extra_sourcedata.nii.gz")
    (root / "sourcedata").mkdir()
    shutil.copy(images[0].path, root / "sourcedata" / "raw_scan.nii.gz")
    os.replace(root / "extra_sourcedata.nii.gz", root / "sourcedata" / "scan2.nii.gz")
    # Names that break BIDS: left out with one warning.
    not_bids = [
        root / "sub-03" / "func" / "bold final.nii.gz",
        root / "sub-03" / "func" / "sub-04_task-rest_bold.nii.gz",
        root / "stray.nii",
    ]
    for path in not_bids:
        shutil.copy(images[0].path, path)
    # A derivatives pipeline with its own description.
    pipeline = root / "derivatives" / "prep"
    _write_json(pipeline / "dataset_description.json", PIPELINE_DESCRIPTION)
    derived = _save(
        pipeline
        / "sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_space-MNI_desc-preproc_bold.nii.gz",
        (4, 5, 3, 6),
        99,
    )
    derived.entities = _entities(derived.path.name) | {"datatype": "func"}
    derived.tree_path = (
        "/derivatives/prep/sub-01/ses-1/func/task-rest_run-1_space-MNI_desc-preproc_bold"
    )
    return Dataset(root, images, not_bids, [derived])


@pytest.fixture(scope="module")
def bids(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("bids") / "ds")


def open_tree(root: Path | str, **kwargs: Any) -> xr.DataTree:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BidsDatasetWarning)
        return xr.open_datatree(root, engine="nifti", **kwargs)


def leaves(tree: xr.DataTree) -> dict[str, xr.DataTree]:
    return {node.path: node for node in tree.subtree if "data" in node.data_vars}


# -- layout ---------------------------------------------------------------------------------


def test_every_image_is_a_leaf_at_its_bids_path(bids: Dataset) -> None:
    tree = open_tree(bids.root)
    assert set(leaves(tree)) == {w.tree_path for w in bids.images}
    assert "/sub-01/anat/T1w" in leaves(tree)  # no session, beside sessions
    assert {
        "/sub-02/ses-2/func/task-nback_bold.nii",
        "/sub-02/ses-2/func/task-nback_bold.nii.gz",
    } <= set(leaves(tree))


@pytest.mark.parametrize("chunks", [None, {}])
def test_each_leaf_equals_opening_its_file(bids: Dataset, chunks: Any) -> None:
    tree = open_tree(bids.root, chunks=chunks)
    for written in bids.images:
        leaf = tree[written.tree_path].to_dataset()
        direct = xr.open_dataset(written.path, engine="nifti", chunks=chunks)
        xr.testing.assert_identical(leaf, direct)
        assert leaf.data.encoding["source"] == str(written.path)
        # nibabel as the oracle for values and geometry
        np.testing.assert_allclose(leaf.data.values, written.data, rtol=1e-6)
        np.testing.assert_allclose(leaf.nifti.affine, written.affine, atol=1e-5)
        assert (chunks is None) == (leaf.data.chunks is None)


def test_root_holds_the_dataset_description(bids: Dataset) -> None:
    tree = open_tree(bids.root)
    assert tree.attrs["Name"] == "generated"
    assert tree.attrs["BIDSVersion"] == "1.9.0"
    assert tree.attrs["Authors"] == ["A. Author", "B. Author"]
    assert not tree.data_vars


def test_participants_node_is_indexed_by_participant_id(bids: Dataset) -> None:
    participants = open_tree(bids.root)["participants"].to_dataset()
    assert list(participants.indexes) == ["participant_id"]
    assert list(participants.participant_id.values) == ["sub-01", "sub-02", "sub-03"]
    np.testing.assert_array_equal(participants.age.values, [34, np.nan, 29])
    assert participants.sex.values[0] == "F"
    assert participants.sex.isnull().values[2]
    assert participants.age.attrs == {"Description": "age at scan", "Units": "year"}


def test_no_participants_file_no_node(tmp_path: Path, bids: Dataset) -> None:
    root = tmp_path / "ds"
    shutil.copytree(bids.root, root)
    (root / "participants.tsv").unlink()
    assert "participants" not in open_tree(root).children


def test_derivatives_go_under_their_pipeline(bids: Dataset) -> None:
    plain = open_tree(bids.root)
    assert "derivatives" not in plain.children
    tree = open_tree(bids.root, derivatives=True)
    assert tree["derivatives/prep"].attrs["DatasetType"] == "derivative"
    assert (
        json.loads(tree["derivatives/prep"].attrs["GeneratedBy"])
        == PIPELINE_DESCRIPTION["GeneratedBy"]
    )
    (derived,) = bids.derivatives
    leaf = tree[derived.tree_path].to_dataset()
    np.testing.assert_allclose(leaf.data.values, derived.data)
    # Raw sidecars do not leak into the pipeline's images (its own root ends inheritance).
    assert "TaskName" not in leaf.data.attrs
    assert set(leaves(open_tree(bids.root, derivatives="prep"))) == set(leaves(tree))
    only = open_tree(bids.root, derivatives="prep", description="preproc")
    assert set(leaves(only)) == {derived.tree_path}


# -- sidecars ---------------------------------------------------------------------------------


def test_nearest_sidecar_wins(bids: Dataset) -> None:
    tree = open_tree(bids.root)
    for written in bids.images:
        attrs = tree[written.tree_path].data.attrs
        for key, value in written.sidecar.items():
            assert attrs[key] == value, (written.tree_path, key)
        unexpected = {"TaskName", "EchoTime", "FlipAngle", "PhaseEncodingDirection"} - set(
            written.sidecar
        )
        assert not unexpected & set(attrs), written.tree_path
    assert tree["sub-01/ses-1/func/task-rest_run-1_bold"].data.attrs["FlipAngle"] == 90
    assert tree["sub-01/ses-1/func/task-rest_run-2_bold"].data.attrs["EchoTime"] == 0.032
    assert tree["sub-01/ses-2/func/task-rest_run-1_bold"].data.attrs["EchoTime"] == 0.031
    assert tree["sub-02/ses-1/func/task-rest_run-1_bold"].data.attrs["EchoTime"] == 0.03


def test_single_file_open_inherits_sidecars_too(bids: Dataset) -> None:
    written = bids.image("/sub-01/ses-1/func/task-rest_run-1_bold")
    attrs = xr.open_dataset(written.path, engine="nifti").data.attrs
    assert {k: attrs[k] for k in written.sidecar} == written.sidecar
    relative = os.path.relpath(written.path)
    assert xr.open_dataset(relative, engine="nifti").data.attrs["FlipAngle"] == 90


def test_sidecar_false_adds_no_fields(bids: Dataset) -> None:
    tree = open_tree(bids.root, sidecar=False)
    for written in bids.images:
        assert not set(written.sidecar) & set(tree[written.tree_path].data.attrs)


def test_mask_and_scale_false_keeps_raw_values(bids: Dataset) -> None:
    written = bids.image("/sub-02/ses-1/func/task-rest_run-2_bold")
    leaf = open_tree(bids.root, mask_and_scale=False, subject="02")[written.tree_path]
    raw = np.asanyarray(nib.load(written.path).dataobj.get_unscaled())
    np.testing.assert_array_equal(leaf.data.values, raw)
    assert leaf.data.dtype == np.int16


# -- filters and the table --------------------------------------------------------------------


FILTERS: list[dict[str, Any]] = [
    {},
    {"suffix": "bold"},
    {"datatype": "func"},
    {"datatype": ["anat", "fmap"]},
    {"subject": ["01", "02"]},
    {"subject": "03", "suffix": "T1w"},
    {"session": "2"},
    {"session": [None]},
    {"task": "rest", "run": 2},
    {"run": "1"},
    {"acquisition": "gre"},
    {"extension": "nii"},
    {"extension": ".nii.gz", "task": "nback"},
    {"subject": "99"},
]


def _expected(images: list[Written], filters: dict[str, Any]) -> set[str]:
    def keep(written: Written) -> bool:
        for key, value in filters.items():
            accepted = value if isinstance(value, list) else [value]
            label = written.entities.get(key)
            if key == "extension":
                accepted = [str(a).lstrip(".") for a in accepted]
                label = str(label).lstrip(".")
            if not any(
                a == label or (isinstance(a, int) and label and int(label) == a) for a in accepted
            ):
                return False
        return True

    return {w.tree_path for w in images if keep(w)}


@pytest.mark.parametrize(
    "filters", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "all"
)
def test_filters_select_the_right_images_in_tree_and_table(
    bids: Dataset, filters: dict[str, Any]
) -> None:
    expected = _expected(bids.images, filters)
    tree = open_tree(bids.root, **filters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BidsDatasetWarning)
        table = xarray_nifti.bids_files(bids.root, **filters)
    assert set(leaves(tree)) == expected
    assert set(table.tree_path) == expected
    # Table and tree agree row by row.
    for row in table.itertuples():
        assert tree[row.tree_path].data.encoding["source"] == row.path


def test_table_columns_and_entities(bids: Dataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BidsDatasetWarning)
        table = xarray_nifti.bids_files(bids.root, derivatives=True)
    assert list(table.columns[:8]) == [
        "path",
        "tree_path",
        "subject",
        "session",
        "datatype",
        "suffix",
        "extension",
        "pipeline",
    ]
    assert {"task", "run", "acquisition", "space", "description"} <= set(table.columns)
    assert list(table.path) == sorted(table.path)
    by_path = {row.path: row for row in table.itertuples()}
    for written in [*bids.images, *bids.derivatives]:
        row = by_path[str(written.path)]
        for key, label in written.entities.items():
            assert getattr(row, key) == label, (written.path, key)
        for key in {"session", "run", "task", "acquisition"} - set(written.entities):
            assert getattr(row, key) is None or getattr(row, key) != getattr(row, key)  # NaN
    assert set(table.pipeline.dropna()) == {"prep"}


def test_unknown_filter_is_a_type_error(bids: Dataset) -> None:
    with pytest.raises(TypeError, match=r"'subjects'.*subject"):
        xarray_nifti.bids_files(bids.root, subjects="01")
    with pytest.raises(TypeError, match="'sub'"):
        open_tree(bids.root, sub="01")


# -- bad input ------------------------------------------------------------------------------


def test_not_a_bids_folder_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"dataset_description\.json"):
        xr.open_datatree(tmp_path, engine="nifti")
    with pytest.raises(FileNotFoundError, match=r"dataset_description\.json"):
        xarray_nifti.bids_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        xarray_nifti.bids_files(tmp_path / "missing")


def test_a_file_is_not_a_dataset(bids: Dataset) -> None:
    with pytest.raises(NotADirectoryError, match="open_dataset"):
        xr.open_datatree(bids.images[0].path, engine="nifti")


def test_unreadable_sidecar_warns_once_and_the_images_open(tmp_path: Path, bids: Dataset) -> None:
    root = tmp_path / "ds"
    shutil.copytree(bids.root, root)
    (root / "T1w.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = xr.open_datatree(root, engine="nifti", suffix="T1w")
    sidecar_warnings = [
        w for w in caught if issubclass(w.category, xarray_nifti.BidsSidecarWarning)
    ]
    assert len(sidecar_warnings) == 1
    assert "T1w.json" in str(sidecar_warnings[0].message)
    t1s = [node for node in tree.leaves if "data" in node]
    assert len(t1s) == sum(w.entities["suffix"] == "T1w" for w in bids.images)
    assert all("MagneticFieldStrength" not in node.data.attrs for node in t1s)


def test_missing_pipeline_is_named(bids: Dataset) -> None:
    with pytest.raises(FileNotFoundError, match=r"'fmriprep'.*found: prep"):
        open_tree(bids.root, derivatives="fmriprep")


def test_non_bids_names_are_skipped_with_one_warning(bids: Dataset) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = xr.open_datatree(bids.root, engine="nifti")
    messages = [str(w.message) for w in caught if issubclass(w.category, BidsDatasetWarning)]
    assert len(messages) == 1
    for path in bids.not_bids:
        assert str(path) in messages[0]
    assert "sourcedata" not in messages[0]
    assert len(leaves(tree)) == len(bids.images)


@pytest.fixture
def broken(tmp_path: Path, bids: Dataset) -> tuple[Path, Path]:
    root = tmp_path / "ds"
    shutil.copytree(bids.root, root)
    bad = root / "sub-03" / "func" / "sub-03_task-rest_run-3_bold.nii.gz"
    bad.write_bytes(b"not an image at all" * 40)
    return root, bad


def test_unreadable_image_error_names_the_file(broken: tuple[Path, Path]) -> None:
    root, bad = broken
    with pytest.raises(ValueError, match=bad.name):
        open_tree(root)


def test_failure_closes_the_images_opened_before_it(
    broken: tuple[Path, Path], bids: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xarray_nifti.array import NiftiBackendArray

    closed: list[int] = []
    original = NiftiBackendArray.close

    def counting(self: NiftiBackendArray) -> None:
        closed.append(id(self))
        original(self)

    monkeypatch.setattr(NiftiBackendArray, "close", counting)
    with pytest.raises(ValueError, match=broken[1].name):
        open_tree(broken[0])
    failed_at = "/sub-03/func/task-rest_run-3_bold"
    assert len(closed) == sum(w.tree_path < failed_at for w in bids.images) > 0


def test_on_error_warn_opens_the_rest(broken: tuple[Path, Path], bids: Dataset) -> None:
    root, bad = broken
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = xr.open_datatree(root, engine="nifti", on_error="warn")
    left_out = [str(w.message) for w in caught if "left out of the tree" in str(w.message)]
    assert len(left_out) == 1
    assert str(bad) in left_out[0]
    assert len(leaves(tree)) == len(bids.images)
    with pytest.raises(ValueError, match="on_error"):
        xr.open_datatree(root, engine="nifti", on_error="ignore")


def test_pairs_hidden_files_and_var_name(tmp_path: Path, bids: Dataset) -> None:
    root = tmp_path / "ds"
    shutil.copytree(bids.root, root)
    anat = root / "sub-03" / "anat"
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Pair(data, np.eye(4)), anat / "sub-03_acq-pair_T1w.img")
    (root / ".git").mkdir()
    shutil.copy(bids.images[0].path, root / ".git" / "sub-01_bold.nii.gz")
    shutil.copy(bids.images[0].path, anat / ".sub-03_T1w.nii.gz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = xr.open_datatree(root, engine="nifti", var_name="image", subject="03")
    skipped = [str(w.message) for w in caught if issubclass(w.category, BidsDatasetWarning)]
    assert all(".git" not in m and ".sub-03" not in m for m in skipped)
    pair = tree["sub-03/anat/acq-pair_T1w"]
    np.testing.assert_array_equal(pair.image.values, data)
    assert pair.image.encoding["source"].endswith("sub-03_acq-pair_T1w.hdr")
    assert "sub-03/anat/acq-pair_T1w.img" not in tree
    assert tree["sub-03/anat/T1w"].image.attrs["MagneticFieldStrength"] == 3


def test_pipeline_without_description_is_not_derivatives(tmp_path: Path, bids: Dataset) -> None:
    root = tmp_path / "ds"
    shutil.copytree(bids.root, root)
    (root / "derivatives" / "prep" / "dataset_description.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"prep.*dataset_description\.json"):
        open_tree(root, derivatives=True)
    assert "derivatives" not in open_tree(root).children


def test_participants_without_participant_id_is_named(tmp_path: Path, bids: Dataset) -> None:
    root = tmp_path / "ds"
    shutil.copytree(bids.root, root)
    (root / "participants.tsv").write_text("subject\tage\nsub-01\t30\n")
    with pytest.raises(ValueError, match=r"participants\.tsv.*participant_id"):
        open_tree(root)


# -- laziness and dask ----------------------------------------------------------------------


def _raising_scheduler(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("computed")


def time_mean(ds: xr.Dataset) -> xr.Dataset:
    return ds.mean("time") if "time" in ds.dims else ds


def test_map_over_datasets_stays_lazy_then_computes(bids: Dataset) -> None:
    tree = open_tree(bids.root, chunks={}, suffix="bold")
    with dask.config.set(scheduler=_raising_scheduler):
        means = tree.map_over_datasets(time_mean)
        repr(means)
    for path, node in leaves(means).items():
        np.testing.assert_allclose(node.data.values, bids.image(path).data.mean(-1), rtol=1e-5)


def test_opening_reads_no_voxel_data(bids: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from xarray_nifti.array import NiftiBackendArray

    reads: list[Any] = []
    original = NiftiBackendArray.__getitem__

    def counting(self: NiftiBackendArray, key: Any) -> Any:
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(NiftiBackendArray, "__getitem__", counting)
    tree = open_tree(bids.root, chunks=None)
    repr(tree)
    assert reads == []
    tree["sub-01/anat/T1w"].data.values  # noqa: B018  (the counter works)
    assert reads


def test_closing_the_tree_closes_every_image(
    bids: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xarray_nifti.array import NiftiBackendArray

    closed: list[str] = []
    original = NiftiBackendArray.close

    def counting(self: NiftiBackendArray) -> None:
        closed.append(self.source_name if hasattr(self, "source_name") else repr(id(self)))
        original(self)

    monkeypatch.setattr(NiftiBackendArray, "close", counting)
    tree = open_tree(bids.root, chunks={})
    assert closed == []
    tree.close()
    assert len(closed) == len(bids.images)


def test_open_groups_matches_the_tree(bids: Dataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BidsDatasetWarning)
        groups = xr.open_groups(bids.root, engine="nifti", task="rest")
    tree = open_tree(bids.root, task="rest")
    assert set(groups) == {node.path for node in tree.subtree if node.has_data or node.attrs} | {
        "/"
    }
    for path, ds in groups.items():
        xr.testing.assert_identical(ds, tree[path].to_dataset())


def test_tree_is_what_from_dict_builds(bids: Dataset) -> None:
    # The backend links the nodes itself (from_dict's checks cost more than the images).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BidsDatasetWarning)
        groups = NiftiBackendEntrypoint().open_groups_as_dict(bids.root, derivatives=True)
    tree = bids_tree(groups)
    expected = xr.DataTree.from_dict(groups)
    assert tree.identical(expected)
    assert [node.path for node in tree.subtree] == [node.path for node in expected.subtree]
    for node in tree.subtree:
        assert node.root is tree
        assert list(node.children) == list(expected[node.path].children)
    xr.testing.assert_identical(
        tree["sub-01/anat/T1w"].to_dataset(),
        NiftiBackendEntrypoint().open_dataset(bids.image("/sub-01/anat/T1w").path),
    )


def test_tree_of_groups_with_inherited_coordinates_is_checked_by_xarray() -> None:
    groups = {
        "/": xr.Dataset(coords={"c": [1, 2]}),
        "/a/b": xr.Dataset({"v": ("c", [3, 4])}),
    }
    tree = bids_tree(groups)
    assert tree.identical(xr.DataTree.from_dict(groups))
    assert "c" in tree["a/b"].coords  # inherited
    with pytest.raises(ValueError, match="not aligned"):
        bids_tree({"/": xr.Dataset(coords={"c": [1, 2]}), "/a": xr.Dataset(coords={"c": [5]})})


@pytest.mark.parametrize(
    "option", [{"decode_times": False}, {"decode_cf": False}, {"decode_coords": "all"}]
)
def test_cf_decoding_options_are_accepted_as_by_open_dataset(
    bids: Dataset, option: dict[str, Any]
) -> None:
    tree = open_tree(bids.root, suffix="T1w", **option)
    for written in bids.images:
        if written.entities["suffix"] == "T1w":
            expected = xr.open_dataset(written.path, engine="nifti", **option)
            xr.testing.assert_identical(tree[written.tree_path].to_dataset(), expected)


def test_a_file_object_is_not_a_bids_dataset() -> None:
    with pytest.raises(TypeError, match="BIDS dataset is opened from its folder"):
        xr.open_datatree(io.BytesIO(b"not a folder"), engine="nifti")
