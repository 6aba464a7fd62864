"""Late labels in: match each to what the worker said about its transaction.

A label whose transaction this worker remembers gets an "applied" outcome (under the
label's id) carrying the transaction's score and alert id, and feeds the performance monitor. A label for a transaction
it does not remember (never scored here, or older than `TRIBUTARY_LABEL_MEMORY`
transactions ago, or scored before a restart: the memory is not kept in a changelog)
is dead-lettered as `unknown_entity`, so no label disappears without a trace.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from models.contracts import DeadLetterReason, EventOutcome, FraudLabel, Outcome, alert_id, encode
from stream.monitoring.performance import PerformanceMonitor, RecentScores
from stream.pipeline.records import Output, RawRecord, StageResult, dead_letter, decode_or_dead_letter
from stream.settings import TopicNames


class LabelStage:
    def __init__(self, recent: RecentScores, monitor: PerformanceMonitor, topics: TopicNames, max_message_bytes: int):
        self.state = None  # what it matches against lives in memory (RecentScores), not in a table
        self.metric_topic = topics.fraud_labels
        self.recent = recent
        self.monitor = monitor
        self.topics = topics
        self.max_message_bytes = max_message_bytes

    def process(self, records: list[RawRecord]) -> StageResult:
        result = StageResult(consumed=len(records))
        clock = time.perf_counter()
        now = datetime.now(timezone.utc)
        for record in records:
            label, letter = decode_or_dead_letter(record, FraudLabel, self.max_message_bytes)
            said = self.recent.get(label.event_id) if label is not None else None
            if label is not None and said is None:
                letter = dead_letter(
                    record, DeadLetterReason.UNKNOWN_ENTITY, "UnknownEvent",
                    f"no scored transaction {label.event_id!r} in this worker's memory of its last "
                    f"{self.recent.capacity:,}: the label came too late, before a restart, or to another partition "
                    "than its transaction (key labels by source_account)", "event_id")
            if label is None or said is None:
                if letter is not None:
                    result.add_dead_letter(self.topics.dead_letters, record, letter)
                continue
            verdict = ("t" if said.alerted == label.is_fraud else "f") + ("p" if said.alerted else "n")
            result.labels[verdict] = result.labels.get(verdict, 0) + 1
            result.reports += self.monitor.observe(label.is_fraud, said.alerted, said.model_name, said.model_version)
            outcome = EventOutcome(
                event_id=label.label_id, topic=record.topic, partition=record.partition, offset=record.offset,
                outcome=Outcome.APPLIED, scores={"fraud": said.score},
                alert_id=alert_id(label.event_id, said.model_name, said.model_version) if said.alerted else None,
                model_name=said.model_name, model_version=said.model_version, processed_at=now,
            )
            result.outputs.append(Output(self.topics.outcomes, label.label_id.encode(), encode(outcome)))
            result.applied += 1
        result.performance = dict(self.monitor.latest)
        result.lap("labels", clock)
        return result
