"""`tributary generate fraud`: a synthetic mobile-money / bank-transfer world with planted fraud.

In the spirit of PaySim (mobile-money traffic with cash agents) and IBM AMLworld
(laundering typologies planted among honest transfers). The world is simulated day by
day: ordinary traffic (`fraud_traffic`), planted patterns (`fraud_patterns`), sorted
and streamed to the world directory, so memory stays O(accounts) plus one day of rows.

Balance columns are left null on purpose: in PaySim the balances give fraud away
(a drained origin balance is nearly the label), a shortcut we do not want models to learn.

Randomness: every stream of draws has its own generator derived from `seed` with a fixed
spawn key (population, schedule, day d's traffic, day d's patterns), so the same
(accounts, days, seed) gives byte-identical tables and days do not depend on each other's
draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.progress import progress as progress_bar
from models.worlds import WorldManifest, WorldWriter

from .fraud_patterns import TYPOLOGIES, PatternPlanter
from .fraud_population import ROLE_NAMES, build_population
from .fraud_rows import (
    START,
    Rows,
    account_ids,
    account_label_table,
    check_rows,
    event_table,
    label_table,
    order_strictly,
)
from .fraud_traffic import normal_day

# Pattern instances per account per day. An instance has about ten transactions and
# ordinary traffic is about 0.45 a day per account, so this plants about 1% fraud.
PATTERNS_PER_ACCOUNT_DAY = 5e-4

# Spawn keys of the derived generators.
_POPULATION, _SCHEDULE, _TRAFFIC, _PATTERNS = range(4)


def generate_fraud_world(out: Path, accounts: int, days: int = 30, seed: int = 7, progress: bool = True) -> WorldManifest:
    """Write a fraud world of `accounts` accounts and `days` days to `out`; return its manifest.

    Files: events/transactions.parquet; labels/transactions.parquet (is_fraud, pattern_id,
    pattern_type per event, same order); labels/accounts.parquet (one row per account:
    is_fraud and fraud_since, the first fraud transaction in which it acted as a fraudster).
    """
    if days < 1:
        raise ValueError(f"days must be at least 1; got {days}")
    pop = build_population(accounts, _rng(seed, _POPULATION))
    planter = PatternPlanter(pop, PATTERNS_PER_ACCOUNT_DAY, _rng(seed, _SCHEDULE))
    ids = account_ids(accounts)
    fraud_since = np.full(accounts, -1, np.int64)
    written = fraud_rows = 0
    last_time = -1
    with WorldWriter(out) as writer:
        for day in progress_bar(range(days), desc="fraud world", unit="day", enabled=progress):
            rows = Rows.concat([
                normal_day(pop, day, _rng(seed, _TRAFFIC, day)),
                planter.day(day, _rng(seed, _PATTERNS, day)),
            ])
            rows, last_time = order_strictly(rows, last_time)
            check_rows(rows, accounts)
            _mark_fraudsters(fraud_since, rows)
            events = event_table(rows, written, ids)
            writer.write_events("transactions", events)
            writer.write_labels("transactions", label_table(events, rows, TYPOLOGIES))
            written += len(rows)
            fraud_rows += int(np.count_nonzero(rows.pattern >= 0))
        writer.write_labels("accounts", account_label_table(ids, fraud_since))
        return writer.finish(_manifest(pop, planter, accounts, days, seed, written, fraud_rows, fraud_since))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _mark_fraudsters(fraud_since: np.ndarray, rows: Rows) -> None:
    """Record the first time each account acted as a fraudster; rows come in time order."""
    for account, flag in ((rows.src, rows.src_fraud), (rows.dst, rows.dst_fraud)):
        # return_index gives each account's first occurrence, i.e. its earliest row today.
        hit, first = np.unique(account[flag], return_index=True)
        when = rows.time[flag][first]
        known = fraud_since[hit]
        fraud_since[hit] = np.where(known < 0, when, np.minimum(known, when))


def _manifest(pop, planter: PatternPlanter, accounts: int, days: int, seed: int, written: int, fraud_rows: int,
              fraud_since: np.ndarray) -> WorldManifest:
    rate = fraud_rows / written if written else 0.0
    return WorldManifest(
        kind="fraud",
        synthetic=True,
        source="tributary-generate-fraud",
        description=(
            f"Synthetic mobile-money/bank transfer world: {accounts:,} accounts over {days} days from "
            f"{START.date().isoformat()}, with {planter.total:,} planted fraud and laundering patterns "
            f"({rate:.2%} of transactions)."
        ),
        seed=seed,
        parameters={
            "accounts": accounts,
            "days": days,
            "start": START.isoformat(),
            "patterns_per_account_day": PATTERNS_PER_ACCOUNT_DAY,
            "roles": {name: int(np.count_nonzero(pop.role == code)) for code, name in enumerate(ROLE_NAMES)},
            "fresh_accounts": len(pop.fresh),
            "mule_pool": int(np.count_nonzero(pop.mule)),
            "typologies": list(TYPOLOGIES),
            "patterns_planted": dict(zip(TYPOLOGIES, planter.planted)),
            "fraud_transactions": fraud_rows,
            "fraud_accounts": int(np.count_nonzero(fraud_since >= 0)),
        },
        notes=[
            "SYNTHETIC: generated by tributary; not real transactions",
            "Balance columns are null on purpose: in PaySim balances leak the fraud label.",
            "labels/transactions: every transaction of a planted pattern is fraud, placements and "
            "cash-outs included; pattern_id/pattern_type are null for ordinary traffic.",
            "labels/accounts: is_fraud marks accounts that acted as fraudsters in a pattern (mules, "
            "launderers, collectors); account-takeover victims and cash agents are not fraudsters. "
            "fraud_since is the time of the first such transaction.",
            "Patterns still running at the end of the window are cut there; their later steps are absent.",
            "Event times are strictly increasing; rows tied at the same microsecond were moved on by 1 us.",
        ],
    )
