"""BIDS JSON sidecars: metadata beside a NIfTI file, as attributes.

A BIDS dataset stores acquisition metadata that NIfTI headers cannot hold
(``SliceTiming``, ``PhaseEncodingDirection``, ``EchoTime``, ...) in a JSON
file with the same stem as the image: ``sub-01_task-rest_bold.nii.gz`` has
``sub-01_task-rest_bold.json`` beside it. :func:`read_sidecar` finds and
reads that file and returns its fields as attribute values that NetCDF and
Zarr can store; :func:`check_repetition_time` warns when the sidecar's
``RepetitionTime`` disagrees with the header's TR.

BIDS' inheritance principle is applied: a sidecar higher up the folder tree
(``task-rest_bold.json`` at the dataset root, ``sub-01_task-rest_bold.json``
in the subject folder...) applies to every image below it whose name has the
same suffix and all of the sidecar's entities; fields of nearer sidecars
override those of farther ones (:func:`applicable_sidecars`). For a local
image the dataset root is found by walking up to the folder that holds
``dataset_description.json``; for a URL only the sidecar with the same stem
is read (finding the root would list every folder above it).
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from ._bids_names import IMAGE_EXTENSIONS, BidsName, parse_name
from ._errors import BidsSidecarWarning
from ._header import is_url
from ._optional import require

__all__ = [
    "DESCRIPTION_FILE",
    "BidsSidecarWarning",
    "applicable_sidecars",
    "attr_values",
    "check_repetition_time",
    "is_url",
    "read_json_object",
    "read_sidecar",
    "read_text",
    "sidecar_attrs",
    "sidecar_files",
    "sidecar_path",
]

DESCRIPTION_FILE = "dataset_description.json"
# Images sit at most three folders below their dataset's root (sub-/ses-/datatype).
_MAX_DEPTH = 3
TR_TOLERANCE = 1e-3  # seconds
_INT64_LIMIT = 2**63  # larger JSON integers are stored as floats


def sidecar_path(path: str | os.PathLike[str]) -> str | None:
    """The name of the JSON sidecar of an image (whether or not it exists).

    Parameters
    ----------
    path
        Image path or URL ending in ``.nii``, ``.nii.gz``, ``.hdr``, ``.img``
        (also ``.hdr.gz``/``.img.gz``, ``.nii.bz2``, ``.nii.zst``); the suffix
        is matched case-insensitively.

    Returns
    -------
    str or None
        The same stem with ``.json``, or ``None`` for another suffix.

    Examples
    --------
    >>> sidecar_path("/data/sub-01/func/sub-01_task-rest_bold.nii.gz")
    '/data/sub-01/func/sub-01_task-rest_bold.json'
    >>> sidecar_path("s3://bucket/sub-01_T1w.nii")
    's3://bucket/sub-01_T1w.json'
    >>> sidecar_path("notes.txt") is None
    True
    """
    text = os.fspath(path)
    lower = text.lower()
    for suffix in IMAGE_EXTENSIONS:
        if lower.endswith(suffix):
            return text[: -len(suffix)] + ".json"
    return None


def _attr_value(value: Any) -> Any:
    """A JSON value as a netCDF-storable attribute value (``None`` to skip it)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if abs(value) < _INT64_LIMIT else float(value)
    if isinstance(value, float | str):
        return value
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            if all(isinstance(v, int) and abs(v) < _INT64_LIMIT for v in value):
                return [int(v) for v in value]
            return [float(v) for v in value]
    # Nested objects, lists of lists, mixed or empty lists: keep them as JSON text.
    return json.dumps(value, sort_keys=True)


def read_text(name: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """The text of a local or remote file, or ``None`` when it does not exist."""
    if is_url(name):
        fsspec = require("fsspec", "remote", f"reading {name}")
        fs, fs_path = fsspec.core.url_to_fs(name, **dict(storage_options or {}))
        try:
            # One GET; asking first whether the file exists would cost another request.
            data = fs.cat_file(fs_path)
        except FileNotFoundError:
            return None
        return bytes(data).decode("utf-8")
    if name.startswith("file://"):
        name = name[len("file://") :]
    if not os.path.isfile(name):
        return None
    with open(name, encoding="utf-8") as f:
        return f.read()


def read_json_object(
    name: str, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The raw fields of a JSON object file, or ``None`` when it is missing or unreadable.

    An unreadable file, or one that holds something other than a JSON
    object, gives a :class:`BidsSidecarWarning` naming it.
    """
    try:
        text = read_text(name, storage_options)
        if text is None:
            return None
        fields = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        warnings.warn(
            f"{name}: cannot read the BIDS JSON file, its fields are not added to attrs: {err}",
            BidsSidecarWarning,
            stacklevel=3,
        )
        return None
    if not isinstance(fields, dict):
        warnings.warn(
            f"{name}: the BIDS JSON file holds a JSON {type(fields).__name__}, not an object; "
            "its fields are not added to attrs",
            BidsSidecarWarning,
            stacklevel=3,
        )
        return None
    return fields


def attr_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """JSON fields as attribute values that NetCDF and Zarr can store.

    Examples
    --------
    >>> attr_values({"EchoTime": 0.03, "SkullStripped": False, "Institution": None,
    ...              "Levels": {"M": "male"}})
    {'EchoTime': 0.03, 'SkullStripped': 0, 'Levels': '{"M": "male"}'}
    """
    attrs: dict[str, Any] = {}
    for key, value in fields.items():
        converted = _attr_value(value)
        if converted is not None and key:
            attrs[str(key)] = converted
    return attrs


def _parent(path: str) -> str:
    return path.rstrip("/").rpartition("/")[0]


@functools.lru_cache(maxsize=4096)
def _candidate_name(filename: str) -> BidsName | None:
    """:func:`parse_name` of a JSON file's name, remembered: a tree asks once per image."""
    return parse_name(filename)


def applicable_sidecars(image: str, candidates: Iterable[str], root: str) -> list[str]:
    """The JSON files among ``candidates`` that apply to ``image``, farthest first.

    BIDS' inheritance principle: a JSON file applies to an image when it sits
    in the image's folder or in a folder above it up to the dataset ``root``,
    has the image's suffix, and each of its entities is in the image's name
    with the same label. Merging the fields in the returned order lets the
    nearest file win; within one folder a file with more entities (more
    specific) comes later. Paths are ``/``-separated (local paths or URLs).

    Examples
    --------
    >>> applicable_sidecars(
    ...     "/ds/sub-01/func/sub-01_task-rest_run-1_bold.nii.gz",
    ...     ["/ds/task-rest_bold.json", "/ds/task-nback_bold.json",
    ...      "/ds/sub-01/sub-01_task-rest_bold.json",
    ...      "/ds/sub-01/func/sub-01_task-rest_run-1_bold.json",
    ...      "/ds/sub-01/func/sub-01_task-rest_run-2_bold.json"],
    ...     "/ds",
    ... )  # doctest: +NORMALIZE_WHITESPACE
    ['/ds/task-rest_bold.json', '/ds/sub-01/sub-01_task-rest_bold.json',
     '/ds/sub-01/func/sub-01_task-rest_run-1_bold.json']
    """
    folder, _, filename = image.rpartition("/")
    same_stem = sidecar_path(image)
    name = parse_name(filename)
    root = root.rstrip("/")
    if name is None or not (folder == root or folder.startswith(root + "/")):
        return [c for c in candidates if c == same_stem]
    chain = [root]
    for part in folder[len(root) :].strip("/").split("/"):
        if part:
            chain.append(f"{chain[-1]}/{part}")
    depth = {level: n for n, level in enumerate(chain)}
    found: list[tuple[int, int, str]] = []
    for candidate in candidates:
        level, _, candidate_name = candidate.rpartition("/")
        if level not in depth:
            continue
        parsed = _candidate_name(candidate_name)
        if parsed is None or parsed.extension != ".json" or parsed.suffix != name.suffix:
            continue
        if all(name.entities.get(key) == label for key, label in parsed.entities.items()):
            found.append((depth[level], len(parsed.entities), candidate))
    return [candidate for *_, candidate in sorted(found)]


def sidecar_files(path: str | os.PathLike[str]) -> list[str]:
    """The JSON files that may apply to an image, farthest first (existing or not).

    For a local image inside a BIDS dataset (a folder up to three levels
    above it holds ``dataset_description.json``) these are the inherited
    sidecars of :func:`applicable_sidecars`; otherwise, and for URLs, the
    sidecar with the same stem.

    Examples
    --------
    >>> sidecar_files("s3://bucket/ds/sub-01/anat/sub-01_T1w.nii.gz")
    ['s3://bucket/ds/sub-01/anat/sub-01_T1w.json']
    """
    text = os.fspath(path)
    same_stem = sidecar_path(text)
    if same_stem is None:
        return []
    if is_url(text):
        return [same_stem]
    local = text[len("file://") :] if text.startswith("file://") else text
    local = os.path.abspath(local).replace(os.sep, "/")
    folder = _parent(local)
    levels = [folder]
    for _ in range(_MAX_DEPTH):
        if os.path.isfile(f"{levels[-1]}/{DESCRIPTION_FILE}") or not _parent(levels[-1]):
            break
        levels.append(_parent(levels[-1]))
    root = levels[-1]
    if not os.path.isfile(f"{root}/{DESCRIPTION_FILE}"):
        return [same_stem]
    candidates = []
    for level in levels:
        try:
            entries = os.listdir(level)
        except OSError:
            continue
        candidates += [f"{level}/{entry}" for entry in entries if entry.endswith(".json")]
    inherited = applicable_sidecars(local, candidates, root)
    # Keep the caller's spelling of the image's own sidecar (relative paths stay relative).
    local_same_stem = sidecar_path(local)
    return [same_stem if name == local_same_stem else name for name in inherited]


def read_sidecar(
    path: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    sidecars: Sequence[str] | None = None,
    read: Callable[[str], dict[str, Any] | None] | None = None,
) -> dict[str, Any] | None:
    """Read the BIDS JSON sidecars of an image, merged, as attribute values.

    Parameters
    ----------
    path
        The image: a local path or an fsspec URL (``s3://...``).
    storage_options
        Passed to fsspec for URLs.
    sidecars
        The JSON files to merge, farthest first; default :func:`sidecar_files`
        (the inherited sidecars of a local image in a BIDS dataset, else the
        one with the same stem, see :func:`sidecar_path`).
    read
        Reads one JSON file's raw fields (default :func:`read_json_object`);
        a caller that opens many images passes a cached reader so that a
        sidecar shared by many images is read once.

    Returns
    -------
    dict or None
        The sidecars' fields under their BIDS names (``RepetitionTime``,
        ``SliceTiming``, ``PhaseEncodingDirection``, ...), nearer sidecars
        overriding farther ones, or ``None`` when there is no sidecar.
        Values are what NetCDF/Zarr attributes can hold: numbers and strings
        as they are, booleans as ``0``/``1``, lists of numbers or of strings
        as lists, ``null`` fields dropped, and anything else (objects, nested
        or mixed lists) as JSON text. An unreadable sidecar gives a
        :class:`BidsSidecarWarning` and is skipped.

    Examples
    --------
    >>> import json, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "sub-01_task-rest_bold.json"), "w") as f:
    ...     json.dump({"RepetitionTime": 2.0, "SliceTiming": [0, 1.0], "SkullStripped": False}, f)
    >>> read_sidecar(os.path.join(folder, "sub-01_task-rest_bold.nii.gz"))
    {'RepetitionTime': 2.0, 'SliceTiming': [0.0, 1.0], 'SkullStripped': 0}
    >>> read_sidecar(os.path.join(folder, "sub-02_task-rest_bold.nii.gz")) is None
    True
    """
    names = sidecar_files(path) if sidecars is None else sidecars
    reader = partial(read_json_object, storage_options=storage_options) if read is None else read
    merged: dict[str, Any] = {}
    found = False
    for name in names:
        fields = reader(name)
        if fields is not None:
            found = True
            merged.update(fields)
    return attr_values(merged) if found else None


def check_repetition_time(sidecar_tr: Any, header_tr: float | None, name: str) -> None:
    """Warn when the sidecar's ``RepetitionTime`` and the header's TR disagree.

    Parameters
    ----------
    sidecar_tr
        ``RepetitionTime`` from the sidecar, in seconds (``None``: not given).
    header_tr
        The header's TR in seconds (``pixdim[4]`` in its ``xyzt_units``;
        ``None`` when the header has none).
    name
        The image, named in the warning.

    Warns
    -----
    BidsSidecarWarning
        When both are given and differ by more than 1 ms, or when the
        sidecar's value is not a number. The attrs keep both values
        (``repetition_time`` from the header, ``RepetitionTime`` from the
        sidecar); neither is changed.

    Examples
    --------
    >>> import warnings
    >>> check_repetition_time(2.0, 2.0004, "sub-01_bold.nii.gz")  # within 1 ms: silent
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     check_repetition_time(2.0, 2.5, "sub-01_bold.nii.gz")
    >>> print(caught[0].message)  # doctest: +NORMALIZE_WHITESPACE
    sub-01_bold.nii.gz: the BIDS sidecar's RepetitionTime (2.0 s) differs from the TR in the
    NIfTI header (pixdim[4] = 2.5 s); attrs keep both (RepetitionTime, repetition_time)
    """
    if sidecar_tr is None or header_tr is None:
        return
    try:
        sidecar_value = float(sidecar_tr)
    except (TypeError, ValueError):
        warnings.warn(
            f"{name}: the BIDS sidecar's RepetitionTime {sidecar_tr!r} is not a number; "
            f"the NIfTI header's TR is {float(header_tr)} s",
            BidsSidecarWarning,
            stacklevel=2,
        )
        return
    header_value = float(header_tr)
    if math.isfinite(sidecar_value) and abs(sidecar_value - header_value) <= TR_TOLERANCE:
        return
    warnings.warn(
        f"{name}: the BIDS sidecar's RepetitionTime ({sidecar_value} s) differs from the TR in "
        f"the NIfTI header (pixdim[4] = {header_value} s); attrs keep both "
        "(RepetitionTime, repetition_time)",
        BidsSidecarWarning,
        stacklevel=2,
    )


def sidecar_attrs(
    path: str | os.PathLike[str],
    header_attrs: Mapping[str, Any],
    *,
    storage_options: Mapping[str, Any] | None = None,
    sidecars: Sequence[str] | None = None,
    read: Callable[[str], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The sidecars' fields to add to the data variable's attrs, checking the TR.

    What the backend calls: :func:`read_sidecar` (``sidecars`` and ``read``
    are passed on), then
    :func:`check_repetition_time` against ``header_attrs["repetition_time"]``.
    Returns an empty dict when there is no sidecar. Header attrs use
    snake_case names and BIDS fields CamelCase; should a sidecar field have
    the name of a header attr anyway, the header's value wins (the field is
    left out), so that ``attrs.update(...)`` never overwrites header fields.

    Examples
    --------
    >>> sidecar_attrs("/no/such/folder/sub-01_bold.nii.gz", {"repetition_time": 2.0})
    {}
    """
    fields = read_sidecar(path, storage_options=storage_options, sidecars=sidecars, read=read)
    if not fields:
        return {}
    check_repetition_time(
        fields.get("RepetitionTime"), header_attrs.get("repetition_time"), os.fspath(path)
    )
    return {key: value for key, value in fields.items() if key not in header_attrs}
