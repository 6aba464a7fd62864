"""Drift monitoring: change detectors on the score stream, PSI against training references.

Two questions, two tools:
- *Did the scores shift?* river's ADWIN (a change in the mean of a bounded stream) and
  Page-Hinkley (a sustained rise) watch every score as it is produced.
- *Does live input look like training input?* The population stability index (PSI) of
  key features and of the score, over the last `window` events, against the bins stored
  in the artifact (`models.drift_reference`). PSI > 0.2 is the usual "act" line.
Each detection becomes a `DriftReport`; the latest statistics are also metrics.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from river import drift

from models.contracts import DriftKind, DriftReport
from models.drift_reference import Histogram

PSI_EPSILON = 1e-4  # keeps empty bins from making PSI infinite


def psi(reference_shares: np.ndarray, live_shares: np.ndarray) -> float:
    """Population stability index between two binned distributions.

    >>> round(psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])), 6)
    0.0
    >>> round(psi(np.array([0.5, 0.5]), np.array([0.9, 0.1])), 3)
    0.879
    """
    ref = np.clip(reference_shares, PSI_EPSILON, None)
    live = np.clip(live_shares, PSI_EPSILON, None)
    return float(np.sum((live - ref) * np.log(live / ref)))


@dataclass
class _Binned:
    edges: np.ndarray
    reference: np.ndarray
    counts: np.ndarray = field(init=False)

    def __post_init__(self):
        self.counts = np.zeros(len(self.reference))

    def add(self, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]  # missing values are left out, as in the reference
        self.counts += np.bincount(np.searchsorted(self.edges, values, side="right"), minlength=len(self.reference))

    def shares(self) -> np.ndarray:
        return self.counts / max(self.counts.sum(), 1)


class DriftMonitor:
    """Feeds on scored batches; returns the drift reports to publish.

    Args:
        score: the reference histogram of the score (models.drift_reference), or None for
            no PSI on it; None with `watch_scores=False` for a monitor of features only.
        features: reference histograms of input features, by name.
        feature_index: feature name -> column in the batch's features (NaN: missing).
        window: events per PSI evaluation.
        prefix: put before monitor names, to tell several monitors of one model apart
            (the donor model has one per target: "high_value:adwin:score").
    """

    def __init__(self, score: Histogram | None, features: dict[str, Histogram], feature_index: dict[str, int],
                 model_name: str, model_version: str, window: int = 5000, psi_threshold: float = 0.2,
                 adwin_delta: float = 0.002, prefix: str = "", watch_scores: bool = True):
        self.model_name, self.model_version = model_name, model_version
        self.prefix = prefix
        self.window, self.psi_threshold = window, psi_threshold
        self.watch_scores = watch_scores
        references = {name: h for name, h in features.items() if name in feature_index}
        if score is not None and watch_scores:
            references["score"] = score
        self._bins = {name: _Binned(h.edges, h.shares) for name, h in references.items()}
        self._feature_index = feature_index
        self._adwin = drift.ADWIN(delta=adwin_delta)
        self._page_hinkley = drift.PageHinkley(min_instances=500, threshold=50.0)
        self._seen = 0
        self.latest: dict[str, float] = {}  # monitor -> last statistic, for metrics

    def observe(self, scores: np.ndarray, event_features: np.ndarray) -> list[DriftReport]:
        reports = []
        for score in scores.tolist() if self.watch_scores else ():
            self._adwin.update(score)
            self._page_hinkley.update(score)
            if self._adwin.drift_detected:
                reports.append(self._report("adwin:score", DriftKind.ADWIN, self._adwin.estimation, self._adwin.delta,
                                            {"window_width": float(self._adwin.width)}))
            if self._page_hinkley.drift_detected:
                reports.append(self._report("page_hinkley:score", DriftKind.PAGE_HINKLEY, score,
                                            self._page_hinkley.threshold, {}))
        for name, binned in self._bins.items():
            values = scores if name == "score" else event_features[:, self._feature_index[name]]
            binned.add(np.asarray(values, dtype=np.float64))
        self._seen += len(scores)
        if self._seen >= self.window:
            for name, binned in self._bins.items():
                value = psi(binned.reference, binned.shares())
                self.latest[f"{self.prefix}psi:{name}"] = value
                if value > self.psi_threshold:
                    reports.append(self._report(f"psi:{name}", DriftKind.PSI, value, self.psi_threshold,
                                                {"live_shares": ",".join(f"{s:.3f}" for s in binned.shares())}))
                binned.counts[:] = 0
            self._seen = 0
        return reports

    def _report(self, monitor: str, kind: DriftKind, statistic: float, threshold: float, details: dict) -> DriftReport:
        monitor = self.prefix + monitor
        self.latest[monitor] = float(statistic)
        return DriftReport(
            report_id=uuid.uuid4().hex, monitor=monitor, kind=kind,
            statistic=float(statistic) if math.isfinite(statistic) else 0.0, threshold=float(threshold),
            model_name=self.model_name, model_version=self.model_version,
            window_events=self.window if kind is DriftKind.PSI else self._seen,
            detected_at=datetime.now(timezone.utc), details=details,
        )
