"""Fixtures of the functional tests: the compose files, read once per module."""

from __future__ import annotations

import pytest

from tests.functional.compose_files import COMPOSE, GPU_OVERRIDE, load_yaml


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def gpu_services() -> dict:
    return load_yaml(GPU_OVERRIDE)["services"]
