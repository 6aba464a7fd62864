"""Choosing the margin around each donor segment threshold, on validation donors.

A worker rescores a donor at every gift, so a probability that wanders around a
threshold flips the donor in and out of the segment, and each flip is a published
update. This replays the world up to the cut-off as a worker would (each event ingested
in replay order, each gift of a validation donor scored as of its own time), steps the
memberships with `models.segment_membership.next_mask` for each margin of `GRID`, and
measures per target:
    churn  membership changes per donor per month, over the validation donors;
    F1     of the membership each validation donor holds at the cut-off (after its last
           gift) against the target's label.
The chosen margin is the largest whose F1 is within `F1_TOLERANCE` of the F1 without a
margin. The test donors choose nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.features.donors import DonorBatch, DonorFeatureConfig, DonorFeaturizer
from models.features.partitioning import PartitionOf
from models.model_store import donor_probabilities
from models.segment_membership import SEGMENT_BITS, next_mask
from models.world_events import iter_world_events
from models.worlds import World
from offline.evaluation.metrics import binary_metrics

GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15)
F1_TOLERANCE = 0.01
_MONTH_S = 30.44 * 86_400


@dataclass
class ValidationGifts:
    """Every gift of the validation donors before the cut-off, featurised as of its time."""

    donor_ids: list[str]  # every validation donor, gifts or not
    owners: list[str]  # per gift, in time order
    batch: DonorBatch | None
    months: float  # the span the gifts cover

    def paths(self, model) -> list[np.ndarray]:
        """Per donor (in `donor_ids` order): its probabilities at its gifts, [gifts, targets]."""
        device = next(model.parameters()).device if hasattr(model, "parameters") else "cpu"  # where it trained
        probabilities = (donor_probabilities(model, self.batch, device) if self.batch is not None
                         else np.zeros((0, 0)))
        rows: dict[str, list[int]] = {}
        for i, owner in enumerate(self.owners):
            rows.setdefault(owner, []).append(i)
        width = probabilities.shape[1] if len(probabilities) else 0
        return [probabilities[rows[d]] if d in rows else np.zeros((0, width)) for d in self.donor_ids]


def validation_gifts(world: World, config: DonorFeatureConfig, donor_ids: np.ndarray,
                     partitions: int = 1) -> ValidationGifts:
    """Replay the world before its cut-off as a worker with `partitions` input partitions
    would (one state per partition); featurise each gift of these donors as of its own time."""
    wanted = set(donor_ids.tolist())
    featurizers = [DonorFeaturizer(config.new_state(), config) for _ in range(partitions)]
    partition_of = PartitionOf(partitions)
    cutoff = world.manifest.cutoff
    owners, batches, times = [], [], []
    for stream, _, event in iter_world_events(world, ("donor_profiles", "donor_relationships", "gifts")):
        when = event.event_time  # type: ignore[attr-defined]
        if cutoff is not None and when >= cutoff:
            break
        donor = event.donor_id  # type: ignore[attr-defined]
        featurizer = featurizers[int(partition_of([donor])[0])]
        featurizer.state.ingest(event)  # type: ignore[arg-type]
        if stream == "gifts" and donor in wanted:
            owners.append(donor)
            batches.append(featurizer.featurize([donor], when, strict=False))
            times.append(when)
    months = max((times[-1] - times[0]).total_seconds() / _MONTH_S, 1.0) if times else 1.0
    return ValidationGifts(donor_ids.tolist(), owners, DonorBatch.concat(batches) if batches else None, months)


def choose_margins(gifts: ValidationGifts, model, targets: tuple[str, ...], thresholds: dict[str, float],
                   labels: np.ndarray) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """Per target, the chosen margin, and the churn and F1 of every margin of GRID.

    `labels[:, j]`: target j's validation label of each donor in `gifts.donor_ids` order.
    """
    paths = gifts.paths(model)
    chosen, table = {}, {}
    for j, target in enumerate(targets):
        rows = []
        for margin in GRID:
            final, flips = _step(paths, target, j, thresholds[target], margin)
            rows.append({"margin": margin, "f1": binary_metrics(labels[:, j], final.astype(np.float64), 0.5)["f1"],
                         "churn_per_donor_month": round(flips / max(len(paths), 1) / gifts.months, 4)})
        floor = rows[0]["f1"] - F1_TOLERANCE
        chosen[target] = max(r["margin"] for r in rows if r["f1"] >= floor)
        table[target] = rows
    return chosen, table


def _step(paths: list[np.ndarray], target: str, column: int, threshold: float, margin: float) -> tuple[np.ndarray, int]:
    """Membership of each donor at the end, and how many times memberships changed."""
    bit = SEGMENT_BITS[target]
    final = np.zeros(len(paths), dtype=bool)
    flips = 0
    for i, path in enumerate(paths):
        mask = 0
        for probabilities in path[:, column:column + 1].tolist():
            stepped = next_mask(mask, [target], {target: threshold}, {target: margin}, probabilities)
            flips += stepped != mask
            mask = stepped
        final[i] = bool(mask & bit)
    return final, flips
