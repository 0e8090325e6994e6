"""Atomic output: write beside the target under a temporary name, then ``os.replace``.

A target therefore appears only when complete: any exception (including
``KeyboardInterrupt``) removes the temporary files and leaves an existing
target untouched. A process killed with ``SIGKILL`` can leave a hidden
``.NAME.*.part`` file or folder behind, never a partial target.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, cast

__all__ = ["Staging", "staged", "staged_path"]


def _umask() -> int:
    # os.umask can only be read by setting it, which races with other threads.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Staging:
    """Temporary files beside their targets, moved into place together by :meth:`commit`."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path | None]] = []

    def open(self, target: Path, stack: ExitStack, *, scratch: bool = False) -> IO[bytes]:
        """A new temporary file beside ``target``, closed by ``stack``.

        A ``scratch`` file is never moved into place; :meth:`discard` removes it.
        """
        try:
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the stack
                dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
            )
        except PermissionError as err:
            raise PermissionError(
                errno.EACCES, f"{target}: no permission to write in the folder {target.parent}"
            ) from err
        self._pending.append((Path(handle.name), None if scratch else target))
        stack.callback(handle.close)
        return cast(IO[bytes], handle)

    def discard(self, handle: IO[bytes]) -> None:
        """Close and remove a scratch file."""
        handle.close()
        path = Path(str(handle.name))
        self._pending = [(temp, final) for temp, final in self._pending if temp != path]
        path.unlink(missing_ok=True)

    def commit(self) -> None:
        """Give each file the target's mode (or the umask's) and move it into place."""
        mode = 0o666 & ~_umask()
        for temp, final in self._pending:
            if final is not None:
                with suppress(OSError):
                    os.chmod(temp, os.stat(final).st_mode & 0o7777 if final.exists() else mode)
        for temp, final in self._pending:
            if final is not None:
                os.replace(temp, final)
        self._pending = [(temp, final) for temp, final in self._pending if final is None]

    def cleanup(self) -> None:
        """Remove every temporary file that was not moved into place."""
        for temp, _ in self._pending:
            temp.unlink(missing_ok=True)
        self._pending.clear()


@contextmanager
def staged() -> Iterator[Staging]:
    """A :class:`Staging` committed when the block succeeds, cleaned up in every case."""
    staging = Staging()
    try:
        yield staging
        staging.commit()
    finally:
        staging.cleanup()


@contextmanager
def staged_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` (file or folder) moved onto it on success.

    Nothing is created at the path: the block writes it (e.g. ``to_zarr``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "out.txt"
    >>> with staged_path(target) as temp:
    ...     _ = temp.write_text("done")
    >>> target.read_text()
    'done'
    """
    temp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        yield temp
        os.replace(temp, target)
    finally:
        if temp.exists() or temp.is_symlink():
            _remove(temp)
