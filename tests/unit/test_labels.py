"""Late labels: matched to what the worker said, counted, and reported when alerts go wrong."""

from __future__ import annotations

import json

import pytest

from models.contracts import DeadLetter, DriftReport, EventOutcome
from stream.monitoring.performance import PerformanceMonitor, RecentScores, Said
from stream.pipeline.labels import LabelStage
from stream.pipeline.records import RawRecord
from stream.settings import TopicNames
from tests.serving_helpers import transaction_record, transaction_stage, untrained_fraud_artifact

TOPICS = TopicNames()


def label(i: int, event_id: str, kind: str = "confirmed_fraud", account: str = "a") -> RawRecord:
    value = json.dumps({"label_id": f"l{i}", "event_id": event_id, "source_account": account, "kind": kind,
                        "labelled_at": "2025-03-01T00:00:00Z"}).encode()
    return RawRecord(TOPICS.fraud_labels, 0, i, account.encode(), value)


def outputs(result, topic):
    return [o for o in result.outputs if o.topic == topic]


def test_scored_transactions_are_remembered_and_labels_find_them(tmp_path):
    recent = RecentScores(capacity=1000)
    transactions = transaction_stage(untrained_fraud_artifact(tmp_path, threshold=0.5), recent=recent)
    scored = transactions.process([transaction_record(i, f"a{i % 7}", f"b{i % 5}", 50.0 + i) for i in range(40)])
    outcomes = {o.event_id: o for o in map(EventOutcome.model_validate_json, (x.value for x in outputs(scored, TOPICS.outcomes)))}

    stage = LabelStage(recent, PerformanceMonitor({}, window=10), TOPICS, 16_384)
    result = stage.process([label(i, f"t{i}", "confirmed_fraud" if i % 2 else "cleared") for i in range(20)])
    applied = [EventOutcome.model_validate_json(o.value) for o in outputs(result, TOPICS.outcomes)]
    assert [a.event_id for a in applied] == [f"l{i}" for i in range(20)] and result.applied == 20
    for i, a in enumerate(applied):  # the label's outcome carries what was said about its transaction
        said = outcomes[f"t{i}"]
        assert a.scores == said.scores and a.alert_id == said.alert_id and a.outcome.value == "applied"
    assert sum(result.labels.values()) == 20 and set(result.labels) <= {"tp", "fp", "tn", "fn"}


def test_labels_for_unknown_or_forgotten_transactions_are_dead_letters():
    recent = RecentScores(capacity=2)
    for i in range(3):  # t0 is pushed out by t2
        recent.add(f"t{i}", Said(0.9, True, "m", "v1"))
    stage = LabelStage(recent, PerformanceMonitor({}), TOPICS, 16_384)
    result = stage.process([label(0, "t0"), label(1, "t2"), label(2, "never"), RawRecord(TOPICS.fraud_labels, 0, 3, b"a", b"{")])
    letters = [DeadLetter.model_validate_json(o.value) for o in outputs(result, TOPICS.dead_letters)]
    assert [(d.offset, d.reason.value) for d in letters] == [(0, "unknown_entity"), (2, "unknown_entity"), (3, "malformed_json")]
    assert "source_account" in letters[0].message and result.labels == {"tp": 1}


def test_a_drop_in_labelled_recall_is_a_performance_report():
    monitor = PerformanceMonitor({"precision": 0.8, "recall": 0.6}, window=10, margin=0.1)
    reports = []
    for i in range(10):  # every labelled fraud missed: recall 0
        reports += monitor.observe(True, i < 2, "fusion-gated", "v1")
    assert [r.monitor for r in reports] == ["labels:recall"]
    report = DriftReport.model_validate_json(reports[0].model_dump_json())
    assert report.kind.value == "performance"
    assert report.statistic == pytest.approx(0.2) and report.threshold == pytest.approx(0.5)
    assert monitor.latest == {"precision": 1.0, "recall": pytest.approx(0.2)}
    healthy = PerformanceMonitor({"precision": 0.8, "recall": 0.6}, window=10, margin=0.1)
    assert not [r for i in range(10) for r in healthy.observe(i < 7, i < 7, "m", "v")]
