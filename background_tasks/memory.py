"""The resident memory of this process, for ``--max-memory``."""

from __future__ import annotations

import os
import sys


def resident_mb() -> float | None:
    """Return this process's resident memory in MB, or None where it cannot be read.

    Linux: the current resident set (``/proc/self/statm``). Elsewhere on POSIX: the peak
    resident set (``getrusage``), which never goes down, so a worker recycled for memory there
    is recycled for its peak. Windows: None (no limit is applied).
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Bytes on macOS, kilobytes on Linux and the BSDs.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


__all__ = ["resident_mb"]
