"""`tributary generate ...` and `tributary import ...`: make data worlds.

Imports of the heavy modules happen inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

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


@click.command("import")
@click.argument("source", type=click.Choice(["amlsim", "bitcoin-otc", "cdnow", "paysim", "pva97nk"]))
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@_OUT
def import_data(source: str, path: Path, out: Path) -> None:
    """Convert a real data set (or your own file of the same shape) into a world.

    \b
    Expected input per SOURCE:
      paysim       PaySim CSV (step,type,amount,nameOrig,...,isFraud,isFlaggedFraud), plain or .gz
      amlsim       IBM AMLSim sample: a .tgz or a folder with nodes.csv and transactions.csv
      bitcoin-otc  Bitcoin OTC signed ratings: SOURCE,TARGET,RATING,TIME (no header), plain or .gz
      cdnow        CDNOW purchases: customer_id date number_of_cds dollar_value (whitespace separated)
      pva97nk      pva97nk donor table (KDD Cup 98 derived), CSV with TargetB,ID,TargetD,GiftCnt36,...
    """
    from offline.importers import run_importer

    _report(run_importer(source, path, out), out)
