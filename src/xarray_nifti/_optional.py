"""Optional dependencies: import them, or say which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module_name: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module_name``, or raise an ``ImportError`` naming the extra that installs it.

    Parameters
    ----------
    module_name
        The module to import, e.g. ``"h5netcdf"``.
    extra
        The xarray-nifti extra that installs it, e.g. ``"netcdf"``.
    purpose
        What needs it, for the message, e.g. ``"writing NetCDF"``.

    Examples
    --------
    >>> require("json", "docs", "reading JSON").__name__
    'json'
    >>> require("no_such_module_xyz", "netcdf", "writing NetCDF")
    Traceback (most recent call last):
    ...
    ImportError: writing NetCDF needs no_such_module_xyz, which is not installed: pip install "xarray-nifti[netcdf]"
    """  # noqa: E501 - the doctest shows the whole message
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs {module_name.split('.')[0]}, which is not installed: "
            f'pip install "xarray-nifti[{extra}]"',
            name=module_name,
        ) from err
