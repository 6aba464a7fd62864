"""What the partition count does to the served model: test figures by P, over seeds.

    python -m tributary.compare_partitions --data WORLD --out DIR [--task donors|fraud]
        [--partitions 1,4,16] [--seeds 0,1,2] [--model NAME ...] [--profile quick]

For each partition count P, trains as `tributary train ... --partitions P --seed S` does
(into DIR/p<P>/seed-<S>, with `tributary.compare_seeds`; a finished run is read back),
so features, metrics and the served choice are those of a worker with P input
partitions. Prints one table, a column per P: for donors each target's test F1 and
PR-AUC of the served model (mean ± std over the seeds), for fraud each model's test
PR-AUC and the served one's. Also written to DIR/partitions.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models import strict_json
from tributary.compare_seeds import mean_std, run_seeds, summarise


def served_targets(reports: list[dict]) -> dict[str, dict[str, list[float]]]:
    """target -> {"f1": [per seed], "pr_auc": [per seed]} of the model each seed served,
    with "mean" the mean over the targets."""
    out: dict[str, dict[str, list[float]]] = {}
    for report in reports:
        targets = report["models"][report["served"]["model"]]["targets"]
        for name, metrics in targets.items():
            row = out.setdefault(name, {"f1": [], "pr_auc": []})
            row["f1"].append(metrics["f1"])
            row["pr_auc"].append(metrics["pr_auc"])
        mean = out.setdefault("mean", {"f1": [], "pr_auc": []})
        mean["f1"].append(float(np.nanmean([m["f1"] for m in targets.values()])))
        mean["pr_auc"].append(float(np.nanmean([m["pr_auc"] for m in targets.values()])))
    out["mean"] = out.pop("mean")  # last row
    return out


def donor_table(by_p: dict[int, list[dict]]) -> list[str]:
    """One row per target, a column per P: the served model's test F1 / PR-AUC."""
    targets = {p: served_targets(reports) for p, reports in by_p.items()}
    served = {p: ", ".join(r["served"]["model"] for r in reports) for p, reports in by_p.items()}
    lines = ["| target: test F1 / PR-AUC of the served model | " + " | ".join(f"P={p}" for p in by_p) + " |",
             "|---|" + "---|" * len(by_p)]
    for name in next(iter(targets.values())):
        cells = [f"{mean_std(t[name]['f1'])} / {mean_std(t[name]['pr_auc'])}" for t in targets.values()]
        lines.append(f"| {'**mean over targets**' if name == 'mean' else name} | " + " | ".join(cells) + " |")
    lines.append("| served (per seed) | " + " | ".join(served.values()) + " |")
    return lines


def fraud_table(by_p: dict[int, list[dict]]) -> list[str]:
    """One row per model and the served one, a column per P: test PR-AUC."""
    rows = {p: summarise(reports) for p, reports in by_p.items()}
    names = sorted({n for r in rows.values() for n in r if n != "served"}) + ["served"]
    lines = ["| model: test PR-AUC | " + " | ".join(f"P={p}" for p in by_p) + " |", "|---|" + "---|" * len(by_p)]
    for name in names:
        cells = [mean_std(r[name]["test"]) if name in r else "-" for r in rows.values()]
        lines.append(f"| {'**served**' if name == 'served' else name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--partitions", default="1,4,16")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--task", choices=["fraud", "donors"], default="donors")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    by_p = {p: run_seeds(args.data, args.out / f"p{p}", seeds, p, args.models, args.profile, args.task)
            for p in (int(s) for s in args.partitions.split(","))}
    donors = args.task == "donors"
    lines = donor_table(by_p) if donors else fraud_table(by_p)
    figures = {p: served_targets(reports) if donors else summarise(reports) for p, reports in by_p.items()}
    (args.out / "partitions.json").write_text(strict_json.dumps({"seeds": seeds, "by_partitions": figures}) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
