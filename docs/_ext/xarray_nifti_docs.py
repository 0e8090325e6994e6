"""Build-time helpers of the xarray-nifti docs (a local Sphinx extension).

* ``builder-inited``: run every ``docs/figures/*.py`` script (they save PNGs
  into ``docs/_generated/``) and run the ``xarray-nifti`` command line on a
  real scan, saving its output as transcripts in ``docs/_generated/cli/``.
  A failing script or command stops the build, so figures and transcripts
  cannot drift from the code. Outputs are reused while the scripts, this file
  and the package sources are unchanged (``XARRAY_NIFTI_DOCS_REGENERATE=1``
  forces a rebuild).
* ``env-check-consistency``: warn (an error under ``-W``) when a name in
  ``xarray_nifti.__all__`` or a public member of the ``.nifti`` accessor has
  no entry in the API reference.
"""

from __future__ import annotations

import hashlib
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sphinx.util import logging

logger = logging.getLogger(__name__)

GENERATED = "_generated"
_VERSIONED = ("xarray", "nibabel", "numpy", "dask", "matplotlib", "nilearn", "zarr")

#: (transcript name, arguments after ``xarray-nifti``), run in this order in one folder
#: that holds a copy of nibabel's ``example4d.nii.gz``.
CLI_SESSION: list[tuple[str, list[str]]] = [
    ("help", ["--help"]),
    ("info", ["info", "example4d.nii.gz"]),
    ("convert_zarr", ["convert", "example4d.nii.gz", "example4d.zarr"]),
    ("info_zarr", ["info", "example4d.zarr"]),
    ("convert_back", ["convert", "example4d.zarr", "roundtrip.nii.gz"]),
    ("plot", ["plot", "example4d.nii.gz", "-o", "example4d.png", "--at=-40,60,30"]),
    ("demo", ["demo", "--outdir", "demo"]),
]


def _package_dir() -> Path:
    import xarray_nifti

    return Path(xarray_nifti.__file__).resolve().parent


def _inputs(srcdir: Path) -> list[Path]:
    return [
        *sorted((srcdir / "figures").glob("*.py")),
        Path(__file__).resolve(),
        *sorted(_package_dir().rglob("*.py")),
    ]


def _digest(srcdir: Path) -> str:
    h = hashlib.sha256()
    for path in _inputs(srcdir):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for name in _VERSIONED:
        try:
            h.update(f"{name}={version(name)}".encode())
        except PackageNotFoundError:
            h.update(f"{name}=none".encode())
    return h.hexdigest()


def run_figure_script(script: Path, outdir: Path) -> None:
    """Run one figure script as ``python script.py OUTDIR`` would, in this process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved_argv = sys.argv[:]
    sys.argv = [str(script), str(outdir)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved_argv
        plt.close("all")


def _cli_command() -> list[str]:
    exe = shutil.which("xarray-nifti")
    return [exe] if exe else [sys.executable, "-m", "xarray_nifti.cli"]


def _clean(text: str) -> str:
    """Terminal output as a reader would see it: progress-bar redraws collapsed."""
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def run_cli_session(outdir: Path) -> None:
    """Run :data:`CLI_SESSION` and write ``$ command`` + output transcripts."""
    import nibabel

    outdir.mkdir(parents=True, exist_ok=True)
    sample = Path(nibabel.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    env = {**os.environ, "MPLBACKEND": "Agg", "COLUMNS": "90"}
    with tempfile.TemporaryDirectory(prefix="xarray-nifti-cli-") as tmp:
        work = Path(tmp)
        shutil.copy(sample, work / sample.name)
        for name, args in CLI_SESSION:
            result = subprocess.run(
                [*_cli_command(), *args],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"`xarray-nifti {' '.join(args)}` failed with exit status "
                    f"{result.returncode}:\n{result.stdout}\n{result.stderr}"
                )
            shown = " ".join(args)
            (outdir / f"{name}.txt").write_text(f"$ xarray-nifti {shown}\n{_clean(result.stdout)}")
        shutil.copy(work / "example4d.png", outdir / "example4d.png")


def generate_assets(app: Any) -> None:
    """Figures and CLI transcripts into ``docs/_generated`` (skipped when up to date)."""
    srcdir = Path(app.srcdir)
    out = srcdir / GENERATED
    stamp = out / ".stamp"
    digest = _digest(srcdir)
    force = os.environ.get("XARRAY_NIFTI_DOCS_REGENERATE", "") not in ("", "0")
    if not force and stamp.is_file() and stamp.read_text() == digest:
        logger.info("xarray-nifti docs: figures and transcripts are up to date")
        return
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    for script in sorted((srcdir / "figures").glob("*.py")):
        logger.info(f"xarray-nifti docs: running figures/{script.name}")
        run_figure_script(script, out)
    logger.info("xarray-nifti docs: running the xarray-nifti command line")
    run_cli_session(out / "cli")
    stamp.write_text(digest)


def check_api_coverage(app: Any, env: Any) -> None:
    """Every public name and accessor member must be in the API reference."""
    import xarray_nifti
    from xarray_nifti.accessor import NiftiDataArrayAccessor

    documented = set(env.get_domain("py").objects)
    expected = [f"xarray_nifti.{name}" for name in xarray_nifti.__all__]
    expected += [
        f"xarray_nifti.accessor.NiftiDataArrayAccessor.{name}"
        for name in dir(NiftiDataArrayAccessor)
        if not name.startswith("_")
    ]
    for name in expected:
        if name not in documented:
            logger.warning(f"API reference: public name {name} is not documented (docs/api/)")


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", generate_assets)
    app.connect("env-check-consistency", check_api_coverage)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
