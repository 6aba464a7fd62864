"""The Faust wiring of a worker: topics, tables, agents, timers and signals, and no more.

What each part does lives elsewhere: the batch's path in stream.pipeline.batches, its
order of durability in stream.state.commit_protocol, the parts themselves in
stream.worker. Three agents, concurrency 1 each (faust-streaming #606 loses events
with concurrency > 1), each taking micro-batches with `noack_take(batch_max,
within=batch_wait_ms)` and handing them to its pipeline:
- `score-transactions`: the transactions topic, with the accounts table;
- `match-labels`: the late-label topic (when TRIBUTARY_LABEL_MEMORY > 0);
- `score-donors`: the three co-partitioned donor topics, with the donors table (when a
  donor model is served).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from stream.kafka.clients import faust_credentials
from stream.kafka.faust_compat import resume_read_offset, seek_back
from stream.log_limits import limit_repeats
from stream.pipeline.batches import BatchPipeline
from stream.settings import WorkerSettings
from stream.state.commit_protocol import PartitionedState
from stream.state.faust_store import STORE_URL, PartitionedStateStore
from stream.worker import TributaryWorker

lifecycle = logging.getLogger("tributary.lifecycle")
log = logging.getLogger("tributary.worker")
# How often fetch positions are compared with what reached the pipeline (stream.kafka.offset_guard),
# and the commit lag is measured.
OFFSET_WATCH_S = 5.0


def create_app(worker: TributaryWorker) -> faust.App:
    s = worker.settings
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
        broker_heartbeat_interval=s.heartbeat_interval_s,
        broker_commit_interval=s.commit_interval_s,
        producer_max_batch_size=s.producer_max_batch_size or 16384,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_standby_replicas=0,
        store="memory://",
        # Faust makes empty table folders under its datadir ("<app id>-data" in the working
        # directory by default); our tables keep no files, so they go out of the way.
        datadir=str(_faust_datadir(s.app_id)),
    )

    async def seek(topic: str, partition: int, offset: int) -> None:
        await seek_back(app.consumer, TP(topic, partition), offset)

    def settled(topic: str, partition: int) -> None:
        resume_read_offset(app.consumer, TP(topic, partition))

    worker.seek, worker.settled = seek, settled

    def topic(*names: str) -> faust.TopicT:
        return app.topic(*names, partitions=s.partitions, key_serializer="raw", value_serializer="raw")

    def state_table(name: str, state: PartitionedState) -> None:
        table = app.Table(name, partitions=s.partitions, store=STORE_URL, options={"state": state},
                          key_type=bytes, value_type=bytes)  # bytes in, bytes out: the "raw" codec
        if not isinstance(table.data, PartitionedStateStore):  # see STORE_URL: never again silently
            raise RuntimeError(f"the {name} table got a {type(table.data).__name__}, not PartitionedStateStore")

    def batch_agent(source: faust.TopicT, name: str, pipeline: BatchPipeline) -> None:
        @app.agent(source, concurrency=1, name=name)
        async def agent(stream: Any) -> None:  # a faust.Stream (StreamT lacks noack_take)
            async for events in stream.noack_take(s.batch_max, within=s.batch_wait_ms / 1000):
                await pipeline.submit(events, stream.ack)

    pipelines = worker.pipelines
    state_table("accounts", worker.accounts)
    batch_agent(topic(s.topics.transactions), "score-transactions", pipelines["transactions"])
    if "labels" in pipelines:
        batch_agent(topic(s.topics.fraud_labels), "match-labels", pipelines["labels"])
    if "donors" in pipelines:
        # One agent over the three co-partitioned topics: partition p of each feeds
        # (and restores) partition p of the donors table.
        state_table("donors", worker.donors)
        batch_agent(topic(s.topics.gifts, s.topics.donor_profiles, s.topics.donor_relationships), "score-donors",
                    pipelines["donors"])
    input_topics = {s.topics.transactions, s.topics.gifts, s.topics.donor_profiles, s.topics.donor_relationships,
                    s.topics.fraud_labels}

    @app.timer(interval=OFFSET_WATCH_S)
    async def watch_offsets() -> None:
        if app.rebalancing:
            return
        try:
            assigned = [(tp.topic, tp.partition) for tp in app.consumer.assignment() if tp.topic in input_topics]
            if not app.in_recovery:  # while tables recover, input partitions are paused on purpose
                positions = {}
                for partition in assigned:
                    position = await app.consumer.position(TP(*partition))
                    if position is not None:
                        positions[partition] = position
                worker.metrics.offset_watch_seeks.inc(await worker.offset_guard.watch(positions))
            await worker.measure_commit_lag(assigned)
        except Exception:  # a watch that fails is retried at the next tick; never stop the worker
            log.exception("offset watch failed")

    @app.timer(interval=s.reload_interval_s)
    async def reload_models() -> None:
        await asyncio.get_running_loop().run_in_executor(worker.executor, worker.reload)

    @app.task
    async def start_graph_feed() -> None:
        await worker.graph_feed.start()

    @app.task
    async def start_metrics() -> None:
        # Here, not at construction: Faust sets up logging only when the worker starts.
        limit_repeats()
        for task in worker.models.tasks:
            worker.models.announce(task)
        if "donors" not in pipelines:
            log.warning("not consuming the donor topics: no '%s' model under %s (train one with "
                        "`tributary train donors`)", worker.donor_model_name or s.donor_model, s.model_dir)
        if s.metrics_port:
            worker.metrics.serve(s.metrics_port, s.metrics_address)
            log.info("metrics on http://%s:%d/metrics", s.metrics_address, s.metrics_port)

    # A partition that moves (or comes back) starts again at its committed offset.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # Faust's typing wants *args; it calls (sender, value, signal=...)
    async def forget_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        worker.forget([(tp.topic, tp.partition) for tp in revoked])
        worker.assign_transactions([], [tp.partition for tp in revoked if tp.topic == s.topics.transactions])

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # Faust's typing wants *args; it calls (sender, value, signal=...)
    async def forget_assigned(app: faust.App, assigned: set[TP], **kwargs: Any) -> None:
        worker.forget([(tp.topic, tp.partition) for tp in assigned])
        worker.assign_transactions([tp.partition for tp in assigned if tp.topic == s.topics.transactions], [])
        for tp in assigned:
            if tp.topic in input_topics:
                worker.metrics.assigned.labels(tp.topic, str(tp.partition)).set(1)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # Faust's typing wants *args; it calls (sender, signal=...)
    async def say_ready(app: faust.App, **kwargs: Any) -> None:
        _show_lifecycle_at_any_level()  # here: the first rebalance can complete before any task runs
        held: dict[str, list[int]] = {}
        for tp in sorted(app.consumer.assignment()):
            if tp.topic in input_topics:
                held.setdefault(tp.topic, []).append(tp.partition)
        what = "; ".join(f"{topic} {','.join(map(str, parts))}" for topic, parts in held.items()) or "none"
        lifecycle.info("worker ready: consuming input partitions %s (group %s at %s)", what, s.app_id,
                       s.bootstrap_servers)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # Faust's typing wants *args; it calls (sender, value, signal=...)
    async def stop_clients(app: faust.App, **kwargs: Any) -> None:
        await worker.stop(timeout_s=s.shutdown_timeout_s)

    return app


def _show_lifecycle_at_any_level() -> None:
    """The few lifecycle lines ("worker ready") reach the log at the default level
    (warning) too: an operator should see a healthy worker say it is up. Faust's own
    handlers filter by the level, so these lines have a handler of their own."""
    if not lifecycle.handlers:
        handler = logging.StreamHandler(sys.__stderr__)  # the real one: Faust turns sys.stderr into a logger
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"))
        lifecycle.addHandler(handler)
        lifecycle.setLevel(logging.INFO)
        lifecycle.propagate = False


def _faust_datadir(app_id: str) -> Path:
    """Where Faust's (empty) table folders go; Faust makes the last level itself only."""
    parent = Path(tempfile.gettempdir()) / "tributary-faust"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / app_id


def build_worker(settings: WorkerSettings) -> tuple[TributaryWorker, faust.App]:
    worker = TributaryWorker(settings)
    return worker, create_app(worker)
