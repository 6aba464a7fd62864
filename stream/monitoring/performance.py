"""Performance monitoring from late labels: were the alerts right?

Confirmed fraud and chargebacks arrive days after a transaction was scored. The worker
remembers what it said about its most recent transactions (`RecentScores`, bounded);
each label that finds its transaction counts as a true/false positive/negative, and
`PerformanceMonitor` keeps precision and recall over the last `window` labels. When
either falls more than `margin` below what the artifact measured on held-out data, a
`DriftReport` of kind "performance" is published.

Read the figures with care: labels usually exist only for investigated cases, so
precision here is "of the labelled alerts, how many were fraud"; recall ("of the
labelled fraud, how much did we alert on") is the one that says most.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timezone

from models.contracts import DriftKind, DriftReport


@dataclass(frozen=True)
class Said:
    score: float
    alerted: bool
    model_name: str
    model_version: str


class RecentScores:
    """What the worker said about its last `capacity` scored transactions, by event id."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._said: OrderedDict[str, Said] = OrderedDict()

    def add(self, event_id: str, said: Said) -> None:
        self._said[event_id] = said
        if len(self._said) > self.capacity:
            self._said.popitem(last=False)  # the oldest

    def get(self, event_id: str) -> Said | None:
        return self._said.get(event_id)

    def __len__(self) -> int:
        return len(self._said)


class PerformanceMonitor:
    """Precision and recall of alerts over the last `window` labelled transactions."""

    def __init__(self, reference: dict, window: int = 500, margin: float = 0.1):
        self.reference = {k: reference[k] for k in ("precision", "recall") if isinstance(reference.get(k), float)}
        self.window, self.margin = window, margin
        self._recent: deque[tuple[bool, bool]] = deque(maxlen=window)  # (is fraud, alerted)
        self._since_check = 0
        self.latest: dict[str, float] = {}

    def observe(self, is_fraud: bool, alerted: bool, model_name: str, model_version: str) -> list[DriftReport]:
        self._recent.append((is_fraud, alerted))
        self._since_check += 1
        if self._since_check < self.window:
            return []
        self._since_check = 0
        tp = sum(f and a for f, a in self._recent)
        alerts = sum(a for _, a in self._recent)
        frauds = sum(f for f, _ in self._recent)
        measured = {}
        if alerts:
            measured["precision"] = tp / alerts
        if frauds:
            measured["recall"] = tp / frauds
        self.latest.update(measured)
        reports = []
        for name, value in measured.items():
            floor = self.reference.get(name, 0.0) - self.margin
            if name in self.reference and value < floor:
                reports.append(DriftReport(
                    report_id=uuid.uuid4().hex, monitor=f"labels:{name}", kind=DriftKind.PERFORMANCE,
                    statistic=value, threshold=floor, model_name=model_name, model_version=model_version,
                    window_events=len(self._recent), detected_at=datetime.now(timezone.utc),
                    details={"reference": f"{self.reference[name]:.4f}", "true_positives": str(tp),
                             "alerts": str(alerts), "frauds": str(frauds)},
                ))
        return reports
