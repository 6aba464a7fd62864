"""Shared fixtures. Integration tests start their own embedded broker on a free port."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.kafka.embedded_broker import EmbeddedBroker
from stream.settings import KafkaSettings
from tests.serving_helpers import untrained_fraud_artifact

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def broker():
    """A fresh in-memory broker per test module keeps modules from seeing each other's topics."""
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def kafka_settings(broker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A served fraud model: untrained but real; a threshold near its median score gives plenty of alerts."""
    root = tmp_path_factory.mktemp("models")
    untrained_fraud_artifact(root, threshold=0.44, seed=3)
    return root
