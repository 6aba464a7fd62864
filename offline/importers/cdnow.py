"""CDNOW repeat purchases -> donor world: purchases stand in for gifts, targets on a future window."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from models.worlds import WorldKind, WorldManifest

from ._csv import HELP_HINT, Column, CsvSpec, ImportFormatError, read_bytes, read_csv
from ._world import (
    US_PER_HOUR,
    event_ids,
    event_table,
    label_table,
    require_rows,
    spread_within,
    timestamps,
    to_us,
    validate_events,
    write_world,
)

SOURCE = "cdnow"
DONOR_PREFIX = "cdnow-"
SPEC = CsvSpec(
    (Column("customer_id"), Column("date", "int"), Column("number_of_cds", "int"), Column("dollar_value", "float")),
    header="optional",
    whitespace=True,
)
# Share of the population that is positive for each target this data can support; the
# same definitions as the synthetic donor world, computed from gifts alone.
TARGET_SHARES = {"giving_consistency": 0.20, "high_value": 0.15, "recent_engagement": 0.25}
UNAVAILABLE_TARGETS = ("high_engagement", "network_influence")


def import_cdnow(
    path: Path, out: Path, progress: bool = True, cutoff: datetime | None = None, horizon: datetime | None = None
) -> WorldManifest:
    """cutoff/horizon default to the midpoint of the data's months and the month after its
    last purchase (1997-10-01 and 1998-07-01 for the CDNOW file)."""
    path = Path(path)
    rows = read_csv(read_bytes(path, SPEC.expected()), str(path), SPEC)
    header_lines = int(rows.line[0]) - 1
    day = _dates(rows)
    dollars = rows["dollar_value"]
    rows.check(dollars < 0, lambda i: f"column dollar_value is {dollars[i]}; expected a positive amount (0 rows are dropped)")

    # Rule, not error: a $0 purchase (a free item) is no gift and the contract needs
    # amount > 0, so such rows are dropped and counted.
    zero = dollars == 0
    keep = np.flatnonzero(~zero)
    require_rows(keep, str(path), "$0 purchases")

    noon = day[keep].astype("datetime64[us]").astype(np.int64) + 12 * US_PER_HOUR
    order, times = spread_within(noon, 12 * US_PER_HOUR)
    take = keep[order]
    donors = np.char.add(DONOR_PREFIX, rows["customer_id"].astype(str)[take])
    n = len(take)
    gifts = {
        "event_id": event_ids(SOURCE, rows.line[take], header_lines=header_lines),
        "event_time": timestamps(times),
        "donor_id": donors.astype(object),
        "amount": dollars[take],
        "currency": np.full(n, "USD", dtype=object),
        "channel": np.full(n, "other", dtype=object),
        "is_recurring": np.zeros(n, dtype=bool),
    }
    table = event_table("gifts", gifts)
    validate_events("gifts", table, rows.line[take], str(path), progress)

    if cutoff is None or horizon is None:
        auto_cutoff, auto_horizon = default_window(day[keep], str(path))
        cutoff, horizon = cutoff or auto_cutoff, horizon or auto_horizon
    targets = donor_targets(donors, times, dollars[take], cutoff, horizon)
    target_table = label_table("donor_targets", targets)
    n_customers = len(np.unique(rows["customer_id"].astype(str)))
    n_donors = len(np.unique(donors))
    positives = {name: int(targets[name].sum()) for name in TARGET_SHARES}
    n_targets = len(targets["donor_id"])
    short = {name: round(share * n_targets) - positives[name] for name, share in TARGET_SHARES.items()}
    short = {name: k for name, k in short.items() if k > 0}

    manifest = WorldManifest(
        kind=WorldKind.DONORS,
        synthetic=False,
        source="CDNOW",
        description="CDNOW repeat purchases 1997-1998 standing in for gift histories: one gift event per purchase, "
        "segment targets computed on the window after the cut-off.",
        parameters={
            "input": str(path),
            "rows_read": len(rows),
            "rows_dropped": {"zero_amount": int(zero.sum())},
            "customers_read": n_customers,
            "donors_with_gifts": n_donors,
            "donors_in_targets": n_targets,
            "time_rule": "event_time = date 12:00Z + (rank within date) * 12 h / (rows that date)",
            "target_shares": TARGET_SHARES,
            "target_positives": positives,
            "targets_available": list(TARGET_SHARES),
            "targets_unavailable": list(UNAVAILABLE_TARGETS),
        },
        notes=[
            "These are CD purchases, not gifts: they stand in for a gift history because no public gift-level donor "
            "data exists here. channel is 'other', campaign is null, nothing is recurring; number_of_cds is unused.",
            "high_engagement and network_influence cannot be derived (no engagement or network data): they are "
            "written as False for every donor and must not be trained or evaluated on this world.",
            f"Targets are defined on [{cutoff.date()}, {horizon.date()}) for donors with a purchase before the "
            "cut-off, as in the synthetic donor world: giving_consistency = top 20% by share of window months with "
            "a purchase, high_value = top 15% by window spend, recent_engagement = top 25% by calendar month of the "
            "last purchase before the horizon; ties by window purchase count, then spend, then donor id. Only donors "
            "with a purchase in the window can be positive"
            + (f", which leaves these targets short of their share: {short}." if short else " (no target is cut by this here)."),
            "Purchases carry a date only: times are placed at 12:00Z plus an even spread in file order (the file is "
            "sorted by customer), so same-day order is not real.",
            f"Dropped rows: {int(zero.sum())} purchases of $0 (the contract needs amount > 0); "
            f"{n_customers - n_donors} customers had only such purchases and are absent from the world; "
            f"{n_donors - len(targets['donor_id'])} more have no targets because their first non-zero purchase "
            "falls after the cut-off.",
        ],
        cutoff=cutoff,
        horizon=horizon,
    )
    return write_world(out, {"gifts": table}, {"donor_targets": target_table}, manifest)


def donor_targets(
    donor_ids: np.ndarray,
    times_us: np.ndarray,
    amounts: np.ndarray,
    cutoff: datetime,
    horizon: datetime,
    shares: dict[str, float] = TARGET_SHARES,
) -> dict[str, np.ndarray]:
    """The gift-derived donor segment targets, on the future window [cutoff, horizon).

    One entry per gift in the three arrays (times as microseconds since the epoch, UTC).
    The population is every donor with a gift before `cutoff`, in donor-id order. Each
    target is the top `share` of the population (round(share * n) donors) by a score,
    larger first, with the same scores and tie-breakers as the synthetic donor world
    (offline/generate/donor_targets.py), ending with the lower donor id:

      giving_consistency  share of the window's calendar months with a gift;
                          then gift count in the window, then amount
      high_value          total given in the window
      recent_engagement   calendar month of the last gift before `horizon`;
                          then gift count in the window, then amount

    One guard the synthetic world does not need: a donor with no gift in the window
    is never positive, so a target can have fewer positives when under `share` of the
    population gave in the window (CDNOW: 30% did, so no target is cut).

    Returns `donor_id` and one bool array per target in `shares`; targets that need
    other data (UNAVAILABLE_TARGETS) are all False.

    >>> day = 86_400_000_000
    >>> t = donor_targets(np.array(["b", "a", "a", "c"]), np.array([0, 0, 40, 45]) * day,
    ...                   np.array([5.0, 5.0, 9.0, 1.0]), datetime(1970, 1, 31, tzinfo=timezone.utc),
    ...                   datetime(1970, 3, 1, tzinfo=timezone.utc), {"high_value": 0.5, "recent_engagement": 0.5})
    >>> t["donor_id"].tolist(), t["high_value"].tolist(), t["recent_engagement"].tolist()
    (['a', 'b'], [True, False], [True, False])
    """
    ids = np.asarray(donor_ids).astype(str)
    times = np.asarray(times_us, dtype=np.int64)
    amounts = np.asarray(amounts, dtype=float)
    lo, hi = to_us(cutoff), to_us(horizon)
    if hi <= lo:
        raise ValueError(f"horizon {horizon} must be after cutoff {cutoff}")

    population = np.unique(ids[times < lo])
    n = len(population)
    before_horizon = np.isin(ids, population) & (times < hi)
    key = np.searchsorted(population, ids[before_horizon])
    t, amount = times[before_horizon], amounts[before_horizon]
    month = t.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
    window = t >= lo

    count = np.bincount(key[window], minlength=n)
    total = np.bincount(key[window], weights=amount[window], minlength=n)
    window_months = int(np.datetime64(hi - 1, "us").astype("datetime64[M]").astype(np.int64)) - int(
        np.datetime64(lo, "us").astype("datetime64[M]").astype(np.int64)
    ) + 1
    active = np.unique(np.stack([key[window], month[window]]), axis=1)
    month_share = np.bincount(active[0], minlength=n) / window_months
    last_month = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_month, key, month)

    scores = {
        "giving_consistency": (month_share, count, total),
        "high_value": (total,),
        "recent_engagement": (last_month, count, total),
    }
    out: dict[str, np.ndarray] = {"donor_id": population.astype(object)}
    for name in UNAVAILABLE_TARGETS:
        out[name] = np.zeros(n, dtype=bool)
    for name, share in shares.items():
        # lexsort's last key is primary; negate so larger ranks first; the id breaks the last tie.
        ranked = np.lexsort((population, *(-np.asarray(k, dtype=float) for k in reversed(scores[name]))))
        top = np.zeros(n, dtype=bool)
        top[ranked[: int(round(share * n))]] = True
        out[name] = top & (count > 0)
    return out


def default_window(days: np.ndarray, file: str) -> tuple[datetime, datetime]:
    """Horizon: the first of the month after the last purchase; cut-off: the month
    boundary halfway from the first purchase's month to the horizon."""
    months = days.astype("datetime64[M]")
    first, end = months.min(), months.max() + 1
    span = int((end - first).astype(np.int64))
    if span < 2:
        raise ImportFormatError(
            f"{file}: purchases span {span} month; at least 2 are needed to split history from the "
            f"target window; {HELP_HINT}"
        )
    cut = first + span // 2

    def aware(m: np.datetime64) -> datetime:
        return datetime.fromisoformat(str(m.astype("datetime64[D]"))).replace(tzinfo=timezone.utc)

    return aware(cut), aware(end)


def _dates(rows) -> np.ndarray:
    """YYYYMMDD integers -> datetime64[D], naming the line of any impossible date."""
    value = rows["date"]
    year, month, day = value // 10_000, value // 100 % 100, value % 100
    ok = (year >= 1970) & (year <= 9999) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    dates = np.full(len(value), np.datetime64("1970-01-01"), dtype="datetime64[D]")
    ym = (year[ok] - 1970) * 12 + (month[ok] - 1)
    dates[ok] = ym.astype("datetime64[M]").astype("datetime64[D]") + (day[ok] - 1)
    # A day past the month's end rolls into the next month: 19970230 is not a date.
    ok[ok] = dates[ok].astype("datetime64[M]").astype(np.int64) == ym
    rows.check(~ok, lambda i: f"column date is {value[i]}; expected a date as YYYYMMDD")
    return dates
