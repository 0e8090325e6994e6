"""xarray-nifti: NIfTI neuroimaging files as lazy, geometry-aware xarray objects.

Importing the package registers the ``.nifti`` accessor on Dataset and
DataArray; ``xr.open_dataset(path, engine="nifti")`` works once the package is
installed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import accessor as _accessor  # noqa: F401  (registers the .nifti accessor)
from ._errors import (
    BidsDatasetWarning,
    BidsSidecarWarning,
    EmptyMaskWarning,
    LabelsResamplingWarning,
    NiftiFileChangedError,
    NiftiFormatError,
    NiftiHeaderWarning,
    NiftiTimeAxisWarning,
    NiftiTruncatedError,
)
from .backend import NiftiBackendEntrypoint
from .bids import bids_files
from .index import VoxelAffineIndex
from .interchange import from_nibabel
from .transform import NiftiGeometry, VoxelAffineTransform

try:
    __version__ = version("xarray-nifti")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "BidsDatasetWarning",
    "BidsSidecarWarning",
    "EmptyMaskWarning",
    "LabelsResamplingWarning",
    "NiftiBackendEntrypoint",
    "NiftiFileChangedError",
    "NiftiFormatError",
    "NiftiGeometry",
    "NiftiHeaderWarning",
    "NiftiTimeAxisWarning",
    "NiftiTruncatedError",
    "VoxelAffineIndex",
    "VoxelAffineTransform",
    "__version__",
    "bids_files",
    "from_nibabel",
]
