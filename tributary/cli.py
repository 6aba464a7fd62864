"""The `tributary` command: the composition root that wires `offline` and `stream` commands.

It is the one place allowed to import both sides; `offline` and `stream` never import
each other.
"""

from __future__ import annotations

from pathlib import Path

import click

from models.errors import TributaryError
from offline.cli import evaluate, generate, import_data, install_model, train
from stream.cli import alerts, broker, replay, topics, worker
from tributary.demo import demo


class _FriendlyErrors(click.Group):
    """Show errors that the user can fix (bad file, bad world, bad settings, a broker
    away) as one clear message instead of a traceback, unless --debug asks for it;
    anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TributaryError as error:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(str(error)) from error


@click.group(cls=_FriendlyErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tributary")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of its one-line message.")
def main(debug: bool) -> None:
    """Tributary: streaming fraud and donor-segment scoring over Kafka."""


main.add_command(generate)
main.add_command(import_data)
main.add_command(train)
main.add_command(evaluate)
main.add_command(install_model)
main.add_command(broker)
main.add_command(replay)
main.add_command(topics)
main.add_command(demo)
main.add_command(worker)
main.add_command(alerts)


@main.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A fraud world to replay (default: generate one of --accounts x --days).")
@click.option("--accounts", default=20_000, show_default=True)
@click.option("--days", default=7, show_default=True)
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Trained models (default: an untrained model of the served architecture; cost does not depend on weights).")
@click.option("--fraud-model", default="served", show_default=True,
              help="With --model-dir: a model name, or served (the one training chose on validation).")
@click.option("--rate", default=1000.0, show_default=True, help="Steady input rate for the latency measurement.")
@click.option("--latency-seconds", default=20.0, show_default=True, help="How long the steady-rate phase lasts.")
@click.option("--batch-max", default=256, show_default=True)
@click.option("--batch-wait-ms", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--memory-only", is_flag=True,
              help="Only the feature state's bytes per account with --accounts accounts in it (e.g. 1000000); no broker.")
def bench(data, accounts, days, model_dir, fraud_model, rate, latency_seconds, batch_max, batch_wait_ms, as_json,
          memory_only):
    """Measure the worker: events/s vs a no-op Faust agent, latency percentiles, stages, memory."""
    if memory_only:
        from models import strict_json
        from tributary.bench import memory_at_scale

        result = memory_at_scale(accounts, progress=lambda m: click.echo(m, err=True))
        click.echo(strict_json.dumps(result) if as_json else "\n".join(f"{k:<32} {v:,}" for k, v in result.items()))
        return
    from tributary.bench import bench_main

    bench_main(data, model_dir, fraud_model, accounts, days, rate, latency_seconds, batch_max, batch_wait_ms, as_json)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (docs/topics.md in the repository) instead of printing.")
def schema(out: Path | None) -> None:
    """Every topic: its key, the fields of its messages and an example (from the contracts)."""
    from tributary.topics_doc import topics_markdown

    text = topics_markdown()
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"wrote {out}")


def _batch_sizes(ctx, param, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("batch sizes must be positive integers")
    return sizes


@main.command("bench-model")
@click.option("--data", "fraud_data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A fraud world to featurise (default: generate one of --accounts x --days).")
@click.option("--donor-data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A donor world to featurise (default: generate one of --donors).")
@click.option("--accounts", default=2_000, show_default=True)
@click.option("--days", default=7, show_default=True)
@click.option("--donors", default=2_000, show_default=True)
@click.option("--model", "models", type=click.Choice(["fraud", "donors"]), multiple=True,
              help="Which models to time (repeatable; default both).")
@click.option("--device", "devices", type=click.Choice(["auto", "cpu", "cuda"]), multiple=True,
              help="Devices to time (repeatable; default auto: cpu, and cuda when available). "
                   "CUDA rows are skipped with a note where there is no CUDA.")
@click.option("--batch-sizes", default="1,16,64,256,1024", show_default=True, callback=_batch_sizes,
              help="Comma-separated batch sizes.")
@click.option("--repeats", default=50, show_default=True, help="Timed calls per batch size and device.")
@click.option("--warmup", default=5, show_default=True, help="Untimed calls before them.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch (default: all cores).")
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Trained fraud models (default: an untrained model of the served architecture).")
@click.option("--fraud-model", default="fusion-gated", show_default=True)
@click.option("--donor-model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Trained donor models (default: an untrained multitarget model).")
@click.option("--profile", type=click.Choice(["quick", "full"]), default="quick", show_default=True,
              help="Widths of the untrained models.")
@click.option("--cudnn-tf32", is_flag=True,
              help="Time CUDA with cuDNN's TF32 on (torch's default; the served scorers turn it off for parity).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench_model(fraud_data, donor_data, accounts, days, donors, models, devices, batch_sizes, repeats, warmup, threads,
                model_dir, fraud_model, donor_model_dir, profile, cudnn_tf32, as_json):
    """Time the fraud and donor models alone per batch size on CPU and CUDA: latency, events/s, CPU-vs-CUDA scores."""
    from tributary.bench_model import bench_model_main

    bench_model_main(fraud_data, donor_data, accounts, days, donors, models, devices, batch_sizes, repeats, warmup,
                     threads, model_dir, fraud_model, donor_model_dir, profile, cudnn_tf32, as_json)


@main.command("replay-test")
@click.option("--data", "world_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A labelled fraud world (tributary generate fraud / tributary import ...).")
@click.option("--model-dir", envvar="TRIBUTARY_MODEL_DIR", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The models the worker serves: the same directory (env TRIBUTARY_MODEL_DIR).")
@click.option("--bootstrap", default=None,
              help="Kafka bootstrap servers, with a worker running against them (env TRIBUTARY_BOOTSTRAP_SERVERS).")
@click.option("--fraud-model", envvar="TRIBUTARY_FRAUD_MODEL", default="served", show_default=True,
              help="The fraud model the worker serves (env TRIBUTARY_FRAUD_MODEL): a name, or `served`, "
                   "the one training chose on validation.")
@click.option("--bad-per-kind", default=3, show_default=True, type=click.IntRange(min=1),
              help="Bad events planted of each kind (malformed JSON, schema violations, oversized, ...).")
@click.option("--margin", default=0.05, show_default=True, type=click.FloatRange(min=0),
              help="How far alert precision and recall may fall below the offline evaluation's.")
@click.option("--timeout-s", default=600.0, show_default=True, help="Longest wait for the worker's outputs.")
@click.option("--embedded", is_flag=True, help="Start an embedded broker and a worker of its own (no Kafka needed).")
def replay_test(world_dir, model_dir, bootstrap, fraud_model, bad_per_kind, margin, timeout_s, embedded):
    """Replay a labelled world with planted bad events; fail if events are lost, dead letters
    differ from the bad events planted, or alert precision/recall fall below offline - margin."""
    from stream.settings import WorkerSettings, load_settings
    from tributary.replay_check import format_report
    from tributary.replay_test import run_embedded, run_replay_test

    if embedded and bootstrap:
        raise click.UsageError("--embedded starts its own broker: leave out --bootstrap")
    if embedded:
        report = run_embedded(world_dir, model_dir, fraud_model, bad_per_kind, margin, timeout_s, echo=click.echo)
    else:
        settings = load_settings(WorkerSettings, **({"bootstrap_servers": bootstrap} if bootstrap else {}))
        report = run_replay_test(world_dir, model_dir, settings, fraud_model, bad_per_kind, margin, timeout_s,
                                 echo=click.echo)
    click.echo("")
    click.echo(format_report(report))
    if not report.passed:
        raise SystemExit(1)
