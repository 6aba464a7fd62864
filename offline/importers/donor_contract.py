"""`tributary import gifts FILE`: your own donors, in the contracts' own schemas.

A donor world from up to three files, each read, validated and sorted exactly as
`tributary import transactions` does (offline.importers.contract_schema): the gifts
(`GiftEvent` columns), and optionally the donor profiles (`DonorProfile`) and
relationships (`DonorRelationship`). Rejected rows of each file go to
`rejects-<stream>.csv` (line, field, reason).

Segment targets, what `tributary train donors` learns:
- from a targets file (`--targets`): one row per donor, `donor_id` and any of the five
  segment columns (true/false); the segments it has are the ones trained;
- otherwise from the gifts, as for CDNOW: giving consistency, high value and recent
  engagement on the window [cut-off, horizon) with the synthetic world's definitions
  (offline.importers.cdnow.donor_targets). High engagement and network influence need
  data gifts do not hold: give them in a targets file.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.contracts import Segment
from models.worlds import (
    EVENT_STREAMS,
    LABEL_FILES,
    MANIFEST_FILE,
    World,
    WorldError,
    WorldKind,
    WorldManifest,
    WorldWriter,
    open_world,
)

from ._csv import ImportFormatError
from .both_ends import with_both_ends
from .cdnow import TARGET_SHARES, UNAVAILABLE_TARGETS, default_window, donor_targets
from .contract_schema import RowRejected, parse_boolean, read_stream
from .row_files import BadRow, Format, detect_format, read_rows

SEGMENTS = [s.value for s in Segment]
NO_LABEL = "\0no label column"  # a label column no file has: donor files carry no per-row label


def import_donors(gifts: Path, out: Path, *, profiles: Path | None = None, relationships: Path | None = None,
                  targets: Path | None = None, cutoff: datetime | None = None, horizon: datetime | None = None,
                  mapping: dict[str, str] | None = None, max_rejects: int = 0, fmt: Format | None = None,
                  progress: bool = True) -> WorldManifest:
    """Import donor files in the contracts' schemas into a donor world at `out`."""
    files = {"gifts": gifts, "donor_profiles": profiles, "donor_relationships": relationships}
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / ".import-runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    try:
        read = {stream: read_stream(stream, path, fmt or detect_format(path), runs_dir, mapping or {}, NO_LABEL,
                                     max_rejects, out / f"rejects-{stream}.csv", progress)
                for stream, path in files.items() if path is not None}
        with WorldWriter(out) as writer:  # its manifest comes last: a failure below leaves no world
            gift_columns = []  # the gifts' donor, time and amount, for the targets (three columns of every gift)
            mirrors = 0  # relationship rows added for the other end
            for stream, rows in read.items():
                for table in rows.runs.merged():
                    written = _as_written(stream, table.select(EVENT_STREAMS[stream].schema.names))
                    mirrors += written.num_rows - table.num_rows
                    writer.write_events(stream, written)
                    if stream == "gifts":
                        gift_columns.append(table.select(["donor_id", "event_time", "amount"]))
            given = pa.concat_tables(gift_columns)
            if targets is not None:
                target_table, available = _targets_from_file(targets, fmt)
                cutoff = cutoff or _after_the_last(given)
            else:
                target_table, available, cutoff, horizon = _targets_from_gifts(given, cutoff, horizon, gifts)
            writer.write_labels("donor_targets", target_table)
            manifest = _manifest(files, read, targets, available, cutoff, horizon, mapping or {}, mirrors)
            return writer.finish(manifest)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)


def _as_written(stream: str, table: pa.Table) -> pa.Table:
    """A stream's rows as the world keeps them: relationships from both ends (offline.importers.both_ends)."""
    return with_both_ends(table) if stream == "donor_relationships" else table


def _targets_from_gifts(table: pa.Table, cutoff: datetime | None, horizon: datetime | None,
                        gifts: Path) -> tuple[pa.Table, list[str], datetime, datetime]:
    times = table.column("event_time").cast(pa.int64()).to_numpy()
    if cutoff is None or horizon is None:
        auto_cutoff, auto_horizon = default_window(times.astype("datetime64[us]").astype("datetime64[D]"), str(gifts))
        cutoff, horizon = cutoff or auto_cutoff, horizon or auto_horizon
    if horizon <= cutoff:
        raise ImportFormatError(f"--horizon {horizon.date()} must come after --cutoff {cutoff.date()}")
    derived = donor_targets(table.column("donor_id").to_numpy(zero_copy_only=False), times,
                            table.column("amount").to_numpy(), cutoff, horizon)
    if len(derived["donor_id"]) == 0:
        raise ImportFormatError(f"{gifts}: no donor gave before the cut-off {cutoff.date()}, so no donor has "
                                "targets; choose an earlier --cutoff")
    return pa.table({name: derived[name] for name in LABEL_FILES["donor_targets"].names},
                    schema=LABEL_FILES["donor_targets"]), list(TARGET_SHARES), cutoff, horizon


def _targets_from_file(path: Path, fmt: Format | None) -> tuple[pa.Table, list[str]]:
    """donor_id and any of the five segments, true/false; a segment the file lacks is not trained."""
    columns: dict[str, list] = {"donor_id": []}
    seen: set[str] = set()
    for line, row in read_rows(path, fmt or detect_format(path)):
        if isinstance(row, BadRow):
            raise ImportFormatError(f"{path}: line {line}: {row.reason}")
        donor = str(row.get("donor_id") or "").strip()
        if not donor:
            raise ImportFormatError(f"{path}: line {line}: donor_id is blank; every row names its donor")
        unknown = set(row) - {"donor_id", *SEGMENTS}
        if unknown:
            raise ImportFormatError(f"{path}: line {line}: unknown columns {sorted(unknown)}; a targets file has "
                                    f"donor_id and any of {', '.join(SEGMENTS)}")
        columns["donor_id"].append(donor)
        for segment in SEGMENTS:
            value = row.get(segment)
            if value is None or (isinstance(value, str) and not value.strip()):
                columns.setdefault(segment, []).append(False)
                continue
            seen.add(segment)
            try:
                columns.setdefault(segment, []).append(parse_boolean(value, segment))
            except RowRejected as why:
                raise ImportFormatError(f"{path}: line {line}: {why.field}: {why.reason}") from None
    if not seen:
        raise ImportFormatError(f"{path}: no segment column ({', '.join(SEGMENTS)}) has a value")
    if len(set(columns["donor_id"])) != len(columns["donor_id"]):
        raise ImportFormatError(f"{path}: a donor_id appears twice; give one row per donor")
    return pa.table(columns, schema=LABEL_FILES["donor_targets"]), [s for s in SEGMENTS if s in seen]


def _after_the_last(gifts: pa.Table) -> datetime:
    """Without a cut-off, targets given in a file describe what comes after every gift."""
    return pc.max(gifts.column("event_time")).as_py() + timedelta(microseconds=1)


def _both_ends_note(mirrors: int) -> str:
    return (f"{mirrors:,} donor_relationships rows added: each relationship recorded from one end only got its "
            "mirror (donors swapped, event id + ':r'), so both donors' partitions see it.")


def _rejects_note(stream: str, rejected: int) -> str:
    return f"{rejected:,} {stream} rows were rejected; rejects-{stream}.csv lists them (line, field, reason)."


def _manifest(files: dict[str, Path | None], read: dict, targets: Path | None, available: list[str],
              cutoff: datetime, horizon: datetime | None, mapping: dict[str, str], mirrors: int) -> WorldManifest:
    rejected = {stream: r.rejected for stream, r in read.items()}
    notes = ["Imported in the contracts' own schemas: every row passed the same validation as the worker's."]
    notes += [_rejects_note(stream, n) for stream, n in rejected.items() if n]
    if mirrors:
        notes.append(_both_ends_note(mirrors))
    if targets is not None:
        lacking = ", ".join(s for s in SEGMENTS if s not in available) or "none"
        notes.append(f"Segment targets from {targets.name}; segments it lacks ({lacking}) are written as False and "
                     "not trained.")
    else:
        notes.append(f"Segment targets derived from the gifts on [{cutoff.date()}, {horizon.date() if horizon else '?'}) as "
                     f"for CDNOW: {', '.join(TARGET_SHARES)}. {' and '.join(UNAVAILABLE_TARGETS)} need engagement and "
                     "network outcomes: give them in a --targets file.")
    return WorldManifest(
        kind=WorldKind.DONORS, synthetic=False, source=f"donor files {', '.join(p.name for p in files.values() if p)}",
        description="Donors imported in the GiftEvent, DonorProfile and DonorRelationship schemas.",
        parameters={"inputs": {s: str(p) for s, p in files.items() if p}, "mapping": mapping,
                    "rows_read": {s: r.rows for s, r in read.items()}, "rows_rejected": rejected,
                    "targets": str(targets) if targets else "derived from gifts", "targets_available": available},
        notes=notes, cutoff=cutoff, horizon=horizon,
    )


# `tributary import donor-profiles|donor-relationships FILE --out WORLD`: one stream added to
# (or replaced in) a donor world that exists already, so profiles and relationships exported
# from another system, or refreshed later, need no re-read of the gifts.
ADDABLE_STREAMS = ("donor_profiles", "donor_relationships")


def add_donor_stream(stream: str, path: Path, world_dir: Path, *, mapping: dict[str, str] | None = None,
                     max_rejects: int = 0, fmt: Format | None = None,
                     progress: bool = True) -> tuple[WorldManifest, list[str]]:
    """Validate `path` as `stream` rows and make them that stream of the donor world at `world_dir`.

    The world's other files stay as they are; its manifest is rewritten with the new counts,
    time range and notes. Returns it, and the notes a user should read now (rows naming
    unknown donors, rows that no feature can use). A failure leaves the world as it was."""
    if stream not in ADDABLE_STREAMS:
        raise ValueError(f"{stream!r} is not one of {ADDABLE_STREAMS}")
    world = _donor_world(world_dir, stream)
    schema = EVENT_STREAMS[stream].schema
    events = world.events_path(stream)
    staged = events.with_name(f".{stream}.parquet.importing")
    runs_dir = world_dir / ".import-runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    known = _known_donors(world, stream)
    try:
        read = read_stream(stream, path, fmt or detect_format(path), runs_dir, mapping or {}, NO_LABEL, max_rejects,
                           world_dir / f"rejects-{stream}.csv", progress)
        strangers = before_cutoff = rows_written = 0
        with pq.ParquetWriter(staged, schema, compression="zstd") as writer:
            for table in read.runs.merged():
                table = table.select(schema.names)
                strangers += _rows_naming_a_stranger(table, known)
                table = _as_written(stream, table)
                writer.write_table(table)
                rows_written += table.num_rows
                if world.manifest.cutoff is not None:
                    before_cutoff += pc.sum(pc.less(table.column("event_time"), world.manifest.cutoff)).as_py() or 0
        os.replace(staged, events)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
        staged.unlink(missing_ok=True)
    warnings = _warnings(stream, read.runs.rows, strangers, before_cutoff, world.manifest.cutoff)
    manifest = _with_stream(world, stream, path, read, rows_written, warnings, mapping or {})
    written = world_dir / f".{MANIFEST_FILE}.importing"
    written.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(written, world_dir / MANIFEST_FILE)
    return manifest, warnings


def _donor_world(world_dir: Path, stream: str) -> World:
    command = stream.replace("_", "-")
    try:
        world = open_world(world_dir)
    except WorldError:
        raise ImportFormatError(f"{world_dir} holds no world: import the gifts first (`tributary import gifts GIFTS "
                                f"--out {world_dir}`), then `tributary import {command} FILE --out {world_dir}`") from None
    if world.manifest.kind != WorldKind.DONORS:
        raise ImportFormatError(f"{world_dir} is a {world.manifest.kind.value} world; {command} go into a donor world "
                                "(`tributary import gifts GIFTS --out DIR` makes one)")
    return world


def _known_donors(world: World, stream: str) -> pa.Array:
    """The donors the world's gifts and (for relationships) profiles name, read a batch at a
    time: memory grows with the donors, not with the gifts."""
    known = pa.array([], type=pa.string())
    for other in ("gifts", "donor_profiles"):
        if other == stream or other not in world.streams:
            continue
        for batch in world.iter_events(other, columns=["donor_id"]):
            known = pc.unique(pa.concat_arrays([known, pc.unique(batch.column("donor_id"))]))
    return known


def _rows_naming_a_stranger(table: pa.Table, known: pa.Array) -> int:
    stranger = pc.invert(pc.is_in(table.column("donor_id"), value_set=known))
    if "related_donor_id" in table.column_names:
        stranger = pc.or_(stranger, pc.invert(pc.is_in(table.column("related_donor_id"), value_set=known)))
    return pc.sum(stranger).as_py() or 0


def _warnings(stream: str, rows: int, strangers: int, before_cutoff: int, cutoff: datetime | None) -> list[str]:
    warnings = []
    if strangers:  # kept: a prospect has a profile before a gift; a large share hints at ids spelled differently
        warnings.append(f"{strangers:,} of {rows:,} {stream} rows ({strangers / rows:.1%}) name a donor with no "
                        "gift in this world (prospects, or donor ids spelled differently in the files); they are kept.")
    if cutoff is not None and before_cutoff == 0:
        warnings.append(f"No {stream} row comes before the cut-off {cutoff.date()}, so no training feature uses "
                        "them.")
    return warnings


def _with_stream(world: World, stream: str, path: Path, read, written: int, warnings: list[str],
                 mapping: dict[str, str]) -> WorldManifest:
    manifest = world.manifest
    parameters = dict(manifest.parameters)
    for key, value in (("inputs", str(path)), ("rows_read", read.rows), ("rows_rejected", read.rejected)):
        parameters[key] = {**parameters.get(key, {}), stream: value}
    parameters["mapping"] = {**parameters.get("mapping", {}), **mapping}
    # Notes about the stream's earlier file no longer hold.
    notes = [note for note in manifest.notes
             if not note.startswith((f"{stream} from ", f"No {stream} row ")) and f" {stream} rows " not in note]
    notes.append(f"{stream} from {path.name}, added by `tributary import {stream.replace('_', '-')}`: "
                 f"{read.runs.rows:,} rows, validated as the worker validates them.")
    if read.rejected:
        notes.append(_rejects_note(stream, read.rejected))
    notes += warnings
    if written != read.runs.rows:
        notes.append(_both_ends_note(written - read.runs.rows))
    counts = {**manifest.counts, stream: written}
    spans = [span for span in (_time_span(world.events_path(s)) for s in world.streams) if span]
    time_range = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None
    return manifest.model_copy(update={"parameters": parameters, "notes": notes, "counts": counts,
                                       "time_range": time_range})


def _time_span(events: Path) -> tuple[datetime, datetime] | None:
    """First and last event time of a stream file (sorted by time, so its first and last rows)."""
    file = pq.ParquetFile(events)
    if file.metadata.num_rows == 0:
        return None
    first = file.read_row_group(0, columns=["event_time"]).column("event_time")
    last = file.read_row_group(file.num_row_groups - 1, columns=["event_time"]).column("event_time")
    return first[0].as_py(), last[-1].as_py()
