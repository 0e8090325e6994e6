"""A file changed after a lazy dataset was opened on it: the next read raises, never mixes versions.

Local files here; remote objects (S3) in ``test_remote.py``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from xarray_nifti import NiftiFileChangedError, NiftiTruncatedError
from xarray_nifti._identity import check_stamps, stamp_fsspec

SHAPE = (10, 9, 8, 6)
OLD = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
NEW = (OLD[::-1] * 3 + 7).astype(np.int16)
KINDS = ["nii", "nii.gz", "pair", "pair.gz"]
CHUNKS: list[Any] = [None, {}]


def _write(folder: Path, kind: str, data: np.ndarray, *, bigger: bool = False) -> Path:
    """Write ``data``; gzip without compression so that two versions have the same size."""
    if bigger:
        data = np.concatenate([data, data[..., :1]], axis=-1)
    if kind == "pair":
        nib.save(nib.Nifti1Pair(data, np.eye(4)), folder / "img.hdr")
        return folder / "img.hdr"
    if kind == "pair.gz":
        nib.save(nib.Nifti1Pair(data, np.eye(4)), folder / "plain.hdr")
        for ext in ("hdr", "img"):
            raw = (folder / f"plain.{ext}").read_bytes()
            (folder / f"img.{ext}.gz").write_bytes(gzip.compress(raw, compresslevel=0, mtime=0))
        return folder / "img.hdr.gz"
    raw = nib.Nifti1Image(data, np.eye(4)).to_bytes()
    path = folder / f"img.{kind}"
    path.write_bytes(gzip.compress(raw, compresslevel=0, mtime=0) if kind.endswith("gz") else raw)
    return path


def _data_files(path: Path) -> list[Path]:
    if ".hdr" in path.name:
        return [path, path.with_name(path.name.replace(".hdr", ".img"))]
    return [path]


def _open(path: Path, chunks: Any) -> xr.Dataset:
    return xr.open_dataset(path, engine="nifti", chunks=chunks, cache=False)


@pytest.mark.parametrize("chunks", CHUNKS, ids=["chunks=None", "chunks={}"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("change", ["same-size", "other-size", "replaced", "touched"])
def test_read_after_change_raises(tmp_path: Path, kind: str, chunks: Any, change: str) -> None:
    path = _write(tmp_path, kind, OLD)
    ds = _open(path, chunks)
    np.testing.assert_array_equal(ds["data"].isel(time=1).values, OLD[..., 1])
    before = [os.stat(p) for p in _data_files(path)]
    if change == "same-size":
        _write(tmp_path, kind, NEW)
        assert [os.stat(p).st_size for p in _data_files(path)] == [s.st_size for s in before]
    elif change == "other-size":
        _write(tmp_path, kind, NEW, bigger=True)
    elif change == "replaced":  # a new file renamed over the old one (a new inode)
        other = tmp_path / "other"
        other.mkdir()
        for written, target in zip(
            _data_files(_write(other, kind, NEW)), _data_files(path), strict=True
        ):
            os.replace(written, target)
    else:  # the same bytes with a new modification time: counted as a change (documented)
        for p, stat in zip(_data_files(path), before, strict=True):
            os.utime(p, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    with pytest.raises(NiftiFileChangedError, match=r"img\..*changed since it was opened.*open"):
        ds["data"].values  # noqa: B018
    with pytest.raises(NiftiFileChangedError):  # and again: the stale reader is never used
        ds["data"].isel(time=0).values  # noqa: B018
    ds.close()
    with _open(path, chunks) as fresh:  # re-opening reads the new version
        expected = OLD if change == "touched" else NEW
        np.testing.assert_array_equal(fresh["data"][..., :6].values, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_change_of_the_header_file_alone_is_noticed(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path, kind, OLD)
    ds = _open(path, None)
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one bit, same size
    with pytest.raises(NiftiFileChangedError, match=r"content changed|modification time"):
        ds["data"].values  # noqa: B018


def test_it_is_a_truncated_error_and_names_what_changed(tmp_path: Path) -> None:
    path = _write(tmp_path, "nii", OLD)
    ds = _open(path, None)
    _write(tmp_path, "nii", NEW, bigger=True)
    with pytest.raises(NiftiTruncatedError, match=r"size went from \d+ to \d+ bytes"):
        ds["data"].values  # noqa: B018


def test_removed_file_is_file_not_found(tmp_path: Path) -> None:
    path = _write(tmp_path, "nii.gz", OLD)
    ds = _open(path, None)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"img\.nii\.gz.*removed"):
        ds["data"].values  # noqa: B018


_WORKER = """
import pickle, sys
import xarray_nifti
ds = pickle.loads(sys.stdin.buffer.read())
try:
    ds["data"].values
except xarray_nifti.NiftiFileChangedError as err:
    print("changed:", err)
else:
    print("read")
"""


@pytest.mark.parametrize("kind", ["nii", "nii.gz", "pair"])
def test_a_fresh_process_checks_what_was_seen_at_open(tmp_path: Path, kind: str) -> None:
    """The identity travels with the pickled array to a process that never saw the file."""
    path = _write(tmp_path, kind, OLD)
    ds = _open(path, {})
    payload = pickle.dumps(ds)
    run = [sys.executable, "-c", _WORKER]
    unchanged = subprocess.run(run, input=payload, capture_output=True, check=True)
    assert unchanged.stdout.decode().strip() == "read"
    _write(tmp_path, kind, NEW)
    changed = subprocess.run(run, input=payload, capture_output=True, check=True)
    assert changed.stdout.decode().startswith("changed:")
    assert "img." in changed.stdout.decode()


def test_unchanged_file_reads_with_no_false_alarm(tmp_path: Path) -> None:
    path = _write(tmp_path, "nii.gz", OLD)
    ds = _open(path, {})
    for _ in range(3):
        np.testing.assert_array_equal(ds["data"].values, OLD)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns))  # same times
    np.testing.assert_array_equal(ds["data"].isel(time=4).values, OLD[..., 4])


# -- remote objects: stamps from a listing's entry, checked against info() -------------------


class _Store:
    """A stand-in for an fsspec filesystem: ``info()`` says what ``now`` holds."""

    async_impl = True

    def __init__(self, now: dict[str, Any]) -> None:
        self.now = now
        self.asked = 0

    def invalidate_cache(self, path: str | None = None) -> None:
        pass

    def info(self, path: str) -> dict[str, Any]:
        self.asked += 1
        return dict(self.now)


_PLUS_2 = timezone(timedelta(hours=2))
_UTC = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
_LISTED = {"name": "b/k.nii", "size": 100, "ETag": '"abc"', "LastModified": _UTC}


def test_stamp_from_a_listing_needs_no_request_and_matches_a_later_head() -> None:
    # HEAD adds a version id and gives the time in another zone: neither is a change.
    store = _Store({**_LISTED, "VersionId": "v1", "LastModified": _UTC.astimezone(_PLUS_2)})
    stamp = stamp_fsspec(store, "b/k.nii", "s3://b/k.nii", info=_LISTED)
    assert store.asked == 0
    check_stamps((stamp,))
    assert store.asked == 1


@pytest.mark.parametrize(
    ("now", "message"),
    [
        ({"ETag": '"def"'}, r"version changed \(ETag \"abc\" -> ETag \"def\"\)"),
        ({"size": 90}, "shrank from 100 to 90 bytes"),
        ({"ETag": None}, "version changed"),
    ],
    ids=["etag", "size", "etag-gone"],
)
def test_remote_change_is_named(now: dict[str, Any], message: str) -> None:
    store = _Store({**_LISTED, **now})
    stamp = stamp_fsspec(store, "b/k.nii", "s3://b/k.nii", info=_LISTED)
    with pytest.raises(NiftiFileChangedError, match=rf"s3://b/k\.nii: .*{message}"):
        check_stamps((stamp,))


def test_without_an_etag_the_modification_time_is_compared_as_an_instant() -> None:
    listed = {"size": 100, "LastModified": _UTC}
    same = _Store({"size": 100, "LastModified": _UTC.astimezone(_PLUS_2)})
    check_stamps((stamp_fsspec(same, "k", info=listed),))
    later = _Store({"size": 100, "LastModified": _UTC + timedelta(seconds=1)})
    with pytest.raises(NiftiFileChangedError, match="LastModified"):
        check_stamps((stamp_fsspec(later, "k", info=listed),))
