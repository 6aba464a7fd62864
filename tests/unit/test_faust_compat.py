"""Faust's commit bookkeeping after a seek back over a gap: the crawl, and the fix.

Runs Faust's own `Consumer.ack` and `Consumer._add_gap` on a stand-in that carries just
the attributes they use, and compares Faust's `_new_offset` with
`stream.kafka.faust_compat.new_offset_without_doubles`.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from stream.kafka.faust_compat import FAUST_NEW_OFFSET, count_acked_once, new_offset_without_doubles

TRANSACTIONS = TP("transactions", 0)


class Message:
    """The fields of a Faust message that `Consumer.ack` reads (hashable, as Faust's are)."""

    def __init__(self, offset: int):
        self.acked, self.tp, self.topic, self.offset = False, TRANSACTIONS, TRANSACTIONS.topic, offset


class Bookkeeping:
    """The part of a Faust consumer that acks and commits offsets, Faust's own methods."""

    ack = Consumer.ack
    _add_gap = Consumer._add_gap

    def __init__(self, new_offset, committed: int):
        self._new_offset = new_offset.__get__(self)
        self._gap = defaultdict(IntervalTree)
        self._acked = defaultdict(list)
        self._acked_index = defaultdict(set)
        self._committed_offset = defaultdict(lambda: None, {TRANSACTIONS: committed})
        self._unacked_messages = set()
        self._n_acked = 0
        self._waiting_for_ack = None
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))

    def ack_offsets(self, offsets) -> None:
        for offset in offsets:
            self.ack(Message(offset))

    def commit_round(self) -> int:
        """What one commit of Faust's does to this partition; returns the committed offset."""
        offset = self._new_offset(TRANSACTIONS)
        committed = self._committed_offset[TRANSACTIONS]
        if offset is not None and (committed is None or offset > committed):
            self._committed_offset[TRANSACTIONS] = offset
        return self._committed_offset[TRANSACTIONS]


def seek_back_over_a_hole(new_offset) -> Bookkeeping:
    """Issue #13's case: committed 4951; record 5022 arrives first, so Faust's fetch loop
    records 4951..5022 as a gap; the guard holds 5022 back and seeks to 4951; 4951..5100
    then arrive in order and are acked."""
    books = Bookkeeping(new_offset, committed=4951)
    asyncio.run(books._add_gap(TRANSACTIONS, 4951, 5022))
    books.ack_offsets(range(4951, 5101))
    return books


def test_faust_alone_commits_one_offset_per_round_after_the_seek_back():
    books = seek_back_over_a_hole(FAUST_NEW_OFFSET)
    assert [books.commit_round() for _ in range(3)] == [4953, 4954, 4955]  # one offset a round


def test_counting_each_offset_once_commits_everything_in_one_round():
    books = seek_back_over_a_hole(new_offset_without_doubles)
    assert books.commit_round() == 5101
    books.ack_offsets(range(5101, 5200))
    assert books.commit_round() == 5200
    assert not books._acked[TRANSACTIONS] and not books._acked_index[TRANSACTIONS]


@pytest.mark.parametrize("new_offset", [FAUST_NEW_OFFSET, new_offset_without_doubles], ids=["faust", "patched"])
def test_the_patch_keeps_faust_semantics_without_a_seek(new_offset):
    books = Bookkeeping(new_offset, committed=100)
    books.ack_offsets([100, 101, 102, 105, 106])
    assert books.commit_round() == 103  # up to the first missing offset
    asyncio.run(books._add_gap(TRANSACTIONS, 103, 104))  # 103, 104 were never there (compaction)
    assert books.commit_round() == 107
    books.ack_offsets([109, 110])  # 107 and 108 missing: more than one offset, nothing to commit
    assert books.commit_round() == 107
    books.ack_offsets([108])  # one missing offset at the head is allowed (a transaction marker)
    assert books.commit_round() == 111


def test_the_patch_is_installed_on_faust_consumers():
    count_acked_once()
    assert Consumer._new_offset is new_offset_without_doubles
