"""Offline features at P partitions are the workers': one graph, merged in the agreed order."""

from __future__ import annotations

import numpy as np
import pytest

from models.contracts import TransactionEvent
from models.features.partitioning import PartitionOf
from models.features.served_view import ServedViewFeaturizer
from models.features.transactions import TransactionFeatureConfig
from stream.pipeline.records import decode_or_dead_letter
from stream.state.graph_merge import GraphMerge
from tests.fakes import LogFeed
from tests.serving_helpers import transaction_record

CFG = TransactionFeatureConfig(window=6, fanout1=3, fanout2=2)


def stream(n=300, accounts=30, seed=5, ties=False):
    """Transactions one minute apart (or two at a time, with `ties`), keyed by source."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.choice(accounts, 2, replace=False)
        record = transaction_record(i // 2 if ties else i, f"acct{a}", f"acct{b}", float(rng.lognormal(4, 1)))
        out.append((record, TransactionEvent.model_validate_json(record.value).model_copy(update={"event_id": f"e{i}"})))
    return out


def offline_features(events, partitions):
    f = ServedViewFeaturizer(CFG, partitions)
    return f.featurize_columns([e.source_account for e in events], [e.destination_account for e in events],
                               np.array([e.amount for e in events]), np.array([e.event_time.timestamp() for e in events]),
                               np.full(len(events), 1), np.full(len(events), -1),
                               event_ids=[e.event_id for e in events])


@pytest.mark.parametrize("partitions,ties", [(1, False), (4, False), (4, True)])
def test_the_workers_merge_equals_the_offline_view(partitions, ties):
    pairs = stream(ties=ties)
    events = [e for _, e in pairs]
    expected = offline_features(events, partitions)

    # The topic as the producer wrote it: each record to its source's partition, in order.
    partition = PartitionOf(partitions)(events and [e.source_account for e in events])
    feed = LogFeed(partitions)
    keys = []
    for (record, event), p in zip(pairs, partition.tolist()):
        offset = len(feed.log[p])
        feed.log[p].append(record.__class__(record.topic, p, offset, record.key, event.model_dump_json().encode()))
        keys.append((p, offset))
    merge = GraphMerge(CFG, feed, lambda r: decode_or_dead_letter(r, TransactionEvent, 16_384)[0], lambda p: -1,
                       idle_s=0)
    # The agent asks in uneven batches, partition by partition, as Kafka delivers them.
    served = {}
    for p in range(partitions):
        mine = [k for k in keys if k[0] == p]
        for start in range(0, len(mine), 37):
            wanted = mine[start:start + 37]
            batch = merge.features_for(wanted)
            served.update({k: batch.take(i) for i, k in enumerate(wanted)})
    assert merge.rebuilds == 0 and merge.late == 0
    for name, values in expected.arrays().items():
        got = np.stack([served[k].arrays()[name] for k in keys])
        np.testing.assert_array_equal(got, values, err_msg=name)


def test_a_partition_assigned_after_the_merge_passed_it_is_merged_again_from_the_start():
    pairs = stream(60)
    feed = LogFeed(2)
    for i, (record, _) in enumerate(pairs):
        feed.log[i % 2].append(record.__class__(record.topic, i % 2, i // 2, record.key, record.value))
    scored = {0}
    merge = GraphMerge(CFG, feed, lambda r: decode_or_dead_letter(r, TransactionEvent, 16_384)[0],
                       lambda p: -1 if p in scored else None, idle_s=0)
    first = merge.features_for([(0, i) for i in range(20)])  # passes partition 1's first records unfeaturised
    scored.add(1)
    second = merge.features_for([(1, i) for i in range(10)])
    assert merge.rebuilds == 1 and feed.rewinds == 1
    alone = GraphMerge(CFG, LogFeed(2, feed.log), lambda r: decode_or_dead_letter(r, TransactionEvent, 16_384)[0],
                       lambda p: -1, idle_s=0)
    np.testing.assert_array_equal(alone.features_for([(1, i) for i in range(10)]).event, second.event)
    assert first.event.shape[0] == 20


class ArrivingFeed(LogFeed):
    """A topic whose partition 1 gets its record only when the merge waits for it."""

    def __init__(self, arriving):
        super().__init__(2)
        self.arriving = arriving
        self.waits = 0

    def caught_up(self, partition) -> bool:
        return super().caught_up(partition) and not (partition == 1 and self.arriving)

    def wait(self, timeout_s) -> None:
        self.waits += 1
        if self.arriving:
            self.log[1].append(self.arriving.pop())


def decode(record):
    return decode_or_dead_letter(record, TransactionEvent, 16_384)[0]


def test_the_merge_waits_for_a_partition_whose_records_are_on_the_way():
    early = transaction_record(0, "acct1", "acct2", 10.0)  # 00:00, partition 1, still in flight
    later = transaction_record(1, "acct2", "acct3", 10.0)  # 00:01, partition 0, already here
    feed = ArrivingFeed([early.__class__(early.topic, 1, 0, early.key, early.value)])
    feed.log[0].append(later.__class__(later.topic, 0, 0, later.key, later.value))
    merge = GraphMerge(CFG, feed, decode, lambda p: -1, idle_s=0)  # a partition on its way is waited for anyway
    batch = merge.features_for([(0, 0)])
    assert feed.waits == 1 and merge.late == 0
    assert batch.seq_mask[0, 0].sum() == 1  # acct2 had received the earlier transfer first


def test_an_idle_partition_is_passed_by_and_what_comes_later_is_counted_late():
    later = transaction_record(1, "acct2", "acct3", 10.0)
    feed = LogFeed(2)
    feed.log[0].append(later.__class__(later.topic, 0, 0, later.key, later.value))
    merge = GraphMerge(CFG, feed, decode, lambda p: -1, idle_s=0)
    assert merge.features_for([(0, 0)]).seq_mask[0, 0].sum() == 0  # partition 1 had nothing: passed by
    early = transaction_record(0, "acct1", "acct2", 10.0)
    feed.log[1].append(early.__class__(early.topic, 1, 0, early.key, early.value))
    merge.features_for([(1, 0)])
    assert merge.late == 1 and merge.rebuilds == 0


class ClockedFeed(LogFeed):
    """Waiting moves a fake clock on; nothing ever arrives."""

    def __init__(self, partitions):
        super().__init__(partitions)
        self.now = 0.0

    def wait(self, timeout_s) -> None:
        self.now += timeout_s


def test_idle_partitions_are_waited_for_together_not_one_after_another():
    record = transaction_record(0, "acct1", "acct2", 10.0)
    feed = ClockedFeed(4)  # partitions 1-3 idle and caught up
    feed.log[0].append(record)
    merge = GraphMerge(CFG, feed, decode, lambda p: -1, idle_s=1.0, clock=lambda: feed.now)
    merge.features_for([(0, 0)])
    assert 1.0 <= feed.now < 1.1  # not 3 s: one idle period for all three
    assert merge.waited_s > 0
