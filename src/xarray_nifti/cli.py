"""The ``xarray-nifti`` command line: info, convert, plot, demo."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._atomic import staged_path
from ._optional import require
from ._targets import output_paths

if TYPE_CHECKING:  # xarray is imported when a command runs, not for --help
    import xarray as xr

__all__ = ["main"]

# Optional packages each container needs, and the extra that installs them.
_CONTAINER_NEEDS = {
    ".zarr": (("zarr",), "zarr", "converting to Zarr"),
    ".nc": (("h5netcdf", "h5py"), "netcdf", "converting to NetCDF"),
}


def _open(path: str, chunks: Any = None) -> xr.Dataset:
    import xarray as xr

    import xarray_nifti  # noqa: F401  (registers the accessor)

    ds: xr.Dataset  # .nifti is registered at run time: its results are untyped
    if path.endswith((".zarr", ".zarr/")):
        require("zarr", "zarr", f"reading {path}")
        with _expected_zarr_warnings():
            ds = xr.open_zarr(path).nifti.decode()
    elif path.endswith(".nc"):
        ds = xr.open_dataset(path, chunks=chunks).nifti.decode()
    else:
        ds = xr.open_dataset(path, engine="nifti", chunks=chunks)
    return ds


def _format_affine(affine: np.ndarray) -> str:
    return "\n".join("    " + "  ".join(f"{v:10.4f}" for v in row) for row in affine)


def _container(path: str) -> str | None:
    if path.rstrip("/").endswith(".zarr"):
        return "zarr"
    if path.endswith(".nc"):
        return "netcdf"
    return None


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def _size_line(path: str) -> str:
    """File size; for a ``.hdr``/``.img`` pair the size of each file and their total."""
    try:
        files = output_paths(path)
    except ValueError:  # Zarr, NetCDF
        files = [path]
    if len(files) == 1 or not all(os.path.isfile(f) for f in files):
        return f"{_size(path)} bytes"
    sizes = [_size(f) for f in files]
    parts = ", ".join(f"{os.path.basename(f)} {n}" for f, n in zip(files, sizes, strict=True))
    return f"{sum(sizes)} bytes ({parts})"


def _laziness(data: xr.DataArray) -> str:
    """How a DataArray holds its values, in words."""
    chunks = getattr(data.variable, "chunks", None)
    if chunks is not None:
        blocks = int(np.prod([len(c) for c in chunks]))
        return f"lazy: dask array, {blocks} chunk{'s' if blocks != 1 else ''}"
    if isinstance(data.variable._data, np.ndarray):
        return "loaded in memory"
    return "lazy: not loaded"


def describe(path: str) -> str:
    """The text ``xarray-nifti info`` prints."""
    ds = _open(path)
    data = ds[next(iter(ds.data_vars))]
    enc = data.encoding
    nifti = ds.nifti
    container = _container(path)
    nifti_format = str(enc.get("format", "?"))
    if container is not None:
        nifti_format = f"{container} ({nifti_format} geometry)"
    lines = [
        f"file:      {path}",
        f"size:      {_size_line(path)}",
        f"format:    {nifti_format}"
        + (f", {enc['compression']}" if enc.get("compression") else ""),
        f"shape:     {dict(data.sizes)}",
        f"dtype:     {data.dtype} (stored {np.dtype(enc.get('dtype', data.dtype))}, "
        f"{enc.get('byteorder', 'little')}-endian)",
        f"scaling:   scale_factor={enc.get('scale_factor', data.attrs.get('scale_factor', 1))}, "
        f"add_offset={enc.get('add_offset', data.attrs.get('add_offset', 0))}",
        f"zooms:     {tuple(round(z, 4) for z in nifti.zooms)}",
        f"units:     {data.attrs.get('spatial_units', 'unknown')}, "
        f"{data.attrs.get('time_units', 'unknown')}",
        f"axcodes:   {''.join(nifti.axcodes)}",
        f"space:     {nifti.space} (sform_code={nifti.geometry.sform_code}, "
        f"qform_code={nifti.geometry.qform_code})",
        "affine:",
        _format_affine(nifti.affine),
        "",
        repr(ds),
    ]
    return "\n".join(lines)


def _progress(total: int) -> Any:
    from dask.diagnostics.progress import ProgressBar

    return ProgressBar(minimum=0.5, dt=0.2) if total else ProgressBar()


@contextmanager
def _expected_zarr_warnings() -> Iterator[None]:
    """Silence Zarr's notice that consolidated metadata is outside the Zarr v3 spec.

    xarray writes consolidated metadata on purpose (fast opening); every
    other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Consolidated metadata is currently not part", category=UserWarning
        )
        yield


def convert(source: str, target: str, chunks: Any = None) -> Path:
    """Convert NIfTI ⇄ Zarr/NetCDF (geometry kept via encode/decode), atomically.

    The output is written beside the target under a temporary name and moved
    into place only when complete, so an error or Ctrl-C leaves no partial
    output; an existing target is never replaced (NIfTI targets follow
    ``to_nifti``'s rule and are replaced atomically). A missing optional
    dependency (zarr; h5netcdf and h5py) raises ``ImportError`` naming the
    extra to install, before anything is read.
    """
    out = Path(target.rstrip("/"))
    modules, extra, purpose = _CONTAINER_NEEDS.get(out.suffix, ((), "", ""))
    for module in modules:
        require(module, extra, purpose)
    if out.suffix in _CONTAINER_NEEDS and out.exists():
        raise FileExistsError(f"{out}: already exists; remove it or choose another name")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: the folder {out.parent} does not exist")
    ds = _open(source, chunks={} if chunks is None else chunks)
    if out.suffix not in _CONTAINER_NEEDS:
        with _progress(1):
            ds.nifti.to_nifti(out)
        return out
    with staged_path(out) as temp, _progress(1):
        if out.suffix == ".zarr":
            with _expected_zarr_warnings():
                ds.nifti.encode().to_zarr(temp, mode="w-")
        else:
            ds.nifti.encode().to_netcdf(temp, engine="h5netcdf")
    return out


def _parse_point(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--at needs three numbers x,y,z in mm, got {text!r}"
        ) from err
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"--at needs three numbers x,y,z in mm, got {text!r}")
    return values[0], values[1], values[2]


def demo_file() -> Path:
    """A real 4-D scan shipped inside an installed wheel (nibabel's example4d)."""
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / "example4d.nii.gz"


def demo(outdir: str | None = None) -> list[str]:
    """Run the whole story on a real scan and return the printed lines."""
    import xarray as xr

    import xarray_nifti  # noqa: F401

    out: list[str] = []
    say = out.append
    path = demo_file()
    folder = Path(outdir or tempfile.mkdtemp(prefix="xarray-nifti-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    say(f"1. open lazily: xr.open_dataset({path.name!r}, engine='nifti', chunks={{}})")
    ds = xr.open_dataset(path, engine="nifti", chunks={})
    data = ds.data
    say(f"   dims {dict(data.sizes)}, dtype {data.dtype}, chunk shape {data.data.chunksize}")
    say(
        f"2. geometry: axcodes {''.join(data.nifti.axcodes)}, space {data.nifti.space}, "
        f"zooms {tuple(round(z, 3) for z in data.nifti.zooms)}"
    )
    say("   affine (voxel centre -> world RAS+ mm):")
    say(_format_affine(data.nifti.affine))
    centre = [n // 2 for n in data.shape[:3]]
    x, y, z = (float(v) for v in data.nifti.voxel_to_world(*centre))
    say(f"3. voxel {tuple(centre)} is at world ({x:.1f}, {y:.1f}, {z:.1f}) mm")
    value = data.isel(time=0).sel(x=x, y=y, z=z, method="nearest")
    found = value.values.item()
    say(f"   .sel(x={x:.1f}, y={y:.1f}, z={z:.1f}, method='nearest') at time 0 -> {found}")
    canonical = data.nifti.to_canonical()
    say(f"4. to_canonical(): axcodes {''.join(canonical.nifti.axcodes)} ({_laziness(canonical)})")
    mean = canonical.mean("time", keep_attrs=True)
    mean_path = mean.nifti.to_nifti(folder / "mean_canonical.nii.gz")
    say(f"5. temporal mean saved (streaming, atomic): {mean_path}")
    try:
        png = folder / "mean_orthoview.png"
        figure = mean.nifti.plot()
        figure.savefig(png, dpi=80)
        say(f"6. orthogonal views written: {png}")
    except ImportError as err:
        say(f"6. orthoview skipped: {err}")
    say(f"outputs are in {folder}")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs)."""
    parser = argparse.ArgumentParser(
        prog="xarray-nifti", description="Inspect, convert and plot NIfTI images with xarray-nifti."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print geometry, dtype, scaling and the Dataset of a file")
    info.add_argument("file")
    conv = sub.add_parser("convert", help="convert NIfTI <-> Zarr (.zarr) / NetCDF (.nc) / NIfTI")
    conv.add_argument("source")
    conv.add_argument("target")
    plot = sub.add_parser("plot", help="write orthogonal views of a 3-D/4-D image to a PNG")
    plot.add_argument("file")
    plot.add_argument("-o", "--output", required=True, help="PNG file to write")
    plot.add_argument("--at", type=_parse_point, help="world point x,y,z in mm (default: centre)")
    plot.add_argument("--time", type=int, default=0, help="volume of a 4-D image (default 0)")
    plot.add_argument("--radiological", action="store_true", help="left on the right")
    dem = sub.add_parser("demo", help="run the whole story on a real scan shipped with nibabel")
    dem.add_argument("--outdir", help="folder for the outputs (default: a new temp folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xarray-nifti``; returns the exit status."""
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    # "--at -40,60,30" would read as an option: glue the value on.
    for n, value in enumerate(arguments[:-1]):
        if value == "--at":
            arguments[n : n + 2] = [f"--at={arguments[n + 1]}"]
            break
    args = parser.parse_args(arguments)
    try:
        if args.command == "info":
            print(describe(args.file))
        elif args.command == "convert":
            print(f"wrote {convert(args.source, args.target)}")
        elif args.command == "plot":
            ds = _open(args.file)
            data = ds[next(iter(ds.data_vars))]
            if "time" in data.dims:
                volumes = data.sizes["time"]
                if not 0 <= args.time < volumes:
                    raise ValueError(
                        f"--time {args.time}: the image has {volumes} volumes (0..{volumes - 1})"
                    )
                data = data.isel(time=args.time)
            convention = "radiological" if args.radiological else "neurological"
            figure = data.nifti.plot(at=args.at, convention=convention)
            figure.savefig(args.output, dpi=100)
            print(f"wrote {args.output}")
        elif args.command == "demo":
            for line in demo(args.outdir):
                print(line)
    except KeyboardInterrupt:
        print(f"xarray-nifti {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError, TypeError, ImportError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"xarray-nifti {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
