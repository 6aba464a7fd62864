"""Shared fixtures. Integration tests start their own embedded broker on a free port."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.kafka.embedded_broker import EmbeddedBroker
from stream.settings import KafkaSettings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def broker():
    """A fresh in-memory broker per test module keeps modules from seeing each other's topics."""
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def kafka_settings(broker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap)
