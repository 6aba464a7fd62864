"""Transaction-feature state, one independent `AccountState` per input partition.

State follows its partition: a worker holds state only for the partitions Kafka
assigned to it, restores a partition's state from that partition of the changelog, and
drops it when the partition moves away. The consequence, by design: features of a
transaction see the history *of its partition* (its source account's transactions, and
the counterparties as seen in them). With one partition that is the whole graph; with
P partitions a counterparty's activity in other partitions is invisible. Training can
simulate the same view (`models.features.partitioning`) so that served and trained
features agree.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from models.features.account_state import AccountState
from models.features.transactions import TransactionBatch, TransactionFeatureConfig, TransactionFeaturizer
from stream.state.commit_protocol import PublishedOffsets, Record, decode_entity_key, encode_entity_key, marker_topic

# The accounts table has one input topic (transactions): its markers are topic 0's.
TRANSACTIONS_TOPIC = 0


class PartitionedAccounts:
    """Implements `stream.state.commit_protocol.PartitionedState` for account features."""

    def __init__(self, features: TransactionFeatureConfig, initial_capacity: int = 1024):
        self.features = features
        self.initial_capacity = initial_capacity
        self._featurizers: dict[int, TransactionFeaturizer] = {}
        self._changed: dict[int, list[np.ndarray]] = {}  # partition -> rows touched since take_changes
        self.published = PublishedOffsets()

    def featurizer(self, partition: int) -> TransactionFeaturizer:
        featurizer = self._featurizers.get(partition)
        if featurizer is None:
            state = AccountState(window=self.features.window, capacity=self.initial_capacity)
            featurizer = self._featurizers[partition] = TransactionFeaturizer(state, self.features)
        return featurizer

    def featurize(self, partition: int, *columns, **options) -> TransactionBatch:
        """`TransactionFeaturizer.featurize_columns` on this partition's state; the accounts
        it touched become changes (see `take_changes`)."""
        batch = self.featurizer(partition).featurize_columns(*columns, **options)
        self._changed.setdefault(partition, []).append(batch.rows.ravel())
        return batch

    def state(self, partition: int) -> AccountState:
        return self.featurizer(partition).state

    @property
    def partitions(self) -> list[int]:
        return sorted(self._featurizers)

    def drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._featurizers.pop(partition, None)
            self._changed.pop(partition, None)
            self.published.drop(partition)

    def restore(self, partition: int, key: bytes, blob: bytes) -> None:
        topic = marker_topic(key)
        if topic is not None:
            self.published.restore(topic, partition, blob)
        else:
            self.state(partition).import_account(decode_entity_key(key), blob)

    def take_changes(self, partition: int) -> list[Record]:
        rows = self._changed.pop(partition, [])
        return self._export_rows(partition, np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64))

    def export(self, partition: int, account_keys: Iterable[int]) -> list[Record]:
        """Changelog records for these accounts of one partition (each account once)."""
        state = self.state(partition)
        rows = [state.lookup(k) for k in sorted(set(account_keys))]
        return self._export_rows(partition, np.array([r for r in rows if r], dtype=np.int64))

    def _export_rows(self, partition: int, rows: np.ndarray) -> list[Record]:
        """Changelog records for these state rows of one partition (each row once)."""
        rows = np.unique(rows[rows > 0])
        if not len(rows):
            return []
        keys, blobs = self.state(partition).export_rows(rows)
        return [(encode_entity_key(int(k)), blob) for k, blob in zip(keys.tolist(), blobs)]

    def items(self, partition: int) -> Iterator[Record]:
        state = self.state(partition)
        yield from self._export_rows(partition, np.arange(1, len(state) + 1))

    def entities(self) -> dict[int, int]:
        return {p: len(f.state) for p, f in self._featurizers.items()}
