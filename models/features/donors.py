"""Causal donor features, shared by training and the streaming worker.

A `DonorState` (models.features.donor_state) ingests donor events in event-time order;
`DonorFeaturizer.featurize(donor_ids, at)` reads model inputs for some donors from the
state as it is at time `at`. Offline: replay every event before the cut-off, then read
all eligible donors at the cut-off (`replay_world` + `featurize`). Worker: ingest a gift,
then read that donor at the gift's time. Same kernel, same numbers (tests check it).

Reading never writes, and every time-dependent feature is measured back from `at`, so a
read at `at` sees exactly the ingested events; `featurize` refuses an `at` earlier than
the latest event ingested (it would read the future).

Missing is never zero: every tabular feature has a mask column (1 = present), and the
neighbour vectors carry explicit "missing" indicator features next to zero-filled values.

Shapes (N donors, W gift window, K neighbours read per type, 5 relationship types):
    tab       [N, F_TAB], tab_mask [N, F_TAB]   profile, giving, referral and degree aggregates
    seq       [N, W, F_GIFT], seq_mask [N, W]   last W gifts, right-aligned (newest last)
    node      [N, F_NODE]                       the donor's own node vector (GraphSAGE root)
    nbr       [N, 5, K, F_NODE + F_EDGE], nbr_mask [N, 5, K]
                                                latest live neighbours per type, newest first,
                                                each read from its own state at `at`
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from models.contracts import GiftChannel, RelationshipType
from models.features.donor_state import (
    AGE_BAND_CODES,
    CHANNEL_CODES,
    EDGE_ADDS,
    EDGE_ADDS_DECAYED,
    EDGE_REMOVES,
    FIRST_GIFT_TIME,
    GIFT_COUNT,
    GIFT_MAX_LOG,
    GIFT_SUM,
    GIFT_SUM_LOG,
    GIFT_SUMSQ_LOG,
    LAST_EDGE_TIME,
    LAST_GIFT_TIME,
    META_FIELDS,
    N_PROFILE_INPUTS,
    NO_KEY,
    P_PREV,
    PROFILE_COUNT,
    PROFILE_FIELDS,
    PROFILE_TIME,
    RECURRING_BIT,
    RECURRING_COUNT,
    REFERRAL_COUNT,
    REFERRAL_DECAYED,
    REFERRAL_LAST_TIME,
    REFERRAL_SUM,
    REFERRED_BIT,
    REFERRED_COUNT,
    RELATIONSHIP_CODES,
    SEEN,
    DonorState,
    donor_key,
    month_index,
    month_index_us,
    region_bucket,
    state_times_us,
    to_state_time,
)
from models.worlds import World

CHANNELS = tuple(c.value for c in GiftChannel)
RELATIONSHIPS = tuple(r.value for r in RelationshipType)
REGION_BUCKETS = 16
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

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
N_TYPES = len(RELATIONSHIPS)
_N_CHANNELS = len(CHANNELS)
_EVENT_CHANNEL = CHANNEL_CODES[GiftChannel.EVENT.value]
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


@dataclass
class DonorBatch:
    """Model inputs for a set of donors at one time (float32 numpy arrays, see module doc)."""

    tab: np.ndarray
    tab_mask: np.ndarray
    seq: np.ndarray
    seq_mask: np.ndarray
    node: np.ndarray
    nbr: np.ndarray
    nbr_mask: np.ndarray

    def __len__(self) -> int:
        return self.tab.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)

    def modality_mask(self) -> np.ndarray:
        """[N, 3] float32: tabular (always), sequence (any gift), network (any live neighbour)."""
        return np.stack(
            [np.ones(len(self), np.float32), self.seq_mask.max(axis=1, initial=0.0),
             self.nbr_mask.reshape(len(self), -1).max(axis=1, initial=0.0)], axis=1
        ).astype(np.float32)

    @classmethod
    def empty(cls, n: int, config: DonorFeatureConfig) -> "DonorBatch":
        W, K = config.window, config.neighbours
        return cls(
            tab=np.zeros((n, F_TAB), np.float32),
            tab_mask=np.zeros((n, F_TAB), np.float32),
            seq=np.zeros((n, W, F_GIFT), np.float32),
            seq_mask=np.zeros((n, W), np.float32),
            node=np.zeros((n, F_NODE), np.float32),
            nbr=np.zeros((n, N_TYPES, K, F_NBR), np.float32),
            nbr_mask=np.zeros((n, N_TYPES, K), np.float32),
        )

    @classmethod
    def concat(cls, batches: list["DonorBatch"]) -> "DonorBatch":
        return cls(**{k: np.concatenate([b.__dict__[k] for b in batches]) for k in batches[0].__dict__})

    def take(self, index) -> "DonorBatch":
        return DonorBatch(**{k: v[index] for k, v in self.__dict__.items()})


class DonorFeaturizer:
    """Reads model inputs for donors from a `DonorState` as of a time.

    >>> from datetime import datetime, timezone
    >>> from models.contracts import GiftChannel, GiftEvent
    >>> config = DonorFeatureConfig(window=4, fanout=8, neighbours=2)
    >>> f = DonorFeaturizer(config.new_state(), config)
    >>> for day in (1, 2, 3):
    ...     f.state.ingest(GiftEvent(event_id=f"g{day}", event_time=datetime(2024, 3, day, tzinfo=timezone.utc),
    ...                              donor_id="d1", amount=10.0, channel=GiftChannel.MAIL))
    >>> batch = f.featurize(["d1", "nobody"], datetime(2024, 3, 4, tzinfo=timezone.utc))
    >>> batch.seq_mask.tolist()
    [[0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    >>> batch.modality_mask().tolist()
    [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    """

    def __init__(self, state: DonorState, config: DonorFeatureConfig = DonorFeatureConfig()):
        if (state.window, state.fanout, state.region_buckets) != (config.window, config.fanout, config.region_buckets):
            raise ValueError(
                f"state keeps window {state.window}, fanout {state.fanout}, {state.region_buckets} region buckets; "
                f"features expect {config.window}, {config.fanout}, {config.region_buckets}"
            )
        self.state, self.config = state, config

    def featurize(self, donor_ids: Iterable[str], at: datetime, strict: bool = True) -> DonorBatch:
        """Inputs of `donor_ids` as of `at` (every ingested event counts; unknown donors read empty).

        strict: refuse an `at` before the latest ingested event, which would let later
        events leak into features "at" an earlier time. A worker that scores a late event
        may pass False: ages are then clamped at zero.
        """
        keys = np.array([donor_key(d) for d in donor_ids], dtype=np.int64)
        return self.featurize_keys(keys, at, strict)

    def featurize_keys(self, keys: np.ndarray, at: datetime, strict: bool = True) -> DonorBatch:
        t = to_state_time(at)
        if strict and t < self.state.watermark:
            raise ValueError(
                f"features at {at.isoformat()} requested, but the state already holds events up to "
                f"{self.state.watermark:.0f} s after 2000-01-01: they would leak into the features"
            )
        state = self.state
        rows = np.array([state.lookup(int(k)) for k in keys], dtype=np.int64)
        batch = DonorBatch.empty(len(rows), self.config)
        if len(rows) == 0:
            return batch
        _featurize(
            rows, t, month_index(at), state.meta, state.profile,
            state.ring["amount"], state.ring["time"], state.ring["month"], state.ring["code"],
            state.adj_block, state.adj_len, state.degree,
            state.pool["neighbour"], state.pool["time"], state.pool["strength"],
            batch.tab, batch.tab_mask, batch.seq, batch.seq_mask, batch.node, batch.nbr, batch.nbr_mask,
        )  # fmt: skip
        return batch


# --- offline: replay a world into a state -------------------------------------------------------


def replay_world(
    world: World, until: datetime, config: DonorFeatureConfig = DonorFeatureConfig(), inclusive: bool = False,
    batch_size: int = 1 << 20,
) -> DonorState:
    """Ingest every event of `world` before `until` (at or before it when `inclusive`).

    Streams go in one after the other, each in its own (event-time) order: the state
    does not depend on how streams interleave (see donor_state), so this equals a worker
    that ingested the same events one by one. Reads in Parquet batches: bounded memory.
    """
    state = config.new_state(capacity=max(1024, world.manifest.parameters.get("donors", 0) + 16))
    limit_us = _us(until)
    for stream, ingest in (("donor_profiles", _ingest_profiles), ("donor_relationships", _ingest_relationships),
                           ("gifts", _ingest_gifts)):  # fmt: skip
        if stream not in world.streams:
            continue
        for batch in world.iter_events(stream, batch_size=batch_size):
            times = np.asarray(pc.cast(batch.column("event_time"), pa.int64()))
            keep = times <= limit_us if inclusive else times < limit_us
            if not keep.all():
                batch = batch.filter(pa.array(keep))
                times = times[keep]
            if batch.num_rows:
                ingest(state, batch, times, config)
            if not keep[-1:].all():
                break  # streams are sorted by event_time: nothing later can qualify
    return state


def _us(when: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime, exactly (no float round trip)."""
    return (when - _UNIX_EPOCH) // timedelta(microseconds=1)


def keys_of(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """donor_key of every id (NO_KEY for null), hashing each distinct id once."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    encoded = pc.dictionary_encode(ids)
    unique = np.array([donor_key(v) for v in encoded.dictionary.to_pylist()] + [NO_KEY], dtype=np.int64)
    codes = np.asarray(pc.fill_null(encoded.indices, len(unique) - 1), dtype=np.int64)
    return unique[codes]


def _floats(column) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.cast(column, pa.float64()), math.nan), dtype=np.float64)


def _codes(column, mapping) -> np.ndarray:
    """Category strings -> float codes via `mapping` (a callable or dict); null/unmapped -> NaN."""
    encoded = pc.dictionary_encode(column)
    get = mapping if callable(mapping) else (lambda v: mapping.get(v, math.nan))
    table = np.array([get(v) for v in encoded.dictionary.to_pylist()] + [math.nan], dtype=np.float64)
    return table[np.asarray(pc.fill_null(encoded.indices, len(table) - 1), dtype=np.int64)]


def _ingest_gifts(state: DonorState, batch: pa.RecordBatch, times_us: np.ndarray, config: DonorFeatureConfig) -> None:
    channels = _codes(batch.column("channel"), CHANNEL_CODES)
    if np.isnan(channels).any():
        raise ValueError("gift with an unknown or null channel; the contract requires one of " + ", ".join(CHANNELS))
    recurring = np.asarray(pc.fill_null(batch.column("is_recurring"), False), dtype=bool)
    state.ingest_gifts(keys_of(batch.column("donor_id")), keys_of(batch.column("referrer_donor_id")),
                       state_times_us(times_us), month_index_us(times_us), _floats(batch.column("amount")),
                       channels.astype(np.int64), recurring)


def _ingest_profiles(state: DonorState, batch: pa.RecordBatch, times_us: np.ndarray, config: DonorFeatureConfig) -> None:
    buckets = config.region_buckets
    values = np.stack(
        [
            _floats(batch.column("tenure_years")),
            _codes(batch.column("age_band"), AGE_BAND_CODES),
            _floats(batch.column("wealth_index")),
            _floats(batch.column("home_owner")),
            _codes(batch.column("region"), lambda r: region_bucket(r, buckets) if r is not None else math.nan),
            *(_floats(batch.column(name)) for name in (
                "event_attendance_12m", "email_open_rate_12m", "volunteer_hours_12m", "promotions_received_12m",
                "prior_gift_count", "prior_gift_total", "months_since_last_gift", "months_since_first_gift")),
        ],
        axis=1,
    )
    assert values.shape[1] == N_PROFILE_INPUTS
    state.ingest_profiles(keys_of(batch.column("donor_id")), state_times_us(times_us), values)


def _ingest_relationships(state: DonorState, batch: pa.RecordBatch, times_us: np.ndarray, config: DonorFeatureConfig) -> None:
    kinds = _codes(batch.column("relationship_type"), RELATIONSHIP_CODES)
    if np.isnan(kinds).any():
        raise ValueError("relationship with an unknown type; valid: " + ", ".join(RELATIONSHIPS))
    added = np.asarray(pc.equal(pc.fill_null(batch.column("action"), "add"), "add"), dtype=bool)
    state.ingest_relationships(keys_of(batch.column("donor_id")), keys_of(batch.column("related_donor_id")),
                               state_times_us(times_us), kinds.astype(np.int64), added,
                               _floats(batch.column("strength")).astype(np.float32))


# --- the compiled read path ----------------------------------------------------------------------

_DAY = 86_400.0
_TWO_PI = 2.0 * math.pi
# Scratch slots of _window_stats
(_C30, _C90, _C180, _C365, _C730, _A90, _A365, _A730, _THIS_MONTH, _M12, _M24, _R90, _R365, _REF365,
 _GAP_SUM, _GAP_N, _EV365, _MONTHS, _CH0) = range(19)  # fmt: skip
_N_STATS = _CH0 + _N_CHANNELS + 2  # + last log amount, window entries
_LAST_LOG, _WIN_N = _CH0 + _N_CHANNELS, _CH0 + _N_CHANNELS + 1
# The kernels write features by position; these anchors catch a name list edited alone.
assert F_TAB == 108 and F_GIFT == 13 and F_NODE == 18 and F_EDGE == 3
assert (TAB_FEATURES[_TAB_REGION], TAB_FEATURES[22], TAB_FEATURES[30], _TAB_GIVING, TAB_FEATURES[43],
        TAB_FEATURES[44], TAB_FEATURES[52], TAB_FEATURES[61], TAB_FEATURES[67], _TAB_REFERRAL, _TAB_NETWORK,
        TAB_FEATURES[82]) == ("region_00", "log_event_attendance_12m", "log_prior_gift_count", 35,
                              "months_since_last_gift", "log_gifts_30d", "gift_this_month", "channel_share_mail",
                              "window_full", 68, 72, "log_days_since_last_edge")


@njit(cache=True)
def _log_days(seconds):
    return math.log1p(max(seconds, 0.0) / 86_400.0)


@njit(cache=True)
def _window_stats(row, t, month_t, meta, r_amount, r_time, r_month, r_code, s):
    """Statistics of a donor's gift window as read at t, into scratch s (zeroed here)."""
    for j in range(s.shape[0]):
        s[j] = 0.0
    window = r_amount.shape[1]
    n = int(meta[row, GIFT_COUNT])
    m = min(n, window)
    months = np.int64(0)
    previous = 0.0
    for j in range(m):
        pos = (n - m + j) % window
        age = max(t - r_time[row, pos], 0.0) / 86_400.0
        amount = math.expm1(r_amount[row, pos])
        code = r_code[row, pos]
        if age < 30.0:
            s[_C30] += 1.0
        if age < 90.0:
            s[_C90] += 1.0
            s[_A90] += amount
            if code & RECURRING_BIT:
                s[_R90] += 1.0
        if age < 180.0:
            s[_C180] += 1.0
        if age < 365.0:
            s[_C365] += 1.0
            s[_A365] += amount
            if code & RECURRING_BIT:
                s[_R365] += 1.0
            if code & REFERRED_BIT:
                s[_REF365] += 1.0
            if (code & 7) == _EVENT_CHANNEL:
                s[_EV365] += 1.0
        if age < 730.0:
            s[_C730] += 1.0
            s[_A730] += amount
        d = month_t - np.int64(r_month[row, pos])
        if 0 <= d <= 24:
            months |= np.int64(1) << d
        s[_CH0 + (code & 7)] += 1.0
        if j > 0:
            s[_GAP_SUM] += max(r_time[row, pos] - previous, 0.0) / 86_400.0
            s[_GAP_N] += 1.0
        previous = r_time[row, pos]
        s[_LAST_LOG] = r_amount[row, pos]
    s[_THIS_MONTH] = float(months & 1)
    s[_MONTHS] = float(months)  # bits 0-24: exact in a float64
    for d in range(1, 25):
        if (months >> d) & 1:
            if d <= 12:
                s[_M12] += 1.0
            else:
                s[_M24] += 1.0
    s[_WIN_N] = m


@njit(cache=True)
def _node_into(out, row, t, month_t, meta, profile, r_amount, r_time, r_month, r_code, degree, s):
    """NODE_FEATURES of a donor as read at t (zeros and missing flags for an unknown donor)."""
    _window_stats(row, t, month_t, meta, r_amount, r_time, r_month, r_code, s)
    count = meta[row, GIFT_COUNT]
    out[0] = 1.0 if meta[row, SEEN] > 0 else 0.0
    out[1] = 1.0 if meta[row, PROFILE_COUNT] > 0 else 0.0
    out[2] = math.log1p(count)
    out[3] = math.log1p(meta[row, GIFT_SUM])
    out[4] = math.log1p(s[_C365])
    out[5] = s[_M12]
    out[6] = _log_days(t - meta[row, LAST_GIFT_TIME]) if count > 0 else 0.0
    out[7] = 0.0 if count > 0 else 1.0
    out[8] = math.log1p(meta[row, REFERRAL_COUNT])
    out[9] = math.log1p(meta[row, REFERRAL_DECAYED] * math.exp(-max(t - meta[row, REFERRAL_LAST_TIME], 0.0) / 31_557_600.0))
    total = 0.0
    for k in range(degree.shape[1]):
        total += degree[row, k]
    out[10] = math.log1p(total)
    out[11] = math.log1p(meta[row, EDGE_ADDS_DECAYED] * math.exp(-max(t - meta[row, LAST_EDGE_TIME], 0.0) / 31_557_600.0))
    for j, f in enumerate((2, 5, 6)):  # wealth, attendance, open rate
        v = profile[row, f]
        present = not math.isnan(v)
        if f == 5 and present:
            v = math.log1p(v)
        out[12 + 2 * j] = v if present else 0.0
        out[13 + 2 * j] = 0.0 if present else 1.0


@njit(cache=True, inline="always")
def _put(tab, mask, i, f, value, present):
    if present:
        tab[i, f] = value
        mask[i, f] = 1.0


@njit(cache=True)
def _tab_into(tab, mask, i, row, t, month_t, meta, profile, degree, adj_block, adj_len, p_time, p_strength, s):
    """TAB_FEATURES of donor row at t; expects _window_stats already in s."""
    p = profile[row]
    has_profile = meta[row, PROFILE_COUNT] > 0
    _put(tab, mask, i, 0, 1.0 if has_profile else 0.0, True)
    elapsed = max(t - meta[row, PROFILE_TIME], 0.0)
    _put(tab, mask, i, 1, math.log1p(elapsed / 86_400.0), has_profile)
    _put(tab, mask, i, 2, p[0] + elapsed / 31_557_600.0, not math.isnan(p[0]))
    _put(tab, mask, i, 3, p[1], not math.isnan(p[1]))
    _put(tab, mask, i, 4, p[2], not math.isnan(p[2]))
    _put(tab, mask, i, 5, p[3], not math.isnan(p[3]))
    if not math.isnan(p[4]):
        for b in range(16):
            _put(tab, mask, i, 6 + b, 1.0 if int(p[4]) == b else 0.0, True)
    f = 22
    for q in range(4):  # attendance, open rate, volunteer hours, promotions; then their change
        v, prev = p[5 + q], p[P_PREV + q]
        if q != 1:
            v, prev = math.log1p(v), math.log1p(prev)  # NaN stays NaN
        _put(tab, mask, i, f + q, v, not math.isnan(v))
        _put(tab, mask, i, f + 4 + q, v - prev, not (math.isnan(v) or math.isnan(prev)))
    f = 30
    _put(tab, mask, i, f, math.log1p(p[9]), not math.isnan(p[9]))
    _put(tab, mask, i, f + 1, math.log1p(p[10]), not math.isnan(p[10]))
    has_mean = not (math.isnan(p[9]) or math.isnan(p[10])) and p[9] > 0
    _put(tab, mask, i, f + 2, math.log1p(p[10] / max(p[9], 1.0)), has_mean)
    months_elapsed = elapsed / (31_557_600.0 / 12.0)
    _put(tab, mask, i, f + 3, math.log1p(p[11] + months_elapsed), not math.isnan(p[11]))
    _put(tab, mask, i, f + 4, math.log1p(p[12] + months_elapsed), not math.isnan(p[12]))

    # giving
    f = 35
    n = meta[row, GIFT_COUNT]
    has = n > 0
    _put(tab, mask, i, f, math.log1p(n), True)
    _put(tab, mask, i, f + 1, math.log1p(meta[row, GIFT_SUM]), True)
    mean = meta[row, GIFT_SUM_LOG] / max(n, 1.0)
    _put(tab, mask, i, f + 2, mean, has)
    var = meta[row, GIFT_SUMSQ_LOG] / max(n, 1.0) - mean * mean
    _put(tab, mask, i, f + 3, math.sqrt(max(var, 0.0)), n > 1)
    _put(tab, mask, i, f + 4, meta[row, GIFT_MAX_LOG], has)
    _put(tab, mask, i, f + 5, s[_LAST_LOG], has)
    _put(tab, mask, i, f + 6, _log_days(t - meta[row, FIRST_GIFT_TIME]), has)
    _put(tab, mask, i, f + 7, _log_days(t - meta[row, LAST_GIFT_TIME]), has)
    # f + 8, calendar months since the last gift, is written by _featurize from the window.
    f = 44
    for q, c in enumerate((_C30, _C90, _C180, _C365, _C730)):
        _put(tab, mask, i, f + q, math.log1p(s[c]), True)
    f = 49
    for q, c in enumerate((_A90, _A365, _A730)):
        _put(tab, mask, i, f + q, math.log1p(s[c]), True)
    _put(tab, mask, i, 52, s[_THIS_MONTH], True)
    _put(tab, mask, i, 53, s[_M12], True)
    _put(tab, mask, i, 54, s[_M24], True)
    _put(tab, mask, i, 55, math.log1p(s[_R90]), True)
    _put(tab, mask, i, 56, math.log1p(s[_R365]), True)
    _put(tab, mask, i, 57, meta[row, RECURRING_COUNT] / max(n, 1.0), has)
    _put(tab, mask, i, 58, math.log1p(s[_REF365]), True)
    _put(tab, mask, i, 59, meta[row, REFERRED_COUNT] / max(n, 1.0), has)
    _put(tab, mask, i, 60, math.log1p(s[_GAP_SUM] / max(s[_GAP_N], 1.0)), s[_GAP_N] > 0)
    for c in range(6):
        _put(tab, mask, i, 61 + c, s[_CH0 + c] / max(s[_WIN_N], 1.0), s[_WIN_N] > 0)
    _put(tab, mask, i, 67, 1.0 if n > s[_WIN_N] else 0.0, True)

    # soft credits
    referrals = meta[row, REFERRAL_COUNT]
    _put(tab, mask, i, 68, math.log1p(referrals), True)
    _put(tab, mask, i, 69, math.log1p(meta[row, REFERRAL_SUM]), True)
    decayed = meta[row, REFERRAL_DECAYED] * math.exp(-max(t - meta[row, REFERRAL_LAST_TIME], 0.0) / 31_557_600.0)
    _put(tab, mask, i, 70, math.log1p(decayed), True)
    _put(tab, mask, i, 71, _log_days(t - meta[row, REFERRAL_LAST_TIME]), referrals > 0)

    # network
    total = 0.0
    for k in range(degree.shape[1]):
        _put(tab, mask, i, 72 + k, math.log1p(degree[row, k]), True)
        total += degree[row, k]
    _put(tab, mask, i, 77, math.log1p(total), True)
    _put(tab, mask, i, 78, math.log1p(meta[row, EDGE_ADDS]), True)
    _put(tab, mask, i, 79, math.log1p(meta[row, EDGE_REMOVES]), True)
    rate = meta[row, EDGE_ADDS_DECAYED] * math.exp(-max(t - meta[row, LAST_EDGE_TIME], 0.0) / 31_557_600.0)
    _put(tab, mask, i, 80, math.log1p(rate), True)
    strength_sum, strength_n = 0.0, 0.0
    for k in range(adj_len.shape[1]):
        for q in range(adj_len[row, k]):
            v = p_strength[adj_block[row, k, q >> 3], q & 7]
            if not math.isnan(v):
                strength_sum += v
                strength_n += 1.0
    _put(tab, mask, i, 81, strength_sum / max(strength_n, 1.0), strength_n > 0)
    _put(tab, mask, i, 82, _log_days(t - meta[row, LAST_EDGE_TIME]), meta[row, EDGE_ADDS] > 0)

    _put(tab, mask, i, 83, math.log1p(s[_EV365]), True)
    months = np.int64(s[_MONTHS])
    for d in range(1, 25):
        _put(tab, mask, i, 83 + d, float((months >> d) & 1), True)


@njit(cache=True)
def _featurize(rows, t, month_t, meta, profile, r_amount, r_time, r_month, r_code,
               adj_block, adj_len, degree, p_neighbour, p_time, p_strength,
               out_tab, out_mask, out_seq, out_seq_mask, out_node, out_nbr, out_nbr_mask):  # fmt: skip
    window = r_amount.shape[1]
    k_read = out_nbr.shape[2]
    f_node = out_node.shape[1]
    s = np.zeros(_N_STATS, dtype=np.float64)
    for i in range(rows.shape[0]):
        row = rows[i]
        # Own node vector first; it leaves the window stats of this donor in s for _tab_into.
        _node_into(out_node[i], row, t, month_t, meta, profile, r_amount, r_time, r_month, r_code, degree, s)
        _tab_into(out_tab, out_mask, i, row, t, month_t, meta, profile, degree, adj_block, adj_len, p_time, p_strength, s)
        n = int(meta[row, GIFT_COUNT])
        m = min(n, window)
        previous = 0.0
        newest_month = 0
        for j in range(m):  # the window, oldest first, right-aligned
            pos = (n - m + j) % window
            p = window - m + j
            g = out_seq[i, p]
            time = r_time[row, pos]
            code = r_code[row, pos]
            g[0] = r_amount[row, pos]
            g[1 + (code & 7)] = 1.0
            g[7] = 1.0 if code & RECURRING_BIT else 0.0
            g[8] = 1.0 if code & REFERRED_BIT else 0.0
            g[9] = _log_days(time - previous) if j > 0 else 0.0
            g[10] = _log_days(t - time)
            month = ((np.int64(r_month[row, pos]) % 12) + 12) % 12
            g[11] = math.sin(month / 12.0 * _TWO_PI)
            g[12] = math.cos(month / 12.0 * _TWO_PI)
            out_seq_mask[i, p] = 1.0
            previous = time
            newest_month = r_month[row, pos]
        if m > 0:
            out_tab[i, 43] = min(max(month_t - newest_month, 0), 240)
            out_mask[i, 43] = 1.0
        for k in range(adj_len.shape[1]):  # latest neighbours per type, newest first
            length = adj_len[row, k]
            for j in range(min(length, k_read)):
                q = length - 1 - j
                b, o = adj_block[row, k, q >> 3], q & 7
                v = out_nbr[i, k, j]
                _node_into(v, p_neighbour[b, o], t, month_t, meta, profile, r_amount, r_time, r_month, r_code, degree, s)
                strength = p_strength[b, o]
                v[f_node] = 0.0 if math.isnan(strength) else strength
                v[f_node + 1] = 1.0 if math.isnan(strength) else 0.0
                v[f_node + 2] = _log_days(t - p_time[b, o])
                out_nbr_mask[i, k, j] = 1.0
