"""Rolling out a new model version while the worker runs: look, load, swap, announce.

Every `TRIBUTARY_RELOAD_INTERVAL_S` the worker asks for the newest version of each served
model under its model directory. A newer one is loaded and swapped in with fresh
monitors (stream.scoring.served); one that cannot be served (unreadable, other
features) is refused with a log line and a metric, and the current one stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.artifacts import latest_version, served_root
from models.errors import TributaryError
from stream.monitoring.metrics import WorkerMetrics
from stream.scoring.served import ServedModel

log = logging.getLogger("tributary.worker")


@dataclass(frozen=True)
class ServedTask:
    task: str  # fraud | donors: the label of its metrics
    model_name: str  # which model under the model directory
    scorer: ServedModel
    load: Callable[[Path], Any]  # version directory -> loaded artifact


class ModelReloader:
    def __init__(self, model_dir: str, tasks: list[ServedTask], metrics: WorkerMetrics):
        self._model_dir = model_dir
        self.tasks = tasks
        self._metrics = metrics
        for task in tasks:
            self.announce(task)

    def reload_if_newer(self) -> bool:
        """Swap in the newest version of each served model, if there is one (atomic per model)."""
        swapped = False
        for task in self.tasks:
            swapped |= self._reload(task)
        return swapped

    def _reload(self, task: ServedTask) -> bool:
        current = task.scorer.current.model
        try:
            newest = latest_version(served_root(self._model_dir), task.model_name)
        except TributaryError as error:
            log.warning("model reload: %s", error)
            return False
        if newest.name == current.version:
            return False
        try:
            task.scorer.swap(task.load(newest))
        except (TributaryError, OSError, RuntimeError) as error:
            self._metrics.model_reloads.labels(task.task, "refused").inc()
            log.error("%s model reload refused, still serving %s: %s", task.task, current.version, error)
            return False
        self._metrics.model_reloads.labels(task.task, "swapped").inc()
        self.announce(task)
        return True

    def announce(self, task: ServedTask) -> None:
        """`tributary_model_info` names the version served (one series per task), and the log says it."""
        model = task.scorer.current.model
        info = self._metrics.model_info
        for labels in [sample.labels for metric in info.collect() for sample in metric.samples]:
            if labels["task"] == task.task:
                info.remove(labels["task"], labels["name"], labels["version"])
        info.labels(task.task, model.manifest.name, model.version).set(1)
        log.info("serving %s model %s version %s", task.task, model.manifest.name, model.version)
