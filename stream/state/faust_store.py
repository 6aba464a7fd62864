"""A Faust table store that *is* the columnar feature state.

Faust's memory store would keep a second copy of every entity (a dict of blobs next
to our numpy arrays) and decode each changelog record into it. This store instead
applies changelog records straight into the partitioned state during recovery, so state
lives once, in the compact form the feature kernels read. The worker writes the
changelog itself, once per batch per changed entity (see stream.state.commit_protocol).

Register it on a table with `store=STORE_URL` and `options={"state": <state>}`, where
the state is a `PublishedMarkers` (markers only) or a `PartitionedDonors`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, MutableMapping, Set

from faust import stores
from faust.stores import memory
from faust.types import TP, EventT

from stream.state.commit_protocol import PartitionedState
from stream.state.partitioned_donors import PartitionedDonors
from stream.state.published_markers import PublishedMarkers

STORE_SCHEME = "tributary-state"
# Needs a host part: yarl's URL("scheme://") is falsy, and Faust then silently falls back
# to the app's default store (a dict no one reads), losing the state on every restart.
STORE_URL = f"{STORE_SCHEME}://state"
log = logging.getLogger("tributary.state")


class _AllPartitionsView(MutableMapping):
    """Read-only mapping over every partition's entities (for Faust's introspection)."""

    def __init__(self, state: PartitionedState):
        self._state = state

    def __getitem__(self, key: bytes) -> bytes:
        for partition in self._state.partitions:
            for _, blob in self._state.export(partition, [int.from_bytes(key, "little", signed=True)]):
                return blob
        raise KeyError(key)

    def __iter__(self) -> Iterator[bytes]:
        for partition in self._state.partitions:
            for key, _ in self._state.items(partition):
                yield key

    def __len__(self) -> int:
        return sum(self._state.entities().values())

    def __setitem__(self, key, value) -> None:
        raise TypeError("write account state through the feature kernel, not the table")

    def __delitem__(self, key) -> None:
        raise TypeError("account state is not deleted key by key")

    def clear(self) -> None:
        self._state.drop(self._state.partitions)


class PartitionedStateStore(memory.Store):
    def __init__(self, *args: Any, options: dict | None = None, **kwargs: Any) -> None:
        # Not __post_init__: Faust's Store sets `options` only after Service.__init__ ran it.
        super().__init__(*args, options=options, **kwargs)
        state = (options or {}).get("state")
        if not isinstance(state, (PublishedMarkers, PartitionedDonors)):
            raise TypeError(f"{STORE_SCHEME} store needs options={{'state': PublishedMarkers or PartitionedDonors}}")
        self.partitioned = state  # not `state`: a Faust Service property
        self.data = _AllPartitionsView(state)

    def apply_changelog_batch(
        self, batch: Iterable[EventT], to_key: Callable[[Any], Any], to_value: Callable[[Any], Any]
    ) -> None:
        applied = 0
        for event in batch:
            message = event.message
            if message.value is None or message.key is None:  # a tombstone or junk: not ours, never fatal
                continue
            self.partitioned.restore(message.partition, message.key, message.value)
            applied += 1
        log.debug("applied %d changelog records", applied)

    async def on_recovery_completed(self, active_tps: Set[TP], standby_tps: Set[TP]) -> None:
        active = {tp.partition for tp in active_tps}
        self.partitioned.drop([p for p in self.partitioned.partitions if p not in active])
        log.info("%s recovered: entities per partition %s, outputs published up to %s",
                 self.table.name, self.partitioned.entities(), self.partitioned.published.as_dict())

    def _clear(self) -> None:
        self.partitioned.drop(self.partitioned.partitions)


def register_store() -> None:
    """Make `tributary-state://` resolvable by Faust (idempotent)."""
    stores.STORES.aliases.setdefault(STORE_SCHEME, f"{__name__}:PartitionedStateStore")
