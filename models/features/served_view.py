"""Transaction features exactly as the workers serve them, at any partition count.

Every worker reads every partition of `transactions` and merges them into one state in
one order that all workers agree on: event time, then partition, then offset (see
stream.state.graph_merge). So a transaction's features see every earlier transaction,
whichever partition (and worker) it went through, and the order of ties does not
depend on which worker got there first. Offline code computes the same thing: one
state, fed in that order. With one partition the order is the stream's own (a stream
is sorted by event time), and the partition count only decides ties of equal times.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np
import pyarrow as pa

from models.features.account_state import AccountState
from models.features.partitioning import PartitionOf
from models.features.transactions import TransactionBatch, TransactionFeatureConfig, TransactionFeaturizer

T = TypeVar("T")


def time_key_us(timestamps_s: np.ndarray) -> np.ndarray:
    """Event times as whole microseconds: the first part of the merge order (worker and offline alike)."""
    return np.round(np.asarray(timestamps_s, dtype=np.float64) * 1e6).astype(np.int64)


def time_key_us_of(timestamp_s: float) -> int:
    """`time_key_us` of one time (the same rounding, half to even), without an array.

    >>> time_key_us_of(1.7e9 + 0.0000015) == int(time_key_us(np.array([1.7e9 + 0.0000015]))[0])
    True
    """
    return round(timestamp_s * 1e6)


def merge_order(timestamps_s: np.ndarray, partitions: np.ndarray) -> np.ndarray:
    """Positions of time-sorted events in merge order: by time, ties by partition, then as given.

    >>> merge_order(np.array([5.0, 5.0, 6.0]), np.array([2, 1, 0])).tolist()
    [1, 0, 2]
    """
    return np.lexsort((np.arange(len(partitions)), partitions, time_key_us(timestamps_s)))


def merge_partitions(sequences: dict[int, list[T]], time_us: Callable[[T], int]) -> list[T]:
    """Each partition's items in its own order, merged by (time, partition) of their heads:
    the workers' merge when every record is there (stream.state.graph_merge).

    >>> merge_partitions({0: [3, 9], 1: [1, 2, 10]}, time_us=lambda t: t)
    [1, 2, 3, 9, 10]
    """
    keyed = [[((time_us(item), p), item) for item in items] for p, items in sorted(sequences.items())]
    return [item for _, item in heapq.merge(*keyed, key=lambda pair: pair[0])]


def tie_aligned(batches: Iterable[pa.RecordBatch], time_column: str = "event_time") -> Iterator[pa.Table]:
    """The same rows in chunks that never split a run of equal event times, so that
    ordering each chunk by `merge_order` orders the whole stream."""
    carry: pa.Table | None = None
    for batch in batches:
        table = pa.Table.from_batches([batch]) if carry is None else pa.concat_tables([carry, pa.Table.from_batches([batch])])
        times = table.column(time_column).cast(pa.int64()).to_numpy()
        if not len(times):
            continue
        last_run = int(np.searchsorted(times, times[-1], side="left"))  # first row of the trailing run
        if last_run == 0:
            carry = table
            continue
        yield table.slice(0, last_run)
        carry = table.slice(last_run)
    if carry is not None and carry.num_rows:
        yield carry


class ServedViewFeaturizer:
    """`TransactionFeaturizer.featurize_columns` over a whole stream, in the workers' merge order.

    Give it the stream in order, in chunks that do not split equal times (`tie_aligned`).

    >>> f = ServedViewFeaturizer(TransactionFeatureConfig(window=4, fanout1=2, fanout2=2), partitions=4)
    >>> batch = f.featurize_columns(["alice", "bob", "alice"], ["bob", "alice", "bob"], np.ones(3),
    ...                             1.7e9 + np.arange(3.0), np.ones(3, dtype=np.int64), np.zeros(3, dtype=np.int64))
    >>> batch.seq_mask[:, 0].sum(axis=1).tolist()  # partitions 1 and 2, yet bob sees alice's payment
    [0.0, 1.0, 2.0]
    """

    def __init__(self, config: TransactionFeatureConfig, partitions: int, capacity: int = 1 << 16):
        self.config = config
        self.partitions = partitions
        self.partition_of = PartitionOf(partitions)
        self.featurizer = TransactionFeaturizer(AccountState(window=config.window, capacity=capacity), config)

    def featurize_columns(
        self,
        sources: list[str],
        destinations: list[str],
        amounts: np.ndarray,
        timestamps_s: np.ndarray,
        type_codes: np.ndarray,
        channel_codes: np.ndarray,
        event_ids: list[str | None] | None = None,
    ) -> TransactionBatch:
        """Features of each transaction, in input order, from every transaction merged before it."""
        order = merge_order(timestamps_s, self.partition_of(sources))
        picked = order.tolist()
        batch = self.featurizer.featurize_columns(
            [sources[i] for i in picked], [destinations[i] for i in picked], np.asarray(amounts)[order],
            np.asarray(timestamps_s)[order], np.asarray(type_codes)[order], np.asarray(channel_codes)[order],
            event_ids=[event_ids[i] for i in picked] if event_ids is not None else None,
        )
        return batch.take(np.argsort(order, kind="stable"))

    def accounts(self) -> int:
        return len(self.featurizer.state)
