"""What the donor features are: their names, counts and settings (no computation here).

The kernels (models.features._donor_kernel) write features by position; the names here
are the contract with the models and the artifacts' feature schema.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from models.contracts import GiftChannel, RelationshipType
from models.features.donor_layout import (
    GIFT_CHANNEL_CODES,
    META_FIELDS,
    PROFILE_FIELDS,
)
from models.features.donor_state import DonorState

CHANNELS = tuple(c.value for c in GiftChannel)
RELATIONSHIPS = tuple(r.value for r in RelationshipType)
REGION_BUCKETS = 16

TAB_FEATURES = (
    # profile (the latest DonorProfile; absent attributes are masked)
    "has_profile",
    "log_days_since_profile",
    "tenure_years_now",
    "age_band",
    "wealth_index",
    "home_owner",
    *(f"region_{b:02d}" for b in range(REGION_BUCKETS)),
    "log_event_attendance_12m",
    "email_open_rate_12m",
    "log_volunteer_hours_12m",
    "log_promotions_12m",
    "delta_log_event_attendance_12m",
    "delta_email_open_rate_12m",
    "delta_log_volunteer_hours_12m",
    "delta_log_promotions_12m",
    "log_prior_gift_count",
    "log_prior_gift_total",
    "prior_mean_log_gift",
    "log_months_since_last_gift_profile",
    "log_months_since_first_gift_profile",
    # giving (all-time aggregates, then the window of recent gifts)
    "log_gift_count",
    "log_gift_total",
    "mean_log_amount",
    "std_log_amount",
    "max_log_amount",
    "last_log_amount",
    "log_days_since_first_gift",
    "log_days_since_last_gift",
    "months_since_last_gift",
    "log_gifts_30d",
    "log_gifts_90d",
    "log_gifts_180d",
    "log_gifts_365d",
    "log_gifts_730d",
    "log_amount_90d",
    "log_amount_365d",
    "log_amount_730d",
    "gift_this_month",
    "months_with_gift_prev12",
    "months_with_gift_prev13_24",
    "log_recurring_90d",
    "log_recurring_365d",
    "recurring_share",
    "log_referred_365d",
    "referred_share",
    "log_mean_gap_days",
    *(f"channel_share_{c}" for c in CHANNELS),
    "window_full",
    # soft credits: gifts this donor brought in
    "log_referral_count",
    "log_referral_total",
    "log_referral_rate_1y",
    "log_days_since_last_referral",
    # network
    *(f"log_degree_{r}" for r in RELATIONSHIPS),
    "log_degree_total",
    "log_edge_adds",
    "log_edge_removes",
    "log_edge_add_rate_1y",
    "mean_edge_strength",
    "log_days_since_last_edge",
    # late additions, kept at the end so the positions above stay put
    "log_event_gifts_365d",  # gifts at events reveal attendance between profile refreshes
    *(f"gave_month_minus_{d:02d}" for d in range(1, 25)),  # which of the last 24 calendar months had a gift
)
GIFT_FEATURES = (
    "log_amount",
    *(f"channel_{c}" for c in CHANNELS),
    "recurring",
    "referred",
    "log_days_since_previous",
    "log_days_ago",
    "month_sin",
    "month_cos",
)
NODE_FEATURES = (
    "known",
    "has_profile",
    "log_gift_count",
    "log_gift_total",
    "log_gifts_365d",
    "months_with_gift_prev12",
    "log_days_since_last_gift",
    "no_gift",
    "log_referral_count",
    "log_referral_rate_1y",
    "log_degree_total",
    "log_edge_add_rate_1y",
    "wealth_index",
    "wealth_missing",
    "log_event_attendance_12m",
    "attendance_missing",
    "email_open_rate_12m",
    "open_rate_missing",
)
EDGE_FEATURES = ("strength", "strength_missing", "log_days_since_added")
F_TAB, F_GIFT, F_NODE, F_EDGE = len(TAB_FEATURES), len(GIFT_FEATURES), len(NODE_FEATURES), len(EDGE_FEATURES)
F_NBR = F_NODE + F_EDGE
N_RELATIONSHIP_TYPES = len(RELATIONSHIPS)
_N_CHANNELS = len(CHANNELS)
_EVENT_CHANNEL = GIFT_CHANNEL_CODES[GiftChannel.EVENT.value]
_TAB_REGION = TAB_FEATURES.index("region_00")
_TAB_GIVING = TAB_FEATURES.index("log_gift_count")
_TAB_REFERRAL = TAB_FEATURES.index("log_referral_count")
_TAB_NETWORK = TAB_FEATURES.index(f"log_degree_{RELATIONSHIPS[0]}")


@dataclass(frozen=True)
class DonorFeatureConfig:
    """window: gifts per donor; fanout: live neighbours kept per type; neighbours: read per type."""

    window: int = 50
    fanout: int = 32
    neighbours: int = 8
    region_buckets: int = REGION_BUCKETS

    def __post_init__(self):
        if self.neighbours > self.fanout:
            raise ValueError(f"cannot read {self.neighbours} neighbours per type when the state keeps {self.fanout}")
        if self.region_buckets != REGION_BUCKETS:
            raise ValueError(f"region_buckets is fixed at {REGION_BUCKETS} by TAB_FEATURES")

    def schema(self) -> dict:
        """Everything a trained model depends on; its hash guards artifacts against drift."""
        return {
            "name": "donors",
            "version": 1,
            "config": asdict(self),
            "tabular": list(TAB_FEATURES),
            "gift": list(GIFT_FEATURES),
            "node": list(NODE_FEATURES),
            "edge": list(EDGE_FEATURES),
            "relationship_types": list(RELATIONSHIPS),
            "channels": list(CHANNELS),
            "state_meta": list(META_FIELDS),
            "state_profile": list(PROFILE_FIELDS),
        }

    def schema_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.schema(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_schema(cls, schema: dict) -> "DonorFeatureConfig":
        return cls(**schema["config"])

    def new_state(self, capacity: int = 1024) -> DonorState:
        return DonorState(window=self.window, fanout=self.fanout, region_buckets=self.region_buckets, capacity=capacity)
