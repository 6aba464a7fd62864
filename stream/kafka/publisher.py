"""Publishing a batch's outputs and changelog: every delivery awaited, no record can wedge it.

Three kinds of failure, told apart by `classify`:
- the broker is away or busy (`RETRY`): the failed records are sent again with backoff,
  for at most `timeout_s` in all; after that `PublishFailed` says so, and the worker
  stops loudly instead of hanging with its partitions stalled;
- this one record can never be sent (`RECORD`: too large, corrupt): its `fallback` (a
  smaller record saying the same, see `stream.pipeline.records.Output`) is sent
  instead, once; without a fallback, `PublishFailed`;
- retrying cannot help anything (`FATAL`: authorization, unknown or invalid topic, a
  client misconfiguration): `PublishFailed` at once.

Before issue #13 every KafkaError was retried forever: one 800 KB dead letter over the
producer's 1 MiB limit stopped every partition for good, and each retry published the
batch's other outputs again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from models.errors import TributaryError
from stream.pipeline.records import Output
from stream.state.commit_protocol import ChangelogWrite

log = logging.getLogger("tributary.publisher")

# 1 MiB is Kafka's default largest message; a changelog batch travels as one.
CHANGELOG_BATCH_BYTES = 1024 * 1024


class Failure(enum.Enum):
    RETRY = "retry"
    RECORD = "record"
    FATAL = "fatal"


# Errors about the record itself: sending it again gives the same answer.
_RECORD_ERRORS = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTimestampError,
)
# Not marked retriable by aiokafka, but what a broker outage or a slow broker raises.
_TRANSIENT_ERRORS = (kafka_errors.KafkaTimeoutError, kafka_errors.RequestTimedOutError, asyncio.TimeoutError,
                     ConnectionError)


def classify(error: BaseException) -> Failure:
    """What a failed send means for the record and for the worker."""
    if isinstance(error, _RECORD_ERRORS):
        return Failure.RECORD
    if isinstance(error, _TRANSIENT_ERRORS) or getattr(error, "retriable", False):
        return Failure.RETRY
    return Failure.FATAL


class PublishFailed(TributaryError):
    """Outputs that will not be published: the worker must stop (and be restarted).

    Their events stay unacked, so a restarted worker reads and scores them again.
    """


class PublishAbandoned(TributaryError):
    """The worker is stopping; what was not published is redelivered after the restart."""


class Publisher:
    """Sends outputs and changelog writes through producers it starts on first use.

    `timeout_s` bounds the retries of one call; `stopping()` tells it the worker is
    shutting down (retries then end at once); `on_failure(kind)` counts each failed
    send (a metric).
    """

    def __init__(self, start_producer: Callable[..., Awaitable[AIOKafkaProducer]], timeout_s: float,
                 stopping: Callable[[], bool] = lambda: False, on_failure: Callable[[Failure], None] = lambda kind: None,
                 first_backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        self._start_producer = start_producer
        self.timeout_s = timeout_s
        self._stopping = stopping
        self._on_failure = on_failure
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._outputs: AIOKafkaProducer | None = None
        self._changelog: AIOKafkaProducer | None = None

    async def publish(self, outputs: Sequence[Output]) -> None:
        """Send every output and wait for its delivery."""
        pending = list(outputs)
        retry = _Retry(self, f"{len(outputs)} outputs")
        while pending:
            errors = await retry.attempt(self._output_producer, _send, pending)
            failed: list[tuple[Output, BaseException]] = [(o, e) for o, e in zip(pending, errors) if e is not None]
            if not failed:
                return
            fallbacks, transient = [], []
            for output, error in failed:
                kind = self._failed(error)
                if kind is Failure.FATAL:
                    raise PublishFailed(f"publishing to {output.topic} failed with {_name(error)}, which retrying "
                                        f"cannot mend: {error}") from error
                if kind is Failure.RECORD:
                    if output.fallback is None:
                        raise PublishFailed(
                            f"{output.topic} refused a record of {_size(output):,} bytes ({_name(error)}); raise the "
                            "topic's max.message.bytes or the broker's message.max.bytes") from error
                    log.warning("%s refused a record of %d bytes (%s); publishing its %d-byte summary instead",
                                output.topic, _size(output), _name(error), _size(output.fallback))
                    fallbacks.append(output.fallback)
                else:
                    transient.append(output)
            if transient:
                await retry.wait(failed[0][1])
            pending = fallbacks + _with_followers(pending, transient)

    async def publish_changelog(self, topic: str, changelog: dict[int, ChangelogWrite]) -> None:
        """Per partition, in this order: the published-offset markers, the changed
        entities, then the last marker alone again.

        aiokafka sends a partition's batches one at a time, in order. The order matters
        little for safety: outputs are durable before any of it, and every entity row
        records the offsets applied to it, so a row newer than its marker is never
        applied twice (`stream.state`). Many entities per batch keep the changelog cheap;
        ending every write on a single-record batch keeps the partition's end offset
        right even on the embedded broker, which reports it wrongly after a multi-record
        batch (Faust's recovery reads only up to that offset, so it would silently
        restore stale state).
        """
        writes = {p: w for p, w in changelog.items() if w.records or w.markers}
        batches = []
        for partition, write in writes.items():
            if write.markers:
                batches.append(_Batch(partition, write.markers))
            batches += [_Batch(partition, chunk) for chunk in _chunks(write.records)]
            if write.markers:
                batches.append(_Batch(partition, write.markers[-1:], last=True))
        await self._send_batches(topic, batches, f"changelog of {len(writes)} partitions")

    async def _send_batches(self, topic: str, batches: list[_Batch], what: str) -> None:
        pending = batches
        retry = _Retry(self, what)
        while pending:
            errors = await retry.attempt(self._changelog_producer, partial(_send_batch, topic=topic), pending)
            failed = [(b, e) for b, e in zip(pending, errors) if e is not None]
            if not failed:
                return
            for batch, error in failed:
                if self._failed(error) is not Failure.RETRY:
                    raise PublishFailed(
                        f"the changelog topic {topic} refused a batch of {len(batch.records)} records "
                        f"({_name(error)}: {error}); it must take messages of {CHANGELOG_BATCH_BYTES:,} bytes") from error
            await retry.wait(failed[0][1])
            again = [b for b, _ in failed]
            # A partition's last marker goes after its retried batches again (see publish_changelog).
            stale = {b.partition for b in again if not b.last} - {b.partition for b in again if b.last}
            pending = [b for b in again if not b.last] + [b for b in pending if b.last and (b in again or b.partition in stale)]

    def _failed(self, error: BaseException) -> Failure:
        if not isinstance(error, (kafka_errors.KafkaError, *_TRANSIENT_ERRORS)):
            raise error  # a bug, not the broker: the caller's handler reports it
        kind = classify(error)
        self._on_failure(kind)
        return kind

    async def _output_producer(self) -> AIOKafkaProducer:
        # Outputs batch freely; only changelogs need the embedded broker's one-record batches.
        if self._outputs is None:
            self._outputs = await self._start_producer(max_batch_size=256 * 1024, linger_ms=2)
        return self._outputs

    async def _changelog_producer(self) -> AIOKafkaProducer:
        # Batches are built explicitly (see publish_changelog).
        if self._changelog is None:
            self._changelog = await self._start_producer(max_batch_size=CHANGELOG_BATCH_BYTES, linger_ms=0)
        return self._changelog

    async def stop(self) -> None:
        producers, self._outputs, self._changelog = (self._outputs, self._changelog), None, None
        for producer in producers:
            if producer is not None:
                await producer.stop()


@dataclass(eq=False)
class _Batch:
    """One record batch of a changelog partition; `last`: the marker that ends a write."""

    partition: int
    records: list[tuple[bytes, bytes]]
    last: bool = False


class _Retry:
    """Backoff between attempts of one call, bounded in total by the publisher's timeout."""

    def __init__(self, publisher: Publisher, what: str):
        self._publisher = publisher
        self._what = what
        self._deadline = time.monotonic() + publisher.timeout_s
        self._delay = publisher._first_backoff_s
        self._attempts = 0

    async def attempt(self, producer: Callable[[], Awaitable[AIOKafkaProducer]],
                      send: Callable[..., Awaitable[Any]], items: Sequence[Any]) -> list[BaseException | None]:
        """One try of `send(producer, item)` for every item, each one's exception or None; a
        producer that cannot start fails every send. A try ends within the producers'
        request timeout (stream.kafka.clients: at most 30 s, and never more than the publish
        timeout): cutting it short here would cancel aiokafka's own futures under it."""
        try:
            started = await producer()
            return await _gather_each([send(started, item) for item in items])
        except (kafka_errors.KafkaError, *_TRANSIENT_ERRORS) as error:
            return [error] * len(items)

    async def wait(self, error: BaseException) -> None:
        publisher = self._publisher
        self._attempts += 1
        if publisher._stopping():
            raise PublishAbandoned(f"stopping with {self._what} unpublished ({_name(error)})")
        if time.monotonic() + self._delay > self._deadline:
            raise PublishFailed(f"could not publish {self._what} within TRIBUTARY_PUBLISH_TIMEOUT_S="
                                f"{publisher.timeout_s:g} s ({self._attempts} attempts; last error {_name(error)}: "
                                f"{error}); is the broker reachable?") from error
        # Once per attempt, and attempts back off to 30 s: an outage does not flood the log.
        log.error("publishing %s failed (%s: %s); retrying in %.1f s", self._what, _name(error), error, self._delay)
        waited = time.monotonic()
        while time.monotonic() - waited < self._delay:
            if publisher._stopping():
                raise PublishAbandoned(f"stopping with {self._what} unpublished ({_name(error)})")
            await asyncio.sleep(min(0.1, self._delay))
        self._delay = min(self._delay * 2, publisher._max_backoff_s)


async def _send(producer: AIOKafkaProducer, output: Output) -> Any:
    # aiokafka raises some errors (a record over max_request_size) from send() itself,
    # others through the delivery future: both end up as this coroutine's exception.
    return await (await producer.send(output.topic, output.value, key=output.key))


async def _send_batch(producer: AIOKafkaProducer, batch: _Batch, topic: str) -> Any:
    records = producer.create_batch()
    for key, value in batch.records:
        records.append(key=key, value=value, timestamp=None)
    return await (await producer.send_batch(records, topic, partition=batch.partition))


async def _gather_each(sends: list[Awaitable[Any]]) -> list[BaseException | None]:
    """Run the sends together; each one's exception, or None where it was delivered."""
    results = await asyncio.gather(*sends, return_exceptions=True)
    for result in results:
        if isinstance(result, asyncio.CancelledError):
            raise result
    return [result if isinstance(result, BaseException) else None for result in results]


def _with_followers(sent: list[Output], failed: list[Output]) -> list[Output]:
    """The failed outputs, and after them every output that followed one of them with the
    same topic and key: sent again in order, so a key's latest record stays the latest
    (a segment update after a failed one must not be overtaken by it)."""
    failed_ids = {id(o) for o in failed}
    stuck: set[tuple[str, bytes | None]] = set()
    again = []
    for output in sent:
        if id(output) in failed_ids or (output.topic, output.key) in stuck:
            stuck.add((output.topic, output.key))
            again.append(output)
    return again


def _chunks(records: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
    """Split records into groups that fit one record batch (with room for overhead)."""
    out: list[list[tuple[bytes, bytes]]] = []
    current: list[tuple[bytes, bytes]] = []
    size = 0
    for key, value in records:
        length = len(key) + len(value) + 64
        if current and size + length > CHANGELOG_BATCH_BYTES * 0.9:
            out.append(current)
            current, size = [], 0
        current.append((key, value))
        size += length
    if current:
        out.append(current)
    return out


def _size(output: Output) -> int:
    return len(output.value) + len(output.key or b"")


def _name(error: BaseException) -> str:
    return type(error).__name__
