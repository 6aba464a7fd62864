"""Models over several training seeds: test figures as mean ± std, and what is served.

    python -m tributary.compare_seeds --data WORLD --out DIR [--task fraud|donors] [--seeds 0,1,2]
        [--partitions 4] [--model NAME ...] [--profile quick]

Trains every chosen model once per seed (`tributary train fraud|donors --seed S` into
DIR/seed-S; a finished seed is read back, not trained again), then prints one table: each
model's test figure over the seeds (fraud: PR-AUC; donors: mean PR-AUC over the targets,
and mean F1), and the row that matters to a user, "served": for each seed, the figure of
the model training chose on validation, the one a worker serves by default. The test
period chooses nothing. Also written to DIR/summary.json.
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
              profile: str, task: str = "fraud") -> list[dict]:
    from offline.train.donors import train_donors
    from offline.train.fraud import train_fraud

    reports = []
    for seed in seeds:
        run = out / f"seed-{seed}"
        done = run / "report" / "report.json"
        if done.exists() and json.loads(done.read_text()).get("training_seed", seed) == seed:
            print(f"seed {seed}: read back from {done}", file=sys.stderr)
            reports.append(json.loads(done.read_text()))
            continue
        print(f"seed {seed}: training into {run}", file=sys.stderr)
        if task == "donors":
            reports.append(train_donors(data, run, profile=profile, models=models, partitions=partitions, seed=seed))
        else:
            reports.append(train_fraud(data, run, profile=profile, models=models, partitions=partitions, seed=seed))
    return reports


def test_figure(metrics: dict) -> float:
    """Fraud: the test PR-AUC; donors: the mean of the targets' test PR-AUC."""
    if "targets" in metrics:
        values = [m["pr_auc"] for m in metrics["targets"].values() if m["pr_auc"] == m["pr_auc"]]
        return float(np.mean(values)) if values else float("nan")
    return metrics["pr_auc"]


def summarise(reports: list[dict]) -> dict:
    """model -> {test: [per seed], validation: [per seed], mean_f1 (donors)}; "served" -> the chosen model's."""
    rows: dict[str, dict[str, list]] = {}
    for report in reports:
        validation = report.get("served", {}).get("validation_pr_auc", {})
        for name, metrics in report["models"].items():
            row = rows.setdefault(name, {"test": [], "validation": [], "mean_f1": []})
            row["test"].append(test_figure(metrics))
            row["validation"].append(validation.get(name, float("nan")))
            row["mean_f1"].append(metrics.get("mean_f1", float("nan")))
        if "served" in report:
            served = rows.setdefault("served", {"test": [], "validation": [], "mean_f1": [], "models": [],
                                                "churn_plain": [], "churn_kept": []})
            name = report["served"]["model"]
            served["test"].append(test_figure(report["models"][name]))
            served["validation"].append(validation[name])
            served["mean_f1"].append(report["models"][name].get("mean_f1", float("nan")))
            served["models"].append(name)
            plain, kept = churn(report.get("hysteresis", {}).get(name))
            served["churn_plain"].append(plain)
            served["churn_kept"].append(kept)
    return rows


def churn(hysteresis: dict | None) -> tuple[float, float]:
    """Donor segment changes per donor per month, summed over the targets, on validation:
    without a margin, and with the chosen ones (NaN: not measured)."""
    if not hysteresis:
        return float("nan"), float("nan")
    plain = kept = 0.0
    for target, rows in hysteresis["per_margin"].items():
        plain += rows[0]["churn_per_donor_month"]
        kept += next(r for r in rows if r["margin"] == hysteresis["margins"][target])["churn_per_donor_month"]
    return plain, kept


def mean_std(values: list[float]) -> str:
    array = np.array(values, dtype=np.float64)
    if np.isnan(array).all():
        return "-"
    return f"{np.nanmean(array):.4f} ± {np.nanstd(array):.4f}"


def table_lines(rows: dict, seeds: list[int]) -> list[str]:
    """The comparison as a Markdown table: models best first, then the served row."""
    donors = any(v == v for row in rows.values() for v in row["mean_f1"])
    figure = "mean PR-AUC over targets" if donors else "PR-AUC"
    lines = [f"| model | test {figure} (mean ± std over seeds {', '.join(map(str, seeds))}) | validation {figure} | "
             f"per seed (test) |" + (" test mean F1 |" if donors else ""),
             "|---|---|---|---|" + ("---|" if donors else "")]
    ordered = sorted((n for n in rows if n != "served"), key=lambda n: -np.nanmean(rows[n]["test"]))
    served = rows.get("served", {})
    measured = [v for v in served.get("churn_plain", []) if v == v]
    if measured:  # donors: how often segment memberships change, without and with the chosen margins
        lines[0] += " validation churn per donor-month: no margin → chosen |"
        lines[1] += "---|"
    for name in ordered + (["served"] if "served" in rows else []):
        row = rows[name]
        label = f"**served** ({', '.join(row['models'])})" if name == "served" else name
        line = (f"| {label} | {mean_std(row['test'])} | {mean_std(row['validation'])} | "
                f"{' / '.join(f'{v:.4f}' for v in row['test'])} |" + (f" {mean_std(row['mean_f1'])} |" if donors else ""))
        if measured:
            line += (f" {mean_std(row['churn_plain'])} → {mean_std(row['churn_kept'])} |" if name == "served" else " |")
        lines.append(line)
    return lines


def read_runs(out: Path) -> tuple[list[int], list[dict]]:
    """The seeds and reports of a finished comparison under `out` (DIR/seed-S/report/report.json)."""
    found = sorted((int(p.parent.parent.name.removeprefix("seed-")), p) for p in out.glob("seed-*/report/report.json"))
    return [seed for seed, _ in found], [json.loads(path.read_text()) for _, path in found]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--task", choices=["fraud", "donors"], default="fraud")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    reports = run_seeds(args.data, args.out, seeds, args.partitions, args.models, args.profile, args.task)
    rows = summarise(reports)
    (args.out / "summary.json").write_text(strict_json.dumps({"seeds": seeds, "partitions": args.partitions,
                                                              "rows": rows}) + "\n")
    print("\n".join(table_lines(rows, seeds)))


if __name__ == "__main__":
    main()
