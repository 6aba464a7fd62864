"""Causal features of a transaction, shared by training and the streaming worker.

For each transaction, in arrival (event-time) order:
  1. compute its features from what the state knows *before* it: both accounts' windows
     and aggregates, their latest counterparties (hop 1) and those counterparties' latest
     counterparties (hop 2), each read as of the transaction's time;
  2. then record the transaction into the state (predict first, then update).
The work is one compiled loop (`_transaction_kernel`), sequential and exact, so a batch
of any size gives the same features as one event at a time, and the offline pipeline,
which runs this same code over a world, gives the same features as the worker.

Shapes (B events, W window, K1/K2 fan-out, the 2 endpoints are source then destination):
    event   [B, F_EVENT]                   what the transaction itself says
    seq     [B, 2, W, F_SEQ], seq_mask     each endpoint's window, oldest first, right-aligned
    node    [B, 2, F_NODE]                 each endpoint's aggregates
    hop1    [B, 2, K1, F_NODE + F_EDGE], hop1_mask
    hop2    [B, 2, K1, K2, F_NODE + F_EDGE], hop2_mask
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from models.contracts import TransactionChannel, TransactionEvent, TransactionType
from models.features._transaction_kernel import featurize_and_record
from models.features.account_state import META_FIELDS, TIME_EPOCH_S, TYPE_CODES, AccountState, account_key, event_key

TRANSACTION_CHANNEL_CODES = {c: i for i, c in enumerate(TransactionChannel)}

_BASE_EVENT_FEATURES = (
    "log_amount",
    *(f"type_{t.value}" for t in TransactionType),
    *(f"channel_{c.value}" for c in TransactionChannel),
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
    "source_known",
    "destination_known",
    "source_log_hours_since_last",
    "destination_log_hours_since_last",
    "pair_count_in_window",
    "amount_vs_source_mean_out",
    "amount_vs_destination_mean_in",
)
# What an AML engineer computes (models.features._rich_kernel), appended to the event
# features so every model, and the gradient-boosting baseline, gets them.
_SIDE_FEATURES = (
    *(f"out_count_{h}" for h in ("1h", "1d", "7d", "30d")),
    *(f"in_count_{h}" for h in ("1h", "1d", "7d", "30d")),
    "out_log_sum_1d", "out_log_sum_7d", "in_log_sum_1d", "in_log_sum_7d",
    "out_distinct_7d", "in_distinct_7d", "out_distinct", "in_distinct",
    "fan_out_ratio", "fan_in_ratio",
    "net_inflow_7d",
    "min_log_amount",
    "amount_echo_exact", "amount_echo_10pct",
)
RICH_FEATURES = (
    "amount_round_100", "amount_round_1000", "amount_just_under_10k",
    *(f"source_{n}" for n in _SIDE_FEATURES),
    *(f"destination_{n}" for n in _SIDE_FEATURES),
    "source_has_incoming", "amount_vs_source_last_incoming", "source_log_hours_since_incoming",
    "amount_share_of_source_inflow_1d",
    "pair_log_sum", "pair_reciprocal_count", "pair_log_hours_since_last",
    "common_counterparties", "cycles_via_1", "cycles_via_2",
)
EVENT_FEATURES = (*_BASE_EVENT_FEATURES, *RICH_FEATURES)
SEQ_FEATURES = (
    "log_amount",
    "outgoing",
    *(f"type_{t.value}" for t in TransactionType),
    "log_hours_ago",
    "log_hours_since_previous",
    "hour_sin",
    "hour_cos",
    "with_current_counterparty",
)
NODE_FEATURES = (
    "known",
    "log_count",
    "log_n_out",
    "log_n_in",
    "mean_log_amount_out",
    "mean_log_amount_in",
    "max_log_amount",
    "log_rate_1h",
    "log_rate_1d",
    "mean_log_amount_1d",
    "log_days_since_first",
    "log_hours_since_last",
)
EDGE_FEATURES = ("edge_log_amount", "edge_outgoing", *(f"edge_type_{t.value}" for t in TransactionType), "edge_log_hours_ago")

F_EVENT, F_SEQ, F_NODE, F_EDGE = len(EVENT_FEATURES), len(SEQ_FEATURES), len(NODE_FEATURES), len(EDGE_FEATURES)


@dataclass(frozen=True)
class TransactionFeatureConfig:
    window: int = 50
    fanout1: int = 10
    fanout2: int = 5

    def schema(self) -> dict:
        """Everything a trained model depends on; its hash guards artifacts against drift."""
        return {
            "name": "transactions",
            "version": 2,
            "config": asdict(self),
            "event": list(EVENT_FEATURES),
            "seq": list(SEQ_FEATURES),
            "node": list(NODE_FEATURES),
            "edge": list(EDGE_FEATURES),
            "state_meta": list(META_FIELDS),
        }

    def schema_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.schema(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TransactionBatch:
    """Model inputs for a batch of transactions (float32 numpy arrays, see module doc)."""

    event: np.ndarray
    seq: np.ndarray
    seq_mask: np.ndarray
    node: np.ndarray
    hop1: np.ndarray
    hop1_mask: np.ndarray
    hop2: np.ndarray
    hop2_mask: np.ndarray
    # True where the transaction was already in the state (redelivered after a restart):
    # its features are empty and it must not be scored again.
    replayed: np.ndarray
    # True where the transaction repeats an event id among its source's last ones
    # (account_state.RECENT_EVENT_IDS): not recorded, no features, never to be scored.
    duplicate: np.ndarray
    # State rows of (source, destination) per transaction: the accounts it changed.
    rows: np.ndarray
    # Where each step of `seq` comes from: its counterparty's state row (0: an empty step)
    # and its time (state seconds). What an alert's evidence cites; not a model input.
    seq_counterparty: np.ndarray
    seq_time: np.ndarray

    def __len__(self) -> int:
        return self.event.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """The model inputs (everything but the bookkeeping: `NOT_INPUTS`)."""
        return {k: v for k, v in self.__dict__.items() if k not in NOT_INPUTS}

    @classmethod
    def concat(cls, batches: list["TransactionBatch"]) -> "TransactionBatch":
        return cls(**{k: np.concatenate([b.__dict__[k] for b in batches]) for k in batches[0].__dict__})

    def take(self, index) -> "TransactionBatch":
        return TransactionBatch(**{k: v[index] for k, v in self.__dict__.items()})


NOT_INPUTS = ("replayed", "duplicate", "rows", "seq_counterparty", "seq_time")


@dataclass(frozen=True)
class RawTransaction:
    """The fields of a transaction the features use, decoupled from how it was read."""

    source: str
    destination: str
    amount: float
    timestamp_s: float  # Unix seconds
    type_code: int
    channel_code: int  # -1 when absent
    event_id: str | None = None  # tells a repeated event id from a new transaction

    @classmethod
    def from_event(cls, event: TransactionEvent) -> "RawTransaction":
        return cls(
            event.source_account,
            event.destination_account,
            event.amount,
            event.event_time.timestamp(),
            TYPE_CODES[event.type],
            TRANSACTION_CHANNEL_CODES[event.channel] if event.channel is not None else -1,
            event.event_id,
        )


class TransactionFeaturizer:
    """Turns transactions into model inputs, in order, keeping the state they need.

    >>> f = TransactionFeaturizer(AccountState(window=4), TransactionFeatureConfig(window=4, fanout1=2, fanout2=2))
    >>> t = [RawTransaction("a", "b", 10.0, 1.7e9 + i * 60, 1, 0) for i in range(3)]
    >>> batch = f.featurize(t)
    >>> batch.seq_mask[:, 0].sum(axis=1).tolist()  # how much history the source had
    [0.0, 1.0, 2.0]
    """

    def __init__(self, state: AccountState, config: TransactionFeatureConfig = TransactionFeatureConfig()):
        if state.window != config.window:
            raise ValueError(f"state keeps {state.window} events per account, features expect {config.window}")
        self.state = state
        self.config = config

    def featurize(self, transactions: list[RawTransaction], featurize: np.ndarray | None = None) -> TransactionBatch:
        """Features of each transaction from the state before it; records each one after
        (`featurize`: as in `featurize_columns`)."""
        return self.featurize_columns(
            [tx.source for tx in transactions],
            [tx.destination for tx in transactions],
            np.array([tx.amount for tx in transactions], dtype=np.float64),
            np.array([tx.timestamp_s for tx in transactions], dtype=np.float64),
            np.array([tx.type_code for tx in transactions], dtype=np.int64),
            np.array([tx.channel_code for tx in transactions], dtype=np.int64),
            event_ids=[tx.event_id for tx in transactions], featurize=featurize,
        )

    def featurize_columns(
        self,
        sources: list[str],
        destinations: list[str],
        amounts: np.ndarray,
        timestamps_s: np.ndarray,
        type_codes: np.ndarray,
        channel_codes: np.ndarray,
        offsets: np.ndarray | None = None,
        published_offset: int = -1,
        event_ids: list[str | None] | None = None,
        featurize: np.ndarray | None = None,
    ) -> TransactionBatch:
        """`featurize` for column-shaped input (what the offline pipeline reads from Parquet).

        `offsets`: the transactions' input offsets (the worker passes Kafka offsets, so a
        redelivered transaction is not applied twice; see `TransactionBatch.replayed`).
        Without them, transactions are numbered on from the last one this state recorded.
        `published_offset`: transactions at or below it already have published outputs
        and are only recorded where missing, never featurised again.
        `event_ids`: a transaction repeating an event id among its source account's last
        ones is marked `duplicate` and left out of the state (see `TransactionBatch`).
        `featurize`: where false, the transaction is recorded but not featurised (and
        marked `replayed`); default: every one is featurised.
        """
        n, cfg, state = len(sources), self.config, self.state
        W, K1, K2 = cfg.window, cfg.fanout1, cfg.fanout2
        batch = TransactionBatch(
            event=np.zeros((n, F_EVENT), np.float32),
            seq=np.zeros((n, 2, W, F_SEQ), np.float32),
            seq_mask=np.zeros((n, 2, W), np.float32),
            node=np.zeros((n, 2, F_NODE), np.float32),
            hop1=np.zeros((n, 2, K1, F_NODE + F_EDGE), np.float32),
            hop1_mask=np.zeros((n, 2, K1), np.float32),
            hop2=np.zeros((n, 2, K1, K2, F_NODE + F_EDGE), np.float32),
            hop2_mask=np.zeros((n, 2, K1, K2), np.float32),
            replayed=np.zeros(n, dtype=np.bool_),
            duplicate=np.zeros(n, dtype=np.bool_),
            rows=np.zeros((n, 2), dtype=np.int64),
            seq_counterparty=np.zeros((n, 2, W), np.int32),
            seq_time=np.zeros((n, 2, W), np.int32),
        )
        if n == 0:
            return batch
        state.ensure_capacity(2 * n)
        if offsets is None:
            offsets = state.max_offset + 1 + np.arange(n, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        state.max_offset = max(state.max_offset, int(offsets.max()))
        source_keys = np.array([account_key(a) for a in sources], dtype=np.int64)
        destination_keys = np.array([account_key(a) for a in destinations], dtype=np.int64)
        featurize_and_record(
            source_keys,
            destination_keys,
            (np.floor(timestamps_s) - TIME_EPOCH_S).astype(np.int64),
            np.asarray(amounts, dtype=np.float64),
            np.log1p(amounts).astype(np.float32),
            np.asarray(type_codes, dtype=np.int64),
            np.asarray(channel_codes, dtype=np.int64),
            offsets,
            np.int64(published_offset),
            np.array([event_key(e) if e else 0 for e in event_ids] if event_ids is not None else np.zeros(n), dtype=np.int64),
            np.ones(n, dtype=np.bool_) if featurize is None else np.asarray(featurize, dtype=np.bool_),
            state.index, state.rows_used, state.keys, state.meta,
            state.ring["log_amount"], state.ring["time"], state.ring["counterparty"], state.ring["kind"],
            state.last_offset, state.recent_ids, state.recent_offsets,
            batch.event, batch.seq, batch.seq_mask, batch.node, batch.hop1, batch.hop1_mask, batch.hop2, batch.hop2_mask,
            batch.replayed, batch.duplicate,
            batch.rows, batch.seq_counterparty, batch.seq_time,
        )
        if state.rows_used[0] > state.names.count:  # the kernel created rows: name them
            ids = dict(zip(source_keys.tolist(), sources))
            ids.update(zip(destination_keys.tolist(), destinations))
            state.names.name_new_rows(state.keys, int(state.rows_used[0]), ids)
        return batch

