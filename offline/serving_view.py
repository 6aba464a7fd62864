"""Offline scores computed exactly as the worker computes them.

The worker keeps feature state per input partition. To reproduce its scores offline
(parity checks, the replay test), split the events by the producer's partitioner and
run one featurizer per partition, each in its own arrival order.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from models.contracts import TransactionEvent
from models.features.account_state import AccountState
from models.features.partitioning import kafka_partition
from models.features.transactions import RawTransaction, TransactionBatch, TransactionFeaturizer
from models.fraud_artifact import LoadedFraudModel
from offline.train.loop import predict


def worker_view_scores(events: list[TransactionEvent], loaded: LoadedFraudModel, partitions: int) -> dict[str, float]:
    """event_id -> the score the worker gives it, for events keyed by source account."""
    by_partition: dict[int, list[TransactionEvent]] = defaultdict(list)
    for event in events:
        by_partition[kafka_partition(event.source_account.encode(), partitions)].append(event)
    scores: dict[str, float] = {}
    for partition_events in by_partition.values():
        featurizer = TransactionFeaturizer(AccountState(window=loaded.features.window), loaded.features)
        batch: TransactionBatch = featurizer.featurize([RawTransaction.from_event(e) for e in partition_events])
        values = predict(loaded.model, batch.arrays())
        scores.update(zip((e.event_id for e in partition_events), np.asarray(values).tolist()))
    return scores
