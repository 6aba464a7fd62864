"""Scoring a batch of transaction records: decode, features, model, alerts, state changes.

No Faust here: the agent hands in raw records and publishes what comes back. Order of
work per batch (predict first, then update; see models.features.transactions):
    decode each record (bad ones become dead letters, except those redelivered after a
        restart whose dead letter is out already)
    features of each transaction from the whole graph just before it (stream.state.graph_merge;
        a redelivered transaction, at or below its partition's published marker, is not
        scored again)
    score the batch with one model version; alerts above its threshold, with reasons and
        case evidence (the window transactions and counterparties behind the score)
    one outcome record per scored transaction; changelog records for changed accounts
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np

from models.contracts import DeadLetterReason, EventOutcome, FraudAlert, Outcome, TransactionEvent, alert_id, encode
from models.features.account_state import RECENT_EVENT_IDS
from stream.monitoring.performance import RecentScores, Said
from stream.pipeline.records import Output, RawRecord, StageResult, dead_letter, decode_or_dead_letter
from stream.scoring.alert_evidence import alert_evidence, step_occlusion
from stream.scoring.alert_thresholds import AlertThresholds
from stream.scoring.fraud_scorer import FraudScorer, take_rows, with_patterns
from stream.settings import TopicNames
from stream.state.commit_protocol import ChangelogWrite
from stream.state.graph_merge import GraphMerge
from stream.state.published_markers import TRANSACTIONS_TOPIC, PublishedMarkers


class TransactionStage:
    def __init__(self, accounts: PublishedMarkers, view: GraphMerge, scorer: FraudScorer, topics: TopicNames,
                 max_message_bytes: int, recent: RecentScores | None = None, thresholds: AlertThresholds | None = None):
        self.accounts = self.state = accounts
        self.view = view  # the whole graph, merged from every partition
        self.thresholds = thresholds  # the alert policy; None: each model's own threshold
        self.metric_topic = topics.transactions
        self.recent = recent  # what was said about each transaction, for late labels
        self.scorer = scorer
        self.topics = topics
        self.max_message_bytes = max_message_bytes

    def process(self, records: list[RawRecord]) -> StageResult:
        result = StageResult(consumed=len(records))
        clock = time.perf_counter()

        # Outputs up to here went out before a restart: a record at or below it is redelivered.
        published = {r.partition: self.accounts.published.get(TRANSACTIONS_TOPIC, r.partition) for r in records}
        last: dict[int, int] = {}  # partition -> highest offset in the batch
        events: list[tuple[RawRecord, TransactionEvent]] = []
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
            event = self.view.decoded((record.partition, record.offset))
            letter = None
            if event is None:
                event, letter = decode_or_dead_letter(record, TransactionEvent, self.max_message_bytes)
            if event is not None:
                events.append((record, event))
            elif record.offset <= published[record.partition]:
                result.replayed += 1  # its dead letter is out already
            elif letter is not None:
                result.add_dead_letter(self.topics.dead_letters, record, letter)
        clock = result.lap("decode", clock)

        # Redelivered after a restart: published already, and recorded by the merge anyway.
        ordered = [(r, e) for r, e in events if r.offset > published[r.partition]]
        result.replayed += len(events) - len(ordered)
        for partition in sorted(published):
            self.view.prune(partition, published[partition])
        waited = self.view.waited_s
        batch = self.view.features_for([(r.partition, r.offset) for r, _ in ordered],
                                       {(r.partition, r.offset): e for r, e in ordered})
        result.timings["graph_wait"] = self.view.waited_s - waited  # inside "state": waiting for other partitions
        for partition in sorted(published):  # after the features: the merge reads the markers
            # The marker covers the partition's dead letters too: they are outputs like any other.
            marker = self.accounts.published.mark(TRANSACTIONS_TOPIC, partition, last[partition])
            result.changelog[partition] = ChangelogWrite([marker], self.accounts.take_changes(partition))
        clock = result.lap("state", clock)
        if not events:
            return result

        for i in np.flatnonzero(batch.duplicate).tolist():
            record, event = ordered[i]
            result.add_dead_letter(self.topics.dead_letters, record, dead_letter(
                record, DeadLetterReason.DUPLICATE_EVENT, "DuplicateEvent",
                f"event_id {event.event_id!r} is already among the last {RECENT_EVENT_IDS} transactions of source "
                f"account {event.source_account!r}, and was scored there: event ids must be unique (a producer "
                "retry? this copy is not scored)", "event_id"))
        live = np.flatnonzero(~batch.replayed & ~batch.duplicate)
        result.replayed += int(batch.replayed.sum())
        served = self.scorer.current  # one model version, with its monitors, for the whole batch
        model = served.model
        result.model = (model.manifest.name, model.version)
        try:
            scores = self.scorer.score(model, take_rows(batch, live))
            if self.thresholds is not None:
                live_records = [ordered[position] for position in live.tolist()]
                flags, thresholds = self.thresholds.flag(
                    model, np.array([r.partition for r, _ in live_records], dtype=np.int64),
                    np.array([e.event_time.timestamp() for _, e in live_records], dtype=np.float64), scores,
                    self.accounts.published, TRANSACTIONS_TOPIC)
            else:
                flags, thresholds = scores >= model.threshold, np.full(len(scores), model.threshold)
            flagged: np.ndarray = live[flags]
            for partition, write in result.changelog.items():  # the markers carry the budget's new state
                write.markers = [self.accounts.published.mark(TRANSACTIONS_TOPIC, partition, last[partition])]
            alerting = take_rows(batch, flagged)
            reasons: list = []
            evidence: list = []
            if len(flagged):
                reasons = with_patterns(self.scorer.reasons(model, alerting), alerting)
                weights = step_occlusion(lambda inputs: self.scorer.score(model, inputs), alerting)
                # The batch's window steps name state rows; the merge's state names their accounts.
                evidence = alert_evidence(batch, flagged, weights, self.view.state.names)
        except Exception as error:  # a model failure fails the batch's events explicitly, never silently
            for position in live.tolist():
                result.add_dead_letter(self.topics.dead_letters, ordered[position][0], dead_letter(
                    ordered[position][0], DeadLetterReason.PROCESSING_ERROR, type(error).__name__,
                    f"scoring failed: {error}"))
            result.lap("model", clock)
            return result
        clock = result.lap("model", clock)

        now = datetime.now(timezone.utc)
        reason_for = dict(zip(flagged.tolist(), zip(reasons, evidence)))
        for position, score, threshold in zip(live.tolist(), scores.tolist(), thresholds.tolist()):
            record, event = ordered[position]
            alert = None
            if position in reason_for:
                row_reasons, (row_evidence, counterparties) = reason_for[position]
                alert = FraudAlert(
                    alert_id=alert_id(event.event_id, model.manifest.name, model.version),
                    event_id=event.event_id, event_time=event.event_time,
                    source_account=event.source_account, destination_account=event.destination_account,
                    amount=event.amount, score=score, threshold=threshold,
                    model_name=model.manifest.name, model_version=model.version,
                    reasons=row_reasons, evidence=row_evidence, counterparties=counterparties, scored_at=now,
                )
                result.outputs.append(Output(self.topics.fraud_alerts, event.source_account.encode(), encode(alert)))
                result.alerts += 1
            outcome = EventOutcome(
                event_id=event.event_id, topic=record.topic, partition=record.partition, offset=record.offset,
                outcome=Outcome.SCORED, scores={"fraud": score}, alert_id=alert.alert_id if alert else None,
                model_name=model.manifest.name, model_version=model.version, processed_at=now,
            )
            result.outputs.append(Output(self.topics.outcomes, event.event_id.encode(), encode(outcome)))
            if self.recent is not None:
                self.recent.add(event.event_id, Said(score, alert is not None, model.manifest.name, model.version))
        result.scored = len(live)
        clock = result.lap("publish_prepare", clock)
        result.observe(served.monitors, scores, batch.event[live])
        result.lap("monitor", clock)
        return result
