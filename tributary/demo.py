"""`tributary demo`: the whole pipeline on an embedded broker, no Kafka install needed.

1. generate small synthetic worlds (or reuse the last ones);
2. train the models if none exist (quick profile): fusion-gated, LightGBM and their
   hybrid on the fraud world (the worker serves the one training chose on validation),
   the donor multi-target model on the donor world;
3. start the embedded broker, create the topics, start `tributary worker`;
4. replay both worlds in event-time order;
5. wait until every event has an outcome, then summarise: events in, alerts out, their
   precision and recall against the world's labels, segment updates, dead letters,
   events/s and consume-to-publish latency percentiles; stop everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from models.worlds import World, WorldError, open_world
from offline.evaluation.evidence import cites_fraud, fraudulent_transfers
from stream.kafka.embedded_broker import EmbeddedBroker, free_port
from stream.kafka.readback import read_topics
from stream.kafka.topics import ensure_topics
from stream.replay import replay_world
from stream.settings import WorkerSettings
from stream.worker_process import start_worker

FRAUD_MODELS = ("fusion-gated", "lightgbm", "hybrid")  # the worker serves their validation winner
DONOR_MODEL = "multitarget"


@dataclass(frozen=True)
class DemoSizes:
    accounts: int = 5_000
    days: int = 14
    donors: int = 3_000


def _world(path: Path, make) -> World:
    try:
        world = open_world(path)
        click.echo(f"reusing {world.manifest.kind.value} world in {path} (--fresh to regenerate)")
        return world
    except WorldError:
        make()
        return open_world(path)


def prepare_worlds(root: Path, sizes: DemoSizes, seed: int, fresh: bool) -> list[World]:
    from offline.generate.donor_world import generate_donor_world
    from offline.generate.fraud_world import generate_fraud_world

    fraud_dir, donor_dir = root / "fraud", root / "donors"
    if fresh:
        for d in (fraud_dir, donor_dir):
            (d / "world.json").unlink(missing_ok=True)
    return [
        _world(fraud_dir, lambda: generate_fraud_world(fraud_dir, accounts=sizes.accounts, days=sizes.days, seed=seed)),
        _world(donor_dir, lambda: generate_donor_world(donor_dir, donors=sizes.donors, seed=seed)),
    ]


def prepare_models(root: Path, fraud_world: World, donor_world: World, fresh: bool) -> Path:
    """The quick-profile served models, trained on the demo's worlds unless they exist.

    Both end up under one artifacts root, the worker's model_dir; the donor model is
    trained in a directory of its own (reports and checkpoints would collide) and
    installed there, as an operator rolls out a model.
    """
    import torch

    from models.artifacts import ArtifactError, install_artifact, latest_version, served_name
    from offline.train.donors import train_donors
    from offline.train.fraud import train_fraud

    model_dir = root / "models"
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    served = served_name(model_dir / "artifacts", "fraud", FRAUD_MODELS[-1])  # trained last: present if all are
    for name, train in ((served, lambda: _train_fraud(train_fraud, fraud_world, model_dir)),
                        (DONOR_MODEL, lambda: _train_donors(train_donors, donor_world, root / "donor-training"))):
        try:
            if not fresh:
                latest_version(model_dir / "artifacts", name)
                click.echo(f"reusing the trained {name} model in {model_dir}")
                continue
        except ArtifactError:
            pass
        trained = train()
        if trained is not None:
            install_artifact(trained, model_dir / "artifacts")
    return model_dir


def _train_fraud(train_fraud, world: World, model_dir: Path) -> None:
    click.echo(f"training {', '.join(FRAUD_MODELS)} on the fraud world (quick profile)")
    report = train_fraud(world.root, model_dir, profile="quick", models=list(FRAUD_MODELS))
    for name, m in report["models"].items():
        click.echo(f"  {name:<14} held-out PR-AUC {m['pr_auc']:.3f}  F1 {m['f1']:.3f}")
    click.echo(f"  served: {report['served']['model']} (best validation PR-AUC)")


def _train_donors(train_donors, world: World, out: Path) -> Path:
    click.echo(f"training the donor {DONOR_MODEL} model on the donor world (quick profile)")
    report = train_donors(world.root, out, profile="quick", models=[DONOR_MODEL])
    for target, m in report["models"][DONOR_MODEL]["targets"].items():
        click.echo(f"  {target:<20} held-out PR-AUC {m['pr_auc']:.3f}  F1 {m['f1']:.3f}")
    return Path(report["artifact"])


async def _run(settings: WorkerSettings, worlds: list[World]) -> dict:
    await ensure_topics(settings)
    started = time.monotonic()
    sent = 0
    for world in worlds:
        report = await replay_world(world, settings, progress=False)
        sent += report.total
        click.echo(f"replayed {report.total:,} {world.manifest.kind.value} events in {report.seconds:.1f} s")
    topics = settings.topics
    click.echo(f"waiting for the worker to process {sent:,} events ...")
    finished: set[str] = set()
    letters = 0

    def everything_arrived(fresh) -> bool:
        nonlocal letters
        for record in fresh:
            if record.topic == topics.outcomes:
                finished.add(json.loads(record.value)["event_id"])
            elif record.topic == topics.dead_letters:
                letters += 1
        return len(finished) + letters >= sent

    records = await read_topics(settings, [topics.outcomes, topics.dead_letters, topics.fraud_alerts,
                                           topics.donor_segments],
                                expected=sent, timeout_s=900, settle_s=2, until=everything_arrived)
    inputs = await read_topics(settings, [topics.transactions, topics.gifts], expected=sent, timeout_s=60,
                               settle_s=0.5)
    return {"records": records, "inputs": inputs, "sent": sent, "seconds": time.monotonic() - started}


def summarise(settings: WorkerSettings, worlds: list[World], run: dict) -> bool:
    fraud_world, donor_world = worlds
    topics = settings.topics
    outcomes = [r for r in run["records"] if r.topic == topics.outcomes]
    alert_records = [json.loads(r.value) for r in run["records"] if r.topic == topics.fraud_alerts]
    alerts = {a["event_id"] for a in alert_records}
    letters = [r for r in run["records"] if r.topic == topics.dead_letters]
    updates = [json.loads(r.value) for r in run["records"] if r.topic == topics.donor_segments]
    sent_at = {json.loads(r.value)["event_id"]: r.timestamp for r in run["inputs"]}
    latency = np.array([r.timestamp - sent_at[e] for r in outcomes if (e := json.loads(r.value)["event_id"]) in sent_at])
    stamps = sorted(r.timestamp for r in outcomes)
    rate = (len(stamps) - 1) / max((stamps[-1] - stamps[0]) / 1000, 1e-9) if len(stamps) > 1 else 0.0
    labels = fraud_world.read_labels("transactions").to_pydict()
    fraud = {e for e, f in zip(labels["event_id"], labels["is_fraud"]) if f}
    caught = len(alerts & fraud)
    fraudulent = fraudulent_transfers(fraud_world)
    on_fraud = [a for a in alert_records if a["event_id"] in fraud]
    cited = [cites_fraud(step, a["source_account"], a["destination_account"], fraudulent)
             for a in on_fraud for step in a.get("evidence", [])[:3]]
    kinds = Counter((o["topic"], o["outcome"]) for o in map(json.loads, (r.value for r in outcomes)))
    distinct = {json.loads(r.value)["event_id"] for r in outcomes}
    transactions = fraud_world.manifest.counts["transactions"]
    segment_changes = Counter(s for u in updates for s in set(u["segments"]) ^ set(u["previous_segments"]))
    rows = [
        ("events replayed (all topics)", f"{run['sent']:,}"),
        ("events with an outcome (distinct)", f"{len(distinct):,}"),
        ("transactions in / scored", f"{transactions:,} / {kinds[(topics.transactions, 'scored')]:,}"),
        ("gifts scored; profiles, relationships applied",
         f"{kinds[(topics.gifts, 'scored')]:,}; {kinds[(topics.donor_profiles, 'applied')]:,}, "
         f"{kinds[(topics.donor_relationships, 'applied')]:,}"),
        ("dead letters", f"{len(letters):,}"),
        ("fraud alerts", f"{len(alerts):,}"),
        ("alert precision / recall vs labels",
         f"{caught / max(len(alerts), 1):.3f} / {caught / max(len(fraud), 1):.3f} ({caught} of {len(fraud)} fraud; "
         "the model trained on this world's first 60%, so this is partly in-sample)"),
        ("alerts on fraud: their 3 first evidence steps that are fraud",
         f"{sum(cited) / max(len(cited), 1):.3f} of {len(cited):,} steps"),
        ("donor-segment updates", f"{len(updates):,} for {len({u['donor_id'] for u in updates}):,} donors"),
        ("  segments entered or left", ", ".join(f"{s} {n:,}" for s, n in sorted(segment_changes.items())) or "none"),
        ("worker events/s (first to last outcome)", f"{rate:,.0f}"),
        ("consume-to-publish latency p50 / p95 / p99 (ms)",
         " / ".join(f"{v:,.0f}" for v in np.percentile(latency, [50, 95, 99]))
         + " (a burst replay: latency includes queueing)" if len(latency) else "n/a"),
    ]
    width = max(len(k) for k, _ in rows)
    click.echo("")
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    if on_fraud:
        _show_alert(max(on_fraud, key=lambda a: a["score"]))
    complete = len(distinct) + len(letters) >= run["sent"]
    click.echo("every event has an outcome" if complete else "SOME EVENTS HAVE NO OUTCOME: see above")
    return complete


def _show_alert(alert: dict) -> None:
    """One alert as an analyst reads it: reasons, then the transactions and accounts behind it."""
    click.echo(f"\nthe strongest alert on fraud: {alert['event_id']} {alert['source_account']} -> "
               f"{alert['destination_account']}, {alert['amount']:,.2f}, score {alert['score']:.3f}")
    click.echo("  reasons: " + ", ".join(r["name"] for r in alert["reasons"]))
    for step in alert.get("evidence", []):
        click.echo(f"  {step['account']:<11} {step['direction']:<3} {step.get('counterparty', '?'):<14} "
                   f"{step['amount']:>12,.2f}  {step['event_time']}  {step['type']:<9} weight {step['weight']:+.3f}")
    parties = ", ".join(f"{c['account']} ({c['transactions']} tx, {c['weight']:+.3f})" for c in alert.get("counterparties", []))
    click.echo(f"  counterparties: {parties or 'none'}")


def run_demo(root: Path, sizes: DemoSizes = DemoSizes(), seed: int = 7, fresh: bool = False) -> bool:
    """Returns True when every replayed event has an outcome (scored, applied or dead-lettered)."""
    from models.artifacts import SERVED_CHOICE  # here, not at the top: it imports torch, which `--help` need not

    worlds = prepare_worlds(root, sizes, seed, fresh)
    model_dir = prepare_models(root, *worlds, fresh)
    with EmbeddedBroker() as broker:
        settings = WorkerSettings(bootstrap_servers=broker.bootstrap, metrics_port=free_port(),
                                  model_dir=str(model_dir), fraud_model=SERVED_CHOICE, donor_model=DONOR_MODEL)
        click.echo(f"embedded broker on {broker.bootstrap}; worker metrics on "
                   f"http://127.0.0.1:{settings.metrics_port}/metrics")
        asyncio.run(ensure_topics(settings))
        worker = start_worker(settings, stderr=subprocess.PIPE)
        try:
            run = asyncio.run(_run(settings, worlds))
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if worker.returncode not in (0, -15):
            click.echo(f"the worker exited with {worker.returncode}:\n{(worker.stderr.read() or '')[-2000:]}", err=True)
    return summarise(settings, worlds, run)


@click.command()
@click.option("--data", "root", default=Path("var/demo"), type=click.Path(file_okay=False, path_type=Path),
              show_default=True, help="Where the demo worlds and models live.")
@click.option("--seed", default=7, show_default=True)
@click.option("--fresh", is_flag=True, help="Regenerate the worlds and retrain the model even if they exist.")
def demo(root: Path, seed: int, fresh: bool) -> None:
    """Run the pipeline end to end on the embedded broker and print what went through."""
    if not run_demo(root, seed=seed, fresh=fresh):
        raise SystemExit(1)
