"""The money-laundering pattern a transaction resembles, named for the analyst.

Each pattern is a plain rule over the transaction's own causal features (the rich ones,
models.features._rich_kernel): it says what shape the money took, not how likely fraud
is (that is the score's job). The limits are set by hand from what the patterns mean,
never fitted to any data, and a transaction may match several or none:

    cycle          money comes back to the source through one or two other accounts
    fan_in         the destination collected from many distinct senders this week (not
                   for payments: a shop collects from many customers by nature)
    fan_out        the source paid many distinct receivers this week
    pass_through   the source forwards what it just received (a mule's step in a chain)
    burst          the source suddenly sends much more than usual (an account takeover)
    structuring    an amount just under the 10,000 reporting threshold
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.features.transactions import EVENT_FEATURES

_COLUMN = {name: i for i, name in enumerate(EVENT_FEATURES)}
FAN_ACCOUNTS = 5  # distinct counterparties in 7 days that make a fan
FAN_SHARE = 0.5  # ... and they are at least half of the week's transfers that way (not one partner, often)
PASS_THROUGH_HOURS = 24.0
PASS_THROUGH_SHARE = 0.8  # of the day's inflow sent on, or within 10% of the last amount received
BURST_LAST_HOUR = 3  # transfers out in the last hour ...
BURST_FACTOR = 10.0  # ... at least this many times the account's usual hourly rate over the 30 days before


def _count(row: np.ndarray, name: str) -> float:
    """A log1p-encoded count back as a count."""
    return math.expm1(float(row[_COLUMN[name]]))


def _value(row: np.ndarray, name: str) -> float:
    return float(row[_COLUMN[name]])


@dataclass(frozen=True)
class Pattern:
    name: str
    matches: Callable[[np.ndarray], bool]
    evidence: Callable[[np.ndarray], float]  # the figure an analyst checks
    meaning: str


def _cycle(row: np.ndarray) -> bool:
    return _count(row, "cycles_via_1") >= 0.5 or _count(row, "cycles_via_2") >= 0.5


def _fan(row: np.ndarray, side: str, direction: str) -> bool:
    distinct = _count(row, f"{side}_{direction}_distinct_7d")
    return distinct >= FAN_ACCOUNTS - 0.5 and distinct >= FAN_SHARE * _count(row, f"{side}_{direction}_count_7d")


def _pass_through(row: np.ndarray) -> bool:
    if _value(row, "source_has_incoming") < 0.5:
        return False
    recent = math.expm1(_value(row, "source_log_hours_since_incoming")) <= PASS_THROUGH_HOURS
    echoes = abs(_value(row, "amount_vs_source_last_incoming")) <= math.log(1.1)
    drains = _value(row, "amount_share_of_source_inflow_1d") >= PASS_THROUGH_SHARE
    return recent and (echoes or drains)


def _burst(row: np.ndarray) -> bool:
    last_hour, month = _count(row, "source_out_count_1h"), _count(row, "source_out_count_30d")
    usual_per_hour = max(month - last_hour, 0.0) / (30 * 24 - 1)
    return last_hour >= BURST_LAST_HOUR - 0.5 and last_hour >= BURST_FACTOR * usual_per_hour


PATTERNS = (
    Pattern("cycle", _cycle, lambda r: round(_count(r, "cycles_via_1") + _count(r, "cycles_via_2")),
            "paths from the destination back to the source through 1 or 2 accounts"),
    Pattern("fan_in", lambda r: _fan(r, "destination", "in") and _value(r, "type_payment") < 0.5,
            lambda r: round(_count(r, "destination_in_distinct_7d")),
            "distinct senders to the destination in 7 days"),
    Pattern("fan_out", lambda r: _fan(r, "source", "out"), lambda r: round(_count(r, "source_out_distinct_7d")),
            "distinct receivers from the source in 7 days"),
    Pattern("pass_through", _pass_through, lambda r: round(math.expm1(_value(r, "source_log_hours_since_incoming")), 2),
            "hours since the source last received money"),
    Pattern("burst", _burst, lambda r: round(_count(r, "source_out_count_1h")),
            "transfers out of the source in the last hour"),
    Pattern("structuring", lambda r: _value(r, "amount_just_under_10k") >= 0.5, lambda r: 1.0,
            "an amount in [9,000, 10,000)"),
)


def patterns_of(event_row: np.ndarray) -> list[tuple[str, float]]:
    """(pattern, evidence) for each pattern one transaction's event features match."""
    return [(p.name, float(p.evidence(event_row))) for p in PATTERNS if p.matches(event_row)]
