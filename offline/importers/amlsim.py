"""IBM AMLSim sample (nodes.csv + transactions.csv) -> fraud world of laundering transfers."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from models.worlds import WorldKind, WorldManifest

from ._csv import HELP_HINT, Column, CsvSpec, ImportFormatError, decompress, read_bytes, read_csv
from ._world import (
    NO_TIME,
    TIME_ORIGIN,
    US_PER_DAY,
    account_labels,
    event_ids,
    event_table,
    first_time,
    label_table,
    repeated,
    require_rows,
    spread_within,
    timestamps,
    to_us,
    validate_events,
    write_world,
)

SOURCE = "amlsim"
ACCOUNT_PREFIX = "aml-"
NODES = CsvSpec((Column("nodeid"), Column("isFraud", "int"), Column("fraudStep", "float", required=False, may_be_absent=True)))
TRANSACTIONS = CsvSpec((Column("sourceNodeId"), Column("targetNodeId"), Column("value", "float"), Column("time", "int")))
EXPECTED = (
    "a .tgz/.tar archive or a folder holding nodes.csv "
    f"({NODES.expected()}) and transactions.csv ({TRANSACTIONS.expected()})"
)


def import_amlsim(path: Path, out: Path, progress: bool = True) -> WorldManifest:
    path = Path(path)
    (nodes_data, nodes_file), (tx_data, tx_file) = _members(path)
    nodes = read_csv(nodes_data, nodes_file, NODES)
    tx = read_csv(tx_data, tx_file, TRANSACTIONS)

    node_id = nodes["nodeid"].astype(str)
    nodes.check(repeated(node_id), lambda i: f"nodeid {str(node_id[i])!r} appears twice; expected one row per account")
    universe = np.unique(node_id)
    nodes.check(~np.isin(nodes["isFraud"], (0, 1)), lambda i: f"column isFraud is {nodes['isFraud'][i]}; expected 0 or 1")

    source, target = tx["sourceNodeId"].astype(str), tx["targetNodeId"].astype(str)
    for column, ids in (("sourceNodeId", source), ("targetNodeId", target)):
        tx.check(~np.isin(ids, universe),
                 lambda i, column=column, ids=ids: f"column {column} is {str(ids[i])!r}, an account missing from nodes.csv")
    value, step = tx["value"], tx["time"]
    tx.check(value < 0, lambda i: f"column value is {value[i]}; expected a positive amount (0 rows are dropped)")
    tx.check(step < 0, lambda i: f"column time is {step[i]}; expected a step (day) 0 or more")

    # Rules, not errors: the contract accepts neither a zero amount nor an account
    # paying itself (AMLSim writes a few of those), so they are dropped and counted.
    zero = value == 0
    self_transfer = (source == target) & ~zero
    keep = np.flatnonzero(~zero & ~self_transfer)
    require_rows(keep, tx_file, "zero values and self-transfers")

    origin = to_us(TIME_ORIGIN)
    order, times = spread_within(origin + step[keep] * US_PER_DAY, US_PER_DAY)
    take = keep[order]
    src, dst = source[take], target[take]
    n = len(take)
    events = {
        "event_id": event_ids(SOURCE, tx.line[take], header_lines=1),
        "event_time": timestamps(times),
        "source_account": np.char.add(ACCOUNT_PREFIX, src).astype(object),
        "destination_account": np.char.add(ACCOUNT_PREFIX, dst).astype(object),
        "amount": value[take],
        "currency": np.full(n, "USD", dtype=object),
        "type": np.full(n, "transfer", dtype=object),
    }
    table = event_table("transactions", events)
    validate_events("transactions", table, tx.line[take], tx_file, progress)

    fraud_node = np.zeros(len(universe), dtype=bool)
    fraud_node[np.searchsorted(universe, node_id)] = nodes["isFraud"] == 1
    src_fraud = fraud_node[np.searchsorted(universe, src)]
    dst_fraud = fraud_node[np.searchsorted(universe, dst)]
    both = src_fraud & dst_fraud
    tx_labels = label_table("transactions", {"event_id": events["event_id"], "is_fraud": both})

    # fraud_since: fraudStep is not the onset. In the sample it is -1 for about half of
    # the fraud accounts and, where set, never precedes the account's first transfer
    # with another fraud account (it lags it by weeks), so it reads as a detection
    # step. The onset is therefore the earliest of that step's start and the first
    # fraud-to-fraud transfer; accounts with neither fall back to their first transfer.
    fraud_step = nodes["fraudStep"]
    step_start = np.full(len(universe), NO_TIME, dtype=np.int64)
    stepped = fraud_step >= 0
    step_start[np.searchsorted(universe, node_id[stepped])] = origin + fraud_step[stepped].astype(np.int64) * US_PER_DAY
    first_ring = first_time(np.concatenate([src[both], dst[both]]), universe, np.tile(times[both], 2))
    first_any = first_time(np.concatenate([src, dst]), universe, np.tile(times, 2))
    since = np.minimum(step_start, first_ring)
    fallback = fraud_node & (since == NO_TIME)
    since = np.where(fallback, first_any, since)
    accounts = account_labels(np.char.add(ACCOUNT_PREFIX, universe).astype(object), fraud_node, since)

    dropped = {"zero_amount": int(zero.sum()), "self_transfer": int(self_transfer.sum())}
    self_fraud = int((self_transfer & fraud_node[np.searchsorted(universe, source)]).sum())
    n_fraud = int(fraud_node.sum())
    manifest = WorldManifest(
        kind=WorldKind.FRAUD,
        synthetic=False,
        source="IBM AMLSim",
        description="IBM AMLSim sample: simulated bank transfers with planted money-laundering groups (cycles, "
        "fan-in); a transfer is labelled laundering when both its accounts are laundering accounts.",
        parameters={
            "input": str(path),
            "accounts_read": len(universe),
            "transfers_read": len(tx),
            "rows_dropped": dropped,
            "fraud_accounts": n_fraud,
            "fraud_accounts_with_fraud_step": int((fraud_node & (step_start != NO_TIME)).sum()),
            "fraud_since_fallback_first_transfer": int(fallback.sum()),
            "time_origin": TIME_ORIGIN.isoformat(),
            "time_rule": "event_time = time_origin + time days + (rank within day) * 86400 s / (rows that day)",
            "transfer_label_rule": "is_fraud = both ends are isFraud accounts",
        },
        notes=[
            "AMLSim patterns are clean textbook shapes (cycles, fan-in); expect optimistic scores that will not "
            "carry over to real bank data.",
            f"Dropped rows: {dropped['self_transfer']} self-transfers ({self_fraud} of them by fraud accounts, so "
            f"they are not among the both-ends-fraud transfers written) and {dropped['zero_amount']} with value 0 "
            "(the contract needs two distinct accounts and amount > 0).",
            "Times are synthetic: an AMLSim step is a day placed from 2025-01-01T00:00Z; transfers inside a day "
            "spread evenly in file order.",
            "fraud_since is the earliest of the start of fraudStep (when >= 0) and the account's first transfer "
            "with another fraud account, else its first transfer: fraudStep is -1 for many fraud accounts and "
            "where set it follows the first laundering transfer, so it marks detection, not onset.",
            "Per-transfer labels say 'both ends are laundering accounts'; pattern ids and types are not in "
            "this sample (no alerts file), so they are null.",
            "Amounts carry no currency in AMLSim; USD is assumed. init_balance is not used.",
        ],
    )
    return write_world(out, {"transactions": table}, {"transactions": tx_labels, "accounts": accounts}, manifest)


def _members(path: Path) -> tuple[tuple[bytes, str], tuple[bytes, str]]:
    """(bytes, display name) of nodes.csv and transactions.csv from a folder or an archive."""
    if not path.exists():
        raise ImportFormatError(f"{path}: not found; expected {EXPECTED}; {HELP_HINT}")
    wanted = ("nodes.csv", "transactions.csv")
    if path.is_dir():
        found = []
        for name in wanted:
            plain, gz = path / name, path / f"{name}.gz"
            member = plain if plain.exists() or not gz.exists() else gz
            if not member.exists():
                raise ImportFormatError(f"{path}: has no {name}; expected {EXPECTED}; {HELP_HINT}")
            found.append((read_bytes(member, EXPECTED), str(member)))
        return found[0], found[1]
    if not tarfile.is_tarfile(path):
        raise ImportFormatError(f"{path}: is neither a folder nor a tar archive; expected {EXPECTED}; {HELP_HINT}")
    # Members are read into memory; nothing is extracted to disk.
    with tarfile.open(path, "r:*") as archive:
        files = [m for m in archive.getmembers() if m.isfile()]
        found = []
        for name in wanted:
            hits = [m for m in files if PurePosixPath(m.name).name in (name, f"{name}.gz")]
            if len(hits) != 1:
                listing = ", ".join(m.name for m in files[:20]) or "nothing"
                problem = "no" if not hits else f"{len(hits)} copies of"
                raise ImportFormatError(
                    f"{path}: has {problem} {name} (archive holds: {listing}); expected {EXPECTED}; {HELP_HINT}"
                )
            display = f"{path}:{hits[0].name}"
            found.append((decompress(archive.extractfile(hits[0]).read(), display, EXPECTED), display))
    return found[0], found[1]
