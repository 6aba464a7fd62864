"""A fraud world as model inputs: causal features for every transaction, split by time.

Features come from `models.features.transactions`, the code the worker runs, applied to
the whole stream in event-time order, so every transaction's features see only what came
before it. The split is by time: the earliest `train` share of the stream trains, the
next `val` share chooses epochs and thresholds, the rest is held out. Features of a
validation or test event still use the history from the training period, as they would
in production.

Features are those a worker with `partitions` input partitions serves (see
models.features.served_view): quality is measured where the model is served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.features.account_state import TYPE_CODES
from models.features.partitioning import DEFAULT_PARTITIONS
from models.features.served_view import ServedViewFeaturizer, tie_aligned
from models.features.transactions import TRANSACTION_CHANNEL_CODES, TransactionBatch, TransactionFeatureConfig
from models.progress import progress as progress_bar
from models.worlds import World, WorldError

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")
_TYPE_BY_NAME = {t.value: code for t, code in TYPE_CODES.items()}
_CHANNEL_BY_NAME = {c.value: code for c, code in TRANSACTION_CHANNEL_CODES.items()}


@dataclass
class FraudDataset:
    """Selected transactions' model inputs with labels, times and split membership."""

    inputs: TransactionBatch
    labels: np.ndarray  # bool
    times: np.ndarray  # unix seconds
    event_ids: np.ndarray  # object (str)
    sources: np.ndarray  # object (str): source account of each row
    destinations: np.ndarray  # object (str)
    split: np.ndarray  # int8: TRAIN | VALIDATION | TEST
    boundaries: tuple[float, float]  # unix seconds where val and test start
    total_events: int
    partitions: int  # the worker's input partitions these features simulate

    def part(self, which: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        mask = self.split == which
        return self.inputs.take(mask).arrays(), self.labels[mask]

    def describe(self) -> dict:
        out = {"events": self.total_events, "partitions": self.partitions, "boundaries_unix_s": list(self.boundaries)}
        for code, name in enumerate(SPLIT_NAMES):
            mask = self.split == code
            out[name] = {"rows": int(mask.sum()), "positives": int(self.labels[mask].sum())}
        return out


def type_and_channel_codes(table: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    types = np.array([_TYPE_BY_NAME[t] for t in table.column("type").to_pylist()], dtype=np.int64)
    channels = np.array([_CHANNEL_BY_NAME.get(c, -1) for c in table.column("channel").to_pylist()], dtype=np.int64)
    return types, channels


def load_fraud_dataset(
    world: World,
    config: TransactionFeatureConfig,
    split_shares: tuple[float, float] = (0.6, 0.2),
    train_negative_share: float = 0.25,
    seed: int = 0,
    progress: bool = True,
    chunk: int = 8192,
    partitions: int = DEFAULT_PARTITIONS,
    featurizer: ServedViewFeaturizer | None = None,
) -> FraudDataset:
    """Featurise every transaction of `world` in order; keep all positives and a sample of
    training negatives (`train_negative_share`), and every validation and test row.

    `featurizer` replaces the served view (benchmarks that simulate other views).
    Sampling only thins the *training* negatives: the state still sees every event, and
    validation and test keep the true class balance, so their metrics are honest.
    """
    if "transactions" not in world.streams:
        raise WorldError(f"world {world.root} has no transactions to train a fraud model on")
    if not world.has_labels("transactions"):
        raise WorldError(f"world {world.root} has no transaction labels (labels/transactions.parquet)")
    label_table = world.read_labels("transactions")
    is_fraud = dict(zip(label_table.column("event_id").to_pylist(), label_table.column("is_fraud").to_pylist()))
    times_all = pc.divide(world.read_events("transactions", ["event_time"]).column("event_time").cast(pa.int64()), 1_000_000.0)
    times_all = times_all.to_numpy()
    val_start, test_start = np.quantile(times_all, [split_shares[0], split_shares[0] + split_shares[1]])
    rng = np.random.default_rng(seed)

    if featurizer is None:
        featurizer = ServedViewFeaturizer(config, partitions, capacity=1 << 16 if partitions == 1 else 1 << 14)
    parts: list[TransactionBatch] = []
    labels, times, ids, sources, destinations, splits = [], [], [], [], [], []
    bar = progress_bar(total=len(times_all), unit="tx", desc="features", enabled=progress)
    for batch in tie_aligned(world.iter_events("transactions", batch_size=chunk)):
        event_ids = batch.column("event_id").to_pylist()
        try:
            y = np.array([bool(is_fraud[e]) for e in event_ids])
        except KeyError as missing:
            raise WorldError(
                f"transaction {missing.args[0]} has no row in labels/transactions.parquet; "
                "every transaction needs a label to train on (re-import or regenerate the world)"
            ) from None
        t = pc.divide(batch.column("event_time").cast(pa.int64()), 1_000_000.0).to_numpy()
        types, channels = type_and_channel_codes(batch)
        source_ids = batch.column("source_account").to_pylist()
        destination_ids = batch.column("destination_account").to_pylist()
        features = featurizer.featurize_columns(
            source_ids,
            destination_ids,
            batch.column("amount").to_numpy(),
            t,
            types,
            channels,
            event_ids=event_ids,
        )
        split = np.where(t < val_start, TRAIN, np.where(t < test_start, VALIDATION, TEST)).astype(np.int8)
        keep = ((split != TRAIN) | y | (rng.random(len(y)) < train_negative_share)) & ~features.duplicate
        parts.append(features.take(keep))
        labels.append(y[keep])
        times.append(t[keep])
        ids.append(np.array(event_ids, dtype=object)[keep])
        sources.append(np.array(source_ids, dtype=object)[keep])
        destinations.append(np.array(destination_ids, dtype=object)[keep])
        splits.append(split[keep])
        bar.update(len(y))
    bar.close()
    return FraudDataset(
        inputs=TransactionBatch.concat(parts),
        labels=np.concatenate(labels),
        times=np.concatenate(times),
        event_ids=np.concatenate(ids),
        sources=np.concatenate(sources),
        destinations=np.concatenate(destinations),
        split=np.concatenate(splits),
        boundaries=(float(val_start), float(test_start)),
        total_events=len(times_all),
        partitions=partitions,
    )


def account_scores(sources: np.ndarray, destinations: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Each account's highest transaction score (either end) over the given rows.

    >>> account_scores(np.array(["a", "b"]), np.array(["b", "c"]), np.array([0.2, 0.9]))
    {'a': 0.2, 'b': 0.9, 'c': 0.9}
    """
    best: dict[str, float] = {}
    for accounts in (sources, destinations):
        for account, score in zip(accounts.tolist(), scores.tolist()):
            if score > best.get(account, -1.0):
                best[account] = score
    return dict(sorted(best.items()))
