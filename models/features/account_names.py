"""The account id of every state row, so alerts can name the counterparties they cite.

The state finds accounts by a 64-bit hash of their id (account_state.account_key) and
cannot turn it back into the id. An alert's evidence names the counterparties of the
transactions that drove its score, so each row keeps its id too: the ids of all rows
back to back in one byte buffer, with each row's end offset. About the length of the
id plus 4 bytes per account (PaySim's "C1231006815": 15 bytes), against the 50 or more
a Python string costs in a dict.

Rows are appended in order (keyed_rows), so naming them is appending: after the kernel
creates rows, `name_new_rows` names each from the ids of the transactions that created
it. A row created without its id (an account restored from a record that had none)
is named "" and reads as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class AccountNames:
    """Row -> account id, for rows 0 (the sentinel, unnamed) up to `count`."""

    def __init__(self, capacity: int = 1024):
        self.ends = np.zeros(max(capacity, 2), dtype=np.uint32)  # ends[r]: where row r's id ends in `data`
        self.data = np.zeros(16 * max(capacity, 2), dtype=np.uint8)
        self.count = 1  # rows named; row 0 has the empty name

    def name_new_rows(self, keys: np.ndarray, rows_used: int, ids: Mapping[int, str]) -> None:
        """Name rows `count`..`rows_used - 1`, whose account keys are `keys[row]`, from `ids` (key -> id)."""
        if rows_used <= self.count:
            return
        encoded = [ids.get(key, "").encode() for key in keys[self.count:rows_used].tolist()]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        start = int(self.ends[self.count - 1])
        ends = start + np.cumsum(lengths)
        self._fit(rows_used, int(ends[-1]) if len(ends) else start)
        self.ends[self.count:rows_used] = ends
        self.data[start:start + int(lengths.sum())] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.count = rows_used

    def name(self, row: int) -> str | None:
        """The account id of `row`, or None when unknown (never named, or named without an id)."""
        if row <= 0 or row >= self.count:
            return None
        start, end = int(self.ends[row - 1]), int(self.ends[row])
        return self.data[start:end].tobytes().decode() if end > start else None

    def _fit(self, rows: int, size: int) -> None:
        """Grow both buffers by doubling, as the state's arrays grow."""
        if rows > len(self.ends):
            grown = np.zeros(max(rows, 2 * len(self.ends)), dtype=np.uint32)
            grown[: self.count] = self.ends[: self.count]
            self.ends = grown
        if size > len(self.data):
            if size >= 1 << 32:
                raise OverflowError("account ids take more than 4 GiB in all")
            data = np.zeros(max(size, 2 * len(self.data)), dtype=np.uint8)
            data[: len(self.data)] = self.data
            self.data = data

    @property
    def nbytes(self) -> int:
        return self.ends.nbytes + self.data.nbytes

    def copy(self) -> "AccountNames":
        other = AccountNames.__new__(AccountNames)
        other.ends, other.data, other.count = self.ends.copy(), self.data.copy(), self.count
        return other

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"names.ends": self.ends[: self.count].copy(),
                "names.data": self.data[: int(self.ends[self.count - 1])].copy()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], rows_used: int) -> "AccountNames":
        """The names `to_arrays` copied; without them (a checkpoint from before names), every row is unknown."""
        names = cls(capacity=rows_used)
        ends, data = arrays.get("names.ends"), arrays.get("names.data")
        if ends is None or data is None:
            names.ends[:rows_used] = 0
            names.count = rows_used
            return names
        if len(ends) != rows_used or (len(ends) and int(ends[-1]) != len(data)):
            raise ValueError("the state's account names do not fit its rows")
        names._fit(rows_used, len(data))
        names.ends[:rows_used] = ends
        names.data[: len(data)] = data
        names.count = rows_used
        return names
