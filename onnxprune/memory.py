"""Process memory: the peak growth of a call, and handing freed heap back to the OS."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable
from pathlib import Path


def _status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_growth(fn: Callable[[], object]) -> tuple[object, float | None]:
    """``fn()``'s result and how far it raised the process's resident memory at its peak, in MB.

    Linux: writing 5 to /proc/self/clear_refs resets the high-water mark VmHWM to the current RSS, so
    VmHWM afterwards is this call's peak. Where that is refused, the RSS growth after the call is
    reported instead (a lower bound); None where /proc is missing.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        peak_field = "VmHWM"
    except OSError:
        peak_field = "VmRSS"
    before = _status_kb("VmRSS")
    result = fn()
    after = _status_kb(peak_field)
    if before is None or after is None:
        return result, None
    return result, max(0, after - before) * 1024 / 1e6


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them, so a stage's temporaries would stay in the
    resident set, and the next model's growth would hide in reused pages). No-op off glibc."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
