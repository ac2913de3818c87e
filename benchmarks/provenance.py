"""Where a benchmark figure comes from: the commit it was measured at (one helper for every results file)."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """Short hash of HEAD, plus " (+ uncommitted changes)" when tracked files other than the results files
    differ from it (the figures would then not be reproducible from the commit alone); "unknown" without git."""
    try:
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/RESULTS*.md"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return c + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
