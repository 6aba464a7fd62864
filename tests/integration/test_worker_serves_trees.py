"""Tree models served end to end: `tributary train` picks one on validation, the worker
serves it by default (or the one named), and its scores and alerts are those `tributary
evaluate` computes. Both the trees alone and the hybrid (trees blended with a neural model)."""

from __future__ import annotations

from datetime import datetime

import pytest

from models.artifacts import latest_version
from models.features.flat import flat_feature_names
from models.model_store import load_fraud_model
from models.worlds import open_world
from offline.generate.fraud_world import generate_fraud_world
from offline.serving_view import worker_view_scores
from offline.train.fraud import train_fraud
from offline.train.loop import FitConfig
from tests.integration.test_worker_integration import transactions
from tests.readback import Readback
from tests.worker_harness import Worker, no_traceback, produce, worker_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trees")
    generate_fraud_world(root / "world", accounts=1200, days=8, seed=5, progress=False)
    report = train_fraud(root / "world", root / "run", models=["lightgbm", "tabular-mlp", "hybrid"], progress=False,
                         fit_override=FitConfig(epochs=2, patience=2, restart_epochs=1, batch_size=256))
    return open_world(root / "world"), root / "run", report


@pytest.mark.parametrize("model", ["lightgbm", "hybrid"])
def test_the_worker_serves_the_tree_models_and_matches_evaluate(broker, trained, model):
    world, run, report = trained
    # The recorded winner is served by default; the other one is named.
    asked = "served" if report["served"]["model"] == model else model
    settings = worker_settings(broker.bootstrap, f"trees-{model}", run, fraud_model=asked)
    records, good = transactions(world, settings)
    worker = Worker(settings)
    readback = Readback(settings)
    try:
        readback.wait_for(produce(settings, records), "an outcome for every transaction", [worker])
        readback.wait_for_alerts([worker])
    finally:
        worker.stop()
        readback.close()
    no_traceback(worker)
    outcomes = [o for p in readback.outcomes.values() for o in p]
    assert {o["model_name"] for o in outcomes} == {model}

    loaded = load_fraud_model(latest_version(run / "artifacts", model))
    offline = worker_view_scores(good, loaded, settings.partitions)
    served = {o["event_id"]: o["scores"]["fraud"] for o in outcomes}
    assert set(served) == set(offline)
    worst = max(abs(served[e] - offline[e]) for e in offline)
    assert worst <= 1e-5, f"worker and offline scores differ by up to {worst}"

    alerted = {a["event_id"]: a for a in readback.alerts}
    assert set(alerted) == {e for e, s in offline.items() if s >= loaded.threshold} and alerted
    names = set(flat_feature_names())
    features = [[r for r in a["reasons"] if r["kind"] == "feature"] for a in alerted.values()]
    assert all(len(f) == 4 and {r["name"] for r in f} <= names for f in features)

    # Case evidence: every transaction an alert cites is an earlier one of its accounts, from
    # whichever partition it came (the merged graph), named by the accounts' real ids.
    happened = {(e.source_account, e.destination_account, int(e.event_time.timestamp())) for e in good}
    accounts = {a for e in good for a in (e.source_account, e.destination_account)}
    cited = 0
    for alert in alerted.values():
        for step in alert["evidence"]:
            account = alert["source_account"] if step["account"] == "source" else alert["destination_account"]
            ends = (account, step["counterparty"]) if step["direction"] == "out" else (step["counterparty"], account)
            when = datetime.fromisoformat(step["event_time"])
            assert (*ends, int(when.timestamp())) in happened, (alert, step)
            assert when <= datetime.fromisoformat(alert["event_time"])
            assert isinstance(step["weight"], float)  # occlusion: any family
            cited += 1
        assert {c["account"] for c in alert["counterparties"]} <= accounts
    assert cited >= len(alerted)
