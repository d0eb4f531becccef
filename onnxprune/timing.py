"""Wall time per stage, summed over a stage's repeated entries."""

from __future__ import annotations

import contextlib
import time

from .memory import release_freed_memory


class Timer:
    """``with timer("prune"): ...`` adds the block's wall time to ``times["prune"]`` (seconds, 3 decimals);
    with ``release`` the freed heap goes back to the OS after each block (a stage's temporaries would
    otherwise stay in the resident set through the later stages)."""

    def __init__(self, release: bool = True):
        self.times: dict[str, float] = {}
        self.release = release

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - start, 3)
            if self.release:
                release_freed_memory()
