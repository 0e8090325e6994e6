"""Exception and warning types for files that are not valid NIfTI/Analyze images."""

from __future__ import annotations

__all__ = ["NiftiFormatError", "NiftiHeaderWarning", "NiftiTruncatedError"]


class NiftiFormatError(ValueError):
    """A file is not a readable NIfTI-1/NIfTI-2/Analyze image.

    The message names the file and the header field or byte range at fault.
    Being a :class:`ValueError`, it is caught by code that expects one.
    """


class NiftiTruncatedError(NiftiFormatError):
    """A file holds fewer bytes than its header says (cut short, or changed after opening)."""


class NiftiHeaderWarning(UserWarning):
    """A header field is invalid but the image can still be read with a documented fallback.

    The message names the file, the field, its value and what is used instead
    (for example a singular sform replaced by the qform, or an unknown unit
    code read as ``"unknown"``).
    """
