"""The compose files as the compose and monitoring tests read them (no Docker needed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"
DEPLOY = ROOT / "deploy"


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def worker_metrics_port(services) -> int:
    return int(environment(services["worker"])["TRIBUTARY_METRICS_PORT"])
