"""`tributary bench-model` on the CPU with tiny sizes: the fields are there (timings are not asserted)."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from tributary.bench_model import time_batches
from tributary.cli import main

ROW_FIELDS = {"model", "device", "batch", "repeats", "p50_ms", "p99_ms", "mean_ms", "events_per_s", "max_abs_diff_vs_cpu"}


def test_bench_model_json_has_every_field_and_skips_cuda_where_there_is_none():
    result = CliRunner().invoke(main, [
        "bench-model", "--json", "--device", "cpu", "--device", "cuda", "--batch-sizes", "1,4", "--repeats", "2",
        "--warmup", "1", "--threads", "1", "--accounts", "300", "--days", "3", "--donors", "300",
    ])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"environment", "models", "rows", "notes"}
    assert {"torch", "cuda_available", "torch_threads"} <= set(out["environment"])
    assert set(out["models"]) == {"fraud", "donors"}
    for info in out["models"].values():
        assert info["parameters"] > 0 and info["rows_featurised"] > 0 and info["trained"] is False
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    assert [(r["model"], r["device"], r["batch"]) for r in out["rows"]] == [
        (m, d, b) for m in ("fraud", "donors") for d in devices for b in (1, 4)
    ]
    for row in out["rows"]:
        assert set(row) == ROW_FIELDS
        assert row["repeats"] == 2 and row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"] and row["events_per_s"] > 0
        assert (row["max_abs_diff_vs_cpu"] is None) == (row["device"] == "cpu")
    if not torch.cuda.is_available():
        assert any("CUDA rows skipped" in note for note in out["notes"])


def test_bench_model_table():
    result = CliRunner().invoke(main, [
        "bench-model", "--model", "fraud", "--device", "cpu", "--batch-sizes", "2", "--repeats", "1", "--warmup", "0",
        "--threads", "1", "--accounts", "200", "--days", "2",
    ])
    assert result.exit_code == 0, result.output
    assert "p50 ms" in result.stdout and "events/s" in result.stdout and "fraud   cpu" in result.stdout


def test_time_batches_compares_each_timed_batch_with_the_reference():
    inputs = {"x": np.arange(10, dtype=np.float32)[:, None]}

    def score(batch):
        return batch["x"][:, 0] * 2

    seconds, diff = time_batches(score, inputs, torch.device("cpu"), batch=4, repeats=5, warmup=2,
                                 reference=np.arange(10, dtype=np.float32) * 2)
    assert seconds.shape == (5,) and diff == 0.0
    _, diff = time_batches(score, inputs, torch.device("cpu"), batch=4, repeats=5, warmup=2,
                           reference=np.zeros(10, dtype=np.float32))
    assert diff == 18.0  # row 9 (scored 18) is among the timed rows
    assert time_batches(score, inputs, torch.device("cpu"), 3, 1, 0, None)[1] is None
