"""Donor segment memberships: what they are, and when a change is published.

A donor is in a segment when the served model's probability for that target reaches
the target's threshold, with the artifact's margin around it (models.segment_membership).
Memberships travel as a bit mask (one bit per `Segment`, in enum order): the donor's row
in the state keeps the mask last published, and a `DonorSegmentUpdate` goes out only
when a gift changes it.
"""

from __future__ import annotations

from datetime import datetime

from models.contracts import DonorSegmentUpdate, GiftEvent, Segment
from models.segment_membership import SEGMENT_BITS


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
