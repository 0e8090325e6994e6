"""How values become stored values: the stored dtype, ``scl_slope``/``scl_inter``, and encoding.

The rule: a written file reads back as the values in memory to within the
stored type's resolution (``scl_slope / 2`` for scaled integers), or the write
fails before touching the target.

* The source's stored dtype and scaling (``encoding``) are kept when the data
  is still the lazily read file, or when every value provably fits them (it
  reads back as itself); otherwise float data is stored as float32.
* An explicit integer ``dtype`` for float data (or for integers outside its
  range) gets a slope and intercept computed from the data's finite range, as
  :func:`nibabel.save` does, unless the values are whole numbers that fit the
  type (stored exactly) or ``encoding`` holds a ``scale_factor``/``add_offset``
  that keeps every value in range (CF quantisation, as ``to_netcdf`` does).
  The range comes from one pass over the data, block by block.
* NaN is stored as the stored value nearest to 0; ±inf as the type's limits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr

from ._slabs import scan_blocks
from .array import NiftiBackendArray

__all__ = ["Storage", "choose_storage", "encode_block", "scaling_for_range"]

# Values quantised at once: 2 MiB of float64 work, which stays in the CPU cache.
_PIECE = 1 << 18

# dask layers that only read, select or rechunk: values as the file has them.
_READING_LAYERS = ("original-", "open_dataset-", "getitem-", "rechunk-", "transpose-")
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
# Values checked at a time (float64 work of 2 MiB).
_FIT_PIECE = 1 << 18
# Rounding error allowed, in stored units, when checking that values fit a scaling.
_FIT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Storage:
    """How values become stored values."""

    dtype: np.dtype[Any]
    slope: float | None = None  # header scl_slope
    inter: float | None = None  # header scl_inter
    rescale: bool = False  # stored = (value - inter) / slope; else values are stored as they are


@dataclass(frozen=True)
class _Range:
    """Finite range of a block and what else it holds."""

    low: float | None = None
    high: float | None = None
    nan: bool = False
    whole: bool = True  # every finite value is a whole number


def _number(value: Any) -> float | None:
    """A finite, non-zero scaling factor (NIfTI: a zero slope means unscaled)."""
    if value is None:
        return None
    number = float(np.asarray(value).item())
    return number if math.isfinite(number) and number != 0 else None


def _same_numeric(stored: Any, dtype: np.dtype[Any]) -> bool:
    try:
        return bool(np.dtype(stored).newbyteorder("=") == dtype.newbyteorder("="))
    except TypeError:
        return False


def _real(block: np.ndarray) -> np.ndarray:
    return block.real if block.dtype.kind == "c" else block


def _range_of(block: np.ndarray) -> _Range:
    values = _real(np.asarray(block))
    if values.size == 0:
        return _Range()
    if values.dtype.kind in "biu":
        return _Range(float(values.min()), float(values.max()))
    finite = values[np.isfinite(values)]
    nan = bool(np.isnan(values).any())
    if finite.size == 0:
        return _Range(nan=nan)
    whole = bool(np.all(finite == np.rint(finite)))
    return _Range(float(finite.min()), float(finite.max()), nan, whole)


def _merge(ranges: Iterable[_Range]) -> _Range:
    ranges = list(ranges)
    lows = [r.low for r in ranges if r.low is not None]
    highs = [r.high for r in ranges if r.high is not None]
    return _Range(
        min(lows) if lows else None,
        max(highs) if highs else None,
        any(r.nan for r in ranges),
        all(r.whole for r in ranges),
    )


def _float32_up(value: float) -> float:
    """The smallest float32 (the header's type) not below ``value``."""
    rounded = np.float32(value)
    if float(rounded) < value:
        rounded = np.nextafter(rounded, np.float32(np.inf))
    return float(rounded)


def _float32_down(value: float) -> float:
    """The largest float32 not above ``value``."""
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def _in_range(low: float, high: float, info: np.iinfo[Any]) -> bool:
    return low >= int(info.min) and high <= int(info.max)


def scaling_for_range(low: float, high: float, dtype: np.dtype[Any]) -> tuple[float, float]:
    """``(slope, inter)`` that map ``[low, high]`` onto integer ``dtype`` at its finest resolution.

    Both are float32 numbers (what a NIfTI-1 header holds), chosen so that
    ``rint((value - inter) / slope)`` stays inside the type for every value in
    the range: the error of a stored value is at most ``slope / 2``.

    Examples
    --------
    >>> slope, inter = scaling_for_range(0.0, 2.4, np.dtype("int16"))
    >>> bool(slope < 1e-4)
    True
    """
    info = np.iinfo(dtype)
    out_low, out_high = float(info.min), float(info.max)
    if high == low:
        # One value: the float32 at or below it as intercept, the rest as one stored step.
        below = _float32_down(low)
        residual = low - below
        return (_float32_up(max(residual, _FLOAT32_TINY)) if residual > 0 else 1.0), below
    margin = 0.0
    for _ in range(32):
        levels = out_high - out_low - 2 * margin
        if levels < 1:
            break
        # Not below float32's smallest normal number: a header slope must be non-zero.
        slope = _float32_up(max((high - low) / levels, _FLOAT32_TINY))
        inter = float(np.float32(low - (out_low + margin) * slope))
        stored_low = np.rint((low - inter) / slope)
        stored_high = np.rint((high - inter) / slope)
        # Rounding the intercept to float32 can shift the ends out of the type.
        overshoot = max(out_low - stored_low, stored_high - out_high, 0.0)
        if overshoot == 0:
            return slope, inter
        margin = 2 * margin + overshoot + 1
    # float32 cannot place the intercept precisely enough for this range: use
    # the float32 at or below ``low`` as intercept and the positive stored
    # values only (at most half the resolution of a signed type).
    below = _float32_down(low)
    return _float32_up((high - below) / out_high), below


def _fits_block(block: np.ndarray, slope: float, inter: float, dtype: np.dtype[Any]) -> bool:
    """Whether every value reads back as itself when stored with ``slope``/``inter``."""
    block = np.asarray(block)
    if block.size == 0:
        return True
    if block.dtype.kind == "c" and np.any(block.imag != 0):
        return False
    values = _real(block)
    low, high = float(values.min()), float(values.max())  # NaN and inf end up here
    if not (math.isfinite(low) and math.isfinite(high)):
        return False
    info = np.iinfo(dtype)
    ends = sorted(round((v - inter) / slope) for v in (low, high))
    if ends[0] < int(info.min) or ends[1] > int(info.max):
        return False
    # The values were decoded in their own float type: allow its rounding error.
    eps = float(np.finfo(values.dtype).eps) if values.dtype.kind == "f" else 0.0
    allowed = _FIT_TOLERANCE + 2 * eps * (max(abs(low), abs(high)) + abs(inter)) / abs(slope)
    flat = values.reshape(-1)  # a view for the contiguous blocks a reader returns
    for start in range(0, flat.size, _FIT_PIECE):
        # Small pieces keep the float64 work in cache (about 3x faster on large blocks).
        work = np.subtract(flat[start : start + _FIT_PIECE], inter, dtype=np.float64)
        work /= slope
        work -= np.rint(work)
        if float(np.abs(work, out=work).max()) > allowed:
            return False
    return True


def _fits(array: xr.DataArray, storage: Storage) -> bool:
    if storage.dtype.kind not in "iu" or storage.slope is None:
        return True
    slope, inter = storage.slope, storage.inter or 0.0
    return all(scan_blocks(array, lambda block: _fits_block(block, slope, inter, storage.dtype)))


def _reads_backend(data: Any, source: Any) -> bool:
    """Whether a lazy wrapper chain ends at the backend array of the file ``source``."""
    for _ in range(16):
        if isinstance(data, NiftiBackendArray):
            location = data.location
            return source is not None and str(source) in (location.name, location.path)
        if isinstance(data, np.ndarray) or not hasattr(data, "array"):
            return False
        data = data.array
    return False


def _unchanged_since_read(array: xr.DataArray) -> bool:
    """Whether ``array`` still holds the values read from its file (only selected/reordered).

    The file must be the one its ``encoding`` describes: data of another
    file put in with ``.copy(data=...)`` does not count.
    """
    data = array.variable._data
    source = array.encoding.get("source")
    graph = getattr(data, "dask", None)
    if graph is None:
        return _reads_backend(data, source)
    layers = [str(name) for name in getattr(graph, "layers", {})]
    if not layers or not all(name.startswith(_READING_LAYERS) for name in layers):
        return False
    return any(_reads_backend(value, source) for value in graph.values())


def _requested(dtype: Any) -> np.dtype[Any] | None:
    try:
        return None if dtype is None else np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype={dtype!r} is not a dtype NIfTI can store") from err


def _default_dtype(array: xr.DataArray, encoding: Mapping[str, Any]) -> np.dtype[Any]:
    if "dtype" in encoding and _same_numeric(encoding["dtype"], array.dtype):
        # Unchanged dtype since it was read: stored as the file stored it.
        return np.dtype(encoding["dtype"])  # type: ignore[no-any-return]
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if array.dtype.kind == "f":
        # Float results are stored as float32 unless asked otherwise: other
        # tools read float32 everywhere and the files are half the size.
        return np.dtype(np.float32)
    return array.dtype


def _check_numeric(target: np.dtype[Any], array: xr.DataArray) -> None:
    if target.kind not in "iufc" or array.dtype.kind not in "biufc":
        what = target if target.kind not in "iufc" else array.dtype
        raise TypeError(
            f"NIfTI cannot store dtype {what}; convert with .astype(...) to a numeric dtype "
            "(or pass dtype=)"
        )
    if array.dtype.kind == "c" and target.kind != "c":
        raise TypeError(
            f"complex data cannot be stored as {target} without losing the imaginary part; "
            "pass dtype='complex64' (or 'complex128'), or store .real or abs(...) explicitly"
        )


def _from_range(array: xr.DataArray, target: np.dtype[Any]) -> Storage:
    """Integer storage for values that do not fit ``target`` as they are (one scan)."""
    found = _merge(scan_blocks(array, _range_of))
    if found.low is None or found.high is None:  # no finite values
        return Storage(target)
    low, high = found.low, found.high
    if found.nan:  # NaN is stored as 0: keep 0 representable
        low, high = min(low, 0.0), max(high, 0.0)
    info = np.iinfo(target)
    if found.whole and _in_range(low, high, info):
        return Storage(target)
    slope, inter = scaling_for_range(low, high, target)
    return Storage(target, slope, inter, rescale=True)


def choose_storage(array: xr.DataArray, dtype: Any, encoding: Mapping[str, Any]) -> Storage:
    """The stored dtype and scaling for ``array`` (see the module docstring for the rules).

    Raises ``TypeError`` for dtypes NIfTI cannot store.
    """
    requested = _requested(dtype)
    scale = _number(encoding.get("scale_factor"))
    offset = _number(encoding.get("add_offset"))
    encoded: Storage | None = None
    if scale is not None or offset is not None:
        encoded = Storage(
            requested if requested is not None else np.dtype(encoding.get("dtype", np.float32)),
            1.0 if scale is None else scale,
            offset or 0.0,
            rescale=True,
        )
    if requested is None:
        if encoded is not None and "dtype" in encoding:
            _check_numeric(encoded.dtype, array)
            if _unchanged_since_read(array) or _fits(array, encoded):
                return encoded
            target = np.dtype(np.float32) if array.dtype.kind != "c" else array.dtype
        else:
            target = _default_dtype(array, encoding)
    else:
        target = requested
    _check_numeric(target, array)
    raw_scale = _number(array.attrs.get("scale_factor"))
    raw_offset = _number(array.attrs.get("add_offset"))
    if array.dtype.kind in "iu" and (raw_scale is not None or raw_offset is not None):
        # mask_and_scale=False: stored values with their factors in attrs.
        if not np.can_cast(array.dtype, target):
            raise TypeError(
                f"these are stored {array.dtype} values with scale_factor/add_offset in attrs "
                f"(opened with mask_and_scale=False); they cannot be stored as {target} "
                "without changing the scaling: open with mask_and_scale=True to convert them"
            )
        return Storage(target, 1.0 if raw_scale is None else raw_scale, raw_offset or 0.0)
    if target.kind in "iu" and encoded is not None and requested is not None:
        if _same_numeric(encoding.get("dtype"), target) and _unchanged_since_read(array):
            return encoded
        # An explicit integer dtype with scale_factor/add_offset: CF quantisation.
        found = _merge(scan_blocks(array, _range_of))
        slope, inter = encoded.slope or 1.0, encoded.inter or 0.0
        ends = [(v - inter) / slope for v in (found.low, found.high) if v is not None]
        if _in_range(min(ends, default=0.0), max(ends, default=0.0), np.iinfo(target)):
            return encoded
    if target.kind not in "iu" or np.can_cast(array.dtype, target):
        return Storage(target)
    return _from_range(array, target)


def encode_block(block: np.ndarray, storage: Storage, out_dtype: np.dtype[Any]) -> np.ndarray:
    """Values → stored values in ``out_dtype`` (the header's dtype and byte order).

    Integer output is rounded and clipped to the dtype's range; NaN becomes
    the stored value nearest to 0.
    """
    stored, slope = storage.dtype, storage.slope if storage.rescale else None
    if stored.kind in "iu" and (block.dtype.kind in "fc" or slope is not None):
        return _quantise(_real(block), storage, out_dtype)
    if slope is not None:
        work = block.astype(np.complex128 if block.dtype.kind == "c" else np.float64)
        work -= storage.inter or 0.0
        work /= slope
        block = work
    if stored.kind in "iu" and block.dtype.kind in "iu" and block.dtype != stored:
        info = np.iinfo(stored)
        if np.iinfo(block.dtype).min < info.min or np.iinfo(block.dtype).max > info.max:
            block = np.clip(block, info.min, info.max)
    elif stored.kind in "fc" and block.dtype.itemsize > stored.itemsize:
        with np.errstate(over="ignore"):  # overflow is checked just below, with a better message
            narrowed = np.asarray(block).astype(out_dtype)
        _check_no_overflow(block, narrowed)
        return narrowed
    return np.asarray(block).astype(out_dtype, copy=False)


def _quantise(values: np.ndarray, storage: Storage, out_dtype: np.dtype[Any]) -> np.ndarray:
    """Real values → rounded, clipped integers in ``out_dtype``; NaN → the level nearest 0.

    Works through the block in pieces of :data:`_PIECE` values with one small
    float64 buffer: the in-place passes then stay in the CPU cache, and no
    block-sized float64 copy is allocated (the block itself is not changed).
    """
    info = np.iinfo(storage.dtype)
    inter, slope, zero = 0.0, 1.0, 0.0
    if storage.rescale and storage.slope is not None:
        inter, slope = storage.inter or 0.0, storage.slope
        zero = float(np.clip(np.rint(-inter / slope), info.min, info.max))
    order: Literal["C", "F"] = "C"
    if values.flags.f_contiguous and not values.flags.c_contiguous:
        order = "F"
    source = values.ravel(order=order)  # a view of a contiguous block
    out = np.empty(values.shape, dtype=out_dtype, order=order)
    target = out.ravel(order=order)
    buffer = np.empty(min(_PIECE, source.size), dtype=np.float64)
    for start in range(0, source.size, _PIECE):
        piece = source[start : start + _PIECE]
        work = buffer[: piece.size]
        np.subtract(piece, inter, out=work, dtype=np.float64)  # float64, not float32 (NEP 50)
        if slope != 1.0:
            work /= slope
        np.rint(work, out=work)
        np.clip(work, info.min, info.max, out=work)  # ±inf go to the ends of the range
        if np.isnan(work.sum()):  # one cheap check; fixing NaN costs passes only when present
            work[np.isnan(work)] = zero
        target[start : start + piece.size] = work
    return out


def _check_no_overflow(block: np.ndarray, narrowed: np.ndarray) -> None:
    """``ValueError`` when finite values became inf in a narrower float type."""
    if not np.isinf(narrowed).any():  # the common case: one cheap pass
        return
    lost = np.isinf(narrowed) & np.isfinite(block)
    if lost.any():
        largest = float(np.abs(np.asarray(block)[lost]).max())
        raise ValueError(
            f"values up to {largest:.6g} do not fit {narrowed.dtype.newbyteorder('=')}, "
            f"whose largest number is {float(np.finfo(narrowed.dtype).max):.6g}: pass "
            f"dtype='{np.asarray(block).dtype.newbyteorder('=')}' to keep them"
        )


def work_itemsize(data_dtype: np.dtype[Any], storage: Storage, out_dtype: np.dtype[Any]) -> int:
    """Bytes per voxel that computing and encoding a slab may hold at once."""
    size = max(data_dtype.itemsize, out_dtype.itemsize, 4)
    if storage.rescale or (storage.dtype.kind in "iu" and data_dtype.kind in "fc"):
        size = max(size, 8)
    return int(size)
