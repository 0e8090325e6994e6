"""Check an installed wheel from outside the source tree, and the sdist beside it.

Run with the interpreter of a fresh venv into which only the wheel was installed:
``python ci/check_wheel.py dist/xarray_nifti-X.tar.gz``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import entry_points
from pathlib import Path


def main(sdist: str) -> None:
    import nibabel as nib
    import xarray as xr

    import xarray_nifti

    location = Path(xarray_nifti.__file__).resolve()
    assert "site-packages" in location.parts, f"imported from the source tree: {location}"

    backends = {ep.name: ep.value for ep in entry_points(group="xarray.backends")}
    assert backends.get("nifti") == "xarray_nifti.backend:NiftiBackendEntrypoint", backends
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("xarray-nifti") == "xarray_nifti.cli:main", scripts

    example = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    ds = xr.open_dataset(example, engine="nifti")
    expected = nib.load(example).get_fdata()
    assert (ds.data.values == expected).all(), "wheel reads different values from nibabel"

    script = shutil.which("xarray-nifti", path=str(Path(sys.executable).parent))
    assert script is not None, "console script xarray-nifti is not installed"
    info = subprocess.run([script, "info", str(example)], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "LAS" in info.stdout, info.stdout

    with tarfile.open(sdist) as archive:
        names = {Path(*Path(name).parts[1:]).as_posix() for name in archive.getnames()}
    for needed in (
        "pyproject.toml",
        "README.md",
        "src/xarray_nifti/__init__.py",
        "tests/conftest.py",
    ):
        assert needed in names, f"{needed} is missing from {sdist}"
    print(f"wheel and sdist OK: {location.parent}, {Path(sdist).name}")


if __name__ == "__main__":
    main(sys.argv[1])
