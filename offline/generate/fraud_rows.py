"""Rows of the fraud world as numpy columns, and their conversion to world tables.

The generator works on integer account indices and small integer codes; strings are
made only once per day, in `event_table`, with Arrow kernels. That keeps a day of a
million-account world at a few hundred bytes per row and no Python objects per row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.contracts import TransactionChannel, TransactionType

# Codes index these tuples; built from the contract enums so names cannot drift apart.
TYPES: tuple[str, ...] = tuple(t.value for t in TransactionType)
CHANNELS: tuple[str, ...] = tuple(c.value for c in TransactionChannel)
PAYMENT, TRANSFER, CASH_OUT, CASH_IN, DEBIT = (TYPES.index(t.value) for t in (
    TransactionType.PAYMENT, TransactionType.TRANSFER, TransactionType.CASH_OUT,
    TransactionType.CASH_IN, TransactionType.DEBIT,
))
MOBILE, WEB, CARD, BRANCH, ATM, API = (CHANNELS.index(c.value) for c in (
    TransactionChannel.MOBILE, TransactionChannel.WEB, TransactionChannel.CARD,
    TransactionChannel.BRANCH, TransactionChannel.ATM, TransactionChannel.API,
))

# A Monday, so that day index % 7 is the weekday (0 = Monday).
START = datetime(2025, 1, 6, tzinfo=timezone.utc)
START_US = int(START.timestamp()) * 1_000_000
DAY_US = 86_400 * 1_000_000
HOUR_US = 3_600 * 1_000_000

_TIME = pa.timestamp("us", tz="UTC")


@dataclass
class Rows:
    """Transactions as parallel arrays. `pattern` is -1 and the flags False for normal traffic.

    `src_fraud` / `dst_fraud` say whether that side of the row is a fraudster taking part
    in the pattern (a mule, a launderer); the victim of a takeover and the cash agent of
    a cash-out are participants but not fraudsters. Account labels are derived from them.
    """

    time: np.ndarray  # int64, microseconds since the Unix epoch, UTC
    src: np.ndarray  # int64 account index
    dst: np.ndarray  # int64 account index
    amount: np.ndarray  # float64
    type_code: np.ndarray  # int8, index into TYPES
    channel: np.ndarray  # int8, index into CHANNELS
    pattern: np.ndarray  # int64 pattern number, -1 for normal traffic
    pattern_type: np.ndarray  # int8 index into the typology names, -1 for normal traffic
    src_fraud: np.ndarray  # bool
    dst_fraud: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.time)

    def take(self, index: np.ndarray) -> "Rows":
        """Rows at `index` (an integer or boolean array)."""
        return Rows(*(getattr(self, f.name)[index] for f in fields(self)))

    @staticmethod
    def concat(parts: list["Rows"]) -> "Rows":
        parts = [p for p in parts if len(p)] or [empty_rows()]
        return Rows(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Rows)))


def empty_rows() -> Rows:
    return normal_rows(*(np.zeros(0, dtype) for dtype in (np.int64, np.int64, np.int64, np.float64, np.int8, np.int8)))


def normal_rows(time, src, dst, amount, type_code, channel) -> Rows:
    """Rows of ordinary traffic: no pattern, nobody a fraudster."""
    n = len(time)
    return Rows(
        time=np.asarray(time, np.int64),
        src=np.asarray(src, np.int64),
        dst=np.asarray(dst, np.int64),
        amount=np.asarray(amount, np.float64),
        type_code=np.broadcast_to(np.asarray(type_code, np.int8), (n,)).copy(),
        channel=np.asarray(channel, np.int8),
        pattern=np.full(n, -1, np.int64),
        pattern_type=np.full(n, -1, np.int8),
        src_fraud=np.zeros(n, bool),
        dst_fraud=np.zeros(n, bool),
    )


def order_strictly(rows: Rows, after_us: int) -> tuple[Rows, int]:
    """Sort by time and make times strictly increasing, all later than `after_us`.

    Ties at microsecond precision do happen at 10M+ rows; moving a tied row on by a
    microsecond gives every consumer one unambiguous order without changing any
    pattern's hop order (hops are seconds apart). Returns the rows and the last time.
    """
    # A stable sort of rows built in a fixed order keeps ties deterministic.
    rows = rows.take(np.argsort(rows.time, kind="stable"))
    if len(rows) == 0:
        return rows, after_us
    steps = np.arange(len(rows), dtype=np.int64)
    shifted = rows.time - steps
    shifted[0] = max(shifted[0], after_us + 1)
    rows.time = np.maximum.accumulate(shifted) + steps
    return rows, int(rows.time[-1])


def check_rows(rows: Rows, n_accounts: int) -> None:
    """Cheap vectorised checks of what the contract demands; a failure is a generator bug."""
    if len(rows) == 0:
        return
    problems = []
    if np.any(rows.src == rows.dst):
        problems.append("self-transfers")
    if not np.all(np.isfinite(rows.amount)) or np.any(rows.amount <= 0) or np.any(rows.amount > 1e12):
        problems.append("amounts outside (0, 1e12]")
    if np.any(np.diff(rows.time) <= 0):
        problems.append("times not strictly increasing")
    if min(rows.src.min(), rows.dst.min()) < 0 or max(rows.src.max(), rows.dst.max()) >= n_accounts:
        problems.append("account index out of range")
    if problems:
        raise AssertionError(f"fraud world generator produced invalid rows: {', '.join(problems)}")


def account_ids(n: int) -> pa.Array:
    """'acct0000123'-style ids, zero-padded to at least 7 digits.

    >>> account_ids(2).to_pylist()
    ['acct0000000', 'acct0000001']
    """
    width = max(7, len(str(n - 1)))
    return _prefixed(np.arange(n, dtype=np.int64), "acct", width)


def event_table(rows: Rows, first_number: int, ids: pa.Array) -> dict[str, pa.Array]:
    """Columns of the 'transactions' event stream; balances are left out (written as nulls)."""
    n = len(rows)
    return {
        "event_id": _prefixed(np.arange(first_number, first_number + n, dtype=np.int64), "tx", 12),
        "event_time": pa.array(rows.time, type=_TIME),
        "source_account": ids.take(pa.array(rows.src)),
        "destination_account": ids.take(pa.array(rows.dst)),
        "amount": pa.array(rows.amount, type=pa.float64()),
        "currency": pa.repeat(pa.scalar("USD"), n),
        "type": pa.array(TYPES).take(pa.array(rows.type_code)),
        "channel": pa.array(CHANNELS).take(pa.array(rows.channel)),
    }


def label_table(events: dict[str, pa.Array], rows: Rows, typologies: tuple[str, ...]) -> dict[str, pa.Array]:
    """Columns of the 'transactions' label file, aligned row for row with `events`."""
    normal = rows.pattern < 0
    pattern = pa.array(rows.pattern, mask=normal)
    return {
        "event_id": events["event_id"],
        "is_fraud": pa.array(~normal),
        "pattern_id": pc.binary_join_element_wise("p", pc.utf8_lpad(pattern.cast(pa.string()), 6, "0"), ""),
        "pattern_type": pa.array(typologies).take(pa.array(rows.pattern_type.astype(np.int64), mask=normal)),
    }


def account_label_table(ids: pa.Array, fraud_since_us: np.ndarray) -> dict[str, pa.Array]:
    """Columns of the 'accounts' label file; `fraud_since_us` is -1 for honest accounts."""
    honest = fraud_since_us < 0
    return {
        "account_id": ids,
        "is_fraud": pa.array(~honest),
        "fraud_since": pa.array(fraud_since_us, type=_TIME, mask=honest),
    }


def _prefixed(numbers: np.ndarray, prefix: str, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")
