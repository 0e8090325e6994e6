"""Header fields ⇄ xarray attrs/encoding, and the grid geometry of a header.

Grid-dependent fields (affines, shape, zooms) go into the index; everything
else a writer needs goes into ``attrs`` (what users read) or ``encoding`` (how
the file stored it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nibabel as nib
import numpy as np

from .affine import space_name
from .transform import NiftiGeometry

__all__ = [
    "DIM_NAMES",
    "TIME_UNIT_SECONDS",
    "attrs_from_header",
    "build_header",
    "geometry_from_header",
    "time_values",
]

DIM_NAMES = ("i", "j", "k", "time", "u", "v", "w")
TIME_UNIT_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}

# Attributes users may set or read, written back to these header fields.
_SLICE_FIELDS = ("slice_start", "slice_end", "slice_duration")


def _text(value: Any) -> str:
    raw = np.asarray(value).item()
    if isinstance(raw, bytes):
        return raw.split(b"\x00", 1)[0].decode("latin-1").strip()
    return str(raw)


def geometry_from_header(header: Any, affine: np.ndarray, shape: tuple[int, ...]) -> NiftiGeometry:
    """Geometry of the first three axes: chosen affine, sform/qform and their codes."""
    spatial = tuple(shape[:3]) + (1,) * (3 - min(3, len(shape)))
    if isinstance(header, nib.Nifti1Header):  # Nifti2Header is a subclass
        sform_code = int(header["sform_code"])
        qform_code = int(header["qform_code"])
        return NiftiGeometry(
            affine,
            (spatial[0], spatial[1], spatial[2]),
            sform=header.get_sform() if np.all(np.isfinite(header.get_sform())) else None,
            qform=_finite_or_none(header.get_qform),
            sform_code=sform_code,
            qform_code=qform_code,
        )
    return NiftiGeometry(affine, (spatial[0], spatial[1], spatial[2]))


def _finite_or_none(getter: Any) -> np.ndarray | None:
    try:
        form = np.asarray(getter(), dtype=np.float64)
    except Exception:  # nibabel raises several types for impossible quaternions
        return None
    return form if np.all(np.isfinite(form)) else None


def time_values(header: Any, ntime: int) -> np.ndarray | None:
    """Acquisition times of the volumes in seconds, or ``None`` if not a time axis."""
    zooms = header.get_zooms()
    if len(zooms) < 4:
        return None
    step = float(zooms[3])
    t_unit = header.get_xyzt_units()[1] if hasattr(header, "get_xyzt_units") else "unknown"
    if t_unit not in TIME_UNIT_SECONDS or not np.isfinite(step) or step <= 0:
        return None
    scale = TIME_UNIT_SECONDS[t_unit]
    toffset = float(header["toffset"]) if "toffset" in header else 0.0
    if not np.isfinite(toffset):
        toffset = 0.0
    return (toffset + np.arange(ntime) * step) * scale


def attrs_from_header(header: Any, geometry: NiftiGeometry) -> dict[str, Any]:
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
    spatial_unit, time_unit = header.get_xyzt_units()
    attrs["spatial_units"] = spatial_unit
    attrs["time_units"] = time_unit
    zooms = header.get_zooms()
    if len(zooms) >= 4 and float(zooms[3]) > 0 and time_unit in TIME_UNIT_SECONDS:
        attrs["repetition_time"] = float(zooms[3]) * TIME_UNIT_SECONDS[time_unit]
    toffset = float(header["toffset"])
    if toffset != 0 and np.isfinite(toffset):
        attrs["toffset"] = toffset * TIME_UNIT_SECONDS.get(time_unit, 1.0)
    intent_name, params, label = header.get_intent()
    code = int(header["intent_code"])
    if code != 0:
        attrs["intent"] = intent_name
        attrs["intent_code"] = code
        attrs["intent_params"] = [float(p) for p in params]
    if label:
        attrs["intent_name"] = label
    freq, phase, slice_dim = header.get_dim_info()
    for name, value in (("freq_dim", freq), ("phase_dim", phase), ("slice_dim", slice_dim)):
        if value is not None:
            attrs[name] = int(value)
    slice_code = int(header["slice_code"])
    if slice_code != 0:
        attrs["slice_code"] = header.get_value_label("slice_code")
    for field in _SLICE_FIELDS:
        value = header[field].item()
        if value:
            attrs[field] = value
    return attrs


def _extensions(header: Any) -> list[tuple[int, bytes]]:
    if not isinstance(header, nib.Nifti1Header):
        return []
    return [(int(ext.get_code()), bytes(ext.get_content())) for ext in header.extensions]


def encoding_from_header(header: Any, source_format: str) -> dict[str, Any]:
    """How the file stored its data (everything a writer needs to restore it)."""
    raw_dtype = np.dtype(header.get_data_dtype())
    encoding: dict[str, Any] = {
        "dtype": raw_dtype.newbyteorder("="),
        "byteorder": "big" if raw_dtype.byteorder == ">" else "little",
        "format": source_format,
        "vox_offset": int(header.get_data_offset()),
        "extensions": _extensions(header),
    }
    if isinstance(header, nib.Nifti1Header):
        encoding["xyzt_units"] = int(header["xyzt_units"])
        encoding["dim_info"] = int(header["dim_info"])
        encoding["slice_code"] = int(header["slice_code"])
        encoding["pixdim"] = [float(v) for v in header["pixdim"]]
    encoding["descrip"] = bytes(np.asarray(header["descrip"]).item())
    return encoding


def build_header(
    geometry: NiftiGeometry,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    attrs: Mapping[str, Any],
    encoding: Mapping[str, Any],
    *,
    version: int = 1,
    pair: bool = False,
) -> Any:
    """A NIfTI header for data of ``shape`` and stored ``dtype`` on ``geometry``.

    ``shape`` is the full data shape in NIfTI axis order (spatial axes first,
    padded to three, then time and u, v, w).
    """
    header_class = {
        (1, False): nib.Nifti1Header,
        (1, True): nib.nifti1.Nifti1PairHeader,
        (2, False): nib.Nifti2Header,
        (2, True): nib.nifti2.Nifti2PairHeader,
    }[(version, pair)]
    header = header_class()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    time_unit = str(attrs.get("time_units", "sec"))
    spatial_unit = str(attrs.get("spatial_units", "mm"))
    if "xyzt_units" in encoding and "time_units" not in attrs:
        header["xyzt_units"] = int(encoding["xyzt_units"])
    else:
        header.set_xyzt_units(spatial_unit, time_unit)
    time_unit = header.get_xyzt_units()[1]
    per_second = 1.0 / TIME_UNIT_SECONDS.get(time_unit, 1.0)
    # The qform holds what a quaternion can (it also sets pixdim[0:4]); the
    # sform holds the full affine.
    qform = geometry.qform if geometry.qform is not None else geometry.affine
    sform = geometry.sform if geometry.sform is not None else geometry.affine
    header.set_qform(qform, code=geometry.qform_code, strip_shears=True)
    header.set_sform(sform, code=geometry.sform_code)
    if not np.allclose(header.get_best_affine(), geometry.affine, rtol=0, atol=1e-4):
        # With both codes 0 a reader would fall back to a zooms-only affine
        # centred on the (new) shape: record the real grid as an aligned sform.
        header.set_sform(geometry.affine, code="aligned")
    pixdim = header["pixdim"]
    if len(shape) > 3:
        tr = attrs.get("repetition_time")
        pixdim[4] = float(tr) * per_second if tr is not None else 1.0
        pixdim[5 : len(shape) + 1] = 1.0
    # Unused pixdim entries (past dim[0]) are restored as the source had them.
    source_pixdim = encoding.get("pixdim")
    if source_pixdim is not None and len(source_pixdim) == 8:
        pixdim[len(shape) + 1 :] = source_pixdim[len(shape) + 1 :]
    header["pixdim"] = pixdim
    if "toffset" in attrs:
        header["toffset"] = float(attrs["toffset"]) * per_second
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
        header.set_intent(
            int(attrs["intent_code"]),
            tuple(attrs.get("intent_params", ())),
            name=str(attrs.get("intent_name", "")),
        )
    elif "intent_name" in attrs:
        header["intent_name"] = str(attrs["intent_name"]).encode()[:15]
    if "dim_info" in encoding and not any(k in attrs for k in ("freq_dim", "phase_dim", "slice_dim")):
        header["dim_info"] = int(encoding["dim_info"])
    else:
        header.set_dim_info(attrs.get("freq_dim"), attrs.get("phase_dim"), attrs.get("slice_dim"))
    if "slice_code" in attrs:
        header["slice_code"] = nib.nifti1.slice_order_codes.code[attrs["slice_code"]]
    for field in _SLICE_FIELDS:
        if field in attrs:
            header[field] = attrs[field]
    for code, content in encoding.get("extensions", []):
        header.extensions.append(nib.nifti1.Nifti1Extension(int(code), bytes(content)))
    return header


def space_of(header: Any) -> str:
    """Space name of a header's chosen affine."""
    if not isinstance(header, nib.Nifti1Header):
        return "unknown"
    code = int(header["sform_code"]) or int(header["qform_code"])
    return space_name(code)
