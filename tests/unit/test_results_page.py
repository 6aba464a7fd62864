"""The results page's tables come from the runs, and only its generated block changes."""

from __future__ import annotations

import json

import pytest

from tributary.results_page import BEGIN, END, ResultsPageError, write_page


def fake_run(root, scores):
    for seed, (a, b) in enumerate(scores):
        report = {"dataset": "Some set", "split": "by time", "notes": ["SYNTHETIC data"],
                  "models": {"a": {"pr_auc": a}, "b": {"pr_auc": b}},
                  "served": {"model": "a", "validation_pr_auc": {"a": 0.9, "b": 0.8}}}
        (root / f"seed-{seed}" / "report").mkdir(parents=True)
        (root / f"seed-{seed}" / "report" / "report.json").write_text(json.dumps(report))
    return root


def test_the_block_is_rewritten_from_the_reports_and_the_rest_is_kept(tmp_path):
    run = fake_run(tmp_path / "run", [(0.8, 0.7), (0.82, 0.72)])
    page = tmp_path / "page.md"
    page.write_text(f"# Results\n\nintro\n\n{BEGIN}\nold table\n{END}\n\nwhat it means\n")
    write_page(page, [run])
    text = page.read_text()
    assert text.startswith("# Results\n\nintro\n\n") and text.endswith(f"{END}\n\nwhat it means\n")
    assert "old table" not in text and "**Some set** (SYNTHETIC). Split: by time." in text
    assert "| **served** (a, a) | 0.8100 ± 0.0100 |" in text
    write_page(page, [run])
    assert page.read_text() == text  # the same runs give the same page


def test_the_heading_names_the_partition_count_the_runs_were_measured_at(tmp_path):
    run = fake_run(tmp_path / "run", [(0.8, 0.7), (0.82, 0.72)])
    for path in run.glob("seed-*/report/report.json"):
        report = json.loads(path.read_text())
        report["served"]["trained_on"] = {"world": "w", "partitions": 4}
        path.write_text(json.dumps(report))
    page = tmp_path / "page.md"
    page.write_text(f"{BEGIN}\n{END}\n")
    write_page(page, [run])
    assert "Split: by time. Features and metrics of a worker with 4 input partitions." in page.read_text()


def test_a_page_without_the_block_is_refused(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Results\n")
    with pytest.raises(ResultsPageError, match="no generated block"):
        write_page(page, [fake_run(tmp_path / "run", [(0.8, 0.7)])])
