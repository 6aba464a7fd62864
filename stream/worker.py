"""The worker's parts, put together: served models, stages, their pipelines, the publisher.

Nothing here imports Faust: `stream.app` wires these parts to topics, tables, agents and
timers. So a worker can be built and driven in-process (tests/functional/test_worker_in_process.py).
- served models with their monitors, and their live reload: stream.scoring;
- one stage per agent (transactions, late labels, donors): stream.pipeline;
- one `BatchPipeline` per stage: admit, process, publish, ack (stream.pipeline.batches);
- one publisher for every output and changelog (stream.kafka.publisher);
- one offset guard over every input partition (stream.kafka.offset_guard).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch
from aiokafka import AIOKafkaProducer, TopicPartition

from models.artifacts import DEFAULT_DONOR_MODEL, DEFAULT_FRAUD_MODEL, latest_version, resolve_model_name, served_root
from models.contracts import TransactionEvent
from models.errors import TributaryError
from models.model_store import LoadedDonorModel, LoadedFraudModel, load_donor_model, load_fraud_model
from stream.kafka.clients import ProbeConsumer
from stream.kafka.clients import start_producer as start_kafka_producer
from stream.kafka.faust_compat import count_acked_once, limit_fetch_wait, suspendable_read_offsets
from stream.kafka.offset_guard import OffsetGuard
from stream.kafka.publisher import Publisher
from stream.monitoring.metrics import WorkerMetrics
from stream.monitoring.model_monitors import donor_monitors, fraud_monitors
from stream.monitoring.performance import PerformanceMonitor, RecentScores
from stream.pipeline.batches import BatchPipeline, Stage
from stream.pipeline.donors import DonorStage
from stream.pipeline.labels import LabelStage
from stream.pipeline.records import RawRecord, decode_or_dead_letter
from stream.pipeline.transactions import TransactionStage
from stream.scoring.alert_thresholds import AlertThresholds
from stream.scoring.donor_scorer import DonorScorer
from stream.scoring.fraud_scorer import FraudScorer
from stream.scoring.reload import ModelReloader, ServedTask
from stream.settings import WorkerSettings
from stream.state.faust_store import register_store
from stream.state.graph_checkpoint import GraphCheckpoints
from stream.state.graph_feed import KafkaGraphFeed
from stream.state.graph_merge import GraphFeed, GraphMerge
from stream.state.partitioned_donors import PartitionedDonors
from stream.state.published_markers import TRANSACTIONS_TOPIC, PublishedMarkers

log = logging.getLogger("tributary.worker")
# The exit code of a worker that stopped because it could not publish (see `fail`).
EXIT_PUBLISH_FAILED = 3
Partition = tuple[str, int]
Loaded = TypeVar("Loaded")


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class TributaryWorker:
    """Everything a worker process runs, except Faust.

    Kafka is reached through three doors, real ones unless given: `start_producer(**options)`
    starts a producer; `probe()` returns the consumer the offset guard reads committed
    offsets with; `seek(topic, partition, offset)` moves Faust's consumer back, and
    `settled(topic, partition)` says the re-read has arrived (both set by `stream.app`
    once it has built the Faust app).
    """

    def __init__(self, settings: WorkerSettings, *,
                 start_producer: Callable[..., Awaitable[AIOKafkaProducer]] | None = None,
                 probe: Callable[[], Awaitable[Any]] | None = None, graph_feed: GraphFeed | None = None):
        register_store()
        count_acked_once()
        suspendable_read_offsets()
        if settings.fetch_max_wait_ms:
            limit_fetch_wait(settings.fetch_max_wait_ms)
        torch.set_num_threads(settings.torch_threads)
        self.settings = settings
        self.metrics = WorkerMetrics(settings.topics)
        self.device = pick_device(settings.device)
        self.stopping = False  # set when the worker is told to stop: publishing retries end then
        self.fatal_error: str | None = None  # why the worker stopped itself (see `fail`)
        self.request_stop: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM)  # how `fail` stops
        self.seek: Callable[[str, int, int], Awaitable[None]] | None = None  # set by stream.app
        self.settled: Callable[[str, int], None] = lambda topic, partition: None  # set by stream.app
        # (topic, partition) -> the next offset after the last event whose outputs are published and acked
        self.processed: dict[Partition, int] = {}

        self.probe = ProbeConsumer(settings)
        self._get_probe = probe or self.probe.get
        self.offset_guard = OffsetGuard(self._get_probe, self._seek, lambda topic, partition: self.settled(topic, partition))
        self.publisher = Publisher(start_producer or (lambda **options: start_kafka_producer(settings, **options)),
                                   settings.publish_timeout_s, stopping=lambda: self.stopping,
                                   on_failure=lambda kind: self.metrics.publish_failures.labels(kind.value).inc())
        # One thread: batches are processed strictly in order, and state is touched by it alone.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tributary-score")

        root = served_root(settings.model_dir)
        self.fraud_model_name = resolve_model_name(root, "fraud", settings.fraud_model, DEFAULT_FRAUD_MODEL)
        fraud = load_fraud_model(latest_version(root, self.fraud_model_name))
        self.alert_thresholds = AlertThresholds(
            settings.alert_policy, lambda model, threshold: self.metrics.alert_threshold.labels(model).set(threshold),
            partitions=settings.partitions)
        self.alert_thresholds.check(fraud)
        self.fraud_scorer = fraud_scorer = self._fraud_scorer(fraud)
        # A new version the alert policy cannot serve (a budget, no validation scores) is refused.
        tasks = [ServedTask("fraud", self.fraud_model_name, fraud_scorer,
                            lambda path: self.alert_thresholds.check(load_fraud_model(path)))]
        # Every partition of `transactions`, merged into the one graph all features read.
        self.graph_feed = graph_feed or KafkaGraphFeed(settings, settings.topics.transactions)
        # The transaction partitions this worker scores, as Kafka assigns them (stream.app);
        # None until an assignment is known: all of them.
        self.transaction_partitions: set[int] | None = None
        self.graph = GraphMerge(
            fraud.features, self.graph_feed,
            lambda record: decode_or_dead_letter(record, TransactionEvent, settings.max_message_bytes)[0],
            self._scored_above, idle_s=settings.graph_idle_ms / 1000, stopping=lambda: self.stopping,
            checkpoints=graph_checkpoints(settings, fraud.features.schema_hash()),
            checkpoint_every_s=settings.graph_checkpoint_interval_s)
        self.accounts = PublishedMarkers(lambda: len(self.graph.state))
        self.metrics.graph_records.set_function(lambda: self.graph.merged)
        self.metrics.graph_rebuilds.set_function(lambda: self.graph.rebuilds)
        self.metrics.graph_restored.set_function(lambda: self.graph.restored)
        self.metrics.graph_checkpoints.set_function(
            lambda: self.graph.checkpoints.written if self.graph.checkpoints is not None else 0)
        self.metrics.graph_late.set_function(lambda: self.graph.late)
        self.metrics.graph_kept.set_function(self.graph.kept)
        self.metrics.graph_buffered.set_function(lambda: self.graph_feed.buffered())
        recent = RecentScores(settings.label_memory) if settings.label_memory else None
        self.pipelines: dict[str, BatchPipeline] = {
            "transactions": self._pipeline(TransactionStage(self.accounts, self.graph, fraud_scorer, settings.topics,
                                                            settings.max_message_bytes, recent,
                                                            self.alert_thresholds), "accounts"),
        }
        if recent is not None:
            performance = PerformanceMonitor(fraud.manifest.metrics.get("test", {}), settings.label_window,
                                             settings.performance_margin)
            self.pipelines["labels"] = self._pipeline(
                LabelStage(recent, performance, settings.topics, settings.max_message_bytes), None)
        self.donor_model_name = (resolve_model_name(root, "donors", settings.donor_model, DEFAULT_DONOR_MODEL)
                                 if settings.donor_model else "")
        donors = self._load(self.donor_model_name, load_donor_model) if self.donor_model_name else None
        if donors is not None:
            scorer = self._donor_scorer(donors)
            tasks.append(ServedTask("donors", self.donor_model_name, scorer, load_donor_model))
            self.donors = PartitionedDonors(donors.features)
            self.pipelines["donors"] = self._pipeline(
                DonorStage(self.donors, scorer, settings.topics, settings.max_message_bytes), "donors")
        self.models = ModelReloader(settings.model_dir, tasks, self.metrics)

    # -- parts ---------------------------------------------------------------------

    def _load(self, name: str, load: Callable[[Path], Loaded]) -> Loaded | None:
        """The newest version of model `name`, or None when there is none (then its topics
        are left unconsumed; the worker says so when it starts)."""
        try:
            path = latest_version(served_root(self.settings.model_dir), name)
        except TributaryError:
            return None
        return load(path)

    def _fraud_scorer(self, loaded: LoadedFraudModel) -> FraudScorer:
        s = self.settings
        return FraudScorer(loaded, self.device, lambda m: fraud_monitors(m, s.drift_window, s.psi_threshold))

    def _donor_scorer(self, loaded: LoadedDonorModel) -> DonorScorer:
        s = self.settings
        return DonorScorer(loaded, self.device, lambda m: donor_monitors(m, s.drift_window, s.psi_threshold))

    def _pipeline(self, stage: Stage, table: str | None) -> BatchPipeline:
        return BatchPipeline(
            stage, table, self.settings.changelog_topic(table) if table else None, executor=self.executor,
            publisher=self.publisher, guard=self.offset_guard, metrics=self.metrics, topics=self.settings.topics,
            depth=self.settings.pipeline_depth, on_processed=self._processed_up_to, on_fatal=self.fail)

    def _scored_above(self, partition: int) -> int | None:
        """The published marker of a transaction partition this worker scores; None if it does not."""
        if self.transaction_partitions is not None and partition not in self.transaction_partitions:
            return None
        return self.accounts.published.get(TRANSACTIONS_TOPIC, partition)

    def assign_transactions(self, assigned: list[int], revoked: list[int]) -> None:
        """Kafka moved transaction partitions to (or away from) this worker."""
        if self.transaction_partitions is None:
            self.transaction_partitions = set()
        self.transaction_partitions.difference_update(revoked)
        self.transaction_partitions.update(assigned)
        self.graph.forget(revoked)

    async def _seek(self, topic: str, partition: int, offset: int) -> None:
        if self.seek is None:
            raise TributaryError("the worker has no consumer to seek yet")
        await self.seek(topic, partition, offset)

    # -- running -------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Stop the worker loudly, so that an orchestrator restarts it.

        For what the worker cannot mend by waiting (outputs that cannot be published):
        carrying on would leave its partitions stalled behind the batch while the
        process and /metrics look healthy. The batch's events are not acked, so the
        restarted worker reads them again; `tributary worker` exits with code 3.
        """
        self.metrics.fatal_errors.inc()
        if self.fatal_error is not None:
            return
        self.fatal_error = reason
        log.critical("%s. Stopping the worker (exit code %d): its unpublished events are read again after a "
                     "restart", reason, EXIT_PUBLISH_FAILED)
        self.stopping = True
        self.request_stop()

    def _processed_up_to(self, records: list[RawRecord]) -> None:
        for record in records:
            partition = (record.topic, record.partition)
            self.processed[partition] = max(self.processed.get(partition, 0), record.offset + 1)

    def forget(self, partitions: list[Partition]) -> None:
        """These partitions moved (or come back): they start again at their committed offset."""
        self.offset_guard.forget(partitions)
        for partition in partitions:
            self.processed.pop(partition, None)
            self.metrics.forget_partition(*partition)

    def reload(self) -> None:
        """Newer model versions and the alert policy file, if any (on the scoring thread)."""
        self.models.reload_if_newer()
        self.alert_thresholds.reload(self.fraud_scorer.current.model)

    async def measure_commit_lag(self, assigned: list[Partition]) -> None:
        """Per assigned input partition: what is processed, what the group has committed, and
        the offsets between (processed but not committed; a crash now would read them
        again); and the consumer lag, from the end offset to what is processed."""
        probe = await self._get_probe()
        ends = await probe.end_offsets([TopicPartition(*partition) for partition in assigned]) if assigned else {}
        for partition in assigned:
            committed = await probe.committed(TopicPartition(*partition))
            # Nothing acked since the partition was assigned: it starts from the commit.
            processed = self.processed.get(partition, committed or 0)
            self.metrics.record_commit(*partition, processed, committed, ends.get(TopicPartition(*partition)))

    async def _checkpoint_graph(self, timeout_s: float) -> None:
        """A last graph snapshot once the batches are published, so the next start reads on from here."""
        checkpoints = self.graph.checkpoints
        if checkpoints is None or self.graph.merged <= self.graph.restored:
            return
        try:
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                self.executor, lambda: self.graph.checkpoint() and checkpoints.wait_written(timeout_s)), timeout_s)
        except asyncio.TimeoutError:
            log.warning("the last graph checkpoint was not written within %.0f s", timeout_s)

    async def stop(self, timeout_s: float) -> None:
        """Let the batches in flight publish (for at most `timeout_s`), then stop the clients."""
        self.stopping = True
        await asyncio.gather(*(pipeline.drain(timeout_s) for pipeline in self.pipelines.values()))
        await self._checkpoint_graph(timeout_s)
        await self.graph_feed.stop()
        await self.publisher.stop()
        await self.probe.stop()


def graph_checkpoints(settings: WorkerSettings, schema_hash: str) -> GraphCheckpoints | None:
    """Where this worker's graph snapshots go, or None when they are off."""
    if settings.graph_checkpoint_interval_s <= 0:
        return None
    directory = Path(settings.graph_checkpoint_dir or Path(tempfile.gettempdir()) / "tributary-graph" / settings.app_id)
    return GraphCheckpoints(directory, {"feature_schema": schema_hash, "topic": settings.topics.transactions,
                                        "partitions": settings.partitions})
