"""The worker's own Kafka clients beside Faust's: producers for its outputs and
changelogs, a probe consumer of its group, and Faust's broker credentials."""

from __future__ import annotations

from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.kafka.client_args import aiokafka_args
from stream.settings import WorkerSettings


async def start_producer(settings: WorkerSettings, **options: Any) -> AIOKafkaProducer:
    """A started producer that waits for all replicas; `options` are aiokafka's."""
    # A delivery waits at most this long: the publisher's own timeout bounds the rest.
    request_timeout_ms = int(min(30.0, settings.publish_timeout_s) * 1000)
    producer = AIOKafkaProducer(**aiokafka_args(settings), acks="all", request_timeout_ms=request_timeout_ms, **options)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # a half-started client still holds connections and tasks
        raise
    return producer


class ProbeConsumer:
    """A consumer of the worker's group that never subscribes, started on first use: the
    offset guard reads committed offsets and single records with it, and the commit lag
    is measured with it (stream.kafka.offset_guard)."""

    def __init__(self, settings: WorkerSettings):
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def get(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            s = self._settings
            isolation = "read_committed" if s.processing_guarantee == "exactly_once" else "read_uncommitted"
            self._consumer = AIOKafkaConsumer(**aiokafka_args(s), group_id=s.app_id, enable_auto_commit=False,
                                              isolation_level=isolation)
            await self._consumer.start()
        return self._consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


def faust_credentials(settings: WorkerSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust's form of the security settings (None for PLAINTEXT)."""
    args = aiokafka_args(settings)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=args["sasl_plain_username"], password=args["sasl_plain_password"],
            mechanism=args["sasl_mechanism"], ssl_context=args.get("ssl_context"),
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(args["ssl_context"])
    return None
