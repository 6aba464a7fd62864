"""The donor world's clock: months, seasonality and the charity's campaign calendar.

Time is simulated a calendar month at a time; within a month every event gets a
microsecond timestamp (UTC), so the streams can be sorted and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
DAYS_PER_MONTH = 365.25 / 12

# Relative intensity per calendar month (January first). Year-end giving is the peak of
# every fundraising calendar: tax deadlines, year-end appeals and Giving Tuesday.
APPEAL_SEASON = np.array([0.8, 0.6, 0.9, 1.0, 0.8, 0.9, 0.6, 0.6, 0.9, 1.0, 1.4, 2.6])
EVENT_SEASON = np.array([0.5, 0.6, 0.9, 1.1, 1.5, 1.0, 0.7, 0.6, 1.1, 1.5, 1.2, 1.3])
P2P_SEASON = np.array([0.6, 0.6, 0.9, 1.3, 1.5, 1.1, 0.7, 0.7, 1.2, 1.0, 1.3, 1.2])
MAIL_SEASON = np.array([0.8, 0.6, 1.2, 1.2, 0.7, 1.0, 0.5, 0.6, 1.1, 1.2, 1.4, 1.8])

# Appeal campaign per calendar month and the share of that month's appeal gifts that are
# coded to it (the rest are unsolicited: campaign null). November's Giving Tuesday is
# handled apart because it is one day, not a month.
_APPEALS = {
    1: ("new-year", 0.5),
    3: ("spring-appeal", 0.7),
    4: ("spring-appeal", 0.7),
    6: ("summer-match", 0.7),
    9: ("fall-appeal", 0.6),
    10: ("fall-appeal", 0.6),
    11: ("year-end", 0.3),
    12: ("year-end", 0.85),
}
_GENERAL = ("general-fund", 0.2)
_YEARLY_STEMS = (
    "new-year", "spring-appeal", "summer-match", "fall-appeal", "year-end", "general-fund",
    "giving-tuesday", "gala", "community-event", "peer-challenge", "acquisition",
)
SUSTAINER_CAMPAIGN = "monthly-sustainer"
GALA_MONTHS = (5, 10)


@dataclass(frozen=True)
class Timeline:
    """History from January of `start_year` up to the cut-off, then the target window."""

    start_year: int = 2021
    history_months: int = 48
    window_months: int = 12

    @property
    def n_months(self) -> int:
        return self.history_months + self.window_months

    @property
    def cutoff_month(self) -> int:
        return self.history_months

    @property
    def start(self) -> datetime:
        return self.datetime_at(0)

    @property
    def cutoff(self) -> datetime:
        return self.datetime_at(self.cutoff_month)

    @property
    def horizon(self) -> datetime:
        return self.datetime_at(self.n_months)

    def datetime_at(self, month: int) -> datetime:
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(self.month_start_us(month)))

    def month_start_us(self, month):
        """Microseconds since the epoch at 00:00 UTC on the first of `month` (may be negative)."""
        months = np.datetime64(f"{self.start_year}-01", "M") + np.asarray(month, dtype=np.int64)
        return months.astype("datetime64[us]").astype(np.int64)

    def month_days(self, month: int) -> int:
        return int((self.month_start_us(month + 1) - self.month_start_us(month)) // US_PER_DAY)

    def calendar(self, month: int) -> tuple[int, int]:
        """(year, calendar month 1-12) of a simulation month."""
        return self.start_year + month // 12, month % 12 + 1


def giving_tuesday(year: int) -> date:
    """The Tuesday after US Thanksgiving (the fourth Thursday of November)."""
    first = date(year, 11, 1)
    thanksgiving = first + timedelta(days=(3 - first.weekday()) % 7 + 21)
    return thanksgiving + timedelta(days=5)


class CampaignBook:
    """Campaign names as small integer codes, so gift rows stay numpy arrays until written."""

    def __init__(self, timeline: Timeline):
        years = range(timeline.start_year, timeline.calendar(timeline.n_months - 1)[0] + 1)
        names = [f"{stem}-{year}" for year in years for stem in _YEARLY_STEMS] + [SUSTAINER_CAMPAIGN]
        self._codes = {name: i for i, name in enumerate(names)}
        self.names = pa.array(names, type=pa.string())

    def code(self, stem: str, year: int | None = None) -> int:
        return self._codes[stem if year is None else f"{stem}-{year}"]

    def appeal(self, calendar_month: int, year: int) -> tuple[int, float]:
        """The appeal running in a month and the share of appeal gifts coded to it."""
        stem, share = _APPEALS.get(calendar_month, _GENERAL)
        return self.code(stem, year), share

    def to_arrow(self, codes: np.ndarray) -> pa.Array:
        """Names for codes; -1 becomes null (a gift not tied to any campaign)."""
        indices = pa.array(np.maximum(codes, 0), mask=codes < 0)
        return self.names.take(indices)
