"""A reconnect storm reaches the log as one line per interval, with a count."""

from __future__ import annotations

import logging

from stream.log_limits import RepeatsLimit


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def record(name: str, msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_of_a_client_message_are_held_back_and_counted():
    clock = Clock()
    limit = RepeatsLimit(interval_s=10, clock=clock)
    passed = []
    for second in range(25):
        for _ in range(50):  # 50 failed reconnects a second, as measured in an outage
            clock.now = second + _ / 50
            r = record("aiokafka.conn", "Unable connect to node with id %s: %s", 1, "refused")
            if limit.filter(r):
                passed.append((clock.now, r.getMessage()))
    assert [t for t, _ in passed] == [0, 10, 20]
    assert "499 more like this in the last 10 s" in passed[1][1] and "node with id 1" in passed[1][1]


def test_different_messages_and_the_workers_own_are_not_limited():
    limit = RepeatsLimit(interval_s=10, clock=Clock())
    assert limit.filter(record("aiokafka.conn", "a")) and limit.filter(record("aiokafka.conn", "b"))
    assert all(limit.filter(record("tributary.worker", "same")) for _ in range(5))
