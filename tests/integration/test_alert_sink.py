"""The downstream alert consumer: de-duplicates, survives garbage, does not repeat itself on restart."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone

import pytest
from aiokafka import AIOKafkaProducer

from models.contracts import AlertReason, DonorSegmentUpdate, FraudAlert, Segment, encode
from stream.consumers.alert_sink import AlertSink, RecentIds, follow
from stream.kafka.topics import ensure_topics

NOW = datetime(2025, 2, 1, tzinfo=timezone.utc)


def alert(i: int) -> FraudAlert:
    return FraudAlert(alert_id=f"fusion-gated:v1:t{i}", event_id=f"t{i}", event_time=NOW, source_account="a1",
                      destination_account="b2", amount=1234.5, score=0.97, threshold=0.7, model_name="fusion-gated",
                      model_version="v1", reasons=[AlertReason(kind="feature", name="log_amount", value=7.1, weight=0.4)],
                      scored_at=NOW)


def update(i: int) -> DonorSegmentUpdate:
    return DonorSegmentUpdate(donor_id=f"d{i}", event_id=f"g{i}", event_time=NOW, probabilities={s: 0.5 for s in Segment},
                              segments=[Segment.HIGH_VALUE], previous_segments=[], model_name="multitarget",
                              model_version="v1", updated_at=NOW)


async def produce(bootstrap: str, messages: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, value in messages:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


@pytest.mark.integration
def test_alerts_are_written_once_each_and_garbage_is_skipped(kafka_settings, tmp_path, caplog):
    asyncio.run(ensure_topics(kafka_settings))
    topics = kafka_settings.topics
    messages = [(topics.fraud_alerts, encode(alert(i))) for i in range(5)]
    messages += [(topics.fraud_alerts, encode(alert(2))), (topics.fraud_alerts, encode(alert(4)))]  # redelivered
    messages += [(topics.fraud_alerts, b"{not json"), (topics.donor_segments, encode(update(1)))]
    asyncio.run(produce(kafka_settings.bootstrap_servers, messages))

    out = tmp_path / "alerts.jsonl"
    with caplog.at_level(logging.INFO, logger="tributary.alerts"):
        counts = asyncio.run(follow(kafka_settings, out, group_id="sink-test", idle_exit_s=3))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines if line["kind"] == "fraud_alert"] == [f"fusion-gated:v1:t{i}" for i in range(5)]
    assert [line["record"]["donor_id"] for line in lines if line["kind"] == "segment_update"] == ["d1"]
    assert (counts.alerts, counts.segment_updates, counts.duplicates, counts.unreadable) == (5, 1, 2, 1)
    assert any("FRAUD ALERT t0: a1 -> b2 amount 1,234.50 score 0.970" in r.message for r in caplog.records)

    # A restarted sink (new group: it reads everything again) writes nothing twice.
    again = asyncio.run(follow(kafka_settings, out, group_id="sink-test-2", idle_exit_s=3))
    assert (again.alerts, again.segment_updates, again.duplicates) == (0, 0, 8)  # 7 alert messages + 1 update
    assert len(out.read_text().splitlines()) == 6


def test_recent_ids_forget_only_the_oldest():
    ids = RecentIds(capacity=2)
    assert ids.add("a") and ids.add("b") and not ids.add("a")
    assert ids.add("c")  # evicts b (a was used more recently)
    assert not ids.add("a") and ids.add("b")


def test_sink_survives_a_corrupt_output_file_line(tmp_path):
    out = tmp_path / "alerts.jsonl"
    out.write_text('{"id": "x:1"}\nnot json\n')
    sink = AlertSink(out)
    assert sink.handle("fraud-alerts", encode(alert(9)), "fraud-alerts") is not None
    assert not sink.seen.add("x:1")
