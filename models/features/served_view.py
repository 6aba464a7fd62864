"""Transaction features exactly as a worker with P input partitions computes them.

The worker keeps one `AccountState` per input partition of `transactions` (keyed by
source account; see stream.state.partitioned_accounts), so a transaction's features see
the history of its own partition only. Offline code that reports a model's quality must
see the same thing, or it reports a model nobody serves: this featurizer splits each
chunk of a stream by Kafka's partitioner, runs one featurizer per partition in the
chunk's order, and hands the rows back in the order they came. With P = 1 it is a plain
`TransactionFeaturizer`.
"""

from __future__ import annotations

import numpy as np

from models.features.account_state import AccountState
from models.features.partitioning import PartitionOf
from models.features.transactions import TransactionBatch, TransactionFeatureConfig, TransactionFeaturizer


class ServedViewFeaturizer:
    """`TransactionFeaturizer.featurize_columns` over a stream, with the worker's partitions.

    >>> f = ServedViewFeaturizer(TransactionFeatureConfig(window=4, fanout1=2, fanout2=2), partitions=4)
    >>> batch = f.featurize_columns(["alice", "bob", "alice"], ["bob", "alice", "bob"], np.ones(3),
    ...                             1.7e9 + np.arange(3.0), np.ones(3, dtype=np.int64), np.zeros(3, dtype=np.int64))
    >>> batch.seq_mask[:, 0].sum(axis=1).tolist()  # partitions 1 and 2: bob never sees alice's first payment
    [0.0, 0.0, 1.0]
    """

    def __init__(self, config: TransactionFeatureConfig, partitions: int, capacity: int = 1 << 12):
        self.config = config
        self.partitions = partitions
        self.partition_of = PartitionOf(partitions)
        self._capacity = capacity
        self._featurizers: dict[int, TransactionFeaturizer] = {}

    def _featurizer(self, partition: int) -> TransactionFeaturizer:
        featurizer = self._featurizers.get(partition)
        if featurizer is None:
            state = AccountState(window=self.config.window, capacity=self._capacity)
            featurizer = self._featurizers[partition] = TransactionFeaturizer(state, self.config)
        return featurizer

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
        """Features of each transaction (in input order), each from its own partition's state."""
        if self.partitions == 1:
            return self._featurizer(0).featurize_columns(sources, destinations, amounts, timestamps_s, type_codes,
                                                         channel_codes, event_ids=event_ids)
        partition = self.partition_of(sources)
        parts, order = [], []
        for p in np.unique(partition).tolist():
            rows = np.flatnonzero(partition == p)
            picked = rows.tolist()
            parts.append(self._featurizer(p).featurize_columns(
                [sources[i] for i in picked], [destinations[i] for i in picked], amounts[rows], timestamps_s[rows],
                type_codes[rows], channel_codes[rows],
                event_ids=[event_ids[i] for i in picked] if event_ids is not None else None,
            ))
            order.append(rows)
        if not parts:
            return self._featurizer(0).featurize_columns([], [], amounts, timestamps_s, type_codes, channel_codes)
        # Rows of each partition in turn; put them back where they came from.
        return TransactionBatch.concat(parts).take(np.argsort(np.concatenate(order), kind="stable"))

    def accounts(self) -> int:
        """Account rows over all partitions (an account in two partitions counts twice)."""
        return sum(len(f.state) for f in self._featurizers.values())
