"""Atomic output (``_atomic``): targets appear whole or not at all."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from xarray_nifti._atomic import staged, staged_path


def test_staged_files_move_into_place_together(tmp_path: Path) -> None:
    targets = [tmp_path / "a.hdr", tmp_path / "a.img"]
    with staged() as staging, ExitStack() as stack:
        for target in targets:
            staging.open(target, stack).write(target.name.encode())
        scratch = staging.open(targets[1], stack, scratch=True)
        staging.discard(scratch)
        assert not any(t.exists() for t in targets)  # nothing before the end
    assert [t.read_bytes() for t in targets] == [b"a.hdr", b"a.img"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.hdr", "a.img"]


def test_staged_files_are_removed_on_error_and_targets_kept(tmp_path: Path) -> None:
    target = tmp_path / "old.nii"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)

    def interrupted_write() -> None:
        with staged() as staging, ExitStack() as stack:
            staging.open(target, stack).write(b"partial")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_write()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.nii"]
    with staged() as staging, ExitStack() as stack:
        staging.open(target, stack).write(b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640  # the replaced file's mode is kept


def test_staged_folder_is_removed_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.zarr"

    def failing_write() -> None:
        with staged_path(target) as temp:
            (temp / "group").mkdir(parents=True)
            (temp / "group" / "chunk").write_bytes(b"0")
            raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        failing_write()
    assert list(tmp_path.iterdir()) == []
    with staged_path(target) as temp:
        temp.mkdir()
        (temp / "zarr.json").write_text("{}")
    assert (target / "zarr.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]
