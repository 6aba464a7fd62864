"""Donor feature PSI is monitored: quiet on the stream the references came from, firing
on a drifted one. (Donor feature references were written at training but never read
before issue #12: the worker passed none.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.contracts import DonorProfile, DonorRelationship, GiftEvent, decode
from models.drift_reference import uniform_histogram
from models.features.donors import TAB_FEATURES, DonorFeaturizer
from models.model_store import load_donor_model
from models.worlds import open_world
from offline.generate.donor_world import generate_donor_world
from offline.train.donors import REFERENCE_FEATURES
from stream.monitoring.model_monitors import donor_monitors
from stream.pipeline.donors import DonorStage
from stream.pipeline.records import RawRecord
from stream.scoring.donor_scorer import DonorScorer
from stream.settings import TopicNames
from stream.state.partitioned_donors import PartitionedDonors
from tests.serving_helpers import SMALL_DONOR_FEATURES, consumed_records, untrained_donor_artifact

TOPICS = TopicNames()
CONTRACTS = {TOPICS.gifts: GiftEvent, TOPICS.donor_profiles: DonorProfile, TOPICS.donor_relationships: DonorRelationship}


@pytest.fixture(scope="module")
def stream_records(tmp_path_factory) -> list[RawRecord]:
    root = tmp_path_factory.mktemp("donor-world")
    generate_donor_world(root, donors=200, seed=9, progress=False)
    return consumed_records(open_world(root), TOPICS, 1)


def gift_time_features(records: list[RawRecord]) -> np.ndarray:
    """The tabular features each gift is scored with (one partition), missing as NaN."""
    featurizer = DonorFeaturizer(SMALL_DONOR_FEATURES.new_state(), SMALL_DONOR_FEATURES)
    rows = []
    for record in records:
        event = decode(record.value, CONTRACTS[record.topic])
        featurizer.state.ingest(event)
        if isinstance(event, GiftEvent):
            batch = featurizer.featurize([event.donor_id], event.event_time, strict=False)
            rows.append(np.where(batch.tab_mask > 0, batch.tab, np.nan)[0])
    return np.array(rows)


def drifted(records: list[RawRecord]) -> list[RawRecord]:
    """Every gift 200 times larger: what a currency or unit mix-up upstream would do."""
    out = []
    for record in records:
        if record.topic == TOPICS.gifts:
            gift = json.loads(record.value)
            gift["amount"] = min(gift["amount"] * 200, 1e9)
            record = RawRecord(record.topic, record.partition, record.offset, record.key, json.dumps(gift).encode())
        out.append(record)
    return out


def stage_watching(tmp_path, records) -> DonorStage:
    features = gift_time_features(records)
    references = {name: uniform_histogram(features[:, TAB_FEATURES.index(name)]).to_dict()
                  for name in REFERENCE_FEATURES}
    loaded = load_donor_model(untrained_donor_artifact(tmp_path, feature_references=references))
    scorer = DonorScorer(loaded, monitors_for=lambda m: donor_monitors(m, window=300, psi_threshold=0.2))
    return DonorStage(PartitionedDonors(loaded.features), scorer, TOPICS, 16 * 1024)


def feature_reports(stage, records) -> list[str]:
    result = stage.process(records)
    assert result.scored > 600
    return sorted({r.monitor for r in result.reports if r.monitor.split(":")[-1] in REFERENCE_FEATURES})


def test_donor_feature_psi_is_quiet_on_the_reference_stream(tmp_path, stream_records):
    assert feature_reports(stage_watching(tmp_path, stream_records), stream_records) == []


def test_donor_feature_psi_fires_when_the_gifts_drift(tmp_path, stream_records):
    fired = feature_reports(stage_watching(tmp_path, stream_records), drifted(stream_records))
    assert "psi:log_gift_total" in fired and "psi:log_amount_365d" in fired
