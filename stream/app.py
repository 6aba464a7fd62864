"""The Faust worker: wiring of topics, tables and agents around the pure pipeline stages.

Two agents, each with its table: transactions (accounts) and the three donor topics
(donors; only when a donor model is there). Per micro-batch of an agent
(`noack_take(batch_max, within=batch_wait_ms)`, concurrency 1: faust-streaming #606
loses events with concurrency > 1):
    1. the stage runs in the one worker thread (features, model), so the event loop keeps
       heartbeating and fetching while torch works;
    2. outputs (outcomes, alerts, dead letters) are published, every delivery awaited;
    3. then, per partition, a marker "outputs published up to offset O" and the changed
       accounts are written to the table's changelog topic, every delivery awaited;
    4. then the batch's events are acked; offsets are committed later, never past an
       unacked event.
Batches are pipelined (`pipeline_depth`): the agent hands a batch over and goes back to
buffering the next while the thread processes it, and batch N+1 is processed while N
publishes. Order is kept where it matters: the thread processes batches in order, and
N+1 publishes only after N's changelog is durable.
After a crash, redelivered events at or below the marker are not scored again, only
recorded into accounts that lack them; events above it find the state exactly as it
was before their batch, so scoring them again gives the same scores (and alert ids).
An event is acked only once its outputs and state are durable, so none is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor

import faust
import numpy as np
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from models.artifacts import ArtifactError, latest_version, served_root
from models.contracts import DeadLetterReason, DriftReport, encode
from models.features.transactions import EVENT_FEATURES
from models.fraud_artifact import LoadedFraudModel, load_fraud_model
from stream.kafka.client_args import aiokafka_args
from stream.kafka.faust_compat import count_acked_once, limit_fetch_wait
from stream.kafka.offset_guard import OffsetGuard
from stream.kafka.publisher import PublishAbandoned, PublishFailed, Publisher
from stream.log_limits import limit_repeats
from stream.monitoring.drift import DriftMonitor
from stream.monitoring.metrics import WorkerMetrics
from stream.monitoring.performance import PerformanceMonitor, RecentScores
from stream.pipeline.donors import DonorStage
from stream.pipeline.labels import LabelStage
from stream.pipeline.records import Output, RawRecord, StageResult, dead_letter
from stream.pipeline.transactions import TransactionStage
from stream.scoring.donor_scorer import DonorScorer, LoadedDonorModel, load_served_donor_model
from stream.scoring.fraud_scorer import FraudScorer, ModelSwapError
from stream.settings import WorkerSettings
from stream.state.faust_store import STORE_URL, PartitionedStateStore, register_store
from stream.state.partitioned_accounts import PartitionedAccounts
from stream.state.partitioned_donors import PartitionedDonors

log = logging.getLogger("tributary.worker")
# How often fetch positions are compared with what reached the pipeline (stream.kafka.offset_guard),
# and the commit lag is measured.
OFFSET_WATCH_S = 5.0
# The exit code of a worker that stopped because it could not publish (see `fail`).
EXIT_PUBLISH_FAILED = 3


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def faust_credentials(settings: WorkerSettings):
    args = aiokafka_args(settings)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=args["sasl_plain_username"], password=args["sasl_plain_password"],
            mechanism=args["sasl_mechanism"], ssl_context=args.get("ssl_context"),
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(args["ssl_context"])
    return None


class TributaryWorker:
    """Builds the Faust app; holds the state, the served models and the output producer."""

    def __init__(self, settings: WorkerSettings):
        register_store()
        count_acked_once()
        self.settings = settings
        if settings.fetch_max_wait_ms:
            limit_fetch_wait(settings.fetch_max_wait_ms)
        torch.set_num_threads(settings.torch_threads)
        self.metrics = WorkerMetrics(settings.topics)
        self.device = pick_device(settings.device)
        loaded = self._load_fraud_model()
        self.accounts = PartitionedAccounts(loaded.features)
        self.scorer = FraudScorer(loaded, self.device)
        self.recent = RecentScores(settings.label_memory) if settings.label_memory else None
        self.transactions = TransactionStage(self.accounts, self.scorer, settings.topics, settings.max_message_bytes,
                                             self.recent)
        self.label_stage: LabelStage | None = None
        if self.recent is not None:
            self.performance = PerformanceMonitor(loaded.manifest.metrics.get("test", {}), settings.label_window,
                                                  settings.performance_margin)
            self.label_stage = LabelStage(self.recent, self.performance, settings.topics, settings.max_message_bytes)
        self.drift = self._drift_monitor(loaded)
        self._announce("fraud", loaded)
        self.donor_stage: DonorStage | None = None
        donor_model = self._load_donor_model()
        if donor_model is not None:
            self.donors = PartitionedDonors(donor_model.features)
            self.donor_scorer = DonorScorer(donor_model, self.device)
            self.donor_stage = DonorStage(self.donors, self.donor_scorer, settings.topics, settings.max_message_bytes)
            self.donor_drift = self._donor_drift_monitors(donor_model)
            self._announce("donors", donor_model)
        # One thread: batches are processed strictly in order, and state is touched by it alone.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tributary-score")
        self.stopping = False  # set when the worker is told to stop: publishing retries end then
        self.fatal_error: str | None = None  # why the worker stopped itself (see `fail`)
        self.request_stop = lambda: os.kill(os.getpid(), signal.SIGTERM)  # how `fail` stops the process
        self.publisher = Publisher(self._start_producer, settings.publish_timeout_s, stopping=lambda: self.stopping,
                                   on_failure=lambda kind: self.metrics.publish_failures.labels(kind.value).inc())
        self._inflight: dict[object, deque[asyncio.Future]] = {}
        # (topic, partition) -> the next offset after the last event whose outputs are published and acked
        self.processed: dict[tuple[str, int], int] = {}
        self._probe: AIOKafkaConsumer | None = None
        self.offset_guard = OffsetGuard(self._probe_consumer, self._seek)
        self.app = self._create_app()

    # -- models -----------------------------------------------------------------------

    def _load_fraud_model(self) -> LoadedFraudModel:
        path = latest_version(served_root(self.settings.model_dir), self.settings.fraud_model)
        return load_fraud_model(path)

    def _load_donor_model(self) -> LoadedDonorModel | None:
        """The donor model to serve, or None (then the donor topics are left unconsumed)."""
        if not self.settings.donor_model:
            return None
        try:
            path = latest_version(served_root(self.settings.model_dir), self.settings.donor_model)
        except ArtifactError:
            return None  # said at start-up (start_metrics), once logging is set up
        return load_served_donor_model(path)

    def _donor_drift_monitors(self, loaded: LoadedDonorModel) -> list[DriftMonitor]:
        """One score monitor per target (ADWIN, Page-Hinkley, PSI against the validation histogram)."""
        references = loaded.manifest.reference_distributions.get("scores", {})
        monitors = []
        for target in loaded.targets:
            ref = references.get(target) or {}
            edges, counts = np.asarray(ref.get("edges", []), float), np.asarray(ref.get("counts", []), float)
            score = {"score": {"edges": edges[1:-1], "shares": counts / counts.sum()}} if counts.sum() else {}
            monitors.append(DriftMonitor(score, {}, loaded.manifest.name, loaded.version, window=self.settings.drift_window,
                                         psi_threshold=self.settings.psi_threshold, prefix=f"{target}:"))
        return monitors

    def _drift_monitor(self, loaded: LoadedFraudModel) -> DriftMonitor:
        return DriftMonitor(
            loaded.manifest.reference_distributions, {n: i for i, n in enumerate(EVENT_FEATURES)},
            loaded.manifest.name, loaded.version, window=self.settings.drift_window,
            psi_threshold=self.settings.psi_threshold,
        )

    def _announce(self, task: str, loaded: LoadedFraudModel | LoadedDonorModel) -> None:
        for labels in [m.labels for m in self.metrics.model_info.collect()[0].samples]:
            if labels["task"] == task:
                self.metrics.model_info.remove(labels["task"], labels["name"], labels["version"])
        self.metrics.model_info.labels(task, loaded.manifest.name, loaded.version).set(1)
        log.info("serving %s model %s version %s", task, loaded.manifest.name, loaded.version)

    def reload_if_newer(self) -> bool:
        """Swap in the newest version of each served model, if there is one (atomic per model)."""
        swapped = self._reload("fraud", self.settings.fraud_model, self.scorer, load_fraud_model)
        if self.donor_stage is not None:
            swapped |= self._reload("donors", self.settings.donor_model, self.donor_scorer, load_served_donor_model)
        return swapped

    def _reload(self, task: str, name: str, scorer: FraudScorer | DonorScorer, load) -> bool:
        try:
            newest = latest_version(served_root(self.settings.model_dir), name)
        except ArtifactError as error:
            log.warning("model reload: %s", error)
            return False
        if newest.name == scorer.current.version:
            return False
        try:
            loaded = load(newest)
            scorer.swap(loaded)
        except (ArtifactError, ModelSwapError, OSError, RuntimeError) as error:
            self.metrics.model_reloads.labels(task, "refused").inc()
            log.error("%s model reload refused, still serving %s: %s", task, scorer.current.version, error)
            return False
        if task == "fraud":
            self.drift = self._drift_monitor(loaded)
        else:
            self.donor_drift = self._donor_drift_monitors(loaded)
        self.metrics.model_reloads.labels(task, "swapped").inc()
        self._announce(task, loaded)
        return True

    # -- Faust wiring -----------------------------------------------------------------

    def _create_app(self) -> faust.App:
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{host.strip()}" for host in s.bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(s),
            key_serializer="raw",
            value_serializer="raw",  # never pickle: it would run code from anyone who can write a topic
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            topic_disable_leader=True,
            processing_guarantee=s.processing_guarantee,
            broker_session_timeout=s.session_timeout_s,
            broker_commit_interval=s.commit_interval_s,
            producer_max_batch_size=s.producer_max_batch_size or 16384,
            consumer_auto_offset_reset="earliest",
            web_enabled=False,
            table_standby_replicas=0,
            store="memory://",
        )
        transactions = app.topic(s.topics.transactions, partitions=s.partitions, key_serializer="raw", value_serializer="raw")
        worker = self

        def state_table(name: str, state) -> faust.Table:
            table = app.Table(name, partitions=s.partitions, store=STORE_URL, options={"state": state},
                              key_type=bytes, value_type=bytes)  # bytes in, bytes out: the "raw" codec
            if not isinstance(table.data, PartitionedStateStore):  # see STORE_URL: never again silently
                raise RuntimeError(f"the {name} table got a {type(table.data).__name__}, not PartitionedStateStore")
            return table

        def batch_agent(topic, name: str, stage, table) -> None:
            @app.agent(topic, concurrency=1, name=name)
            async def agent(stream):
                async for events in stream.noack_take(s.batch_max, within=s.batch_wait_ms / 1000):
                    await worker.submit(events, stage, table, stream)

        batch_agent(transactions, "score-transactions", self.transactions, state_table("accounts", self.accounts))
        if self.label_stage is not None:
            labels = app.topic(s.topics.fraud_labels, partitions=s.partitions, key_serializer="raw",
                               value_serializer="raw")
            batch_agent(labels, "match-labels", self.label_stage, None)
        if self.donor_stage is not None:
            # One agent over the three co-partitioned topics: partition p of each feeds
            # (and restores) partition p of the donors table.
            donor_topics = app.topic(s.topics.gifts, s.topics.donor_profiles, s.topics.donor_relationships,
                                     partitions=s.partitions, key_serializer="raw", value_serializer="raw")
            batch_agent(donor_topics, "score-donors", self.donor_stage, state_table("donors", self.donors))

        input_topics = {s.topics.transactions, s.topics.gifts, s.topics.donor_profiles, s.topics.donor_relationships,
                        s.topics.fraud_labels}

        @app.timer(interval=OFFSET_WATCH_S)
        async def watch_offsets():
            if app.rebalancing or app.in_recovery:
                return
            try:
                positions = {}
                for tp in app.consumer.assignment():
                    if tp.topic in input_topics:
                        position = await app.consumer.position(tp)
                        if position is not None:
                            positions[(tp.topic, tp.partition)] = position
                worker.metrics.offset_watch_seeks.inc(await worker.offset_guard.watch(positions))
                await worker.measure_commit_lag(positions)
            except Exception:  # a watch that fails is retried at the next tick; never stop the worker
                log.exception("offset watch failed")

        @app.timer(interval=s.reload_interval_s)
        async def reload_models():
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(worker.executor, worker.reload_if_newer)

        @app.task
        async def start_metrics():
            # Here, not in __init__: Faust sets up logging only when the worker starts.
            limit_repeats()
            log.info("serving fraud model %s version %s", worker.scorer.current.manifest.name,
                     worker.scorer.current.version)
            if worker.donor_stage is None:
                log.warning("not consuming the donor topics: no '%s' model under %s (train one with "
                            "`tributary train donors`)", s.donor_model, s.model_dir)
            else:
                log.info("serving donor model %s version %s", worker.donor_scorer.current.manifest.name,
                         worker.donor_scorer.current.version)
            if s.metrics_port:
                worker.metrics.serve(s.metrics_port, s.metrics_address)
                log.info("metrics on http://%s:%d/metrics", s.metrics_address, s.metrics_port)

        # A partition that moves (or comes back) starts again at its committed offset.
        @app.on_partitions_revoked.connect
        async def forget_revoked(app, revoked, **kwargs):
            worker.offset_guard.forget(tuple(tp) for tp in revoked)
            worker.forget_processed(tuple(tp) for tp in revoked)

        @app.on_partitions_assigned.connect
        async def forget_assigned(app, assigned, **kwargs):
            worker.offset_guard.forget(tuple(tp) for tp in assigned)
            for tp in assigned:
                if tp.topic in input_topics:
                    worker.metrics.assigned.labels(tp.topic, str(tp.partition)).set(1)

        @app.on_before_shutdown.connect
        async def stop_producers(app, **kwargs):
            worker.stopping = True
            await worker.drain(timeout_s=s.shutdown_timeout_s)
            await worker.publisher.stop()
            if worker._probe is not None:
                await worker._probe.stop()
            worker._probe = None

        return app

    async def submit(self, events, stage: TransactionStage | DonorStage, table, stream) -> None:
        """Hand a batch to the pipeline; returns once it has a slot, so Faust buffers the
        next batch meanwhile. Never raises (an exception would stop the agent)."""
        try:
            admitted = await self.offset_guard.admit(events)
        except Exception:  # a bug in the guard must not stop the agent; the stages still dedupe
            log.exception("offset check failed; processing the batch as it came")
            admitted = events
        if len(admitted) < len(events):
            self.metrics.held_back.inc(len(events) - len(admitted))
            events = admitted
            if not events:
                return
        inflight = self._inflight.setdefault(stage, deque())
        while len(inflight) >= self.settings.pipeline_depth:
            await asyncio.wait({inflight[0]})
        records = [
            RawRecord(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value,
                      int(e.message.timestamp * 1000) if e.message.timestamp else None)
            for e in events
        ]
        # Into the (one-thread) executor now, so batches are processed in submission order.
        processing = asyncio.get_running_loop().run_in_executor(self.executor, stage.process, records)
        previous = inflight[-1] if inflight else None
        task = asyncio.ensure_future(self._complete(events, records, processing, previous, stage, table, stream))
        inflight.append(task)
        task.add_done_callback(inflight.remove)

    async def _complete(self, events, records, processing, previous, stage, table, stream) -> None:
        try:
            result = await self._result(records, processing)
            if previous is not None:
                await asyncio.wait({previous})  # publish in batch order
            await self.handle_result(records, result, stage, table)
            for event in events:
                await stream.ack(event)
            self._processed_up_to(records)
        except asyncio.CancelledError:  # shutting down: unacked events are redelivered
            raise
        except PublishAbandoned as stopped:
            log.info("%s; its %d events are read again after the restart", stopped, len(records))
        except PublishFailed as error:  # unacked, so never committed: a restarted worker scores them
            self.fail(str(error))
        except Exception:  # a bug: these events stay unacked, so offsets are never committed past them
            log.exception("publishing a batch of %d failed; its events will be redelivered after a restart",
                          len(records))

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

    def forget_processed(self, partitions) -> None:
        for partition in partitions:
            self.processed.pop(partition, None)
            self.metrics.forget_partition(*partition)

    async def measure_commit_lag(self, assigned: dict[tuple[str, int], int]) -> None:
        """Per assigned input partition: what is processed, what the group has committed, and
        the offsets between (processed but not committed; a crash now would read them again)."""
        probe = await self._probe_consumer()
        for partition in assigned:
            committed = await probe.committed(TopicPartition(*partition))
            # Nothing acked since the partition was assigned: it starts from the commit.
            processed = self.processed.get(partition, committed or 0)
            self.metrics.record_commit(*partition, processed, committed)

    async def drain(self, timeout_s: float) -> None:
        """Let in-flight batches finish publishing (called before the producers stop)."""
        pending = [task for queue in self._inflight.values() for task in queue]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    async def _result(self, records: list[RawRecord], processing) -> StageResult:
        try:
            return await processing
        except Exception as error:  # a bug, not bad input: fail these events loudly, keep going
            log.exception("batch of %d failed; dead-lettering it", len(records))
            result = StageResult(consumed=len(records))
            for record in records:
                letter = dead_letter(record, DeadLetterReason.PROCESSING_ERROR, type(error).__name__, str(error))
                result.add_dead_letter(self.settings.topics.dead_letters, record, letter)
            return result

    async def handle_result(self, records: list[RawRecord], result: StageResult, stage, table) -> None:
        """Publish a processed batch: outputs, then its changelog, then metrics."""
        started = time.perf_counter()
        for report in self._drift_reports(stage, result) + result.reports:
            result.outputs.append(Output(self.settings.topics.drift_reports, report.monitor.encode(), encode(report)))
            self.metrics.drift_reports.labels(report.model_name, report.monitor).inc()
        await self.publisher.publish(result.outputs)
        # Durable before the next batch: otherwise a crash could keep batch N's outputs
        # but lose batch N-1's state, and redelivered events would see an older state.
        # (Faust's own producer.flush() gives up after 0.1 s per message, so it cannot
        # promise this; a producer of our own, awaited, can.)
        if table is not None:
            await self.publisher.publish_changelog(self.settings.changelog_topic(table.name), result.changelog)
        result.timings["publish"] = time.perf_counter() - started
        done_ms = time.time() * 1000
        for record in records:
            if record.timestamp_ms is not None:
                self.metrics.end_to_end.labels(record.topic).observe(max(done_ms - record.timestamp_ms, 0) / 1000)
        consumed = Counter(record.topic for record in records)
        self.metrics.record_batch(records[0].topic if stage is not self.donor_stage else self.settings.topics.gifts,
                                  result, consumed)
        if stage is self.label_stage:
            for measure, value in self.performance.latest.items():
                self.metrics.labelled_performance.labels(measure).set(value)
        if table is not None:
            self.metrics.state_entities.labels(table.name).set(sum(table.data.partitioned.entities().values()))

    def _drift_reports(self, stage: TransactionStage | DonorStage, result: StageResult) -> list[DriftReport]:
        if result.scores is None or not len(result.scores):
            return []
        if stage is self.transactions:
            pairs = [(self.drift, result.scores, result.event_features)]
        else:
            empty = np.zeros((len(result.scores), 0))
            pairs = [(monitor, result.scores[:, j], empty) for j, monitor in enumerate(self.donor_drift)]
        reports = []
        for monitor, scores, features in pairs:
            reports += monitor.observe(scores, features)
            for name, value in monitor.latest.items():
                self.metrics.drift_statistic.labels(monitor.model_name, name).set(value)
        return reports

    async def _probe_consumer(self) -> AIOKafkaConsumer:
        """A consumer of the worker's group that never subscribes: the offset guard reads
        committed offsets and single records with it (see stream.kafka.offset_guard)."""
        if self._probe is None:
            isolation = "read_committed" if self.settings.processing_guarantee == "exactly_once" else "read_uncommitted"
            self._probe = AIOKafkaConsumer(**aiokafka_args(self.settings), group_id=self.settings.app_id,
                                           enable_auto_commit=False, isolation_level=isolation)
            await self._probe.start()
        return self._probe

    async def _seek(self, topic: str, partition: int, offset: int) -> None:
        await self.app.consumer.seek(TP(topic, partition), offset)

    async def _start_producer(self, **options) -> AIOKafkaProducer:
        # A delivery waits at most this long: the publisher's own timeout bounds the rest.
        request_timeout_ms = int(min(30.0, self.settings.publish_timeout_s) * 1000)
        producer = AIOKafkaProducer(**aiokafka_args(self.settings), acks="all", request_timeout_ms=request_timeout_ms,
                                    **options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # a half-started client still holds connections and tasks
            raise
        return producer
