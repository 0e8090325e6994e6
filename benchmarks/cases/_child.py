"""One operation in a fresh interpreter: its time and its peak RSS above the import floor.

The comparison cases run it as ``python benchmarks/cases/_child.py OP PATH [options]``
(see ``run_child`` in ``_harness``). It imports only what ``OP`` needs, resets
``VmHWM`` to the resident size after those imports (the *floor*), runs ``OP`` once
and prints one JSON line: ``seconds``, ``floor`` and ``peak`` in MiB and, for the
reductions, a checksum of the result (sum, sum of squares, shape, dtype) that the
parent compares with the values it checked in-process against nibabel.

Operations:

* ``mean_ours``, ``std_ours`` -- ``xr.open_dataset(PATH, engine="nifti",
  chunks=...)["data"].mean("time").values`` (``.std``), with ``--chunks`` one of
  ``none``, ``{}``, ``auto``;
* ``mean_nib``, ``std_nib`` -- ``nib.load(PATH).get_fdata().mean(-1)`` (``.std``);
* ``mean_dask_only`` -- the same mean over ``dask.array.ones`` with the chunks that
  ``chunks={}`` gives: what xarray and dask alone need, with no file behind;
* ``save_ours``, ``save_nib``, ``save_sitk`` -- read ``PATH`` and write it to
  ``--out`` (``.nifti.to_nifti`` of a ``chunks={}`` dataset, ``nib.save(nib.load())``,
  ``sitk.WriteImage(sitk.ReadImage())``).

The ``/proc/self`` readings live here, and the in-process harness imports them, so
that both measure alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from typing import Any

MiB = 1 << 20
CHUNKS: dict[str, Any] = {"none": None, "{}": {}, "auto": "auto"}
OPS = (
    "mean_ours",
    "std_ours",
    "mean_nib",
    "std_nib",
    "mean_dask_only",
    "save_ours",
    "save_nib",
    "save_sitk",
)


def status_mib(key: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB, if available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ≥ 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _operation(op: str, path: str, chunks: str, out: str) -> Callable[[], Any]:
    """Import what ``op`` needs and return it as a call without arguments."""
    if op in ("mean_nib", "std_nib"):
        import nibabel as nib

        stat = op.split("_")[0]

        def nib_stat() -> Any:
            img: Any = nib.load(path)
            return getattr(img.get_fdata(), stat)(-1)

        return nib_stat
    if op == "save_nib":
        import nibabel as nib

        return lambda: nib.save(nib.load(path), out)
    if op == "save_sitk":
        import SimpleITK as sitk

        return lambda: sitk.WriteImage(sitk.ReadImage(path), out)

    import dask.array
    import xarray as xr

    import xarray_nifti  # noqa: F401  (registers the engine and the accessor)

    def ours_stat() -> Any:
        ds = xr.open_dataset(path, engine="nifti", chunks=CHUNKS[chunks])
        try:
            return getattr(ds["data"], op.split("_")[0])("time").values
        finally:
            ds.close()

    def dask_only() -> Any:
        ds = xr.open_dataset(path, engine="nifti", chunks={})
        data = ds["data"]
        chunking, dims, dtype = data.chunks, data.dims, data.dtype
        ds.close()
        assert chunking is not None
        ones = dask.array.ones(tuple(sum(c) for c in chunking), chunks=chunking, dtype=dtype)
        return xr.DataArray(ones, dims=dims).mean("time").values

    def save_ours() -> None:
        ds = xr.open_dataset(path, engine="nifti", chunks={})
        try:
            ds["data"].nifti.to_nifti(out)
        finally:
            ds.close()

    if op in ("mean_ours", "std_ours"):
        return ours_stat
    if op == "mean_dask_only":
        return dask_only
    if op == "save_ours":
        return save_ours
    raise ValueError(f"unknown operation {op!r}")


def time_chunks(path: str, chunks: str) -> int:
    """How many chunks ``chunks`` gives along time (0 without dask)."""
    if CHUNKS[chunks] is None:
        return 0
    import xarray as xr

    ds = xr.open_dataset(path, engine="nifti", chunks=CHUNKS[chunks])
    try:
        return len(ds["data"].chunksizes["time"])
    finally:
        ds.close()


def checksum(value: Any) -> dict[str, Any]:
    """Sum, sum of squares (float64), shape and dtype of a reduction's result."""
    import numpy as np

    array = np.asarray(value)
    return {
        "sum": float(np.sum(array, dtype=np.float64)),
        "sumsq": float(np.sum(np.square(array, dtype=np.float64))),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
    }


def main(argv: list[str] | None = None) -> int:
    """Run one operation and print its measurements as one JSON line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("op", choices=OPS)
    parser.add_argument("path")
    parser.add_argument("--chunks", choices=list(CHUNKS), default="{}")
    parser.add_argument("--out", default=None, help="output path of the save operations")
    args = parser.parse_args(argv)
    if args.op.startswith("save") and args.out is None:
        parser.error(f"{args.op} needs --out")
    run = _operation(args.op, args.path, args.chunks, args.out or "")
    gc.collect()
    floor = status_mib("VmRSS") if reset_peak() else status_mib("VmHWM")
    start = time.perf_counter()
    value = run()
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"seconds": seconds, "floor": floor, "peak": status_mib("VmHWM")}
    if value is not None:
        result.update(checksum(value))
    if args.op.endswith("_ours") and args.op != "save_ours":
        result["time_chunks"] = time_chunks(args.path, args.chunks)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
