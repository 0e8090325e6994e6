"""Full reads of one ``.nii.gz`` on a ``LocalCluster`` of 1 and 2 worker processes."""

from __future__ import annotations

from typing import ClassVar

from ._cluster import cluster_reads
from ._inputs import Inputs


class ClusterRead(Inputs):
    """Worker CPU and wall time of a full chunked read (``chunks={}``, a float64 sum)."""

    params: ClassVar[list[int]] = [1, 2]
    param_names: ClassVar[list[str]] = ["workers"]

    def track_worker_cpu_seconds(self, paths: dict[str, str], workers: int) -> float:
        """Total user + system CPU of the worker processes (one inflate pass is the goal)."""
        return cluster_reads(workers, {"bold": paths["bold.nii.gz"]})[0].worker_cpu

    def track_wall_seconds(self, paths: dict[str, str], workers: int) -> float:
        """Wall time of the same read."""
        return cluster_reads(workers, {"bold": paths["bold.nii.gz"]})[0].wall
