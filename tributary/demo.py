"""`tributary demo`: the whole pipeline on an embedded broker, no Kafka install needed.

1. generate small synthetic worlds (or reuse the last ones);
2. train the served fraud model on the fraud world if none exists (quick profile);
3. start the embedded broker, create the topics, start `tributary worker`;
4. replay both worlds in event-time order;
5. wait until every transaction has an outcome, then summarise: events in, alerts out,
   their precision and recall against the world's labels, dead letters, events/s and
   consume-to-publish latency percentiles; stop everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from models.worlds import World, WorldError, open_world
from stream.kafka.embedded_broker import EmbeddedBroker, free_port
from stream.kafka.readback import read_topics
from stream.kafka.topics import ensure_topics
from stream.replay import replay_world
from stream.settings import WorkerSettings
from stream.worker_process import start_worker

SERVED_MODEL = "fusion-gated"


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


def prepare_model(root: Path, fraud_world: World, fresh: bool) -> Path:
    """The quick-profile served model, trained on the demo's fraud world unless one exists."""
    import torch

    from models.artifacts import ArtifactError, latest_version
    from offline.train.fraud import train_fraud

    model_dir = root / "models"
    try:
        if not fresh:
            latest_version(model_dir / "artifacts", SERVED_MODEL)
            click.echo(f"reusing the trained {SERVED_MODEL} model in {model_dir}")
            return model_dir
    except ArtifactError:
        pass
    click.echo(f"training {SERVED_MODEL} and LightGBM on the fraud world (quick profile)")
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    report = train_fraud(fraud_world.root, model_dir, profile="quick", models=[SERVED_MODEL, "lightgbm"])
    for name, m in report["models"].items():
        click.echo(f"  {name:<14} held-out PR-AUC {m['pr_auc']:.3f}  F1 {m['f1']:.3f}")
    return model_dir


async def _run(settings: WorkerSettings, worlds: list[World]) -> dict:
    await ensure_topics(settings)
    started = time.monotonic()
    sent = 0
    for world in worlds:
        report = await replay_world(world, settings, progress=False)
        sent += report.total
        click.echo(f"replayed {report.total:,} {world.manifest.kind.value} events in {report.seconds:.1f} s")
    transactions = worlds[0].manifest.counts.get("transactions", 0)
    topics = settings.topics
    click.echo(f"waiting for the worker to score {transactions:,} transactions ...")
    records = await read_topics(settings, [topics.outcomes, topics.dead_letters, topics.fraud_alerts],
                                expected=transactions, timeout_s=600, settle_s=2)
    inputs = await read_topics(settings, [topics.transactions], expected=transactions, timeout_s=60, settle_s=0.5)
    return {"records": records, "inputs": inputs, "sent": sent, "seconds": time.monotonic() - started}


def summarise(settings: WorkerSettings, fraud_world: World, run: dict) -> bool:
    topics = settings.topics
    outcomes = [r for r in run["records"] if r.topic == topics.outcomes]
    alerts = {json.loads(r.value)["event_id"] for r in run["records"] if r.topic == topics.fraud_alerts}
    letters = [r for r in run["records"] if r.topic == topics.dead_letters]
    sent_at = {json.loads(r.value)["event_id"]: r.timestamp for r in run["inputs"]}
    latency = np.array([r.timestamp - sent_at[e] for r in outcomes if (e := json.loads(r.value)["event_id"]) in sent_at])
    stamps = sorted(r.timestamp for r in outcomes)
    rate = (len(stamps) - 1) / max((stamps[-1] - stamps[0]) / 1000, 1e-9) if len(stamps) > 1 else 0.0
    labels = fraud_world.read_labels("transactions").to_pydict()
    fraud = {e for e, f in zip(labels["event_id"], labels["is_fraud"]) if f}
    caught = len(alerts & fraud)
    distinct = {json.loads(r.value)["event_id"] for r in outcomes}
    transactions = fraud_world.manifest.counts["transactions"]
    rows = [
        ("events replayed (all topics)", f"{run['sent']:,}"),
        ("transactions in", f"{transactions:,}"),
        ("transactions scored (distinct outcomes)", f"{len(distinct):,}"),
        ("dead letters", f"{len(letters):,}"),
        ("fraud alerts", f"{len(alerts):,}"),
        ("alert precision / recall vs labels",
         f"{caught / max(len(alerts), 1):.3f} / {caught / max(len(fraud), 1):.3f} ({caught} of {len(fraud)} fraud; "
         "the model trained on this world's first 60%, so this is partly in-sample)"),
        ("worker events/s (first to last outcome)", f"{rate:,.0f}"),
        ("consume-to-publish latency p50 / p95 / p99 (ms)",
         " / ".join(f"{v:,.0f}" for v in np.percentile(latency, [50, 95, 99]))
         + " (a burst replay: latency includes queueing)" if len(latency) else "n/a"),
        ("donor events", "replayed; donor-segment serving is not built yet (no segment updates)"),
    ]
    width = max(len(k) for k, _ in rows)
    click.echo("")
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    complete = distinct == set(sent_at) and len(distinct) == transactions
    click.echo("every transaction was scored" if complete else "SOME TRANSACTIONS HAVE NO OUTCOME: see above")
    return complete


def run_demo(root: Path, sizes: DemoSizes = DemoSizes(), seed: int = 7, fresh: bool = False) -> bool:
    """Returns True when every replayed transaction was scored."""
    worlds = prepare_worlds(root, sizes, seed, fresh)
    model_dir = prepare_model(root, worlds[0], fresh)
    with EmbeddedBroker() as broker:
        settings = WorkerSettings(bootstrap_servers=broker.bootstrap, metrics_port=free_port(),
                                  model_dir=str(model_dir), fraud_model=SERVED_MODEL)
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
    return summarise(settings, worlds[0], run)


@click.command()
@click.option("--data", "root", default=Path("var/demo"), type=click.Path(file_okay=False, path_type=Path),
              show_default=True, help="Where the demo worlds and models live.")
@click.option("--seed", default=7, show_default=True)
@click.option("--fresh", is_flag=True, help="Regenerate the worlds and retrain the model even if they exist.")
def demo(root: Path, seed: int, fresh: bool) -> None:
    """Run the pipeline end to end on the embedded broker and print what went through."""
    if not run_demo(root, seed=seed, fresh=fresh):
        raise SystemExit(1)
