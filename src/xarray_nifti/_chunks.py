"""The backend's preferred chunks: whole volumes grouped to a size dask handles well.

One volume per chunk (about 1 MB for a typical BOLD run) is far below what
dask handles well: a temporal mean over 400 such chunks spends most of its
time in task overhead. So ``chunks={}`` groups whole volumes along ``time``
(and ``u, v, w``) up to :data:`TARGET_CHUNK_BYTES`, and splits a volume into
contiguous k-slabs only when one volume is larger than that. Every preferred
chunk is one contiguous byte range of the file, which is what the gzip reader
and remote range requests want.

The target follows dask's ``array.chunk-size`` setting when the user changed
it from dask's default; otherwise it is :data:`TARGET_CHUNK_BYTES`, chosen by
measurement (``docs/benchmarks.md``): large enough that a temporal mean runs
within 1.5x of the same mean without dask, small enough that the chunks the
threads hold at once stay under a quarter of the image.
"""

from __future__ import annotations

import sys

__all__ = ["TARGET_CHUNK_BYTES", "preferred_chunks", "target_chunk_bytes"]

TARGET_CHUNK_BYTES = 32 << 20
_DASK_DEFAULT = 128 << 20  # dask's own array.chunk-size


def target_chunk_bytes() -> int:
    """Bytes per preferred chunk: dask's ``array.chunk-size`` if the user set it, else ours."""
    # A user who set dask's config has imported dask; importing it here only to read the
    # default would cost every ``import xarray_nifti`` all of dask.
    if "dask.config" not in sys.modules:
        return TARGET_CHUNK_BYTES
    import dask.config
    from dask.utils import parse_bytes

    configured = dask.config.get("array.chunk-size", None)
    if configured is None:
        return TARGET_CHUNK_BYTES
    size = parse_bytes(configured) if isinstance(configured, str) else int(configured)
    return TARGET_CHUNK_BYTES if size == _DASK_DEFAULT else max(1, size)


def preferred_chunks(
    dims: tuple[str, ...], shape: tuple[int, ...], itemsize: int, target: int | None = None
) -> dict[str, int]:
    """Chunk sizes along ``k`` and the dims after it (``i, j`` are never split).

    Examples
    --------
    >>> preferred_chunks(("i", "j", "k", "time"), (96, 96, 60, 400), 2, target=32 << 20)
    {'time': 30, 'k': 60}
    >>> preferred_chunks(("i", "j", "k"), (512, 512, 512), 4, target=32 << 20)
    {'k': 32}
    """
    target = target_chunk_bytes() if target is None else target
    channels = shape[dims.index("rgb")] if "rgb" in dims else 1
    spatial = [size for dim, size in zip(dims, shape, strict=True) if dim in ("i", "j", "k")]
    plane = itemsize * channels
    for size in spatial[:2]:
        plane *= size
    slab = spatial[2] if len(spatial) > 2 else 1
    volume = plane * slab
    outer = [dim for dim in dims[3:] if dim != "rgb"]
    chunks = {dim: 1 for dim in outer}
    if volume > target or not outer:  # k-slabs of one volume
        if "k" in dims:
            chunks["k"] = max(1, min(slab, target // max(plane, 1)))
        return chunks
    # Whole volumes, grouped along the first outer dim (time); one at a time beyond it.
    chunks[outer[0]] = max(1, min(shape[dims.index(outer[0])], target // max(volume, 1)))
    if "k" in dims:
        chunks["k"] = slab
    return chunks
