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

The state is a function of the topic. A worker with a checkpoint directory
(stream.state.graph_checkpoint) snapshots it every `checkpoint_every_s`; a restart loads
the newest snapshot, checks that the topic still holds the records it ends with, and
reads on from there. Where a needed transaction was merged into every snapshot but
never published, the merge starts again from the newest snapshot before it, else from
the beginning of every partition.
"""

from __future__ import annotations

import logging
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
from stream.state.graph_checkpoint import Checkpoint, GraphCheckpoints, MergePosition, record_digest

log = logging.getLogger("tributary.worker")

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

    def rewind(self, offsets: list[int] | None = None) -> None:
        """Read every partition again from `offsets[p]` (None: its first offset); blocks until it does."""

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
                 stopping: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
                 checkpoints: GraphCheckpoints | None = None, checkpoint_every_s: float = 300.0):
        self.config = config
        self.clock = clock
        self.feed = feed
        self.decode = decode
        self.scored_above = scored_above
        self.idle_s = idle_s
        self.stopping = stopping
        self._capacity = capacity
        self.rebuilds = 0  # times the merge started again (from a checkpoint, or from the beginning)
        self.late = 0  # records merged after a later one (a partition out of time order, or idle too long)
        self.merged = 0  # records in the state (restored from a checkpoint, then merged)
        self.restored = 0  # records the last checkpoint restored had (0: none restored)
        self.restore_s = 0.0  # how long loading it took
        self.waited_s = 0.0  # time spent waiting for the feed (all calls)
        self.checkpoints = checkpoints
        self.checkpoint_every_s = checkpoint_every_s
        self._checkpointed_at = clock()
        self._reset()
        self._restore_first = checkpoints is not None  # at the first call, from the scoring thread

    def _reset(self) -> None:
        self.state = AccountState(window=self.config.window, capacity=self._capacity)
        self._featurizer = TransactionFeaturizer(self.state, self.config)
        P = self.feed.partitions
        self.next_offset = [0] * P  # per partition: the offset after the last merged record
        self._last_time: list[int | None] = [None] * P  # per partition: time of its last merged record
        self._last_key: tuple[int, int] = (-(1 << 62), -1)
        # Per partition, what a checkpoint remembers of the last merged record: its value
        # (digested when a checkpoint is written), or the digest a checkpoint restored.
        self._last_value: list[bytes | None] = [None] * P
        self._last_digest: list[str | None] = [None] * P
        # Restored partitions whose last record is to be read again and compared: p -> (offset, digest).
        self._verify: dict[int, tuple[int, str]] = {}
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
        self._restore_once()
        if events:
            self._decoded.update((k, e) for k, e in events.items() if k[1] >= self.next_offset[k[0]])
        if any(k not in self._pending and k[1] < self.next_offset[k[0]] for k in wanted):
            self._rebuild(wanted)  # merged before this worker scored the partition: no features were kept
        self._merge_until({k for k in wanted if k not in self._pending})
        taken = self._take(wanted)
        self._checkpoint_when_due()
        return taken

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

    def _rebuild(self, wanted: list[Key]) -> None:
        """Start again from the newest checkpoint before every wanted transaction, else from scratch."""
        self.rebuilds += 1
        first: dict[int, int] = {}
        for partition, offset in wanted:
            first[partition] = min(offset, first.get(partition, offset))
        if not self._restore_newest(lambda position: self._passes_nothing_unpublished(position) and all(
                position.next_offset[p] <= o for p, o in first.items())):
            self._from_scratch()

    def _from_scratch(self) -> None:
        self.restored = 0
        self.feed.rewind()
        self._reset()

    # -- checkpoints -----------------------------------------------------------------

    def _restore_once(self) -> None:
        """At the first call (on the scoring thread, once the assignment is known): the newest
        checkpoint that passes nothing this worker has yet to score, if any."""
        if self._restore_first:
            self._restore_first = False
            self._restore_newest(self._passes_nothing_unpublished)

    def _restore_newest(self, fits: Callable[[MergePosition], bool]) -> bool:
        """Load the newest checkpoint whose position `fits`; False when there is none."""
        if self.checkpoints is None:
            return False
        started = time.perf_counter()
        for checkpoint in self.checkpoints.newest_first():
            if len(checkpoint.position.next_offset) == self.feed.partitions and fits(checkpoint.position):
                state = self.checkpoints.load(checkpoint, self.config.window)
                if state is not None:
                    self._restore(checkpoint, state)
                    self.restore_s = time.perf_counter() - started
                    log.info("graph restored from %s: %d records", checkpoint.path, self.restored)
                    return True
        return False

    def _passes_nothing_unpublished(self, position: MergePosition) -> bool:
        """Whether a checkpoint stops before every record this worker has yet to score: in
        each partition it scores, at or below the published marker."""
        for partition, next_offset in enumerate(position.next_offset):
            marker = self.scored_above(partition)
            if marker is not None and next_offset > marker + 1:
                return False
        return True

    def _restore(self, checkpoint: Checkpoint, state: AccountState) -> None:
        position = checkpoint.position
        self._reset()
        self.state = state
        self._featurizer = TransactionFeaturizer(state, self.config)
        self.next_offset = list(position.next_offset)
        self._last_time = list(position.last_time)
        self._last_key = position.last_key
        self._last_digest = list(position.last_digest)
        self.merged = self.restored = position.merged
        # Each partition is read again from its last merged record, to check it is the same.
        self._verify = {p: (o - 1, d) for p, (o, d) in enumerate(zip(position.next_offset, position.last_digest))
                        if o > 0 and d is not None}
        self.feed.rewind([max(o - 1, 0) for o in position.next_offset])

    def _check_restored(self) -> None:
        """Read the last merged record of each restored partition again; start from scratch when
        one differs from the checkpoint's or is gone (the topic is not the one it was built from)."""
        while self._verify:
            for partition, (offset, digest) in list(self._verify.items()):
                record = self.feed.peek(partition)
                if record is None and not self.feed.caught_up(partition):
                    continue  # on the way
                if record is not None and record.offset == offset and record_digest(record.value) == digest:
                    self.feed.pop(partition)
                    del self._verify[partition]
                    continue
                log.warning("the graph checkpoint does not match partition %d of the topic (offset %d %s); "
                            "reading every partition from the start", partition, offset,
                            "is gone" if record is None else "differs")
                self.rebuilds += 1
                self._from_scratch()
                return
            if self._verify:
                if self.stopping():
                    raise StageInterrupted("the worker is stopping while the graph checkpoint is checked")
                self.feed.wait(0.02)

    def _checkpoint_when_due(self) -> None:
        if self.checkpoints is None or self._verify or self.clock() - self._checkpointed_at < self.checkpoint_every_s:
            return
        self.checkpoint()

    def checkpoint(self) -> bool:
        """Snapshot the state and position now; written on a thread of its own (False: one
        is still being written, or there is nowhere to write)."""
        if self.checkpoints is None or self._verify:
            return False
        self._checkpointed_at = self.clock()
        return self.checkpoints.save_in_background(self.state.to_arrays(), self.position())

    def position(self) -> MergePosition:
        """Where the merge stands, as a checkpoint records it."""
        digests = [record_digest(v) if v is not None else d for v, d in zip(self._last_value, self._last_digest)]
        return MergePosition(list(self.next_offset), list(self._last_time), digests, self._last_key, self.merged)

    def record_through(self, last: dict[int, int]) -> None:
        """Merge until each partition's record at offset `last[p]` is in the state (no
        features: for measuring the merge alone, tributary.bench_restart)."""
        self._restore_once()
        self._merge_until({(p, o) for p, o in last.items() if o >= self.next_offset[p]})

    def _merge_until(self, needed: set[Key]) -> None:
        self._check_restored()
        # What the stage asks for is featurised whatever the markers say meanwhile: the event
        # loop moves partitions and restores markers while this thread merges (a rebalance).
        asked = set(needed)
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
            self._last_value[partition] = record.value
            key = (head.time_us, partition)
            if key < self._last_key:
                self.late += 1
            self._last_key = max(self._last_key, key)
            self.merged += 1
            needed.discard((partition, record.offset))
            if event is None:
                continue
            marker = self.scored_above(partition)
            run.append((record, event, (partition, record.offset) in asked
                        or (marker is not None and record.offset > marker)))
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
