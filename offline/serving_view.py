"""Offline scores computed exactly as the workers compute them.

Transactions: every worker merges all partitions into one graph, by event time then
partition (stream.state.graph_merge). To reproduce its scores offline (parity checks,
the replay test), split the events by the producer's partitioner and merge them back
the same way. Donors: state is kept per input partition, so one featurizer per
partition, each in its own arrival order.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from models.contracts import DonorProfile, DonorRelationship, GiftEvent, TransactionEvent
from models.features.account_state import AccountState
from models.features.donors import DonorBatch, DonorFeatureConfig, DonorFeaturizer
from models.features.partitioning import kafka_partition
from models.features.served_view import merge_partitions, time_key_us_of
from models.features.transactions import RawTransaction, TransactionBatch, TransactionFeaturizer
from models.gbdt import GbdtDonorModel
from models.model_store import LoadedFraudModel, donor_probabilities
from models.nn.donor_model import DonorModel
from offline.train.loop import predict


def worker_view_scores(events: list[TransactionEvent], loaded: LoadedFraudModel, partitions: int) -> dict[str, float]:
    """event_id -> the score the worker gives it, for events keyed by source account
    (a repeat of an event id gets none: the worker dead-letters it)."""
    by_partition: dict[int, list[TransactionEvent]] = defaultdict(list)
    for event in events:
        by_partition[kafka_partition(event.source_account.encode(), partitions)].append(event)
    # The workers' k-way merge itself, not ServedViewFeaturizer's sort: that one needs the
    # whole stream in time order, and a test's stream need not be (records appended after).
    merged = merge_partitions(by_partition, lambda e: time_key_us_of(e.event_time.timestamp()))
    featurizer = TransactionFeaturizer(AccountState(window=loaded.features.window), loaded.features)
    batch: TransactionBatch = featurizer.featurize([RawTransaction.from_event(e) for e in merged])
    scored = np.flatnonzero(~batch.duplicate)  # a repeated event id is dead-lettered, not scored
    values = predict(loaded.model, batch.take(scored).arrays())
    return dict(zip((merged[i].event_id for i in scored.tolist()), np.asarray(values).tolist()))


def donor_worker_view_scores(
    events: list[GiftEvent | DonorProfile | DonorRelationship], model: DonorModel | GbdtDonorModel,
    config: DonorFeatureConfig,
    partitions: int,
) -> dict[str, list[float]]:
    """gift event_id -> the probabilities the worker gives it (in `model.spec.targets` order).

    `events` in the order each partition consumes them; all keyed by donor id. Each gift
    is read right after it is ingested, as of its own time, like the worker does.
    """
    by_partition: dict[int, list] = defaultdict(list)
    for event in events:
        by_partition[kafka_partition(event.donor_id.encode(), partitions)].append(event)
    ids, batches = [], []
    for partition_events in by_partition.values():
        featurizer = DonorFeaturizer(config.new_state(), config)
        for event in partition_events:
            featurizer.state.ingest(event)
            if isinstance(event, GiftEvent):
                ids.append(event.event_id)
                batches.append(featurizer.featurize([event.donor_id], event.event_time, strict=False))
    if not batches:
        return {}
    probabilities = donor_probabilities(model, DonorBatch.concat(batches))
    return dict(zip(ids, probabilities.tolist()))
