"""`tributary import gifts`: donor files in the contracts' own schemas become the same donor world.

A generated donor world is written out as the three files a charity would export, plus
its segment targets, and imports back to the same events and targets, in one import or
with the profiles and relationships added later (`import donor-profiles|donor-relationships`). Without a targets
file, three segments are derived from the gifts; bad rows go to a rejects file per
stream with their line, field and reason.
"""

from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from models.worlds import EVENT_STREAMS, open_world
from offline.generate.donor_world import generate_donor_world
from offline.generate.fraud_world import generate_fraud_world
from offline.importers.both_ends import MIRROR_SUFFIX, mirror_event_id
from tributary.cli import main

STREAMS = ("gifts", "donor_profiles", "donor_relationships")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The generated world, and its streams and targets as a user's CSV export."""
    root = tmp_path_factory.mktemp("donors")
    generate_donor_world(root / "world", donors=300, seed=5, progress=False)
    world = open_world(root / "world")
    files = {}
    for stream in STREAMS:
        files[stream] = root / f"{stream}.csv"
        table = pq.read_table(world.events_path(stream))
        table = table.set_column(table.schema.get_field_index("event_time"), "event_time",
                                 pa.compute.strftime(table.column("event_time"), "%Y-%m-%dT%H:%M:%S.%fZ"))
        pacsv.write_csv(table, files[stream])
    files["targets"] = root / "targets.csv"
    pacsv.write_csv(pq.read_table(root / "world" / "labels" / "donor_targets.parquet"), files["targets"])
    return world, files


def run(*args) -> str:
    result = CliRunner().invoke(main, ["import", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def spoiled(good, bad, changes: dict[int, dict[str, str]]):
    """A copy of the CSV file `good` at `bad`, with the data rows numbered in `changes` changed."""
    rows = list(csv.DictReader(good.open()))
    for index, values in changes.items():
        rows[index].update(values)
    with bad.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return bad


def test_three_files_and_targets_import_to_the_same_world(exported, tmp_path):
    world, files = exported
    cutoff = world.manifest.cutoff.strftime("%Y-%m-%d")
    run("gifts", files["gifts"], "--profiles", files["donor_profiles"], "--relationships",
        files["donor_relationships"], "--targets", files["targets"], "--cutoff", cutoff, "--out", tmp_path / "w")
    imported = open_world(tmp_path / "w")
    assert imported.manifest.kind == "donors" and not imported.manifest.synthetic
    for stream in STREAMS:
        original = pq.read_table(world.events_path(stream)).sort_by("event_id")
        back = pq.read_table(imported.events_path(stream)).sort_by("event_id")
        assert back.equals(original.cast(EVENT_STREAMS[stream].schema)), stream
        times = pq.read_table(imported.events_path(stream)).column("event_time").cast(pa.int64()).to_numpy()
        assert (times[1:] >= times[:-1]).all()
    targets = pq.read_table(tmp_path / "w" / "labels" / "donor_targets.parquet").sort_by("donor_id")
    assert targets.equals(pq.read_table(world.root / "labels" / "donor_targets.parquet").sort_by("donor_id"))
    assert imported.manifest.parameters["targets_available"] == [
        "high_engagement", "network_influence", "giving_consistency", "high_value", "recent_engagement"]


def test_without_a_targets_file_three_segments_come_from_the_gifts(exported, tmp_path):
    _, files = exported
    run("gifts", files["gifts"], "--out", tmp_path / "w")
    imported = open_world(tmp_path / "w")
    assert imported.manifest.parameters["targets_available"] == ["giving_consistency", "high_value",
                                                                 "recent_engagement"]
    assert imported.manifest.cutoff < imported.manifest.horizon
    targets = pq.read_table(tmp_path / "w" / "labels" / "donor_targets.parquet")
    population = targets.num_rows
    assert population > 100
    assert 0 < sum(targets.column("high_value").to_pylist()) <= round(0.15 * population)
    assert not any(targets.column("network_influence").to_pylist())
    assert any("--targets" in note for note in imported.manifest.notes)


def test_bad_rows_go_to_a_rejects_file_per_stream(exported, tmp_path):
    _, files = exported
    bad = spoiled(files["gifts"], tmp_path / "gifts.csv", {3: {"amount": "-5"}})
    refused = CliRunner().invoke(main, ["import", "gifts", str(bad), "--out", str(tmp_path / "w")])
    assert refused.exit_code == 1 and "line 5: amount" in refused.output and "Traceback" not in refused.output
    output = run("gifts", bad, "--out", tmp_path / "w", "--max-rejects", "1")
    assert "1 gifts rows rejected" in output
    (line, field, reason), = list(csv.reader((tmp_path / "w" / "rejects-gifts.csv").open()))[1:]
    assert (line, field) == ("5", "amount") and "greater than 0" in reason


def test_donor_options_are_refused_for_transactions(tmp_path, exported):
    _, files = exported
    result = CliRunner().invoke(main, ["import", "transactions", str(files["gifts"]), "--targets",
                                       str(files["targets"]), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "tributary import gifts" in result.output


@pytest.mark.parametrize("rows, words", [
    ("donor_id,high_value,colour\nd1,1,red\n", "unknown columns ['colour']"),
    ("donor_id,high_value\n,1\n", "donor_id is blank"),
    ("donor_id,high_value\nd1,maybe\n", "high_value: 'maybe' is not true/false"),
    ("donor_id,high_value\nd1,1\nd1,0\n", "appears twice"),
    ("donor_id,high_value\nd1,\n", "no segment column"),
])
def test_a_bad_targets_file_is_refused_in_one_line_and_leaves_no_world(exported, tmp_path, rows, words):
    _, files = exported
    (tmp_path / "targets.csv").write_text(rows)
    result = CliRunner().invoke(main, ["import", "gifts", str(files["gifts"]), "--targets", str(tmp_path / "targets.csv"),
                                       "--out", str(tmp_path / "w")])
    assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "w" / "world.json").exists()


def test_profiles_and_relationships_added_later_give_the_world_of_one_import(exported, tmp_path):
    world, files = exported
    cutoff = world.manifest.cutoff.strftime("%Y-%m-%d")
    run("gifts", files["gifts"], "--profiles", files["donor_profiles"], "--relationships",
        files["donor_relationships"], "--targets", files["targets"], "--cutoff", cutoff, "--out", tmp_path / "once")
    run("gifts", files["gifts"], "--targets", files["targets"], "--cutoff", cutoff, "--out", tmp_path / "steps")
    run("donor-profiles", files["donor_profiles"], "--out", tmp_path / "steps")
    output = run("donor-relationships", files["donor_relationships"], "--out", tmp_path / "steps")
    assert "name a donor with no gift" not in output  # every related donor gave, or has a profile
    once, steps = open_world(tmp_path / "once"), open_world(tmp_path / "steps")
    assert steps.streams == once.streams
    for stream in STREAMS:
        assert pq.read_table(steps.events_path(stream)).equals(pq.read_table(once.events_path(stream))), stream
    assert steps.manifest.counts == once.manifest.counts
    assert steps.manifest.time_range == once.manifest.time_range
    assert steps.manifest.parameters["rows_read"] == once.manifest.parameters["rows_read"]
    assert any(note.startswith("donor_relationships from ") for note in steps.manifest.notes)


def test_a_second_profiles_import_replaces_the_first_and_a_refused_one_changes_nothing(exported, tmp_path):
    _, files = exported
    run("gifts", files["gifts"], "--out", tmp_path / "w")
    prospects = int(run("donor-profiles", files["donor_profiles"], "--out", tmp_path / "w")
                    .split(" donor_profiles rows (")[0].split()[-3].replace(",", ""))
    before = pq.read_table(tmp_path / "w" / "events" / "donor_profiles.parquet")
    manifest_before = (tmp_path / "w" / "world.json").read_text()

    bad = spoiled(files["donor_profiles"], tmp_path / "profiles.csv",
                  {0: {"event_time": "yesterday"}, 1: {"donor_id": "nobody-we-know"}})
    refused = CliRunner().invoke(main, ["import", "donor-profiles", str(bad), "--out", str(tmp_path / "w")])
    assert refused.exit_code == 1 and "line 2: event_time" in refused.output and "Traceback" not in refused.output
    assert pq.read_table(tmp_path / "w" / "events" / "donor_profiles.parquet").equals(before)
    assert (tmp_path / "w" / "world.json").read_text() == manifest_before

    output = run("donor-profiles", bad, "--out", tmp_path / "w", "--max-rejects", "1")
    assert "1 donor_profiles rows rejected" in output, output
    assert f"{prospects + 1:,} of {before.num_rows - 1:,} donor_profiles rows" in output, output
    world = open_world(tmp_path / "w")
    assert world.manifest.counts["donor_profiles"] == before.num_rows - 1
    assert world.manifest.parameters["rows_rejected"]["donor_profiles"] == 1
    (line, field, _), = list(csv.reader((tmp_path / "w" / "rejects-donor_profiles.csv").open()))[1:]
    assert (line, field) == ("2", "event_time")
    assert not list((tmp_path / "w").glob(".*"))  # no staged file or sorting runs left behind


@pytest.mark.parametrize("make, words", [
    (lambda root: None, "import the gifts first"),
    (lambda root: generate_fraud_world(root, accounts=200, days=1, seed=1, progress=False), "is a fraud world"),
])
def test_profiles_need_a_donor_world_to_go_into(exported, tmp_path, make, words):
    _, files = exported
    make(tmp_path / "w")
    result = CliRunner().invoke(main, ["import", "donor-profiles", str(files["donor_profiles"]),
                                       "--out", str(tmp_path / "w")])
    assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output


def test_relationships_recorded_from_one_end_get_their_mirrors(exported, tmp_path):
    """A CRM records each relationship once; the world holds it from both ends, as generated."""
    world, files = exported
    rows = list(csv.DictReader(files["donor_relationships"].open()))
    one_end = [row for row in rows if not row["event_id"].endswith(MIRROR_SUFFIX)]
    assert 0 < len(one_end) == len(rows) // 2
    single = tmp_path / "links.csv"
    with single.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(one_end)
    cutoff = world.manifest.cutoff.strftime("%Y-%m-%d")
    run("gifts", files["gifts"], "--relationships", single, "--targets", files["targets"], "--cutoff", cutoff,
        "--out", tmp_path / "once")
    run("gifts", files["gifts"], "--targets", files["targets"], "--cutoff", cutoff, "--out", tmp_path / "steps")
    run("donor-relationships", single, "--out", tmp_path / "steps")
    generated = pq.read_table(world.events_path("donor_relationships"))
    for root in (tmp_path / "once", tmp_path / "steps"):
        imported = open_world(root)
        assert pq.read_table(imported.events_path("donor_relationships")).equals(generated)
        assert imported.manifest.counts["donor_relationships"] == len(rows)
        assert imported.manifest.parameters["rows_read"]["donor_relationships"] == len(one_end)
        assert any(note.startswith(f"{len(one_end):,} donor_relationships rows added") for note in imported.manifest.notes)


def test_a_mirror_of_a_longest_event_id_is_still_a_valid_distinct_id():
    from models.contracts import DonorRelationship

    longest = "r" * 64
    mirrored = mirror_event_id(longest)
    assert mirrored != longest and len(mirrored) <= 64 and mirror_event_id("r" * 63) != mirrored
    DonorRelationship.model_validate_json(
        f'{{"event_id": "{mirrored}", "event_time": "2025-01-01T00:00:00Z", "donor_id": "a", '
        '"related_donor_id": "b", "relationship_type": "family"}')
