"""First-open latency and import time, each in fresh Python processes.

Measures, in new interpreters (so nothing is imported or cached yet):

* ``import xarray_nifti`` against ``import xarray`` (target ≤ 1.2×);
* the first ``xr.open_dataset(path, engine="nifti")`` after ``import
  xarray_nifti`` against the first ``nib.load(path)`` after ``import nibabel``
  (target ≤ 0.1 s): this is the latency a user sees on the first open;
* for context, what xarray itself costs on the first ``xr.Variable`` of a
  process (it imports ``dask.array`` when dask is installed, to recognise dask
  arrays) and on a first ``open_dataset`` of a NetCDF file with ``h5netcdf``.

Each child also checks the values it opened against nibabel's; the script
exits with status 1 if they differ or a child crashes. Times are the median
of ``--runs`` fresh processes.

Usage::

    python benchmarks/cases/open_latency.py            # 9 processes per row
    python benchmarks/cases/open_latency.py --quick    # 3 processes per row (< 20 s)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from _common import load, report

IMPORT_RATIO_TARGET = 1.2
FIRST_OPEN_TARGET_S = 0.1

_IMPORT = """
import json, sys, time
start = time.perf_counter()
import {module}
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""

_FIRST_OPEN = """
import json, sys, time
import numpy as np
import xarray as xr
import xarray_nifti
start = time.perf_counter()
ds = xr.open_dataset(sys.argv[1], engine="nifti")
seconds = time.perf_counter() - start
expected = np.load(sys.argv[2])
same = bool(np.array_equal(ds["data"].values, expected))
print(json.dumps({"seconds": seconds, "same": same,
                  "dask.array imported": "dask.array" in sys.modules}))
"""

_NIBABEL_LOAD = """
import json, sys, time
import nibabel as nib
start = time.perf_counter()
img = nib.load(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

_FIRST_VARIABLE = """
import json, time
import numpy as np
import xarray as xr
start = time.perf_counter()
xr.Variable("x", np.arange(3))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

_FIRST_H5NETCDF = """
import json, sys, time
import xarray as xr
start = time.perf_counter()
ds = xr.open_dataset(sys.argv[1], engine="h5netcdf")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def _child(code: str, *args: str) -> dict[str, float | bool]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    result: dict[str, float | bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _median(runs: int, code: str, *args: str) -> tuple[float, list[dict[str, float | bool]]]:
    results = [_child(code, *args) for _ in range(runs)]
    return statistics.median(float(r["seconds"]) for r in results), results


def _row(case: str, ours: float, reference: float | None, target: str, met: bool | None) -> str:
    ref = f"{reference:.3f} s" if reference is not None else "n/a"
    ratio = f"{ours / reference:.2f}×" if reference else "n/a"
    verdict = "n/a" if met is None else ("yes" if met else "no")
    return f"| {case} | {ours:.3f} s | {ref} | {ratio} | {target} | {verdict} |"


def main(argv: list[str] | None = None) -> int:
    """Run every case in fresh processes, print a markdown table, return 1 on a failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 processes per row (< 20 s)")
    parser.add_argument("--runs", type=int, default=None, help="fresh processes per row")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 9)
    rows: list[str] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xarray-nifti-latency-") as tmp:
        rng = np.random.default_rng(0)
        data = rng.integers(0, 1000, size=(64, 64, 36, 20)).astype(np.int16)
        path = Path(tmp) / "bold.nii.gz"
        img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0]))
        img.header.set_slope_inter(0.5, 0.0)
        nib.save(img, path)
        expected = Path(tmp) / "expected.npy"
        np.save(expected, np.asarray(load(path).dataobj))
        try:
            ours_import, _ = _median(runs, _IMPORT.format(module="xarray_nifti"))
            xarray_import, _ = _median(runs, _IMPORT.format(module="xarray"))
            ratio = ours_import / xarray_import
            rows.append(
                _row(
                    "`import xarray_nifti` vs `import xarray`",
                    ours_import,
                    xarray_import,
                    f"≤ {IMPORT_RATIO_TARGET}×",
                    ratio <= IMPORT_RATIO_TARGET,
                )
            )
            first_open, results = _median(runs, _FIRST_OPEN, str(path), str(expected))
            if not all(r["same"] for r in results):
                failures.append("the first open read values that differ from nibabel's")
            nibabel_load, _ = _median(runs, _NIBABEL_LOAD, str(path))
            rows.append(
                _row(
                    "first `open_dataset` after `import xarray_nifti` vs first `nib.load`",
                    first_open,
                    nibabel_load,
                    f"≤ {FIRST_OPEN_TARGET_S} s",
                    first_open <= FIRST_OPEN_TARGET_S,
                )
            )
            first_variable, _ = _median(runs, _FIRST_VARIABLE)
            rows.append(
                _row(
                    "context: xarray's first `xr.Variable` (imports dask.array)",
                    first_variable,
                    None,
                    "—",
                    None,
                )
            )
            try:
                import h5netcdf  # type: ignore[import-untyped]  # noqa: F401
                import xarray as xr

                netcdf = Path(tmp) / "bold.nc"
                xr.Dataset({"data": (("i", "j", "k", "time"), data)}).to_netcdf(
                    netcdf, engine="h5netcdf"
                )
                h5_open, _ = _median(runs, _FIRST_H5NETCDF, str(netcdf))
                rows.append(
                    _row(
                        "context: xarray's first `open_dataset(engine='h5netcdf')`",
                        h5_open,
                        None,
                        "—",
                        None,
                    )
                )
            except ImportError:
                pass
        except subprocess.CalledProcessError as err:
            failures.append(f"a child process crashed:\n{err.stderr}")
    return report(rows, "reference", failures)


if __name__ == "__main__":
    sys.exit(main())
