"""The on-disk layout of a data world: event files, label files and a manifest.

A world is a directory written by `tributary generate ...` or `tributary import ...`
and read by training, evaluation and replay:

    DIR/world.json                     WorldManifest (kind, synthetic?, source, counts, ...)
    DIR/events/<stream>.parquet        one file per event stream, columns of its contract,
                                       sorted by event_time
    DIR/labels/<name>.parquet          labels, kept apart from the events so that nothing
                                       that reads events can see them by accident

Streams and their contracts are listed in `EVENT_STREAMS`. Label files are named in
`LABEL_FILES`. Everything is written in row groups so worlds of 10M+ events are written
and read in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from models.errors import TributaryError

from .contracts import DonorProfile, DonorRelationship, GiftEvent, TransactionEvent
from .contracts._base import Contract

MANIFEST_FILE = "world.json"
EVENTS_DIR = "events"
LABELS_DIR = "labels"

_TIME = pa.timestamp("us", tz="UTC")


class WorldKind(str, Enum):
    FRAUD = "fraud"
    DONORS = "donors"


@dataclass(frozen=True)
class EventStream:
    name: str
    contract: type[Contract]
    schema: pa.Schema

    @property
    def key_field(self) -> str:
        """The entity the event is partitioned by on the wire (its contract says which)."""
        return self.contract.KEY_FIELD


EVENT_STREAMS: dict[str, EventStream] = {
    s.name: s
    for s in (
        EventStream(
            "transactions",
            TransactionEvent,
            pa.schema(
                [
                    ("event_id", pa.string()),
                    ("event_time", _TIME),
                    ("source_account", pa.string()),
                    ("destination_account", pa.string()),
                    ("amount", pa.float64()),
                    ("currency", pa.string()),
                    ("type", pa.string()),
                    ("channel", pa.string()),
                    ("old_balance_source", pa.float64()),
                    ("new_balance_source", pa.float64()),
                    ("old_balance_destination", pa.float64()),
                    ("new_balance_destination", pa.float64()),
                ]
            ),
        ),
        EventStream(
            "gifts",
            GiftEvent,
            pa.schema(
                [
                    ("event_id", pa.string()),
                    ("event_time", _TIME),
                    ("donor_id", pa.string()),
                    ("amount", pa.float64()),
                    ("currency", pa.string()),
                    ("channel", pa.string()),
                    ("campaign", pa.string()),
                    ("is_recurring", pa.bool_()),
                    ("referrer_donor_id", pa.string()),
                ]
            ),
        ),
        EventStream(
            "donor_profiles",
            DonorProfile,
            pa.schema(
                [
                    ("event_id", pa.string()),
                    ("event_time", _TIME),
                    ("donor_id", pa.string()),
                    ("tenure_years", pa.float64()),
                    ("age_band", pa.string()),
                    ("wealth_index", pa.float64()),
                    ("home_owner", pa.bool_()),
                    ("region", pa.string()),
                    ("event_attendance_12m", pa.int64()),
                    ("email_open_rate_12m", pa.float64()),
                    ("volunteer_hours_12m", pa.float64()),
                    ("promotions_received_12m", pa.int64()),
                    ("prior_gift_count", pa.int64()),
                    ("prior_gift_total", pa.float64()),
                    ("months_since_last_gift", pa.float64()),
                    ("months_since_first_gift", pa.float64()),
                ]
            ),
        ),
        EventStream(
            "donor_relationships",
            DonorRelationship,
            pa.schema(
                [
                    ("event_id", pa.string()),
                    ("event_time", _TIME),
                    ("donor_id", pa.string()),
                    ("related_donor_id", pa.string()),
                    ("relationship_type", pa.string()),
                    ("action", pa.string()),
                    ("strength", pa.float64()),
                ]
            ),
        ),
    )
}

# name -> (schema, what it labels). Label files are optional; a world has those it can.
LABEL_FILES: dict[str, pa.Schema] = {
    # One row per transaction: is it fraud/laundering, and which planted pattern.
    "transactions": pa.schema(
        [
            ("event_id", pa.string()),
            ("is_fraud", pa.bool_()),
            ("pattern_id", pa.string()),
            ("pattern_type", pa.string()),
        ]
    ),
    # One row per account known to be (or not be) fraudulent, with the time it became so.
    "accounts": pa.schema(
        [
            ("account_id", pa.string()),
            ("is_fraud", pa.bool_()),
            ("fraud_since", _TIME),
        ]
    ),
    # One row per donor: the five segment targets, defined on the window after the cut-off.
    "donor_targets": pa.schema(
        [
            ("donor_id", pa.string()),
            ("high_engagement", pa.bool_()),
            ("network_influence", pa.bool_()),
            ("giving_consistency", pa.bool_()),
            ("high_value", pa.bool_()),
            ("recent_engagement", pa.bool_()),
        ]
    ),
    # One row per donor for data sets with a single response label (pva97nk).
    "donor_response": pa.schema(
        [
            ("donor_id", pa.string()),
            ("responded", pa.bool_()),
            ("response_amount", pa.float64()),
        ]
    ),
}


class WorldManifest(BaseModel):
    """What a world is and where it came from; written as `world.json`."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = 1
    kind: WorldKind
    synthetic: bool
    source: str = Field(description="generator name or the real data set it was imported from")
    description: str
    seed: int | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    parameters: dict = Field(default_factory=dict, description="generator or importer parameters")
    counts: dict[str, int] = Field(default_factory=dict, description="rows per event stream and label file")
    time_range: tuple[datetime, datetime] | None = None
    notes: list[str] = Field(default_factory=list, description="caveats a reader must know")
    # Donor worlds: features may only use events before `cutoff`; targets describe
    # what happens in [cutoff, horizon).
    cutoff: datetime | None = None
    horizon: datetime | None = None


def label_count_key(name: str) -> str:
    """Key of a label file in `WorldManifest.counts` (event streams use their bare name)."""
    return f"labels/{name}"


class WorldError(TributaryError):
    """A directory that is not a readable world; the message says what to do."""


class WorldWriter:
    """Streams event and label rows into a world directory in bounded memory.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> with WorldWriter(out) as w:
    ...     w.write_labels("accounts", {"account_id": ["a"], "is_fraud": [True], "fraud_since": [None]})
    ...     _ = w.finish(WorldManifest(kind="fraud", synthetic=True, source="doctest", description="x"))
    >>> open_world(out).manifest.counts
    {'labels/accounts': 1}
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / MANIFEST_FILE).unlink(missing_ok=True)  # a half-written world is not a world
        # Files of an earlier world in the same place would be read as part of this one.
        for folder in (EVENTS_DIR, LABELS_DIR):
            for stale in (self.out_dir / folder).glob("*.parquet"):
                stale.unlink()
        self._writers: dict[Path, pq.ParquetWriter] = {}
        self._counts: dict[str, int] = {}
        self._time_min: datetime | None = None
        self._time_max: datetime | None = None

    def write_events(self, stream: str, columns: dict | pa.Table) -> None:
        """Append rows to an event stream; rows must come in event-time order overall."""
        spec = _stream(stream)
        table = _as_table(columns, spec.schema)
        if table.num_rows == 0:
            return
        times = table.column("event_time")
        first, last = times[0].as_py(), times[-1].as_py()
        self._time_min = first if self._time_min is None else min(self._time_min, first)
        self._time_max = last if self._time_max is None else max(self._time_max, last)
        self._append(self.out_dir / EVENTS_DIR / f"{stream}.parquet", stream, table)

    def write_labels(self, name: str, columns: dict | pa.Table) -> None:
        if name not in LABEL_FILES:
            raise WorldError(f"unknown label file {name!r}; valid names: {', '.join(LABEL_FILES)}")
        self._append(self.out_dir / LABELS_DIR / f"{name}.parquet", label_count_key(name), _as_table(columns, LABEL_FILES[name]))

    def _append(self, path: Path, name: str, table: pa.Table) -> None:
        writer = self._writers.get(path)
        if writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            self._writers[path] = writer
        writer.write_table(table)
        self._counts[name] = self._counts.get(name, 0) + table.num_rows

    def finish(self, manifest: WorldManifest) -> WorldManifest:
        """Close every file and write the manifest last, so its presence means complete."""
        self.close()
        manifest = manifest.model_copy(
            update={
                "counts": dict(self._counts),
                "time_range": (self._time_min, self._time_max) if self._time_min else None,
            }
        )
        (self.out_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        return manifest

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def __enter__(self) -> "WorldWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class World:
    root: Path
    manifest: WorldManifest

    @property
    def streams(self) -> list[str]:
        """Event streams present in this world, in `EVENT_STREAMS` order."""
        return [name for name in EVENT_STREAMS if self.events_path(name).exists()]

    def events_path(self, stream: str) -> Path:
        _stream(stream)
        return self.root / EVENTS_DIR / f"{stream}.parquet"

    def labels_path(self, name: str) -> Path:
        return self.root / LABELS_DIR / f"{name}.parquet"

    def has_labels(self, name: str) -> bool:
        return self.labels_path(name).exists()

    def read_events(self, stream: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.events_path(stream), columns=columns)

    def iter_events(self, stream: str, batch_size: int = 65_536,
                    columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        yield from pq.ParquetFile(self.events_path(stream)).iter_batches(batch_size=batch_size, columns=columns)

    def read_labels(self, name: str) -> pa.Table:
        path = self.labels_path(name)
        if not path.exists():
            raise WorldError(f"world {self.root} has no {name!r} labels (looked for {path})")
        return pq.read_table(path)


def open_world(path: str | Path) -> World:
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.exists():
        raise WorldError(
            f"{root} is not a complete world: {MANIFEST_FILE} is missing. Create one with "
            "`tributary generate fraud|donors --out DIR` or `tributary import SOURCE PATH --out DIR`."
        )
    return World(root, WorldManifest.model_validate_json(manifest_path.read_text()))


def _stream(name: str) -> EventStream:
    try:
        return EVENT_STREAMS[name]
    except KeyError:
        raise WorldError(f"unknown event stream {name!r}; valid names: {', '.join(EVENT_STREAMS)}") from None


def _as_table(columns: dict | pa.Table, schema: pa.Schema) -> pa.Table:
    """Build a table with exactly `schema`; absent optional columns become nulls."""
    if isinstance(columns, pa.Table):
        columns = {name: columns.column(name) for name in columns.column_names}
    unknown = set(columns) - set(schema.names)
    if unknown:
        raise WorldError(f"columns {sorted(unknown)} are not part of the schema {schema.names}")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise WorldError(f"columns have different lengths: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    return pa.Table.from_arrays([_column(columns.get(f.name), f.type, n) for f in schema], schema=schema)


def _column(values, type_: pa.DataType, n: int) -> pa.Array | pa.ChunkedArray:
    if values is None:
        return pa.nulls(n, type=type_)
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.cast(type_)
    return pa.array(values, type=type_)
