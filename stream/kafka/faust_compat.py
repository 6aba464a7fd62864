"""Every change the worker makes to faust-streaming's internals, in one place.

Each one fixes a measured problem of faust-streaming 0.15 that no public setting
reaches. `pyproject.toml` pins Faust to the 0.15 series; `check_faust` fails loudly at
start-up if an attribute a patch relies on has gone, so a Faust upgrade cannot make a
patch silently stop working.
"""

from __future__ import annotations

import types
from collections import defaultdict
from itertools import count
from typing import Any

import aiokafka
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_driver

from models.errors import TributaryError

# Faust's own bookkeeping, kept for the tests that show what the patch changes.
FAUST_NEW_OFFSET = faust_consumer.Consumer._new_offset


class FaustCompatibilityError(TributaryError):
    """The installed Faust lacks what a patch relies on."""


def check_faust() -> None:
    """Raise FaustCompatibilityError unless the installed Faust has what the patches need."""
    missing = [name for name in ("_new_offset", "seek", "ack", "_drain_messages") if not hasattr(faust_consumer.Consumer, name)]
    if not hasattr(faust_driver, "AIOKafkaConsumerThread") or not hasattr(faust_driver.AIOKafkaConsumerThread, "seek"):
        missing.append("AIOKafkaConsumerThread.seek")
    if not hasattr(faust_driver, "aiokafka"):
        missing.append("faust.transport.drivers.aiokafka.aiokafka")
    if missing:
        raise FaustCompatibilityError(
            f"this faust-streaming lacks {', '.join(missing)}, which tributary's compatibility patches "
            "(stream/kafka/faust_compat.py) rely on; install the version pinned in pyproject.toml")


def first_consecutive_run(offsets: list[int]) -> int:
    """Length of the run of consecutive numbers at the head of a sorted, duplicate-free list.

    >>> first_consecutive_run([4, 5, 6, 9, 10])
    3
    """
    for length, (offset, expected) in enumerate(zip(offsets, count(offsets[0])), start=0):
        if offset != expected:
            return length
    return len(offsets)


def new_offset_without_doubles(self: Any, tp: Any) -> int | None:
    """The offset Faust may commit for `tp`: one past the first run of acked offsets.

    Faust's own `Consumer._new_offset` counts each offset of a "gap" (offsets it never
    saw a record for, such as compacted ones) as acked. When a partition is sought back
    over such a gap (the offset guard does so after a hole, and so does Faust after a
    rebalance), the re-read records are acked as well, each of those offsets then
    appears twice in the list, and Faust's first run of consecutive numbers ends at the
    first double: the commit advances by one offset per commit round (issue #13: a
    400-record hole took ~17 min to commit). Here every offset counts once.

    Otherwise as Faust: gaps fill up to the highest acked offset; with a committed
    offset C and nothing acked at C or C+1, nothing is committed (Faust allows one
    missing offset at the head, where a transaction marker may sit: it never reaches
    a consumer).
    """
    acked = self._acked[tp]
    if not acked:
        return None
    highest = max(acked)
    gaps = self._gap[tp]
    if gaps:
        skipped = sorted(gaps.overlap(0, highest), key=lambda interval: interval.begin)
        if skipped:
            for interval in skipped:
                acked.extend(range(interval.begin, interval.end))
            gaps.chop(0, max(skipped[-1].end - 1, highest + 1))
    unique = sorted(set(acked))
    committed = self._committed_offset[tp]
    if committed and unique[0] - committed > 1:
        acked[:] = unique
        return None
    run = first_consecutive_run(unique)
    last = unique[run - 1]
    acked[:] = unique[run:]
    self._acked_index[tp].difference_update(range(unique[0], last + 1))
    return last + 1


def count_acked_once() -> None:
    """Install `new_offset_without_doubles` as Faust's commit-offset bookkeeping (idempotent)."""
    check_faust()
    faust_consumer.Consumer._new_offset = new_offset_without_doubles  # type: ignore[method-assign]  # the patch


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Make Faust's consumer long-poll at most `max_wait_ms` (Faust hard-codes 1500 ms).

    Faust builds its consumer with `aiokafka.AIOKafkaConsumer(..., fetch_max_wait_ms=1500)`
    through its driver module's `aiokafka` name; this swaps that one name for a namespace
    whose consumer class overrides the wait. Nothing else in the process is touched.
    """
    check_faust()
    original = aiokafka.AIOKafkaConsumer

    def consumer(*args: Any, **kwargs: Any) -> aiokafka.AIOKafkaConsumer:
        kwargs["fetch_max_wait_ms"] = max_wait_ms
        return original(*args, **kwargs)

    namespace = types.SimpleNamespace(**{name: getattr(aiokafka, name) for name in dir(aiokafka) if not name.startswith("__")})
    namespace.AIOKafkaConsumer = consumer
    faust_driver.aiokafka = namespace


class SuspendableReadOffsets(defaultdict):
    """Faust's `Consumer._read_offset` (the last offset delivered per partition), with a
    per-partition suspension for the time between a seek back and the re-read.

    Faust's fetcher loop drops a record below the partition's read offset, adds a "gap"
    (offsets later counted as acked) when a record lands beyond it, and sets it to each
    record it delivers. A seek sets it to the sought offset, but the fetcher goes on
    delivering what it fetched before the seek (the rest of its batch), and each of those
    records sets the read offset past the sought one again: the re-read records then all
    fall below it and are dropped, the guard sees a hole again and seeks again, and so on
    (seen as a worker that "reads again from 1732" while records 1910 ... 2438 kept
    coming). Those stale records also add gaps over offsets not yet re-read, which a
    commit could pass. While a partition is suspended its read offset reads as None:
    Faust drops nothing and adds no gaps there, and the offset guard alone orders its
    records (it holds the stale ones back). The values Faust sets are still kept, so
    the bookkeeping is current when the guard resumes the partition.
    """

    def __init__(self, offsets: Any = ()):
        super().__init__(lambda: None, offsets)
        self.suspended: set[Any] = set()

    def __getitem__(self, tp: Any) -> Any:
        if tp in self.suspended:
            return None
        return super().__getitem__(tp)

    def pop(self, tp: Any, *default: Any) -> Any:  # Faust pops a revoked partition
        self.suspended.discard(tp)
        return super().pop(tp, *default)


def suspendable_read_offsets() -> None:
    """Give every Faust consumer built from now on a `SuspendableReadOffsets` (idempotent).

    Here, at construction: Faust's fetcher loop binds the mapping's methods when it starts.
    """
    check_faust()
    init = faust_consumer.Consumer.__init__
    if getattr(init, "suspendable_read_offsets", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._read_offset = SuspendableReadOffsets(self._read_offset)

    __init__.suspendable_read_offsets = True  # type: ignore[attr-defined]  # marks the patch
    faust_consumer.Consumer.__init__ = __init__  # type: ignore[method-assign]  # the patch


async def seek_back(consumer: Any, tp: Any, offset: int) -> None:
    """Move Faust's consumer to `offset` of `tp` and suspend Faust's read offset there
    until `resume_read_offset`: the offset guard's seek.

    Faust's own `Consumer.seek` runs aiokafka's seek on the calling (event-loop) thread;
    aiokafka's seek deletes the partition's buffered records while the consumer thread
    may be iterating them in `Fetcher.fetched_records`, and a KeyError there stopped the
    fetcher and the worker (seen once in the donors' kill-and-restart test). So aiokafka's
    seek runs on the consumer thread, the only one that touches aiokafka's fetcher.
    """
    read_offsets = consumer._read_offset
    if not isinstance(read_offsets, SuspendableReadOffsets):
        raise FaustCompatibilityError("Faust's consumer was built before suspendable_read_offsets() was installed")
    read_offsets.suspended.add(tp)
    thread = consumer._thread
    await thread.call_thread(thread.seek, tp, offset)


def resume_read_offset(consumer: Any, tp: Any) -> None:
    """The re-read after `seek_back` has reached the pipeline: Faust's read offset counts again."""
    read_offsets = consumer._read_offset
    if isinstance(read_offsets, SuspendableReadOffsets):
        read_offsets.suspended.discard(tp)
