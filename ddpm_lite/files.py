"""Writing files so that work is never lost: one atomic writer for checkpoints, configs and pictures.

:func:`atomic_write` writes to a temporary file beside the target and renames it over the target with
``os.replace``: a crash, Ctrl-C or a full disk leaves either the old file or the new one, never half of one, and
two processes writing the same file leave one whole file. OSErrors name the file the user asked for (not the
temporary one), so the command line can say in one line what went wrong where.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object], *, durable: bool = False,
                 before_replace: Callable[[Path], object] | None = None) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` (``.<name>.<random>.tmp``), then rename it over
    ``path``; returns ``path``.

    ``durable=True`` also flushes and fsyncs the file and its folder, so the rename survives a power cut
    (checkpoints). ``before_replace(path)`` runs just before the rename (e.g. to keep the file it replaces).
    On any error the temporary file is removed, ``path`` is left as it was, and OSErrors name ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise naming(err, path) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        if before_replace is not None:
            before_replace(path)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise naming(err, path) from err
        raise
    if durable:
        _fsync_folder(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`: ``path`` is whole before and after."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def naming(err: OSError, path: str | os.PathLike) -> OSError:
    """``err`` (same class and errno) naming ``path``, the file the user asked for, instead of a temporary
    file or none (a write into a file object); unchanged when it already names ``path``."""
    path = str(path)
    if err.filename == path or err.errno is None:
        return err
    try:
        return type(err)(err.errno, err.strerror or os.strerror(err.errno), path)
    except TypeError:  # an OSError subclass with another constructor
        return OSError(err.errno, err.strerror or os.strerror(err.errno), path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
