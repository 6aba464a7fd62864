"""`python -m tributary.bench_views`: what each way of sharing the graph across partitions costs in quality.

A prototype measurement for choosing how workers see the whole transaction graph
(docs/worker.md, "Seeing the whole graph"). One set of trained fraud models scores the
test period of a world under each view, side by side in one run:
    per partition P   what workers served before the merge: each transaction saw its
                      source partition's history only
    merged P          every transaction sees every earlier transaction, in the one order
                      all workers agree on (event time, then partition, then offset): what
                      a worker serves, reading every partition and merging them
                      (models.features.served_view)
    merged, lag L     each partition sees its own transactions at once and the others'
                      as of the last block boundary, L transactions ago: what a view
                      replicated asynchronously (summaries in a compacted topic, or edges
                      re-keyed through a topic) gives with L transactions in flight
The models were trained on one view (say which in --model); the point is the spread
between the rows, not the absolute figures. The workers serve "merged" (no lag):
stream.state.graph_merge.

    python -m tributary.bench_views --data WORLD --model TRAIN_OUT [--partitions 4] [--lags 1024,8192]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from models.features.account_state import AccountState
from models.features.served_view import ServedViewFeaturizer
from models.features.transactions import TransactionBatch, TransactionFeatureConfig, TransactionFeaturizer
from models.model_store import load_fraud_model
from models.worlds import open_world
from offline.evaluate import artifact_dirs
from offline.evaluation.metrics import binary_metrics
from offline.train.fraud_data import TEST, load_fraud_dataset
from offline.train.loop import predict


class LaggedCompleteView(ServedViewFeaturizer):
    """Complete state, but other partitions' transactions become visible only at the next
    block boundary (every `lag` transactions): a bounded-stale replicated view."""

    def __init__(self, config: TransactionFeatureConfig, partitions: int, lag: int):
        super().__init__(config, partitions)
        self.lag = lag
        self.state = AccountState(window=config.window, capacity=1 << 16)

    def featurize_columns(self, sources, destinations, amounts, timestamps_s, type_codes, channel_codes,
                          event_ids=None) -> TransactionBatch:
        parts = []
        for start in range(0, len(sources), self.lag):
            block = slice(start, start + self.lag)
            parts.append(self._block(sources[block], destinations[block], amounts[block], timestamps_s[block],
                                     type_codes[block], channel_codes[block],
                                     event_ids[block] if event_ids is not None else None))
        return TransactionBatch.concat(parts)

    def _block(self, sources, destinations, amounts, times, types, channels, event_ids) -> TransactionBatch:
        partition = self.partition_of(sources)
        parts, order = [], []
        for p in np.unique(partition).tolist():
            rows = np.flatnonzero(partition == p)
            picked = rows.tolist()
            # Partition p sees the state as of the block's start, plus its own transactions.
            view = TransactionFeaturizer(self.state.copy(), self.config)
            parts.append(view.featurize_columns(
                [sources[i] for i in picked], [destinations[i] for i in picked], amounts[rows], times[rows],
                types[rows], channels[rows], event_ids=[event_ids[i] for i in picked] if event_ids else None))
            order.append(rows)
        # Then everyone's transactions of the block reach the shared state, in order.
        TransactionFeaturizer(self.state, self.config).featurize_columns(
            sources, destinations, amounts, times, types, channels, event_ids=event_ids)
        return TransactionBatch.concat(parts).take(np.argsort(np.concatenate(order), kind="stable"))


class PartitionLocalView(ServedViewFeaturizer):
    """What workers served before the merge: one state per partition, so a transaction saw
    its source partition's history only."""

    def __init__(self, config: TransactionFeatureConfig, partitions: int):
        super().__init__(config, partitions)
        self.featurizers: dict[int, TransactionFeaturizer] = {}

    def featurize_columns(self, sources, destinations, amounts, timestamps_s, type_codes, channel_codes,
                          event_ids=None) -> TransactionBatch:
        partition = self.partition_of(sources)
        parts, order = [], []
        for p in np.unique(partition).tolist():
            rows = np.flatnonzero(partition == p)
            picked = rows.tolist()
            featurizer = self.featurizers.setdefault(
                p, TransactionFeaturizer(AccountState(window=self.config.window, capacity=1 << 14), self.config))
            parts.append(featurizer.featurize_columns(
                [sources[i] for i in picked], [destinations[i] for i in picked], amounts[rows], timestamps_s[rows],
                type_codes[rows], channel_codes[rows], event_ids=[event_ids[i] for i in picked] if event_ids else None))
            order.append(rows)
        return TransactionBatch.concat(parts).take(np.argsort(np.concatenate(order), kind="stable"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a `tributary train fraud` output directory")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--lags", default="1024,8192", help="comma-separated block sizes for the lagged view")
    args = parser.parse_args(argv)

    loaded = [load_fraud_model(path) for path in artifact_dirs(args.model)]
    config = loaded[0].features
    world = open_world(args.data)
    P = args.partitions
    views: list[tuple[str, ServedViewFeaturizer]] = [
        ("P=1", ServedViewFeaturizer(config, 1)),
        (f"per partition, P={P} (before)", PartitionLocalView(config, P)),
        (f"merged, P={P} (served)", ServedViewFeaturizer(config, P)),
    ]
    views += [(f"merged, P={P}, lag {lag}", LaggedCompleteView(config, P, lag))
              for lag in (int(x) for x in args.lags.split(","))]
    names = [m.manifest.name for m in loaded]
    print(f"{args.data.name}: test-period PR-AUC of models from {args.model} under each view")
    print(f"{'view':<34}" + "".join(f"{n:>16}" for n in names) + f"{'features s':>12}")
    for label, featurizer in views:
        started = time.monotonic()
        data = load_fraud_dataset(world, config, train_negative_share=0.0, progress=False, featurizer=featurizer)
        seconds = time.monotonic() - started
        inputs, labels = data.part(TEST)
        scores = [binary_metrics(labels, predict(m.model, inputs), m.threshold)["pr_auc"] for m in loaded]
        print(f"{label:<34}" + "".join(f"{s:>16.4f}" for s in scores) + f"{seconds:>12.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
