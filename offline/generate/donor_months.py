"""What changes month to month for every donor: lapse status, recurring giving, gift
level, and the engagement activity the CRM later summarises over 12 months.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .donor_calendar import EVENT_SEASON, MAIL_SEASON
from .donor_params import DonorParams
from .donor_population import ACT, CAP, ENG, REG, Population, sigmoid

RING = 12  # months kept for the "_12m" profile attributes


@dataclass
class Activity:
    """Engagement realised in one month, per donor."""

    attended: np.ndarray
    sent: np.ndarray
    opened: np.ndarray
    volunteer_hours: np.ndarray
    promotions: np.ndarray


class DonorMonths:
    def __init__(self, pop: Population, params: DonorParams):
        n = pop.n
        self.params = params
        self.active = pop.initial_active.copy()
        self.recurring = pop.initial_recurring.copy()
        self.level_walk = np.zeros(n, dtype=np.float32)  # upgrades and downgrades so far
        self.recurring_amount = self._round_to_five(np.exp(self.level(pop, pop.traits()) - 0.5))
        # The last 12 months of activity, month m in slot m % 12.
        self.attended = np.zeros((RING, n), dtype=np.int16)
        self.sent = np.zeros((RING, n), dtype=np.int16)
        self.opened = np.zeros((RING, n), dtype=np.int16)
        self.volunteer_hours = np.zeros((RING, n), dtype=np.float32)
        self.promotions = np.zeros((RING, n), dtype=np.int16)

    def level(self, pop: Population, traits: np.ndarray) -> np.ndarray:
        """Log of a donor's typical gift now."""
        p = self.params
        return p.gift_log_base + p.gift_capacity * traits[CAP] + 0.15 * traits[ENG] + pop.level_offset + self.level_walk

    @staticmethod
    def _round_to_five(amount: np.ndarray) -> np.ndarray:
        # Standing orders are round sums ($5, $10, $25, ...).
        return np.maximum(5.0, np.round(amount / 5.0) * 5.0).astype(np.float32)

    def transition(self, pop: Population, traits: np.ndarray, on_file: np.ndarray, rng: np.random.Generator) -> None:
        """Lapse, reactivate, start or cancel recurring gifts, move gift levels.

        `on_file` are donors who joined before this month; a donor's join month is
        their acquisition, so they start active.
        """
        p = self.params
        u = rng.random((3, pop.n), dtype=np.float32)
        act = traits[ACT]
        lapse = self.active & on_file & (u[0] < sigmoid(p.lapse_logit - p.lapse_activity * act))
        back_p = sigmoid(p.reactivate_logit + p.reactivate_activity * act + 0.3 * traits[ENG])
        back = ~self.active & on_file & (u[0] < back_p)
        self.active = (self.active & ~lapse) | back
        self.recurring &= self.active

        reg = traits[REG]
        start_p = sigmoid(p.recurring_start_logit + p.recurring_regularity * reg)
        start = self.active & ~self.recurring & on_file & (u[1] < start_p)
        # Gated on being on file: a donor who signs up with a standing order keeps it until joining.
        cancel = self.recurring & on_file & (u[1] < sigmoid(p.recurring_cancel_logit - 0.8 * reg - 0.4 * act))
        self.recurring = (self.recurring & ~cancel) | start

        step = on_file & (u[2] < p.level_step_prob)
        k = int(step.sum())
        if k:
            self.level_walk[step] += (0.05 + p.level_step_sd * rng.standard_normal(k)).astype(np.float32)
        renew = start | (step & self.recurring)
        if renew.any():
            # A new or changed standing order is set near half the donor's typical gift.
            self.recurring_amount[renew] = self._round_to_five(np.exp(self.level(pop, traits)[renew] - 0.5))

    def engage(
        self, month: int, pop: Population, traits: np.ndarray, joined: np.ndarray, rng: np.random.Generator
    ) -> Activity:
        """Simulate a month of event attendance, email opens, volunteering and mailings."""
        p = self.params
        n = pop.n
        cal = month % 12
        eng = traits[ENG]
        presence = np.where(self.active, 1.0, 0.4) * joined
        # Capped: even the keenest supporter comes to a handful of events a month.
        rate = np.exp(np.minimum(p.attendance_log_rate + p.attendance_engagement * eng, 0.5))
        attended = rng.poisson(rate * EVENT_SEASON[cal] * presence)
        sent = rng.poisson(p.email_sends * (0.5 + 0.5 * self.active) * (pop.has_email & joined))
        opened = rng.binomial(sent, sigmoid(p.open_logit + p.open_engagement * eng + 0.3 * self.active))
        helps = joined & np.where(
            pop.volunteer, rng.random(n) < sigmoid(p.volunteer_month_logit + 0.8 * eng), rng.random(n) < 0.01
        )
        hours = np.where(helps, np.round(rng.gamma(2.0, 4.0, n) * 2) / 2 + 0.5, 0.0)
        # Charities mail active and older donors more.
        mail_rate = 0.3 * MAIL_SEASON[cal] * np.where(self.active, 1.5, 0.5) * np.where(pop.age0 > 60, 1.4, 1.0)
        mail = rng.poisson(mail_rate * joined)
        activity = Activity(
            attended=np.minimum(attended, 31).astype(np.int16),
            sent=sent.astype(np.int16),
            opened=opened.astype(np.int16),
            volunteer_hours=hours.astype(np.float32),
            promotions=(sent + mail).astype(np.int16),
        )
        slot = month % RING
        self.attended[slot] = activity.attended
        self.sent[slot] = activity.sent
        self.opened[slot] = activity.opened
        self.volunteer_hours[slot] = activity.volunteer_hours
        self.promotions[slot] = activity.promotions
        return activity

    def last_12_months(self, donors: np.ndarray) -> dict[str, np.ndarray]:
        """Sums over the ring (the 12 months before the current one) for some donors."""
        return {
            "attended": self.attended[:, donors].sum(axis=0, dtype=np.int64),
            "sent": self.sent[:, donors].sum(axis=0, dtype=np.int64),
            "opened": self.opened[:, donors].sum(axis=0, dtype=np.int64),
            "volunteer_hours": self.volunteer_hours[:, donors].sum(axis=0, dtype=np.float64),
            "promotions": self.promotions[:, donors].sum(axis=0, dtype=np.int64),
        }
