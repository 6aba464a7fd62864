"""Per-account state for transaction features: a bounded window of raw events and running aggregates.

Columnar on purpose: one row per account in preallocated numpy arrays (grown by
doubling), so an account costs under a kilobyte instead of the tens of kilobytes a
dict of deques of Python objects would, and the compiled feature kernel
(`_transaction_kernel`) reads and writes it without touching Python objects. Row 0 is
a sentinel "no account" (all zeros): a missing neighbour reads as an account with no
history, with no special case.

The window is a ring of the account's last `window` transactions, in and out, holding
only what cannot be derived later (log amount, time, counterparty row, type and
direction); derived features are computed when read.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numba import njit, types
from numba.typed import Dict

from models.contracts import TransactionType
from models.features.account_names import AccountNames
from models.features.keyed_rows import NO_ROW, KeyedRows

# Seconds since this epoch fit int32 from 1931 to 2068: covers every data set we read.
TIME_EPOCH_S = 946_684_800  # 2000-01-01T00:00:00Z

TYPE_CODES = {t: i for i, t in enumerate(TransactionType)}
N_TRANSACTION_TYPES = len(TYPE_CODES)
OUTGOING = 8  # added to the type code in `kind` for money leaving the account

# One float64 row per account: bookkeeping, then running aggregates as of `agg_time`.
# Decayed counters are brought to the reader's time when read.
META_FIELDS = (
    "count",  # transactions ever recorded (in + out)
    "first_time",
    "agg_time",
    "n_out",
    "n_in",
    "sum_log_amount_out",
    "sum_log_amount_in",
    "max_log_amount",
    "rate_1h",  # exponentially decayed event counts
    "rate_1d",
    "amount_rate_1d",  # exponentially decayed sum of log amounts
)
RATE_1H_TAU_S = 3600.0
RATE_1D_TAU_S = 86_400.0

NO_ACCOUNT = NO_ROW
# Outgoing event ids remembered per account, to tell a repeated event id (a producer
# retry, or a reused id) from a new transaction: a retry follows its original closely.
RECENT_EVENT_IDS = 8
_RING_FIELDS = (("log_amount", np.float32), ("time", np.int32), ("counterparty", np.int32), ("kind", np.uint8))


@njit(cache=True)
def _index_rows(index, keys, n):
    for row in range(1, n):
        index[keys[row]] = np.int64(row)


@njit(cache=True)
def _fill_index(index, n):
    for i in range(n):
        index[np.int64(i) * np.int64(2654435761)] = np.int64(i)


def account_key(account: str) -> int:
    """Stable signed 64-bit id of an account (the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(account.encode(), digest_size=8).digest(), "little", signed=True)


def event_key(event_id: str) -> int:
    """Stable non-zero 64-bit id of an event id (0 means "no id" to the kernel)."""
    return account_key(event_id) or 1


class AccountState(KeyedRows):
    """Windows and aggregates of every account this worker (partition) has seen.

    Args:
        window: transactions kept per account (in and out together).
        capacity: account rows to allocate up front; grows by doubling.
    """

    def __init__(self, window: int = 50, capacity: int = 1024):
        self.window = window
        # account_key -> row; a numba dict so the compiled kernel can use it directly.
        self.index = Dict.empty(key_type=types.int64, value_type=types.int64)
        self.rows_used = np.ones(1, dtype=np.int64)  # next free row; row 0 is the sentinel
        self.max_offset = -1  # highest input offset recorded into any account
        self._allocate(max(capacity, 2))
        self.names = AccountNames(max(capacity, 2))  # row -> account id, for alert evidence

    def _allocate(self, capacity: int) -> None:
        self.ring = {name: np.zeros((capacity, self.window), dtype=dtype) for name, dtype in _RING_FIELDS}
        self.meta = np.zeros((capacity, len(META_FIELDS)), dtype=np.float64)
        self.keys = np.zeros(capacity, dtype=np.int64)  # row -> account_key, for export
        # Input offset of the last transaction recorded into each account (-1: none). A
        # redelivered event at or below it is already in the state and is not applied twice.
        self.last_offset = np.full(capacity, -1, dtype=np.int64)
        self.recent_ids = np.zeros((capacity, RECENT_EVENT_IDS), dtype=np.int64)  # event_key()s, 0 = empty
        self.recent_offsets = np.zeros((capacity, RECENT_EVENT_IDS), dtype=np.int64)  # the offset of each

    def __len__(self) -> int:
        return int(self.rows_used[0]) - 1

    @property
    def capacity(self) -> int:
        return self.meta.shape[0]

    def ensure_capacity(self, new_accounts: int) -> None:
        """Make room for up to `new_accounts` more rows before the kernel runs (it cannot grow arrays)."""
        needed = int(self.rows_used[0]) + new_accounts
        if needed <= self.capacity:
            return
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        old_ring, old_meta, old_keys, old_offsets = self.ring, self.meta, self.keys, self.last_offset
        old_recent, old_recent_offsets = self.recent_ids, self.recent_offsets
        self._allocate(capacity)
        for name in self.ring:
            self.ring[name][: old_ring[name].shape[0]] = old_ring[name]
        self.meta[: old_meta.shape[0]] = old_meta
        self.keys[: old_keys.shape[0]] = old_keys
        self.last_offset[: old_offsets.shape[0]] = old_offsets
        self.recent_ids[: old_recent.shape[0]] = old_recent
        self.recent_offsets[: old_recent_offsets.shape[0]] = old_recent_offsets

    def copy(self) -> "AccountState":
        """An independent copy (for simulations that read a state as it was earlier)."""
        other = AccountState.__new__(AccountState)
        other.window, other.max_offset = self.window, self.max_offset
        other.index = self.index.copy()
        other.rows_used = self.rows_used.copy()
        other.ring = {name: values.copy() for name, values in self.ring.items()}
        for name in ("meta", "keys", "last_offset", "recent_ids", "recent_offsets"):
            setattr(other, name, getattr(self, name).copy())
        other.names = self.names.copy()
        return other

    def nbytes_per_account(self) -> float:
        """Array bytes per account row, account ids included (the index dict comes on top)."""
        arrays = (*self.ring.values(), self.meta, self.keys, self.last_offset, self.recent_ids,
                  self.recent_offsets)
        return (sum(a.nbytes for a in arrays) + self.names.nbytes) / self.capacity

    @staticmethod
    def fill_index_for_measurement(index, n: int) -> None:
        """Insert n synthetic keys (compiled, as the kernel inserts): for memory benchmarks."""
        _fill_index(index, n)

    # -- the whole state as arrays, for checkpoints (stream.state.graph_checkpoint) ---

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Copies of the used rows of every array (the index is rebuilt from `keys`)."""
        n = int(self.rows_used[0])
        arrays = {f"ring.{name}": values[:n].copy() for name, values in self.ring.items()}
        for name in ("meta", "keys", "last_offset", "recent_ids", "recent_offsets"):
            arrays[name] = getattr(self, name)[:n].copy()
        arrays["max_offset"] = np.array([self.max_offset], dtype=np.int64)
        arrays.update(self.names.to_arrays())
        return arrays

    @classmethod
    def from_arrays(cls, window: int, arrays: dict[str, np.ndarray]) -> "AccountState":
        """The state `to_arrays` copied; ValueError when the arrays do not fit together."""
        n = len(arrays["keys"])
        if n < 1 or any(len(v) != n for k, v in arrays.items() if k != "max_offset" and not k.startswith("names.")):
            raise ValueError("the state's arrays have different lengths")
        if arrays["ring.time"].shape[1:] != (window,):
            raise ValueError(f"the state's window is {arrays['ring.time'].shape[1:]}, not {window}")
        state = cls(window, capacity=max(2, n))
        for name in state.ring:
            state.ring[name][:n] = arrays[f"ring.{name}"]
        for name in ("meta", "keys", "last_offset", "recent_ids", "recent_offsets"):
            getattr(state, name)[:n] = arrays[name]
        state.rows_used[0] = n
        state.max_offset = int(arrays["max_offset"][0])
        state.names = AccountNames.from_arrays(arrays, n)
        _index_rows(state.index, state.keys, n)
        if len(state.index) != n - 1:
            raise ValueError("the state's account keys repeat")
        return state

    # -- serialisation of accounts, for changelog-backed tables ---------------------

    def record_dtype(self) -> np.dtype:
        """Byte layout of one exported account; counterparties travel as stable keys, not rows."""
        W = self.window
        return np.dtype([
            ("last_offset", "<i8"),
            ("meta", "<f8", (len(META_FIELDS),)),
            ("log_amount", "<f4", (W,)),
            ("time", "<i4", (W,)),
            ("kind", "u1", (W,)),
            ("counterparty_key", "<i8", (W,)),
            ("recent_event_keys", "<i8", (RECENT_EVENT_IDS,)),
            ("recent_event_offsets", "<i8", (RECENT_EVENT_IDS,)),
        ])

    def export_rows(self, rows: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
        """(account keys, state records) of these rows, built with a few array copies."""
        rows = np.asarray(rows, dtype=np.int64)
        packed = np.empty(len(rows), dtype=self.record_dtype())
        packed["last_offset"] = self.last_offset[rows]
        packed["meta"] = self.meta[rows]
        for name in ("log_amount", "time", "kind"):
            packed[name] = self.ring[name][rows]
        packed["counterparty_key"] = self.keys[self.ring["counterparty"][rows]]
        packed["recent_event_keys"] = self.recent_ids[rows]
        packed["recent_event_offsets"] = self.recent_offsets[rows]
        raw = packed.view(np.uint8).reshape(len(rows), -1)
        return self.keys[rows], [row.tobytes() for row in raw]

    def export_account(self, key: int) -> bytes:
        """One account's state as bytes (see `record_dtype`)."""
        return self.export_rows(np.array([self.index[key]]))[1][0]

    def import_account(self, key: int, blob: bytes) -> int:
        record = np.frombuffer(blob, dtype=self.record_dtype(), count=1)[0]
        row = self.row(key)
        self.last_offset[row] = record["last_offset"]
        self.max_offset = max(self.max_offset, int(record["last_offset"]))
        self.meta[row] = record["meta"]
        self.recent_ids[row] = record["recent_event_keys"]
        self.recent_offsets[row] = record["recent_event_offsets"]
        for name in ("log_amount", "time", "kind"):
            self.ring[name][row] = record[name]
        # A counterparty not restored yet gets its (empty) row now; its own record fills it.
        self.ring["counterparty"][row] = [self.row(int(k)) if k else NO_ACCOUNT for k in record["counterparty_key"]]
        self.names.name_new_rows(self.keys, int(self.rows_used[0]), {})  # records hold no ids: unknown
        return row
