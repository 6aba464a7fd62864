"""Donor segment membership, with a margin around each threshold so memberships are stable.

A donor joins a segment when the served model's probability reaches the target's
threshold plus the margin, and leaves it only when the probability falls below the
threshold minus the margin. With margin 0 this is the plain threshold. The margins are
chosen on validation by `tributary train donors` (offline.train.donor_hysteresis) and
kept in the artifact; the worker and that choice both step memberships with `next_mask`.
Memberships are a bit mask, one bit per `Segment` in enum order.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.contracts import Segment

SEGMENT_BITS = {segment.value: 1 << i for i, segment in enumerate(Segment)}


def next_mask(previous: int, targets: Sequence[str], thresholds: dict[str, float], margins: dict[str, float],
              probabilities: Sequence[float]) -> int:
    """The memberships after a new score, given those before it.

    >>> next_mask(0, ["high_value"], {"high_value": 0.5}, {"high_value": 0.1}, [0.55])  # not above 0.6: stays out
    0
    >>> next_mask(8, ["high_value"], {"high_value": 0.5}, {"high_value": 0.1}, [0.45])  # not below 0.4: stays in
    8
    """
    mask = 0
    for target, probability in zip(targets, probabilities):
        bit, margin = SEGMENT_BITS[target], margins.get(target, 0.0)
        limit = thresholds[target] - margin if previous & bit else thresholds[target] + margin
        if probability >= limit:
            mask |= bit
    return mask
