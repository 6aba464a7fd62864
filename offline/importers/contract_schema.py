"""`tributary import transactions FILE`: your own transactions, in the contract's own schema.

Columns are the `TransactionEvent` fields (docs/topics.md and the README's contracts
table), in any order, extra columns ignored; `--map your_name=field` renames. Every row
is validated exactly as the worker validates the wire; a row that fails goes to a
rejects file (line, field, reason) and the import fails only past `--max-rejects`.
Fraud labels come from a column (`is_fraud` unless `--label-column` names another).

Memory stays bounded whatever the file's size: rows are read one at a time, good ones
are sorted into event-time order in runs of `RUN_ROWS` written to disk, and the runs
are merged into the world (a file already in time order is copied run after run).
"""

from __future__ import annotations

import csv
import heapq
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.contracts import InvalidEvent, from_record
from models.errors import TributaryError
from models.progress import progress as progress_bar
from models.worlds import EVENT_STREAMS, LABEL_FILES, WorldKind, WorldManifest, WorldWriter

from ._csv import HELP_HINT, ImportFormatError
from .row_files import BadRow, Format, detect_format, read_rows

RUN_ROWS = 200_000  # good rows sorted in memory at a time (about 100 MB for transactions)
MERGE_BATCH_ROWS = 8_192
_ORDER, _TIME_US, _LABEL = "_order", "_time_us", "_label"


def parse_mapping(pairs: tuple[str, ...], streams: list[str], label_column: str) -> dict[str, str]:
    """`("amt=amount", ...)` as {"amt": "amount"}; the targets must be fields of the streams
    (or the label)."""
    fields = {name for stream in streams for name in EVENT_STREAMS[stream].schema.names} | {label_column}
    stream = " or ".join(streams)
    mapping: dict[str, str] = {}
    for pair in pairs:
        source, _, field = pair.partition("=")
        if not source or not field:
            raise ImportFormatError(f"--map {pair!r}: expected YOUR_COLUMN=FIELD, e.g. --map amt=amount")
        if field not in fields:
            raise ImportFormatError(f"--map {pair!r}: {field!r} is not a {stream} field; the fields are "
                                    f"{', '.join(sorted(fields))}")
        mapping[source] = field
    return mapping


class RowRejected(TributaryError, ValueError):
    """One row that does not become a valid event: it goes to the rejects file."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def import_transactions(path: Path, out: Path, *, mapping: dict[str, str] | None = None,
                        label_column: str = "is_fraud", max_rejects: int = 0, rejects: Path | None = None,
                        fmt: Format | None = None, progress: bool = True, labels: Path | None = None) -> WorldManifest:
    """Import a transactions file in the contract's schema into a fraud world at `out`;
    the fraud labels from its `label_column`, or from a separate `labels` file."""
    stream = "transactions"
    fmt = fmt or detect_format(path)
    rejects = rejects or out / "rejects.csv"
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / ".import-runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    try:
        label_file = LabelFile(labels, label_column) if labels is not None else None
        read = read_stream(stream, path, fmt, runs_dir, mapping or {}, label_column, max_rejects, rejects, progress,
                           label_file)
        manifest = _manifest(path, fmt, mapping or {}, label_column if read.labelled else None, read.rows,
                             read.rejected, rejects, label_file)
        with WorldWriter(out) as writer:
            for table in read.runs.merged():
                labels = table.column(_LABEL)
                writer.write_events(stream, table.select(EVENT_STREAMS[stream].schema.names))
                if read.labelled:
                    writer.write_labels("transactions", _label_table(table.column("event_id"), labels))
            written = writer.finish(manifest)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    return written


class LabelFile:
    """Fraud labels kept apart from the transactions (a case system's export): one row per
    labelled transaction, `event_id` and the label column (1/0, true/false). A transaction
    it does not list is not fraud. Held in memory: one entry per labelled transaction."""

    def __init__(self, path: Path, label_column: str, fmt: Format | None = None):
        self.path = path
        self.labels: dict[str, bool] = {}
        for line, row in read_rows(path, fmt or detect_format(path)):
            if isinstance(row, BadRow):
                raise ImportFormatError(f"{path}: line {line}: {row.reason}")
            event_id = str(row.get("event_id") or "").strip()
            if not event_id or label_column not in row:
                raise ImportFormatError(f"{path}: line {line}: a label file has the columns event_id and "
                                        f"{label_column} (--label-column names another)")
            try:
                self.labels[event_id] = parse_boolean(row[label_column], label_column)
            except RowRejected as why:
                raise ImportFormatError(f"{path}: line {line}: {why.field}: {why.reason}") from None
        self.matched: set[str] = set()

    def label_of(self, event_id: str) -> bool:
        if event_id in self.labels:
            self.matched.add(event_id)
            return self.labels[event_id]
        return False

    def unmatched(self) -> int:
        """Labels naming no imported transaction (a typo, or a transaction rejected)."""
        return len(self.labels) - len(self.matched)


@dataclass
class _Read:
    """One file's valid rows, sorted in runs on disk, and what reading it found."""

    runs: _Runs
    rows: int  # read
    rejected: int
    labelled: bool  # some row had a label


def read_stream(stream: str, path: Path, fmt: Format, runs_dir: Path, mapping: dict[str, str], label_column: str,
                 max_rejects: int, rejects: Path, progress: bool, labels: LabelFile | None = None) -> _Read:
    """Validate every row of `path` as a `stream` event (as the worker validates the wire);
    good rows into sorted runs under `runs_dir`, bad ones into the `rejects` file (removed
    again when there are none). Past `max_rejects` rejected rows, ImportFormatError.
    With `labels`, each row's label comes from that file, not from a column."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    coerce = _Coercer(stream, mapping, label_column)
    runs = _Runs(stream, runs_dir / stream)
    read = rejected = 0
    labelled = False
    with rejects.open("w", newline="") as rejects_file, \
            progress_bar(desc=f"reading {path.name}", unit="rows", enabled=progress) as bar:
        rejects_out = csv.writer(rejects_file)
        rejects_out.writerow(["line", "field", "reason"])
        for line, row in read_rows(path, fmt):
            read += 1
            bar.update(1)
            try:
                record, label = coerce(row, line, path)
            except RowRejected as why:
                rejected += 1
                rejects_out.writerow([line, why.field, why.reason])
                if rejected > max_rejects:
                    raise ImportFormatError(
                        f"{path}: line {line}: {why.field}: {why.reason}. More than --max-rejects={max_rejects} "
                        f"rows rejected, so nothing was imported; each is listed in {rejects} (line, field, "
                        "reason). Fix them, or allow more with --max-rejects") from None
                continue
            if labels is not None:
                label = labels.label_of(record["event_id"])
            labelled |= label is not None
            runs.add(record, label)
    if runs.rows == 0:
        raise ImportFormatError(f"{path}: no valid {stream} row in {read:,} read; {HELP_HINT}")
    if rejected == 0:
        rejects.unlink(missing_ok=True)
    return _Read(runs, read, rejected, labelled)


class _Coercer:
    """A raw row (strings from CSV, JSON values, Parquet values) as a contract-checked record."""

    def __init__(self, stream: str, mapping: dict[str, str], label_column: str):
        self.spec = EVENT_STREAMS[stream]
        self.types = {field.name: field.type for field in self.spec.schema}
        self.mapping, self.label_column = mapping, label_column

    def __call__(self, row: dict[str, Any] | BadRow, line: int, path: Path) -> tuple[dict[str, Any], bool | None]:
        if isinstance(row, BadRow):
            raise RowRejected("(row)", row.reason)
        record: dict[str, Any] = {}
        label: bool | None = None
        for column, value in row.items():
            name = self.mapping.get(column, column)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue  # blank: "not given", as on the wire
            if name == self.label_column:
                label = parse_boolean(value, name)
            elif name in self.types:
                record[name] = _typed(value, self.types[name], name)
        record.setdefault("event_id", f"{path.stem}-{line:06d}")  # stable across imports of one file
        try:
            event = from_record(record, self.spec.contract)
        except InvalidEvent as error:
            raise RowRejected(error.field or "(row)", error.message) from None
        return {name: _plain(getattr(event, name)) for name in self.types}, label


def _typed(value: Any, kind: pa.DataType, name: str) -> Any:
    try:
        if pa.types.is_timestamp(kind):
            return _time(value)
        if pa.types.is_floating(kind):
            return float(value)
        if pa.types.is_integer(kind):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if pa.types.is_boolean(kind):
            return parse_boolean(value, name)
        return str(value).strip()
    except (ValueError, TypeError, OverflowError):
        raise RowRejected(name, f"{value!r} is not a {_kind_name(kind)}") from None


def _kind_name(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind):
        return "time (ISO 8601, or epoch seconds / milliseconds / microseconds)"
    if pa.types.is_floating(kind) or pa.types.is_integer(kind):
        return "number" if pa.types.is_floating(kind) else "whole number"
    return "true/false" if pa.types.is_boolean(kind) else "string"


def parse_boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y", "1.0"):
        return True
    if text in ("0", "false", "f", "no", "n", "0.0"):
        return False
    raise RowRejected(name, f"{value!r} is not true/false (1/0, true/false, yes/no)")


def _time(value: Any) -> datetime:
    """An aware UTC time from ISO 8601 (no offset: UTC) or an epoch number, its unit told
    by size: seconds until year 5138, then milliseconds, then microseconds."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        number = float(value)
    except (TypeError, ValueError):
        moment = datetime.fromisoformat(str(value).strip())
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if not math.isfinite(number):
        raise ValueError("not a finite time")
    seconds = number if abs(number) < 1e11 else number / 1e3 if abs(number) < 1e14 else number / 1e6
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


class _Runs:
    """Good rows, sorted by event time in runs on disk, merged back in order."""

    def __init__(self, stream: str, folder: Path):
        schema = EVENT_STREAMS[stream].schema
        self.schema = schema.append(pa.field(_LABEL, pa.bool_())).append(pa.field(_ORDER, pa.int64())) \
            .append(pa.field(_TIME_US, pa.int64()))
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self._buffer: list[dict[str, Any]] = []
        self._files: list[tuple[Path, int, int]] = []  # path, first and last time

    def add(self, record: dict[str, Any], label: bool | None) -> None:
        moment = record["event_time"]
        record[_LABEL], record[_ORDER] = label, self.rows
        record[_TIME_US] = int(moment.timestamp() * 1_000_000)
        self._buffer.append(record)
        self.rows += 1
        if len(self._buffer) >= RUN_ROWS:
            self._spill()

    def _spill(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self.schema).sort_by([(_TIME_US, "ascending"),
                                                                                 (_ORDER, "ascending")])
        self._buffer = []
        path = self.folder / f"run-{len(self._files):05d}.parquet"
        pq.write_table(table, path)
        times = table.column(_TIME_US)
        self._files.append((path, times[0].as_py(), times[-1].as_py()))

    def merged(self) -> Iterator[pa.Table]:
        """Every row once, in (event time, file order), as tables of bounded size."""
        self._spill()
        in_order = all(later[1] >= earlier[2] for earlier, later in zip(self._files, self._files[1:]))
        if in_order:  # a file already in time order: its runs follow one another
            for path, _, _ in self._files:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=MERGE_BATCH_ROWS * 8):
                    yield pa.Table.from_batches([batch], schema=self.schema)
            return
        rows: list[dict[str, Any]] = []
        for _, _, row in heapq.merge(*(self._rows_of(path) for path, _, _ in self._files)):
            rows.append(row)
            if len(rows) >= MERGE_BATCH_ROWS * 8:
                yield pa.Table.from_pylist(rows, schema=self.schema)
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows, schema=self.schema)

    @staticmethod
    def _rows_of(path: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=MERGE_BATCH_ROWS):
            for row in batch.to_pylist():
                yield row[_TIME_US], row[_ORDER], row  # (time, order) is unique: rows are never compared


def _label_table(event_ids: pa.ChunkedArray, labels: pa.ChunkedArray) -> pa.Table:
    schema = LABEL_FILES["transactions"]
    # A row without a label (blank, or absent in JSON) is not known to be fraud: a negative.
    return pa.table({"event_id": event_ids, "is_fraud": pc.fill_null(labels, False),
                     "pattern_id": pa.nulls(len(event_ids), pa.string()),
                     "pattern_type": pa.nulls(len(event_ids), pa.string())}, schema=schema)


def _manifest(path: Path, fmt: Format, mapping: dict[str, str], label_column: str | None, read: int, rejected: int,
              rejects: Path, label_file: LabelFile | None = None) -> WorldManifest:
    notes = [
        "Imported in the contract's own schema: every row passed the same validation as the worker's.",
        "Event ids are not checked for uniqueness across the file (that would need every id in memory); "
        "the worker dead-letters an id it has seen as duplicate_event.",
    ]
    if rejected:
        notes.append(f"{rejected:,} of {read:,} rows were rejected; {rejects} lists them (line, field, reason).")
    if label_file is not None:
        notes.append(f"Labels from {label_file.path.name} ({len(label_file.labels):,} transactions listed, "
                     f"{sum(label_file.labels.values()):,} fraud); a transaction it does not list counts as not fraud.")
        if label_file.unmatched():
            notes.append(f"{label_file.unmatched():,} labels in {label_file.path.name} name no imported transaction "
                         "(a typo in the event_id, or the transaction was rejected).")
    elif label_column is None:
        notes.append("No label column: the world can be replayed and scored, not trained or evaluated on.")
    else:
        notes.append(f"Labels from column {label_column}; a row with it blank or absent counts as not fraud.")
    return WorldManifest(
        kind=WorldKind.FRAUD, synthetic=False, source=f"transactions file {path.name}",
        description=f"Transactions imported from {path.name} ({fmt}) in the TransactionEvent schema.",
        parameters={"input": str(path), "format": fmt, "mapping": mapping, "label_column": label_column,
                    "label_file": str(label_file.path) if label_file else None,
                    "labels_unmatched": label_file.unmatched() if label_file else 0,
                    "rows_read": read, "rows_rejected": rejected},
        notes=notes,
    )
