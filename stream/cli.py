"""`tributary broker`, `tributary topics create`, `tributary replay`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from stream.settings import KafkaSettings, WorkerSettings, load_settings

_BOOTSTRAP = click.option(
    "--bootstrap", "bootstrap", envvar="TRIBUTARY_BOOTSTRAP_SERVERS", default="127.0.0.1:9092", show_default=True,
    help="Kafka bootstrap servers host:port[,host:port] (env TRIBUTARY_BOOTSTRAP_SERVERS).",
)


def _settings(bootstrap: str) -> KafkaSettings:
    # The worker's settings, although only the Kafka ones are used: one environment
    # usually serves every command, and a bad value in it is reported by each of them.
    return load_settings(WorkerSettings, bootstrap_servers=bootstrap)


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


@click.command()
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (env TRIBUTARY_BOOTSTRAP_SERVERS).")
@click.option("--model-dir", default=None, help="Trained models: a `tributary train` output (env TRIBUTARY_MODEL_DIR).")
@click.option("--fraud-model", default=None, help="Fraud model to serve: a name (fusion-gated, lightgbm, ...) or "
              "served, the one training chose on validation (env TRIBUTARY_FRAUD_MODEL; default served).")
@click.option("--batch-max", type=int, default=None, help="Events per micro-batch at most (env TRIBUTARY_BATCH_MAX).")
@click.option("--batch-wait-ms", type=int, default=None, help="Longest wait to fill a batch (env TRIBUTARY_BATCH_WAIT_MS).")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port, 0 to disable (env TRIBUTARY_METRICS_PORT).")
@click.option("--embedded-broker-safe", is_flag=True,
              help="Settings the embedded broker needs: one record per Faust producer batch, 10 s sessions, "
                   "10 ms fetch long-polls.")
@click.option("--log-level", default="warning", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def worker(bootstrap, model_dir, fraud_model, batch_max, batch_wait_ms, metrics_port, embedded_broker_safe, log_level):
    """Run the scoring worker until stopped (Ctrl-C or SIGTERM finish the batch in hand first).

    Every setting is a TRIBUTARY_* environment variable; flags given here win.
    """
    from stream.kafka.connect import check_reachable
    from stream.kafka.embedded_broker import EMBEDDED_BROKER_SETTINGS
    from stream.malloc_arenas import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread: asyncio's resolver, torch, the scoring thread
    flags = {"bootstrap_servers": bootstrap, "model_dir": model_dir, "fraud_model": fraud_model,
             "batch_max": batch_max, "batch_wait_ms": batch_wait_ms, "metrics_port": metrics_port}
    overrides = {k: v for k, v in flags.items() if v is not None}
    if embedded_broker_safe:
        overrides.update(EMBEDDED_BROKER_SETTINGS)
    settings = load_settings(WorkerSettings, **overrides)
    asyncio.run(check_reachable(settings))  # before the seconds of importing torch and the models
    from stream.app import build_worker
    from stream.lifecycle import run_worker

    raise SystemExit(run_worker(*build_worker(settings), log_level))


@click.command()
@_BOOTSTRAP
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("var/alerts.jsonl"),
              show_default=True, help="JSON lines file the alerts and segment updates are appended to.")
@click.option("--idle-exit", type=float, default=None, help="Stop after this many seconds without a message.")
def alerts(bootstrap: str, out: Path, idle_exit: float | None) -> None:
    """Follow fraud alerts and donor-segment updates, de-duplicated, into a file and the log."""
    import logging

    from stream.consumers.alert_sink import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # its INFO lines are about its own bookkeeping
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = run(_settings(bootstrap), out, idle_exit_s=idle_exit)
    click.echo(f"{counts.alerts:,} alerts, {counts.segment_updates:,} segment updates written to {out}; "
               f"{counts.duplicates:,} duplicates and {counts.unreadable:,} unreadable messages skipped")
