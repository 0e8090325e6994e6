"""BIDS JSON sidecars: metadata beside a NIfTI file, as attributes.

A BIDS dataset stores acquisition metadata that NIfTI headers cannot hold
(``SliceTiming``, ``PhaseEncodingDirection``, ``EchoTime``, ...) in a JSON
file with the same stem as the image: ``sub-01_task-rest_bold.nii.gz`` has
``sub-01_task-rest_bold.json`` beside it. :func:`read_sidecar` finds and
reads that file and returns its fields as attribute values that NetCDF and
Zarr can store; :func:`check_repetition_time` warns when the sidecar's
``RepetitionTime`` disagrees with the header's TR.

Only the sidecar with the same stem is read: BIDS' inheritance principle
(sidecars higher up the folder tree, e.g. ``task-rest_bold.json`` at the
dataset root) is not applied.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BidsSidecarWarning",
    "check_repetition_time",
    "read_sidecar",
    "sidecar_attrs",
    "sidecar_path",
]

# Longest first, so that ".nii.gz" wins over ".gz".
_IMAGE_SUFFIXES = (
    ".nii.gz",
    ".nii.bz2",
    ".nii.zst",
    ".hdr.gz",
    ".img.gz",
    ".nii",
    ".hdr",
    ".img",
)
TR_TOLERANCE = 1e-3  # seconds
_INT64_LIMIT = 2**63  # larger JSON integers are stored as floats


class BidsSidecarWarning(UserWarning):
    """A BIDS sidecar is unreadable or disagrees with the NIfTI header."""


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
    for suffix in _IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return text[: -len(suffix)] + ".json"
    return None


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


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


def _read_text(name: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """The sidecar's text, or ``None`` when it does not exist."""
    if _is_url(name):
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec comes with URL support
            return None
        fs, fs_path = fsspec.core.url_to_fs(name, **dict(storage_options or {}))
        if not fs.isfile(fs_path):
            return None
        data = fs.cat_file(fs_path)
        return bytes(data).decode("utf-8")
    if name.startswith("file://"):
        name = name[len("file://") :]
    if not os.path.isfile(name):
        return None
    with open(name, encoding="utf-8") as f:
        return f.read()


def read_sidecar(
    path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """Read the BIDS JSON sidecar beside an image, as attribute values.

    Parameters
    ----------
    path
        The image: a local path or an fsspec URL (``s3://...``). Its sidecar
        is the same stem with ``.json`` (see :func:`sidecar_path`).
    storage_options
        Passed to fsspec for URLs.

    Returns
    -------
    dict or None
        The sidecar's fields under their BIDS names (``RepetitionTime``,
        ``SliceTiming``, ``PhaseEncodingDirection``, ...), or ``None`` when
        there is no sidecar. Values are what NetCDF/Zarr attributes can hold:
        numbers and strings as they are, booleans as ``0``/``1``, lists of
        numbers or of strings as lists, ``null`` fields dropped, and anything
        else (objects, nested or mixed lists) as JSON text. An unreadable
        sidecar gives a :class:`BidsSidecarWarning` and ``None``.

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
    name = sidecar_path(path)
    if name is None:
        return None
    try:
        text = _read_text(name, storage_options)
        if text is None:
            return None
        fields = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        warnings.warn(
            f"{name}: cannot read the BIDS sidecar, its fields are not added to attrs: {err}",
            BidsSidecarWarning,
            stacklevel=2,
        )
        return None
    if not isinstance(fields, dict):
        warnings.warn(
            f"{name}: the BIDS sidecar holds a JSON {type(fields).__name__}, not an object; "
            "its fields are not added to attrs",
            BidsSidecarWarning,
            stacklevel=2,
        )
        return None
    attrs: dict[str, Any] = {}
    for key, value in fields.items():
        converted = _attr_value(value)
        if converted is not None and key:
            attrs[str(key)] = converted
    return attrs


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
) -> dict[str, Any]:
    """The sidecar's fields to add to the data variable's attrs, checking the TR.

    What the backend calls: :func:`read_sidecar`, then
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
    fields = read_sidecar(path, storage_options=storage_options)
    if not fields:
        return {}
    check_repetition_time(
        fields.get("RepetitionTime"), header_attrs.get("repetition_time"), os.fspath(path)
    )
    return {key: value for key, value in fields.items() if key not in header_attrs}
