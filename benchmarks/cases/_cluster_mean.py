"""Cluster-mean case of ``compare.py``: a temporal mean on a 2-process ``LocalCluster``.

``cluster_mean``: ``ds["data"].mean("time")`` with ``chunks={}``

* of the scaled BOLD ``.nii.gz`` on a ``LocalCluster`` of two single-threaded
  worker processes, against the same mean in this process (dask's threads):
  target ≤ 1.2×;
* of the same file with spatial-image, the way its users read NIfTI: nibabel's
  ``dataobj`` wrapped by ``dask.array.from_array`` in hand-picked chunks of
  :data:`PEER_VOLUMES` volumes, transposed to spatial-image's ``(t, z, y, x)``
  and ``to_spatial_image``; target: ours no slower;
* of ten subjects (copies of the short series): ours with ``open_mfdataset``
  against ten spatial-images computed together; target: ours no slower.

Every result is checked against nibabel's ``get_fdata().mean(-1)`` before it is
timed; each time is the best of ``repeat`` interleaved runs, and every run opens the
files anew on workers that have forgotten their readers.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import dask
import dask.array
import dask.base
import numpy as np
from benchmarks import _cluster
from cases._harness import Row, best_of, has_module, load
from cases._inputs import Context, open_ours
from cases._temporal import check_float32_result

__all__ = ["case_cluster_mean"]

#: spatial-image's chunks along time, hand-picked: in full mode 32 MiB of stored int16
#: per chunk, 127 MiB once the proxy has scaled it to float64
PEER_VOLUMES = 30
N_SUBJECTS = 10


def _ours(paths: str | list[str]) -> np.ndarray:
    data = _cluster.open_data(paths)
    try:
        return np.asarray(data.mean("time").values)
    finally:
        data.close()


def _spatial_image(path: str) -> Any:
    """``path`` as spatial-image's users build one: nibabel's proxy in 30-volume chunks."""
    from spatial_image import to_spatial_image  # type: ignore[import-untyped]

    img = load(path)
    proxy = img.dataobj
    chunks = (*proxy.shape[:3], PEER_VOLUMES)
    # The proxy returns scaled floats: say so, or dask would take its stored int16 dtype.
    array = dask.array.from_array(proxy, chunks=chunks, meta=np.empty((0,) * 4, np.float64))
    zooms = img.header.get_zooms()
    return to_spatial_image(
        array.transpose(3, 2, 1, 0),
        dims=("t", "z", "y", "x"),
        scale={"x": float(zooms[0]), "y": float(zooms[1]), "z": float(zooms[2])},
    )


def _peer(paths: str | list[str]) -> np.ndarray:
    """The temporal mean(s) with spatial-image, as arrays in ours' ``(i, j, k)`` order."""
    images = [_spatial_image(p) for p in ([paths] if isinstance(paths, str) else paths)]
    means = dask.base.compute(*[image.mean("t").data for image in images])
    stacked = np.stack([np.asarray(mean).transpose(2, 1, 0) for mean in means])
    return stacked[0] if isinstance(paths, str) else stacked


def case_cluster_mean(ctx: Context) -> list[Row]:
    """Temporal mean on a 2-process LocalCluster: vs one process and vs spatial-image."""
    one = ctx.files.bold_scaled(gz=True)
    subjects = ctx.files.subject_copies(N_SUBJECTS)
    expected_subject = np.asarray(load(subjects[0]).get_fdata().mean(-1))
    expected = {
        "one": np.asarray(load(one).get_fdata().mean(-1)),
        "all": np.stack([expected_subject] * N_SUBJECTS),
    }
    repeat = max(2, ctx.sizes.repeat - 1)
    peer = has_module("spatial_image")

    def check(results: dict[str, Any]) -> None:
        for name, value in results.items():  # "<who> one" or "<who> all"
            check_float32_result(f"temporal mean, {name}", value, expected[name.split()[-1]])

    def single() -> np.ndarray:
        with dask.config.set(scheduler="threads"):
            ds = open_ours(one, chunks={})
            try:
                return np.asarray(ds["data"].mean("time").values)
            finally:
                ds.close()

    single_s = best_of({"this process one": single}, repeat, check)["this process one"].seconds
    candidates: dict[str, Callable[[], np.ndarray]] = {
        "ours one": partial(_ours, one),
        "ours all": partial(_ours, subjects),
    }
    if peer:
        candidates |= {"peer one": partial(_peer, one), "peer all": partial(_peer, subjects)}
    with _cluster.process_cluster(2) as client:
        # Every run starts on workers that hold no reader (spatial-image's keep none).
        best = best_of(
            candidates,
            repeat,
            check,
            before_each=lambda _: client.run(_cluster.forget_readers),
        )
    times = {name: sample.seconds for name, sample in best.items()}
    peer_label = f"spatial-image, {PEER_VOLUMES}-volume chunks"
    rows = [
        Row(
            "temporal mean .nii.gz chunks={}, 2-process cluster vs one process",
            times["ours one"],
            "same mean, this process (threads)",
            single_s,
            times["ours one"] / single_s,
            "cluster/process",
            goal=("≤", 1.2),
            note="LocalCluster(n_workers=2, threads_per_worker=1, processes=True); "
            "scaled int16 series",
        )
    ]
    for key, label in (("one", "one file"), ("all", f"{N_SUBJECTS} files (open_mfdataset)")):
        if not peer:
            rows.append(
                Row(
                    f"  cluster temporal mean {label}: vs spatial-image",
                    times[f"ours {key}"],
                    "spatial-image not installed",
                    status="n/a",
                )
            )
            continue
        rows.append(
            Row(
                f"  cluster temporal mean {label}: vs spatial-image",
                times[f"ours {key}"],
                peer_label,
                times[f"peer {key}"],
                times[f"ours {key}"] / times[f"peer {key}"],
                "ours/spatial-image",
                goal=("≤", 1.0),
                note="spatial-image reads through nibabel's ArrayProxy "
                "(dask.array.from_array, pickled to the workers)",
            )
        )
    return rows
