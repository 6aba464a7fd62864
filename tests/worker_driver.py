"""A worker built in-process with fake Kafka doors, driven batch by batch (functional tests)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from stream.settings import WorkerSettings
from stream.worker import TributaryWorker
from tests.fakes import FakeProbe, FakeProducer, LogFeed
from tests.serving_helpers import transaction_record


class Event:
    """A Faust event as the agents see one: its message, and whether it was acked."""

    def __init__(self, record):
        self.message = SimpleNamespace(topic=record.topic, partition=record.partition, offset=record.offset,
                                       key=record.key, value=record.value, timestamp=None)


class Driver:
    """A worker with fake Kafka doors; `journal` is every delivery and ack, in order."""

    def __init__(self, model_dir, fail=lambda topic, key, value, attempt: None, **settings):
        self.journal: list[tuple[str, object]] = []
        self.producer = FakeProducer(fail)
        journal = self.journal

        class Journalled(FakeProducer):
            async def send(inner, topic, value, key=None):  # noqa: N805 - the fake's own self is `inner`
                future = await self.producer.send(topic, value, key=key)
                if not future.exception():
                    journal.append(("sent", topic))
                return future

            async def send_batch(inner, batch, topic, partition):  # noqa: N805
                return await inner.send(topic, tuple(batch.records), key=partition)

        async def start_producer(**options):
            return Journalled()

        broker = FakeProbe({("transactions", p): [0] for p in range(4)}, {})
        self.broker = broker

        async def probe():
            return broker

        settings.setdefault("graph_idle_ms", 0)  # the in-memory topic holds everything there is
        self.settings = WorkerSettings(model_dir=str(model_dir), metrics_port=0, publish_timeout_s=1.0, **settings)
        self.feed = LogFeed(self.settings.partitions)  # the transactions topic, as produced so far
        self.worker = TributaryWorker(self.settings, start_producer=start_producer, probe=probe, graph_feed=self.feed)
        self.stops = []
        self.worker.request_stop = lambda: self.stops.append(True)

    async def ack(self, event) -> None:
        self.journal.append(("ack", event.message.offset))

    def run(self, pipeline: str, batches) -> None:
        async def drive():
            for batch in batches:
                if pipeline == "transactions":
                    self.feed.produce(batch)
                await self.worker.pipelines[pipeline].submit([Event(r) for r in batch], self.ack)
            await self.worker.pipelines[pipeline].drain(30)

        asyncio.run(drive())

    def sent(self, topic: str) -> list:
        return [value for t, _, value in self.producer.sent if t == topic]


def transactions(n, start=0):
    return [transaction_record(i, f"acct{i % 7}", f"acct{(i + 3) % 7}", 20.0 + i, offset=i) for i in range(start, n)]
