"""The compiled hot path of transaction features: read state, write features, record.

One loop over the batch, in order. For each transaction it first writes every feature
from the state as it is *before* the transaction (both endpoints, their hop-1 and hop-2
neighbourhoods), then records the transaction into both accounts. Sequential and exact,
so batch boundaries never change a feature, and the same kernel runs offline and in
the worker. Feature order must match the name tuples in `transactions.py`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from models.features._rich_kernel import rich_into
from models.features.keyed_rows import row_for

# Indices into a META row (see account_state.META_FIELDS).
_COUNT, _FIRST, _AGG_TIME, _N_OUT, _N_IN, _SUM_OUT, _SUM_IN, _MAX, _RATE_1H, _RATE_1D, _AMOUNT_1D = range(11)
_TAU_1H = 3600.0
_TAU_1D = 86_400.0
_N_TYPES = 5
_OUTGOING = 8
_N_CHANNELS = 7
_TWO_PI = 2.0 * math.pi
_N_BASE_EVENT = 24  # event features before the rich ones (_rich_kernel)


@njit(cache=True, inline="always")
def _node_into(out, meta_row, t):
    """NODE_FEATURES of an account as read at time t."""
    count = meta_row[_COUNT]
    if count <= 0.0:
        for f in range(12):
            out[f] = 0.0
        return
    elapsed = max(t - meta_row[_AGG_TIME], 0.0)
    n_out = meta_row[_N_OUT]
    n_in = meta_row[_N_IN]
    decay_1d = math.exp(-elapsed / _TAU_1D)
    rate_1d = meta_row[_RATE_1D] * decay_1d
    out[0] = 1.0
    out[1] = math.log1p(count)
    out[2] = math.log1p(n_out)
    out[3] = math.log1p(n_in)
    out[4] = meta_row[_SUM_OUT] / max(n_out, 1.0)
    out[5] = meta_row[_SUM_IN] / max(n_in, 1.0)
    out[6] = meta_row[_MAX]
    out[7] = math.log1p(meta_row[_RATE_1H] * math.exp(-elapsed / _TAU_1H))
    out[8] = math.log1p(rate_1d)
    out[9] = meta_row[_AMOUNT_1D] * decay_1d / rate_1d if rate_1d > 1e-6 else 0.0
    out[10] = math.log1p(max(t - meta_row[_FIRST], 0.0) / 86_400.0)
    out[11] = math.log1p(elapsed / 3600.0)


@njit(cache=True, inline="always")
def _kind_into(out, start, kind):
    """outgoing flag then the type one-hot, at out[start:start + 6]."""
    out[start] = 1.0 if kind >= _OUTGOING else 0.0
    code = kind % _OUTGOING
    for k in range(_N_TYPES):
        out[start + 1 + k] = 1.0 if code == k else 0.0


@njit(cache=True, inline="always")
def _edge_into(out, start, log_amount, time, kind, t):
    """EDGE_FEATURES at out[start:start + 8]."""
    out[start] = log_amount
    _kind_into(out, start + 1, kind)
    out[start + 7] = math.log1p(max(t - time, 0.0) / 3600.0)


@njit(cache=True, nogil=True)
def _record(row, other, log_amount, time, type_code, outgoing, meta, r_amount, r_time, r_cp, r_kind):
    """Append one transaction to an account's ring and aggregates."""
    window = r_amount.shape[1]
    n = int(meta[row, _COUNT])
    pos = n % window
    r_amount[row, pos] = log_amount
    r_time[row, pos] = time
    r_cp[row, pos] = other
    r_kind[row, pos] = type_code + (_OUTGOING if outgoing else 0)
    if n == 0:
        meta[row, _FIRST] = time
    elapsed = max(time - meta[row, _AGG_TIME], 0.0)
    decay_1h = math.exp(-elapsed / _TAU_1H)
    decay_1d = math.exp(-elapsed / _TAU_1D)
    meta[row, _COUNT] = n + 1
    meta[row, _AGG_TIME] = time
    meta[row, _RATE_1H] = meta[row, _RATE_1H] * decay_1h + 1.0
    meta[row, _RATE_1D] = meta[row, _RATE_1D] * decay_1d + 1.0
    meta[row, _AMOUNT_1D] = meta[row, _AMOUNT_1D] * decay_1d + log_amount
    if outgoing:
        meta[row, _N_OUT] += 1.0
        meta[row, _SUM_OUT] += log_amount
    else:
        meta[row, _N_IN] += 1.0
        meta[row, _SUM_IN] += log_amount
    if log_amount > meta[row, _MAX]:
        meta[row, _MAX] = log_amount


@njit(cache=True, inline="always")
def _repeats(event_key, offset, recent_ids, recent_offsets):
    """Whether another record (not the one at `offset`) with this event key is among the
    account's recent outgoing transactions."""
    if event_key == 0:
        return False
    for j in range(recent_ids.shape[0]):
        if recent_ids[j] == event_key and recent_offsets[j] != offset:
            return True
    return False


@njit(cache=True, inline="always")
def _remember(source, event_key, offset, meta, recent_ids, recent_offsets):
    """Keep an outgoing transaction among its source's last few (before it is recorded)."""
    if event_key != 0:
        slot = int(meta[source, _N_OUT]) % recent_ids.shape[1]
        recent_ids[source, slot] = event_key
        recent_offsets[source, slot] = offset


# nogil: the worker runs this in a thread beside Faust's event loop; holding the GIL
# here would stall consuming and heartbeats for the whole batch.
@njit(cache=True, nogil=True)
def featurize_and_record(
    source_keys, destination_keys, times, amounts, log_amounts, type_codes, channel_codes, offsets, published_offset,
    event_keys, want, index, rows_used, keys, meta, r_amount, r_time, r_cp, r_kind, last_offset, recent_ids, recent_offsets,
    out_event, out_seq, out_seq_mask, out_node, out_hop1, out_hop1_mask, out_hop2, out_hop2_mask, out_replayed,
    out_duplicate, out_rows, out_seq_counterparty, out_seq_time,
):  # fmt: skip
    """Features then record, per transaction in order.

    `offsets` are the input offsets of the transactions (increasing per state). A
    transaction at or below `published_offset` already has its outputs published, and
    one at or below an endpoint's `last_offset` is already in that endpoint's state
    (both happen to events redelivered after a restart). Such a transaction is not
    scored again (`out_replayed`, no features) and is recorded only into the endpoints
    that lack it; recording touches nothing but the account's own state, so this is exact.

    `event_keys` (0: unknown) identify the transactions: one whose key is among its
    source account's last few outgoing ones (`recent_ids`), recorded from another
    offset (`recent_offsets`), is a repeat of an event id.
    It is recorded nowhere and featurised never: `out_duplicate` when its outputs are
    still to be published (the worker dead-letters it), `out_replayed` when they are.

    `want[i]` false: the transaction is only recorded (`out_replayed`, no features), as a
    view of the whole graph does with transactions another worker scores.

    `out_seq_counterparty` and `out_seq_time` place each window step: its counterparty's
    row and its time, for the evidence an alert cites (not model inputs).
    """
    window = r_amount.shape[1]
    k1 = out_hop1.shape[2]
    k2 = out_hop2.shape[3]
    rows = np.zeros(2, dtype=np.int64)
    for i in range(source_keys.shape[0]):
        t = float(times[i])
        rows[0] = index[source_keys[i]] if source_keys[i] in index else 0
        rows[1] = index[destination_keys[i]] if destination_keys[i] in index else 0
        if rows[0] != 0 and _repeats(event_keys[i], offsets[i], recent_ids[rows[0]], recent_offsets[rows[0]]):
            if offsets[i] <= published_offset:
                out_replayed[i] = True
            else:
                out_duplicate[i] = True
            continue
        source_done = rows[0] != 0 and last_offset[rows[0]] >= offsets[i]
        destination_done = rows[1] != 0 and last_offset[rows[1]] >= offsets[i]
        if offsets[i] <= published_offset or source_done or destination_done or not want[i]:
            out_replayed[i] = True
            source = row_for(source_keys[i], index, rows_used, keys)
            destination = row_for(destination_keys[i], index, rows_used, keys)
            log_amount = float(log_amounts[i])
            if not source_done:
                _remember(source, event_keys[i], offsets[i], meta, recent_ids, recent_offsets)
                _record(source, destination, log_amount, times[i], type_codes[i], True, meta, r_amount, r_time, r_cp, r_kind)
                last_offset[source] = offsets[i]
            if not destination_done:
                _record(destination, source, log_amount, times[i], type_codes[i], False, meta, r_amount, r_time, r_cp, r_kind)
                last_offset[destination] = offsets[i]
            out_rows[i, 0] = source
            out_rows[i, 1] = destination
            continue
        pair_count = 0
        for side in range(2):
            row = rows[side]
            other = rows[1 - side]
            _node_into(out_node[i, side], meta[row], t)
            n = int(meta[row, _COUNT])
            m = min(n, window)
            previous_time = 0.0
            for j in range(m):  # window, oldest first, right-aligned
                pos = (n - m + j) % window
                p = window - m + j
                entry_time = float(r_time[row, pos])
                f = out_seq[i, side, p]
                f[0] = r_amount[row, pos]
                _kind_into(f, 1, r_kind[row, pos])
                f[7] = math.log1p(max(t - entry_time, 0.0) / 3600.0)
                f[8] = math.log1p(max(entry_time - previous_time, 0.0) / 3600.0) if j > 0 else 0.0
                angle = (entry_time % 86_400.0) / 86_400.0 * _TWO_PI
                f[9] = math.sin(angle)
                f[10] = math.cos(angle)
                with_current = other != 0 and r_cp[row, pos] == other
                f[11] = 1.0 if with_current else 0.0
                if side == 0 and with_current:
                    pair_count += 1
                out_seq_mask[i, side, p] = 1.0
                out_seq_counterparty[i, side, p] = r_cp[row, pos]
                out_seq_time[i, side, p] = r_time[row, pos]
                previous_time = entry_time
            for j in range(min(k1, m)):  # hop 1: latest counterparties, newest first
                pos = (n - 1 - j) % window
                neighbour = r_cp[row, pos]
                h = out_hop1[i, side, j]
                _node_into(h, meta[neighbour], t)
                _edge_into(h, 12, r_amount[row, pos], float(r_time[row, pos]), r_kind[row, pos], t)
                out_hop1_mask[i, side, j] = 1.0
                n2 = int(meta[neighbour, _COUNT])
                for k in range(min(k2, n2, window)):  # hop 2: the neighbour's latest counterparties
                    pos2 = (n2 - 1 - k) % window
                    h2 = out_hop2[i, side, j, k]
                    _node_into(h2, meta[r_cp[neighbour, pos2]], t)
                    _edge_into(h2, 12, r_amount[neighbour, pos2], float(r_time[neighbour, pos2]), r_kind[neighbour, pos2], t)
                    out_hop2_mask[i, side, j, k] = 1.0

        e = out_event[i]
        log_amount = float(log_amounts[i])
        e[0] = log_amount
        for k in range(_N_TYPES):
            e[1 + k] = 1.0 if type_codes[i] == k else 0.0
        for k in range(_N_CHANNELS):
            e[6 + k] = 1.0 if channel_codes[i] == k else 0.0
        angle = (t % 86_400.0) / 86_400.0 * _TWO_PI
        e[13] = math.sin(angle)
        e[14] = math.cos(angle)
        weekday = (math.floor(t / 86_400.0) % 7.0) / 7.0 * _TWO_PI
        e[15] = math.sin(weekday)
        e[16] = math.cos(weekday)
        e[17] = out_node[i, 0, 0]
        e[18] = out_node[i, 1, 0]
        e[19] = out_node[i, 0, 11]
        e[20] = out_node[i, 1, 11]
        e[21] = pair_count
        e[22] = (log_amount - out_node[i, 0, 4]) * out_node[i, 0, 0]
        e[23] = (log_amount - out_node[i, 1, 5]) * out_node[i, 1, 0]
        rich_into(e[_N_BASE_EVENT:], rows[0], rows[1], t, float(amounts[i]), log_amount, meta, _COUNT,
                  r_amount, r_time, r_cp, r_kind)

        source = row_for(source_keys[i], index, rows_used, keys)
        destination = row_for(destination_keys[i], index, rows_used, keys)
        _remember(source, event_keys[i], offsets[i], meta, recent_ids, recent_offsets)
        _record(source, destination, log_amount, times[i], type_codes[i], True, meta, r_amount, r_time, r_cp, r_kind)
        _record(destination, source, log_amount, times[i], type_codes[i], False, meta, r_amount, r_time, r_cp, r_kind)
        last_offset[source] = offsets[i]
        last_offset[destination] = offsets[i]
        out_rows[i, 0] = source
        out_rows[i, 1] = destination
