"""One inflate stream per gzip file per cluster: reads run on the file's owner worker.

A gzip stream can only be inflated from its start (or from a checkpoint that
this process made on the way). When dask spreads one file's chunks over N
worker processes, each would inflate from the start up to its chunks, so a
full read costs up to N passes. Instead, every ``.nii.gz`` file has one
*owner* among the workers, chosen by rendezvous hashing of the file's
identity over the workers' addresses (stable while the workers stay, and
spreading many files evenly). A task on another worker submits the region
read to the owner, releases its thread slot while it waits (``secede``), and
gets the voxels back: the file is inflated about once per cluster, and a
remote object's bytes are fetched about once.

Outside a ``dask.distributed`` worker, or with one worker, nothing changes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["owner_elsewhere", "run_on"]

_REFRESH_SECONDS = 5.0  # how long a worker trusts its list of peers
_OWNER_WAIT_SECONDS = 30.0  # then check that the owner is still there
_peers: tuple[float, tuple[str, ...]] = (0.0, ())
_peers_lock = threading.Lock()


def _current_worker() -> Any:
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - distributed is optional
        return None
    try:
        return get_worker()
    except ValueError:  # not running inside a worker task
        return None


def _workers(worker: Any) -> tuple[str, ...]:
    global _peers
    with _peers_lock:
        stamp, addresses = _peers
        if time.monotonic() - stamp < _REFRESH_SECONDS and worker.address in addresses:
            return addresses
    from distributed import get_client

    info = get_client().scheduler_info(n_workers=-1)
    addresses = tuple(sorted(info.get("workers", {})))
    with _peers_lock:
        _peers = (time.monotonic(), addresses)
    return addresses


def _weight(file_key: str, address: str) -> bytes:
    return hashlib.blake2b(f"{file_key}|{address}".encode(), digest_size=8).digest()


def owner_elsewhere(file_key: str) -> str | None:
    """The address of the worker that owns ``file_key``, if that is not this process."""
    worker = _current_worker()
    if worker is None:
        return None
    addresses = _workers(worker)
    if len(addresses) < 2:
        return None
    owner = max(addresses, key=lambda address: _weight(file_key, address))
    return None if owner == worker.address else owner


def run_on(owner: str, func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func(*args)`` on the worker ``owner`` and return its result.

    This task's thread slot is released while waiting, so that an owner that
    is itself waiting on another owner never deadlocks the cluster. If the
    owner leaves the cluster meanwhile, the read runs here instead.
    """
    from distributed import TimeoutError as DistributedTimeout
    from distributed import get_client, rejoin, secede

    client = get_client()
    future = client.submit(func, *args, workers=[owner], allow_other_workers=False, pure=False)
    secede()
    try:
        while True:
            try:
                return future.result(timeout=_OWNER_WAIT_SECONDS)
            except DistributedTimeout:
                if owner not in client.scheduler_info(n_workers=-1).get("workers", {}):
                    future.cancel()
                    return func(*args)
    finally:
        rejoin()
