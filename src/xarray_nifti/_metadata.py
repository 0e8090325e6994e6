"""Header fields ⇄ xarray attrs/encoding, and the grid geometry of a header.

Grid-dependent fields (affines, shape, zooms) go into the index; everything
else a writer needs goes into ``attrs`` (what users read) or ``encoding`` (how
the file stored it). :func:`build_header` is the inverse: index geometry +
attrs + encoding → a nibabel header. Raw header fields kept in ``encoding``
(quaternion, ``pixdim``, ``descrip`` bytes, legacy Analyze fields) are written
back only while they still describe the data, so that an unchanged image is
restored bit for bit and a changed one gets a consistent header.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.analyze import AnalyzeHeader
from nibabel.nifti1 import Nifti1Extension, Nifti1Header
from nibabel.spatialimages import HeaderDataError
from numpy.typing import ArrayLike

from ._time_axis import time_step
from .transform import NiftiGeometry

__all__ = [
    "DIM_NAMES",
    "TIME_UNIT_SECONDS",
    "attrs_from_header",
    "build_header",
    "encoding_from_header",
    "geometry_from_header",
    "time_step",
    "time_values",
]

_INTENT_CODES = frozenset(nib.nifti1.intent_codes.value_set())  # nibabel rebuilds it per call
_SLICE_ORDER_CODES = frozenset(nib.nifti1.slice_order_codes.value_set())

DIM_NAMES = ("i", "j", "k", "time", "u", "v", "w")
TIME_UNIT_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}

# Attributes users may set or read, written back to these header fields.
_SLICE_FIELDS = ("slice_start", "slice_end", "slice_duration")
_QUATERN_FIELDS = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")
# NIfTI-1 fields kept from Analyze 7.5 and unused by NIfTI; restored as read.
_LEGACY_FIELDS = ("data_type", "db_name", "extents", "session_error", "regular", "glmax", "glmin")
# Slice orders read backwards when the slice axis is flipped.
_REVERSED_SLICE_CODE = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5}
# Tolerance (mm) under which a raw header form is taken to describe the same grid.
_RAW_FORM_TOLERANCE = 1e-6


def _text(value: Any) -> str:
    raw = np.asarray(value).item()
    if isinstance(raw, bytes):
        return raw.split(b"\x00", 1)[0].decode("latin-1").strip()
    return str(raw)


def xyzt_units(header: Nifti1Header) -> tuple[str, str]:
    """Spatial and time unit names; unknown codes read as ``"unknown"``.

    nibabel's ``get_xyzt_units`` raises ``KeyError`` for codes NIfTI does not define.
    """
    code = int(header["xyzt_units"])
    labels = nib.nifti1.unit_codes.label
    return str(labels.get(code % 8, "unknown")), str(labels.get(code - code % 8, "unknown"))


def geometry_from_header(
    header: AnalyzeHeader, affine: np.ndarray, shape: tuple[int, ...]
) -> NiftiGeometry:
    """Geometry of the first three axes: chosen affine, sform/qform and their codes."""
    spatial = tuple(shape[:3]) + (1,) * (3 - min(3, len(shape)))
    if isinstance(header, nib.Nifti1Header):  # Nifti2Header is a subclass
        sform_code = int(header["sform_code"])
        qform_code = int(header["qform_code"])
        return NiftiGeometry(
            affine,
            (spatial[0], spatial[1], spatial[2]),
            sform=_finite_or_none(header.get_sform),
            qform=_finite_or_none(header.get_qform),
            sform_code=sform_code,
            qform_code=qform_code,
        )
    return NiftiGeometry(affine, (spatial[0], spatial[1], spatial[2]))


def _finite_or_none(getter: Callable[[], ArrayLike]) -> np.ndarray | None:
    try:
        form = np.asarray(getter(), dtype=np.float64)
    except Exception:  # nibabel raises several types for impossible quaternions
        return None
    return form if np.all(np.isfinite(form)) else None


def time_values(header: AnalyzeHeader, ntime: int) -> np.ndarray | None:
    """Acquisition times of the volumes in seconds, or ``None`` if not a time axis."""
    zooms = header.get_zooms()
    if len(zooms) < 4:
        return None
    step = float(zooms[3])
    t_unit = xyzt_units(header)[1] if isinstance(header, nib.Nifti1Header) else "unknown"
    if t_unit not in TIME_UNIT_SECONDS or not np.isfinite(step) or step <= 0:
        return None
    scale = TIME_UNIT_SECONDS[t_unit]
    toffset = float(header["toffset"]) if "toffset" in header else 0.0
    if not np.isfinite(toffset):
        toffset = 0.0
    return (toffset + np.arange(ntime) * step) * scale


def _intent(header: Nifti1Header) -> tuple[str, list[float], str]:
    code = int(header["intent_code"])
    if code in _INTENT_CODES:
        name = str(header.get_value_label("intent_code"))
    else:
        name = f"unknown ({code})"
    params = [float(header[f"intent_p{n}"]) for n in (1, 2, 3)]
    return name, params, _text(header["intent_name"])


def attrs_from_header(header: AnalyzeHeader, geometry: NiftiGeometry) -> dict[str, Any]:
    """Grid-independent header fields as attributes."""
    attrs: dict[str, Any] = {}
    descrip = _text(header["descrip"])
    if descrip:
        attrs["descrip"] = descrip
    aux = _text(header["aux_file"])
    if aux:
        attrs["aux_file"] = aux
    for field in ("cal_min", "cal_max"):
        value = float(header[field])
        if value != 0 and np.isfinite(value):
            attrs[field] = value
    attrs["space"] = geometry.space
    if not isinstance(header, nib.Nifti1Header):
        return attrs
    spatial_unit, time_unit = xyzt_units(header)
    attrs["spatial_units"] = spatial_unit
    attrs["time_units"] = time_unit
    zooms = header.get_zooms()
    if len(zooms) >= 4 and float(zooms[3]) > 0 and time_unit in TIME_UNIT_SECONDS:
        attrs["repetition_time"] = float(zooms[3]) * TIME_UNIT_SECONDS[time_unit]
    toffset = float(header["toffset"])
    if toffset != 0 and np.isfinite(toffset):
        attrs["toffset"] = toffset * TIME_UNIT_SECONDS.get(time_unit, 1.0)
    intent_name, params, label = _intent(header)
    code = int(header["intent_code"])
    if code != 0:
        attrs["intent"] = intent_name
        attrs["intent_code"] = code
        attrs["intent_params"] = params
    if label:
        attrs["intent_name"] = label
    freq, phase, slice_dim = header.get_dim_info()
    for name, value in (("freq_dim", freq), ("phase_dim", phase), ("slice_dim", slice_dim)):
        if value is not None:
            attrs[name] = int(value)
    slice_code = int(header["slice_code"])
    if slice_code in _SLICE_ORDER_CODES and slice_code != 0:
        attrs["slice_code"] = header.get_value_label("slice_code")
    elif slice_code != 0:
        attrs["slice_code"] = slice_code  # a code nibabel has no name for
    for field in _SLICE_FIELDS:
        value = header[field].item()
        if value:
            attrs[field] = value
    return attrs


def _extension_content(ext: Nifti1Extension[Any]) -> bytes:
    content = getattr(ext, "content", None)  # raw bytes (nibabel >= 5.3)
    if isinstance(content, bytes):
        return content
    return bytes(ext.get_content())


def _extensions(header: AnalyzeHeader) -> list[tuple[int, bytes]]:
    if not isinstance(header, nib.Nifti1Header):
        return []
    return [(int(ext.get_code()), _extension_content(ext)) for ext in header.extensions]


def _python(value: Any) -> Any:
    raw = np.asarray(value).item()
    return raw if isinstance(raw, bytes | int | float) else str(raw)


def encoding_from_header(header: AnalyzeHeader, source_format: str) -> dict[str, Any]:
    """How the file stored its data (everything a writer needs to restore it).

    Besides the stored dtype and byte order this keeps the raw header fields
    that attrs and the index hold only in derived form (quaternion and
    ``pixdim``, ``descrip`` bytes, the chosen affine and the data shape, which
    tell the writer what changed since the file was read).
    """
    raw_dtype = np.dtype(header.get_data_dtype())
    encoding: dict[str, Any] = {
        "dtype": raw_dtype.newbyteorder("=") if raw_dtype.fields is None else raw_dtype,
        "byteorder": "big" if header.endianness == ">" else "little",
        "format": source_format,
        "vox_offset": int(header.get_data_offset()),
        "extensions": _extensions(header),
        "dim": [int(n) for n in header.get_data_shape()],
    }
    try:
        affine = np.asarray(header.get_best_affine(), dtype=np.float64)
        if np.all(np.isfinite(affine)):
            encoding["affine"] = [float(v) for v in affine.ravel()]
    except Exception:  # an unusable affine is simply not recorded
        pass
    if isinstance(header, nib.Nifti1Header):
        encoding["xyzt_units"] = int(header["xyzt_units"])
        encoding["dim_info"] = int(header["dim_info"])
        encoding["slice_code"] = int(header["slice_code"])
        encoding["pixdim"] = [float(v) for v in header["pixdim"]]
        encoding["quatern"] = [float(header[f]) for f in _QUATERN_FIELDS]
        encoding["toffset"] = float(header["toffset"])
    legacy = {f: _python(header[f]) for f in _LEGACY_FIELDS if f in header}
    if legacy:
        encoding["legacy"] = legacy
    encoding["descrip"] = bytes(np.asarray(header["descrip"]).item())
    return encoding


def _source_transform(geometry: NiftiGeometry, encoding: Mapping[str, Any]) -> np.ndarray | None:
    """Voxel transform from the written grid to the source file's grid, if it is one.

    ``None`` unless the written grid is the source grid up to axis flips,
    permutations, integer steps and shifts (what slicing and reorienting do).
    """
    flat = encoding.get("affine")
    if flat is None or len(flat) != 16:
        return None
    source = np.asarray(flat, dtype=np.float64).reshape(4, 4)
    try:
        transform = np.linalg.solve(source, geometry.affine)
    except np.linalg.LinAlgError:
        return None
    rounded = np.round(transform)
    if not np.allclose(transform, rounded, rtol=0, atol=1e-3):
        return None
    if np.count_nonzero(rounded[:3, :3]) != 3 or np.any(np.count_nonzero(rounded[:3, :3], 0) != 1):
        return None
    return rounded


def _axis_map(transform: np.ndarray | None, source_axis: int) -> tuple[int, int, int] | None:
    """New axis, step and start of a source voxel axis under ``transform``."""
    if transform is None:
        return None
    columns = np.flatnonzero(transform[source_axis, :3])
    if len(columns) != 1:
        return None
    new = int(columns[0])
    return new, int(transform[source_axis, new]), int(transform[source_axis, 3])


def _set_dim_info(
    header: Nifti1Header,
    attrs: Mapping[str, Any],
    encoding: Mapping[str, Any],
    transform: np.ndarray | None,
) -> None:
    # Attributes name axes of the source file when the encoding knows its grid:
    # follow them through slicing/reorientation (lost through other changes).
    follow = "affine" in encoding
    dims: list[int | None] = []
    for name in ("freq_dim", "phase_dim", "slice_dim"):
        value = attrs.get(name)
        if value is None:
            dims.append(None)
        elif follow:
            mapped = _axis_map(transform, int(value))
            dims.append(None if mapped is None else mapped[0])
        else:
            dims.append(int(value) if 0 <= int(value) < 3 else None)
    header.set_dim_info(*dims)


def _slice_code_number(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int | np.integer):
        return int(code)
    number: Any = nib.nifti1.slice_order_codes.code[str(code)]
    return int(number)


def _set_slice_timing(
    header: Nifti1Header,
    attrs: Mapping[str, Any],
    encoding: Mapping[str, Any],
    transform: np.ndarray | None,
    shape: Sequence[int],
) -> None:
    numeric = _slice_code_number(attrs.get("slice_code"))
    values = {f: attrs[f] for f in _SLICE_FIELDS if f in attrs}
    if numeric == 0 and not values:
        return
    slice_dim = attrs.get("slice_dim")
    if "affine" in encoding and slice_dim is not None:
        # Slice timing is indexed along the slice axis: keep it while that axis
        # is whole, reverse it when the axis is flipped, drop it otherwise.
        source_dim = list(encoding.get("dim", []))
        axis = int(slice_dim)
        n_source = int(source_dim[axis]) if 0 <= axis < len(source_dim) else -1
        mapped = _axis_map(transform, axis)
        if mapped is None:
            return
        new, step, start = mapped
        n_new = int(shape[new]) if new < len(shape) else 1
        if n_new != n_source or (step, start) not in ((1, 0), (-1, n_source - 1)):
            return
        if step == -1:
            numeric = _REVERSED_SLICE_CODE.get(numeric, numeric)
            first, last = values.pop("slice_start", None), values.pop("slice_end", None)
            if first is not None and last is not None:
                values["slice_start"] = n_source - 1 - int(last)
                values["slice_end"] = n_source - 1 - int(first)
    header["slice_code"] = numeric
    for field, value in values.items():
        header[field] = value


def _restore_raw_qform(
    header: Nifti1Header, geometry: NiftiGeometry, encoding: Mapping[str, Any]
) -> None:
    """Write the source's own quaternion fields while they still give the same qform."""
    raw = encoding.get("quatern")
    pixdim = encoding.get("pixdim")
    if raw is None or pixdim is None or len(raw) != 6 or len(pixdim) != 8:
        return
    if geometry.qform is None:
        return
    trial = header.copy()
    for field, value in zip(_QUATERN_FIELDS, raw, strict=True):
        trial[field] = value
    trial_pixdim = trial["pixdim"]
    trial_pixdim[:4] = pixdim[:4]
    trial["pixdim"] = trial_pixdim
    try:
        same = np.allclose(trial.get_qform(), geometry.qform, rtol=0, atol=_RAW_FORM_TOLERANCE)
    except Exception:  # an impossible raw quaternion: keep nibabel's own
        return
    if same:
        for field in _QUATERN_FIELDS:
            header[field] = trial[field]
        header["pixdim"] = trial["pixdim"]


def _time_fields(
    attrs: Mapping[str, Any], times: np.ndarray | None
) -> tuple[float | None, float | None]:
    """Repetition time and time offset in seconds, following a sliced time coordinate."""
    tr = attrs.get("repetition_time")
    toffset = attrs.get("toffset")
    tr = None if tr is None else float(tr)
    toffset = None if toffset is None else float(toffset)
    if times is None or len(times) == 0 or not np.all(np.isfinite(times)):
        return tr, toffset
    tr = time_step(times, tr)[0]
    first = float(times[0])
    scale = max(abs(first), abs(tr or 0.0), 1.0)
    if not math.isclose(first, toffset or 0.0, rel_tol=0, abs_tol=1e-9 * scale):
        toffset = first
    return tr, toffset


def _in_unit(seconds: float, per_second: float, raw: Any) -> float:
    """``seconds`` in the header's time unit; the raw header value while it is the same time."""
    if raw is not None and math.isclose(float(raw) / per_second, seconds, rel_tol=1e-12):
        return float(raw)
    return seconds * per_second


def build_header(
    geometry: NiftiGeometry,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    attrs: Mapping[str, Any],
    encoding: Mapping[str, Any],
    *,
    version: int = 1,
    pair: bool = False,
    times: np.ndarray | None = None,
) -> Nifti1Header:
    """A NIfTI header for data of ``shape`` and stored ``dtype`` on ``geometry``.

    Parameters
    ----------
    geometry
        The written grid, columns in the written axis order.
    shape
        The full data shape in NIfTI axis order (spatial axes first, then
        time and u, v, w).
    dtype
        Stored dtype (``TypeError`` if NIfTI cannot store it).
    attrs, encoding
        The data variable's attributes and encoding.
    version, pair
        NIfTI-1 or 2; single file or ``.hdr``/``.img`` pair.
    times
        Values of the ``time`` coordinate in seconds, if the data has one:
        TR and ``toffset`` follow them (so a sliced time axis keeps its times).

    Returns
    -------
    nibabel.Nifti1Header
        A ``Nifti1Header``, ``Nifti1PairHeader``, ``Nifti2Header`` or
        ``Nifti2PairHeader``, following ``version`` and ``pair``.

    Examples
    --------
    >>> g = NiftiGeometry(np.diag([2.0, 2.0, 2.0, 1.0]), (4, 5, 6), sform_code=4)
    >>> header = build_header(g, (4, 5, 6), np.dtype("int16"), {}, {})
    >>> tuple(float(z) for z in header.get_zooms()), int(header["sform_code"])
    ((2.0, 2.0, 2.0), 4)
    """
    header_class = {
        (1, False): nib.Nifti1Header,
        (1, True): nib.nifti1.Nifti1PairHeader,
        (2, False): nib.Nifti2Header,
        (2, True): nib.nifti2.Nifti2PairHeader,
    }[(version, pair)]
    header = header_class()
    try:
        header.set_data_dtype(dtype)
    except (HeaderDataError, KeyError, TypeError, ValueError) as err:
        raise TypeError(
            f"NIfTI cannot store dtype {dtype}; convert with .astype(...) or pass dtype="
        ) from err
    header.set_data_shape(shape)
    time_unit = str(attrs.get("time_units", "sec"))
    spatial_unit = str(attrs.get("spatial_units", "mm"))
    if "xyzt_units" in encoding and "time_units" not in attrs and "spatial_units" not in attrs:
        header["xyzt_units"] = int(encoding["xyzt_units"])
    else:
        try:
            header.set_xyzt_units(spatial_unit, time_unit)
        except (KeyError, HeaderDataError):
            header.set_xyzt_units("mm", "sec")
    time_unit = xyzt_units(header)[1]
    per_second = 1.0 / TIME_UNIT_SECONDS.get(time_unit, 1.0)
    # The qform holds what a quaternion can (it also sets pixdim[0:4]); the
    # sform holds the full affine.
    qform = geometry.qform if geometry.qform is not None else geometry.affine
    sform = geometry.sform if geometry.sform is not None else geometry.affine
    header.set_qform(qform, code=geometry.qform_code, strip_shears=True)
    _restore_raw_qform(header, geometry, encoding)
    header.set_sform(sform, code=geometry.sform_code)
    if not np.allclose(header.get_best_affine(), geometry.affine, rtol=0, atol=1e-4):
        # With both codes 0 a reader would fall back to a zooms-only affine
        # centred on the (new) shape: record the real grid as an aligned sform.
        header.set_sform(geometry.affine, code="aligned")
    pixdim = header["pixdim"]
    source_pixdim = encoding.get("pixdim")
    if source_pixdim is not None and len(source_pixdim) == 8:
        # Steps of time, u, v, w and unused entries are restored as the source had them.
        pixdim[4:] = source_pixdim[4:]
    elif len(shape) > 3:
        pixdim[4 : len(shape) + 1] = 1.0
    tr, toffset = _time_fields(attrs, times if len(shape) > 3 else None)
    source_tr = source_pixdim[4] if source_pixdim is not None and len(source_pixdim) == 8 else None
    if len(shape) > 3 and tr is not None:
        pixdim[4] = _in_unit(tr, per_second, source_tr)
    header["pixdim"] = pixdim
    if toffset is not None:
        header["toffset"] = _in_unit(toffset, per_second, encoding.get("toffset"))
    descrip = str(attrs.get("descrip", ""))
    raw_descrip = encoding.get("descrip", b"")
    if isinstance(raw_descrip, bytes) and _text(raw_descrip) == descrip:
        header["descrip"] = raw_descrip  # unchanged: keep bytes after the NUL too
    else:
        header["descrip"] = descrip.encode("latin-1", "replace")[:79]
    aux = str(attrs.get("aux_file", ""))
    header["aux_file"] = aux.encode("latin-1", "replace")[:23]
    for field in ("cal_min", "cal_max"):
        if field in attrs:
            header[field] = float(attrs[field])
    if "intent_code" in attrs:
        header["intent_code"] = int(attrs["intent_code"])
        params = [float(p) for p in attrs.get("intent_params", ())][:3]
        for n, value in enumerate(params, start=1):
            header[f"intent_p{n}"] = value
    if "intent_name" in attrs:
        header["intent_name"] = str(attrs["intent_name"]).encode("latin-1", "replace")[:15]
    transform = _source_transform(geometry, encoding)
    _set_dim_info(header, attrs, encoding, transform)
    _set_slice_timing(header, attrs, encoding, transform, shape)
    for field, value in dict(encoding.get("legacy") or {}).items():
        if field in header and field in _LEGACY_FIELDS:
            header[field] = value
    for code, content in encoding.get("extensions", []):
        header.extensions.append(nib.nifti1.Nifti1Extension(int(code), bytes(content)))
    return header
