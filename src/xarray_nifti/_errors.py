"""Exception types raised for files that are not valid NIfTI/Analyze images."""

from __future__ import annotations

__all__ = ["NiftiFormatError", "NiftiTruncatedError"]


class NiftiFormatError(ValueError):
    """A file is not a readable NIfTI-1/NIfTI-2/Analyze image.

    The message names the file and the header field or byte range at fault.
    Being a :class:`ValueError`, it is caught by code that expects one.
    """


class NiftiTruncatedError(NiftiFormatError):
    """A file holds fewer bytes than its header says (cut short, or changed after opening)."""
