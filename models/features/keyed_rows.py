"""Entities in columnar state, found by a stable 64-bit key: the index both states share.

Accounts (transactions) and donors (gifts) are each a row in preallocated arrays; a
numba typed dict maps an entity's key to its row so compiled kernels can look rows up
and create them. Row 0 is a sentinel "no entity" (all zeros): reading an unknown entity
reads an empty history, with no special case.
"""

from __future__ import annotations

from numba import njit

NO_ROW = 0


@njit(cache=True, nogil=True)
def row_for(key, index, rows_used, keys):
    """Row of `key`, created on first sight (the caller has made room: kernels cannot grow arrays)."""
    if key in index:
        return index[key]
    row = rows_used[0]
    rows_used[0] = row + 1
    index[key] = row
    keys[row] = key
    return row


class KeyedRows:
    """Mixin: `lookup`/`row` over `self.index`, `self.rows_used`, `self.keys`, `self.ensure_capacity`."""

    def lookup(self, key: int) -> int:
        """Row of an entity key, or NO_ROW if never seen (reading never creates state)."""
        return int(self.index.get(key, NO_ROW))

    def row(self, key: int) -> int:
        """Row of an entity key, created empty on first sight."""
        row = self.index.get(key)
        if row is None:
            self.ensure_capacity(1)
            row = int(self.rows_used[0])
            self.rows_used[0] = row + 1
            self.index[key] = row
            self.keys[row] = key
        return int(row)
