"""What every importer does after parsing: times, ids, contract validation, writing the world."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from models.contracts import InvalidEvent, from_record
from models.progress import progress as progress_bar
from models.worlds import EVENT_STREAMS, LABEL_FILES, WorldManifest, WorldWriter

from ._csv import HELP_HINT, ImportFormatError

# Data sets whose clock is "steps since start" are placed from this instant.
TIME_ORIGIN = datetime(2025, 1, 1, tzinfo=timezone.utc)
US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
NO_TIME = np.iinfo(np.int64).max  # "no such time" in int64 microsecond arrays

_TIME = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MIN_US = (datetime(1, 1, 2, tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1)
_MAX_US = (datetime(9999, 12, 30, tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def spread_within(start_us: np.ndarray, span_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Order rows by a coarse time and give each a distinct time inside its slot.

    Rows sharing `start_us` keep their input order and are spaced evenly over
    [start, start + span): the k-th of n rows gets start + k * span // n. Returns the
    stable sort order and the spread times in that order.

    >>> order, t = spread_within(np.array([10, 0, 10, 0, 0]), 30)
    >>> order.tolist(), t.tolist()
    ([1, 3, 4, 0, 2], [0, 10, 20, 10, 25])
    """
    order = np.argsort(start_us, kind="stable")
    start = np.asarray(start_us, dtype=np.int64)[order]
    n = len(start)
    if n == 0:
        return order, start
    new_slot = np.empty(n, dtype=bool)
    new_slot[0] = True
    new_slot[1:] = start[1:] != start[:-1]
    slot_first = np.flatnonzero(new_slot)
    slot_size = np.diff(np.append(slot_first, n))
    slot = np.cumsum(new_slot) - 1
    rank = np.arange(n) - slot_first[slot]
    return order, start + rank * span_us // slot_size[slot]


def event_ids(source: str, line: np.ndarray, header_lines: int) -> list[str]:
    """Deterministic ids from the input's data-row numbers: `paysim-000001` is data row 1."""
    return [f"{source}-{int(n) - header_lines:06d}" for n in line]


def timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.int64()).cast(_TIME)


def nullable(values: np.ndarray, missing: np.ndarray, type_: pa.DataType) -> pa.Array:
    """An arrow array with nulls where `missing` is true."""
    return pa.array(values, type=type_, mask=np.asarray(missing, dtype=bool))


def nullable_times(us: np.ndarray) -> pa.Array:
    """Microsecond times with NO_TIME as null."""
    us = np.asarray(us, dtype=np.int64)
    missing = us == NO_TIME
    return nullable(np.where(missing, 0, us), missing, pa.int64()).cast(_TIME)


def nullable_floats(values: np.ndarray) -> pa.Array:
    """Floats with NaN as null (NaN is not a number the contract accepts)."""
    return nullable(values, np.isnan(values), pa.float64())


def first_time(keys: np.ndarray, universe: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each id in the sorted array `universe`, the earliest of `times` whose key is it (NO_TIME if none)."""
    first = np.full(len(universe), NO_TIME, dtype=np.int64)
    np.minimum.at(first, np.searchsorted(universe, keys), np.asarray(times, dtype=np.int64))
    return first


def account_labels(accounts: np.ndarray, is_fraud: np.ndarray, fraud_since_us: np.ndarray) -> pa.Table:
    return label_table(
        "accounts",
        {"account_id": accounts, "is_fraud": is_fraud,
         "fraud_since": nullable_times(np.where(is_fraud, fraud_since_us, NO_TIME))},
    )


def event_table(stream: str, columns: dict) -> pa.Table:
    """A table with exactly the stream's columns (absent optional ones all null)."""
    schema = EVENT_STREAMS[stream].schema
    return _table(schema, columns, f"event stream {stream!r}")


def label_table(name: str, columns: dict) -> pa.Table:
    return _table(LABEL_FILES[name], columns, f"label file {name!r}")


def _table(schema: pa.Schema, columns: dict, what: str) -> pa.Table:
    unknown = set(columns) - set(schema.names)
    if unknown:
        raise ValueError(f"{what} has no columns {sorted(unknown)}")  # a bug in an importer
    n = len(next(iter(columns.values())))

    def column(field: pa.Field):
        values = columns.get(field.name)
        if values is None:
            return pa.nulls(n, field.type)
        if isinstance(values, pa.Array):
            return values.cast(field.type)
        return pa.array(values, type=field.type)

    return pa.Table.from_arrays([column(f) for f in schema], schema=schema)


def repeated(ids: np.ndarray) -> np.ndarray:
    """True for every occurrence of an id after its first."""
    _, first = np.unique(ids, return_index=True)
    seen_before = np.ones(len(ids), dtype=bool)
    seen_before[first] = False
    return seen_before


def require_rows(keep: np.ndarray, file: str, dropped: str) -> None:
    """An import that drops every row is a wrong file, not an empty world."""
    if len(keep) == 0:
        raise ImportFormatError(f"{file}: no row is left after dropping {dropped}; {HELP_HINT}")


def validate_events(
    stream: str, table: pa.Table, line: np.ndarray, file: str, progress: bool = True
) -> None:
    """Check every row against the stream's contract, exactly as replay and the worker will.

    `line[i]` is the input line row i came from; a failure names it and the field.
    """
    contract = EVENT_STREAMS[stream].contract
    # Times past year 9999 cannot even become datetimes; say so before converting rows.
    times = table.column("event_time").cast(pa.int64()).to_numpy()
    out_of_range = (times < _MIN_US) | (times > _MAX_US)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        raise ImportFormatError(
            f"{file}: line {int(line[i])}: the {stream} event it becomes breaks the contract: field event_time: "
            f"is outside years 1-9999; is the timestamp in the wrong unit?; {HELP_HINT}"
        )
    with progress_bar(total=table.num_rows, desc=f"validating {stream}", unit="rows", enabled=progress) as bar:
        done = 0
        for batch in table.to_batches(max_chunksize=8_192):
            for i, record in enumerate(batch.to_pylist()):
                try:
                    from_record(record, contract)
                except InvalidEvent as error:
                    field = f"field {error.field}: " if error.field else ""
                    raise ImportFormatError(
                        f"{file}: line {int(line[done + i])}: the {stream} event {record.get('event_id')} it becomes "
                        f"breaks the contract: {field}{error.message}; fix or remove the line; {HELP_HINT}"
                    ) from None
            done += batch.num_rows
            bar.update(batch.num_rows)


def write_world(out: Path, events: dict[str, pa.Table], labels: dict[str, pa.Table], manifest: WorldManifest) -> WorldManifest:
    """Write event and label tables and finally the manifest (counts and time range filled in)."""
    with WorldWriter(out) as writer:
        for stream, table in events.items():
            times = table.column("event_time").cast(pa.int64()).to_numpy()
            if np.any(np.diff(times) < 0):
                raise ValueError(f"{stream} events are not in event-time order")  # a bug in an importer
            writer.write_events(stream, table)
        for name, table in labels.items():
            writer.write_labels(name, table)
        return writer.finish(manifest)
