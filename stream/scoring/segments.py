"""Donor segment memberships: what they are, and when a change is published.

A donor is in a segment when the served model's probability for that target reaches
the target's threshold. Memberships travel as a bit mask (one bit per `Segment`, in
enum order): the donor's row in the state keeps the mask last published, and a
`DonorSegmentUpdate` goes out only when a gift changes it.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from models.contracts import DonorSegmentUpdate, GiftEvent, Segment

# Bit of each segment in the membership mask (Segment order).
SEGMENT_BITS = {segment.value: 1 << i for i, segment in enumerate(Segment)}


def membership_mask(targets: tuple[str, ...], thresholds: dict[str, float], probabilities: np.ndarray) -> np.ndarray:
    """[N] uint8 masks of the segments whose probability reaches the target's threshold.

    >>> membership_mask(("high_value", "recent_engagement"), {"high_value": 0.5, "recent_engagement": 0.9},
    ...                 np.array([[0.6, 0.2], [0.1, 0.95]])).tolist()
    [8, 16]
    """
    mask = np.zeros(len(probabilities), dtype=np.uint8)
    for j, target in enumerate(targets):
        mask |= np.where(probabilities[:, j] >= thresholds[target], SEGMENT_BITS[target], 0).astype(np.uint8)
    return mask


def segments_of(mask: int) -> list[Segment]:
    """The segments a mask holds.

    >>> [s.value for s in segments_of(9)]
    ['high_engagement', 'high_value']
    """
    return [Segment(name) for name, bit in SEGMENT_BITS.items() if mask & bit]


def changed_segments(previous: int, mask: int) -> list[str]:
    """The segments a donor entered or left."""
    return [segment for segment, bit in SEGMENT_BITS.items() if (mask ^ previous) & bit]


def segment_update(gift: GiftEvent, probabilities: dict[str, float], mask: int, previous: int, model_name: str,
                   model_version: str, now: datetime) -> DonorSegmentUpdate:
    return DonorSegmentUpdate(
        donor_id=gift.donor_id, event_id=gift.event_id, event_time=gift.event_time,
        probabilities={Segment(t): p for t, p in probabilities.items()}, segments=segments_of(mask),
        previous_segments=segments_of(previous), model_name=model_name, model_version=model_version, updated_at=now,
    )
