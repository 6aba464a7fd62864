"""Start `tributary worker` as a separate process with given settings (demo, bench, tests).

Settings travel as the TRIBUTARY_* environment variables the worker reads, so the child
runs with exactly the `WorkerSettings` the caller built, topic names included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from stream.settings import WorkerSettings


def worker_environment(settings: WorkerSettings) -> dict[str, str]:
    """The TRIBUTARY_* variables that make a worker process read back these settings."""
    env: dict[str, str] = {}
    for name, value in settings:
        if name == "topics":
            env.update({f"TRIBUTARY_TOPIC_{topic.upper()}": str(v) for topic, v in value})
        elif value is not None:
            env[f"TRIBUTARY_{name.upper()}"] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return env


def start_worker(settings: WorkerSettings, *, embedded_broker: bool = True, log_level: str = "warning",
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    tributary = str(Path(sys.executable).parent / "tributary")
    args = [tributary, "worker", "--log-level", log_level] + (["--embedded-broker-safe"] if embedded_broker else [])
    return subprocess.Popen(args, env={**os.environ, **worker_environment(settings)},
                            stdout=stdout, stderr=stderr, text=True)
