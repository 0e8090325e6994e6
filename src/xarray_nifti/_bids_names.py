"""BIDS file names: entities, suffix and extension, and matching them against filters.

A BIDS file name is a list of ``key-label`` entities joined by ``_``, then a
suffix and an extension: ``sub-01_ses-1_task-rest_run-1_bold.nii.gz`` has the
entities ``sub=01, ses=1, task=rest, run=1``, the suffix ``bold`` and the
extension ``.nii.gz``. This module parses such names (no file system access)
and decides whether a parsed name matches entity filters such as
``subject=["01", "02"]`` or ``run=1``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENTITIES",
    "IMAGE_EXTENSIONS",
    "BidsName",
    "check_filters",
    "matches",
    "parse_name",
    "split_extension",
]

# BIDS entity keys under their long names, in the order the specification lists them
# (which is also the order in which they appear in file names and table columns).
ENTITIES: dict[str, str] = {
    "subject": "sub",
    "session": "ses",
    "sample": "sample",
    "task": "task",
    "tracksys": "tracksys",
    "acquisition": "acq",
    "nucleus": "nuc",
    "volume": "voi",
    "ceagent": "ce",
    "tracer": "trc",
    "stain": "stain",
    "reconstruction": "rec",
    "direction": "dir",
    "run": "run",
    "modality": "mod",
    "echo": "echo",
    "flip": "flip",
    "inversion": "inv",
    "mtransfer": "mt",
    "part": "part",
    "processing": "proc",
    "hemisphere": "hemi",
    "space": "space",
    "split": "split",
    "recording": "recording",
    "chunk": "chunk",
    "segmentation": "seg",
    "resolution": "res",
    "density": "den",
    "label": "label",
    "description": "desc",
}
_LONG_NAMES = {key: name for name, key in ENTITIES.items()}
# Filters that are not entities but parts of the name or of the folder tree.
_OTHER_FILTERS = ("suffix", "extension", "datatype")

# Image files the package opens, longest first so that ".nii.gz" wins over ".gz".
IMAGE_EXTENSIONS = (
    ".nii.gz",
    ".nii.bz2",
    ".nii.zst",
    ".hdr.gz",
    ".img.gz",
    ".nii",
    ".hdr",
    ".img",
)
_ENTITY = re.compile(r"([a-zA-Z]+)-([a-zA-Z0-9]+)")
_SUFFIX = re.compile(r"[a-zA-Z0-9]+")


@dataclass(frozen=True)
class BidsName:
    """A parsed BIDS file name.

    ``entities`` maps entity keys as written in the name (``sub``, ``ses``,
    ``task``...) to their labels, in the order of the name.
    """

    entities: dict[str, str]
    suffix: str
    extension: str

    def entity(self, long_name: str) -> str | None:
        """The label of an entity by its long name (``"subject"``), or ``None``."""
        return self.entities.get(ENTITIES.get(long_name, long_name))

    def long_entities(self) -> dict[str, str]:
        """The entities under their long names (unknown keys keep their key)."""
        return {_LONG_NAMES.get(key, key): label for key, label in self.entities.items()}


def split_extension(filename: str) -> tuple[str, str]:
    """``(stem, extension)`` with multi-part image extensions kept whole.

    Examples
    --------
    >>> split_extension("sub-01_bold.nii.gz")
    ('sub-01_bold', '.nii.gz')
    >>> split_extension("task-rest_bold.json")
    ('task-rest_bold', '.json')
    >>> split_extension("README")
    ('README', '')
    """
    lower = filename.lower()
    for extension in IMAGE_EXTENSIONS:
        if lower.endswith(extension):
            return filename[: -len(extension)], filename[-len(extension) :]
    stem, dot, extension = filename.rpartition(".")
    return (stem, dot + extension) if dot and stem else (filename, "")


def parse_name(filename: str) -> BidsName | None:
    """Entities, suffix and extension of a BIDS file name, or ``None`` if it is not one.

    Parameters
    ----------
    filename
        A file name without folders.

    Examples
    --------
    >>> name = parse_name("sub-01_ses-1_task-rest_run-2_bold.nii.gz")
    >>> name.entities, name.suffix, name.extension
    ({'sub': '01', 'ses': '1', 'task': 'rest', 'run': '2'}, 'bold', '.nii.gz')
    >>> parse_name("task-rest_bold.json").entities
    {'task': 'rest'}
    >>> parse_name("sub-01_T1w_final.nii") is None     # "final" is not key-label
    True
    """
    stem, extension = split_extension(filename)
    *pairs, suffix = stem.split("_")
    if not _SUFFIX.fullmatch(suffix):
        return None
    entities: dict[str, str] = {}
    for pair in pairs:
        found = _ENTITY.fullmatch(pair)
        if found is None or found.group(1) in entities:
            return None
        entities[found.group(1)] = found.group(2)
    return BidsName(entities, suffix, extension)


def check_filters(filters: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Validate entity filters and normalise each value to a tuple of accepted values.

    Raises
    ------
    TypeError
        For a keyword that is neither a BIDS entity (long name) nor
        ``suffix``/``extension``/``datatype``; the message lists the valid ones.

    Examples
    --------
    >>> check_filters({"subject": "01", "run": [1, 2]})
    {'subject': ('01',), 'run': (1, 2)}
    """
    unknown = sorted(set(filters) - set(ENTITIES) - set(_OTHER_FILTERS))
    if unknown:
        valid = ", ".join((*_OTHER_FILTERS, *ENTITIES))
        raise TypeError(
            f"unknown BIDS filter(s) {', '.join(map(repr, unknown))}: filters are entity "
            f"long names or parts of the file name, one of {valid}"
        )
    normalised: dict[str, tuple[Any, ...]] = {}
    for key, value in filters.items():
        values = (
            tuple(value) if isinstance(value, Iterable) and not isinstance(value, str) else (value,)
        )
        normalised[key] = values
    return normalised


def _label_matches(label: str | None, accepted: tuple[Any, ...]) -> bool:
    if label is None:
        return None in accepted
    for value in accepted:
        # Integers match zero-padded labels, as run=1 matches "run-01".
        if isinstance(value, int) and not isinstance(value, bool):
            if label.isdigit() and int(label) == value:
                return True
        elif value is not None and str(value) == label:
            return True
    return False


def matches(name: BidsName, datatype: str | None, filters: Mapping[str, tuple[Any, ...]]) -> bool:
    """Whether a parsed name (in folder ``datatype``) passes normalised ``filters``.

    A filter value ``None`` in the accepted values matches files without that
    entity.

    Examples
    --------
    >>> name = parse_name("sub-01_task-rest_run-01_bold.nii.gz")
    >>> matches(name, "func", {"run": (1,), "suffix": ("bold",)})
    True
    >>> matches(name, "func", {"subject": ("02", "03")})
    False
    """
    for key, accepted in filters.items():
        if key == "suffix":
            label: str | None = name.suffix
        elif key == "extension":
            label = name.extension.lstrip(".")
            accepted = tuple(str(value).lstrip(".") for value in accepted)
        elif key == "datatype":
            label = datatype
        else:
            label = name.entity(key)
        if not _label_matches(label, accepted):
            return False
    return True
