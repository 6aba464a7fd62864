"""Offline features at P partitions are the worker's: each transaction sees its partition only."""

from __future__ import annotations

import numpy as np
import pytest

from models.features.partitioning import PartitionOf
from models.features.served_view import ServedViewFeaturizer
from models.features.transactions import TransactionFeatureConfig
from stream.state.partitioned_accounts import PartitionedAccounts

CFG = TransactionFeatureConfig(window=6, fanout1=3, fanout2=2)


def columns(n=300, accounts=30, seed=5):
    rng = np.random.default_rng(seed)
    pairs = [rng.choice(accounts, 2, replace=False) for _ in range(n)]
    return (
        [f"acct{a}" for a, _ in pairs], [f"acct{b}" for _, b in pairs],
        rng.lognormal(4, 1, n), 1.736e9 + np.cumsum(rng.exponential(300, n)),
        rng.integers(0, 5, n), rng.integers(-1, 7, n),
    )


@pytest.mark.parametrize("partitions", [1, 4])
def test_offline_view_equals_the_workers_partitioned_state(partitions):
    sources, destinations, amounts, times, types, channels = columns()
    offline = ServedViewFeaturizer(CFG, partitions)
    chunks = [offline.featurize_columns(sources[i:i + 64], destinations[i:i + 64], amounts[i:i + 64],
                                        times[i:i + 64], types[i:i + 64], channels[i:i + 64])
              for i in range(0, len(sources), 64)]

    # The worker: records arrive per partition (keyed by source), each in its own order.
    worker = PartitionedAccounts(CFG)
    partition = PartitionOf(partitions)(sources)
    assert len(set(partition.tolist())) == partitions
    for p in range(partitions):
        rows = np.flatnonzero(partition == p)
        served = worker.featurize(p, [sources[i] for i in rows], [destinations[i] for i in rows], amounts[rows],
                                  times[rows], types[rows], channels[rows])
        for name, values in served.arrays().items():
            expected = np.concatenate([c.arrays()[name] for c in chunks])[rows]
            np.testing.assert_array_equal(values, expected, err_msg=name)
