"""Per-donor state for donor features: profile, a bounded gift window, referral and
network aggregates, and a bounded adjacency per relationship type.

Columnar, like `account_state.AccountState`: one row per donor in preallocated numpy
arrays (grown by doubling), so a donor costs about a kilobyte and the compiled kernels
below update it without touching Python objects. Row 0 is the sentinel "no donor" (all
zeros): an unknown donor or neighbour reads as a donor with no history.

What one event does (`DonorState.ingest*`, in event-time order):
  DonorProfile       replaces the donor's profile (the latest event wins, field by field
                     included: a CRM snapshot that lacks a field no longer knows it); the
                     four engagement fields of the previous profile are kept for trends.
  GiftEvent          appends to the donor's ring of its last `window` gifts and updates
                     all-time aggregates; a referred gift also credits the referrer.
  DonorRelationship  add/remove the edge at both ends (the network is undirected) in the
                     type's list of the latest `fanout` live neighbours; degree counts are
                     exact even past the fan-out.

Final state depends only on the order *within* each stream, never on how the three
streams interleave (no update reads another stream's state), so the offline replay may
ingest each stream wholesale and still match a worker that ingests event by event.

Adjacency memory: a dense [donors, 5, fanout] table would cost ~2 KB per donor while the
mean degree is ~4. Lists live in 8-slot blocks from a shared pool instead, allocated when
a list first needs them and never more than fanout/8 per (donor, type).
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta, timezone

import numpy as np
from numba import types
from numba.typed import Dict

from models.contracts import DonorProfile, DonorRelationship, GiftEvent, RelationshipType
from models.features._donor_state_kernel import _adj_append, _ingest_gifts, _ingest_profiles, _ingest_relationships
from models.features.account_state import TIME_EPOCH_S
from models.features.donor_layout import (
    AGE_BAND_CODES,
    BLOCK,
    BOTH_ENDS,
    GIFT_CHANNEL_CODES,
    LAST_EDGE_TIME,
    LAST_GIFT_TIME,
    MONTH_EPOCH,
    N_META,
    N_PROFILE,
    N_PROFILE_INPUTS,
    N_RELATIONSHIP_TYPES,
    NO_KEY,
    PROFILE_TIME,
    RECURRING_BIT,
    REFERRAL_LAST_TIME,
    REFERRED_BIT,
    RELATIONSHIP_CODES,
    SEEN,
)
from models.features.keyed_rows import KeyedRows

_RING_FIELDS = (("amount", np.float32), ("time", np.float64), ("month", np.int16), ("code", np.uint8))
_POOL_FIELDS = (("neighbour", np.int32), ("time", np.float64), ("strength", np.float32))
_EXPORT_VERSION = 1
# Rows (and adjacency blocks) kept free before a kernel runs. Kernels stop early when
# capacity runs short and the caller grows the arrays (doubling) and calls again, so a
# small headroom keeps capacity within 2x of what is used instead of 2x of a guess.
_HEADROOM = 1024


def donor_key(donor_id: str) -> int:
    """Stable signed 64-bit id of a donor (the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(donor_id.encode(), digest_size=8).digest(), "little", signed=True)


def region_bucket(region: str, buckets: int) -> int:
    """Region names are free text: a stable hash bucket (collisions are the price of no vocabulary)."""
    return int.from_bytes(hashlib.blake2b(region.encode(), digest_size=4).digest(), "little") % buckets


_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_EPOCH_US = TIME_EPOCH_S * 1_000_000


def donor_state_time(when: datetime) -> float:
    """Event time as the float seconds since 2000-01-01 UTC the state stores.

    Integer microseconds first, then one division, exactly as `state_times_us` does for
    Parquet columns, so the worker and the offline replay store bit-identical times.
    """
    return ((when - _EPOCH) // timedelta(microseconds=1)) / 1e6


def state_times_us(times_us: np.ndarray) -> np.ndarray:
    """`donor_state_time` of microseconds since the Unix epoch, vectorised."""
    return (np.asarray(times_us, dtype=np.int64) - _EPOCH_US) / 1e6


def month_index(when: datetime) -> int:
    """Calendar months since January 2000 (UTC), e.g. 2025-01-15 -> 300."""
    when = when.astimezone(timezone.utc)
    return (when.year - MONTH_EPOCH[0]) * 12 + when.month - MONTH_EPOCH[1]


def month_index_us(times_us: np.ndarray) -> np.ndarray:
    """`month_index` of microseconds since the Unix epoch, vectorised."""
    months = np.asarray(times_us, dtype=np.int64).astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
    return months - (MONTH_EPOCH[0] - 1970) * 12


class DonorState(KeyedRows):
    """Profiles, gift windows and typed adjacency of every donor this worker has seen.

    Args:
        window: gifts kept per donor. fanout: live neighbours kept per relationship type.
        region_buckets: hash buckets for the free-text region. capacity: donor rows up front.

    >>> from models.contracts import GiftChannel
    >>> from models.features.donor_layout import GIFT_COUNT
    >>> s = DonorState(window=4, fanout=8)
    >>> s.ingest(GiftEvent(event_id="g1", event_time=datetime(2024, 3, 1, tzinfo=timezone.utc),
    ...                    donor_id="d1", amount=25.0, channel=GiftChannel.ONLINE))
    >>> len(s), int(s.meta[s.lookup(donor_key("d1")), GIFT_COUNT])
    (1, 1)
    """

    def __init__(self, window: int = 50, fanout: int = 32, region_buckets: int = 16, capacity: int = 1024):
        if fanout % BLOCK:
            raise ValueError(f"fanout must be a multiple of {BLOCK}, got {fanout}")
        self.window, self.fanout, self.region_buckets = window, fanout, region_buckets
        self.index = Dict.empty(key_type=types.int64, value_type=types.int64)
        self.rows_used = np.ones(1, dtype=np.int64)  # next free row; row 0 is the sentinel
        self.blocks_used = np.ones(1, dtype=np.int64)  # block 0 means "no block"
        # Latest event time ingested (state seconds): features may not be read before it.
        self.watermark = -math.inf
        self._allocate_rows(max(capacity, 2))
        self._allocate_pool(max(capacity // 2, 2))

    # -- storage -----------------------------------------------------------------------

    def _allocate_rows(self, capacity: int) -> None:
        W, B = self.window, self.fanout // BLOCK
        self.keys = np.zeros(capacity, dtype=np.int64)  # row -> donor_key
        self.meta = np.zeros((capacity, N_META), dtype=np.float64)
        self.profile = np.full((capacity, N_PROFILE), np.nan, dtype=np.float64)
        self.ring = {name: np.zeros((capacity, W), dtype=dtype) for name, dtype in _RING_FIELDS}
        self.adj_block = np.zeros((capacity, N_RELATIONSHIP_TYPES, B), dtype=np.int32)
        self.adj_len = np.zeros((capacity, N_RELATIONSHIP_TYPES), dtype=np.int32)
        self.degree = np.zeros((capacity, N_RELATIONSHIP_TYPES), dtype=np.int32)

    def _allocate_pool(self, blocks: int) -> None:
        self.pool = {name: np.zeros((blocks, BLOCK), dtype=dtype) for name, dtype in _POOL_FIELDS}

    def __len__(self) -> int:
        return int(self.rows_used[0]) - 1

    @property
    def capacity(self) -> int:
        return self.meta.shape[0]

    def ensure_capacity(self, new_donors: int, new_blocks: int = 0) -> None:
        """Room for `new_donors` more rows and `new_blocks` more adjacency blocks (kernels cannot grow arrays)."""
        needed = int(self.rows_used[0]) + new_donors
        if needed > self.capacity:
            capacity = self.capacity
            while capacity < needed:
                capacity *= 2
            old = self._row_arrays()
            self._allocate_rows(capacity)
            for name, array in self._row_arrays().items():
                array[: old[name].shape[0]] = old[name]
        needed = int(self.blocks_used[0]) + new_blocks
        if needed > self.pool["neighbour"].shape[0]:
            blocks = self.pool["neighbour"].shape[0]
            while blocks < needed:
                blocks *= 2
            old_pool = self.pool
            self._allocate_pool(blocks)
            for name in self.pool:
                self.pool[name][: old_pool[name].shape[0]] = old_pool[name]

    def _row_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"keys": self.keys, "meta": self.meta, "profile": self.profile, "adj_block": self.adj_block,
                  "adj_len": self.adj_len, "degree": self.degree}
        arrays.update({f"ring_{name}": a for name, a in self.ring.items()})
        return arrays

    def nbytes(self) -> int:
        """Bytes held by the arrays (the index dict comes on top, ~50 bytes a donor)."""
        return sum(a.nbytes for a in self._row_arrays().values()) + sum(a.nbytes for a in self.pool.values())

    def _advance(self, latest: float) -> None:
        self.watermark = max(self.watermark, float(latest))

    # -- ingestion: column batches (offline replay) ----------------------------------------

    def ingest_gifts(
        self,
        donor_keys: np.ndarray,
        referrer_keys: np.ndarray,
        times: np.ndarray,
        months: np.ndarray,
        amounts: np.ndarray,
        channels: np.ndarray,
        recurring: np.ndarray,
        ends: np.ndarray | None = None,
    ) -> None:
        """Gifts in event-time order. times: state seconds; months: `month_index`; referrer NO_KEY for none.

        ends: per gift, DONOR_END | OTHER_END bits of the rows to update (default both)."""
        n = len(donor_keys)
        if n == 0:
            return
        referred = np.asarray(referrer_keys, dtype=np.int64) != NO_KEY
        codes = (np.asarray(channels, dtype=np.int64) + RECURRING_BIT * np.asarray(recurring, dtype=np.int64)
                 + REFERRED_BIT * referred).astype(np.uint8)
        args = (
            np.asarray(donor_keys, dtype=np.int64), np.asarray(referrer_keys, dtype=np.int64),
            np.asarray(times, dtype=np.float64), np.asarray(months, dtype=np.int16),
            np.log1p(np.asarray(amounts, dtype=np.float64)), np.asarray(amounts, dtype=np.float64), codes,
            _ends(ends, n),
        )
        start = 0
        while start < n:
            self.ensure_capacity(_HEADROOM)
            start = _ingest_gifts(start, *args, self.index, self.rows_used, self.keys, self.meta,
                                  self.ring["amount"], self.ring["time"], self.ring["month"], self.ring["code"])
        self._advance(np.max(args[2]))

    def ingest_profiles(self, donor_keys: np.ndarray, times: np.ndarray, values: np.ndarray) -> None:
        """Profiles in event-time order; values [n, len(PROFILE_INPUTS)] with NaN for missing."""
        n = len(donor_keys)
        if n == 0:
            return
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.shape != (n, N_PROFILE_INPUTS):
            raise ValueError(f"profile values must be [{n}, {N_PROFILE_INPUTS}], got {values.shape}")
        keys, times = np.asarray(donor_keys, dtype=np.int64), np.asarray(times, dtype=np.float64)
        start = 0
        while start < n:
            self.ensure_capacity(_HEADROOM)
            start = _ingest_profiles(start, keys, times, values, self.index, self.rows_used, self.keys, self.meta,
                                     self.profile)
        self._advance(np.max(times))

    def ingest_relationships(
        self, donor_keys: np.ndarray, related_keys: np.ndarray, times: np.ndarray, types_: np.ndarray,
        added: np.ndarray, strengths: np.ndarray, ends: np.ndarray | None = None,
    ) -> None:
        """Edge adds/removes in event-time order; types_ index RelationshipType; strength NaN if unknown.

        ends: per event, DONOR_END | OTHER_END bits of the rows to update (default both)."""
        n = len(donor_keys)
        if n == 0:
            return
        args = (
            np.asarray(donor_keys, dtype=np.int64), np.asarray(related_keys, dtype=np.int64),
            np.asarray(times, dtype=np.float64), np.asarray(types_, dtype=np.int64),
            np.asarray(added, dtype=np.bool_), np.asarray(strengths, dtype=np.float32), _ends(ends, n),
        )
        start = 0
        while start < n:
            self.ensure_capacity(_HEADROOM, _HEADROOM)
            start = _ingest_relationships(start, *args, self.index, self.rows_used, self.keys, self.meta,
                                          self.adj_block, self.adj_len, self.degree, self.blocks_used,
                                          self.pool["neighbour"], self.pool["time"], self.pool["strength"])
        self._advance(np.max(args[2]))

    # -- ingestion: one contract event (the worker) --------------------------------------

    def ingest(self, event: GiftEvent | DonorProfile | DonorRelationship, ends: int = BOTH_ENDS) -> None:
        """Apply one event; events must come in event-time order (per donor at least).

        ends: DONOR_END and/or OTHER_END, the rows a two-ended event updates (a profile has one end)."""
        if not ends:
            return
        t = np.array([donor_state_time(event.event_time)])
        key = np.array([donor_key(event.donor_id)], dtype=np.int64)
        if isinstance(event, GiftEvent):
            referrer = donor_key(event.referrer_donor_id) if event.referrer_donor_id else NO_KEY
            self.ingest_gifts(key, np.array([referrer]), t, np.array([month_index(event.event_time)]),
                              np.array([event.amount]), np.array([GIFT_CHANNEL_CODES[event.channel.value]]),
                              np.array([event.is_recurring]), np.array([ends]))
        elif isinstance(event, DonorProfile):
            self.ingest_profiles(key, t, profile_values([event], self.region_buckets))
        elif isinstance(event, DonorRelationship):
            strength = np.nan if event.strength is None else event.strength
            self.ingest_relationships(key, np.array([donor_key(event.related_donor_id)]), t,
                                      np.array([RELATIONSHIP_CODES[event.relationship_type.value]]),
                                      np.array([event.action == "add"]), np.array([strength]), np.array([ends]))
        else:
            raise TypeError(f"not a donor event: {type(event).__name__}; expected GiftEvent, DonorProfile or "
                            "DonorRelationship")

    # -- serialisation of one donor, for changelog-backed tables -----------------------------

    def export_donor(self, key: int) -> bytes:
        """One donor's state as bytes; neighbours travel as stable keys, not rows."""
        row = self.index[key]
        header = np.array([_EXPORT_VERSION, self.window, self.fanout, N_META, N_PROFILE], dtype=np.int64)
        parts = [header.tobytes(), self.meta[row].tobytes(), self.profile[row].tobytes()]
        parts += [self.ring[name][row].tobytes() for name, _ in _RING_FIELDS]
        parts += [self.degree[row].astype(np.int32).tobytes(), self.adj_len[row].astype(np.int32).tobytes()]
        for k in range(N_RELATIONSHIP_TYPES):
            slots = self._adjacency_slots(row, k)
            blocks, pos = self.adj_block[row, k, slots // BLOCK], slots % BLOCK
            parts.append(self.keys[self.pool["neighbour"][blocks, pos]].tobytes())
            parts.append(self.pool["time"][blocks, pos].tobytes())
            parts.append(self.pool["strength"][blocks, pos].tobytes())
        return b"".join(parts)

    def import_donor(self, key: int, blob: bytes) -> int:
        """Restore a donor exported by `export_donor` (replacing what this state held for it)."""
        reader = _Reader(blob)
        version, window, fanout, n_meta, n_profile = reader.take(np.int64, 5)
        if (version, window, fanout, n_meta, n_profile) != (_EXPORT_VERSION, self.window, self.fanout, N_META, N_PROFILE):
            raise ValueError(
                f"donor state was exported as version {version}, window {window}, fanout {fanout}, "
                f"{n_meta} meta and {n_profile} profile fields; this state has version {_EXPORT_VERSION}, window "
                f"{self.window}, fanout {self.fanout}, {N_META} and {N_PROFILE}: rebuild the state by replay"
            )
        row = self.row(key)
        self.meta[row] = reader.take(np.float64, N_META)
        self.profile[row] = reader.take(np.float64, N_PROFILE)
        for name, dtype in _RING_FIELDS:
            self.ring[name][row] = reader.take(dtype, self.window)
        self.degree[row] = reader.take(np.int32, N_RELATIONSHIP_TYPES)
        lengths = reader.take(np.int32, N_RELATIONSHIP_TYPES)
        self.adj_len[row] = 0
        for k in range(N_RELATIONSHIP_TYPES):
            n = int(lengths[k])
            neighbour_keys, times, strengths = reader.take(np.int64, n), reader.take(np.float64, n), reader.take(np.float32, n)
            # A neighbour not restored yet gets its (empty) row now; its own record fills it.
            rows = [self.row(int(nk)) for nk in neighbour_keys]
            self.ensure_capacity(0, self.fanout // BLOCK)
            for r, t, s in zip(rows, times, strengths):
                _adj_append(row, k, r, t, s, self.adj_block, self.adj_len, self.blocks_used,
                            self.pool["neighbour"], self.pool["time"], self.pool["strength"])
        if self.meta[row, SEEN]:
            self._advance(max(self.meta[row, LAST_GIFT_TIME], self.meta[row, PROFILE_TIME], self.meta[row, LAST_EDGE_TIME],
                              self.meta[row, REFERRAL_LAST_TIME]))
        return row

    def _adjacency_slots(self, row: int, k: int) -> np.ndarray:
        return np.arange(int(self.adj_len[row, k]))

    def neighbours(self, donor_id: str, relationship: RelationshipType) -> list[str] | list[int]:
        """Keys of a donor's listed live neighbours of one type, oldest first (for tests and debugging)."""
        row = self.lookup(donor_key(donor_id))
        k = RELATIONSHIP_CODES[relationship.value]
        slots = self._adjacency_slots(row, k)
        return self.keys[self.pool["neighbour"][self.adj_block[row, k, slots // BLOCK], slots % BLOCK]].tolist()


def _ends(ends: np.ndarray | None, n: int) -> np.ndarray:
    return np.full(n, BOTH_ENDS, dtype=np.uint8) if ends is None else np.asarray(ends, dtype=np.uint8)


class _Reader:
    def __init__(self, blob: bytes):
        self.blob, self.offset = blob, 0

    def take(self, dtype, count: int) -> np.ndarray:
        values = np.frombuffer(self.blob, dtype=dtype, count=count, offset=self.offset)
        self.offset += values.nbytes
        return values.copy()


def profile_values(profiles: list[DonorProfile], region_buckets: int) -> np.ndarray:
    """PROFILE_INPUTS of contract events as a float array, NaN where missing."""
    out = np.full((len(profiles), N_PROFILE_INPUTS), np.nan)
    for i, p in enumerate(profiles):
        out[i] = [
            _num(p.tenure_years),
            AGE_BAND_CODES.get(p.age_band.value, np.nan),
            _num(p.wealth_index),
            _num(p.home_owner),
            region_bucket(p.region, region_buckets) if p.region is not None else np.nan,
            _num(p.event_attendance_12m),
            _num(p.email_open_rate_12m),
            _num(p.volunteer_hours_12m),
            _num(p.promotions_received_12m),
            _num(p.prior_gift_count),
            _num(p.prior_gift_total),
            _num(p.months_since_last_gift),
            _num(p.months_since_first_gift),
        ]
    return out


def _num(value) -> float:
    return np.nan if value is None else float(value)
