"""Evaluation reports: report.json, a comparison table (Markdown and CSV) and plots.

Fraud report.json:
    {"dataset", "split", "task": "fraud", "notes": [...],
     "models": {"<name>": {"pr_auc", "roc_auc", "f1", "precision", "recall",
                           "recall_at_1pct_fpr", "threshold", ...}}}
Donor report.json:
    {"dataset", "split", "task": "donors", "notes": [...],
     "models": {"<name>": {"targets": {"<target>": {"f1", "pr_auc", "roc_auc", ...}}, "mean_f1"}}}
Plots (PNG): PR and ROC curves, confusion matrices, training curves, a comparison bar chart.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from models import strict_json  # noqa: E402
from models.strict_json import finite_or_none  # noqa: E402
from offline.evaluation.metrics import binary_metrics  # noqa: E402

FRAUD_COLUMNS = ("pr_auc", "roc_auc", "f1", "precision", "recall", "recall_at_1pct_fpr", "threshold")


@dataclass
class ScoredModel:
    """One model's held-out scores, with the threshold chosen on validation."""

    labels: np.ndarray
    scores: np.ndarray
    threshold: float
    history: list[dict] = field(default_factory=list)  # per epoch: {"epoch", "train_loss", "val_pr_auc", ...}

    def metrics(self) -> dict:
        return binary_metrics(self.labels, self.scores, self.threshold)


def write_fraud_report(
    out: Path, dataset: str, split: str, results: dict[str, ScoredModel], notes: list[str] | None = None
) -> dict:
    """Write report.json, comparison.{md,csv} and plots for fraud models; return the report."""
    out.mkdir(parents=True, exist_ok=True)
    models = {name: r.metrics() for name, r in results.items()}
    report = {"task": "fraud", "dataset": dataset, "split": split, "notes": notes or [], "models": models}
    write_report_json(out / "report.json", report)
    rows = [{"model": name, **{c: m[c] for c in FRAUD_COLUMNS}} for name, m in models.items()]
    rows.sort(key=lambda r: -_num(r["pr_auc"]))
    _write_table(out, rows, title=f"Fraud models on {dataset} ({split})", notes=notes)
    _curves(out / "pr_curves.png", results, kind="pr", title=f"Precision-recall, {dataset}")
    _curves(out / "roc_curves.png", results, kind="roc", title=f"ROC, {dataset}")
    _confusions(out / "confusion_matrices.png", {n: r.metrics() for n, r in results.items()})
    _bars(out / "comparison.png", {n: m["pr_auc"] for n, m in models.items()}, "PR-AUC (test)")
    _training_curves(out / "training_curves.png", {n: r.history for n, r in results.items() if r.history})
    return report


def write_donor_report(
    out: Path,
    dataset: str,
    split: str,
    results: dict[str, dict[str, ScoredModel]],
    notes: list[str] | None = None,
) -> dict:
    """results: model name -> target name -> scores. Targets a data set lacks are left out."""
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, targets in results.items():
        per_target = {t: r.metrics() for t, r in targets.items()}
        models[name] = {
            "targets": per_target,
            "mean_f1": round(float(np.mean([m["f1"] for m in per_target.values()])), 4) if per_target else float("nan"),
        }
    report = {"task": "donors", "dataset": dataset, "split": split, "notes": notes or [], "models": models}
    write_report_json(out / "report.json", report)
    rows = []
    for name, m in models.items():
        row = {"model": name, "mean_f1": m["mean_f1"]}
        for target, tm in m["targets"].items():
            row[f"{target}_f1"] = tm["f1"]
            row[f"{target}_pr_auc"] = tm["pr_auc"]
        rows.append(row)
    rows.sort(key=lambda r: -_num(r["mean_f1"]))
    _write_table(out, rows, title=f"Donor models on {dataset} ({split})", notes=notes)
    _bars(out / "comparison.png", {n: m["mean_f1"] for n, m in models.items()}, "mean F1 over targets (test)")
    for name, targets in results.items():
        safe = name.replace("/", "_")
        _curves(out / f"pr_curves_{safe}.png", targets, kind="pr", title=f"{name}: precision-recall per target")
        _confusions(out / f"confusion_matrices_{safe}.png", {t: r.metrics() for t, r in targets.items()})
        histories = {t: r.history for t, r in targets.items() if r.history}
        if histories:
            _training_curves(out / f"training_curves_{safe}.png", dict(list(histories.items())[:1]))
    return report


def _num(value) -> float:
    return -1.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def write_report_json(path: Path, report: dict) -> None:
    # NaN (a metric undefined on one class) is written as null: strict JSON readers choke on NaN.
    path.write_text(strict_json.dumps(report) + "\n")


def _write_table(out: Path, rows: list[dict], title: str, notes: list[str] | None) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (out / "comparison.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(finite_or_none(rows))
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _curves(path: Path, results: dict[str, ScoredModel], kind: str, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for name, r in results.items():
        labels = np.asarray(r.labels).astype(bool)
        if labels.all() or not labels.any():
            continue
        if kind == "pr":
            precision, recall, _ = precision_recall_curve(labels, r.scores)
            ax.plot(recall, precision, label=name, lw=1.3)
        else:
            fpr, tpr, _ = roc_curve(labels, r.scores)
            ax.plot(fpr, tpr, label=name, lw=1.3)
    if kind == "pr":
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    else:
        chance = np.linspace(0, 1, 500)  # many points: on a log axis the diagonal is a curve
        ax.plot(chance, chance, ls=":", c="grey", label="chance")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set(xlabel="false positive rate (log above 1%)", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left" if kind == "pr" else "lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _confusions(path: Path, metrics: dict[str, dict]) -> None:
    names = list(metrics)
    cols = min(4, len(names)) or 1
    rows = math.ceil(len(names) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        m = metrics[name]
        tn = m["events"] - m["tp"] - m["fp"] - m["fn"]
        grid = np.array([[tn, m["fp"]], [m["fn"], m["tp"]]])
        ax.axis("on")
        ax.imshow(np.log1p(grid), cmap="Blues")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, f"{v:,}", ha="center", va="center", fontsize=9)
        ax.set_xticks([0, 1], ["pred 0", "pred 1"])
        ax.set_yticks([0, 1], ["true 0", "true 1"])
        ax.set_title(f"{name}\nthreshold {m['threshold']:.3f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(path: Path, values: dict[str, float], label: str) -> None:
    items = sorted(((n, _num(v)) for n, v in values.items()), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2))
    ax.barh([n for n, _ in items], [max(v, 0) for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(max(v, 0), i, f" {v:.3f}" if v >= 0 else " n/a", va="center", fontsize=8)
    ax.set_xlabel(label)
    ax.set_xlim(0, 1.1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _training_curves(path: Path, histories: dict[str, list[dict]]) -> None:
    if not histories:
        return
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["train_loss"] for h in history], label=name, lw=1.2)
        metric_ax.plot(epochs, [h["val_pr_auc"] for h in history], label=name, lw=1.2)
    loss_ax.set(xlabel="epoch", ylabel="training loss (focal)")
    metric_ax.set(xlabel="epoch", ylabel="validation PR-AUC")
    metric_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
