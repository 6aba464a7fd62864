"""`tributary demo`: the whole pipeline on an embedded broker, no Kafka install needed.

Generates small synthetic worlds (or reuses the last ones), starts the embedded broker,
creates the topics, replays both worlds in event-time order and reads every topic back
to show that nothing was lost on the way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import click

from models.worlds import World, WorldError, open_world
from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.readback import read_topics
from stream.kafka.topics import ensure_topics
from stream.replay import replay_world
from stream.settings import KafkaSettings


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


async def _replay_and_count(settings: KafkaSettings, worlds: list[World]) -> dict[str, dict[str, int]]:
    await ensure_topics(settings)
    sent: dict[str, int] = {}
    for world in worlds:
        click.echo(f"replaying {world.manifest.kind.value} world ({'synthetic' if world.manifest.synthetic else world.manifest.source})")
        report = await replay_world(world, settings)
        for topic, count in report.sent.items():
            sent[topic] = sent.get(topic, 0) + count
        click.echo(f"  {report.total:,} events in {report.seconds:.1f} s ({report.events_per_s:,.0f}/s)")
    records = await read_topics(settings, list(sent), expected=sum(sent.values()))
    read: dict[str, int] = {}
    for record in records:
        read[record.topic] = read.get(record.topic, 0) + 1
    return {topic: {"sent": count, "read back": read.get(topic, 0)} for topic, count in sent.items()}


def run_demo(root: Path, sizes: DemoSizes = DemoSizes(), seed: int = 7, fresh: bool = False) -> bool:
    """Returns True when every replayed event was read back."""
    worlds = prepare_worlds(root, sizes, seed, fresh)
    with EmbeddedBroker() as broker:
        click.echo(f"embedded broker on {broker.bootstrap}")
        counts = asyncio.run(_replay_and_count(KafkaSettings(bootstrap_servers=broker.bootstrap), worlds))
    click.echo(f"\n{'topic':<22}{'sent':>12}{'read back':>12}")
    for topic, row in counts.items():
        click.echo(f"{topic:<22}{row['sent']:>12,}{row['read back']:>12,}")
    complete = all(row["sent"] == row["read back"] for row in counts.values())
    click.echo("every event arrived" if complete else "EVENTS MISSING: see the table above")
    return complete


@click.command()
@click.option("--data", "root", default=Path("var/demo"), type=click.Path(file_okay=False, path_type=Path),
              show_default=True, help="Where the demo worlds live.")
@click.option("--seed", default=7, show_default=True)
@click.option("--fresh", is_flag=True, help="Regenerate the worlds even if they exist.")
def demo(root: Path, seed: int, fresh: bool) -> None:
    """Run the pipeline end to end on the embedded broker and print what went through."""
    if not run_demo(root, seed=seed, fresh=fresh):
        raise SystemExit(1)
