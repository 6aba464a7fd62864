"""`tributary import transactions`: a file in the contract's own schema becomes the same world.

A generated world is written out as CSV, gzipped JSON Lines and Parquet, and each file
imports back to the same events and labels; bad rows go to a rejects file with their
line, field and reason; renamed columns are mapped; a file out of time order comes out
in order, through more than one sorted run.
"""

from __future__ import annotations

import csv
import gzip
import json
import random

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from models.worlds import open_world
from offline.generate.fraud_world import generate_fraud_world
from offline.importers import contract_schema
from tributary.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    generate_fraud_world(out, accounts=800, days=7, seed=11, progress=False)
    return open_world(out)


@pytest.fixture(scope="module")
def rows(world) -> pa.Table:
    """The world's transactions with their is_fraud label, as a user's export would have them."""
    events = pq.read_table(world.events_path("transactions"))
    labels = pq.read_table(world.root / "labels" / "transactions.parquet").select(["event_id", "is_fraud"])
    return events.join(labels, "event_id").sort_by([("event_time", "ascending"), ("event_id", "ascending")])


def imported(path, out, *extra) -> tuple[pa.Table, pa.Table]:
    result = CliRunner().invoke(main, ["import", "transactions", str(path), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    world = open_world(out)
    return pq.read_table(world.events_path("transactions")), pq.read_table(out / "labels" / "transactions.parquet")


def assert_same_world(rows: pa.Table, events: pa.Table, labels: pa.Table) -> None:
    expected = rows.drop_columns(["is_fraud"])
    assert events.sort_by("event_id").equals(expected.sort_by("event_id").cast(events.schema))
    times = events.column("event_time").cast(pa.int64()).to_numpy()
    assert (times[1:] >= times[:-1]).all(), "a world is in event-time order"
    fraud = dict(zip(labels.column("event_id").to_pylist(), labels.column("is_fraud").to_pylist()))
    assert fraud == dict(zip(rows.column("event_id").to_pylist(), rows.column("is_fraud").to_pylist()))
    assert any(fraud.values()) and not all(fraud.values())


def test_csv_jsonl_gz_and_parquet_import_to_the_same_world(tmp_path, rows):
    pacsv.write_csv(rows, tmp_path / "tx.csv")
    with gzip.open(tmp_path / "tx.jsonl.gz", "wt") as handle:
        for row in rows.to_pylist():
            handle.write(json.dumps({**row, "event_time": row["event_time"].isoformat()}) + "\n")
    pq.write_table(rows, tmp_path / "tx.parquet")
    for name in ("tx.csv", "tx.jsonl.gz", "tx.parquet"):
        assert_same_world(rows, *imported(tmp_path / name, tmp_path / f"world-{name}"))


def test_bad_rows_go_to_the_rejects_file_with_line_field_and_reason(tmp_path, rows):
    pacsv.write_csv(rows, tmp_path / "good.csv")
    lines = (tmp_path / "good.csv").read_text().splitlines()
    header = next(csv.reader([lines[0]]))
    bad_lines = sorted(random.Random(5).sample(range(2, len(lines) + 1), k=max(3, len(lines) // 100)))
    breakers = [("amount", "-5"), ("amount", "lots"), ("event_time", "yesterday"), ("type", "teleport"),
                ("destination_account", "")]
    expected = {}
    for i, line in enumerate(bad_lines):
        field, value = breakers[i % len(breakers)]
        values = next(csv.reader([lines[line - 1]]))
        values[header.index(field)] = value
        lines[line - 1] = ",".join(f'"{v}"' for v in values)
        expected[line] = field
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")

    strict = CliRunner().invoke(main, ["import", "transactions", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "w1")])
    assert strict.exit_code == 1 and "Traceback" not in strict.output
    assert f"line {bad_lines[0]}: {expected[bad_lines[0]]}" in strict.output and "--max-rejects" in strict.output

    events, _ = imported(tmp_path / "bad.csv", tmp_path / "w2", "--max-rejects", str(len(bad_lines)))
    assert events.num_rows == rows.num_rows - len(bad_lines)
    with (tmp_path / "w2" / "rejects.csv").open() as handle:
        listed = {int(r["line"]): r["field"] for r in csv.DictReader(handle)}
    assert listed == expected


def test_other_column_names_are_mapped(tmp_path, rows):
    renamed = rows.rename_columns([{"source_account": "from", "destination_account": "to", "amount": "amt",
                                    "is_fraud": "sar"}.get(n, n) for n in rows.column_names])
    pacsv.write_csv(renamed, tmp_path / "renamed.csv")
    assert_same_world(rows, *imported(tmp_path / "renamed.csv", tmp_path / "w", "--map", "from=source_account",
                                      "--map", "to=destination_account", "--map", "amt=amount",
                                      "--label-column", "sar"))


def test_a_file_out_of_time_order_comes_out_in_order_through_several_runs(tmp_path, rows, monkeypatch):
    monkeypatch.setattr(contract_schema, "RUN_ROWS", 397)  # many runs, overlapping in time
    shuffled = rows.take(random.Random(3).sample(range(rows.num_rows), rows.num_rows))
    pq.write_table(shuffled, tmp_path / "shuffled.parquet")
    assert_same_world(rows, *imported(tmp_path / "shuffled.parquet", tmp_path / "w"))


def test_a_mapping_to_no_field_is_one_line_naming_the_fields(tmp_path, rows):
    pacsv.write_csv(rows, tmp_path / "tx.csv")
    result = CliRunner().invoke(main, ["import", "transactions", str(tmp_path / "tx.csv"), "--out", str(tmp_path / "w"),
                                       "--map", "amt=amount_usd"])
    assert result.exit_code == 1 and "'amount_usd' is not a transactions field" in result.output


def test_labels_from_a_file_of_their_own(tmp_path, rows):
    pacsv.write_csv(rows.drop_columns(["is_fraud"]), tmp_path / "tx.csv")
    fraud = [e for e, f in zip(rows.column("event_id").to_pylist(), rows.column("is_fraud").to_pylist()) if f]
    with (tmp_path / "cases.csv").open("w", newline="") as handle:  # a case system lists the fraud it confirmed
        writer = csv.writer(handle)
        writer.writerow(["event_id", "is_fraud"])
        writer.writerows([[e, 1] for e in fraud] + [["no-such-transaction", 1]])
    result = CliRunner().invoke(main, ["import", "transactions", str(tmp_path / "tx.csv"), "--labels",
                                       str(tmp_path / "cases.csv"), "--out", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "1 labels name no imported transaction" in result.output
    world = open_world(tmp_path / "w")
    events = pq.read_table(world.events_path("transactions"))
    assert_same_world(rows, events, pq.read_table(tmp_path / "w" / "labels" / "transactions.parquet"))
    assert world.manifest.parameters["labels_unmatched"] == 1


@pytest.mark.parametrize("labels, words", [
    ("event_id\ntx1\n", "a label file has the columns event_id and is_fraud"),
    ("event_id,is_fraud\n,1\n", "a label file has the columns event_id and is_fraud"),
    ("event_id,is_fraud\ntx1,perhaps\n", "is_fraud: 'perhaps' is not true/false"),
])
def test_a_bad_label_file_is_refused_in_one_line(tmp_path, rows, labels, words):
    pacsv.write_csv(rows.drop_columns(["is_fraud"]), tmp_path / "tx.csv")
    (tmp_path / "cases.csv").write_text(labels)
    result = CliRunner().invoke(main, ["import", "transactions", str(tmp_path / "tx.csv"), "--labels",
                                       str(tmp_path / "cases.csv"), "--out", str(tmp_path / "w")])
    assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "w" / "world.json").exists()
