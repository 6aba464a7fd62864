"""Fraud models over several training seeds: test PR-AUC as mean ± std, and what is served.

    python -m tributary.compare_seeds --data WORLD --out DIR [--seeds 0,1,2] [--partitions 4]
        [--model NAME ...] [--profile quick]

Trains every chosen model once per seed (`tributary train fraud --seed S` into DIR/seed-S;
a finished seed is read back, not trained again), then prints one table: each model's
validation and test PR-AUC over the seeds, and the row that matters to a user, "served":
for each seed, the test PR-AUC of the model that training chose on validation, the one a
worker serves by default. The test period chooses nothing. Also written to DIR/summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from models import strict_json
from models.features.partitioning import DEFAULT_PARTITIONS


def run_seeds(data: Path, out: Path, seeds: list[int], partitions: int, models: list[str] | None,
              profile: str) -> list[dict]:
    from offline.train.fraud import train_fraud

    reports = []
    for seed in seeds:
        run = out / f"seed-{seed}"
        done = run / "report" / "report.json"
        if done.exists() and json.loads(done.read_text()).get("training_seed") == seed:
            print(f"seed {seed}: read back from {done}", file=sys.stderr)
            reports.append(json.loads(done.read_text()))
            continue
        print(f"seed {seed}: training into {run}", file=sys.stderr)
        reports.append(train_fraud(data, run, profile=profile, models=models, partitions=partitions, seed=seed))
    return reports


def summarise(reports: list[dict]) -> dict:
    """model -> {test: [per seed], validation: [per seed]}; "served" -> the chosen model's."""
    rows: dict[str, dict[str, list]] = {}
    for report in reports:
        validation = report.get("served", {}).get("validation_pr_auc", {})
        for name, metrics in report["models"].items():
            row = rows.setdefault(name, {"test": [], "validation": []})
            row["test"].append(metrics["pr_auc"])
            row["validation"].append(validation.get(name, float("nan")))
        if "served" in report:
            served = rows.setdefault("served", {"test": [], "validation": [], "models": []})
            name = report["served"]["model"]
            served["test"].append(report["models"][name]["pr_auc"])
            served["validation"].append(validation[name])
            served["models"].append(name)
    return rows


def mean_std(values: list[float]) -> str:
    array = np.array(values, dtype=np.float64)
    if np.isnan(array).all():
        return "-"
    return f"{np.nanmean(array):.4f} ± {np.nanstd(array):.4f}"


def print_table(rows: dict, seeds: list[int]) -> None:
    print(f"| model | test PR-AUC (mean ± std over seeds {', '.join(map(str, seeds))}) | validation PR-AUC | per seed (test) |")
    print("|---|---|---|---|")
    ordered = sorted((n for n in rows if n != "served"), key=lambda n: -np.nanmean(rows[n]["test"]))
    for name in ordered + (["served"] if "served" in rows else []):
        row = rows[name]
        label = f"**served** ({', '.join(row['models'])})" if name == "served" else name
        print(f"| {label} | {mean_std(row['test'])} | {mean_std(row['validation'])} | "
              f"{' / '.join(f'{v:.4f}' for v in row['test'])} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    reports = run_seeds(args.data, args.out, seeds, args.partitions, args.models, args.profile)
    rows = summarise(reports)
    (args.out / "summary.json").write_text(strict_json.dumps({"seeds": seeds, "partitions": args.partitions,
                                                              "rows": rows}) + "\n")
    print_table(rows, seeds)


if __name__ == "__main__":
    main()
