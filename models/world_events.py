"""A world's events as contract objects, merged across streams in the order they are replayed.

The one order every consumer of a world agrees on: event time, then stream rank
(`REPLAY_ORDER`: at equal times a donor's profile and relationships go before the gift
that may refer to them), then row. `tributary replay` sends events in it, and offline
simulations of the worker read them in it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import datetime

from models.contracts import Contract, InvalidEvent, from_record
from models.worlds import EVENT_STREAMS, World, WorldError

REPLAY_ORDER = ("donor_profiles", "donor_relationships", "gifts", "transactions")


def iter_world_events(world: World, streams: tuple[str, ...] = REPLAY_ORDER) -> Iterator[tuple[str, dict, Contract]]:
    """(stream, raw record, validated event) of every event of `streams` the world has, in replay order."""
    present = [s for s in REPLAY_ORDER if s in streams and s in world.streams]
    if not present:
        raise WorldError(f"world {world.root} has no event streams to replay")
    merged = heapq.merge(*(_stream_events(world, s, rank) for rank, s in enumerate(present)))
    for _time, _rank, _row, stream, record, event in merged:
        yield stream, record, event


def _stream_events(world: World, stream: str, rank: int):
    spec = EVENT_STREAMS[stream]
    row = 0
    for batch in world.iter_events(stream):
        for record in batch.to_pylist():
            try:
                event = from_record(record, spec.contract)
            except InvalidEvent as error:
                raise WorldError(
                    f"{world.events_path(stream)} row {row} ({record.get('event_id')}) does not fit the "
                    f"{spec.contract.__name__} contract: {error}. Regenerate or re-import the world."
                ) from None
            # The sort key is the validated time in microseconds, then stream rank and row.
            when: datetime = getattr(event, "event_time")  # every input contract has one  # noqa: B009
            yield (int(when.timestamp() * 1_000_000), rank, row, stream, record, event)
            row += 1
