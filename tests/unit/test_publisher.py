"""The publisher against a fake producer: what is sent again, what is given up, and when."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import errors as kafka_errors

from stream.kafka.publisher import Failure, PublishAbandoned, Publisher, PublishFailed, classify
from stream.pipeline.records import Output
from stream.state.commit_protocol import ChangelogWrite
from tests.fakes import FakeProducer


def publisher_over(producer, timeout_s=5.0, stopping=lambda: False):
    failures = []

    async def start(**options):
        return producer

    publisher = Publisher(start, timeout_s=timeout_s, stopping=stopping, on_failure=failures.append,
                          first_backoff_s=0.01, max_backoff_s=0.02)
    return publisher, failures


def outputs(n, topic="event-outcomes"):
    return [Output(topic, f"k{i}".encode(), f"v{i}".encode()) for i in range(n)]


def test_everything_is_delivered_once_and_in_order():
    producer = FakeProducer()
    publisher, failures = publisher_over(producer)
    asyncio.run(publisher.publish(outputs(5)))
    assert [v for _, _, v in producer.sent] == [b"v0", b"v1", b"v2", b"v3", b"v4"] and not failures


@pytest.mark.parametrize("at_send", [True, False], ids=["raised-by-send", "raised-by-delivery"])
def test_a_record_too_large_is_replaced_by_its_fallback_and_nothing_else_is_sent_twice(at_send):
    big = Output("dead-letters", b"k", b"x" * 2000, fallback=Output("dead-letters", b"k", b"summary"))
    producer = FakeProducer(lambda t, k, v, a: kafka_errors.MessageSizeTooLargeError() if v == big.value else None,
                            at_send=(kafka_errors.MessageSizeTooLargeError,) if at_send else ())
    publisher, failures = publisher_over(producer)
    asyncio.run(publisher.publish([*outputs(2), big, *outputs(2, "fraud-alerts")]))
    assert sorted(v for _, _, v in producer.sent) == sorted([b"v0", b"v1", b"summary", b"v0", b"v1"])
    assert failures == [Failure.RECORD]


def test_a_record_too_large_without_a_fallback_stops_the_worker_with_what_to_do():
    producer = FakeProducer(lambda t, k, v, a: kafka_errors.MessageSizeTooLargeError() if v == b"v1" else None)
    publisher, _ = publisher_over(producer)
    with pytest.raises(PublishFailed, match="max.message.bytes"):
        asyncio.run(publisher.publish(outputs(3)))


def test_a_transient_failure_resends_only_the_failed_record_and_what_followed_it_under_its_key():
    sent = [Output("donor-segments", b"d1", b"d1-first"), Output("donor-segments", b"d2", b"d2-only"),
            Output("donor-segments", b"d1", b"d1-second")]
    producer = FakeProducer(lambda t, k, v, a: kafka_errors.KafkaTimeoutError() if v == b"d1-first" and a == 1 else None)
    publisher, failures = publisher_over(producer)
    asyncio.run(publisher.publish(sent))
    assert [v for _, _, v in producer.sent] == [b"d2-only", b"d1-second", b"d1-first", b"d1-second"]
    assert failures == [Failure.RETRY]  # d1's latest record is still its latest


def test_an_outage_longer_than_the_timeout_fails_loudly():
    producer = FakeProducer(lambda t, k, v, a: kafka_errors.KafkaConnectionError("broker away"))
    publisher, failures = publisher_over(producer, timeout_s=0.2)
    with pytest.raises(PublishFailed, match="within TRIBUTARY_PUBLISH_TIMEOUT_S=0.2 s.*KafkaConnectionError"):
        asyncio.run(publisher.publish(outputs(2)))
    assert len(failures) >= 4 and set(failures) == {Failure.RETRY}


def test_stopping_ends_the_retries_at_once():
    producer = FakeProducer(lambda t, k, v, a: kafka_errors.KafkaConnectionError("broker away"))
    publisher, _ = publisher_over(producer, timeout_s=60, stopping=lambda: True)
    with pytest.raises(PublishAbandoned):
        asyncio.run(asyncio.wait_for(publisher.publish(outputs(2)), 5))


def test_an_authorization_error_is_not_retried():
    producer = FakeProducer(lambda t, k, v, a: kafka_errors.TopicAuthorizationFailedError())
    publisher, failures = publisher_over(producer)
    with pytest.raises(PublishFailed, match="retrying cannot mend"):
        asyncio.run(publisher.publish(outputs(1)))
    assert failures == [Failure.FATAL] and producer.attempts == {("event-outcomes", b"k0", b"v0"): 1}


def test_a_bug_is_not_taken_for_the_broker():
    producer = FakeProducer(lambda t, k, v, a: ValueError("a bug"))
    publisher, _ = publisher_over(producer)
    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(publisher.publish(outputs(1)))


def changelog(partitions=(0, 1), entities=3):
    return {p: ChangelogWrite([(b"\xffpublish", b"%d" % p)], [(b"e%d-%d" % (p, i), b"row") for i in range(entities)])
            for p in partitions}


def test_each_changelog_write_is_marker_entities_marker():
    producer = FakeProducer()
    publisher, _ = publisher_over(producer)
    asyncio.run(publisher.publish_changelog("accounts-changelog", changelog()))
    kinds = [(partition, "marker" if records[0][0].startswith(b"\xff") else "entities")
             for _, partition, records in producer.sent]
    for partition in (0, 1):
        mine = [kind for p, kind in kinds if p == partition]
        assert mine == ["marker", "entities", "marker"]


def test_a_retried_entity_batch_is_followed_by_its_partitions_marker_again():
    producer = FakeProducer(lambda t, k, v, a: kafka_errors.NotLeaderForPartitionError()
                            if k == 1 and v[0][0].startswith(b"e") and a == 1 else None)
    publisher, _ = publisher_over(producer)
    asyncio.run(publisher.publish_changelog("accounts-changelog", changelog()))
    partition_one = ["marker" if records[0][0].startswith(b"\xff") else "entities"
                     for _, partition, records in producer.sent if partition == 1]
    assert partition_one == ["marker", "marker", "entities", "marker"]  # the entities again, then the marker


def test_a_changelog_batch_too_large_stops_the_worker():
    producer = FakeProducer(lambda t, k, v, a: kafka_errors.RecordListTooLargeError())
    publisher, _ = publisher_over(producer)
    with pytest.raises(PublishFailed, match="must take messages"):
        asyncio.run(publisher.publish_changelog("accounts-changelog", changelog()))


@pytest.mark.parametrize("error, kind", [
    (kafka_errors.KafkaTimeoutError(), Failure.RETRY),
    (kafka_errors.KafkaConnectionError(), Failure.RETRY),
    (kafka_errors.NotLeaderForPartitionError(), Failure.RETRY),
    (kafka_errors.MessageSizeTooLargeError(), Failure.RECORD),
    (kafka_errors.TopicAuthorizationFailedError(), Failure.FATAL),
    (kafka_errors.UnsupportedVersionError(), Failure.FATAL),
])
def test_classification(error, kind):
    assert classify(error) is kind


class BrokerAway(FakeProducer):
    """No answer at all: each delivery fails when aiokafka's request timeout runs out."""

    request_timeout_s = 0.2

    async def send(self, topic, value, key=None):
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(self.request_timeout_s, future.set_exception,
                                              kafka_errors.KafkaTimeoutError())
        return future


def test_deliveries_that_never_answer_end_within_the_timeout_and_one_request_timeout():
    publisher, failures = publisher_over(BrokerAway(), timeout_s=0.5)
    took = asyncio.run(asyncio.wait_for(_timed(publisher.publish(outputs(3))), 5))
    assert took < 0.5 + BrokerAway.request_timeout_s + 0.2 and set(failures) == {Failure.RETRY}


async def _timed(call) -> float:
    import time
    began = time.monotonic()
    with pytest.raises(PublishFailed):
        await call
    return time.monotonic() - began


def test_a_producer_that_cannot_start_is_retried_like_a_failed_send():
    starts = []

    async def start(**options):
        starts.append(options)
        if len(starts) == 1:
            raise kafka_errors.KafkaConnectionError("Unable to bootstrap")
        return FakeProducer()

    publisher = Publisher(start, timeout_s=5, first_backoff_s=0.01)
    asyncio.run(publisher.publish_changelog("accounts-changelog", changelog()))
    assert len(starts) == 2
