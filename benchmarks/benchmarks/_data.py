"""Deterministic, realistic test images for the benchmarks (shared by asv and ``compare.py``).

The images imitate what the package reads in practice, so that gzip ratios
and read patterns are realistic:

* :func:`write_bold` — a BOLD-like int16 4-D series: a smooth head with a
  brain (about 21 % of the field of view), four low-rank temporal components,
  a slow drift and rounded Gaussian noise (σ 12 in the brain, 10 in the scalp,
  1.5 in the air). Volume ``t`` depends only on ``(seed, t)``, so a 100-volume
  file holds exactly the first 100 volumes of the 400-volume one.
* :func:`write_t1` — a T1-like float32 3-D volume: nested tissue shells with
  smooth intensity modulation, integer-valued intensities plus noise.
* :func:`write_sparse` — a header plus a sparse (``truncate``\\ d) data block,
  for header-only "open" timings on multi-GB files that cost no disk space.
* :func:`write_t1_sagittal` — the T1-like volume stored as int16 in oblique
  sagittal slices (:func:`oblique_sagittal_affine`), as MPRAGE scans often are.

Every file has the same oblique LAS geometry (8° about x, 5° about z),
except the sagittal T1, qform code 1 (scanner), sform code 2 (aligned),
``scl_slope=1`` and ``scl_inter=0`` unless :func:`write_bold` is given a
scaling, and ``vox_offset=352``. Data are streamed to disk volume by
volume (or slab by slab), so generating a 442 MB series needs about 10 MB of
memory. ``.nii.gz`` copies are written by :func:`gzip_with_nibabel`
(``nib.save`` at nibabel's default level 1) so that they are typical files.

Examples
--------
>>> import tempfile, os, nibabel as nib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = write_bold(os.path.join(tmp, "b.nii"), (8, 8, 4, 3))
...     nib.load(path).shape
(8, 8, 4, 3)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "VOX_OFFSET",
    "bold_volumes",
    "ensure",
    "gzip_with_nibabel",
    "make_header",
    "oblique_las_affine",
    "oblique_sagittal_affine",
    "t1_slabs",
    "write_bold",
    "write_nifti",
    "write_sparse",
    "write_t1",
    "write_t1_sagittal",
]

VOX_OFFSET = 352
_BOLD_ZOOMS = (2.4, 2.4, 2.5)
_TR = 2.0


def oblique_las_affine(shape: Sequence[int], zooms: Sequence[float]) -> np.ndarray:
    """An oblique LAS affine centred on the field of view.

    Parameters
    ----------
    shape
        Spatial shape ``(ni, nj, nk)``.
    zooms
        Voxel sizes in mm.

    Returns
    -------
    numpy.ndarray
        4×4 voxel → RAS+ affine: x flipped (L), then rotated 8° about x and
        5° about z, so that ``nib.aff2axcodes`` gives ``("L", "A", "S")``.
    """
    linear = _rotation(8.0, 5.0) @ np.diag([-zooms[0], zooms[1], zooms[2]])
    return _centred(linear, shape)


def oblique_sagittal_affine(shape: Sequence[int], zooms: Sequence[float]) -> np.ndarray:
    """Sagittal slices turned 12° about x and 5° about z, centred on the field of view.

    Parameters
    ----------
    shape
        Spatial shape ``(ni, nj, nk)``.
    zooms
        Voxel sizes in mm.

    Returns
    -------
    numpy.ndarray
        4×4 voxel → RAS+ affine: i along x, j along -z, k along y before the
        rotations, so that ``nib.aff2axcodes`` gives ``("R", "I", "A")``.
    """
    sagittal = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    linear = _rotation(12.0, 5.0) @ sagittal @ np.diag(np.asarray(zooms, dtype=np.float64))
    return _centred(linear, shape)


def _rotation(about_x: float, about_z: float) -> np.ndarray:
    """Rotation by ``about_x`` degrees about x, then ``about_z`` degrees about z."""
    ax, az = np.deg2rad(about_x), np.deg2rad(about_z)
    rot_x = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rot_z = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rotation: np.ndarray = rot_z @ rot_x
    return rotation


def _centred(linear: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The affine with this linear part whose field of view is centred on the origin."""
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ ((np.asarray(shape[:3], dtype=np.float64) - 1) / 2)
    return affine


def make_header(
    shape: Sequence[int],
    dtype: np.dtype | type,
    zooms: Sequence[float],
    tr: float | None = None,
) -> nib.Nifti1Header:
    """A single-file NIfTI-1 header with the benchmarks' standard geometry.

    Parameters
    ----------
    shape
        Full data shape (3-D or 4-D).
    dtype
        On-disk data type.
    zooms
        Spatial voxel sizes in mm.
    tr
        Repetition time in seconds (4-D only).

    Returns
    -------
    nibabel.Nifti1Header
        Header with qform code 1, sform code 2, slope 1, intercept 0 and
        ``vox_offset`` 352.
    """
    header = nib.Nifti1Header()
    header.set_data_shape(tuple(shape))
    header.set_data_dtype(dtype)
    full_zooms = tuple(zooms[:3]) + ((tr if tr is not None else 1.0),) * (len(shape) - 3)
    header.set_zooms(full_zooms)
    affine = oblique_las_affine(shape, zooms)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=2)
    header.set_xyzt_units("mm", "sec")
    header.set_slope_inter(1.0, 0.0)
    header["vox_offset"] = VOX_OFFSET
    header["descrip"] = b"xarray-nifti benchmark data"
    return header


def write_nifti(
    path: str | os.PathLike[str], header: nib.Nifti1Header, blocks: Iterator[np.ndarray]
) -> str:
    """Write ``header`` and then the raw bytes of ``blocks`` (F-order pieces, in file order).

    Parameters
    ----------
    path
        Output ``.nii`` path.
    header
        Header whose ``vox_offset`` is :data:`VOX_OFFSET`.
    blocks
        Arrays whose Fortran-order bytes, concatenated, make up the data block.

    Returns
    -------
    str
        The path written.
    """
    dtype = header.get_data_dtype()
    expected = int(np.prod(header.get_data_shape())) * dtype.itemsize
    written = 0
    with open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\x00" * (VOX_OFFSET - f.tell()))  # no extensions
        for block in blocks:
            data = np.asarray(block, dtype=dtype)
            f.write(data.tobytes(order="F"))
            written += data.nbytes
    if written != expected:
        raise ValueError(f"{path}: wrote {written} data bytes, the header needs {expected}")
    return os.fspath(path)


def _grid(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] along each spatial axis, broadcastable."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape[:3]]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _smooth_field(shape: Sequence[int], rng: np.random.Generator, terms: int = 6) -> np.ndarray:
    """A smooth random field of unit-ish amplitude (sum of separable low-frequency cosines)."""
    u, v, w = _grid(shape)
    field = np.zeros(tuple(shape[:3]), dtype=np.float32)
    for _ in range(terms):
        fu, fv, fw = rng.uniform(0.5, 3.0, size=3).astype(np.float32)
        pu, pv, pw = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
        field += (
            np.cos(fu * np.pi * u + pu) * np.cos(fv * np.pi * v + pv) * np.cos(fw * np.pi * w + pw)
        )
    return field / np.float32(np.sqrt(terms / 8))


def bold_volumes(shape: Sequence[int], seed: int = 0, start: int = 0) -> Iterator[np.ndarray]:
    """Yield the int16 volumes ``start, start + 1, ..., shape[3] - 1`` of a BOLD-like series.

    Parameters
    ----------
    shape
        ``(ni, nj, nk, nt)``.
    seed
        Seed of the anatomy and of the per-volume noise.
    start
        First volume to yield.

    Yields
    ------
    numpy.ndarray
        One ``(ni, nj, nk)`` int16 volume.
    """
    spatial = tuple(shape[:3])
    rng = np.random.default_rng(seed)
    u, v, w = _grid(spatial)
    head = (u / 0.85) ** 2 + (v / 0.9) ** 2 + (w / 0.85) ** 2 <= 1.0
    brain = (u / 0.74) ** 2 + (v / 0.78) ** 2 + (w / 0.70) ** 2 <= 1.0
    scalp = head & ~brain
    base = np.zeros(spatial, dtype=np.float32)
    base[scalp] = (420.0 + 60.0 * _smooth_field(spatial, rng))[scalp]
    base[brain] = (780.0 + 140.0 * _smooth_field(spatial, rng, terms=10))[brain]
    sigma = np.full(spatial, 1.5, dtype=np.float32)
    sigma[scalp] = 10.0
    sigma[brain] = 12.0
    # Four low-rank temporal components confined to the brain, plus a drift.
    n_time = int(shape[3])
    t = np.arange(n_time, dtype=np.float32)
    maps = [(_smooth_field(spatial, rng) * brain).astype(np.float32) for _ in range(4)]
    periods = rng.uniform(15.0, 80.0, size=4)
    phases = rng.uniform(0, 2 * np.pi, size=4)
    courses = np.stack(
        [12.0 * np.sin(2 * np.pi * t / p + ph) for p, ph in zip(periods, phases, strict=True)]
    )
    # Drift on a fixed time scale, so that shorter series are exact prefixes of longer ones.
    drift = (8.0 * t / 400.0 - 3.0 * (t / 400.0) ** 2).astype(np.float32)
    drift_map = (base / 800.0).astype(np.float32)
    for index in range(start, n_time):
        noise_rng = np.random.default_rng((seed, index))
        volume = base + drift[index] * drift_map
        for component, course in zip(maps, courses, strict=True):
            volume += np.float32(course[index]) * component
        volume += sigma * noise_rng.standard_normal(spatial, dtype=np.float32)
        np.abs(volume, out=volume)  # magnitude images are non-negative (Rician-like air)
        yield np.rint(volume).astype(np.int16)


def write_bold(
    path: str | os.PathLike[str],
    shape: Sequence[int],
    seed: int = 0,
    slope: float = 1.0,
    inter: float = 0.0,
) -> str:
    """Write a BOLD-like int16 series (see :func:`bold_volumes`) to a ``.nii`` file.

    Parameters
    ----------
    path
        Output path (``.nii``).
    shape
        ``(ni, nj, nk, nt)``.
    seed
        Seed of the content.
    slope, inter
        ``scl_slope`` and ``scl_inter`` of the header (the stored integers are
        the same whatever they are).

    Returns
    -------
    str
        The path written.
    """
    header = make_header(shape, np.int16, _BOLD_ZOOMS, tr=_TR)
    header.set_slope_inter(slope, inter)
    return write_nifti(path, header, bold_volumes(shape, seed))


def t1_slabs(shape: Sequence[int], seed: int = 1, slab: int = 16) -> Iterator[np.ndarray]:
    """Yield float32 k-slabs of a T1-like volume (integer intensities plus noise).

    Parameters
    ----------
    shape
        ``(ni, nj, nk)``.
    seed
        Seed of the content.
    slab
        Number of k-planes per yielded block.

    Yields
    ------
    numpy.ndarray
        ``(ni, nj, <=slab)`` float32 blocks, in file order.
    """
    rng = np.random.default_rng(seed)
    ni, nj, nk = (int(n) for n in shape[:3])
    wobble = _smooth_field((ni, nj, nk), rng)
    texture = _smooth_field((ni, nj, nk), rng, terms=12)
    u, v, w = _grid((ni, nj, nk))
    radius = np.sqrt((u / 0.88) ** 2 + (v / 0.92) ** 2 + (w / 0.86) ** 2) + 0.03 * wobble
    intensity = np.zeros((ni, nj, nk), dtype=np.float32)
    intensity[radius <= 1.0] = 300.0  # scalp
    intensity[radius <= 0.9] = 60.0  # skull
    intensity[radius <= 0.84] = 200.0  # CSF
    intensity[radius <= 0.8] = 620.0  # grey matter
    intensity[radius <= 0.62] = 900.0  # white matter
    intensity += np.where(intensity > 0, 25.0 * texture, 0.0).astype(np.float32)
    noise_sigma = np.where(intensity > 0, 15.0, 2.0).astype(np.float32)
    for k0 in range(0, nk, slab):
        k1 = min(nk, k0 + slab)
        noise = np.random.default_rng((seed, k0)).standard_normal(
            (ni, nj, k1 - k0), dtype=np.float32
        )
        block = intensity[:, :, k0:k1] + noise_sigma[:, :, k0:k1] * noise
        yield np.rint(np.abs(block)).astype(np.float32)


def write_t1(path: str | os.PathLike[str], shape: Sequence[int], seed: int = 1) -> str:
    """Write a T1-like float32 volume (see :func:`t1_slabs`) to a ``.nii`` file.

    Parameters
    ----------
    path
        Output path (``.nii``).
    shape
        ``(ni, nj, nk)``.
    seed
        Seed of the content.

    Returns
    -------
    str
        The path written.
    """
    header = make_header(shape, np.float32, (1.0, 1.0, 1.0))
    return write_nifti(path, header, t1_slabs(shape, seed))


def write_t1_sagittal(
    path: str | os.PathLike[str],
    shape: Sequence[int],
    zooms: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 1,
) -> str:
    """Write the T1-like volume as int16 oblique sagittal slices to a ``.nii`` file.

    Parameters
    ----------
    path
        Output path (``.nii``).
    shape
        ``(ni, nj, nk)``: i is the slice direction (left-right).
    zooms
        Voxel sizes in mm.
    seed
        Seed of the content.

    Returns
    -------
    str
        The path written; qform (code 1) and sform (code 2) are both
        :func:`oblique_sagittal_affine`.
    """
    header = make_header(shape, np.int16, zooms)
    affine = oblique_sagittal_affine(shape, zooms)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=2)
    return write_nifti(path, header, (s.astype(np.int16) for s in t1_slabs(shape, seed)))


def write_sparse(
    path: str | os.PathLike[str], shape: Sequence[int], dtype: np.dtype | type = np.int16
) -> str:
    """Write a header and a sparse, all-zero data block of the size the header implies.

    Costs no disk space on file systems with sparse files; used to time
    header-only opens of multi-GB files.

    Parameters
    ----------
    path
        Output ``.nii`` path.
    shape
        Data shape.
    dtype
        Data type.

    Returns
    -------
    str
        The path written.
    """
    header = make_header(shape, dtype, _BOLD_ZOOMS, tr=_TR if len(shape) > 3 else None)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\x00" * (VOX_OFFSET - f.tell()))
        f.truncate(VOX_OFFSET + nbytes)
    return os.fspath(path)


def gzip_with_nibabel(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> str:
    """Write ``source`` (a ``.nii``) as ``target`` (``.nii.gz``) with ``nib.save``.

    nibabel streams the memory-mapped data through CPython's zlib at its
    default level (1), which is how typical ``.nii.gz`` files are made. The
    stored integers and ``scl_slope``/``scl_inter`` are kept (``nib.save`` of a
    loaded image would recompute the scaling from the scaled values).

    Parameters
    ----------
    source
        Existing ``.nii`` file.
    target
        Output ``.nii.gz`` path.

    Returns
    -------
    str
        The path written.
    """
    img: Any = nib.load(os.fspath(source))
    stored = nib.Nifti1Image(img.dataobj.get_unscaled(), img.affine, img.header)
    stored.header.set_slope_inter(img.dataobj.slope, img.dataobj.inter)
    nib.save(stored, os.fspath(target))
    return os.fspath(target)


def ensure(path: Path, make: Callable[[Path], object]) -> str:
    """Return ``path`` as a string, first calling ``make`` on a temporary name if it is missing.

    The file appears under its final name only once it is complete, so an
    interrupted run never leaves a half-written input behind.
    """
    if not path.exists():
        partial = path.with_name(".partial-" + path.name)  # keeps the .nii/.nii.gz suffix
        make(partial)
        os.replace(partial, path)
    return os.fspath(path)
