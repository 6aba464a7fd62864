"""The signals an AML analyst computes, read from the account windows at scoring time.

Velocity over several horizons, fan-in and fan-out, pass-through, amount echoes, pair
history and reciprocity, common counterparties and short cycles back to the source.
Everything is derived from state the features already keep (each account's ring of its
last `window` transactions, in and out), so memory per account does not grow, and every
figure is bounded by the window: a count "over 30 days" counts the window's entries of
the last 30 days. Read before the transaction is recorded, so causal.

Feature order must match `RICH_FEATURES` in `transactions.py`.
"""

from __future__ import annotations

import math

from numba import njit

_OUTGOING = 8
_HOUR_S = 3600.0
_DAY_S = 86_400.0
_WEEK_S = 7 * 86_400.0
_MONTH_S = 30 * 86_400.0
_ECHO_10PCT = math.log(1.1)
_EXACT = 1e-4  # log amounts are float32: equal amounts agree to ~1e-7
N_PER_SIDE = 22
N_RICH = 3 + 2 * N_PER_SIDE + 4 + 3 + 3
# Cycle scans are capped so a hub costs as much as anyone: the destination's latest
# counterparties, and theirs, at most this many each.
_CYCLE_FANOUT = 10


@njit(cache=True, inline="always")
def _side_into(out, start, row, t, log_amount, meta_count, r_amount, r_time, r_cp, r_kind):
    """N_PER_SIDE features of one account's window as of time t, at out[start:]."""
    window = r_amount.shape[1]
    n = int(meta_count)
    m = min(n, window)
    out_1h = out_1d = out_7d = out_30d = in_1h = in_1d = in_7d = in_30d = 0.0
    out_sum_1d = out_sum_7d = in_sum_1d = in_sum_7d = 0.0
    n_out = n_in = 0.0
    min_amount = 0.0
    echo_exact = echo_near = 0.0
    for j in range(m):
        pos = (n - 1 - j) % window
        age = t - float(r_time[row, pos])
        amount = float(r_amount[row, pos])
        outgoing = r_kind[row, pos] >= _OUTGOING
        raw = math.expm1(amount)
        if outgoing:
            n_out += 1.0
            out_1h += 1.0 if age <= _HOUR_S else 0.0
            out_30d += 1.0 if age <= _MONTH_S else 0.0
            if age <= _DAY_S:
                out_1d += 1.0
                out_sum_1d += raw
            if age <= _WEEK_S:
                out_7d += 1.0
                out_sum_7d += raw
        else:
            n_in += 1.0
            in_1h += 1.0 if age <= _HOUR_S else 0.0
            in_30d += 1.0 if age <= _MONTH_S else 0.0
            if age <= _DAY_S:
                in_1d += 1.0
                in_sum_1d += raw
            if age <= _WEEK_S:
                in_7d += 1.0
                in_sum_7d += raw
        if j == 0 or amount < min_amount:
            min_amount = amount
        difference = abs(amount - log_amount)
        if difference < _EXACT:
            echo_exact += 1.0
        if difference < _ECHO_10PCT:
            echo_near += 1.0
    # Distinct counterparties, in and out, in the window and in its last 7 days.
    distinct_out = distinct_in = distinct_out_7d = distinct_in_7d = 0.0
    for j in range(m):
        pos = (n - 1 - j) % window
        outgoing = r_kind[row, pos] >= _OUTGOING
        cp = r_cp[row, pos]
        first = True
        for k in range(j):  # a newer entry with the same counterparty, same direction?
            pos2 = (n - 1 - k) % window
            if r_cp[row, pos2] == cp and (r_kind[row, pos2] >= _OUTGOING) == outgoing:
                first = False
                break
        if first:  # counted at its newest entry, so "in the last 7 days" asks that entry's age
            recent = 1.0 if t - float(r_time[row, pos]) <= _WEEK_S else 0.0
            if outgoing:
                distinct_out += 1.0
                distinct_out_7d += recent
            else:
                distinct_in += 1.0
                distinct_in_7d += recent
    out[start] = math.log1p(out_1h)
    out[start + 1] = math.log1p(out_1d)
    out[start + 2] = math.log1p(out_7d)
    out[start + 3] = math.log1p(out_30d)
    out[start + 4] = math.log1p(in_1h)
    out[start + 5] = math.log1p(in_1d)
    out[start + 6] = math.log1p(in_7d)
    out[start + 7] = math.log1p(in_30d)
    out[start + 8] = math.log1p(out_sum_1d)
    out[start + 9] = math.log1p(out_sum_7d)
    out[start + 10] = math.log1p(in_sum_1d)
    out[start + 11] = math.log1p(in_sum_7d)
    out[start + 12] = math.log1p(distinct_out_7d)
    out[start + 13] = math.log1p(distinct_in_7d)
    out[start + 14] = math.log1p(distinct_out)
    out[start + 15] = math.log1p(distinct_in)
    out[start + 16] = distinct_out / n_out if n_out > 0 else 0.0
    out[start + 17] = distinct_in / n_in if n_in > 0 else 0.0
    net = in_sum_7d - out_sum_7d
    out[start + 18] = math.copysign(math.log1p(abs(net)), net)
    out[start + 19] = min_amount
    out[start + 20] = math.log1p(echo_exact)
    out[start + 21] = math.log1p(echo_near)


@njit(cache=True, inline="always")
def _sends_to(row, target, r_cp, r_kind, n, window):
    """Whether an account's window holds money it sent to `target`."""
    for j in range(min(n, window)):
        pos = (n - 1 - j) % window
        if r_cp[row, pos] == target and r_kind[row, pos] >= _OUTGOING:
            return True
    return False


@njit(cache=True, nogil=True)
def rich_into(out, source, destination, t, amount, log_amount, meta, count_field, r_amount, r_time, r_cp, r_kind):
    """RICH_FEATURES of a transaction source -> destination (state rows; 0: unknown) at
    time t, from the state before it."""
    window = r_amount.shape[1]
    out[0] = 1.0 if amount >= 100.0 and amount % 100.0 == 0.0 else 0.0
    out[1] = 1.0 if amount >= 1000.0 and amount % 1000.0 == 0.0 else 0.0
    out[2] = 1.0 if 9000.0 <= amount < 10_000.0 else 0.0  # just under a common reporting threshold
    n_src = int(meta[source, count_field])
    n_dst = int(meta[destination, count_field])
    _side_into(out, 3, source, t, log_amount, meta[source, count_field], r_amount, r_time, r_cp, r_kind)
    _side_into(out, 3 + N_PER_SIDE, destination, t, log_amount, meta[destination, count_field],
               r_amount, r_time, r_cp, r_kind)
    at = 3 + 2 * N_PER_SIDE

    # Pass-through: money in just before money out.
    last_in_amount = 0.0
    last_in_time = -1.0
    in_sum_1d = 0.0
    for j in range(min(n_src, window)):
        pos = (n_src - 1 - j) % window
        if r_kind[source, pos] < _OUTGOING:
            if last_in_time < 0:
                last_in_amount = float(r_amount[source, pos])
                last_in_time = float(r_time[source, pos])
            if t - float(r_time[source, pos]) <= _DAY_S:
                in_sum_1d += math.expm1(float(r_amount[source, pos]))
    has_in = last_in_time >= 0
    out[at] = 1.0 if has_in else 0.0
    out[at + 1] = log_amount - last_in_amount if has_in else 0.0
    out[at + 2] = math.log1p(max(t - last_in_time, 0.0) / 3600.0) if has_in else 0.0
    out[at + 3] = min(amount / in_sum_1d, 10.0) if in_sum_1d > 0 else 0.0
    at += 4

    # The pair: what passed between them before, both ways.
    pair_sum = 0.0
    reciprocal = 0.0
    last_pair_time = -1.0
    if source != 0 and destination != 0:
        for j in range(min(n_src, window)):
            pos = (n_src - 1 - j) % window
            if r_cp[source, pos] == destination:
                pair_sum += math.expm1(float(r_amount[source, pos]))
                if r_kind[source, pos] < _OUTGOING:
                    reciprocal += 1.0
                if last_pair_time < 0:
                    last_pair_time = float(r_time[source, pos])
    out[at] = math.log1p(pair_sum)
    out[at + 1] = math.log1p(reciprocal)
    out[at + 2] = math.log1p(max(t - last_pair_time, 0.0) / 3600.0) if last_pair_time >= 0 else 0.0
    at += 3

    # Structure: shared counterparties, and paths from the destination back to the source.
    common = 0.0
    cycle2 = 0.0
    cycle3 = 0.0
    if source != 0 and destination != 0:
        m_src = min(n_src, window)
        m_dst = min(n_dst, window)
        for j in range(m_dst):
            cp = r_cp[destination, (n_dst - 1 - j) % window]
            if cp == 0 or cp == source:
                continue
            seen = False
            for k in range(j):
                if r_cp[destination, (n_dst - 1 - k) % window] == cp:
                    seen = True
                    break
            if seen:
                continue
            for k in range(m_src):
                if r_cp[source, (n_src - 1 - k) % window] == cp:
                    common += 1.0
                    break
        scanned = 0
        for j in range(m_dst):  # destination -> y -> source, and destination -> y -> z -> source
            pos = (n_dst - 1 - j) % window
            if r_kind[destination, pos] < _OUTGOING:
                continue
            y = r_cp[destination, pos]
            if y == 0 or y == source:
                continue
            n_y = int(meta[y, count_field])
            if _sends_to(y, source, r_cp, r_kind, n_y, window):
                cycle2 += 1.0
            scanned_y = 0
            for k in range(min(n_y, window)):
                pos_y = (n_y - 1 - k) % window
                if r_kind[y, pos_y] < _OUTGOING:
                    continue
                z = r_cp[y, pos_y]
                if z != 0 and z != source and z != destination and _sends_to(
                        z, source, r_cp, r_kind, int(meta[z, count_field]), window):
                    cycle3 += 1.0
                scanned_y += 1
                if scanned_y >= _CYCLE_FANOUT:
                    break
            scanned += 1
            if scanned >= _CYCLE_FANOUT:
                break
    out[at] = math.log1p(common)
    out[at + 1] = math.log1p(cycle2)
    out[at + 2] = math.log1p(cycle3)
