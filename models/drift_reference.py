"""The reference distributions an artifact carries for the worker's drift monitors.

One format for every model, written by `offline` at training and read by `stream`:

    {"format": 2,
     "scores":   {name: {"edges": [...], "shares": [...]}},   # fraud: "fraud"; donors: each target
     "features": {name: {"edges": [...], "shares": [...]}}}   # input features the PSI watches

`edges` are the k-1 interior bin edges and `shares` the k bin shares; a value v falls
in bin `searchsorted(edges, v, side="right")`, so the outer bins are open. Missing
feature values are left out of both the reference and the live counts.

`read` also takes the two layouts written before this one (the fraud models' flat
{name: {edges, shares}} with "score"; the donor models' {edges incl. both ends, counts}
per score and feature), so that artifacts trained earlier keep their monitors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FORMAT = 2


@dataclass(frozen=True)
class Histogram:
    edges: np.ndarray  # k-1 interior edges, increasing
    shares: np.ndarray  # k shares, summing to 1

    def to_dict(self) -> dict:
        return {"edges": [round(float(e), 6) for e in self.edges], "shares": [round(float(s), 6) for s in self.shares]}


@dataclass(frozen=True)
class References:
    scores: dict[str, Histogram] = field(default_factory=dict)
    features: dict[str, Histogram] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "scores": {n: h.to_dict() for n, h in self.scores.items()},
                "features": {n: h.to_dict() for n, h in self.features.items()}}


def quantile_histogram(values: np.ndarray, bins: int = 10) -> Histogram | None:
    """Bins of about equal mass (deciles by default) over the finite values; None if none.

    >>> h = quantile_histogram(np.arange(100.0), bins=4)
    >>> h.edges.tolist(), h.shares.tolist()
    ([24.75, 49.5, 74.25], [0.25, 0.25, 0.25, 0.25])
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return Histogram(edges, _shares(values, edges))


def uniform_histogram(values: np.ndarray, bins: int = 10, lo: float | None = None,
                      hi: float | None = None) -> Histogram | None:
    """Bins of equal width between `lo` and `hi` (default: the finite values' range)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)[1:-1]
    return Histogram(edges, _shares(values, edges))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(counts.sum(), 1)


def build(scores: dict[str, Histogram | None], features: dict[str, Histogram | None]) -> dict:
    """The manifest's `reference_distributions` (names without values are left out)."""
    return References({n: h for n, h in scores.items() if h is not None},
                      {n: h for n, h in features.items() if h is not None}).to_dict()


def read(raw: dict) -> References:
    """The references of a manifest's `reference_distributions`, in whichever layout."""
    if not raw:
        return References()
    if raw.get("format") == FORMAT:
        return References(_histograms(raw.get("scores", {})), _histograms(raw.get("features", {})))
    if isinstance(raw.get("scores"), dict):  # the donor models' first layout: full edges and counts
        return References(_from_counts(raw["scores"]), _from_counts(raw.get("features", {})))
    flat = _histograms({n: h for n, h in raw.items() if isinstance(h, dict)})  # the fraud models' first layout
    score = flat.pop("score", None)
    return References({"fraud": score} if score is not None else {}, flat)


def _histograms(raw: dict) -> dict[str, Histogram]:
    return {name: Histogram(np.asarray(h["edges"], dtype=np.float64), np.asarray(h["shares"], dtype=np.float64))
            for name, h in raw.items() if h.get("shares")}


def _from_counts(raw: dict) -> dict[str, Histogram]:
    out = {}
    for name, h in raw.items():
        counts = np.asarray(h.get("counts", []), dtype=np.float64)
        if counts.sum() > 0:
            out[name] = Histogram(np.asarray(h["edges"], dtype=np.float64)[1:-1], counts / counts.sum())
    return out
