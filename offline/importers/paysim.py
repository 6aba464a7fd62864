"""PaySim mobile-money log -> fraud world (transactions, per-transaction and per-account labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.worlds import WorldKind, WorldManifest

from ._csv import Column, CsvSpec, read_bytes, read_csv
from ._world import (
    NO_TIME,
    TIME_ORIGIN,
    US_PER_HOUR,
    account_labels,
    event_ids,
    event_table,
    first_time,
    label_table,
    nullable_floats,
    require_rows,
    spread_within,
    timestamps,
    to_us,
    validate_events,
    write_world,
)

SOURCE = "paysim"
SPEC = CsvSpec(
    (
        Column("step", "int"),
        Column("type"),
        Column("amount", "float"),
        Column("nameOrig"),
        Column("oldbalanceOrg", "float", required=False),
        Column("newbalanceOrig", "float", required=False),
        Column("nameDest"),
        Column("oldbalanceDest", "float", required=False),
        Column("newbalanceDest", "float", required=False),
        Column("isFraud", "int"),
    )
)
TYPES = {"PAYMENT": "payment", "TRANSFER": "transfer", "CASH_OUT": "cash_out", "CASH_IN": "cash_in", "DEBIT": "debit"}
BALANCES = {
    "oldbalanceOrg": "old_balance_source",
    "newbalanceOrig": "new_balance_source",
    "oldbalanceDest": "old_balance_destination",
    "newbalanceDest": "new_balance_destination",
}


def import_paysim(path: Path, out: Path, progress: bool = True) -> WorldManifest:
    path = Path(path)
    rows = read_csv(read_bytes(path, SPEC.expected()), str(path), SPEC)
    n_read = len(rows)

    step, amount, is_fraud = rows["step"], rows["amount"], rows["isFraud"]
    upper = np.char.upper(rows["type"].astype(str))
    rows.check(~np.isin(upper, list(TYPES)), lambda i: f"column type is {rows['type'][i]!r}; expected one of {', '.join(TYPES)}")
    rows.check(step < 0, lambda i: f"column step is {step[i]}; expected hours since the start, 0 or more")
    rows.check(amount < 0, lambda i: f"column amount is {amount[i]}; expected a positive amount (0 rows are dropped)")
    rows.check(~np.isin(is_fraud, (0, 1)), lambda i: f"column isFraud is {is_fraud[i]}; expected 0 or 1")
    kind = np.array([TYPES[t] for t in upper], dtype=object)

    # Rules, not errors: a zero amount moves nothing and a self-transfer is not an edge;
    # the contract accepts neither, so such rows are dropped and counted.
    zero = amount == 0
    self_transfer = rows["nameOrig"] == rows["nameDest"]
    keep = np.flatnonzero(~zero & ~self_transfer)
    require_rows(keep, str(path), "zero amounts and self-transfers")

    order, times = spread_within(to_us(TIME_ORIGIN) + step[keep] * US_PER_HOUR, US_PER_HOUR)
    take = keep[order]
    events = {
        "event_id": event_ids(SOURCE, rows.line[take], header_lines=1),
        "event_time": timestamps(times),
        "source_account": rows["nameOrig"][take],
        "destination_account": rows["nameDest"][take],
        "amount": amount[take],
        "currency": np.full(len(take), "USD", dtype=object),
        "type": kind[take],
        "channel": np.full(len(take), "mobile", dtype=object),
    }
    for column, field in BALANCES.items():
        events[field] = nullable_floats(rows[column][take])
    table = event_table("transactions", events)
    validate_events("transactions", table, rows.line[take], str(path), progress)

    fraud = is_fraud[take] == 1
    tx_labels = label_table("transactions", {"event_id": events["event_id"], "is_fraud": fraud})
    source, destination = events["source_account"].astype(str), events["destination_account"].astype(str)
    universe = np.unique(np.concatenate([source, destination]))
    since = first_time(source[fraud], universe, times[fraud])
    accounts = account_labels(universe.astype(object), since != NO_TIME, since)

    dropped = {"zero_amount": int(zero.sum()), "self_transfer": int((self_transfer & ~zero).sum())}
    manifest = WorldManifest(
        kind=WorldKind.FRAUD,
        synthetic=False,
        source="PaySim",
        description="PaySim mobile-money transactions (simulated from a real operator's logs by Lopez-Rojas et al.), "
        "one transaction event per row, labelled by isFraud.",
        parameters={
            "input": str(path),
            "rows_read": n_read,
            "rows_dropped": dropped,
            "time_origin": TIME_ORIGIN.isoformat(),
            "time_rule": "event_time = time_origin + step hours + (rank within step) * 3600 s / (rows in step)",
            "channel": "mobile (PaySim has no channel column)",
            "currency": "USD (PaySim amounts carry no currency)",
        },
        notes=[
            "Balance fields are a known shortcut: PaySim fraud empties the sender, so old/new balances reveal "
            "fraud almost perfectly. Say so wherever a result rests on them, or drop them for a fair test.",
            "In the public prefix every sender appears exactly once, so per-sender sequences do not exist; "
            "only receivers build histories.",
            "Times are synthetic: step is an hour index placed from 2025-01-01T00:00Z, rows inside an hour spread "
            "evenly in file order.",
            "isFlaggedFraud is ignored (PaySim's own rule flag; 0 on every row of the public prefix).",
            f"Dropped rows: {dropped['zero_amount']} with amount 0, {dropped['self_transfer']} self-transfers "
            "(the contract needs amount > 0 and two distinct accounts).",
            "Account labels: an account that originated a fraud transaction is fraud from its first such "
            "transaction; every other account seen is not fraud.",
        ],
    )
    return write_world(out, {"transactions": table}, {"transactions": tx_labels, "accounts": accounts}, manifest)

