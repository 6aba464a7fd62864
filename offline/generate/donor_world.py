"""`tributary generate donors`: a synthetic charity with five donor-segment targets.

The world runs month by month from January 2021 over all donors at once: latent traits
drift, donors lapse and come back, engage, give and form ties. Events are written for
the whole timeline (the streaming worker replays all of it), while the targets in
`labels/donor_targets.parquet` describe only the 12 months after the cut-off, so a
model trained on events before the cut-off has to forecast them.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as out:
...     m = generate_donor_world(Path(out), donors=200, seed=1, progress=False)
>>> m.kind.value, m.synthetic, m.cutoff.year, m.horizon.year, m.counts["labels/donor_targets"] < 200
('donors', True, 2025, 2026, True)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.progress import progress as progress_bar
from models.worlds import WorldManifest, WorldWriter
from offline.importers.both_ends import with_both_ends

from .donor_calendar import US_PER_DAY, CampaignBook, Timeline
from .donor_gifts import CHANNELS, GiftBatch, GiftSimulator
from .donor_months import RING, DonorMonths
from .donor_network import EDGE_TYPES, EdgeBatch, Network
from .donor_params import DonorParams
from .donor_population import AGE_BAND_NAMES, CAP, REGIONS, Population, make_population, months_between, sigmoid
from .donor_targets import DEFINITIONS, SHARES, WindowTally, compute_targets

SOURCE = "tributary-generate-donors"
_AGE_BANDS = pa.array(AGE_BAND_NAMES + ("unknown",))
_REGIONS = pa.array(REGIONS)
_CHANNELS = pa.array(CHANNELS)
_EDGE_TYPES = pa.array(EDGE_TYPES)
_ACTIONS = pa.array(["remove", "add"])
_TIME = pa.timestamp("us", tz="UTC")


def generate_donor_world(out: Path, donors: int, seed: int = 7, progress: bool = True) -> WorldManifest:
    """Write a donor world of `donors` donors to `out`; the same (donors, seed) gives the same tables."""
    if donors < 2:
        raise ValueError(f"a donor world needs at least 2 donors (got {donors}): relationships join two donors")
    timeline, params = Timeline(), DonorParams()
    # One independent stream per component, so a change to one does not reshuffle the others.
    rng_pop, rng_traits, rng_state, rng_gifts, rng_net, rng_rows = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )
    pop = make_population(donors, timeline, params, rng_pop)
    state = DonorMonths(pop, params)
    campaigns = CampaignBook(timeline)
    gifts = GiftSimulator(pop, timeline, params, campaigns)
    network = Network(pop, timeline, params)
    tally = WindowTally(donors, timeline.window_months)
    rows = _Rows(pop, timeline, campaigns)

    # Warm up a year of activity so that legacy donors' first profiles have 12-month sums.
    for month in range(-RING, 0):
        state.engage(month, pop, pop.traits(), pop.join_month <= month, rng_state)

    with WorldWriter(out) as writer:
        months = progress_bar(range(timeline.n_months), desc="donor world", unit="month", enabled=progress)
        for month in months:
            in_window = month >= timeline.cutoff_month
            pop.step_drift(params, rng_traits)
            traits = pop.traits()
            # Profiles report the state before this month's activity: their 12-month sums
            # cover the 12 complete months before the refresh.
            writer.write_events("donor_profiles", rows.profiles(month, traits, state, rng_rows))
            state.transition(pop, traits, pop.join_month < month, rng_state)
            activity = state.engage(month, pop, traits, pop.join_month <= month, rng_state)
            edges = network.month(month, traits, state.active, rng_net)
            gift_batch = gifts.month(month, traits, state, activity, network.survivors(), rng_gifts)

            tally.add_gifts(month, gift_batch.donor, gift_batch.amount, gift_batch.referrer, in_window)
            if in_window:
                tally.add_activity(activity.attended, activity.opened, activity.volunteer_hours)
                tally.add_edges(edges.donor, edges.related, edges.added)
            writer.write_events("gifts", rows.gifts(gift_batch))
            # Keyed by donor_id, an edge recorded once would reach one end's partition only.
            writer.write_events("donor_relationships", with_both_ends(pa.table(rows.relationships(edges))))

        eligible = pop.join_month < timeline.cutoff_month
        targets = compute_targets(tally, network.degree(), eligible)
        labels = {"donor_id": rows.donor_ids.filter(pa.array(eligible))}
        labels.update({segment.value: pa.array(mask[eligible]) for segment, mask in targets.items()})
        writer.write_labels("donor_targets", labels)

        return writer.finish(
            WorldManifest(
                kind="donors",
                synthetic=True,
                source=SOURCE,
                description=(
                    f"Synthetic charity with {donors:,} donors: profiles, gifts and a relationship network "
                    f"from {timeline.start.date()} to {timeline.horizon.date()}, with five segment targets "
                    f"on the {timeline.window_months} months after the cut-off {timeline.cutoff.date()}."
                ),
                seed=seed,
                cutoff=timeline.cutoff,
                horizon=timeline.horizon,
                parameters={
                    "donors": donors,
                    "start": timeline.start.isoformat(),
                    "history_months": timeline.history_months,
                    "window_months": timeline.window_months,
                    "target_shares": {segment.value: share for segment, share in SHARES.items()},
                    "eligible_donors": int(eligible.sum()),
                    "generator": params.as_dict(),
                },
                notes=[
                    "SYNTHETIC: generated by tributary; not real donors",
                    "Events cover the whole timeline; features for the targets may only use events before `cutoff`.",
                    "donor_targets has one row per donor who joined before the cut-off; donors who join later "
                    "appear in the events only.",
                    *(f"{segment.value}: {text}" for segment, text in DEFINITIONS.items()),
                    "Each target has exactly round(share * eligible donors) positives; remaining ties go to the "
                    "lower donor id.",
                    "Each relationship is recorded from both ends (a second row, donors swapped, event id + ':r'), "
                    "so the home partitions of both donors see it.",
                ],
            )
        )


class _Rows:
    """Turns a month's numpy arrays into time-sorted Arrow columns with stable ids."""

    def __init__(self, pop: Population, timeline: Timeline, campaigns: CampaignBook):
        self.pop, self.timeline, self.campaigns = pop, timeline, campaigns
        self.donor_ids = _format_ids("d", 0, pop.n, max(7, len(str(pop.n - 1))))
        self._next = {"gifts": 1, "profiles": 1, "relationships": 1}
        # The CRM migration loads legacy profiles in the first second of the stream;
        # nothing else may happen before a donor's first profile.
        start = int(timeline.month_start_us(0))
        self._last = {"profiles": start - 1, "gifts": start + 1_000_000, "relationships": start + 1_000_000}

    def _order(self, stream: str, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sort order of a month's rows and their times, made strictly increasing.

        Standing orders share one processing second, so ties are common; moving a tied
        row on by a microsecond gives every consumer one unambiguous order. Rows come
        in a fixed order, so the stable sort keeps the result deterministic.
        """
        order = np.argsort(time, kind="stable")
        steps = np.arange(len(order), dtype=np.int64)
        shifted = time[order] - steps
        if len(order):
            shifted[0] = max(shifted[0], self._last[stream] + 1)
            shifted = np.maximum.accumulate(shifted) + steps
            self._last[stream] = int(shifted[-1])
        return order, shifted

    def _ids(self, stream: str, prefix: str, k: int, width: int) -> pa.Array:
        start = self._next[stream]
        self._next[stream] += k
        return _format_ids(prefix, start, k, width)

    def _donor(self, index: np.ndarray) -> pa.Array:
        return self.donor_ids.take(pa.array(index))

    def profiles(self, month: int, traits: np.ndarray, state: DonorMonths, rng: np.random.Generator) -> dict:
        pop, tl = self.pop, self.timeline
        start = tl.month_start_us(month)
        # First profile: legacy donors arrive with the CRM migration at the start; new
        # donors when they join. Then one refresh a quarter.
        first_month = np.maximum(pop.join_month, 0)
        anchor = np.where(pop.legacy, pop.profile_phase, pop.join_month)
        refresh = (first_month < month) & ((month - anchor) % 3 == 0)
        joining = pop.join_month == month
        migrated = pop.legacy & (month == 0)
        donors = np.flatnonzero(refresh | joining | migrated)
        day = pop.profile_day[donors].astype(np.int64) - 1
        time = start + day * US_PER_DAY + pop.profile_second[donors].astype(np.int64) * 1_000_000
        time = np.where(joining[donors], pop.join_time_us[donors], time)
        time = np.where(migrated[donors], start, time)
        order, time = self._order("profiles", time)
        donors = donors[order]
        fresh = joining[donors]

        k = len(donors)
        miss = {name: mask[donors] for name, mask in pop.missing.items()}
        recent = state.last_12_months(donors)
        # A profile created at joining has no activity history yet: unknown, not zero.
        no_history = fresh
        wealth = np.round(sigmoid(0.9 * traits[CAP][donors] + pop.wealth_noise[donors]), 3)
        sent = recent["sent"]
        open_rate = np.round(recent["opened"] / np.maximum(sent, 1), 3)
        age = pop.age_band_codes(donors, time, tl)
        tenure = np.round(np.maximum(time - pop.join_time_us[donors], 0) / (365.25 * US_PER_DAY), 2)
        # Pre-stream summaries age with the profile: months since then, not since 2021.
        elapsed = months_between(time, tl.month_start_us(0))
        since_last, since_first = pop.prior_last_months[donors] + elapsed, pop.prior_first_months[donors] + elapsed
        prior_count, prior_total = pop.prior_count[donors], pop.prior_total[donors]
        return {
            "event_id": self._ids("profiles", "dp", k, 10),
            "event_time": pa.array(time, type=_TIME),
            "donor_id": self._donor(donors),
            "tenure_years": _masked(tenure, miss["tenure_years"]),
            "age_band": _AGE_BANDS.take(pa.array(np.where(miss["age_band"], len(AGE_BAND_NAMES), age))),
            "wealth_index": _masked(wealth, miss["wealth_index"] | (rng.random(k) < 0.02)),
            "home_owner": _masked(pop.home_owner[donors], miss["home_owner"] | (rng.random(k) < 0.02)),
            "region": _REGIONS.take(pa.array(pop.region[donors].astype(np.int64), mask=miss["region"])),
            "event_attendance_12m": _masked(np.minimum(recent["attended"], 366), miss["event_attendance_12m"] | no_history),
            "email_open_rate_12m": _masked(open_rate, (sent == 0) | no_history),
            "volunteer_hours_12m": _masked(recent["volunteer_hours"], miss["volunteer_hours_12m"] | no_history),
            "promotions_received_12m": _masked(recent["promotions"], miss["promotions_received_12m"] | no_history),
            "prior_gift_count": _masked(prior_count, prior_count < 0),
            "prior_gift_total": _masked(prior_total, np.isnan(prior_total)),
            "months_since_last_gift": _masked(np.round(since_last, 1), np.isnan(since_last)),
            "months_since_first_gift": _masked(np.round(since_first, 1), np.isnan(since_first)),
        }

    def gifts(self, batch: GiftBatch) -> dict:
        order, time = self._order("gifts", batch.time_us)
        k = len(order)
        referrer = batch.referrer[order]
        return {
            "event_id": self._ids("gifts", "g", k, 9),
            "event_time": pa.array(time, type=_TIME),
            "donor_id": self._donor(batch.donor[order]),
            "amount": pa.array(batch.amount[order]),
            "currency": pa.array(["USD"]).take(pa.array(np.zeros(k, dtype=np.int64))),
            "channel": _CHANNELS.take(pa.array(batch.channel[order].astype(np.int64))),
            "campaign": self.campaigns.to_arrow(batch.campaign[order]),
            "is_recurring": pa.array(batch.recurring[order]),
            "referrer_donor_id": self.donor_ids.take(pa.array(np.maximum(referrer, 0), mask=referrer < 0)),
        }

    def relationships(self, batch: EdgeBatch) -> dict:
        order, time = self._order("relationships", batch.time_us)
        strength = batch.strength[order]
        return {
            "event_id": self._ids("relationships", "dr", len(order), 9),
            "event_time": pa.array(time, type=_TIME),
            "donor_id": self._donor(batch.donor[order]),
            "related_donor_id": self._donor(batch.related[order]),
            "relationship_type": _EDGE_TYPES.take(pa.array(batch.kind[order].astype(np.int64))),
            "action": _ACTIONS.take(pa.array(batch.added[order].astype(np.int64))),
            "strength": _masked(strength, np.isnan(strength)),
        }


def _format_ids(prefix: str, start: int, k: int, width: int) -> pa.Array:
    """prefix + zero-padded numbers, built in Arrow (a Python loop would dominate the run time)."""
    numbers = pc.cast(pa.array(np.arange(start, start + k, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, width=width, padding="0"), "")


def _masked(values: np.ndarray, missing: np.ndarray) -> pa.Array:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        values = np.where(missing, 0.0, values)  # NaN under the mask would still be stored
    return pa.array(values, mask=np.asarray(missing, dtype=bool))
