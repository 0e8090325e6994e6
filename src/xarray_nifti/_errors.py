"""Exception and warning types for files that are not valid NIfTI/Analyze images."""

from __future__ import annotations

__all__ = [
    "NiftiFileChangedError",
    "NiftiFormatError",
    "NiftiHeaderWarning",
    "NiftiTimeAxisWarning",
    "NiftiTruncatedError",
]


class NiftiFormatError(ValueError):
    """A file is not a readable NIfTI-1/NIfTI-2/Analyze image.

    The message names the file and the header field or byte range at fault.
    Being a :class:`ValueError`, it is caught by code that expects one.
    """


class NiftiTruncatedError(NiftiFormatError):
    """A file holds fewer bytes than its header says (cut short, or changed after opening)."""


class NiftiFileChangedError(NiftiTruncatedError):
    """A file was changed or replaced after a lazy dataset was opened on it.

    Raised by the next read (in this process or on a dask worker) instead of
    returning voxels that mix two versions of the file. The message names the
    file and what changed (size, modification time, inode, content checksum,
    or a remote object's ETag/version); re-open the file to read its new
    content. It is a :class:`NiftiTruncatedError` (and so a ``ValueError``),
    the error a file changed after opening always gave, so code catching that
    keeps working. A file removed after opening gives ``FileNotFoundError``.
    """


class NiftiHeaderWarning(UserWarning):
    """A header field is invalid but the image can still be read with a documented fallback.

    The message names the file, the field, its value and what is used instead
    (for example a singular sform replaced by the qform, or an unknown unit
    code read as ``"unknown"``).
    """


class NiftiTimeAxisWarning(UserWarning):
    """A ``time`` coordinate cannot be stored exactly in a NIfTI header.

    NIfTI keeps only a start (``toffset``) and a step (the TR in ``pixdim[4]``),
    so volumes that are not evenly spaced in increasing time (scrubbed or
    reordered selections) are written with the repetition time from the
    ``repetition_time`` attribute (else the smallest step). The message names
    the times and the TR written; ``.nifti.zooms`` reports the same TR.
    """


class BidsDatasetWarning(UserWarning):
    """Files of a BIDS dataset were left out of the listing or the tree.

    Given once per dataset for images whose names or folders do not follow
    BIDS (the message lists them), and per image that cannot be read when
    ``open_datatree(..., on_error="warn")``.
    """


class BidsSidecarWarning(UserWarning):
    """A BIDS JSON file is unreadable, or its ``RepetitionTime`` disagrees with the header.

    The message names the JSON file (or the image) and the problem; the
    image still opens, without the unreadable file's fields, and with both
    TR values in attrs when they disagree.
    """


class EmptyMaskWarning(UserWarning):
    """The computed brain mask is empty: the input is probably not a raw EPI series."""


class LabelsResamplingWarning(UserWarning):
    """Labels of an atlas vanished when it was resampled onto the data's grid.

    The message names the labels; their regions are left out of the result
    (nilearn's ``NiftiLabelsMasker`` drops them too).
    """
