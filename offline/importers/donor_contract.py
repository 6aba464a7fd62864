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

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from models.contracts import Segment
from models.worlds import EVENT_STREAMS, LABEL_FILES, WorldKind, WorldManifest, WorldWriter

from ._csv import ImportFormatError
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
            for stream, rows in read.items():
                for table in rows.runs.merged():
                    writer.write_events(stream, table.select(EVENT_STREAMS[stream].schema.names))
                    if stream == "gifts":
                        gift_columns.append(table.select(["donor_id", "event_time", "amount"]))
            given = pa.concat_tables(gift_columns)
            if targets is not None:
                target_table, available = _targets_from_file(targets, fmt)
                cutoff = cutoff or _after_the_last(given)
            else:
                target_table, available, cutoff, horizon = _targets_from_gifts(given, cutoff, horizon, gifts)
            writer.write_labels("donor_targets", target_table)
            manifest = _manifest(files, read, targets, available, cutoff, horizon, mapping or {})
            return writer.finish(manifest)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)


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


def _manifest(files: dict[str, Path | None], read: dict, targets: Path | None, available: list[str],
              cutoff: datetime, horizon: datetime | None, mapping: dict[str, str]) -> WorldManifest:
    rejected = {stream: r.rejected for stream, r in read.items()}
    notes = ["Imported in the contracts' own schemas: every row passed the same validation as the worker's."]
    notes += [f"{n:,} {stream} rows were rejected; rejects-{stream}.csv lists them (line, field, reason)."
              for stream, n in rejected.items() if n]
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


