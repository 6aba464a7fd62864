"""The layout of the donor state: its field names and indices, codes and flag bits.

Shared by the state (models.features.donor_state), its compiled write path
(_donor_state_kernel) and read path (_donor_kernel), so none of them imports another's
internals.
"""

from __future__ import annotations

from models.contracts import AgeBand, GiftChannel, RelationshipType
from models.features.keyed_rows import NO_ROW

NO_DONOR = NO_ROW
NO_KEY = 0  # "no referrer" in key arrays (a real key is 0 with probability 2^-64)
BLOCK = 8  # adjacency slots per pool block
YEAR_S = 365.25 * 86_400.0
MONTH_EPOCH = (2000, 1)  # month indices count calendar months from January 2000

GIFT_CHANNEL_CODES = {c.value: i for i, c in enumerate(GiftChannel)}
RELATIONSHIP_CODES = {r.value: i for i, r in enumerate(RelationshipType)}
N_CHANNELS, N_RELATIONSHIP_TYPES = len(GIFT_CHANNEL_CODES), len(RELATIONSHIP_CODES)
AGE_BAND_CODES = {b.value: i for i, b in enumerate(b for b in AgeBand if b is not AgeBand.UNKNOWN)}
RECURRING_BIT, REFERRED_BIT = 8, 16  # flags above the channel code in the gift ring's `code`
# Which ends of a two-ended event (gift: donor, referrer; relationship: donor, related) to
# apply. The worker re-applies a redelivered event only to the ends its state lacks.
DONOR_END, OTHER_END = 1, 2
BOTH_ENDS = DONOR_END | OTHER_END

META_FIELDS = (
    "gift_count",
    "gift_sum",
    "gift_sum_log",
    "gift_sumsq_log",
    "gift_max_log",
    "first_gift_time",
    "last_gift_time",
    "recurring_count",
    "referred_count",  # this donor's gifts that someone else brought in
    "referral_count",  # gifts this donor brought in (soft credits)
    "referral_sum",
    "referral_last_time",
    "referral_decayed",  # exponentially decayed referral count, tau one year, as of referral_last_time
    "edge_adds",
    "edge_removes",
    "edge_adds_decayed",  # decayed relationship adds, tau one year, as of last_edge_time
    "last_edge_time",
    "profile_count",
    "profile_time",
    "seen",  # any event about this donor
)
PROFILE_FIELDS = (
    "tenure_years",
    "age_band",
    "wealth_index",
    "home_owner",
    "region_bucket",
    "event_attendance_12m",
    "email_open_rate_12m",
    "volunteer_hours_12m",
    "promotions_received_12m",
    "prior_gift_count",
    "prior_gift_total",
    "months_since_last_gift",
    "months_since_first_gift",
    "prev_event_attendance_12m",
    "prev_email_open_rate_12m",
    "prev_volunteer_hours_12m",
    "prev_promotions_received_12m",
)
# Profile columns as they arrive (the first 13); the prev_ ones are copied by the kernel.
PROFILE_INPUTS = PROFILE_FIELDS[:13]
N_META, N_PROFILE, N_PROFILE_INPUTS = len(META_FIELDS), len(PROFILE_FIELDS), len(PROFILE_INPUTS)
(
    GIFT_COUNT, GIFT_SUM, GIFT_SUM_LOG, GIFT_SUMSQ_LOG, GIFT_MAX_LOG, FIRST_GIFT_TIME, LAST_GIFT_TIME,
    RECURRING_COUNT, REFERRED_COUNT, REFERRAL_COUNT, REFERRAL_SUM, REFERRAL_LAST_TIME, REFERRAL_DECAYED,
    EDGE_ADDS, EDGE_REMOVES, EDGE_ADDS_DECAYED, LAST_EDGE_TIME, PROFILE_COUNT, PROFILE_TIME, SEEN,
) = range(N_META)  # fmt: skip
P_ATTEND, P_OPEN, P_VOLUNTEER, P_PROMOTIONS = 5, 6, 7, 8
P_PREV = 13  # prev_ copies of P_ATTEND..P_PROMOTIONS start here
