"""Bitcoin OTC signed trust ratings (SNAP) -> fraud world: one transfer-like edge per rating."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.worlds import WorldKind, WorldManifest

from ._csv import Column, CsvSpec, read_bytes, read_csv
from ._world import (
    NO_TIME,
    US_PER_SECOND,
    account_labels,
    event_ids,
    event_table,
    label_table,
    require_rows,
    timestamps,
    validate_events,
    write_world,
)

SOURCE = "bitcoin-otc"
ACCOUNT_PREFIX = "btc-"
SPEC = CsvSpec(
    (Column("SOURCE"), Column("TARGET"), Column("RATING", "float"), Column("TIME", "float")),
    header="optional",
)
NEGATIVE = "negative_rating"


def import_bitcoin_otc(path: Path, out: Path, progress: bool = True) -> WorldManifest:
    path = Path(path)
    rows = read_csv(read_bytes(path, SPEC.expected()), str(path), SPEC)
    header_lines = int(rows.line[0]) - 1

    source, target = rows["SOURCE"].astype(str), rows["TARGET"].astype(str)
    rating = rows["RATING"]
    # Rule, not error: a self-rating is not an edge the contract accepts; dropped, counted.
    self_rating = source == target
    keep = np.flatnonzero(~self_rating)
    require_rows(keep, str(path), "self-ratings")

    # TIME is epoch seconds with a fractional part; the world keeps microseconds.
    # Equal times keep file order.
    us = np.rint(rows["TIME"][keep] * US_PER_SECOND).astype(np.int64)
    order = np.argsort(us, kind="stable")
    take, times = keep[order], us[order]
    src = np.char.add(ACCOUNT_PREFIX, source[take])
    dst = np.char.add(ACCOUNT_PREFIX, target[take])
    n = len(take)
    events = {
        "event_id": event_ids(SOURCE, rows.line[take], header_lines=header_lines),
        "event_time": timestamps(times),
        "source_account": src.astype(object),
        "destination_account": dst.astype(object),
        # The rating is the label: it stays out of the event, which carries a unit amount.
        "amount": np.ones(n),
        "currency": np.full(n, "XBT", dtype=object),
        "type": np.full(n, "transfer", dtype=object),
        "channel": np.full(n, "web", dtype=object),
    }
    table = event_table("transactions", events)
    validate_events("transactions", table, rows.line[take], str(path), progress)

    negative = rating[take] < 0
    tx_labels = label_table(
        "transactions",
        {"event_id": events["event_id"], "is_fraud": negative, "pattern_type": np.where(negative, NEGATIVE, None)},
    )
    universe = np.unique(np.concatenate([src, dst]))
    fraud, since = received_rating_fraud(universe, dst, times, rating[take])
    accounts = account_labels(universe.astype(object), fraud, since)

    n_self = int(self_rating.sum())
    manifest = WorldManifest(
        kind=WorldKind.FRAUD,
        synthetic=False,
        source="SNAP Bitcoin OTC (soc-sign-bitcoinotc)",
        description="Who-trusts-whom ratings between Bitcoin OTC traders; each rating is a transfer-like edge "
        "from rater to rated, a negative rating is a distrust/fraud report.",
        parameters={
            "input": str(path),
            "rows_read": len(rows),
            "rows_dropped": {"self_rating": n_self},
            "amount": "1.0 per rating (a unit; the rating is the label and is kept out of the event)",
            "currency": "XBT",
            "channel": "web",
            "transaction_label_rule": "is_fraud = rating < 0",
            "account_label_rule": "is_fraud = sum of received ratings < 0; fraud_since = first time the running "
            "sum of received ratings went below 0",
        },
        notes=[
            "Please cite the data set: S. Kumar, F. Spezzano, V.S. Subrahmanian, C. Faloutsos, 'Edge Weight "
            "Prediction in Weighted Signed Networks', ICDM 2016 (SNAP, snap.stanford.edu/data/soc-sign-bitcoin-otc).",
            "These are trust ratings, not payments: amount is a constant 1.0 unit and carries no information; "
            "the rating value is the label and is deliberately absent from the events.",
            "Account labels use the usual proxy: a user whose received ratings sum below zero is fraudulent. The "
            "sum uses the whole history (a label, not a feature); fraud_since is when the running sum first went "
            "below zero (a user who dips below zero, recovers and ends below zero again counts from the first dip).",
            f"Dropped rows: {n_self} self-ratings (the contract needs two distinct accounts).",
        ],
    )
    return write_world(out, {"transactions": table}, {"transactions": tx_labels, "accounts": accounts}, manifest)


def received_rating_fraud(
    universe: np.ndarray, rated: np.ndarray, times: np.ndarray, rating: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per account of the sorted `universe`: (received ratings sum below zero, first time the
    running sum went below zero or NO_TIME). Rows must be in time order."""
    key = np.searchsorted(universe, rated)
    order = np.argsort(key, kind="stable")  # by account, time order kept inside
    key, t, r = key[order], np.asarray(times)[order], np.asarray(rating, dtype=float)[order]
    total = np.cumsum(r)
    group_first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.array([], dtype=int)
    before = np.r_[0.0, total][group_first]  # cumulative sum before each group starts
    running = total - np.repeat(before, np.diff(np.r_[group_first, len(key)]))
    # Exact sums: ratings are small integers, so float cumsum is exact here; round away
    # the noise a fractional rating file could add.
    running = np.round(running, 9)

    fraud = np.zeros(len(universe), dtype=bool)
    last = np.r_[group_first[1:] - 1, len(key) - 1] if len(key) else np.array([], dtype=int)
    fraud[key[last]] = running[last] < 0
    since = np.full(len(universe), NO_TIME, dtype=np.int64)
    below = running < 0
    np.minimum.at(since, key[below], t[below])
    return fraud, since
