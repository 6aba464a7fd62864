"""Donor events in, segment updates out: decode, state, multi-target model, membership.

No Faust here (see transactions.py for the pattern). One batch holds records of the
three co-partitioned donor topics. Per batch:
    decode each record with its topic's contract (bad ones become dead letters, except
        those redelivered after a restart whose dead letter is out already)
    per partition: merge the topics' records by event time, each topic kept in offset
        order (Kafka orders a partition, never two topics); apply each event to the
        state; right after a gift, read that donor's features as of the gift
    score every gift of the batch in one forward pass of the served model
    compare each donor's memberships with those last published; publish an update
        only on change; one outcome per event (gifts "scored", others "applied")
    changelog: per topic a published-offset marker, then every changed donor row
Profiles and relationships are not scored: they change what the donor's next gift sees.
"""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np

from models.contracts import DeadLetterReason, DonorProfile, DonorRelationship, EventOutcome, GiftEvent, Outcome, encode
from models.features.donor_layout import (
    DONOR_END,
)
from models.features.donors import DonorBatch
from models.segment_membership import next_mask
from stream.pipeline.records import Output, RawRecord, StageResult, dead_letter, decode_or_dead_letter
from stream.scoring.donor_scorer import DonorScorer
from stream.scoring.segments import changed_segments, segment_update
from stream.settings import TopicNames
from stream.state.commit_protocol import ChangelogWrite, Record
from stream.state.partitioned_donors import TOPIC_INDEX, PartitionedDonors

DonorEvent = GiftEvent | DonorProfile | DonorRelationship


class DonorStage:
    def __init__(self, donors: PartitionedDonors, scorer: DonorScorer, topics: TopicNames, max_message_bytes: int):
        self.donors = self.state = donors
        self.metric_topic = topics.gifts  # one agent reads the three donor topics; consumed counts name each
        self.scorer = scorer
        self.topics = topics
        self.max_message_bytes = max_message_bytes
        self.contracts: dict[str, type[DonorEvent]] = {
            topics.gifts: GiftEvent, topics.donor_profiles: DonorProfile, topics.donor_relationships: DonorRelationship}

    def process(self, records: list[RawRecord]) -> StageResult:
        result = StageResult(consumed=len(records))
        clock = time.perf_counter()
        by_partition: dict[int, list[list[tuple[RawRecord, DonorEvent]]]] = defaultdict(lambda: [[], [], []])
        last: dict[tuple[int, int], int] = {}  # (topic index, partition) -> highest offset in the batch
        for record in records:
            contract = self.contracts.get(record.topic)
            if contract is None:  # a wiring bug, not bad input; still never lost
                result.add_dead_letter(self.topics.dead_letters, record, dead_letter(
                    record, DeadLetterReason.PROCESSING_ERROR, "KeyError", f"no donor contract for topic {record.topic!r}"))
                continue
            topic = TOPIC_INDEX[contract]
            last[(topic, record.partition)] = max(last.get((topic, record.partition), -1), record.offset)
            event, letter = decode_or_dead_letter(record, contract, self.max_message_bytes)
            if event is not None:
                by_partition[record.partition][topic].append((record, event))
            elif record.offset <= self.donors.published.get(topic, record.partition):
                result.replayed += 1  # redelivered after a restart: its dead letter is out already
            elif letter is not None:
                result.add_dead_letter(self.topics.dead_letters, record, letter)
        clock = result.lap("decode", clock)

        served = self.scorer.current  # one model version, with its monitors, for the whole batch
        model = served.model
        gifts: list[tuple[RawRecord, GiftEvent]] = []
        features: list[DonorBatch] = []
        applied: list[tuple[RawRecord, DonorEvent]] = []
        catch_up: list[tuple[int, GiftEvent]] = []  # replayed gifts new to their donor's row
        catch_up_features: list[DonorBatch] = []
        for partition, streams in sorted(by_partition.items()):
            part = self.donors.partition(partition)
            gifts_, profiles, relationships = (sorted(s, key=lambda pair: pair[0].offset) for s in streams)
            # At equal times profiles and relationships go first, as replay orders them.
            for record, event in heapq.merge(profiles, relationships, gifts_, key=lambda pair: pair[1].event_time):
                topic = TOPIC_INDEX[type(event)]
                ends = part.apply(event, record.offset)
                if record.offset <= self.donors.published.get(topic, partition):
                    result.replayed += 1  # its outputs are out already; only the state needed it
                    if isinstance(event, GiftEvent) and ends & DONOR_END:
                        # The restored row predates this gift (a crash between the marker and
                        # the row in the changelog): its published segments are stale too.
                        catch_up_features.append(part.featurizer.featurize([event.donor_id], event.event_time,
                                                                           strict=False))
                        catch_up.append((partition, event))
                elif isinstance(event, GiftEvent):
                    # As of the gift, the gift included: what the model was trained to read.
                    features.append(part.featurizer.featurize([event.donor_id], event.event_time, strict=False))
                    gifts.append((record, event))
                else:
                    applied.append((record, event))
        clock = result.lap("state", clock)
        if catch_up:
            self._catch_up_segments(model, catch_up, catch_up_features)

        now = datetime.now(timezone.utc)
        for record, event in applied:
            self._outcome(result, record, event, Outcome.APPLIED, now)
        result.applied = len(applied)
        if gifts:
            batch = DonorBatch.concat(features)
            try:
                probabilities = self.scorer.score(model, batch)
            except Exception as error:  # a model failure fails the gifts explicitly, never silently
                for record, _ in gifts:
                    result.add_dead_letter(self.topics.dead_letters, record, dead_letter(
                        record, DeadLetterReason.PROCESSING_ERROR, type(error).__name__, f"scoring failed: {error}"))
                result.lap("model", clock)
                return self._close(result, last)
            clock = result.lap("model", clock)
            result.model = (model.manifest.name, model.version)
            for (record, event), p in zip(gifts, probabilities):
                scores = {t: float(v) for t, v in zip(model.targets, p.tolist())}
                self._membership(result, record.partition, event, scores, model, now)
                self._outcome(result, record, event, Outcome.SCORED, now, scores, model)
            result.scored = len(gifts)
            # Missing tabular values are NaN to the monitors: they count in no bin.
            result.observe(served.monitors, probabilities, np.where(batch.tab_mask > 0, batch.tab, np.nan))
            clock = result.lap("monitor", clock)
        return self._close(result, last, clock)

    def _close(self, result: StageResult, last: dict[tuple[int, int], int], clock: float | None = None) -> StageResult:
        """The batch's changelog writes (stream.state.commit_protocol)."""
        clock = clock or time.perf_counter()

        # The markers cover each topic partition's dead letters too: outputs like any other.
        markers: dict[int, list[Record]] = defaultdict(list)
        for (topic, partition), offset in sorted(last.items()):
            markers[partition].append(self.donors.published.mark(topic, partition, offset))
        for partition, written in markers.items():
            result.changelog[partition] = ChangelogWrite(written, self.donors.take_changes(partition))
        result.lap("publish_prepare", clock)
        return result

    def _catch_up_segments(self, model, gifts: list[tuple[int, GiftEvent]], features: list[DonorBatch]) -> None:
        """Set the segments an uninterrupted worker published for these replayed gifts,
        publishing nothing: their updates, if any, went out before the crash."""
        probabilities = self.scorer.score(model, DonorBatch.concat(features)).tolist()
        for (partition, event), p in zip(gifts, probabilities):  # in order: each steps from the one before
            part = self.donors.partition(partition)
            row = part.row_of(event.donor_id)
            part.set_segments(row, next_mask(int(part.segments[row]), model.targets, model.thresholds, model.margins, p))

    def _membership(self, result: StageResult, partition: int, event: GiftEvent, scores: dict[str, float],
                    model, now: datetime) -> None:
        part = self.donors.partition(partition)
        row = part.row_of(event.donor_id)
        previous = int(part.segments[row])
        mask = next_mask(previous, model.targets, model.thresholds, model.margins, list(scores.values()))
        if mask == previous:
            return
        part.set_segments(row, mask)
        for segment in changed_segments(previous, mask):
            result.segment_changes[segment] = result.segment_changes.get(segment, 0) + 1
        update = segment_update(event, scores, mask, previous, model.manifest.name, model.version, now)
        result.outputs.append(Output(self.topics.donor_segments, event.donor_id.encode(), encode(update)))

    def _outcome(self, result: StageResult, record: RawRecord, event: DonorEvent, outcome: Outcome, now: datetime,
                 scores: dict[str, float] | None = None, model=None) -> None:
        value = EventOutcome(
            event_id=event.event_id, topic=record.topic, partition=record.partition, offset=record.offset,
            outcome=outcome, scores=scores or {}, model_name=model.manifest.name if model else None,
            model_version=model.version if model else None, processed_at=now,
        )
        result.outputs.append(Output(self.topics.outcomes, event.event_id.encode(), encode(value)))
