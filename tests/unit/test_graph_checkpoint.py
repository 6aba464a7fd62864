"""Graph checkpoints: a restart reads the topic on from a snapshot, with the features an
uninterrupted merge gives, and never trusts a snapshot that does not fit the topic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.contracts import TransactionEvent
from models.features.partitioning import PartitionOf
from stream.pipeline.records import RawRecord, decode_or_dead_letter
from stream.state.graph_checkpoint import POSITION, STATE, GraphCheckpoints
from stream.state.graph_merge import GraphMerge
from tests.fakes import LogFeed
from tests.unit.test_served_view import CFG, stream

P = 4
IDENTITY = {"feature_schema": "s1", "topic": "transactions", "partitions": P}


class CountingFeed(LogFeed):
    """A LogFeed that counts the records the merge takes from it."""

    def __init__(self, log):
        super().__init__(P, log)
        self.popped = 0

    def pop(self, partition):
        self.popped += 1
        return super().pop(partition)


def topic(n=400, seed=5):
    """The records of a stream as the producer wrote them (by source account), and their keys in stream order."""
    pairs = stream(n, seed=seed)
    partition = PartitionOf(P)([e.source_account for _, e in pairs]).tolist()
    log: dict[int, list[RawRecord]] = {p: [] for p in range(P)}
    keys = []
    for (record, event), p in zip(pairs, partition):
        log[p].append(RawRecord(record.topic, p, len(log[p]), record.key, event.model_dump_json().encode()))
        keys.append((p, len(log[p]) - 1))
    return log, keys


def merge(feed, checkpoints=None, published=None):
    """A worker scoring every partition; `published[p]`: the offset up to which its outcomes are out."""
    markers = published or {}
    return GraphMerge(CFG, feed, lambda r: decode_or_dead_letter(r, TransactionEvent, 16_384)[0],
                      lambda p: markers.get(p, -1), idle_s=0, checkpoints=checkpoints, checkpoint_every_s=3600)


def published_before(keys, upto):
    """The markers of a worker that published the outcomes of the first `upto` transactions."""
    markers = {p: -1 for p in range(P)}
    for p, o in keys[:upto]:
        markers[p] = max(markers[p], o)
    return markers


def prefix(log, keys, upto):
    """The topic as it stood when the first `upto` transactions had been produced."""
    shown = {p: [] for p in range(P)}
    for p, o in keys[:upto]:
        shown[p].append(log[p][o])
    return shown


def served(m, keys):
    batch = m.features_for(keys)
    return {k: batch.take(i) for i, k in enumerate(keys)}


def checkpoint_at(directory, log, keys, upto, identity=IDENTITY):
    """A worker that merged the first `upto` transactions and left a checkpoint."""
    checkpoints = GraphCheckpoints(directory, identity)
    first = merge(LogFeed(P, prefix(log, keys, upto)), checkpoints)
    served(first, keys[:upto])
    assert first.checkpoint() and checkpoints.wait_written(10)
    return checkpoints


def assert_same_features(got, expected):
    for key in expected:
        for name, values in expected[key].arrays().items():
            np.testing.assert_array_equal(got[key].arrays()[name], values, err_msg=f"{key} {name}")


def test_a_restart_reads_on_from_the_checkpoint_with_the_features_of_an_uninterrupted_merge(tmp_path):
    log, keys = topic()
    uninterrupted = served(merge(LogFeed(P, log)), keys)
    checkpoint_at(tmp_path, log, keys, 250)

    feed = CountingFeed(log)
    restarted = merge(feed, GraphCheckpoints(tmp_path, IDENTITY), published_before(keys, 250))
    got = served(restarted, keys[250:])
    assert restarted.restored == 250 and restarted.rebuilds == 0 and feed.rewinds == 1
    # It reads the 150 transactions after the checkpoint, and one per partition again to check it.
    assert feed.popped == 150 + P
    assert_same_features(got, {k: uninterrupted[k] for k in keys[250:]})
    assert restarted.merged == len(keys)


def test_a_checkpoint_of_another_topic_is_noticed_and_the_merge_starts_from_scratch(tmp_path):
    log, keys = topic()
    # The same accounts and partitions, other amounts: only the records themselves tell them apart.
    other = {p: [RawRecord(r.topic, r.partition, r.offset, r.key, r.value.replace(b'"amount":', b'"amount":1'))
                 for r in records] for p, records in log.items()}
    checkpoint_at(tmp_path, other, keys, 250)
    feed = CountingFeed(log)
    restarted = merge(feed, GraphCheckpoints(tmp_path, IDENTITY), published_before(keys, 250))
    got = served(restarted, keys[250:])
    assert restarted.rebuilds == 1 and restarted.restored == 0 and feed.rewinds == 2
    assert_same_features(got, {k: v for k, v in served(merge(LogFeed(P, log)), keys).items() if k in got})


def test_a_topic_shorter_than_the_checkpoint_is_noticed(tmp_path):
    log, keys = topic()
    checkpoint_at(tmp_path, log, keys, 250)
    shorter = prefix(log, keys, 100)  # recreated, and refilled less far
    restarted = merge(LogFeed(P, shorter), GraphCheckpoints(tmp_path, IDENTITY), published_before(keys, 250))
    restarted.features_for([])
    assert restarted.rebuilds == 1 and restarted.restored == 0 and restarted.merged == 0


def test_a_transaction_the_newest_checkpoint_passed_is_served_from_an_older_one(tmp_path):
    log, keys = topic()
    uninterrupted = served(merge(LogFeed(P, log)), keys)
    checkpoint_at(tmp_path, log, keys, 100)
    checkpoint_at(tmp_path, log, keys, 300)
    # The worker died before publishing what came after transaction 200: its restart needs those.
    restarted = merge(LogFeed(P, log), GraphCheckpoints(tmp_path, IDENTITY), published_before(keys, 200))
    got = served(restarted, keys[200:])
    assert restarted.rebuilds == 0 and restarted.restored == 100
    assert_same_features(got, {k: uninterrupted[k] for k in keys[200:]})

    # Before every checkpoint: from the start.
    again = merge(LogFeed(P, log), GraphCheckpoints(tmp_path, IDENTITY), published_before(keys, 50))
    assert_same_features(served(again, keys[50:]), {k: uninterrupted[k] for k in keys[50:]})
    assert again.restored == 0 and again.rebuilds == 0

    # Given a partition whose unpublished records the restored checkpoint passed (a
    # rebalance), the merge goes back to the newest checkpoint before them.
    markers = published_before(keys, 300)
    owner = merge(LogFeed(P, log), GraphCheckpoints(tmp_path, IDENTITY), markers)
    part = [k for k in keys[300:] if k[0] != 0]
    served(owner, part)
    assert owner.restored == 300
    markers[0] = published_before(keys, 200)[0]  # partition 0 comes from a worker that published less
    taken_over = [k for k in keys[200:] if k[0] == 0]
    got = served(owner, taken_over)
    assert owner.rebuilds == 1 and owner.restored == 100
    assert_same_features(got, {k: uninterrupted[k] for k in taken_over})


@pytest.mark.parametrize("other", [{"feature_schema": "s2"}, {"topic": "other"}, {"partitions": 8}])
def test_a_checkpoint_of_other_features_or_another_topic_is_never_loaded(tmp_path, other):
    log, keys = topic()
    checkpoint_at(tmp_path, log, keys, 250, identity={**IDENTITY, **other})
    assert GraphCheckpoints(tmp_path, IDENTITY).newest_first() == []
    restarted = merge(LogFeed(P, log), GraphCheckpoints(tmp_path, IDENTITY), published_before(keys, 250))
    served(restarted, keys[250:260])
    assert restarted.restored == 0


def test_a_damaged_checkpoint_is_passed_over_for_an_older_one(tmp_path):
    log, keys = topic()
    checkpoint_at(tmp_path, log, keys, 100)
    newest = checkpoint_at(tmp_path, log, keys, 250).newest_first()[0]
    (newest.path / STATE).write_bytes(b"not an npz")
    restarted = merge(LogFeed(P, log), GraphCheckpoints(tmp_path, IDENTITY), published_before(keys, 250))
    served(restarted, keys[250:260])
    assert restarted.restored == 100
    (restarted.checkpoints.newest_first()[0].path / POSITION).write_text("{")
    assert [c.position.merged for c in GraphCheckpoints(tmp_path, IDENTITY).newest_first()] == [100]


def test_only_the_newest_checkpoints_are_kept_and_written_whole(tmp_path):
    log, keys = topic()
    for upto in (50, 100, 150, 200, 250):
        checkpoints = checkpoint_at(tmp_path, log, keys, upto)
    assert [c.position.merged for c in checkpoints.newest_first()] == [250, 200, 150]
    assert not list(tmp_path.glob(".*partial"))
    stored = json.loads((checkpoints.newest_first()[0].path / POSITION).read_text())
    assert stored["identity"] == IDENTITY and sum(stored["position"]["next_offset"]) == 250
