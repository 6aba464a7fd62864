"""Rows of a CSV, JSON Lines or Parquet file, one at a time, with the line each came from.

The contract-schema importer reads files of any size, so nothing here holds more than
one row (CSV, JSON Lines) or one row group batch (Parquet) at a time. CSV and JSON
Lines may be gzip-compressed, whatever their name says. A line that is not a JSON
object comes out as a `BadRow`, to be rejected like any other invalid row, instead of
stopping the import.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._csv import GZIP_MAGIC, HELP_HINT, ImportFormatError

Format = Literal["csv", "jsonl", "parquet"]
PARQUET_MAGIC = b"PAR1"
PARQUET_BATCH_ROWS = 8_192


@dataclass(frozen=True)
class BadRow:
    """A line that could not even be read as a row."""

    reason: str


def detect_format(path: Path) -> Format:
    """From the first bytes (Parquet) or the name (.jsonl, .ndjson, .json, else CSV)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head == PARQUET_MAGIC:
        return "parquet"
    names = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if names and names[-1] in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv"


def read_rows(path: Path, fmt: Format) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    """(line number, row) for every data row; CSV values are strings, '' for blank."""
    if fmt == "parquet":
        yield from _parquet_rows(path)
    elif fmt == "jsonl":
        yield from _jsonl_rows(path)
    else:
        yield from _csv_rows(path)


def _text(path: Path) -> io.TextIOBase:
    with path.open("rb") as handle:
        compressed = handle.read(2) == GZIP_MAGIC
    binary = gzip.open(path, "rb") if compressed else path.open("rb")
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    with _text(path) as text:
        reader = csv.reader(text)
        header = next(reader, None)
        if not header:
            raise ImportFormatError(f"{path}: the file is empty; a CSV needs a header line naming its columns; "
                                    f"{HELP_HINT}")
        names = [name.strip() for name in header]
        line = reader.line_num
        for values in reader:
            first, line = line + 1, reader.line_num  # a quoted field may span lines: report where the row starts
            if not values:
                continue  # a blank line
            if len(values) != len(names):
                yield first, BadRow(f"{len(values)} fields where the header has {len(names)}")
                continue
            yield first, dict(zip(names, values))


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    with _text(path) as text:
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, BadRow(f"not JSON ({error.msg} at column {error.colno})")
                continue
            yield number, row if isinstance(row, dict) else BadRow(f"a JSON {type(row).__name__}, not an object")


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            number += 1  # Parquet has no lines: the row number, from 1
            yield number, row
