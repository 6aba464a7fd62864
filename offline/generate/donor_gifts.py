"""A month of gifts for all donors at once: standing orders, appeal responses,
acquisition gifts, gifts at events and peer-to-peer gifts with a soft credit.

Every kind is drawn as whole arrays (counts per donor, then `np.repeat`), never gift by
gift, so half a million donors simulate in seconds per month.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from models.contracts import GiftChannel

from .donor_calendar import (
    APPEAL_SEASON,
    GALA_MONTHS,
    P2P_SEASON,
    SUSTAINER_CAMPAIGN,
    US_PER_DAY,
    CampaignBook,
    Timeline,
    giving_tuesday,
)
from .donor_months import Activity, DonorMonths
from .donor_network import PEER_FUNDRAISER
from .donor_params import DonorParams
from .donor_population import ENG, INF, REG, Population, sigmoid

CHANNELS = tuple(c.value for c in GiftChannel)  # codes index this tuple
MAIL, ONLINE, EVENT, P2P, PHONE, OTHER = (
    CHANNELS.index(c.value)
    for c in (GiftChannel.MAIL, GiftChannel.ONLINE, GiftChannel.EVENT, GiftChannel.PEER_TO_PEER,
              GiftChannel.PHONE, GiftChannel.OTHER)
)
_AFFINITY_CHANNELS = np.array([MAIL, ONLINE, PHONE, OTHER])  # columns of Population.channel_affinity
MAX_GIFT = 1e9


@dataclass
class GiftBatch:
    time_us: np.ndarray
    donor: np.ndarray
    amount: np.ndarray
    channel: np.ndarray
    campaign: np.ndarray  # code in the CampaignBook, -1 for none
    recurring: np.ndarray
    referrer: np.ndarray  # donor number, -1 for none

    @classmethod
    def concat(cls, parts: list["GiftBatch"]) -> "GiftBatch":
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.time_us)


class GiftSimulator:
    def __init__(self, pop: Population, timeline: Timeline, params: DonorParams, campaigns: CampaignBook):
        self.pop, self.timeline, self.params, self.campaigns = pop, timeline, params, campaigns

    def month(
        self,
        month: int,
        traits: np.ndarray,
        state: DonorMonths,
        activity: Activity,
        edges: tuple[np.ndarray, np.ndarray, np.ndarray],
        rng: np.random.Generator,
    ) -> GiftBatch:
        pop = self.pop
        on_file = pop.join_month < month
        joining = np.flatnonzero(pop.join_month == month)
        level = state.level(pop, traits)
        parts = [
            self._recurring(month, np.flatnonzero(on_file & state.recurring), state),
            self._acquisition(month, joining, state, level, traits, rng),
            self._appeals(month, on_file, traits, state, level, rng),
            self._at_events(month, activity, on_file, level, rng),
            self._peer_to_peer(month, traits, state, level, edges, rng),
        ]
        return GiftBatch.concat(parts)

    # --- kinds of gifts -------------------------------------------------------------------

    def _recurring(self, month: int, donors: np.ndarray, state: DonorMonths) -> GiftBatch:
        pop = self.pop
        time = self.timeline.month_start_us(month) + (pop.recurring_day[donors].astype(np.int64) - 1) * US_PER_DAY
        time += 6 * 3600 * 1_000_000  # the payment processor's morning batch
        channel = np.where(pop.has_email[donors], ONLINE, OTHER)
        return self._batch(time, donors, state.recurring_amount[donors], channel,
                           np.full(len(donors), self.campaigns.code(SUSTAINER_CAMPAIGN)), recurring=True)

    def _acquisition(self, month, donors, state, level, traits, rng) -> GiftBatch:
        """The first gift, at the moment of joining: a standing order or a one-off."""
        pop = self.pop
        year, _ = self.timeline.calendar(month)
        standing = pop.initial_recurring[donors]
        one_off = self._amounts(level[donors], rng)
        amount = np.where(standing, state.recurring_amount[donors], one_off)
        standing_channel = np.where(pop.has_email[donors], ONLINE, OTHER)
        channel = np.where(standing, standing_channel, self._channels(donors, traits, rng))
        campaign = np.full(len(donors), self.campaigns.code("acquisition", year))
        # A second after the CRM record (the donor's first profile) is created.
        return self._batch(pop.join_time_us[donors] + 1_000_000, donors, amount, channel, campaign, recurring=standing)

    def _appeals(self, month, on_file, traits, state, level, rng) -> GiftBatch:
        p, pop = self.params, self.pop
        year, cal = self.timeline.calendar(month)
        rate = np.exp(p.appeal_log_rate + p.appeal_regularity * traits[REG] + p.appeal_engagement * traits[ENG])
        rate *= APPEAL_SEASON[cal - 1] * np.where(state.active, 1.0, p.lapsed_rate_factor)
        rate *= np.where(state.recurring, p.recurring_appeal_factor, 1.0) * on_file
        counts = np.minimum(rng.poisson(rate), 6)
        donors = np.repeat(np.arange(pop.n), counts)
        k = len(donors)

        days = self.timeline.month_days(month)
        day = rng.integers(0, days, k)
        if cal == 12:
            # Year-end gifts bunch up towards the 31st (tax year, last appeal mailings).
            day = np.maximum(days - 1 - np.floor(rng.exponential(7.0, k)), 0).astype(np.int64)
        appeal, share = self.campaigns.appeal(cal, year)
        campaign = np.where(rng.random(k) < share, appeal, -1)
        channel = self._channels(donors, traits, rng)
        if cal == 11:
            tuesday = rng.random(k) < 0.35
            gt = giving_tuesday(year)
            day = np.where(tuesday, gt.day - 1, day)
            campaign = np.where(tuesday, self.campaigns.code("giving-tuesday", year), campaign)
            channel = np.where(tuesday & (rng.random(k) < 0.8), ONLINE, channel)
        time = self.timeline.month_start_us(month) + day * US_PER_DAY + self._time_of_day(k, rng)
        amount = self._amounts(level[donors], rng) * (1.25 if cal == 12 else 1.0)
        return self._batch(time, donors, amount, channel, campaign, recurring=False)

    def _at_events(self, month, activity: Activity, on_file, level, rng) -> GiftBatch:
        """Some attendees give at the event itself (galas in May and October)."""
        year, cal = self.timeline.calendar(month)
        p_give = 1 - (1 - self.params.event_gift_prob) ** activity.attended.astype(np.float64)
        donors = np.flatnonzero(on_file & (rng.random(self.pop.n) < p_give))
        k = len(donors)
        stem = "gala" if cal in GALA_MONTHS else "community-event"
        time = self._uniform_times(month, k, rng)
        amount = self._amounts(level[donors], rng) * 1.5
        return self._batch(time, donors, amount, np.full(k, EVENT), np.full(k, self.campaigns.code(stem, year)), False)

    def _peer_to_peer(self, month, traits, state, level, edges, rng) -> GiftBatch:
        """Friends asking friends: each live edge, both ways, may yield a soft-credited gift.

        Influencers ask more (and some run a fundraiser this month, which multiplies
        their asks); peer-fundraiser ties convert best; lapsed donors rarely respond.
        """
        p, pop = self.params, self.pop
        year, cal = self.timeline.calendar(month)
        u, v, kind = edges
        asker = np.concatenate([u, v])
        giver = np.concatenate([v, u])
        kind = np.concatenate([kind, kind])
        inf = traits[INF]
        runs = rng.random(pop.n) < sigmoid(p.p2p_campaign_logit + p.p2p_campaign_influence * inf) * P2P_SEASON[cal - 1]
        prob = sigmoid(p.p2p_logit + p.p2p_influence * inf[asker] + 0.4 * traits[ENG][giver])
        prob *= np.where(runs[asker], p.p2p_campaign_boost, 1.0)
        prob *= np.where(kind == PEER_FUNDRAISER, 3.0, 1.0) * np.where(state.active[giver], 1.0, 0.35)
        hit = rng.random(len(prob)) < np.minimum(prob, 0.9)
        donors, referrers = giver[hit], asker[hit]
        k = len(donors)
        amount = self._amounts(level[donors], rng) * 0.8
        return self._batch(self._uniform_times(month, k, rng), donors, amount, np.full(k, P2P),
                           np.full(k, self.campaigns.code("peer-challenge", year)), False, referrer=referrers)

    # --- shared pieces --------------------------------------------------------------------

    def _channels(self, donors: np.ndarray, traits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Mail for older donors, online for younger and engaged ones, each with a habit."""
        pop = self.pop
        age = pop.age0[donors] - 50
        logits = np.stack(
            [1.0 + 0.05 * age, 0.6 - 0.05 * age + 0.3 * traits[ENG][donors] + 0.8 * pop.has_email[donors],
             -2.0 + 0.03 * age, np.full(len(donors), -2.5)],
            axis=1,
        )
        logits += pop.channel_affinity[donors] + 0.6 * rng.gumbel(size=logits.shape)
        return _AFFINITY_CHANNELS[np.argmax(logits, axis=1)]

    def _amounts(self, level: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        amount = np.exp(level + p.gift_sigma * rng.standard_normal(len(level)))
        major = rng.random(len(level)) < p.major_gift_prob
        return np.where(major, amount * 20, amount)

    def _uniform_times(self, month: int, k: int, rng: np.random.Generator) -> np.ndarray:
        days = self.timeline.month_days(month)
        return self.timeline.month_start_us(month) + rng.integers(0, days, k) * US_PER_DAY + self._time_of_day(k, rng)

    @staticmethod
    def _time_of_day(k: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, 86_400, k) * 1_000_000

    @staticmethod
    def _batch(time, donors, amount, channel, campaign, recurring, referrer=None) -> GiftBatch:
        k = len(donors)
        return GiftBatch(
            time_us=np.asarray(time, dtype=np.int64),
            donor=np.asarray(donors, dtype=np.int64),
            amount=np.clip(np.round(np.asarray(amount, dtype=np.float64), 2), 1.0, MAX_GIFT),
            channel=np.asarray(channel, dtype=np.int8),
            campaign=np.asarray(campaign, dtype=np.int32),
            recurring=np.broadcast_to(np.asarray(recurring, dtype=bool), (k,)).copy(),
            referrer=np.full(k, -1, dtype=np.int64) if referrer is None else np.asarray(referrer, dtype=np.int64),
        )

