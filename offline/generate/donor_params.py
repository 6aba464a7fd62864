"""Every knob of the donor world in one frozen object, recorded in the world's manifest.

The values are calibrated so that a simple model on pre-cut-off features predicts each
of the five targets well but not perfectly (F1 roughly 0.65-0.85): traits persist, so
the future follows the past, but they also drift, and the future is sampled afresh.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DonorParams:
    # --- population -------------------------------------------------------------------
    legacy_share: float = 0.40  # donors already on file before the stream starts
    legacy_tenure_mean_months: float = 72.0
    legacy_history_known: float = 0.80  # share of legacy donors whose pre-stream giving was migrated
    join_growth: float = 0.01  # new-donor intake grows this much per month

    # --- latent traits: base (persistent) + AR(1) drift per month -----------------------
    # Drift is what makes the future window differ from the past: with phi=0.92 about a
    # third of a shock remains after a year; tau is the drift's sd (the base has sd 1).
    drift_phi: float = 0.92
    drift_tau: float = 0.45

    # --- status: lapse and recurring-gift programme ------------------------------------
    lapse_logit: float = -4.0  # monthly hazard of an average active donor: ~1.8%
    lapse_activity: float = 1.1
    reactivate_logit: float = -3.6
    reactivate_activity: float = 0.8
    recurring_start_logit: float = -6.2
    recurring_cancel_logit: float = -4.2
    recurring_regularity: float = 1.3

    # --- gifts ------------------------------------------------------------------------
    appeal_log_rate: float = -2.2  # log of an average active donor's appeal gifts per month
    appeal_regularity: float = 0.9
    appeal_engagement: float = 0.35
    lapsed_rate_factor: float = 0.04
    recurring_appeal_factor: float = 0.5
    gift_log_base: float = 3.4  # log dollars: a median gift of about $30
    gift_capacity: float = 0.9
    gift_sigma: float = 0.55
    level_step_prob: float = 0.015  # monthly chance of an upgrade/downgrade
    level_step_sd: float = 0.35
    major_gift_prob: float = 0.002
    event_gift_prob: float = 0.25  # per event attended

    # --- engagement activity ----------------------------------------------------------
    attendance_log_rate: float = -2.6
    attendance_engagement: float = 1.1
    email_sends: float = 2.0
    open_logit: float = -1.0
    open_engagement: float = 1.0
    volunteer_share_logit: float = -1.6
    volunteer_month_logit: float = -0.4

    # --- network -----------------------------------------------------------------------
    edge_propensity_influence: float = 1.4
    edge_propensity_noise: float = 0.45
    initial_edges_per_legacy: float = 1.2
    edges_per_donor_month: float = 0.035
    preferential_share: float = 0.25  # new edges whose first end is picked by degree
    same_region_share: float = 0.55
    homophily_candidates: int = 3
    p2p_logit: float = -9.2
    p2p_influence: float = 1.3
    p2p_campaign_logit: float = -3.2  # monthly chance an average donor runs a fundraiser
    p2p_campaign_influence: float = 1.2
    p2p_campaign_boost: float = 8.0

    def as_dict(self) -> dict:
        return asdict(self)
