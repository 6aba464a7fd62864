"""The accounts table: per partition of `transactions`, how far outputs are published.

The transaction features' state is the whole graph, rebuilt on every worker from the
topic itself (stream.state.graph_merge), so this table holds no accounts: only the
commit protocol's markers (stream.state.commit_protocol), one per partition, restored
from the changelog when a partition is assigned. A redelivered transaction at or below
its partition's marker has its outputs already and is not scored again. (Changelogs
written before the merge also hold account rows; restoring skips them.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from stream.state.commit_protocol import PublishedOffsets, Record, marker_topic

# The accounts table has one input topic (transactions): its markers are topic 0's.
TRANSACTIONS_TOPIC = 0


class PublishedMarkers:
    """Implements `stream.state.commit_protocol.PartitionedState` for the accounts table.

    `accounts()` counts the accounts of the merged graph, for the state metric.
    """

    def __init__(self, accounts: Callable[[], int] = lambda: 0):
        self.published = PublishedOffsets()
        self._accounts = accounts

    @property
    def partitions(self) -> list[int]:
        """The partitions with a marker: all this table holds."""
        return sorted({partition for _, partition in self.published.as_dict()})

    def take_changes(self, partition: int) -> list[Record]:
        return []

    def restore(self, partition: int, key: bytes, value: bytes) -> None:
        topic = marker_topic(key)
        if topic is not None:
            self.published.restore(topic, partition, value)

    def export(self, partition: int, keys: Iterable[int]) -> list[Record]:
        return []

    def items(self, partition: int) -> Iterator[Record]:
        yield from ()

    def entities(self) -> dict[int, int]:
        return {0: self._accounts()}

    def drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.published.drop(partition)
