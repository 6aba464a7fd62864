"""`tributary broker`, `tributary topics create`, `tributary replay`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from stream.settings import KafkaSettings

_BOOTSTRAP = click.option(
    "--bootstrap", "bootstrap", envvar="TRIBUTARY_BOOTSTRAP_SERVERS", default="127.0.0.1:9092", show_default=True,
    help="Kafka bootstrap servers host:port[,host:port] (env TRIBUTARY_BOOTSTRAP_SERVERS).",
)


def _settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap)


@click.command()
@click.option("--port", default=9092, show_default=True, help="Loopback port to listen on.")
def broker(port: int) -> None:
    """Run the embedded Kafka-compatible broker (memory only) until stopped with Ctrl-C."""
    from stream.kafka.embedded_broker import EmbeddedBroker

    # SIGTERM (docker stop, kill) stops it as cleanly as Ctrl-C does. Installed before
    # the broker starts, so a stop that comes right after "listening" is handled too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    embedded = EmbeddedBroker(port=port)
    try:
        embedded.start()
        click.echo(f"embedded broker listening on {embedded.bootstrap} (memory storage: nothing survives a stop)")
        code = embedded.wait()
        click.echo(f"broker exited on its own with code {code}", err=True)
    except KeyboardInterrupt:
        code = 0
    finally:
        embedded.stop()
    click.echo("broker stopped")
    raise SystemExit(code)


@click.group()
def topics() -> None:
    """Manage the topics the worker reads and writes."""


@topics.command("create")
@_BOOTSTRAP
def topics_create(bootstrap: str) -> None:
    """Create every topic with the configured partitions (TRIBUTARY_PARTITIONS)."""
    from stream.kafka.topics import ensure_topics

    settings = _settings(bootstrap)
    for name, state in asyncio.run(ensure_topics(settings)).items():
        click.echo(f"{name:<24} {state} ({settings.partitions} partitions)")


@click.command()
@click.argument("world_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_BOOTSTRAP
@click.option("--rate", type=float, default=None, help="Events per second (default: as fast as possible).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def replay(world_dir: Path, bootstrap: str, rate: float | None, no_progress: bool) -> None:
    """Produce a world's events to their topics in event-time order, keyed by entity id."""
    from models.worlds import open_world
    from stream.kafka.topics import ensure_topics
    from stream.replay import replay_world

    settings = _settings(bootstrap)
    world = open_world(world_dir)

    async def run():
        await ensure_topics(settings)
        return await replay_world(world, settings, rate=rate, progress=not no_progress)

    report = asyncio.run(run())
    for topic, count in report.sent.items():
        click.echo(f"{topic:<24} {count:>12,} events")
    click.echo(f"{'total':<24} {report.total:>12,} events in {report.seconds:.1f} s ({report.events_per_s:,.0f}/s)")
