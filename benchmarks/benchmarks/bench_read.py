"""Read benchmarks: open, full read, single volume, temporal mean, reorient + mean, resample."""

from __future__ import annotations

from typing import Any, ClassVar

import dask.array
import nibabel as nib
import nibabel.processing
import numpy as np

from ._inputs import BOLD_SHAPE, KINDS, Inputs, fortran_empty, load, open_ours


class Open(Inputs):
    """Header-only open (lazy, and with ``chunks={}``), vs ``nib.load``."""

    params: ClassVar[list[str]] = KINDS
    param_names: ClassVar[list[str]] = ["kind"]

    def time_open(self, paths: dict[str, str], kind: str) -> None:
        """``xr.open_dataset(engine="nifti")`` then close."""
        open_ours(paths[f"bold.{kind}"]).close()

    def time_open_chunked(self, paths: dict[str, str], kind: str) -> None:
        """Open with ``chunks={}`` (builds the dask graph) then close."""
        open_ours(paths[f"bold.{kind}"], chunks={}).close()

    def time_nibabel_load(self, paths: dict[str, str], kind: str) -> None:
        """``nib.load`` (header only)."""
        load(paths[f"bold.{kind}"])


class FullRead(Inputs):
    """Read all voxels of the 4-D series, fresh open each time."""

    params: ClassVar[list[str]] = KINDS
    param_names: ClassVar[list[str]] = ["kind"]

    def time_values(self, paths: dict[str, str], kind: str) -> None:
        """No dask: ``.values`` of the lazily indexed variable."""
        ds = open_ours(paths[f"bold.{kind}"])
        ds["data"].values  # noqa: B018
        ds.close()

    def time_chunked_store(self, paths: dict[str, str], kind: str) -> None:
        """``chunks={}``; dask stores every chunk into a Fortran-ordered array."""
        ds = open_ours(paths[f"bold.{kind}"], chunks={})
        data = ds["data"].data
        dask.array.store(data, fortran_empty(data.shape, data.dtype), lock=False)
        ds.close()

    def time_chunked_values(self, paths: dict[str, str], kind: str) -> None:
        """``chunks={}`` then ``.values`` (includes dask's C-order assembly)."""
        ds = open_ours(paths[f"bold.{kind}"], chunks={})
        ds["data"].values  # noqa: B018
        ds.close()

    def time_nibabel(self, paths: dict[str, str], kind: str) -> None:
        """nibabel's real read (``mmap=False``; single pass for gzip)."""
        np.asanyarray(load(paths[f"bold.{kind}"], mmap=False).dataobj)


class MemmapCopy(Inputs):
    """Upper bound for a ``.nii`` full read: copy the memory-mapped data block."""

    def time_memmap_copy(self, paths: dict[str, str]) -> None:
        """``np.array(np.memmap(...))`` of the 4-D series."""
        img = load(paths["bold.nii"])
        mapped = np.memmap(
            paths["bold.nii"],
            dtype=img.get_data_dtype(),
            mode="r",
            offset=int(img.dataobj.offset),
            shape=img.shape,
            order="F",
        )
        np.array(mapped)


class VolumeRead(Inputs):
    """One volume: the first on a fresh open, and the last once its position is indexed."""

    params: ClassVar[list[str]] = KINDS
    param_names: ClassVar[list[str]] = ["kind"]

    def setup(self, paths: dict[str, str], kind: str) -> None:
        """Open once and read the last volume once (builds any seek index)."""
        self.last = BOLD_SHAPE[3] - 1
        self.ds = open_ours(paths[f"bold.{kind}"], chunks={})
        self.ds["data"].isel(time=self.last).values  # noqa: B018
        self.img = load(paths[f"bold.{kind}"])
        np.asanyarray(self.img.dataobj[..., self.last])

    def teardown(self, paths: dict[str, str], kind: str) -> None:
        """Close the dataset."""
        self.ds.close()

    def time_first_volume_fresh_open(self, paths: dict[str, str], kind: str) -> None:
        """Open, read volume 0, close."""
        ds = open_ours(paths[f"bold.{kind}"], chunks={})
        ds["data"].isel(time=0).values  # noqa: B018
        ds.close()

    def time_last_volume_again(self, paths: dict[str, str], kind: str) -> None:
        """The last volume, after it has been read once."""
        self.ds["data"].isel(time=self.last).values  # noqa: B018

    def time_nibabel_last_volume_again(self, paths: dict[str, str], kind: str) -> None:
        """nibabel's equivalent (indexed_gzip if installed)."""
        np.asanyarray(self.img.dataobj[..., self.last])


class TemporalMean(Inputs):
    """Mean over time with ``chunks={}`` vs ``get_fdata().mean(-1)``."""

    params: ClassVar[list[str]] = KINDS
    param_names: ClassVar[list[str]] = ["kind"]

    def _mean(self, path: str) -> Any:
        ds = open_ours(path, chunks={})
        try:
            return ds["data"].mean("time").values
        finally:
            ds.close()

    def time_mean(self, paths: dict[str, str], kind: str) -> None:
        """Chunked temporal mean."""
        self._mean(paths[f"bold.{kind}"])

    def peakmem_mean(self, paths: dict[str, str], kind: str) -> None:
        """Peak RSS of the chunked temporal mean (whole process, asv's measure)."""
        self._mean(paths[f"bold.{kind}"])

    def time_nibabel_mean(self, paths: dict[str, str], kind: str) -> None:
        """nibabel: ``get_fdata().mean(-1)``."""
        load(paths[f"bold.{kind}"]).get_fdata().mean(-1)

    def peakmem_nibabel_mean(self, paths: dict[str, str], kind: str) -> None:
        """Peak RSS of nibabel's temporal mean."""
        load(paths[f"bold.{kind}"]).get_fdata().mean(-1)


class ChunkedMean(Inputs):
    """Temporal mean with ``chunks={}`` and ``"auto"`` beside the same mean without dask."""

    params: ClassVar[list[Any]] = [KINDS, ["none", "{}", "auto"]]
    param_names: ClassVar[list[str]] = ["kind", "chunks"]

    def time_mean(self, paths: dict[str, str], kind: str, chunks: str) -> None:
        """``.mean("time")`` with the given chunks (``none``: lazily indexed, no dask)."""
        value: Any = {"none": None, "{}": {}, "auto": "auto"}[chunks]
        ds = open_ours(paths[f"bold.{kind}"], chunks=value)
        try:
            ds["data"].mean("time").values  # noqa: B018
        finally:
            ds.close()

    def peakmem_mean(self, paths: dict[str, str], kind: str, chunks: str) -> None:
        """Peak RSS of the same mean."""
        self.time_mean(paths, kind, chunks)


class ReorientMean(Inputs):
    """Closest-canonical (RAS+) reorientation, then the temporal mean."""

    params: ClassVar[list[str]] = KINDS
    param_names: ClassVar[list[str]] = ["kind"]

    def setup(self, paths: dict[str, str], kind: str) -> None:
        """Skip if the accessor has no ``to_canonical`` yet."""
        ds = open_ours(paths[f"bold.{kind}"])
        ds.close()

    def time_canonical_mean(self, paths: dict[str, str], kind: str) -> None:
        """``.nifti.to_canonical().mean("time")`` with ``chunks={}``."""
        ds = open_ours(paths[f"bold.{kind}"], chunks={})
        ds["data"].nifti.to_canonical().mean("time").values  # noqa: B018
        ds.close()

    def time_nibabel_canonical_mean(self, paths: dict[str, str], kind: str) -> None:
        """``nib.as_closest_canonical(img).get_fdata().mean(-1)``."""
        nib.as_closest_canonical(load(paths[f"bold.{kind}"])).get_fdata().mean(-1)


class Resample(Inputs):
    """Resample the 3-D volume onto a rotated 2 mm grid (linear and nearest)."""

    params: ClassVar[list[Any]] = [[0, 1], KINDS]
    param_names: ClassVar[list[str]] = ["order", "kind"]

    def setup(self, paths: dict[str, str], order: int, kind: str) -> None:
        """Build the target grid; skip if ``resample_to`` does not exist yet."""
        ds = open_ours(paths[f"t1.{kind}"])
        ds.close()
        source = load(paths[f"t1.{kind}"])
        angle = np.deg2rad(10.0)
        rotation = np.array(
            [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
        )
        self.target_shape = (64, 64, 64)
        affine = np.eye(4)
        affine[:3, :3] = rotation @ np.diag([2.0, 2.0, 2.0])
        centre = source.affine @ np.r_[(np.array(source.shape) - 1) / 2, 1]
        affine[:3, 3] = centre[:3] - affine[:3, :3] @ ((np.array(self.target_shape) - 1) / 2)
        self.target_affine = affine

    def time_resample_to(self, paths: dict[str, str], order: int, kind: str) -> None:
        """``.nifti.resample_to((affine, shape), order)`` computed."""
        ds = open_ours(paths[f"t1.{kind}"], chunks={})
        target = (self.target_affine, self.target_shape)
        ds["data"].nifti.resample_to(target, order=order).values  # noqa: B018
        ds.close()

    def time_nibabel_resample_from_to(self, paths: dict[str, str], order: int, kind: str) -> None:
        """``nibabel.processing.resample_from_to`` (scipy ``map_coordinates``)."""
        img = load(paths[f"t1.{kind}"])
        target = (self.target_shape, self.target_affine)
        np.asanyarray(nibabel.processing.resample_from_to(img, target, order=order).dataobj)


class TemporalStats(Inputs):
    """Mean and standard deviation over time of the scaled series, vs nibabel's float64."""

    params: ClassVar[list[Any]] = [KINDS, ["mean", "std"], ["none", "{}"]]
    param_names: ClassVar[list[str]] = ["kind", "stat", "chunks"]

    def _ours(self, paths: dict[str, str], kind: str, stat: str, chunks: str) -> Any:
        value: Any = {"none": None, "{}": {}}[chunks]
        ds = open_ours(paths[f"bold-scaled.{kind}"], chunks=value)
        try:
            return getattr(ds["data"], stat)("time").values
        finally:
            ds.close()

    def _nibabel(self, paths: dict[str, str], kind: str, stat: str) -> Any:
        img: Any = load(paths[f"bold-scaled.{kind}"])
        return getattr(img.get_fdata(), stat)(-1)

    def time_ours(self, paths: dict[str, str], kind: str, stat: str, chunks: str) -> None:
        """``ds["data"].mean("time").values`` (or ``.std``) with the given chunks."""
        self._ours(paths, kind, stat, chunks)

    def peakmem_ours(self, paths: dict[str, str], kind: str, stat: str, chunks: str) -> None:
        """Peak RSS of the same."""
        self._ours(paths, kind, stat, chunks)

    def time_nibabel(self, paths: dict[str, str], kind: str, stat: str, chunks: str) -> None:
        """``nib.load(p).get_fdata().mean(-1)`` (or ``.std(-1)``); ``chunks`` does not apply."""
        self._nibabel(paths, kind, stat)

    def peakmem_nibabel(self, paths: dict[str, str], kind: str, stat: str, chunks: str) -> None:
        """Peak RSS of nibabel's reduction."""
        self._nibabel(paths, kind, stat)
