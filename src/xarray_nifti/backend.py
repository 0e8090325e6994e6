"""The ``engine="nifti"`` xarray backend."""

from __future__ import annotations

import os
import zlib
from collections.abc import Hashable, Iterable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends import BackendEntrypoint
from xarray.backends.common import T_PathFileOrDataStore
from xarray.coding.common import lazy_elemwise_func
from xarray.coding.variables import CFScaleOffsetCoder
from xarray.core import indexing
from xarray.indexes import Index, PandasIndex, RangeIndex

from ._bids import sidecar_attrs
from ._bids_tree import bids_groups, bids_tree
from ._chunks import preferred_chunks
from ._errors import NiftiFormatError
from ._header import _GZIP_MAGIC, _HEAD_BYTES, _SINGLE_SUFFIXES, sniff_format
from ._metadata import (
    DIM_NAMES,
    attrs_from_header,
    encoding_from_header,
    geometry_from_header,
    time_values,
)
from ._pairs import header_file_of, is_pair_path
from ._resolve import open_source
from ._source import ImageSource
from .array import NiftiBackendArray
from .index import VoxelAffineIndex

__all__ = ["NiftiBackendEntrypoint", "dataset_from_source"]

_SNIFF_BYTES = 8192  # compressed bytes read to find a header inside a .gz
_EAGER_TIME_MAX = 1 << 20  # volumes; longer time axes get a lazy RangeIndex
# xarray's CF decoding options with no meaning for NIfTI (see open_dataset).
_IGNORED_CF_OPTIONS = (
    "decode_times",
    "decode_timedelta",
    "use_cftime",
    "concat_characters",
    "decode_coords",
)
_HEADER_ERRORS = (KeyError, IndexError, ValueError, TypeError, OverflowError, ZeroDivisionError)


def _scaling(source: ImageSource) -> tuple[Any, Any] | None:
    slope, inter = source.slope, source.inter
    if not np.isfinite(slope) or slope == 0:
        slope = 1.0
    if not np.isfinite(inter):
        inter = 0.0
    if slope == 1.0 and inter == 0.0:
        return None
    raw = source.data.dtype
    # xarray's CF rule: float32 for ≤16-bit integers with float32 factors (NIfTI-1,
    # SPM Analyze), float64 otherwise (NIfTI-2 stores float64 factors) -- unless
    # float32 cannot hold the scaled values (a huge slope): then float64, as nibabel.
    small_int = raw.kind in "iu" and raw.itemsize <= 2
    float_type: type[np.floating[Any]] = np.float64
    if small_int and source.format != "nifti2":
        info = np.iinfo(raw)
        largest = max(abs(int(info.min)), int(info.max)) * abs(slope) + abs(inter)
        if largest <= float(np.finfo(np.float32).max):
            float_type = np.float32
    return float_type(slope), float_type(inter)


def _scale_complex(data: np.ndarray, scale_factor: float, add_offset: float) -> np.ndarray:
    out = data.astype(np.complex128, copy=True)
    out *= scale_factor
    out += add_offset
    return out


def _decode_complex(variable: xr.Variable) -> xr.Variable:
    """Lazy scaling of complex data (xarray's CF decoder would drop the imaginary part)."""
    attrs, encoding = dict(variable.attrs), dict(variable.encoding)
    scale_factor = float(attrs.pop("scale_factor"))
    add_offset = float(attrs.pop("add_offset"))
    encoding.update(scale_factor=scale_factor, add_offset=add_offset)
    transform = partial(_scale_complex, scale_factor=scale_factor, add_offset=add_offset)
    data = lazy_elemwise_func(variable._data, transform, np.complex128)
    return xr.Variable(variable.dims, data, attrs, encoding)


# Names the dataset itself uses: the data variable may not take one of them.
_RESERVED_NAMES = {
    **{dim: "dimension" for dim in (*DIM_NAMES, "rgb")},
    **{coord: "world coordinate" for coord in ("x", "y", "z")},
}


def _check_var_name(var_name: Any) -> str:
    if not isinstance(var_name, str) or not var_name:
        raise TypeError(f"var_name must be a non-empty string, not {var_name!r}")
    kind = _RESERVED_NAMES.get(var_name)
    if kind is not None:
        raise ValueError(
            f"var_name={var_name!r} clashes with the {kind} {var_name!r} of a NIfTI dataset "
            f"(i, j, k, time, u, v, w, rgb and x, y, z are taken); choose another name, "
            "e.g. var_name='bold'"
        )
    return var_name


def _header_fields(source: ImageSource) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
    """Geometry, attrs, encoding and time stamps interpreted from the header.

    Only this interpretation is guarded: a field nibabel parses but cannot
    interpret (e.g. an unknown code) is reported naming the file, while an
    error while assembling the Dataset propagates as itself.
    """
    header, shape = source.header, source.data.shape
    try:
        geometry = geometry_from_header(header, source.affine, shape)
        attrs = attrs_from_header(header, geometry)
        encoding = encoding_from_header(header, source.format)
        times = None
        if len(shape) > 3:
            times = time_values(header, shape[3] if shape[3] <= _EAGER_TIME_MAX else 2)
    except NiftiFormatError:
        raise
    except _HEADER_ERRORS as err:
        raise NiftiFormatError(
            f"{source.name}: invalid header field value ({type(err).__name__}: {err})"
        ) from err
    return geometry, attrs, encoding, times


def dataset_from_source(
    source: ImageSource, *, mask_and_scale: bool = True, var_name: str = "data"
) -> xr.Dataset:
    """The Dataset for a parsed image (shared by the backend and ``from_nibabel``)."""
    var_name = _check_var_name(var_name)
    shape = source.data.shape
    geometry, attrs, encoding, times = _header_fields(source)
    array = NiftiBackendArray(source.data)
    dims = DIM_NAMES[: len(shape)] + (("rgb",) if len(array.shape) > len(shape) else ())
    encoding["source"] = source.name
    encoding["compression"] = source.data.compression
    variable = xr.Variable(dims, indexing.LazilyIndexedArray(array), attrs=attrs, encoding=encoding)
    scaling = _scaling(source)
    if scaling is not None:
        variable.attrs["scale_factor"], variable.attrs["add_offset"] = scaling
        if mask_and_scale and source.data.dtype.kind == "c":
            variable = _decode_complex(variable)
        elif mask_and_scale:
            variable = CFScaleOffsetCoder().decode(variable, name=var_name)
    decoded_itemsize = np.dtype(variable.dtype).itemsize
    preferred = preferred_chunks(dims, array.shape, decoded_itemsize)
    variable.encoding["preferred_chunks"] = preferred
    array.set_chunks([preferred.get(dim, size) for dim, size in zip(dims, shape, strict=False)])

    axis_dims = tuple(DIM_NAMES[a] if a < len(shape) else None for a in range(3))
    index = VoxelAffineIndex.from_geometry(geometry, axis_dims, source=source.name)
    indexes: dict[Hashable, Index] = {}
    coords: dict[Hashable, xr.Variable] = {}
    for coord_index in (index, None if times is None else _time_index(times, shape[3])):
        if coord_index is not None:
            created = coord_index.create_variables()
            coords.update(created)
            indexes.update(dict.fromkeys(created, coord_index))
    if "time" in coords:
        coords["time"].attrs.update(_TIME_ATTRS)
    dataset = _assemble({var_name: variable, **coords}, indexes)
    dataset.set_close(array.close)
    return dataset


def _assemble(variables: dict[Hashable, xr.Variable], indexes: dict[Hashable, Index]) -> xr.Dataset:
    """``xr.Dataset(data_vars, coords=xr.Coordinates(coords, indexes))`` without its checks.

    The first variable is the data variable, whose dims cover those of every
    coordinate and whose coordinates are all indexed, so the constructor's
    merge and alignment (which cost more than parsing the header, and count
    when a BIDS tree opens hundreds of images) have nothing to find.
    ``tests/test_backend.py`` checks that the result is the constructor's.
    """
    data = next(iter(variables.values()))
    return xr.Dataset._construct_direct(
        variables,
        coord_names=set(indexes),
        dims=dict(zip(data.dims, data.shape, strict=True)),
        indexes=indexes,
    )


_TIME_ATTRS = {"units": "s", "long_name": "acquisition time"}


def _time_index(times: np.ndarray, ntime: int) -> Index:
    """The ``time`` index; lazy (a ``RangeIndex``) for very long time axes.

    Memory at open time must not grow with header dims: a header claiming
    10⁹ volumes (possible for a small, highly compressed file) would otherwise
    allocate 8 GB for its time stamps, so only the first two are computed then.
    """
    if ntime <= _EAGER_TIME_MAX:
        return PandasIndex(pd.Index(times, name="time"), "time")
    start, step = float(times[0]), float(times[1] - times[0])
    return RangeIndex.linspace(
        start, start + ntime * step, ntime, endpoint=False, dim="time", coord_name="time"
    )


def _without(dataset: xr.Dataset, drop_variables: str | Iterable[str] | None) -> xr.Dataset:
    """``dataset`` without the ``drop_variables`` it has."""
    if drop_variables is None:
        return dataset
    names = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables)
    return dataset.drop_vars([n for n in names if n in dataset.variables])


def _inflate_some(data: bytes, count: int) -> bytes:
    """Up to ``count`` bytes from the start of (possibly truncated) gzip ``data``."""
    try:
        return zlib.decompressobj(31).decompress(data, count)
    except zlib.error:
        return b""


def _head_of(filename_or_obj: Any) -> bytes | None:
    """The first uncompressed bytes of a path or file object, or ``None``."""
    try:
        if isinstance(filename_or_obj, str | os.PathLike):
            with open(filename_or_obj, "rb") as f:
                head = f.read(_SNIFF_BYTES)
        elif hasattr(filename_or_obj, "read") and hasattr(filename_or_obj, "seek"):
            position = filename_or_obj.tell()
            head = filename_or_obj.read(_SNIFF_BYTES)
            filename_or_obj.seek(position)
        else:
            return None
        if not isinstance(head, bytes | bytearray):
            return None
        if head[:2] == _GZIP_MAGIC:
            head = _inflate_some(bytes(head), _HEAD_BYTES)
        return bytes(head)
    except (OSError, TypeError, ValueError):
        return None


class NiftiBackendEntrypoint(BackendEntrypoint):
    """Open NIfTI-1, NIfTI-2 and Analyze 7.5 images as lazy xarray Datasets.

    Examples
    --------
    >>> import os, nibabel, xarray as xr
    >>> path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "example4d.nii.gz")
    >>> ds = xr.open_dataset(path, engine="nifti")
    >>> dict(ds.sizes)
    {'i': 128, 'j': 96, 'k': 24, 'time': 2}
    """

    description = "NIfTI-1/2 and Analyze neuroimaging files with lazy world coordinates"
    url = "https://github.com/xarray-nifti/xarray-nifti"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "mask_and_scale",
        "var_name",
        "storage_options",
        "sidecar",
        *_IGNORED_CF_OPTIONS,
    )

    def open_dataset(
        self,
        filename_or_obj: T_PathFileOrDataStore,
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_and_scale: bool = True,
        var_name: str = "data",
        storage_options: dict[str, Any] | None = None,
        sidecar: bool = True,
        decode_times: object = None,
        decode_timedelta: object = None,
        use_cftime: object = None,
        concat_characters: object = None,
        decode_coords: object = None,
    ) -> xr.Dataset:
        """Open a NIfTI/Analyze image lazily.

        Parameters
        ----------
        filename_or_obj
            Path (``.nii``, ``.nii.gz``, ``.hdr``/``.img`` pair, also gzipped),
            fsspec URL, or binary file object.
        drop_variables
            Names of variables not to return.
        mask_and_scale
            Apply ``scl_slope``/``scl_inter`` lazily (default). With ``False``
            the stored values are returned and the factors are in attrs.
        var_name
            Name of the data variable.
        storage_options
            Passed to fsspec for URLs.
        sidecar
            Add the fields of a BIDS JSON sidecar with the same stem
            (``sub-01_bold.json`` beside ``sub-01_bold.nii.gz``) to the data
            variable's attrs; a RepetitionTime that disagrees with the
            header's TR gives a ``BidsSidecarWarning`` naming both.
        decode_times, decode_timedelta, use_cftime, concat_characters, decode_coords
            Accepted and ignored, so that code written for netCDF files runs
            unchanged: NIfTI stores no CF-encoded times, timedeltas, strings or
            ``coordinates`` attributes (``time`` is always float seconds).
            ``decode_cf=False`` turns ``mask_and_scale`` off, as for netCDF.
        """
        var_name = _check_var_name(var_name)
        source = open_source(filename_or_obj, storage_options)
        dataset = dataset_from_source(source, mask_and_scale=mask_and_scale, var_name=var_name)
        if sidecar and isinstance(filename_or_obj, str | os.PathLike):
            attrs = dataset[var_name].attrs
            attrs.update(sidecar_attrs(source.name, attrs, storage_options=storage_options))
        return _without(dataset, drop_variables)

    def open_groups_as_dict(
        self,
        filename_or_obj: T_PathFileOrDataStore,
        *,
        derivatives: bool | str | Iterable[str] | None = None,
        on_error: str = "raise",
        **options: Any,
    ) -> dict[str, xr.Dataset]:
        """The groups of :meth:`open_datatree` by path, for ``xr.open_groups``; same keywords."""
        if not isinstance(filename_or_obj, str | os.PathLike):
            raise TypeError(
                "a BIDS dataset is opened from its folder (a path or an fsspec URL), not from "
                f"a {type(filename_or_obj).__name__}"
            )
        # The keywords of open_dataset open each image; the others are entity filters.
        image = {key: options.pop(key) for key in self.open_dataset_parameters if key in options}
        _check_var_name(image.get("var_name", "data"))  # once, not once per image
        sidecar = image.pop("sidecar", True)  # the tree applies BIDS inheritance itself
        return bids_groups(
            filename_or_obj,
            partial(self.open_dataset, sidecar=False, **image),
            derivatives=derivatives,
            storage_options=image.get("storage_options"),
            sidecar=sidecar,
            on_error=on_error,
            **options,
        )

    def open_datatree(self, filename_or_obj: T_PathFileOrDataStore, **options: Any) -> xr.DataTree:
        """Open a BIDS dataset (local folder or fsspec URL) as a lazy DataTree.

        ``xr.open_datatree(root, engine="nifti", **filters)``: one group per
        image (``/sub-01/ses-1/func/task-rest_run-1_bold``), each opened as
        :meth:`open_dataset` opens it, with its inherited BIDS sidecars in
        attrs; ``dataset_description.json`` in the root's attrs and
        ``participants.tsv`` in ``/participants``. See the BIDS how-to.

        Keywords: those of :meth:`open_dataset` (``drop_variables``,
        ``mask_and_scale``, ``var_name``, ``storage_options``, ``sidecar``
        and the ignored CF options), then ``derivatives=`` (add pipelines
        under ``/derivatives/<pipeline>``), ``on_error="warn"`` (leave
        unreadable images out with a warning) and the entity filters
        (``subject=``, ``task=``, ``suffix=``, ``datatype=``...) of
        :func:`xarray_nifti.bids_files`.
        """
        return bids_tree(self.open_groups_as_dict(filename_or_obj, **options))

    def guess_can_open(self, filename_or_obj: T_PathFileOrDataStore) -> bool:
        """Recognise NIfTI/Analyze files by magic bytes (also in gzip) or by suffix."""
        head = _head_of(filename_or_obj)
        if head is not None and sniff_format(head) is not None:
            return True
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        path = os.fspath(filename_or_obj)
        if isinstance(path, bytes):
            path = path.decode()
        lower = path.lower()
        if lower.endswith(_SINGLE_SUFFIXES):
            return True
        if is_pair_path(lower):
            if not os.path.exists(path):
                return True  # open_dataset then says which file is missing
            head = _head_of(header_file_of(path))
            return head is not None and sniff_format(head) is not None
        return False
