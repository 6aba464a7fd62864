"""Where each event's latency goes: one time per phase, summing to its end-to-end latency."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from stream.monitoring.metrics import LATENCY_PHASES, WorkerMetrics
from stream.pipeline.records import RawRecord


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_each_event_gets_its_time_in_each_phase():
    metrics = WorkerMetrics(registry=CollectorRegistry())
    now = time.time()
    produced = [now - 0.50, now - 0.40]  # two records of one batch, 100 ms apart
    records = [RawRecord("transactions", 0, i, b"k", b"{}", int(t * 1000)) for i, t in enumerate(produced)]
    ends = dict(zip(LATENCY_PHASES, [now - 0.30, now - 0.25, now - 0.10, now - 0.08, now]))
    metrics.record_latency(records, ends)

    def phase(name):
        return (sample(metrics, "tributary_latency_phase_seconds_sum", topic="transactions", phase=name),
                sample(metrics, "tributary_latency_phase_seconds_count", topic="transactions", phase=name))

    assert phase("to_pipeline") == pytest.approx((0.20 + 0.10, 2), abs=2e-3)  # per record
    assert phase("queued") == pytest.approx((2 * 0.05, 2))  # per batch, once for each event
    assert phase("processing") == pytest.approx((2 * 0.15, 2))
    assert phase("publish_order") == pytest.approx((2 * 0.02, 2))
    assert phase("publishing") == pytest.approx((2 * 0.08, 2))
    total = sum(phase(name)[0] for name in LATENCY_PHASES)
    end_to_end = sample(metrics, "tributary_end_to_end_latency_seconds_sum", topic="transactions")
    assert total == pytest.approx(end_to_end, abs=5e-3)


def test_events_are_counted_under_their_own_topic():
    metrics = WorkerMetrics(registry=CollectorRegistry())
    now = time.time()
    records = [RawRecord("gifts", 0, 0, b"k", b"{}", int(now * 1000)),
               RawRecord("donor-profiles", 0, 0, b"k", b"{}", int(now * 1000)),
               RawRecord("donor-profiles", 0, 1, b"k", b"{}", int(now * 1000))]
    metrics.record_latency(records, dict.fromkeys(LATENCY_PHASES, now))
    assert sample(metrics, "tributary_latency_phase_seconds_count", topic="gifts", phase="publishing") == 1
    assert sample(metrics, "tributary_latency_phase_seconds_count", topic="donor-profiles", phase="publishing") == 2
