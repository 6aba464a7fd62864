"""Progress of long jobs: a live bar on a terminal, plain lines anywhere else.

tqdm redraws its bar with carriage returns; in `docker compose logs`, a CI log or a
file, every redraw becomes part of one ever longer line. Off a terminal the same
progress is therefore written as a whole line now and then (at most every 30 s, and
at the end), which a log keeps readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Generic, TypeVar

from tqdm import tqdm

Item = TypeVar("Item")

LINE_INTERVAL_S = 30.0


def progress(iterable: Iterable[Item] | None = None, *, desc: str, unit: str, total: int | None = None,
             enabled: bool = True, leave: bool = True, file: IO[str] | None = None) -> Any:
    """A tqdm-like bar (iterate over it, or `update(n)` and `close()`; a context manager)."""
    out = file or sys.stderr
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if _is_terminal(out):
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=out, mininterval=0.5)
    return LineProgress(iterable, desc=desc, unit=unit, total=total, file=out, leave=leave)


def _is_terminal(out: IO[str]) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


class LineProgress(Generic[Item]):
    """Progress as lines: `desc: 1,200/5,000 rows (24%), 3 s`."""

    def __init__(self, iterable: Iterable[Item] | None, *, desc: str, unit: str, total: int | None, file: IO[str],
                 leave: bool = True, interval_s: float = LINE_INTERVAL_S):
        self._iterable = iterable
        self._desc, self._unit, self._file, self._leave = desc, unit, file, leave
        self._interval_s = interval_s
        self.total = total if total is not None else _length(iterable)
        self.n = 0
        self._written: int | None = None
        self._started = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator[Item]:
        if self._iterable is None:
            raise TypeError("nothing to iterate: this progress was made with a total only")
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            self._write()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._leave and self._written != self.n:
                self._write()

    def __enter__(self) -> LineProgress[Item]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> None:
        self._written = self.n
        done = f"{self.n:,}/{self.total:,}" if self.total else f"{self.n:,}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self._desc}: {done} {self._unit}{share}, {time.monotonic() - self._started:.0f} s",
              file=self._file, flush=True)


def _length(iterable: Iterable[Any] | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
