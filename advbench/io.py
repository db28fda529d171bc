"""Files written so that a reader never sees half of one: a temporary file beside the target, fsync, rename.

Everything advbench writes next to the results store (exports, leaderboards, COCO results, reports) goes
through :func:`atomic_write_text`; the store itself relies on SQLite's transactions.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from advbench.errors import StoreError


def _temp_file(directory: Path, name: str) -> tuple[int, str]:
    """Create a new, empty temporary file next to the target and open it for writing.

    It is created with mode ``0o666``, so the process umask applies exactly as it does to a plain
    ``open(path, "w")`` (``tempfile.mkstemp`` would create it ``0o600``).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp_name = os.fspath(directory / f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp_name, flags, 0o666), tmp_name
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory}")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically: temp file in the same directory, fsync, ``os.replace``.

    The file gets the permissions a plain ``open(path, "w")`` would give it: a new file
    ``0o666 & ~umask``, an existing file keeps its mode.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(f"{target} is a directory")
        fd, tmp_name = _temp_file(target.parent, target.name)
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc}; choose a writable file path") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            try:
                mode = stat.S_IMODE(os.stat(target).st_mode)
            except FileNotFoundError:
                mode = None
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)  # like open() on an existing file: its mode stays
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write {target}: {exc}; choose a writable file path") from exc
        raise
    try:  # make the rename itself durable; not possible on every platform
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
