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
from models.features.transactions import TransactionFeatureConfig, TransactionFeaturizer

_KEY_BYTES = 8
# Changelog key of a partition's "outputs published up to offset" marker; 9 bytes, so it
# never collides with an 8-byte account key.
PUBLISHED_MARKER_KEY = b"\xffpublish"


def encode_key(account_key: int) -> bytes:
    return account_key.to_bytes(_KEY_BYTES, "little", signed=True)


def decode_key(raw: bytes) -> int:
    return int.from_bytes(raw, "little", signed=True)


class PartitionedAccounts:
    def __init__(self, features: TransactionFeatureConfig, initial_capacity: int = 1024):
        self.features = features
        self.initial_capacity = initial_capacity
        self._featurizers: dict[int, TransactionFeaturizer] = {}
        # partition -> highest input offset whose outputs are published (-1: none)
        self.published: dict[int, int] = {}

    def featurizer(self, partition: int) -> TransactionFeaturizer:
        featurizer = self._featurizers.get(partition)
        if featurizer is None:
            state = AccountState(window=self.features.window, capacity=self.initial_capacity)
            featurizer = self._featurizers[partition] = TransactionFeaturizer(state, self.features)
        return featurizer

    def state(self, partition: int) -> AccountState:
        return self.featurizer(partition).state

    @property
    def partitions(self) -> list[int]:
        return sorted(self._featurizers)

    def drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._featurizers.pop(partition, None)
            self.published.pop(partition, None)

    def restore(self, partition: int, key: bytes, blob: bytes) -> None:
        """Apply one changelog record (the latest wins, as in any compacted changelog)."""
        if key == PUBLISHED_MARKER_KEY:
            self.published[partition] = int.from_bytes(blob, "little", signed=True)
        else:
            self.state(partition).import_account(decode_key(key), blob)

    def published_marker(self, partition: int, offset: int) -> tuple[bytes, bytes]:
        """The changelog record saying outputs up to `offset` of `partition` are published.

        Written after the outputs are flushed and before the accounts they changed, in
        the same changelog partition, so the order survives: if an account's new state
        is in the changelog, so is the marker that covers the event that changed it.
        """
        self.published[partition] = max(self.published.get(partition, -1), offset)
        return PUBLISHED_MARKER_KEY, offset.to_bytes(8, "little", signed=True)

    def export(self, partition: int, account_keys: Iterable[int]) -> list[tuple[bytes, bytes]]:
        """Changelog records for these accounts of one partition (each account once)."""
        state = self.state(partition)
        rows = [state.lookup(k) for k in sorted(set(account_keys))]
        return self.export_rows(partition, np.array([r for r in rows if r], dtype=np.int64))

    def export_rows(self, partition: int, rows: np.ndarray) -> list[tuple[bytes, bytes]]:
        """Changelog records for these state rows of one partition (each row once)."""
        rows = np.unique(rows[rows > 0])
        if not len(rows):
            return []
        keys, blobs = self.state(partition).export_rows(rows)
        return [(encode_key(int(k)), blob) for k, blob in zip(keys.tolist(), blobs)]

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        state = self.state(partition)
        yield from self.export_rows(partition, np.arange(1, len(state) + 1))

    def entities(self) -> dict[int, int]:
        return {p: len(f.state) for p, f in self._featurizers.items()}
