"""The alert policy the worker serves (TRIBUTARY_ALERT_POLICY), re-read while it runs.

The setting is a policy (models.alert_policy: `model`, `threshold=X`, `top_fraction=Q`,
`alerts_per_day=N`) or `@FILE`, a file holding one: the worker reads the file again at
every model-reload check, so an analyst team changes its alert volume by editing a line,
without a restart. Both calls run on the scoring thread, so a batch is scored against
one policy from start to end.

A budget (`top_fraction`, `alerts_per_day`) holds its rate with a controller per input
partition (models.alert_budget), whose state travels inside the partition's published
marker: a partition rescored from its marker, here or on another worker, starts from the
state the marker was written with and raises the same alerts. A changed policy or a new
model version starts each partition afresh, from that version's validation scores.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from models.alert_budget import BudgetController, BudgetState
from models.alert_policy import AlertPolicy, AlertPolicyError
from models.model_store import LoadedFraudModel
from stream.state.commit_protocol import PublishedOffsets

log = logging.getLogger("tributary.alerts")


class AlertThresholds:
    def __init__(self, setting: str, on_threshold: Callable[[str, float], None] | None = None, partitions: int = 1):
        self._setting = setting.strip()
        self._partitions = partitions  # a budget is shared evenly by the input partitions
        self._controller: tuple[str, str, BudgetController] | None = None
        self._file = Path(self._setting[1:]) if self._setting.startswith("@") else None
        self._on_threshold = on_threshold or (lambda model, threshold: None)
        self.policy = self._read()  # a bad policy stops the worker at start, in one line
        self._cached: tuple[str, str, float] | None = None

    def threshold(self, model: LoadedFraudModel) -> float:
        """The score threshold for `model` under the current policy. A model is checked
        before it is served (`check`), so the fallback to its own threshold is a last
        resort: an alert policy must never fail a batch."""
        key = (str(self.policy), model.version)
        if self._cached is None or self._cached[:2] != key:
            what = f"{model.manifest.name} version {model.version}"
            try:
                threshold = self.policy.threshold(model.threshold, model.manifest.metrics, what)
            except AlertPolicyError as error:
                log.error("%s; alerting at the model's own threshold", error)
                threshold = model.threshold
            self._cached = (*key, threshold)
            self._on_threshold(model.manifest.name, threshold)
            log.info("alerting %s at score >= %.6f (policy %s)", what, threshold, self.policy)
        return self._cached[2]

    def flag(self, model: LoadedFraudModel, partitions: np.ndarray, times_s: np.ndarray, scores: np.ndarray,
             published: PublishedOffsets, topic_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Whether each score (in offset order per partition) alerts, and the threshold it
        met. Under a budget each partition's controller starts from the state its marker
        in `published` carries and leaves its new state there, for the marker this batch
        writes."""
        if not self.policy.is_budget:
            threshold = self.threshold(model)
            return scores >= threshold, np.full(len(scores), threshold)
        controller = self._controller_for(model)
        tag = f"{self.policy} {model.version}"

        def start(partition: int) -> BudgetState:
            state = BudgetState.decode(published.payload(topic_index, partition), tag, controller.bins)
            return state or controller.initial()

        flags, thresholds, states = controller.flag_partitions(partitions, times_s, scores, start)
        for partition, state in states.items():
            published.mark(topic_index, partition, published.get(topic_index, partition), state.encode(tag))
        if len(thresholds):
            self._on_threshold(model.manifest.name, float(thresholds[-1]))
        return flags, thresholds

    def _controller_for(self, model: LoadedFraudModel) -> BudgetController:
        key = (str(self.policy), model.version)
        if self._controller is None or self._controller[:2] != key:
            self.policy.threshold(model.threshold, model.manifest.metrics)  # refuses a model without the reference
            controller = BudgetController(self.policy, model.manifest.metrics["alert_budget"], self._partitions)
            self._controller = (*key, controller)
            log.info("alerting %s version %s under the budget %s, held per partition (starting at score >= %.6f)",
                     model.manifest.name, model.version, self.policy, controller.threshold_of(controller.initial()))
        return self._controller[2]

    def check(self, model: LoadedFraudModel) -> LoadedFraudModel:
        """`model`, or AlertPolicyError if the policy cannot be served with it (at start,
        and before a new version is swapped in, which is then refused)."""
        self.policy.threshold(model.threshold, model.manifest.metrics, f"{model.manifest.name} version {model.version}")
        return model

    def reload(self, model: LoadedFraudModel) -> bool:
        """Read the policy file again; a new policy that works with `model` replaces the old."""
        if self._file is None:
            return False
        try:
            policy = self._read()
            if policy == self.policy:
                return False
            policy.threshold(model.threshold, model.manifest.metrics, f"{model.manifest.name} version {model.version}")
        except AlertPolicyError as error:
            log.error("alert policy not changed, still %s: %s", self.policy, error)
            return False
        log.warning("alert policy changed from %s to %s (%s)", self.policy, policy, self._file)
        self.policy = policy
        return True

    def _read(self) -> AlertPolicy:
        if self._file is None:
            return AlertPolicy.parse(self._setting)
        try:
            text = self._file.read_text()
        except OSError as error:
            raise AlertPolicyError(f"cannot read the alert policy file {self._file} (TRIBUTARY_ALERT_POLICY="
                                   f"{self._setting}): {error.strerror}") from None
        return AlertPolicy.parse(text)
