"""Artifacts and records for serving tests, without a training run."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import torch

from models.artifacts import ArtifactManifest, save_artifact
from models.contracts import Segment, TransactionEvent
from models.features.donors import F_EDGE as DONOR_F_EDGE
from models.features.donors import F_GIFT, F_TAB, DonorFeatureConfig
from models.features.donors import F_NODE as DONOR_F_NODE
from models.features.transactions import F_EDGE, F_EVENT, F_NODE, F_SEQ, TransactionFeatureConfig
from models.model_store import load_fraud_model
from models.nn.donor_model import DonorModel, DonorModelSpec
from models.nn.fraud_model import FraudModel, FraudModelSpec
from stream.pipeline.records import RawRecord, decode_or_dead_letter
from stream.pipeline.transactions import TransactionStage
from stream.scoring.fraud_scorer import FraudScorer
from stream.settings import TopicNames
from stream.state.graph_merge import GraphMerge
from stream.state.published_markers import TRANSACTIONS_TOPIC, PublishedMarkers
from tests.fakes import LogFeed

DIMS = {"event": F_EVENT, "seq": F_SEQ, "node": F_NODE, "edge": F_EDGE}


def untrained_fraud_artifact(root: Path, threshold: float = 0.5, seed: int = 0, name: str = "fusion-gated",
                             features: TransactionFeatureConfig = TransactionFeatureConfig(), version: str | None = None,
                             metrics: dict | None = None) -> Path:
    """A real artifact of an untrained (randomly initialised, seeded) fusion model."""
    torch.manual_seed(seed)
    spec = FraudModelSpec(name, graph_depth=2, graph_hidden=16, sequence="gru", sequence_hidden=8,
                          fusion="gated", fusion_hidden=16, dims=DIMS)
    model = FraudModel(spec, F_EVENT, F_SEQ, F_NODE, F_EDGE)
    extra = {"version": version} if version else {}
    manifest = ArtifactManifest(
        name=name, task="fraud", hyperparameters={"model": spec.to_dict()},
        feature_schema=features.schema(), feature_schema_hash=features.schema_hash(), threshold=threshold,
        reference_distributions={"format": 2, "scores": {"fraud": {"edges": [0.5], "shares": [0.5, 0.5]}},
                                 "features": {}}, metrics=metrics or {}, **extra,
    )
    return save_artifact(root, manifest, model.state_dict())


def restore_compacted(state, results) -> None:
    """Restore partitioned `state` from the changelogs of stage results as a compacted
    changelog topic holds them: the latest record per (partition, key)."""
    latest = {}
    for result in results:
        for partition, write in result.changelog.items():
            for key, blob in write:
                latest[(partition, key)] = blob
    for (partition, key), blob in latest.items():
        state.restore(partition, key, blob)


def transaction_record(i: int, source: str, destination: str, amount: float, partition: int = 0,
                       offset: int | None = None, start=datetime(2025, 2, 1, tzinfo=timezone.utc)) -> RawRecord:
    value = json.dumps({
        "event_id": f"t{i}", "event_time": (start + timedelta(minutes=i)).isoformat(),
        "source_account": source, "destination_account": destination, "amount": amount, "type": "transfer",
    }).encode()
    return RawRecord("transactions", partition, i if offset is None else offset, source.encode(), value)


# Small on purpose: serving tests exercise the path, not the model's quality.
SMALL_DONOR_FEATURES = DonorFeatureConfig(window=8, fanout=8, neighbours=4)


def untrained_donor_artifact(root: Path, threshold: float = 0.5, seed: int = 0,
                             features: DonorFeatureConfig = SMALL_DONOR_FEATURES, version: str | None = None,
                             feature_references: dict | None = None, margin: float = 0.0) -> Path:
    """A real artifact of an untrained (randomly initialised, seeded) donor multi-target model.

    `feature_references`: the drift references of its features (models.drift_reference);
    by default none, and uniform ones of every target's score. `margin`: every target's
    membership margin (models.segment_membership).
    """
    torch.manual_seed(seed)
    dims = {"tab": F_TAB, "gift": F_GIFT, "node": DONOR_F_NODE, "edge": DONOR_F_EDGE, "window": features.window,
            "neighbours": features.neighbours, "types": 5}
    spec = DonorModelSpec(dims=dims, tab_hidden=16, seq_hidden=8, seq_heads=2, graph_hidden=16, fusion_width=16,
                          fusion_heads=4, fused=16, head_hidden=8, target_heads=2)
    model = DonorModel(spec).eval()
    targets = [s.value for s in Segment]
    histogram = {"edges": [i / 10 for i in range(1, 10)], "shares": [0.1] * 10}
    extra = {"version": version} if version else {}
    manifest = ArtifactManifest(
        name="multitarget", task="donors",
        hyperparameters={"model": spec.to_dict(), "targets": targets, "hysteresis": dict.fromkeys(targets, margin)},
        feature_schema=features.schema(), feature_schema_hash=features.schema_hash(),
        threshold={t: threshold for t in targets},
        reference_distributions={"format": 2, "scores": {t: histogram for t in targets},
                                 "features": feature_references or {}}, **extra,
    )
    return save_artifact(root, manifest, model.state_dict())


def consumed_records(world, topics, partitions: int) -> list[RawRecord]:
    """A world's events as a worker consumes them from `partitions` partitions: each
    record keyed by its entity, with its offset in its topic partition, in replay order."""
    from collections import Counter

    from models.features.partitioning import kafka_partition
    from stream.replay import iter_wire_events

    offsets: Counter = Counter()
    records = []
    for wire in iter_wire_events(world):
        topic = topics.for_stream(wire.stream)
        partition = kafka_partition(wire.key, partitions)
        records.append(RawRecord(topic, partition, offsets[(topic, partition)], wire.key, wire.value))
        offsets[(topic, partition)] += 1
    return records


def transaction_stage(artifact: Path, markers=None, topic=None, recent=None, max_bytes: int = 16 * 1024):
    """A transaction stage over an in-memory topic: each batch is produced to it before it
    is processed. `topic` (partition -> records) is shared by a stage restarted after a crash;
    `stage.topic` is this stage's."""
    loaded = load_fraud_model(artifact)
    markers = markers or PublishedMarkers()
    feed = LogFeed(4, topic)
    view = GraphMerge(loaded.features, feed, lambda r: decode_or_dead_letter(r, TransactionEvent, max_bytes)[0],
                      lambda p: markers.published.get(TRANSACTIONS_TOPIC, p), idle_s=0)
    stage = TransactionStage(markers, view, FraudScorer(loaded), TopicNames(), max_bytes, recent)
    process = stage.process

    def produce_then_process(batch):
        feed.produce(batch)
        return process(batch)

    stage.process = produce_then_process  # type: ignore[method-assign]
    stage.topic = feed.log  # type: ignore[attr-defined]
    return stage
