"""Interchange with nibabel images and with NetCDF/Zarr (geometry as plain attributes)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from functools import partial
from typing import Any

import nibabel as nib
import numpy as np
import xarray as xr
from nibabel.analyze import AnalyzeImage
from nibabel.spatialimages import SpatialImage
from numpy.typing import DTypeLike
from xarray.coding.common import lazy_elemwise_func

from .grid import T_Xarray, find_index
from .index import VoxelAffineIndex
from .transform import NiftiGeometry
from .writer import plan_nifti

__all__ = ["GEOMETRY_ATTRS", "decode", "encode", "from_nibabel", "to_nibabel"]


#: Attribute names that ``encode`` writes and ``decode`` reads.
GEOMETRY_ATTRS = (
    "nifti_affine",
    "nifti_sform",
    "nifti_qform",
    "nifti_sform_code",
    "nifti_qform_code",
    "nifti_shape",
    "nifti_axis_dims",
    "nifti_encoding",
)

# Encoding entries that describe the NIfTI file rather than an array store:
# ``encode`` moves them into the ``nifti_encoding`` attribute (a JSON string,
# which NetCDF and Zarr both store), ``decode`` puts them back.
_NIFTI_ENCODING = (
    "format",
    "byteorder",
    "extensions",
    "xyzt_units",
    "dim_info",
    "slice_code",
    "pixdim",
    "quatern",
    "toffset",
    "descrip",
    "legacy",
    "affine",
    "dim",
)
_DROPPED_ENCODING = ("preferred_chunks", "source", "vox_offset", "compression")
# Key in ``nifti_encoding`` for the dtype the values had in memory: Zarr stores
# ``scale_factor`` as a JSON number, so CF decoding gives float64 back for data
# that ``engine="nifti"`` decoded as float32.
_MEMORY_DTYPE = "memory_dtype"


class _LazyData:
    """Array-like view of a DataArray for a nibabel image: computed only when asked.

    nibabel reads it with ``np.asanyarray(img.dataobj)`` (also ``get_fdata``,
    ``nib.save``) or slices it (``img.dataobj[...]``, ``img.slicer``).
    """

    def __init__(self, data: xr.DataArray, shape: tuple[int, ...], channels: int) -> None:
        self._data = data
        self.shape = shape
        self._channels = channels
        if channels:
            names = ("R", "G", "B", "A")[:channels]
            self.dtype = np.dtype([(n, "u1") for n in names])
        else:
            self.dtype = data.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _finish(self, values: np.ndarray) -> np.ndarray:
        if not self._channels:
            return values
        records = np.empty(values.shape[:-1], dtype=self.dtype)
        for n, name in enumerate(self.dtype.names or ()):
            records[name] = values[..., n]
        return records

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        values = self._finish(np.asarray(self._data.values).reshape(self._full_shape()))
        return values if dtype is None else values.astype(dtype, copy=False)

    def _full_shape(self) -> tuple[int, ...]:
        return self.shape + ((self._channels,) if self._channels else ())

    def __getitem__(self, key: Any) -> np.ndarray:
        if _is_basic(key):
            return self._basic(key)
        values: np.ndarray = np.asarray(self)[key]
        return values

    def _basic(self, key: Any) -> np.ndarray:
        full = _expand_key(key, len(self.shape))
        extra = (slice(None),) if self._channels else ()
        values = np.asarray(self._data.variable[full + extra].values)
        return self._finish(values)

    def __repr__(self) -> str:
        return f"<lazy xarray data shape={self.shape} dtype={self.dtype}>"


def _is_basic(key: Any) -> bool:
    items = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, int | np.integer | slice) or k is Ellipsis for k in items)


def _expand_key(key: Any, ndim: int) -> tuple[Any, ...]:
    items = list(key) if isinstance(key, tuple) else [key]
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (ndim - len(items) + 1)
    return tuple(items) + (slice(None),) * (ndim - len(items))


def to_nibabel(
    array: xr.DataArray, *, version: int | None = None, dtype: DTypeLike | None = None
) -> nib.Nifti1Image:
    """A ``Nifti1Image``/``Nifti2Image`` with the header ``to_nifti`` would write.

    The image's data object is lazy: the array (in NIfTI axis order, values
    as xarray shows them) is computed only when nibabel reads it. The header
    is the one ``to_nifti`` writes except for ``scl_slope``/``scl_inter``,
    which are left unset as in every in-memory nibabel image: ``nib.save``
    chooses the scaling of integer output from the data, where ``to_nifti``
    keeps the source's.
    """

    plan = plan_nifti(array, version=version, dtype=dtype)
    image_class = nib.Nifti2Image if isinstance(plan.header, nib.Nifti2Header) else nib.Nifti1Image
    shape = tuple(int(n) for n in plan.header.get_data_shape())
    data = _LazyData(plan.data, shape, plan.channels)
    header = plan.header.copy()
    image = image_class(data, plan.geometry.affine, header)
    # nibabel's constructor rewrites the forms from the affine; put ours back.
    image.header.set_qform(plan.header.get_qform(), code=int(plan.header["qform_code"]))
    for field in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):
        image.header[field] = plan.header[field]
    image.header["pixdim"] = plan.header["pixdim"]
    image.header.set_sform(plan.header.get_sform(), code=int(plan.header["sform_code"]))
    # Unset scaling: nibabel then scales the values it is given when it saves
    # (with scl_slope set, nib.save would store the values unscaled).
    image.header.set_slope_inter(None, None)
    return image


def _file_header_unchanged(img: AnalyzeImage) -> bool:
    try:
        file_map = img.file_map
        filename = (file_map.get("header") or file_map["image"]).filename
        if filename is None:
            return False
        with nib.openers.ImageOpener(filename) as fobj:
            on_disk = img.header_class.from_fileobj(fobj)
    except Exception:  # unreadable now: treat as modified and serialise
        return False
    current = img.header.copy()
    # nibabel moves the scaling and the data offset into the proxy on load:
    # compare without them.
    for header in (current, on_disk):
        header["vox_offset"] = 0
        if "scl_slope" in header:
            header["scl_slope"] = header["scl_inter"] = np.nan
    return bool(current.binaryblock == on_disk.binaryblock)


def from_nibabel(
    img: SpatialImage, *, mask_and_scale: bool = True, var_name: str = "data"
) -> xr.Dataset:
    """The Dataset that ``engine="nifti"`` would give for ``img`` saved to disk.

    Images loaded from a file, with data and header unchanged, are opened
    lazily from that file; others (in-memory images, changed headers) are
    serialised as ``nib.save`` would and opened from those bytes.

    Parameters
    ----------
    img
        A NIfTI-1, NIfTI-2 or Analyze image (single file or pair); other
        nibabel images raise ``TypeError``.
    mask_and_scale, var_name
        As for ``xr.open_dataset(..., engine="nifti")``.

    Returns
    -------
    xarray.Dataset
        Lazy: read from the image's file, or from the serialised bytes.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> ds = from_nibabel(nib.Nifti1Image(np.zeros((2, 3, 4), "f4"), np.eye(4)))
    >>> dict(ds.sizes)
    {'i': 2, 'j': 3, 'k': 4}
    """
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image | nib.Nifti1Pair | nib.AnalyzeImage):
        raise TypeError(f"from_nibabel needs a NIfTI or Analyze image, got {type(img).__name__}")
    filename = img.get_filename()
    if (
        filename is not None
        and nib.is_proxy(img.dataobj)
        and not img.in_memory
        and _file_header_unchanged(img)
    ):
        return xr.open_dataset(
            filename, engine="nifti", mask_and_scale=mask_and_scale, var_name=var_name
        )
    # An in-memory image: serialise it exactly as nib.save would, and open
    # those bytes, so the result is by construction what the backend gives.
    if isinstance(img, nib.Nifti2Pair | nib.Nifti2Image):
        if not isinstance(img, nib.Nifti2Image):
            img = nib.Nifti2Image.from_image(img)
    elif not isinstance(img, nib.Nifti1Image):
        img = nib.Nifti1Image.from_image(img)
    buffer = io.BytesIO(img.to_bytes())
    return xr.open_dataset(buffer, engine="nifti", mask_and_scale=mask_and_scale, var_name=var_name)


def _flat(form: np.ndarray | None) -> list[float]:
    return [] if form is None else [float(v) for v in np.ravel(form)]


def _form(values: Any) -> np.ndarray | None:
    flat = np.asarray(values, dtype=np.float64).ravel()
    return None if flat.size == 0 else flat.reshape(4, 4)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.dtype):
        return {"__dtype__": value.str if value.fields is None else value.descr}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return base64.b64decode(value["__bytes__"])
        if set(value) == {"__dtype__"}:
            spec = value["__dtype__"]
            return np.dtype(spec if isinstance(spec, str) else [tuple(f) for f in spec])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _geometry_attrs(index: VoxelAffineIndex) -> dict[str, Any]:
    geometry = index.geometry
    attrs: dict[str, Any] = {
        "nifti_affine": _flat(geometry.affine),
        "nifti_sform_code": geometry.sform_code,
        "nifti_qform_code": geometry.qform_code,
        "nifti_shape": list(geometry.shape),
        "nifti_axis_dims": json.dumps(list(index.transform.axis_dims)),
    }
    if geometry.sform is not None:
        attrs["nifti_sform"] = _flat(geometry.sform)
    if geometry.qform is not None:
        attrs["nifti_qform"] = _flat(geometry.qform)
    return attrs


def encode(obj: T_Xarray) -> T_Xarray:
    """Replace the lazy ``x, y, z`` by plain geometry attributes (for NetCDF/Zarr).

    The world coordinates are dropped without being computed. Each data
    variable (and a Dataset itself) gets the geometry as flat lists of 16
    floats and integer codes; the NIfTI-specific encoding (raw header fields,
    extensions) goes into a JSON string attribute ``nifti_encoding``.

    Examples
    --------
    >>> import os, nibabel, xarray as xr
    >>> path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")
    >>> plain = encode(xr.open_dataset(path, engine="nifti"))
    >>> sorted(plain.coords), plain.attrs["nifti_shape"]
    ([], [33, 41, 25])
    """
    index = find_index(obj)
    names = list(index.transform.coord_names)
    # A shallow copy: attrs and encoding of the input stay as they are.
    out = obj.drop_indexes(names).drop_vars(names).copy(deep=False)
    attrs = _geometry_attrs(index)
    variables: list[xr.DataArray] = (
        [out] if isinstance(out, xr.DataArray) else [out[v] for v in out.data_vars]
    )
    for var in variables:
        var.attrs.update(attrs)
        nifti = {k: var.encoding.pop(k) for k in _NIFTI_ENCODING if k in var.encoding}
        if var.dtype.kind == "f" and "scale_factor" in var.encoding:
            nifti[_MEMORY_DTYPE] = var.dtype.str
        if nifti:
            var.attrs["nifti_encoding"] = json.dumps(_jsonable(nifti))
        for key in _DROPPED_ENCODING:
            var.encoding.pop(key, None)
    if isinstance(out, xr.Dataset):
        out.attrs.update(attrs)
    return out


def _attr_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return list(json.loads(value))
    return list(np.atleast_1d(np.asarray(value)).tolist())


def decode(obj: T_Xarray) -> T_Xarray:
    """Rebuild the ``VoxelAffineIndex`` from the attributes written by :func:`encode`."""
    holders: list[Any] = [obj] if isinstance(obj, xr.DataArray) else [obj, *obj.data_vars.values()]
    source = next((h for h in holders if "nifti_affine" in h.attrs), None)
    if source is None:
        raise ValueError(
            "no NIfTI geometry attributes (nifti_affine, ...) found; was this written with "
            "`.nifti.encode()`?"
        )
    attrs = source.attrs
    affine = _form(attrs["nifti_affine"])
    if affine is None:
        raise ValueError("the nifti_affine attribute is empty")
    shape = tuple(int(n) for n in _attr_list(attrs["nifti_shape"]))
    if len(shape) != 3:
        raise ValueError(f"the nifti_shape attribute needs 3 sizes, got {shape}")
    geometry = NiftiGeometry(
        affine,
        (shape[0], shape[1], shape[2]),
        sform=_form(attrs.get("nifti_sform", [])),
        qform=_form(attrs.get("nifti_qform", [])),
        sform_code=int(attrs.get("nifti_sform_code", 0)),
        qform_code=int(attrs.get("nifti_qform_code", 0)),
    )
    raw_dims = _attr_list(attrs.get("nifti_axis_dims", '["i", "j", "k"]'))
    axis_dims = [str(d) if d else None for d in raw_dims]
    index = VoxelAffineIndex.from_geometry(geometry, axis_dims)
    out: T_Xarray = obj.copy(deep=False).assign_coords(xr.Coordinates.from_xindex(index))
    variables: list[Any] = [out]
    if isinstance(out, xr.Dataset):
        variables += [out[v] for v in out.data_vars]
    for var in variables:
        text = var.attrs.pop("nifti_encoding", None)
        if text is not None and not isinstance(var, xr.Dataset):
            restored = _from_json(json.loads(text))
            if "extensions" in restored:
                restored["extensions"] = [(int(c), bytes(b)) for c, b in restored["extensions"]]
            memory_dtype = restored.pop(_MEMORY_DTYPE, None)
            for key, value in restored.items():
                var.encoding.setdefault(key, value)
            if memory_dtype is not None:
                _restore_float_dtype(var, np.dtype(memory_dtype))
        for key in GEOMETRY_ATTRS:
            var.attrs.pop(key, None)
    return out


def _restore_float_dtype(var: xr.DataArray, dtype: np.dtype[Any]) -> None:
    """Give CF-decoded values back the float dtype they had when encoded (lazily)."""
    if var.dtype == dtype or var.dtype.kind != "f":
        return
    slope = float(var.encoding.get("scale_factor", 1.0))
    inter = float(var.encoding.get("add_offset", 0.0))
    redecode = partial(_decode_in, dtype=dtype, slope=slope, inter=inter)
    variable = var.variable
    if variable.chunks is not None:
        variable.data = variable.data.map_blocks(redecode, dtype=dtype)
    else:
        variable.data = lazy_elemwise_func(variable._data, redecode, dtype)
    for key in ("scale_factor", "add_offset"):
        if key in var.encoding:
            var.encoding[key] = dtype.type(var.encoding[key])


def _decode_in(values: np.ndarray, dtype: np.dtype[Any], slope: float, inter: float) -> np.ndarray:
    """Values decoded again in ``dtype``, exactly as CF decoding in that dtype gives them."""
    stored = np.rint((np.asarray(values, dtype=np.float64) - inter) / slope)
    out = stored.astype(dtype)
    out *= dtype.type(slope)
    out += dtype.type(inter)
    return out
