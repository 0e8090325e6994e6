"""Interchange with nibabel images and with NetCDF/Zarr (geometry as plain attributes)."""

from __future__ import annotations

import base64
import io
from typing import Any, TypeVar

import nibabel as nib
import numpy as np
import xarray as xr

from .accessor import find_index
from .index import VoxelAffineIndex
from .transform import NiftiGeometry

__all__ = ["GEOMETRY_ATTRS", "decode", "encode", "from_nibabel", "to_nibabel"]

T_Xarray = TypeVar("T_Xarray", xr.Dataset, xr.DataArray)

#: Attribute names that ``encode`` writes and ``decode`` reads.
GEOMETRY_ATTRS = (
    "nifti_affine",
    "nifti_sform",
    "nifti_qform",
    "nifti_sform_code",
    "nifti_qform_code",
    "nifti_shape",
    "nifti_axis_dims",
    "nifti_extensions",
)


def to_nibabel(array: xr.DataArray, *, version: int | None = None, dtype: Any = None) -> Any:
    """A ``Nifti1Image``/``Nifti2Image`` with the header ``to_nifti`` would write.

    The image's data object is the (lazy, if dask-backed) array in NIfTI axis
    order; nibabel reads it only when asked.
    """
    from .writer import plan_nifti

    plan = plan_nifti(array, version=version, dtype=dtype)
    image_class = nib.Nifti2Image if isinstance(plan.header, nib.Nifti2Header) else nib.Nifti1Image
    data = plan.data.data
    shape = tuple(plan.header.get_data_shape())
    data = data.reshape(shape) if data.shape != shape else data
    image = image_class(data, plan.geometry.affine, plan.header)
    # nibabel's constructor rewrites the forms from the affine; put ours back.
    image.header.set_qform(plan.header.get_qform(), code=int(plan.header["qform_code"]))
    image.header.set_sform(plan.header.get_sform(), code=int(plan.header["sform_code"]))
    image.header.set_slope_inter(*plan.header.get_slope_inter())
    return image


def from_nibabel(img: Any, *, mask_and_scale: bool = True, var_name: str = "data") -> xr.Dataset:
    """The Dataset that ``engine="nifti"`` would give for ``img`` saved to disk.

    Images loaded from a file and not modified are opened lazily from that file;
    in-memory images are wrapped without copying.

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
    if filename is not None and nib.is_proxy(img.dataobj) and not img.in_memory:
        return xr.open_dataset(
            filename, engine="nifti", mask_and_scale=mask_and_scale, var_name=var_name
        )
    # An in-memory image: serialise it exactly as nib.save would, and open
    # those bytes, so the result is by construction what the backend gives.
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        img = nib.Nifti1Image.from_image(img)
    buffer = io.BytesIO(img.to_bytes())
    return xr.open_dataset(buffer, engine="nifti", mask_and_scale=mask_and_scale, var_name=var_name)


def _flat(form: np.ndarray | None) -> list[float]:
    return [] if form is None else [float(v) for v in np.ravel(form)]


def _form(values: Any) -> np.ndarray | None:
    flat = np.asarray(values, dtype=np.float64).ravel()
    return None if flat.size == 0 else flat.reshape(4, 4)


def encode(obj: T_Xarray) -> T_Xarray:
    """Replace the lazy ``x, y, z`` by plain geometry attributes (for NetCDF/Zarr)."""
    index = find_index(obj)
    geometry = index.geometry
    names = list(index.transform.coord_names)
    out = obj.drop_indexes(names).drop_vars(names)
    attrs = {
        "nifti_affine": _flat(geometry.affine),
        "nifti_sform": _flat(geometry.sform),
        "nifti_qform": _flat(geometry.qform),
        "nifti_sform_code": geometry.sform_code,
        "nifti_qform_code": geometry.qform_code,
        "nifti_shape": list(geometry.shape),
        "nifti_axis_dims": [d or "" for d in index.transform.axis_dims],
    }
    variables = [out] if isinstance(out, xr.DataArray) else [out[v] for v in out.data_vars]
    for var in variables:
        extensions = var.encoding.get("extensions") or []
        var.attrs.update(attrs)
        if extensions:
            var.attrs["nifti_extensions"] = [
                [int(code), base64.b64encode(bytes(content)).decode("ascii")]
                for code, content in extensions
            ]
        for key in ("extensions", "preferred_chunks", "source", "vox_offset", "byteorder", "compression"):
            var.encoding.pop(key, None)
    if isinstance(out, xr.Dataset):
        out.attrs.update(attrs)
    return out


def decode(obj: T_Xarray) -> T_Xarray:
    """Rebuild the ``VoxelAffineIndex`` from the attributes written by :func:`encode`."""
    holders = [obj] if isinstance(obj, xr.DataArray) else [obj, *obj.data_vars.values()]
    source = next((h for h in holders if "nifti_affine" in h.attrs), None)
    if source is None:
        raise ValueError(
            "no NIfTI geometry attributes (nifti_affine, ...) found; was this written with "
            "`.nifti.encode()`?"
        )
    attrs = source.attrs
    geometry = NiftiGeometry(
        _form(attrs["nifti_affine"]),  # type: ignore[arg-type]
        tuple(int(n) for n in attrs["nifti_shape"]),  # type: ignore[arg-type]
        sform=_form(attrs.get("nifti_sform", [])),
        qform=_form(attrs.get("nifti_qform", [])),
        sform_code=int(attrs.get("nifti_sform_code", 0)),
        qform_code=int(attrs.get("nifti_qform_code", 0)),
    )
    axis_dims = [d or None for d in attrs.get("nifti_axis_dims", ["i", "j", "k"])]
    index = VoxelAffineIndex.from_geometry(geometry, axis_dims)
    out = obj.assign_coords(xr.Coordinates.from_xindex(index))
    variables = [out] if isinstance(out, xr.DataArray) else [out, *(out[v] for v in out.data_vars)]
    for var in variables:
        extensions = var.attrs.pop("nifti_extensions", None)
        if extensions and not isinstance(var, xr.Dataset):
            var.encoding["extensions"] = [(int(c), base64.b64decode(t)) for c, t in extensions]
        for key in GEOMETRY_ATTRS:
            var.attrs.pop(key, None)
    return out
