"""The offset guard: records reach the stages in offset order, holes are read again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from stream.kafka.offset_guard import OffsetGuard
from tests.fakes import FakeProbe


def events(topic: str, partition: int, offsets) -> list:
    return [SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=o)) for o in offsets]


def offsets_of(admitted) -> list[tuple[int, int]]:
    return [(e.message.partition, e.message.offset) for e in admitted]


def guard_over(probe: FakeProbe, settled: list | None = None):
    seeks = []

    async def seek(topic, partition, offset):
        seeks.append((topic, partition, offset))

    async def get_probe():
        return probe

    settled = [] if settled is None else settled
    return OffsetGuard(get_probe, seek, lambda topic, partition: settled.append((topic, partition))), seeks


def test_in_order_records_from_the_committed_offset_pass():
    probe = FakeProbe({("t", 0): list(range(100))}, {("t", 0): 40})
    guard, seeks = guard_over(probe)
    admitted = asyncio.run(guard.admit(events("t", 0, range(40, 60))))
    assert offsets_of(admitted) == [(0, o) for o in range(40, 60)] and not seeks


def test_a_hole_after_the_committed_offset_is_held_back_and_read_again():
    # What Faust did after a restart: the first fetch after the commit never reached the agent.
    probe = FakeProbe({("t", 0): list(range(3000)), ("t", 1): list(range(3000))}, {("t", 0): 2161, ("t", 1): 2161})
    guard, seeks = guard_over(probe)
    batch = events("t", 0, range(2533, 2540)) + events("t", 1, range(2161, 2170))
    admitted = asyncio.run(guard.admit(batch))
    assert offsets_of(admitted) == [(1, o) for o in range(2161, 2170)]  # the other partition goes on
    assert seeks == [("t", 0, 2161)] and guard.held_back == 7
    # Later records beyond the hole, still in flight from before the seek: held back again.
    assert asyncio.run(guard.admit(events("t", 0, range(2540, 2545)))) == []
    # After the seek, the hole arrives first, in order, then what follows it.
    admitted = asyncio.run(guard.admit(events("t", 0, range(2161, 2600))))
    assert offsets_of(admitted) == [(0, o) for o in range(2161, 2600)]


def test_offsets_a_consumer_never_sees_are_not_a_hole():
    # Transaction markers and compaction leave offsets without records: nothing to wait for.
    probe = FakeProbe({("t", 0): [0, 1, 2, 5, 6, 9]}, {("t", 0): 0})
    guard, seeks = guard_over(probe)
    admitted = asyncio.run(guard.admit(events("t", 0, [0, 1, 2, 5, 6, 9])))
    assert offsets_of(admitted) == [(0, o) for o in [0, 1, 2, 5, 6, 9]] and not seeks


def test_redeliveries_pass_for_the_stages_to_recognise():
    probe = FakeProbe({("t", 0): list(range(50))}, {("t", 0): 10})
    guard, seeks = guard_over(probe)
    asyncio.run(guard.admit(events("t", 0, range(10, 30))))
    admitted = asyncio.run(guard.admit(events("t", 0, range(10, 35))))  # a seek back re-read them
    assert offsets_of(admitted) == [(0, o) for o in range(10, 35)] and not seeks


def test_nothing_committed_starts_at_the_beginning_of_the_log():
    probe = FakeProbe({("t", 0): list(range(7, 20))}, {})
    guard, seeks = guard_over(probe)
    assert asyncio.run(guard.admit(events("t", 0, [12]))) == [] and seeks == [("t", 0, 7)]
    assert len(asyncio.run(guard.admit(events("t", 0, range(7, 20))))) == 13


def test_a_reassigned_partition_starts_again_at_its_committed_offset():
    probe = FakeProbe({("t", 0): list(range(100))}, {("t", 0): 0})
    guard, seeks = guard_over(probe)
    asyncio.run(guard.admit(events("t", 0, range(0, 50))))
    probe.committed_offsets[("t", 0)] = 30  # committed while this worker held it
    guard.forget([("t", 0)])
    assert offsets_of(asyncio.run(guard.admit(events("t", 0, range(30, 40))))) == [(0, o) for o in range(30, 40)]
    assert not seeks


def test_a_hole_at_the_end_is_found_by_the_watch_and_read_again():
    # Everything fetched after the restart was dropped: no later record will reveal the hole.
    probe = FakeProbe({("t", 0): list(range(500))}, {("t", 0): 200})
    guard, seeks = guard_over(probe)
    assert asyncio.run(guard.watch({("t", 0): 500})) == 0  # first look: maybe still in flight
    assert asyncio.run(guard.watch({("t", 0): 500})) == 1 and seeks == [("t", 0, 200)]
    assert len(asyncio.run(guard.admit(events("t", 0, range(200, 500))))) == 300
    assert asyncio.run(guard.watch({("t", 0): 500})) == 0


def test_the_watch_leaves_a_moving_partition_alone_and_skips_offsets_without_records():
    probe = FakeProbe({("t", 0): [*range(100), 103]}, {("t", 0): 0})
    guard, seeks = guard_over(probe)
    for start in (0, 30, 60):  # progress between looks: no seek however far the fetch is ahead
        asyncio.run(guard.admit(events("t", 0, range(start, start + 40))))
        assert asyncio.run(guard.watch({("t", 0): 100})) == 0
    # Everything admitted; offsets 100-102 hold a transaction marker, say, and 103 is next.
    assert asyncio.run(guard.watch({("t", 0): 103})) == 0
    assert asyncio.run(guard.watch({("t", 0): 103})) == 0 and not seeks
    assert offsets_of(asyncio.run(guard.admit(events("t", 0, [103])))) == [(0, 103)]


def test_records_fetched_before_the_seek_are_held_back_without_seeking_again():
    # Faust's batch and the agent's queue still hold thousands of records from before the
    # seek; a seek for each would restart the re-read every time, and it would never come.
    probe = FakeProbe({("t", 0): list(range(5000))}, {("t", 0): 1732})
    settled: list = []
    guard, seeks = guard_over(probe, settled)
    for start in range(1910, 4000, 300):
        assert asyncio.run(guard.admit(events("t", 0, range(start, start + 300)))) == []
    assert seeks == [("t", 0, 1732)] and not settled
    admitted = asyncio.run(guard.admit(events("t", 0, range(1732, 2000))))
    assert len(admitted) == 268 and settled == [("t", 0)]  # the re-read is here: Faust may count again
    # A later hole is a new one: sought back again.
    asyncio.run(guard.admit(events("t", 0, range(2100, 2110))))
    assert seeks == [("t", 0, 1732), ("t", 0, 2000)]


def test_the_watch_seeks_again_when_a_seek_back_brought_nothing():
    probe = FakeProbe({("t", 0): list(range(500))}, {("t", 0): 200})
    guard, seeks = guard_over(probe)
    asyncio.run(guard.admit(events("t", 0, range(300, 310))))  # sought back to 200 ...
    assert asyncio.run(guard.watch({("t", 0): 310})) == 0
    assert asyncio.run(guard.watch({("t", 0): 310})) == 1  # ... and nothing came: again
    assert seeks == [("t", 0, 200), ("t", 0, 200)]


def test_a_second_copy_of_a_record_within_one_batch_is_left_out():
    # A seek back re-read records whose first copies were still queued: both copies can
    # come in one batch, and a stage would process the record twice.
    probe = FakeProbe({("t", 0): list(range(50)), ("t", 1): list(range(50))}, {("t", 0): 10, ("t", 1): 10})
    guard, seeks = guard_over(probe)
    batch = events("t", 0, range(10, 20)) + events("t", 1, [10, 11]) + events("t", 0, range(15, 25))
    admitted = asyncio.run(guard.admit(batch))
    assert offsets_of(admitted) == [(0, o) for o in range(10, 20)] + [(1, 10), (1, 11)] + [(0, o) for o in range(20, 25)]
    assert guard.repeated == 5 and not seeks
    # A copy in a later batch still passes: the stage knows it by its published marker.
    assert offsets_of(asyncio.run(guard.admit(events("t", 0, [24])))) == [(0, 24)]
