"""Prometheus metrics of the worker, on a registry of their own (tests create many workers)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from models.contracts import DeadLetterReason, Segment
from stream.kafka.publisher import Failure
from stream.pipeline.records import RawRecord, StageResult
from stream.settings import TopicNames

# Latency buckets from 1 ms to 10 s: the target is p99 <= 50 ms at 1,000 events/s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 2.5,
                   5.0, 10.0)
# Where an event's latency goes, in order (each phase's end is taken in stream.pipeline.batches):
LATENCY_PHASES = (
    "to_pipeline",  # its record's Kafka timestamp until Faust hands its batch over: broker, fetch, batch filling
    "queued",  # until the pipeline has a slot for the batch: the batches before it still in hand
    "processing",  # the stage: decode, the graph merge (waiting for other partitions too), features, model
    "publish_order",  # until the batch before it has published (batches publish in order)
    "publishing",  # outputs and changelog delivered
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class WorkerMetrics:
    def __init__(self, topics: TopicNames | None = None, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("tributary_events_consumed_total", "Input events consumed", ["topic"], registry=r)
        self.scored = Counter("tributary_events_scored_total", "Events scored by a model", ["topic"], registry=r)
        self.applied = Counter("tributary_events_applied_total", "Events applied to state without scoring", ["topic"], registry=r)
        self.replayed = Counter("tributary_events_replayed_total",
                                "Redelivered events already in the state (not applied or scored twice)", ["topic"], registry=r)
        self.held_back = Counter("tributary_events_held_back_total", "Records held back to keep a partition in offset "
                                 "order (read again after a seek; see stream.kafka.offset_guard)", registry=r)
        self.offset_watch_seeks = Counter("tributary_offset_watch_seeks_total", "Partitions read again because "
                                          "records fetched never reached the pipeline", registry=r)
        self.dead_letters = Counter("tributary_dead_letters_total", "Events dead-lettered", ["topic", "reason"], registry=r)
        self.alerts = Counter("tributary_alerts_total", "Fraud alerts published", ["model"], registry=r)
        self.segment_changes = Counter("tributary_segment_changes_total", "Donor segment membership changes",
                                       ["segment"], registry=r)
        self.end_to_end = Histogram("tributary_end_to_end_latency_seconds",
                                    "From the input record's timestamp to its outputs being flushed", ["topic"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.latency_phase = Histogram("tributary_latency_phase_seconds",
                                       "Each event's time in each phase from its input record to its outputs "
                                       "(phases: stream.monitoring.metrics.LATENCY_PHASES)", ["topic", "phase"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("tributary_stage_duration_seconds", "Time per batch in each stage",
                                       ["topic", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("tributary_batch_size", "Events per micro-batch", ["topic"], buckets=BATCH_BUCKETS,
                                    registry=r)
        self.drift_statistic = Gauge("tributary_drift_statistic", "Latest drift statistic per monitor",
                                     ["model", "monitor"], registry=r)
        self.drift_reports = Counter("tributary_drift_reports_total", "Drift reports published", ["model", "monitor"], registry=r)
        self.model_info = Gauge("tributary_model_info", "The model being served (value 1)", ["task", "name", "version"],
                                registry=r)
        self.model_reloads = Counter("tributary_model_reloads_total", "Model reload attempts", ["task", "result"], registry=r)
        self.labels = Counter("tributary_labels_total", "Late labels matched to a scored transaction, by verdict "
                              "of its alert (tp, fp, tn, fn)", ["verdict"], registry=r)
        self.labelled_performance = Gauge("tributary_labelled_performance", "Precision / recall of alerts over the "
                                          "last labelled transactions", ["measure"], registry=r)
        self.state_entities = Gauge("tributary_state_entities", "Entities held in state", ["kind"], registry=r)
        self.publish_failures = Counter("tributary_publish_failures_total", "Sends that failed, by what they mean: "
                                        "retry (broker away), record (refused for good: its fallback went "
                                        "instead), fatal", ["kind"], registry=r)
        self.fatal_errors = Counter("tributary_fatal_errors_total", "Errors that made the worker stop itself "
                                    "(outputs that could not be published)", registry=r)
        self.assigned = Gauge("tributary_partition_assigned", "1 for each input partition this worker holds",
                              ["topic", "partition"], registry=r)
        self.processed_offset = Gauge("tributary_processed_offset", "Next offset after the last event whose outputs "
                                      "are published and acked", ["topic", "partition"], registry=r)
        self.committed_offset = Gauge("tributary_committed_offset", "The consumer group's committed offset",
                                      ["topic", "partition"], registry=r)
        self.commit_lag = Gauge("tributary_commit_lag_offsets", "Offsets processed but not yet committed (read "
                                "again after a crash); should stay within a few commit intervals of work",
                                ["topic", "partition"], registry=r)

        # The merged transaction graph (stream.state.graph_merge); cumulative figures as gauges,
        # read from the merge when scraped.
        self.graph_records = Gauge("tributary_graph_merged_records", "Transaction records in the graph: restored "
                                   "from a checkpoint, then merged (every partition, not just this worker's)",
                                   registry=r)
        self.graph_restored = Gauge("tributary_graph_restored_records", "Records the graph checkpoint it started "
                                    "from held (0: read from the start of the topic)", registry=r)
        self.graph_checkpoints = Gauge("tributary_graph_checkpoints_written", "Graph checkpoints this worker wrote "
                                       "(TRIBUTARY_GRAPH_CHECKPOINT_INTERVAL_S)", registry=r)
        self.graph_rebuilds = Gauge("tributary_graph_rebuilds", "Times the graph was merged again from a checkpoint "
                                    "or the start (a partition assigned after the merge passed records of it it had "
                                    "not scored, or a checkpoint that does not match the topic)", registry=r)
        self.graph_late = Gauge("tributary_graph_late_records", "Records merged after a later one (a partition out "
                                "of time order, or one idle past TRIBUTARY_GRAPH_IDLE_MS): their features may "
                                "differ from `tributary evaluate`'s", registry=r)
        self.graph_kept = Gauge("tributary_graph_kept", "Transactions of this worker's partitions merged ahead of "
                                "the stage (features or decoded events kept until it asks)", registry=r)
        self.graph_buffered = Gauge("tributary_graph_feed_buffered", "Records fetched for the graph, not merged yet",
                                    registry=r)
        self.alert_threshold = Gauge("tributary_alert_threshold", "The score at and above which a transaction "
                                     "raises an alert (TRIBUTARY_ALERT_POLICY)", ["model"], registry=r)
        self.consumer_lag = Gauge("tributary_consumer_lag_offsets", "Records in the partition not yet processed: "
                                  "its end offset minus the processed offset", ["topic", "partition"], registry=r)
        # The process's CPU, memory, open files and GC, as the default registry would have them.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        if topics is not None:
            self._start_series(topics)

    def _start_series(self, topics: TopicNames) -> None:
        """Create the known label sets at 0: a counter series that appears only with its first
        increment makes Prometheus' increase() miss that increment."""
        inputs = (topics.transactions, topics.gifts, topics.donor_profiles, topics.donor_relationships)
        for topic in inputs:
            self.consumed.labels(topic)
            for reason in DeadLetterReason:
                self.dead_letters.labels(topic, reason.value)
        for topic in (topics.transactions, topics.gifts):
            self.scored.labels(topic)
        for failure in Failure:
            self.publish_failures.labels(failure.value)
        for segment in Segment:
            self.segment_changes.labels(segment.value)
        for verdict in ("tp", "fp", "tn", "fn"):
            self.labels.labels(verdict)
        for reason in DeadLetterReason:
            self.dead_letters.labels(topics.fraud_labels, reason.value)

    def record_batch(self, topic: str, result: StageResult, consumed_by_topic: dict[str, int] | None = None) -> None:
        """`topic` labels the batch (the agent's main topic); consumed counts go to each
        record's own topic when `consumed_by_topic` says (one agent reads the three donor topics)."""
        for name, count in (consumed_by_topic or {topic: result.consumed}).items():
            self.consumed.labels(name).inc(count)
        self.batch_size.labels(topic).observe(result.consumed)
        if result.scored:
            self.scored.labels(topic).inc(result.scored)
        if result.applied:
            self.applied.labels(topic).inc(result.applied)
        if result.replayed:
            self.replayed.labels(topic).inc(result.replayed)
        for reason, count in result.dead_letters.items():
            self.dead_letters.labels(topic, reason).inc(count)
        if result.alerts and result.model:
            self.alerts.labels(result.model[0]).inc(result.alerts)
        for verdict, count in result.labels.items():
            self.labels.labels(verdict).inc(count)
        for segment, count in result.segment_changes.items():
            self.segment_changes.labels(segment).inc(count)
        for stage, seconds in result.timings.items():
            self.stage_seconds.labels(topic, stage).observe(seconds)
        for report in result.reports:
            self.drift_reports.labels(report.model_name, report.monitor).inc()
        for (model, monitor), value in result.drift_statistics.items():
            self.drift_statistic.labels(model, monitor).set(value)
        for measure, value in result.performance.items():
            self.labelled_performance.labels(measure).set(value)

    def record_latency(self, records: Iterable[RawRecord], phase_ends: dict[str, float] | None = None) -> None:
        """From each record's Kafka timestamp to now, when its outputs are flushed. Given the
        wall-clock end of each phase of the batch (LATENCY_PHASES), also each event's time in
        each phase."""
        done = time.time()
        ends = phase_ends or {}
        first = LATENCY_PHASES[0]
        per_topic: dict[str, int] = {}
        for record in records:
            if record.timestamp_ms is None:
                continue
            per_topic[record.topic] = per_topic.get(record.topic, 0) + 1
            self.end_to_end.labels(record.topic).observe(max(done - record.timestamp_ms / 1000, 0.0))
            if first in ends:
                self.latency_phase.labels(record.topic, first).observe(max(ends[first] - record.timestamp_ms / 1000, 0.0))
        # The later phases take one time per batch, the same for each of its events.
        for before, phase in zip(LATENCY_PHASES, LATENCY_PHASES[1:]):
            if phase in ends and before in ends:
                seconds = max(ends[phase] - ends[before], 0.0)
                for topic, count in per_topic.items():
                    child = self.latency_phase.labels(topic, phase)
                    for _ in range(count):
                        child.observe(seconds)

    def record_commit(self, topic: str, partition: int, processed: int, committed: int | None,
                      end: int | None = None) -> None:
        """`end`: the partition's end offset (the next offset to be written), when known."""
        labels = (topic, str(partition))
        self.processed_offset.labels(*labels).set(processed)
        self.committed_offset.labels(*labels).set(committed if committed is not None else -1)
        self.commit_lag.labels(*labels).set(max(processed - (committed or 0), 0))
        if end is not None:
            self.consumer_lag.labels(*labels).set(max(end - processed, 0))

    def forget_partition(self, topic: str, partition: int) -> None:
        """A partition moved to another worker: its series here would only go stale."""
        for gauge in (self.assigned, self.processed_offset, self.committed_offset, self.commit_lag,
                      self.consumer_lag):
            try:
                gauge.remove(topic, str(partition))
            except KeyError:
                pass

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        """Expose /metrics on HTTP; loopback by default (put a proxy in front to publish it)."""
        start_http_server(port, addr=address, registry=self.registry)
