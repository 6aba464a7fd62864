"""Case evidence for an alert: the past transactions and counterparties behind its score.

An analyst who gets an alert wants to know which earlier transfers made it, and with
whom, without opening another tool. The model read each account's window (its last
transactions, in and out) and, through the newest of them, the neighbourhood. Each
window step is weighed by occlusion: the alerting transaction is scored again with that
step taken out of what the model read (and, for the newest `fanout1` steps, the
neighbour it leads to with that neighbour's own), and the fall in log-odds is the
step's weight. It needs nothing but the model's score, so every family gets it, and it
points at the laundering far better than the cheaper ways: on the AMLSim sample's
validation period (hybrid, P=4, 3 steps cited per caught laundering transfer) 87% of
the cited steps are laundering themselves, against 70% for the newest steps, 42% for a
random pick and 41% for gradient x input (docs/worker.md; tributary.bench_evidence).

The steps become records: the most raising steps of both windows, and the counterparties
whose steps raise the score most in all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Literal

import numpy as np

from models.contracts import AlertEvidence, CounterpartyEvidence, TransactionType
from models.features.account_names import AccountNames
from models.features.account_state import TIME_EPOCH_S
from models.features.transactions import SEQ_FEATURES, TransactionBatch
from models.hybrid import logit

_TYPES = list(TransactionType)
_OUTGOING = SEQ_FEATURES.index("outgoing")
_FIRST_TYPE = _OUTGOING + 1
_SIDES: tuple[Literal["source"], Literal["destination"]] = ("source", "destination")
TOP_STEPS = 6
TOP_COUNTERPARTIES = 5

Score = Callable[[dict[str, np.ndarray]], np.ndarray]  # model inputs -> probabilities


def step_occlusion(score: Score, inputs: dict[str, np.ndarray], newest: int | None = None) -> np.ndarray:
    """Per window step [rows, 2, window]: the fall of the score's log-odds when the step is
    taken out of what the model read; NaN for empty steps, and for those older than the
    newest `newest` of their window (None: every step is weighed). Each row is scored in a batch of its own, its intact copy
    first, so its weights do not depend on which rows came with it (a rescored alert
    after a restart cites the same weights)."""
    mask = inputs["seq_mask"]
    window = mask.shape[2]
    fanout1 = inputs["hop1_mask"].shape[2]
    out = np.full(mask.shape, np.nan, dtype=np.float32)
    for row in range(mask.shape[0]):
        sides, positions = np.nonzero(mask[row] > 0)
        if newest is not None:
            recent = positions >= window - newest
            sides, positions = sides[recent], positions[recent]
        if not len(sides):
            continue
        variants = {k: np.repeat(v[row:row + 1], len(sides) + 1, axis=0) for k, v in inputs.items()}
        each = np.arange(1, len(sides) + 1)  # variant 0 stays intact
        for name in ("seq", "seq_mask"):
            variants[name][each, sides, positions] = 0
        hop = window - 1 - positions  # the newest steps lead to the hop-1 neighbours, newest first
        near = hop < fanout1
        for name in ("hop1", "hop1_mask", "hop2", "hop2_mask"):
            variants[name][each[near], sides[near], hop[near]] = 0
        logits = logit(score(variants))
        out[row, sides, positions] = logits[0] - logits[1:]
    return out


def alert_evidence(batch: TransactionBatch, rows: np.ndarray, weights: np.ndarray, names: AccountNames,
                   top_steps: int = TOP_STEPS,
                   top_counterparties: int = TOP_COUNTERPARTIES) -> list[tuple[list[AlertEvidence], list[CounterpartyEvidence]]]:
    """Per alerting row of `batch` (`rows`), its evidence and counterparties, most raising first.

    `weights`: each window step's weight for those rows [len(rows), 2, window] (`step_occlusion`)."""
    return [_one(batch, row, weights[i], names, top_steps, top_counterparties)
            for i, row in enumerate(np.asarray(rows).tolist())]


def _one(batch: TransactionBatch, row: int, weights: np.ndarray, names: AccountNames, top_steps: int,
         top_counterparties: int) -> tuple[list[AlertEvidence], list[CounterpartyEvidence]]:
    sides, positions = np.nonzero((batch.seq_mask[row] > 0) & ~np.isnan(weights))
    if not len(sides):
        return [], []
    order = np.lexsort((sides, -positions, -weights[sides, positions]))  # ties: the newer step, then the source
    evidence = [_step(batch, row, int(sides[k]), int(positions[k]), weights, names) for k in order[:top_steps]]

    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])  # account -> transactions, amount, weight
    for side, position in zip(sides.tolist(), positions.tolist()):
        account = names.name(int(batch.seq_counterparty[row, side, position]))
        if account is None:
            continue
        total = totals[account]
        total[0] += 1
        total[1] += _amount(batch, row, side, position)
        total[2] += float(weights[side, position])
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1][2], kv[0]))
    counterparties = [CounterpartyEvidence(account=account, transactions=int(n), amount=round(amount, 2),
                                           weight=round(weight, 6))
                      for account, (n, amount, weight) in ranked[:top_counterparties]]
    return evidence, counterparties


def _step(batch: TransactionBatch, row: int, side: int, position: int, weights: np.ndarray,
          names: AccountNames) -> AlertEvidence:
    features = batch.seq[row, side, position]
    return AlertEvidence(
        account=_SIDES[side],
        direction="out" if features[_OUTGOING] > 0.5 else "in",
        counterparty=names.name(int(batch.seq_counterparty[row, side, position])),
        amount=round(_amount(batch, row, side, position), 2),
        event_time=datetime.fromtimestamp(TIME_EPOCH_S + int(batch.seq_time[row, side, position]), timezone.utc),
        type=_TYPES[int(np.argmax(features[_FIRST_TYPE:_FIRST_TYPE + len(_TYPES)]))],
        weight=round(float(weights[side, position]), 6),
    )


def _amount(batch: TransactionBatch, row: int, side: int, position: int) -> float:
    return float(np.expm1(np.float64(batch.seq[row, side, position, 0])))
