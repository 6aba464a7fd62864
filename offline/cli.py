"""`tributary generate ...` and `tributary import ...`: make data worlds.

Imports of the heavy modules happen inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from models.features.partitioning import DEFAULT_PARTITIONS
from models.worlds import WorldManifest

_OUT = click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the world into (created if missing; an existing world there is replaced).",
)
_SEED = click.option("--seed", default=7, show_default=True, help="Random seed: the same seed gives the same world.")


def _report(manifest: WorldManifest, out: Path) -> None:
    kind = "synthetic" if manifest.synthetic else f"imported from {manifest.source}"
    click.echo(f"wrote {manifest.kind.value} world ({kind}) to {out}")
    for name, count in manifest.counts.items():
        click.echo(f"  {name:<22} {count:>12,}")


@click.group()
def generate() -> None:
    """Generate a synthetic, labelled, time-ordered world (Parquet)."""


@generate.command("fraud")
@click.option("--accounts", default=5_000, show_default=True, help="Number of accounts.")
@click.option("--days", default=30, show_default=True, help="Days of activity to simulate.")
@_SEED
@_OUT
def generate_fraud(accounts: int, days: int, seed: int, out: Path) -> None:
    """A mobile-money/bank transfer world with planted fraud and laundering patterns."""
    from offline.generate.fraud_world import generate_fraud_world

    _report(generate_fraud_world(out, accounts=accounts, days=days, seed=seed), out)


@generate.command("donors")
@click.option("--donors", default=5_000, show_default=True, help="Number of donors.")
@_SEED
@_OUT
def generate_donors(donors: int, seed: int, out: Path) -> None:
    """A charity's donors: profiles, gift histories, a relationship network, five targets."""
    from offline.generate.donor_world import generate_donor_world

    _report(generate_donor_world(out, donors=donors, seed=seed), out)


DONOR_SOURCES = ("gifts", "donor-profiles", "donor-relationships")


@click.command("import")
@click.argument("source", type=click.Choice(["transactions", "gifts", "donor-profiles", "donor-relationships", "amlsim",
                                             "bitcoin-otc", "cdnow", "paysim", "pva97nk"]))
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write the world into (created if missing; an existing world there is replaced). "
                   "donor-profiles and donor-relationships add to the donor world there instead.")
@click.option("--map", "mapping", multiple=True, metavar="YOUR_COLUMN=FIELD",
              help="your own files: read a column under another name (repeatable), e.g. --map amt=amount.")
@click.option("--label-column", default="is_fraud", show_default=True,
              help="transactions: the column with the fraud label (1/0, true/false); absent: an unlabelled world.")
@click.option("--max-rejects", default=0, show_default=True, type=click.IntRange(min=0),
              help="your own files: how many invalid rows may be left out (listed in the rejects file) before "
                   "the import fails.")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="transactions: where the rejected rows are listed (default: OUT/rejects.csv).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet"]), default=None,
              help="your own files: their format (default: Parquet by its first bytes, JSON Lines by a "
                   ".jsonl/.ndjson/.json name, else CSV).")
@click.option("--labels", "labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="transactions: fraud labels in a file of their own (event_id and the --label-column, one row per "
                   "labelled transaction); a transaction it does not list is not fraud.")
@click.option("--profiles", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="gifts: a file of donor profiles (DonorProfile fields) to import with them.")
@click.option("--relationships", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="gifts: a file of donor relationships (DonorRelationship fields) to import with them.")
@click.option("--targets", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="gifts: the segment targets, one row per donor: donor_id and any of high_engagement, "
                   "network_influence, giving_consistency, high_value, recent_engagement (true/false). "
                   "Default: three derived from the gifts after --cutoff.")
@click.option("--cutoff", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="gifts: features use events before this date; derived targets describe [cutoff, horizon). "
                   "Default: halfway through the gifts' months.")
@click.option("--horizon", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="gifts: end of the target window (default: the month after the last gift).")
def import_data(source: str, path: Path, out: Path, mapping: tuple[str, ...], label_column: str, max_rejects: int,
                rejects: Path | None, fmt: str | None, labels: Path | None, profiles: Path | None,
                relationships: Path | None,
                targets: Path | None, cutoff: datetime | None, horizon: datetime | None) -> None:
    """Convert your own data, or a public data set, into a world.

    \b
    Your own transactions, in the contract's own schema:
      transactions a CSV (plain or .gz), JSON Lines (plain or .gz) or Parquet file with
                   the TransactionEvent fields as columns: event_time (ISO 8601, or epoch
                   s/ms/us), source_account, destination_account, amount, type (payment,
                   transfer, cash_out, cash_in, debit) and optionally event_id, currency,
                   channel and the four balances; plus a label column (is_fraud). Rows
                   that fail validation are listed with line, field and reason in the
                   rejects file; the import fails past --max-rejects. Any size: bounded memory.
    \b
    Your own donors, in the contracts' own schemas:
      gifts        the gifts file (GiftEvent fields: event_time, donor_id, amount and
                   optionally event_id, currency, channel, campaign, is_recurring,
                   referrer_donor_id), with --profiles and --relationships files of
                   DonorProfile and DonorRelationship fields, and --targets (segment
                   labels per donor) or targets derived from the gifts after --cutoff.
                   Formats, --map, --max-rejects and rejects files as for transactions.
      donor-profiles, donor-relationships
                   a DonorProfile or DonorRelationship file added to (or replacing that
                   stream of) the donor world at --out, which `import gifts` made: the
                   other streams and the targets stay. Formats, --map and --max-rejects
                   as above; rejects in OUT/rejects-<stream>.csv.
    \b
    Public data sets (or your own file of the same shape):
      paysim       PaySim CSV (step,type,amount,nameOrig,...,isFraud,isFlaggedFraud), plain or .gz
      amlsim       IBM AMLSim sample: a .tgz or a folder with nodes.csv and transactions.csv
      bitcoin-otc  Bitcoin OTC signed ratings: SOURCE,TARGET,RATING,TIME (no header), plain or .gz
      cdnow        CDNOW purchases: customer_id date number_of_cds dollar_value (whitespace separated)
      pva97nk      pva97nk donor table (KDD Cup 98 derived), CSV with TargetB,ID,TargetD,GiftCnt36,...
    """
    if (profiles or relationships or targets or cutoff or horizon) and source != "gifts":
        raise click.UsageError("--profiles, --relationships, --targets, --cutoff and --horizon are for "
                               "`tributary import gifts`")
    if labels is not None and source != "transactions":
        raise click.UsageError("--labels is for `tributary import transactions`; donors take --targets")
    if source == "transactions":
        from offline.importers.contract_schema import import_transactions, parse_mapping

        manifest = import_transactions(path, out, mapping=parse_mapping(mapping, ["transactions"], label_column),
                                       label_column=label_column, max_rejects=max_rejects, rejects=rejects,
                                       fmt=fmt, labels=labels)  # type: ignore[arg-type]
        _report(manifest, out)
        if manifest.parameters["labels_unmatched"]:
            click.echo(f"{manifest.parameters['labels_unmatched']:,} labels name no imported transaction "
                       "(see world.json notes)")
        rejected = manifest.parameters["rows_rejected"]
        if rejected:
            click.echo(f"{rejected:,} rows rejected, listed in {rejects or out / 'rejects.csv'}")
        return
    if source in DONOR_SOURCES and (rejects or label_column != "is_fraud"):
        raise click.UsageError("--rejects and --label-column are for `tributary import transactions`; donor "
                               "files write rejects-<stream>.csv in --out, and labels come from --targets")
    if source == "gifts":
        from offline.importers.contract_schema import parse_mapping
        from offline.importers.donor_contract import import_donors

        streams = ["gifts"] + (["donor_profiles"] if profiles else []) + (["donor_relationships"] if relationships else [])
        manifest = import_donors(path, out, profiles=profiles, relationships=relationships, targets=targets,
                                 cutoff=_utc(cutoff), horizon=_utc(horizon),
                                 mapping=parse_mapping(mapping, streams, label_column), max_rejects=max_rejects,
                                 fmt=fmt)  # type: ignore[arg-type]
        _report(manifest, out)
        _report_donor_rejects(manifest.parameters["rows_rejected"], out)
        return
    if source in DONOR_SOURCES:  # donor-profiles, donor-relationships: one stream into a donor world
        from offline.importers.contract_schema import parse_mapping
        from offline.importers.donor_contract import add_donor_stream

        stream = source.replace("-", "_")
        manifest, warnings = add_donor_stream(stream, path, out, mapping=parse_mapping(mapping, [stream], label_column),
                                              max_rejects=max_rejects, fmt=fmt)  # type: ignore[arg-type]
        _report(manifest, out)
        _report_donor_rejects({stream: manifest.parameters["rows_rejected"][stream]}, out)
        for warning in warnings:
            click.echo(warning)
        return
    if mapping or rejects or fmt or max_rejects or label_column != "is_fraud":
        raise click.UsageError("--map, --label-column, --max-rejects, --rejects and --format are for "
                               "`tributary import transactions` and `gifts`; the public shapes have their own columns")
    from offline.importers import run_importer

    _report(run_importer(source, path, out), out)


def _report_donor_rejects(rejected: dict[str, int], out: Path) -> None:
    for stream, count in rejected.items():
        if count:
            click.echo(f"{count:,} {stream} rows rejected, listed in {out / f'rejects-{stream}.csv'}")


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=timezone.utc) if moment is not None else None


def _threads(threads: int | None) -> None:
    """Set torch's CPU threads explicitly: the default oversubscribes small machines."""
    import os

    import torch

    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2)))


@click.group()
def train() -> None:
    """Train models on a world; writes artifacts, checkpoints and an evaluation report."""


_PROFILE = click.option(
    "--profile", type=click.Choice(["quick", "full"]), default="quick", show_default=True,
    help="quick: small widths, few epochs, CPU in minutes. full: design widths, GPU when present.",
)
_THREADS = click.option("--threads", type=int, default=None, help="CPU threads for torch (default: all cores).")
_PARTITIONS = click.option(
    "--partitions", type=click.IntRange(min=1), default=DEFAULT_PARTITIONS, show_default=True,
    help="Input partitions of the worker that will serve the model (TRIBUTARY_PARTITIONS): features and metrics are "
         "those it serves (transactions: every worker merges all partitions into one graph; donors: each partition "
         "keeps its own state).",
)


@train.command("fraud")
@click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A fraud world (tributary generate fraud / tributary import ...).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: artifacts/, checkpoints/, report/, predictions.parquet.")
@_PROFILE
@click.option("--model", "models", multiple=True,
              help="Train only these (repeatable), e.g. --model fusion-gated --model lightgbm.")
@_PARTITIONS
@_THREADS
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of weight initialisation, batch order, negative subsampling and LightGBM's sampling.")
def train_fraud_command(data: Path, out: Path, profile: str, models: tuple[str, ...], partitions: int,
                        threads: int | None, seed: int) -> None:
    """Graph, sequence, tabular and fused fraud models, LightGBM and a river baseline."""
    from offline.train.fraud import train_fraud

    _threads(threads)
    report = train_fraud(data, out, profile=profile, models=list(models) or None, partitions=partitions, seed=seed)
    _print_fraud_table(report)


@train.command("donors")
@click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A donor world (tributary generate donors / tributary import cdnow|pva97nk ...).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: artifacts/, checkpoints/, report/.")
@_PROFILE
@click.option("--model", "models", multiple=True,
              help="Train only these (repeatable), e.g. --model multitarget --model lightgbm --model hybrid (all three "
                   "servable; the best on validation is served by default; hybrid blends the other two).")
@_PARTITIONS
@_THREADS
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of weight initialisation, batch order and LightGBM's sampling.")
def train_donors_command(data: Path, out: Path, profile: str, models: tuple[str, ...], partitions: int,
                         threads: int | None, seed: int) -> None:
    """The multi-target donor-segment model and its baselines."""
    from offline.train.donors import train_donors

    _threads(threads)
    report = train_donors(data, out, profile=profile, models=list(models) or None, partitions=partitions, seed=seed)
    _print_donor_table(report)


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An artifact version, a model directory, or a `tributary train` output directory.")
@click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the report (default: <model>/evaluation-<world directory name>).")
@click.option("--split", type=click.Choice(["test", "all"]), default="test", show_default=True,
              help="test: the world's last 20% by time, as in training. all: every event.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@click.option("--alert-policy", default=None, metavar="POLICY",
              help="Fraud: also report what this alert policy gives (alerts_per_day=N, top_fraction=Q, threshold=X), "
                   "as TRIBUTARY_ALERT_POLICY would serve it.")
@_PARTITIONS
@_THREADS
def evaluate(model_dir: Path, data: Path, out: Path | None, split: str, as_json: bool, alert_policy: str | None,
             partitions: int, threads: int | None) -> None:
    """Score a world with saved models and report their metrics, and alerts per day against
    precision and recall (alerts_per_day.png)."""
    from models import strict_json
    from models.alert_policy import AlertPolicy
    from offline.evaluate import evaluate as evaluate_models

    policy = AlertPolicy.parse(alert_policy) if alert_policy is not None else None
    _threads(threads)
    out = out or model_dir / f"evaluation-{data.name}"
    report = evaluate_models(model_dir, data, out, split=split, progress=not as_json, policy=policy,
                             partitions=partitions)
    if as_json:
        click.echo(strict_json.dumps(report))
    elif report["task"] == "donors":
        _print_donor_table(report)
    else:
        _print_fraud_table(report)
        _print_policy(report.get("alert_budget") or {})
    if not as_json:
        click.echo(f"report: {out}")


@click.command("install-model")
@click.argument("version_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model-dir", envvar="TRIBUTARY_MODEL_DIR", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The worker's model directory (env TRIBUTARY_MODEL_DIR).")
def install_model(version_dir: Path, model_dir: Path) -> None:
    """Roll out a trained model version (e.g. OUT/artifacts/fusion-gated/<version>).

    Copies it into the served model directory under a hidden name, then renames it, so
    a running worker swaps to it whole at its next reload check. Rolling back: move the
    newer version directory out of the model directory.
    """
    from models.artifacts import install_artifact, served_root

    installed = install_artifact(version_dir, served_root(model_dir))
    click.echo(f"installed {installed}; workers serving {model_dir} switch to it within their reload interval")


def _print_fraud_table(report: dict) -> None:
    click.echo(f"{'model':<24}{'PR-AUC':>8}{'ROC-AUC':>9}{'F1':>8}{'prec':>8}{'recall':>8}{'R@1%FPR':>9}")
    for name, m in sorted(report["models"].items(), key=lambda kv: -(kv[1]["pr_auc"] or 0)):
        click.echo(f"{name:<24}{m['pr_auc']:>8.4f}{m['roc_auc']:>9.4f}{m['f1']:>8.4f}{m['precision']:>8.4f}"
                   f"{m['recall']:>8.4f}{m['recall_at_1pct_fpr']:>9.4f}")


def _print_donor_table(report: dict) -> None:
    targets = list(dict.fromkeys(t for m in report["models"].values() for t in m["targets"]))
    click.echo(f"{'model':<28}{'mean F1':>8}" + "".join(f"{t[:18]:>20}" for t in targets))
    for name, m in sorted(report["models"].items(), key=lambda kv: -(kv[1]["mean_f1"] or 0)):
        cells = "".join(f"{m['targets'][t]['f1']:>20.4f}" if t in m["targets"] else f"{'-':>20}" for t in targets)
        click.echo(f"{name:<28}{m['mean_f1']:>8.4f}{cells}")


def _print_policy(budget: dict) -> None:
    if not budget.get("at_policy"):
        return
    click.echo(f"\nalert policy {budget['policy']} over {budget['days']:.1f} days:")
    for name, point in budget["at_policy"].items():
        if "error" in point:
            click.echo(f"  {name:<24}{point['error']}")
            continue
        precision = "-" if point["precision"] is None else f"{point['precision']:.4f}"
        recall = "-" if point["recall"] is None else f"{point['recall']:.4f}"
        if "threshold_range" in point:  # a budget moves its threshold as the worker does
            low, high = point["threshold_range"] or (float("nan"), float("nan"))
            threshold = f"threshold {low:.4f}..{high:.4f}"
        else:
            threshold = f"threshold {point['threshold']:.4f}"
        click.echo(f"  {name:<24}{threshold}  {point['alerts_per_day']:,.1f} alerts/day  "
                   f"precision {precision}  recall {recall}")
