"""Reading importer input files: plain or gzip, header checks, typed columns, clear errors.

Every failure is an `ImportFormatError` that names the file, says what was expected and
what was found, and points at `tributary import --help`; a bad value names its line and
column. Values are parsed by pyarrow as whole columns; per-line Python runs only on the
error path, to find the line to report.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from models.worlds import WorldError

HELP_HINT = "see `tributary import --help`"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


class ImportFormatError(WorldError, ValueError):
    """An input that cannot be imported; the message says where, what was expected and what to do."""


@dataclass(frozen=True)
class Column:
    """One input column. `int` columns must be whole numbers and may not be blank;
    an optional number is a `float` column whose blanks become NaN."""

    name: str
    kind: Literal["str", "float", "int"] = "str"
    required: bool = True  # False: blank values are allowed
    may_be_absent: bool = False  # with a header: the column may be missing (all blank)

    def __post_init__(self) -> None:
        if self.kind == "int" and not self.required:
            raise ValueError(f"column {self.name}: an optional number must be kind='float' (blank -> NaN)")
        if self.may_be_absent and self.required:
            raise ValueError(f"column {self.name}: a column that may be absent cannot require values")


@dataclass(frozen=True)
class CsvSpec:
    """The shape of one input file.

    header: "required" (the named columns must be in the first line, in any order, extra
    columns ignored), "none" (exactly these columns, in this order, no header line) or
    "optional" (as "none", but a first line of column names is skipped: one that spells
    them, or one with words where the number columns are).
    whitespace: fields are separated by runs of spaces/tabs instead of commas.
    `expected()` spells the shape for error messages; `name?` marks a column that may be absent.
    """

    columns: tuple[Column, ...]
    header: Literal["required", "none", "optional"] = "required"
    whitespace: bool = False

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def expected(self) -> str:
        sep = " " if self.whitespace else ","
        text = sep.join(c.name + ("?" if c.may_be_absent else "") for c in self.columns)
        if self.header == "none":
            return f"{text} (no header line)"
        if self.header == "optional":
            return f"{text} (header line optional)"
        return text


@dataclass(frozen=True)
class Rows:
    """Parsed columns of one file, with the 1-based file line of every row."""

    file: str
    columns: dict[str, np.ndarray]
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.line)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def error(self, row: int, problem: str) -> ImportFormatError:
        """An error about one row (index into these arrays), naming its file line."""
        return ImportFormatError(f"{self.file}: line {int(self.line[row])}: {problem}; {HELP_HINT}")

    def check(self, bad: np.ndarray, problem: Callable[[int], str]) -> None:
        """Raise for the first row where `bad` is true; `problem(row)` says what is wrong."""
        if bad.any():
            row = int(np.argmax(bad))
            raise self.error(row, problem(row))


def read_bytes(path: Path, expected: str) -> bytes:
    """The contents of `path`, gunzipped when it starts with the gzip magic bytes."""
    path = Path(path)
    if not path.exists():
        raise ImportFormatError(f"{path}: file not found; expected a file with columns {expected}; {HELP_HINT}")
    if path.is_dir():
        raise ImportFormatError(f"{path}: is a directory; expected a file with columns {expected}; {HELP_HINT}")
    return decompress(path.read_bytes(), str(path), expected)


def decompress(data: bytes, file: str, expected: str) -> bytes:
    if data.startswith(GZIP_MAGIC):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise ImportFormatError(f"{file}: is not a readable gzip file ({error}); {HELP_HINT}") from None
    if data.startswith(ZIP_MAGIC):
        raise ImportFormatError(f"{file}: is a zip archive; unzip it and pass the CSV inside; {HELP_HINT}")
    return data


def _names_not_numbers(first: list[str], spec: CsvSpec) -> bool:
    """A first line whose every number column holds a word is a header, whatever its
    names: SNAP ships `source,target,weight,timestamp` over the same four columns."""
    numeric = [i for i, column in enumerate(spec.columns) if column.kind != "str"]

    def number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    return bool(numeric) and not any(number(first[i]) for i in numeric)


def read_csv(data: bytes, file: str, spec: CsvSpec) -> Rows:
    """Parse `data` (already decompressed) into typed numpy columns named as in `spec`.

    str columns come back as object arrays (None for blank), float columns as float64
    (NaN for blank), int columns as int64.
    """
    expected = spec.expected()
    # Trailing blank lines are harmless; every other line is a row, so line numbers are exact.
    data = data.rstrip()
    if not data:
        raise ImportFormatError(f"{file}: file is empty; expected columns {expected}; {HELP_HINT}")
    if spec.whitespace:
        data = re.sub(rb"[ \t]+", b",", re.sub(rb"(?m)^[ \t]+|[ \t\r]+$", b"", data))
    first = _fields(data.split(b"\n", 1)[0])

    wanted = {name.lower(): name for name in spec.names}
    header_hit = len(first) == len(spec.columns) and (
        [f.lower() for f in first] == list(wanted) or _names_not_numbers(first, spec))
    if spec.header == "required":
        found = {f.lower(): i for i, f in enumerate(first)}
        absent_ok = {c.name for c in spec.columns if c.may_be_absent}
        missing = [name for key, name in wanted.items() if key not in found and name not in absent_ok]
        if missing:
            raise ImportFormatError(
                f"{file}: expected columns {expected}; found {_show(first)} (missing {', '.join(missing)}); {HELP_HINT}"
            )
        index = {name: found[key] for key, name in wanted.items() if key in found}
        n_fields, skip = len(first), 1
    else:
        if len(first) != len(spec.columns):
            raise ImportFormatError(
                f"{file}: expected {len(spec.columns)} fields per line ({expected}); "
                f"found {len(first)} on line 1: {_show(first)}; {HELP_HINT}"
            )
        index = {name: i for i, name in enumerate(spec.names)}
        n_fields, skip = len(first), 1 if (spec.header == "optional" and header_hit) else 0

    invalid: list = []

    def on_invalid(row) -> str:
        invalid.append(row)
        return "skip"

    names = [f"c{i}" for i in range(n_fields)]
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip, use_threads=False),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                include_columns=[names[i] for i in index.values()],
                # Only an empty field is blank: arrow would also read "NA", "n/a", "null" and
                # "NaN" as null, turning a typo into a silently missing value.
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise ImportFormatError(f"{file}: cannot be read as a table with columns {expected} ({error}); {HELP_HINT}") from None
    if invalid:
        bad = invalid[0]
        more = f" ({len(invalid) - 1} more such lines)" if len(invalid) > 1 else ""
        raise ImportFormatError(
            f"{file}: line {bad.number}: expected {bad.expected_columns} fields, found {bad.actual_columns}: "
            f"{bad.text[:120]!r}{more}; expected columns {expected}; {HELP_HINT}"
        )
    if table.num_rows == 0:
        raise ImportFormatError(f"{file}: has a header but no data rows; expected columns {expected}; {HELP_HINT}")

    # invalid rows would have shifted this; there are none past this point.
    line = np.arange(1, table.num_rows + 1, dtype=np.int64) + skip
    columns = {
        col.name: _convert(
            table.column(names[index[col.name]]).combine_chunks()
            if col.name in index
            else pa.nulls(table.num_rows, pa.string()),
            col, file, line, expected,
        )
        for col in spec.columns
    }
    return Rows(file, columns, line)


def _fields(line: bytes) -> list[str]:
    text = line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r")
    return [f.strip().strip('"').strip() for f in text.split(",")]


def _show(fields: list[str], limit: int = 16) -> str:
    shown = ",".join(fields[:limit])
    return shown + (f",... ({len(fields)} columns)" if len(fields) > limit else "")


def _convert(values: pa.Array, col: Column, file: str, line: np.ndarray, expected: str) -> np.ndarray:
    values = pc.utf8_trim_whitespace(values)
    values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)

    def fail(i: int, problem: str) -> ImportFormatError:
        return ImportFormatError(
            f"{file}: line {int(line[i])}: column {col.name} {problem}; expected columns {expected}; {HELP_HINT}"
        )

    blank = values.is_null().to_numpy(zero_copy_only=False)
    if col.required and blank.any():
        raise fail(int(np.argmax(blank)), "is blank")
    if col.kind == "str":
        return values.to_numpy(zero_copy_only=False)

    try:
        numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        # Error path only: find the first value arrow refuses, trying unusual-looking ones first.
        plain = pc.match_substring_regex(values, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
        odd = np.flatnonzero(~plain.fill_null(True).to_numpy(zero_copy_only=False))
        for i in [*odd, *range(len(values))]:
            try:
                pc.cast(values.slice(int(i), 1), pa.float64())
            except pa.ArrowInvalid:
                raise fail(int(i), f"is {values[int(i)].as_py()!r}, not a number") from None
        raise  # arrow refused the column but accepted every value alone: not expected
    numbers = np.where(blank, np.nan, numbers)
    bad = ~blank & ~np.isfinite(numbers)
    if bad.any():
        i = int(np.argmax(bad))
        raise fail(i, f"is {values[i].as_py()!r}, not a finite number")
    if col.kind == "int":
        fractional = numbers != np.floor(numbers)
        if fractional.any():
            i = int(np.argmax(fractional))
            raise fail(i, f"is {values[i].as_py()!r}, not a whole number")
        return numbers.astype(np.int64)
    return numbers
