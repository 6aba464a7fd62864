"""The worker serves the alert policy: a budget holds its alert rate, a policy file is
read again while it runs, and a budget the model cannot serve stops it at start."""

from __future__ import annotations

import pytest

from models.alert_policy import AlertPolicyError, budget_reference
from models.contracts import EventOutcome
from tests.serving_helpers import untrained_fraud_artifact
from tests.worker_driver import Driver, transactions

N = 600
DAYS = 2.0  # the "validation period" the reference is said to span: N / DAYS events a day


def scores_of(driver: Driver) -> list[float]:
    outcomes = [EventOutcome.model_validate_json(v) for v in driver.sent(driver.settings.topics.outcomes)]
    return [o.scores["fraud"] for o in sorted(outcomes, key=lambda o: o.offset)]


@pytest.fixture
def budget_models(tmp_path):
    """An artifact whose validation scores are the scores of this very stream, so that a
    budget's alert rate on it can be checked exactly."""
    first = tmp_path / "first"
    untrained_fraud_artifact(first, threshold=0.5)
    probe = Driver(first)
    probe.run("transactions", [transactions(N)])
    served = tmp_path / "served"
    untrained_fraud_artifact(served, threshold=0.5,
                             metrics={"alert_budget": budget_reference(scores_of(probe), DAYS * 86_400)})
    return served


def alerts(driver: Driver) -> int:
    return len(driver.sent(driver.settings.topics.fraud_alerts))


@pytest.mark.parametrize("policy, expected", [("top_fraction=0.1", 0.1 * N), ("alerts_per_day=45", 45 * DAYS)])
def test_a_budget_holds_its_alert_rate(budget_models, policy, expected):
    driver = Driver(budget_models, alert_policy=policy)
    driver.run("transactions", [transactions(N)])
    assert abs(alerts(driver) - expected) <= 0.1 * expected, f"{alerts(driver)} alerts, budget {expected:g}"
    sample = driver.worker.metrics.registry.get_sample_value
    assert sample("tributary_alert_threshold", {"model": "fusion-gated"}) == pytest.approx(
        driver.worker.alert_thresholds.threshold(driver.worker.fraud_scorer.current.model))


def test_a_policy_file_is_read_again_at_the_reload_check(budget_models, tmp_path):
    policy = tmp_path / "alert-policy"
    policy.write_text("top_fraction=0.2\n")
    driver = Driver(budget_models, alert_policy=f"@{policy}")
    records = transactions(2 * N)
    driver.run("transactions", [records[:N]])
    before = alerts(driver)
    assert before > 0.1 * N
    policy.write_text("threshold=1.0\n")  # nothing scores 1.0: no more alerts
    driver.worker.reload()
    driver.run("transactions", [records[N:]])
    assert alerts(driver) == before
    policy.write_text("alerts_per_day=oops\n")  # a bad edit keeps the policy in force
    driver.worker.reload()
    assert str(driver.worker.alert_thresholds.policy) == "threshold=1"


def test_a_budget_the_model_cannot_serve_stops_the_worker_at_start(tmp_path):
    untrained_fraud_artifact(tmp_path, threshold=0.5)  # trained before artifacts carried validation scores
    with pytest.raises(AlertPolicyError, match="retrain it with `tributary train fraud`"):
        Driver(tmp_path, alert_policy="alerts_per_day=100")
