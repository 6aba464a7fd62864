"""The compiled write path of the donor state: ingest gifts, profiles and relationships.

Called by `models.features.donor_state.DonorState`, which owns the arrays; these kernels
only mutate them, in event order, and never allocate (the state grows before calling).
"""

from __future__ import annotations

import math

from numba import njit

from models.features.donor_layout import (
    DONOR_END,
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
    NO_KEY,
    OTHER_END,
    P_ATTEND,
    P_PREV,
    PROFILE_COUNT,
    PROFILE_TIME,
    RECURRING_BIT,
    RECURRING_COUNT,
    REFERRAL_COUNT,
    REFERRAL_DECAYED,
    REFERRAL_LAST_TIME,
    REFERRAL_SUM,
    REFERRED_COUNT,
    SEEN,
)
from models.features.keyed_rows import row_for


@njit(cache=True)
def _decayed(value, since, now):
    """A count decayed with a one-year time constant, brought from `since` to `now`."""
    return value * math.exp(-max(now - since, 0.0) / 31_557_600.0)


@njit(cache=True)
def _ingest_gifts(start, donor_keys, referrer_keys, times, months, log_amounts, amounts, codes, ends,
                  index, rows_used, keys, meta, r_amount, r_time, r_month, r_code):  # fmt: skip
    """Returns the index of the first gift not ingested (capacity ran short) or len."""
    window = r_amount.shape[1]
    capacity = meta.shape[0]
    for i in range(start, donor_keys.shape[0]):
        if rows_used[0] + 2 > capacity:
            return i
        t = times[i]
        la = log_amounts[i]
        if ends[i] & DONOR_END:
            row = row_for(donor_keys[i], index, rows_used, keys)
            n = int(meta[row, GIFT_COUNT])
            pos = n % window
            r_amount[row, pos] = la
            r_time[row, pos] = t
            r_month[row, pos] = months[i]
            r_code[row, pos] = codes[i]
            if n == 0:
                meta[row, FIRST_GIFT_TIME] = t
                meta[row, GIFT_MAX_LOG] = la
            meta[row, GIFT_COUNT] = n + 1
            meta[row, GIFT_SUM] += amounts[i]
            meta[row, GIFT_SUM_LOG] += la
            meta[row, GIFT_SUMSQ_LOG] += la * la
            meta[row, GIFT_MAX_LOG] = max(meta[row, GIFT_MAX_LOG], la)
            meta[row, LAST_GIFT_TIME] = t
            if codes[i] & RECURRING_BIT:
                meta[row, RECURRING_COUNT] += 1.0
            meta[row, SEEN] = 1.0
            if referrer_keys[i] != NO_KEY:
                meta[row, REFERRED_COUNT] += 1.0
        if referrer_keys[i] != NO_KEY and ends[i] & OTHER_END:
            ref = row_for(referrer_keys[i], index, rows_used, keys)
            meta[ref, REFERRAL_DECAYED] = _decayed(meta[ref, REFERRAL_DECAYED], meta[ref, REFERRAL_LAST_TIME], t) + 1.0
            meta[ref, REFERRAL_COUNT] += 1.0
            meta[ref, REFERRAL_SUM] += amounts[i]
            meta[ref, REFERRAL_LAST_TIME] = t
            meta[ref, SEEN] = 1.0
    return donor_keys.shape[0]


@njit(cache=True)
def _ingest_profiles(start, donor_keys, times, values, index, rows_used, keys, meta, profile):
    capacity = meta.shape[0]
    n_inputs = values.shape[1]
    for i in range(start, donor_keys.shape[0]):
        if rows_used[0] + 1 > capacity:
            return i
        row = row_for(donor_keys[i], index, rows_used, keys)
        for f in range(4):
            profile[row, P_PREV + f] = profile[row, P_ATTEND + f]
        for f in range(n_inputs):
            profile[row, f] = values[i, f]
        meta[row, PROFILE_COUNT] += 1.0
        meta[row, PROFILE_TIME] = times[i]
        meta[row, SEEN] = 1.0
    return donor_keys.shape[0]


@njit(cache=True)
def _adj_find(row, k, neighbour, adj_block, adj_len, p_neighbour):
    for s in range(adj_len[row, k]):
        if p_neighbour[adj_block[row, k, s >> 3], s & 7] == neighbour:
            return s
    return -1


@njit(cache=True)
def _adj_delete(row, k, s, adj_block, adj_len, p_neighbour, p_time, p_strength):
    """Remove slot s, shifting the newer slots down one (the list stays oldest first)."""
    n = adj_len[row, k]
    for j in range(s, n - 1):
        b0, q0 = adj_block[row, k, j >> 3], j & 7
        b1, q1 = adj_block[row, k, (j + 1) >> 3], (j + 1) & 7
        p_neighbour[b0, q0] = p_neighbour[b1, q1]
        p_time[b0, q0] = p_time[b1, q1]
        p_strength[b0, q0] = p_strength[b1, q1]
    adj_len[row, k] = n - 1


@njit(cache=True)
def _adj_append(row, k, neighbour, t, strength, adj_block, adj_len, blocks_used, p_neighbour, p_time, p_strength):
    """Add or refresh a neighbour as the newest entry; drops the oldest at the fan-out.

    Returns True if the neighbour was not listed before."""
    fanout = adj_block.shape[2] * 8
    s = _adj_find(row, k, neighbour, adj_block, adj_len, p_neighbour)
    if s >= 0:
        _adj_delete(row, k, s, adj_block, adj_len, p_neighbour, p_time, p_strength)
    elif adj_len[row, k] == fanout:
        _adj_delete(row, k, 0, adj_block, adj_len, p_neighbour, p_time, p_strength)
    n = adj_len[row, k]
    if adj_block[row, k, n >> 3] == 0:
        adj_block[row, k, n >> 3] = blocks_used[0]
        blocks_used[0] += 1
    b, q = adj_block[row, k, n >> 3], n & 7
    p_neighbour[b, q] = neighbour
    p_time[b, q] = t
    p_strength[b, q] = strength
    adj_len[row, k] = n + 1
    return s < 0


@njit(cache=True)
def _ingest_relationships(start, donor_keys, related_keys, times, types_, added, strengths, ends,
                          index, rows_used, keys, meta, adj_block, adj_len, degree, blocks_used,
                          p_neighbour, p_time, p_strength):  # fmt: skip
    capacity = meta.shape[0]
    pool = p_neighbour.shape[0]
    for i in range(start, donor_keys.shape[0]):
        if rows_used[0] + 2 > capacity or blocks_used[0] + 2 > pool:
            return i
        t = times[i]
        k = types_[i]
        a = row_for(donor_keys[i], index, rows_used, keys)
        b = row_for(related_keys[i], index, rows_used, keys)
        for side in range(2):
            if not ends[i] & (DONOR_END if side == 0 else OTHER_END):
                continue
            row, other = (a, b) if side == 0 else (b, a)
            meta[row, SEEN] = 1.0
            if added[i]:
                if _adj_append(row, k, other, t, strengths[i], adj_block, adj_len, blocks_used,
                               p_neighbour, p_time, p_strength):
                    degree[row, k] += 1
                meta[row, EDGE_ADDS] += 1.0
                meta[row, EDGE_ADDS_DECAYED] = _decayed(meta[row, EDGE_ADDS_DECAYED], meta[row, LAST_EDGE_TIME], t) + 1.0
                meta[row, LAST_EDGE_TIME] = t
            else:
                s = _adj_find(row, k, other, adj_block, adj_len, p_neighbour)
                if s >= 0:
                    _adj_delete(row, k, s, adj_block, adj_len, p_neighbour, p_time, p_strength)
                # The edge may have been pushed out of the list by newer ones; it was still live.
                if degree[row, k] > 0:
                    degree[row, k] -= 1
                meta[row, EDGE_REMOVES] += 1.0
    return donor_keys.shape[0]
