"""Keep a broker outage from flooding the log.

While the broker is away, aiokafka and Faust log every failed reconnect: about 50
lines a second were measured (issue #13), which buries everything else and fills
disks. `RepeatsLimit` lets the first record of each message template through and
holds back its repeats for `interval_s`; the next one let through says how many were
held back. Only the client libraries' loggers are limited: the worker's own messages
are rare by construction (publishing retries back off to 30 s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LIMITED_LOGGERS = ("aiokafka", "faust", "mode")


class RepeatsLimit(logging.Filter):
    def __init__(self, interval_s: float = 10.0, loggers: tuple[str, ...] = LIMITED_LOGGERS,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.loggers = loggers
        self._clock = clock
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}  # template -> (last let through, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.loggers):
            return True
        template = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        seen = self._last.get(template)
        if seen is not None and now - seen[0] < self.interval_s:
            self._last[template] = (seen[0], seen[1] + 1)
            return False
        self._last[template] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} ({seen[1]} more like this in the last {now - seen[0]:.0f} s)"
        return True


def limit_repeats(interval_s: float = 10.0) -> RepeatsLimit:
    """Install one limit on every handler of the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        for existing in handler.filters:
            if isinstance(existing, RepeatsLimit):
                return existing
    limit = RepeatsLimit(interval_s)
    for handler in root.handlers:
        handler.addFilter(limit)
    return limit
