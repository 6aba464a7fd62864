"""A seek back while Faust's fetcher loop is still delivering what it fetched before it.

Runs Faust's own `Consumer._drain_messages` (the loop that hands fetched records to the
agents) on a stand-in with just the attributes it uses. The input places the fault: the
loop's batch holds records beyond the hole, and the seek back happens while the first of
them is being delivered, as when the offset guard sees it; the next batch is the re-read.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from types import SimpleNamespace

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from stream.kafka.faust_compat import SuspendableReadOffsets, resume_read_offset, seek_back

GIFTS = TP("gifts", 3)


class ConsumerThread:
    """Faust's consumer thread as `seek_back` uses it: a call queue run by another thread."""

    def __init__(self):
        self.seeks: list[tuple[TP, int, str]] = []

    async def call_thread(self, fun, *args):
        done = threading.Event()
        thread = threading.Thread(target=lambda: (fun(*args), done.set()), name="consumer-thread")
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, done.wait)

    def seek(self, tp, offset):
        self.seeks.append((tp, offset, threading.current_thread().name))


class FetcherLoop:
    """The part of a Faust consumer that delivers fetched records: Faust's own loop."""

    _drain_messages = Consumer._drain_messages
    _add_gap = Consumer._add_gap
    consumer_stopped_errors = ()
    log = SimpleNamespace(dev=lambda *args: None, exception=print)  # Faust logs a record it drops here

    def __init__(self, read_offsets, batches: list[list[int]], on_record):
        self._read_offset = read_offsets
        self._batches = batches
        self._on_record = on_record
        self._gap = defaultdict(IntervalTree)
        self._committed_offset = defaultdict(lambda: None, {GIFTS: 100})
        self._commit_every = None
        self._stopped = asyncio.Event()
        self._thread = ConsumerThread()
        self.should_stop = False
        self.suspend_flow = asyncio.Event()
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.delivered: list[int] = []

    async def getmany(self, timeout: float):
        if not self._batches:
            self._stopped.set()
            return
        for offset in self._batches.pop(0):
            yield GIFTS, SimpleNamespace(offset=offset, topic=GIFTS.topic, key=None, value=None)

    async def callback(self, message) -> None:
        self.delivered.append(message.offset)
        await self._on_record(self, message.offset)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    async def wait_first(self, record, suspended):
        await record
        suspended.cancel() if hasattr(suspended, "cancel") else suspended.close()


def deliver(read_offsets, on_record) -> FetcherLoop:
    # Committed 100; records 100-109 were dropped by Faust (the hole); the batch being
    # delivered holds 110-119; the re-read brings 100-119 again.
    loop = FetcherLoop(read_offsets, [list(range(110, 120)), list(range(100, 120))], on_record)
    asyncio.run(loop._drain_messages(SimpleNamespace(_stopped=loop._stopped)))
    return loop


async def guard_seeing_110_with_fausts_seek(loop: FetcherLoop, offset: int) -> None:
    if offset == 110 and not loop._thread.seeks:
        loop._thread.seeks.append((GIFTS, 100, "event loop"))
        loop._read_offset[GIFTS] = 100  # what Faust's Consumer.seek does after aiokafka's seek


async def guard_seeing_110_with_seek_back(loop: FetcherLoop, offset: int) -> None:
    if offset == 110 and not loop._thread.seeks:
        await seek_back(loop, GIFTS, 100)
    if offset == 100:  # the guard admits the re-read
        resume_read_offset(loop, GIFTS)


def test_fausts_own_seek_loses_the_re_read_to_the_records_fetched_before_it():
    # Why the patch exists: the rest of the old batch moves the read offset past the sought
    # one, and the re-read is dropped (the guard would see a hole again, and seek again).
    loop = deliver(defaultdict(lambda: None, {GIFTS: 99}), guard_seeing_110_with_fausts_seek)
    assert loop.delivered == list(range(110, 120)) + [119]


def test_seek_back_gets_the_whole_re_read_delivered_and_counts_no_gaps():
    loop = deliver(SuspendableReadOffsets({GIFTS: 99}), guard_seeing_110_with_seek_back)
    assert loop.delivered == list(range(110, 120)) + list(range(100, 120))
    # Faust counted the hole as a gap when 110 came (its own doing, before any seek); the
    # records after the seek added none over offsets not yet re-read.
    assert [(gap.begin, gap.end) for gap in loop._gap[GIFTS]] == [(101, 111)]
    assert loop._read_offset[GIFTS] == 119 and not loop._read_offset.suspended


def test_seek_back_moves_aiokafka_on_the_consumer_thread():
    # aiokafka's seek deletes buffered records the consumer thread may be iterating.
    loop = deliver(SuspendableReadOffsets({GIFTS: 99}), guard_seeing_110_with_seek_back)
    assert loop._thread.seeks == [(GIFTS, 100, "consumer-thread")]


def test_a_revoked_partition_is_no_longer_suspended():
    offsets = SuspendableReadOffsets({GIFTS: 120})
    offsets.suspended.add(GIFTS)
    assert offsets[GIFTS] is None
    offsets.pop(GIFTS, None)
    offsets[GIFTS] = 40  # assigned again later: Faust's bookkeeping counts from the start
    assert offsets[GIFTS] == 40


def test_seek_back_refuses_a_consumer_built_without_the_patch():
    consumer = SimpleNamespace(_read_offset=defaultdict(lambda: None), _thread=ConsumerThread())
    with pytest.raises(Exception, match="suspendable_read_offsets"):
        asyncio.run(seek_back(consumer, GIFTS, 100))
