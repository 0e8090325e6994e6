"""The images of a BIDS dataset: listed, parsed, filtered, as a table.

:func:`bids_files` lists the NIfTI images of a BIDS dataset (a local folder
or an fsspec URL such as ``s3://bucket/ds000001``) with their entities, one
row per image, and the path of the group that holds each image in the
DataTree of ``xr.open_datatree(root, engine="nifti")``. The tree is built
from the same listing, so table and tree always agree.

Group paths mirror the dataset's folders, ``/sub-01/ses-1/func/<name>``;
derivatives go under ``/derivatives/<pipeline>/sub-01/...``. ``<name>`` is
the file name without its extension and without the ``sub-``/``ses-``
entities that the folders above it already name
(``sub-01_ses-1_task-rest_run-1_bold.nii.gz`` → ``task-rest_run-1_bold``).
When one folder holds two images with the same stem (``x_bold.nii`` and
``x_bold.nii.gz``, or a ``.nii`` and a ``.hdr``/``.img`` pair) each keeps its
extension in its name (``task-rest_bold.nii``, ``task-rest_bold.nii.gz``),
whatever the filters select, so a group's path never depends on filters.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ._bids import DESCRIPTION_FILE, is_url
from ._bids_names import (
    ENTITIES,
    IMAGE_EXTENSIONS,
    BidsName,
    check_filters,
    matches,
    parse_name,
    split_extension,
)
from ._errors import BidsDatasetWarning
from ._optional import require

__all__ = ["BidsDatasetWarning", "BidsFile", "BidsListing", "bids_files", "list_dataset"]

# Top-level folders that BIDS keeps out of the raw data.
_NOT_RAW = frozenset({"sourcedata", "code", "stimuli", "phenotype", "derivatives"})
_PAIR_DATA = (".img", ".img.gz")
_PAIR_HEADERS = (".hdr", ".hdr.gz")
_LABEL = re.compile(r"(sub|ses)-([a-zA-Z0-9]+)")
_DATATYPE = re.compile(r"[a-z0-9]+")
_SKIPPED_SHOWN = 20  # file names listed in the warning before "and N more"


@dataclass(frozen=True)
class BidsFile:
    """One image of a BIDS dataset."""

    path: str  # local path or URL
    name: BidsName
    datatype: str
    tree_path: str
    dataset_root: str  # the dataset (or derivatives pipeline) it belongs to
    pipeline: str | None = None


@dataclass
class BidsListing:
    """Everything found under a BIDS root (one listing, no file contents read)."""

    root: str
    storage_options: dict[str, Any] | None
    images: list[BidsFile] = field(default_factory=list)
    json_files: dict[str, list[str]] = field(default_factory=dict)  # dataset root → JSONs
    pipelines: dict[str, str] = field(default_factory=dict)  # pipeline → its root
    other_files: set[str] = field(default_factory=set)  # relative paths of top-level files
    fs: Any = None  # the fsspec filesystem of a remote dataset (None: local)
    # Remote objects: URL → the listing's entry (size, ETag...), so that opening an
    # image needs no request to find out what the listing already said.
    object_info: dict[str, dict[str, Any]] = field(default_factory=dict)


def _fs_and_root(root: str | os.PathLike[str], storage_options: Mapping[str, Any] | None) -> Any:
    text = os.fspath(root)
    if not is_url(text):
        local = text[len("file://") :] if text.startswith("file://") else text
        return None, os.path.abspath(local).replace(os.sep, "/").rstrip("/") or "/"
    fsspec = require("fsspec", "remote", f"opening {text}")
    fs, fs_path = fsspec.core.url_to_fs(text, **dict(storage_options or {}))
    return fs, fs.unstrip_protocol(fs_path.rstrip("/"))


def _walk_local(root: str, derivatives: bool) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        relative = os.path.relpath(folder, root).replace(os.sep, "/")
        at_top = relative == "."
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and not (at_top and d in _NOT_RAW and not (d == "derivatives" and derivatives))
        )
        prefix = "" if at_top else relative + "/"
        found += [prefix + f for f in files if not f.startswith(".")]
    return found


def _walk_remote(fs: Any, root: str) -> dict[str, dict[str, Any]]:
    """Relative path → the listing's entry of every file under ``root``, sorted by path."""
    base = fs._strip_protocol(root).rstrip("/")
    found = {}
    # One recursive listing (a single paginated LIST on object stores).
    for key, info in fs.find(base, detail=True).items():
        relative = key[len(base) :].lstrip("/")
        if relative and not any(part.startswith(".") for part in relative.split("/")):
            found[relative] = info
    return dict(sorted(found.items()))


def _classify(relative: str) -> tuple[BidsName, str, str] | None:
    """``(name, datatype, group path)`` of an image path inside a dataset, or ``None``."""
    *folders, filename = relative.split("/")
    name = parse_name(filename)
    if name is None or len(folders) not in (2, 3) or not _DATATYPE.fullmatch(folders[-1]):
        return None
    labels = [_LABEL.fullmatch(folder) for folder in folders[:-1]]
    keys = ("sub", "ses")[: len(labels)]
    for key, label in zip(keys, labels, strict=True):
        if label is None or label.group(1) != key or name.entities.get(key) != label.group(2):
            return None
    if len(labels) == 1 and "ses" in name.entities:
        return None  # a session entity without its session folder
    stem, _ = split_extension(filename)
    # The folders above already name subject and session.
    kept = [part for part in stem.split("_") if part.split("-")[0] not in keys]
    return name, folders[-1], "/".join([*folders, "_".join(kept)])


def _images_of(
    relatives: Iterable[str], dataset_root: str, prefix: str, pipeline: str | None
) -> tuple[list[BidsFile], list[str]]:
    relatives = list(relatives)
    present = {relative.lower() for relative in relatives}
    images, skipped = [], []
    for relative in relatives:
        stem, extension = split_extension(relative)
        if extension.lower() not in IMAGE_EXTENSIONS:
            continue
        # The data half of a .hdr/.img pair is opened through its header.
        if extension.lower() in _PAIR_DATA and any(
            (stem + header).lower() in present for header in _PAIR_HEADERS
        ):
            continue
        parsed = _classify(relative)
        if parsed is None:
            skipped.append(f"{dataset_root}/{relative}")
            continue
        name, datatype, group = parsed
        path = f"{dataset_root}/{relative}"
        images.append(BidsFile(path, name, datatype, prefix + group, dataset_root, pipeline))
    # Same stem twice in one folder (e.g. .nii and .nii.gz): both names keep the extension.
    counts: dict[str, int] = {}
    for image in images:
        counts[image.tree_path] = counts.get(image.tree_path, 0) + 1
    images = [
        image
        if counts[image.tree_path] == 1
        else BidsFile(
            image.path,
            image.name,
            image.datatype,
            image.tree_path + image.name.extension,
            image.dataset_root,
            image.pipeline,
        )
        for image in images
    ]
    return images, skipped


def _pipelines(
    relatives: list[str], derivatives: bool | str | Iterable[str] | None, root: str
) -> list[str]:
    available = sorted(
        {r.split("/")[1] for r in relatives if r.startswith("derivatives/") and r.count("/") >= 2}
    )
    if derivatives is None or derivatives is False:
        return []
    if derivatives is True:
        return available
    wanted = [derivatives] if isinstance(derivatives, str) else list(derivatives)
    missing = [name for name in wanted if name not in available]
    if missing:
        raise FileNotFoundError(
            f"{root}: no derivatives pipeline folder {', '.join(map(repr, missing))} under "
            f"{root}/derivatives (found: {', '.join(available) or 'none'}); pass one of those, "
            "or derivatives=True for all"
        )
    return wanted


def list_dataset(
    root: str | os.PathLike[str],
    *,
    derivatives: bool | str | Iterable[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **filters: Any,
) -> BidsListing:
    """List a BIDS dataset's images matching ``filters`` (see :func:`bids_files`).

    Raises
    ------
    FileNotFoundError
        When ``root`` does not exist or has no ``dataset_description.json``,
        or a requested derivatives pipeline has none.
    TypeError
        For an unknown filter keyword.

    Warns
    -----
    BidsDatasetWarning
        Once, listing the images whose names or folders do not follow BIDS
        (they are left out).
    """
    normalised = check_filters(filters)
    fs, base = _fs_and_root(root, storage_options)
    wants_derivatives = derivatives not in (None, False)
    missing = f"{base}: no such directory (expected a BIDS dataset's top folder)"
    infos: dict[str, dict[str, Any]] = {}
    if fs is None:
        if os.path.isfile(base):
            raise NotADirectoryError(
                f"{base} is a file: a BIDS dataset is a folder (the one holding "
                f"{DESCRIPTION_FILE}); open one image with xr.open_dataset(path, engine='nifti')"
            )
        if not os.path.isdir(base):
            raise FileNotFoundError(missing)
        relatives = _walk_local(base, wants_derivatives)
    else:
        infos = _walk_remote(fs, base)
        relatives = list(infos)
        if not relatives:  # on object stores a folder without files does not exist
            raise FileNotFoundError(missing)
    if DESCRIPTION_FILE not in relatives:
        raise FileNotFoundError(
            f"{base} is not a BIDS dataset: {base}/{DESCRIPTION_FILE} does not exist. Pass the "
            f"dataset's top folder (the one holding {DESCRIPTION_FILE})"
        )
    listing = BidsListing(base, dict(storage_options) if storage_options is not None else None)
    listing.fs = fs
    listing.object_info = {f"{base}/{relative}": info for relative, info in infos.items()}
    listing.other_files = {r for r in relatives if "/" not in r}
    top = {r.split("/")[0] for r in relatives}
    raw = [r for r in relatives if r.split("/")[0] not in _NOT_RAW or "/" not in r]
    datasets: list[tuple[str, str, list[str], str | None]] = [(base, "", raw, None)]
    if "derivatives" in top:
        for pipeline in _pipelines(relatives, derivatives, base):
            inner = f"derivatives/{pipeline}/"
            own = [r[len(inner) :] for r in relatives if r.startswith(inner)]
            pipeline_root = f"{base}/derivatives/{pipeline}"
            if DESCRIPTION_FILE not in own:
                raise FileNotFoundError(
                    f"{pipeline_root} is not a BIDS derivatives dataset: "
                    f"{pipeline_root}/{DESCRIPTION_FILE} does not exist"
                )
            listing.pipelines[pipeline] = pipeline_root
            datasets.append((pipeline_root, inner, own, pipeline))
    elif wants_derivatives:
        _pipelines(relatives, derivatives, base)  # raises for named pipelines
    skipped: list[str] = []
    for dataset_root, prefix, own, pipeline_name in datasets:
        images, not_bids = _images_of(own, dataset_root, prefix, pipeline_name)
        skipped += not_bids
        listing.json_files[dataset_root] = [
            f"{dataset_root}/{r}" for r in own if r.endswith(".json") and r != DESCRIPTION_FILE
        ]
        listing.images += [i for i in images if matches(i.name, i.datatype, normalised)]
    if skipped:
        shown = ", ".join(skipped[:_SKIPPED_SHOWN])
        more = f" and {len(skipped) - _SKIPPED_SHOWN} more" if len(skipped) > _SKIPPED_SHOWN else ""
        warnings.warn(
            f"{base}: {len(skipped)} image(s) do not follow BIDS naming "
            f"(sub-<label>[/ses-<label>]/<datatype>/sub-<label>[_ses-<label>]_..._<suffix>"
            f".nii[.gz]) and are left out: {shown}{more}",
            BidsDatasetWarning,
            stacklevel=3,
        )
    return listing


def bids_files(
    root: str | os.PathLike[str],
    *,
    derivatives: bool | str | Iterable[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """The NIfTI images of a BIDS dataset with their entities, as a table.

    Parameters
    ----------
    root
        The dataset's top folder (it holds ``dataset_description.json``): a
        local path or an fsspec URL (``s3://bucket/ds000001``).
    derivatives
        Also list images of derivatives pipelines (``derivatives/<pipeline>/``,
        each with its own ``dataset_description.json``): ``True`` for all, a
        pipeline name or a list of names. Default: raw data only.
    storage_options
        Passed to fsspec for URLs.
    **filters
        Entity filters by long name, each a value or a list of accepted
        values: ``subject="01"``, ``session=["1", "2"]``, ``task="rest"``,
        ``run=1`` (integers match zero-padded labels), ``acquisition=``,
        ``space=``, ``description=``..., and ``suffix="bold"``,
        ``datatype="func"``, ``extension=".nii.gz"``. ``None`` among the
        values matches images without that entity.

    Returns
    -------
    pandas.DataFrame
        One row per image, sorted by path, with the columns ``path``,
        ``tree_path`` (its group in ``xr.open_datatree(root, engine="nifti")``),
        ``subject``, ``session``, ``datatype``, ``suffix``, ``extension``,
        ``pipeline`` (``None`` for raw data), then every other entity present
        (long names, in BIDS order); a missing entity is NaN.

    Raises
    ------
    FileNotFoundError
        When ``root`` is not a BIDS dataset (no ``dataset_description.json``).
    TypeError
        For an unknown filter keyword.

    Examples
    --------
    >>> import json, os, tempfile
    >>> import nibabel as nib, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> with open(os.path.join(root, "dataset_description.json"), "w") as f:
    ...     json.dump({"Name": "demo", "BIDSVersion": "1.9.0"}, f)
    >>> for sub in ("01", "02"):
    ...     os.makedirs(os.path.join(root, f"sub-{sub}", "func"))
    ...     for run in (1, 2):
    ...         name = f"sub-{sub}/func/sub-{sub}_task-rest_run-{run}_bold.nii.gz"
    ...         nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), "int16"), np.eye(4)),
    ...                  os.path.join(root, name))
    >>> table = bids_files(root, run=2)
    >>> table[["subject", "task", "run", "suffix", "tree_path"]]
      subject  task run suffix                          tree_path
    0      01  rest   2   bold  /sub-01/func/task-rest_run-2_bold
    1      02  rest   2   bold  /sub-02/func/task-rest_run-2_bold
    """
    listing = list_dataset(
        root, derivatives=derivatives, storage_options=storage_options, **filters
    )
    return files_table(listing.images)


def files_table(images: Iterable[BidsFile]) -> pd.DataFrame:
    """The table of :func:`bids_files` for listed images."""
    rows = []
    present: set[str] = set()
    for image in sorted(images, key=lambda i: i.path):
        entities = image.name.long_entities()
        present.update(entities)
        rows.append(
            {
                "path": image.path,
                "tree_path": "/" + image.tree_path,
                "subject": entities.get("subject"),
                "session": entities.get("session"),
                "datatype": image.datatype,
                "suffix": image.name.suffix,
                "extension": image.name.extension,
                "pipeline": image.pipeline,
                **entities,
            }
        )
    fixed = ["path", "tree_path", "subject", "session", "datatype", "suffix", "extension"]
    known = [name for name in ENTITIES if name in present and name not in fixed]
    unknown = sorted(present - set(ENTITIES))
    columns = [*fixed, "pipeline", *known, *unknown]
    return pd.DataFrame(rows, columns=columns)
