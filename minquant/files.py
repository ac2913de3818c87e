"""Writing files all-or-nothing: the one way minquant puts a file on disk.

A reader must never see half a file, two writers must not trip over each other's temporary file, and an
interrupt (Ctrl-C, an exception) must leave either the old file or the new one — and nothing else:

1. write to a *unique* temporary file in the destination's folder (a random name created with ``O_EXCL``:
   two processes saving to the same path never share a temporary name; the same folder keeps the final
   rename atomic);
2. flush and ``fsync`` it, so the bytes are on disk before the name points at them;
3. ``os.replace`` it onto the destination (atomic on POSIX and Windows);
4. in a ``finally``: if anything failed before step 3, remove the temporary file.

``atomic_path(path)`` yields the temporary *path*, for libraries that write to a path themselves
(``np.savez``, ``onnx.save``, matplotlib's ``savefig``); ``atomic_write(path)`` yields an open binary file.
A destination that is an existing directory is refused up front with a ``ValueError``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["atomic_path", "atomic_write"]


def _check_destination(path: Path) -> None:
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a directory (give a file name)")
    if not path.parent.exists():
        raise ValueError(f"cannot write {path}: folder {path.parent} does not exist")


@contextlib.contextmanager
def atomic_path(path, *, suffix: str = ""):
    """Yield a unique temporary path beside ``path`` (ending in ``suffix``, for libraries that look at the
    extension); when the block ends normally, fsync it and rename it onto ``path``. Returns nothing; on any
    exception the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    _check_destination(path)
    # the name is chosen *before* the file exists, so an interrupt at any instant after this line finds it in
    # the finally below (tempfile.mkstemp returns the name only after creating the file: a Ctrl-C in between
    # left an orphan); O_EXCL makes the creation fail rather than share a name with another writer
    tmp = path.parent / f".{path.name}.{os.urandom(8).hex()}.tmp{suffix}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)                  # created private (0600); the result is an ordinary file
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Yield an open file (``mode`` 'wb' or 'w') on a temporary file that replaces ``path`` when the block
    ends normally (see the module docstring)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()


def atomic_write_text(path, text: str) -> None:
    """``Path(path).write_text(text)`` in UTF-8 (whatever the locale), atomically: readers see the old file or
    the whole new one."""
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text writes text (str), got {type(text).__name__}")
    with atomic_write(path, "wb") as f:
        f.write(text.encode("utf-8"))
