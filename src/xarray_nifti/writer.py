"""Streaming, atomic NIfTI writer.

Data are pulled in file order (Fortran order: the last axis is slowest) as
slabs of at most ``_SLAB_BYTES``, encoded to the stored dtype and written as
they come, so memory stays bounded by a few slabs whatever the image size.
Output goes to a temporary file beside the target and is moved into place
with :func:`os.replace` only when complete; any exception (including
``KeyboardInterrupt``) removes the temporary file and leaves an existing
target untouched.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import xarray as xr

from ._metadata import DIM_NAMES, build_header
from .accessor import axis_order, find_index
from .transform import NiftiGeometry

__all__ = ["NiftiPlan", "plan_nifti", "to_nifti"]

_SLAB_BYTES = 64 << 20
_NIFTI1_MAX_DIM = 32767
_SUFFIXES = {
    ".nii": (False, False),
    ".nii.gz": (False, True),
    ".hdr": (True, False),
    ".img": (True, False),
    ".hdr.gz": (True, True),
    ".img.gz": (True, True),
}
#: gzip level for ``.nii.gz`` (ISA-L level 1: as small as zlib level 1, about 4× faster).
DEFAULT_COMPRESSLEVEL = 1


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise ValueError(
        f"{path}: unsupported suffix; write NIfTI as .nii, .nii.gz, .hdr/.img or .img.gz"
    )


def select_variable(obj: xr.Dataset | xr.DataArray, var: str | None) -> xr.DataArray:
    """The one data variable to write (``var=`` picks one of several)."""
    if isinstance(obj, xr.DataArray):
        return obj
    if var is not None:
        if var not in obj.data_vars:
            raise KeyError(f"no data variable {var!r}; the dataset has {list(obj.data_vars)}")
        return obj[var]
    names = list(obj.data_vars)
    if len(names) != 1:
        raise ValueError(
            f"the dataset has {len(names)} data variables {names}; choose one with var=..."
        )
    return obj[names[0]]


def stored_dtype(
    array: xr.DataArray, dtype: Any, encoding: Mapping[str, Any]
) -> tuple[np.dtype[Any], float | None, float | None]:
    """Dtype to store, and the slope/intercept to encode with (``None`` = unscaled)."""
    scale = encoding.get("scale_factor")
    offset = encoding.get("add_offset")
    if dtype is not None:
        target = np.dtype(dtype)
    elif (scale is not None or offset is not None) and "dtype" in encoding:
        target = np.dtype(encoding["dtype"])
    elif array.dtype == np.bool_:
        target = np.dtype(np.uint8)
    elif array.dtype.kind == "f":
        # Float results are stored as float32 unless asked otherwise: other
        # tools read float32 everywhere and the files are half the size.
        target = np.dtype(np.float32)
    else:
        target = array.dtype
    if target.kind not in "iufc" or target.itemsize > 16:
        raise TypeError(
            f"NIfTI cannot store dtype {target}; convert with .astype(...) or pass dtype="
        )
    if target.kind in "iu" and (scale is not None or offset is not None):
        return target, float(1.0 if scale is None else scale), float(0.0 if offset is None else offset)
    return target, None, None


@dataclass(frozen=True)
class NiftiPlan:
    """Everything needed to write one DataArray as NIfTI."""

    data: xr.DataArray  # transposed to NIfTI axis order, spatial dims padded
    header: Any
    stored: np.dtype[Any]
    slope: float | None
    inter: float | None
    geometry: NiftiGeometry


def plan_nifti(
    array: xr.DataArray,
    *,
    version: int | None = None,
    dtype: Any = None,
    pair: bool = False,
) -> NiftiPlan:
    """Work out header, axis order and stored dtype for writing ``array``."""
    index = find_index(array)
    transform = index.transform
    order = axis_order(array, index)
    present = [str(transform.axis_dims[a]) for a in order if transform.axis_dims[a] is not None]
    extra = [str(d) for d in array.dims if d not in present]
    unknown = [d for d in extra if d not in DIM_NAMES[3:]]
    if unknown:
        raise ValueError(
            f"cannot map dims {unknown} to NIfTI axes: besides the spatial dims, NIfTI has "
            "'time', 'u', 'v', 'w' only; select or reduce the others first (or rename one to "
            "'time')"
        )
    extra = [d for d in DIM_NAMES[3:] if d in extra]
    data = array.transpose(*present, *extra)
    # Dropped spatial axes get size 1 in the file, in their original position.
    expand = [f"__axis{a}" for a in order[len(present) :]]
    for name in expand:
        data = data.expand_dims(name, axis=len(present))
        present.append(name)
    shape = tuple(int(n) for n in data.shape)
    if len(shape) > 7:
        raise ValueError(f"NIfTI holds at most 7 dims, this array has {len(shape)}")
    permutation = np.eye(4)[:, [*order, 3]]
    geometry = index.geometry.transformed(permutation, shape[:3])
    # Dropped spatial axes come last in ``order``: without extra dims they are
    # trailing singletons, which NIfTI leaves out (dim[0] counts only real axes).
    nifti_shape = shape if extra else shape[: max(1, len(transform.present_axes))]
    encoding = dict(array.encoding)
    stored, slope, inter = stored_dtype(array, dtype, encoding)
    if version is None:
        version = 2 if encoding.get("format") == "nifti2" else 1
        if max(shape) > _NIFTI1_MAX_DIM:
            version = 2
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    if version == 1 and max(shape) > _NIFTI1_MAX_DIM:
        raise ValueError(f"NIfTI-1 dims are at most {_NIFTI1_MAX_DIM}; use version=2")
    header = build_header(geometry, nifti_shape, stored, array.attrs, encoding, version=version, pair=pair)
    if slope is not None:
        header.set_slope_inter(slope, inter)
    if encoding.get("byteorder") == "big" and stored.itemsize > 1:
        header = header.as_byteswapped(">")
    return NiftiPlan(data, header, stored, slope, inter, geometry)


def _encode(block: np.ndarray, plan: NiftiPlan) -> np.ndarray:
    stored = plan.stored
    if plan.slope is not None:
        block = (np.asarray(block, dtype=np.float64) - plan.inter) / plan.slope
    if stored.kind in "iu" and block.dtype.kind in "fc":
        info = np.iinfo(stored)
        # NaN has no integer value: stored as 0, as nibabel does.
        block = np.nan_to_num(np.rint(block.real if block.dtype.kind == "c" else block), nan=0.0)
        block = np.clip(block, info.min, info.max)
    out = np.asarray(block).astype(plan.header.get_data_dtype(), copy=False)
    return out


def _slabs(data: xr.DataArray) -> Iterator[tuple[int, ...]]:
    """Split the slowest axes so that each slab is contiguous in F order."""
    shape = data.shape
    itemsize = max(data.dtype.itemsize, 4)
    # Find the axis along which slabs are cut: all faster axes are whole.
    inner = 1
    cut = len(shape) - 1
    for axis, size in enumerate(shape):
        if inner * size * itemsize > _SLAB_BYTES:
            cut = axis
            break
        inner *= size
    else:
        yield ()
        return
    per_slab = max(1, _SLAB_BYTES // max(inner * itemsize, 1))
    outer = [range(n) for n in shape[cut + 1 :]]
    for combo in itertools.product(*reversed(outer)):
        for start in range(0, shape[cut], per_slab):
            yield (start, min(start + per_slab, shape[cut]), cut, *reversed(combo))


def _iter_blocks(data: xr.DataArray) -> Iterator[np.ndarray]:
    shape = data.shape
    variable = data.variable
    for slab in _slabs(data):
        if slab == ():
            key: tuple[Any, ...] = (slice(None),) * len(shape)
        else:
            start, stop, cut, *outer = slab
            key = (slice(None),) * cut + (slice(start, stop),) + tuple(outer)
        yield variable[key]  # type: ignore[misc]


def _compute(variable: Any) -> np.ndarray:
    return np.asarray(variable.values)


def _write_data(fileobj: IO[bytes], plan: NiftiPlan) -> None:
    blocks = _iter_blocks(plan.data)
    # Compute the next slab while the current one is encoded and written.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for block in blocks:
            future = pool.submit(_compute, block)
            if pending is not None:
                _write_block(fileobj, _encode(pending.result(), plan))
            pending = future
        if pending is not None:
            _write_block(fileobj, _encode(pending.result(), plan))


def _write_block(fileobj: IO[bytes], block: np.ndarray) -> None:
    flat = np.asfortranarray(block).reshape(-1, order="F")
    fileobj.write(memoryview(flat.view(np.uint8)))


def _open_output(path: Path, compressed: bool, compresslevel: int, stack: ExitStack) -> tuple[IO[bytes], Path]:
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the stack
        dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False
    )
    temp = Path(handle.name)
    stack.callback(handle.close)
    if not compressed:
        return handle, temp
    from isal import igzip

    stream = igzip.IGzipFile(fileobj=handle, mode="wb", compresslevel=compresslevel)
    stack.callback(stream.close)
    return stream, temp


def _refuse_overwriting_source(array: xr.DataArray, targets: list[Path]) -> None:
    source = array.encoding.get("source")
    if not source or isinstance(array.variable._data, np.ndarray):
        return
    try:
        source_path = Path(str(source)).resolve()
    except (OSError, ValueError):
        return
    data_files = {source_path, source_path.with_suffix(".img"), source_path.with_suffix(".hdr")}
    for target in targets:
        if target.resolve() in data_files:
            raise ValueError(
                f"{target}: refusing to overwrite the file this lazy dataset reads from; "
                "write to another path, or call .load() first to read the data into memory"
            )


def _pair_paths(path: Path, suffix: str) -> tuple[Path, Path]:
    gz = ".gz" if suffix.endswith(".gz") else ""
    stem = path.name[: -len(suffix)]
    return path.with_name(stem + ".hdr" + gz), path.with_name(stem + ".img" + gz)


def to_nifti(
    obj: xr.Dataset | xr.DataArray,
    path: str | os.PathLike[str],
    *,
    var: str | None = None,
    version: int | None = None,
    dtype: Any = None,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
) -> Path:
    """Write ``obj`` as NIfTI, streaming and atomically (see ``.nifti.to_nifti``)."""
    target = Path(os.fspath(path)).expanduser()
    suffix = _suffix(target)
    pair, compressed = _SUFFIXES[suffix]
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target}: the folder {target.parent} does not exist")
    array = select_variable(obj, var)
    plan = plan_nifti(array, version=version, dtype=dtype, pair=pair)
    header = plan.header
    outputs = list(_pair_paths(target, suffix)) if pair else [target]
    _refuse_overwriting_source(array, outputs)
    temps: list[Path] = []
    try:
        with ExitStack() as stack:
            if pair:
                header_file, header_temp = _open_output(outputs[0], compressed, compresslevel, stack)
                temps.append(header_temp)
                image_file, image_temp = _open_output(outputs[1], compressed, compresslevel, stack)
                temps.append(image_temp)
                header.set_data_offset(0)
                header.write_to(header_file)
            else:
                image_file, image_temp = _open_output(target, compressed, compresslevel, stack)
                temps.append(image_temp)
                offset = _single_file_offset(header)
                header.set_data_offset(offset)
                header.write_to(image_file)
                image_file.write(b"\x00" * (offset - _written(header)))
            _write_data(image_file, plan)
        for temp, final in zip(temps, outputs, strict=True):
            os.chmod(temp, 0o644)
            os.replace(temp, final)
        temps.clear()
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return target


def _written(header: Any) -> int:
    """Bytes that ``header.write_to`` writes for a single file (header, extender, extensions)."""
    return int(header.sizeof_hdr) + 4 + int(header.extensions.get_sizeondisk())


def _single_file_offset(header: Any) -> int:
    needed = _written(header)
    return int(-(-needed // 16) * 16)
