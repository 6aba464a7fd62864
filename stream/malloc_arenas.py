"""Two malloc arenas for the worker process, not glibc's default of eight per core.

glibc gives each thread that allocates under contention an arena of its own and seldom
returns their freed memory. The worker allocates from several threads (the scoring
thread, torch's, LightGBM's, the event loop), and an alert's evidence scores up to 101
variants of its transaction, arrays of varying size each time
(stream.scoring.alert_evidence). Measured with `tributary bench` (hybrid, 7-day
synthetic world, this 2-core machine): the worker's peak RSS was 1,754 and 1,773 MB with
the evidence, 1,094 MB without it, and 926 MB with the evidence and two arenas, at the
same throughput within the runs' noise. MALLOC_ARENA_MAX, when set, wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap the process's malloc arenas, before it starts threads; False where it cannot
    (not glibc) or need not (MALLOC_ARENA_MAX set, the operator's choice)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
