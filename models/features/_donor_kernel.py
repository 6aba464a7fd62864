"""The compiled read path of donor features: reads the state, writes a `DonorBatch`'s arrays.

Reading never writes. Feature order must match the name tuples in
`models.features.donor_schema` (the anchors below catch a list edited alone).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from models.features.donor_layout import (
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
    P_PREV,
    PROFILE_COUNT,
    PROFILE_TIME,
    RECURRING_BIT,
    RECURRING_COUNT,
    REFERRAL_COUNT,
    REFERRAL_DECAYED,
    REFERRAL_LAST_TIME,
    REFERRAL_SUM,
    REFERRED_BIT,
    REFERRED_COUNT,
    SEEN,
)
from models.features.donor_schema import (
    _EVENT_CHANNEL,
    _N_CHANNELS,
    _TAB_GIVING,
    _TAB_NETWORK,
    _TAB_REFERRAL,
    _TAB_REGION,
    F_EDGE,
    F_GIFT,
    F_NODE,
    F_TAB,
    TAB_FEATURES,
)

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
