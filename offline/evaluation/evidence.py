"""Judging alert evidence against labels: is a cited transaction fraudulent itself?

An alert cites earlier transactions by their two accounts and their time to the second
(models.contracts.AlertEvidence), not by event id, so the check looks them up that way.
Used by `python -m tributary.bench_evidence` and the demo's summary.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow.compute as pc

from models.worlds import World

Transfer = tuple[str, str, int]  # (source, destination, Unix second)


def fraudulent_transfers(world: World) -> set[Transfer]:
    """Every fraudulent transaction of the world, as an alert's evidence names one."""
    labels = world.read_labels("transactions")
    bad = set(labels.filter(labels.column("is_fraud")).column("event_id").to_pylist())
    out = set()
    for batch in world.iter_events("transactions", columns=["event_id", "event_time", "source_account",
                                                            "destination_account"]):
        seconds = pc.divide(batch.column("event_time").cast("int64"), 1_000_000).to_numpy()
        for event_id, second, source, destination in zip(batch.column("event_id").to_pylist(), seconds.tolist(),
                                                         batch.column("source_account").to_pylist(),
                                                         batch.column("destination_account").to_pylist()):
            if event_id in bad:
                out.add((source, destination, int(second)))
    return out


def cites_fraud(step: dict, source: str, destination: str, fraudulent: set[Transfer]) -> bool:
    """Whether an evidence step (an AlertEvidence as a dict) of an alert on source -> destination is fraudulent."""
    account = source if step["account"] == "source" else destination
    ends = (account, step.get("counterparty")) if step["direction"] == "out" else (step.get("counterparty"), account)
    return (*ends, int(_seconds(step["event_time"]))) in fraudulent


def _seconds(when: str | datetime) -> float:
    return (datetime.fromisoformat(when) if isinstance(when, str) else when).timestamp()
