"""The whole transaction graph on every worker: all partitions merged in one agreed order.

A transaction's features need both accounts' histories and their neighbours', and those
live in every partition (a transaction is keyed by its source account). So each worker
reads every partition of `transactions` (stream.state.graph_feed) and records every
transaction into one state, in one order all workers agree on: by event time, ties by
partition number, each partition in offset order. A worker scores only the partitions
Kafka assigned to it, but reads the state as it is just before each of them in that
order, so its features equal those of `tributary evaluate --partitions P`
(models.features.served_view) whichever worker scores the transaction, and a rescored
transaction after a crash gets the same features again.

The merge takes the partition whose next record comes first. It may pass a record of
partition p while another partition q has nothing buffered only if q's next record
cannot come before it: q's last record is later (partitions are in time order, as
producers write them). Otherwise it waits for q, for at most `idle_s` when q is at
its end offset (an idle partition must not stop the others); a record that then comes
earlier than what was merged is merged late, and counted.

Transactions of assigned partitions above their "published" marker are featurised when
merged, and kept until the stage asks for them (the agent delivers them a little later
than this merge reads them, or a little earlier). All others are only recorded. A
partition assigned after this merge passed some of its unpublished records has no
features for them: the merge starts again from the beginning of every partition, the
exact and slow way (counted in `rebuilds`).

The state is not written anywhere: it is a function of the topic, rebuilt by reading it
from the start when a worker starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.contracts import TransactionEvent
from models.features.account_state import AccountState
from models.features.served_view import time_key_us_of
from models.features.transactions import RawTransaction, TransactionBatch, TransactionFeatureConfig, TransactionFeaturizer
from stream.pipeline.records import RawRecord, StageInterrupted

Key = tuple[int, int]  # (partition, offset)
RUN = 2048  # transactions per kernel call while merging


class GraphFeed(Protocol):
    """Every partition's records in offset order, as fetched (stream.state.graph_feed)."""

    partitions: int

    def peek(self, partition: int) -> RawRecord | None: ...

    def pop(self, partition: int) -> RawRecord: ...

    def caught_up(self, partition: int) -> bool:
        """Nothing more in the partition right now: everything up to its end offset is buffered."""

    def wait(self, timeout_s: float) -> None:
        """Until new records arrive (or the timeout)."""

    def rewind(self) -> None:
        """Read every partition again from its first offset (blocks until it does)."""

    def buffered(self) -> int:
        """Records fetched and not merged yet."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class _Head:
    record: RawRecord
    event: TransactionEvent | None  # None: invalid; its owner dead-letters it, nobody records it
    time_us: int


@dataclass
class _Pending:
    batch: TransactionBatch  # features of the transactions featurised in one kernel call
    keys: dict[Key, int]  # which row is whose


class GraphMerge:
    """One state for the whole graph, fed by the merge, read by the transaction stage.

    `decode(record)` gives the event or None, exactly as the stage decides it.
    `scored_above(partition)` is the partition's published marker when this worker scores
    the partition (transactions above it get features), None when it does not.
    """

    def __init__(self, config: TransactionFeatureConfig, feed: GraphFeed,
                 decode: Callable[[RawRecord], TransactionEvent | None],
                 scored_above: Callable[[int], int | None], idle_s: float = 1.0, capacity: int = 1 << 14,
                 stopping: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.feed = feed
        self.decode = decode
        self.scored_above = scored_above
        self.idle_s = idle_s
        self.stopping = stopping
        self._capacity = capacity
        self.rebuilds = 0  # times the merge started again from the beginning
        self.late = 0  # records merged after a later one (a partition out of time order, or idle too long)
        self.merged = 0  # records merged since the last rebuild
        self.waited_s = 0.0  # time spent waiting for the feed (all calls)
        self._reset()

    def _reset(self) -> None:
        self.state = AccountState(window=self.config.window, capacity=self._capacity)
        self._featurizer = TransactionFeaturizer(self.state, self.config)
        P = self.feed.partitions
        self.next_offset = [0] * P  # per partition: the offset after the last merged record
        self._last_time: list[int | None] = [None] * P  # per partition: time of its last merged record
        self._last_key: tuple[int, int] = (-(1 << 62), -1)
        self._heads: dict[int, _Head] = {}
        self._idle_since: dict[int, float] = {}
        self._pending: dict[Key, _Pending] = {}
        # Records of scored partitions decoded by one side (the stage, the merge), kept for the
        # other, so that a record is decoded once.
        self._decoded: dict[Key, TransactionEvent] = {}
        self.merged = 0

    # -- what the stage calls --------------------------------------------------------

    def kept(self) -> int:
        """Transactions featurised or decoded ahead of the stage, waiting for it to ask."""
        return len(self._pending) + len(self._decoded)

    def decoded(self, key: Key) -> TransactionEvent | None:
        """The event of a record of a scored partition that the merge has decoded already."""
        return self._decoded.pop(key, None)

    def features_for(self, wanted: list[Key], events: dict[Key, TransactionEvent] | None = None) -> TransactionBatch:
        """Features of these transactions (partition, offset), in this order, each from the
        merged state just before it. Every one must be valid (decoded) and above its
        partition's published marker, in a partition this worker scores. `events`: those
        the caller has decoded, so the merge need not decode them again."""
        if events:
            self._decoded.update((k, e) for k, e in events.items() if k[1] >= self.next_offset[k[0]])
        if any(k not in self._pending and k[1] < self.next_offset[k[0]] for k in wanted):
            self._rebuild()  # merged before this worker scored the partition: no features were kept
        self._merge_until({k for k in wanted if k not in self._pending})
        return self._take(wanted)

    def forget(self, partitions: list[int]) -> None:
        """These partitions are no longer scored here: drop their kept features."""
        gone = set(partitions)
        for kept in (self._pending, self._decoded):
            for key in [k for k in kept if k[0] in gone]:
                del kept[key]

    def prune(self, partition: int, published: int) -> None:
        """Kept features of transactions at or below the marker will never be asked for."""
        for kept in (self._pending, self._decoded):
            for key in [k for k in kept if k[0] == partition and k[1] <= published]:
                del kept[key]

    # -- the merge -------------------------------------------------------------------

    def _rebuild(self) -> None:
        self.rebuilds += 1
        self.feed.rewind()
        self._reset()

    def _merge_until(self, needed: set[Key]) -> None:
        run: list[tuple[RawRecord, TransactionEvent, bool]] = []
        while needed:
            head = self._next()
            if head is None:
                self._flush(run)
                run = []
                if self.stopping():
                    raise StageInterrupted("the worker is stopping while the batch waits for the graph feed")
                started = time.perf_counter()
                self.feed.wait(0.02)
                self.waited_s += time.perf_counter() - started
                continue
            record, event = head.record, head.event
            partition = record.partition
            self.next_offset[partition] = record.offset + 1
            self._last_time[partition] = head.time_us
            key = (head.time_us, partition)
            if key < self._last_key:
                self.late += 1
            self._last_key = max(self._last_key, key)
            self.merged += 1
            needed.discard((partition, record.offset))
            if event is None:
                continue
            marker = self.scored_above(partition)
            run.append((record, event, marker is not None and record.offset > marker))
            if len(run) >= RUN:
                self._flush(run)
                run = []
        self._flush(run)

    def _head(self, partition: int) -> _Head | None:
        head = self._heads.get(partition)
        if head is None:
            record = self.feed.peek(partition)
            if record is None:
                return None
            key = (partition, record.offset)
            event = self._decoded.pop(key, None)
            if event is None:
                event = self.decode(record)
                if event is not None and self.scored_above(partition) is not None:
                    self._decoded[key] = event  # the stage will decode it too: keep it
            if event is not None:
                time_us = time_key_us_of(event.event_time.timestamp())
            else:  # an invalid record changes nothing, so any place will do: where it stands
                last = self._last_time[partition]
                time_us = last if last is not None else -(1 << 62)
            head = self._heads[partition] = _Head(record, event, time_us)
        return head

    def _next(self) -> _Head | None:
        """Pop the record that comes next in the merge order, or None to wait for more."""
        first, best = -1, None
        empty = []
        for p in range(self.feed.partitions):
            head = self._head(p)
            if head is None:
                empty.append(p)
                continue
            if self._idle_since:
                self._idle_since.pop(p, None)  # it has records again: its idle time starts anew
            if best is None or head.time_us < best.time_us:  # ties: the lower partition, seen first
                first, best = p, head
        if best is None:
            return None
        if empty:
            now = self.clock()
            waiting = False
            for q in empty:
                last = self._last_time[q]
                if last is not None and (last > best.time_us or (last == best.time_us and q > first)):
                    continue  # q's next record comes after this one
                if not self.feed.caught_up(q):
                    return None  # q has records on the way
                # Every idle partition's clock starts now, not after the one before it has
                # timed out: idle partitions cost `idle_s` together, not one after another.
                waiting |= now - self._idle_since.setdefault(q, now) < self.idle_s
            if waiting:
                return None
        del self._heads[first]
        self.feed.pop(first)
        return best

    def _flush(self, run: list[tuple[RawRecord, TransactionEvent, bool]]) -> None:
        if not run:
            return
        featurize = np.array([f for _, _, f in run], dtype=np.bool_)
        batch = self._featurizer.featurize([RawTransaction.from_event(e) for _, e, _ in run], featurize)
        kept = np.flatnonzero(featurize)
        if len(kept):
            pending = _Pending(batch.take(kept), {})
            for row, i in enumerate(kept.tolist()):
                key = (run[i][0].partition, run[i][0].offset)
                pending.keys[key] = row
                self._pending[key] = pending

    def _take(self, wanted: list[Key]) -> TransactionBatch:
        """The kept rows of `wanted`, in order, released."""
        parts: list[TransactionBatch] = []
        current: _Pending | None = None
        rows: list[int] = []
        for key in wanted:
            pending = self._pending.pop(key)
            if pending is not current:
                if current is not None:
                    parts.append(current.batch.take(np.array(rows, dtype=np.int64)))
                current, rows = pending, []
            rows.append(pending.keys[key])
        if current is not None:
            parts.append(current.batch.take(np.array(rows, dtype=np.int64)))
        if not parts:
            return self._featurizer.featurize([])
        return TransactionBatch.concat(parts)
