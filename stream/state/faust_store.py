"""A Faust table store that *is* the columnar feature state.

Faust's memory store would keep a second copy of every entity (a dict of blobs next
to our numpy arrays) and decode each changelog record into it. This store instead
applies changelog records straight into the partitioned state during recovery, so state
lives once, in the compact form the feature kernels read. The worker writes the
changelog itself, once per batch per changed entity (see stream.app).

Register it on a table with `store=STORE_URL` and `options={"accounts": <state>}`, where
the state is a `PartitionedAccounts` or a `PartitionedDonors`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, MutableMapping, Set

import logging

from faust import stores
from faust.stores import memory
from faust.types import TP, EventT

from stream.state.partitioned_accounts import PartitionedAccounts
from stream.state.partitioned_donors import PartitionedDonors

PartitionedState = PartitionedAccounts | PartitionedDonors

STORE_SCHEME = "tributary-accounts"
# Needs a host part: yarl's URL("scheme://") is falsy, and Faust then silently falls back
# to the app's default store (a dict no one reads), losing the state on every restart.
STORE_URL = f"{STORE_SCHEME}://state"
log = logging.getLogger("tributary.state")


class _AllPartitionsView(MutableMapping):
    """Read-only mapping over every partition's accounts (for Faust's introspection)."""

    def __init__(self, accounts: PartitionedState):
        self._accounts = accounts

    def __getitem__(self, key: bytes) -> bytes:
        for partition in self._accounts.partitions:
            for k, blob in self._accounts.export(partition, [int.from_bytes(key, "little", signed=True)]):
                return blob
        raise KeyError(key)

    def __iter__(self) -> Iterator[bytes]:
        for partition in self._accounts.partitions:
            for key, _ in self._accounts.items(partition):
                yield key

    def __len__(self) -> int:
        return sum(self._accounts.accounts().values())

    def __setitem__(self, key, value) -> None:
        raise TypeError("write account state through the feature kernel, not the table")

    def __delitem__(self, key) -> None:
        raise TypeError("account state is not deleted key by key")

    def clear(self) -> None:
        self._accounts.drop(self._accounts.partitions)


class AccountStore(memory.Store):
    def __init__(self, *args: Any, options: dict | None = None, **kwargs: Any) -> None:
        # Not __post_init__: Faust's Store sets `options` only after Service.__init__ ran it.
        super().__init__(*args, options=options, **kwargs)
        accounts = (options or {}).get("accounts")
        if not isinstance(accounts, (PartitionedAccounts, PartitionedDonors)):
            raise TypeError(f"{STORE_SCHEME} store needs options={{'accounts': PartitionedAccounts or PartitionedDonors}}")
        self.accounts = accounts
        self.data = _AllPartitionsView(accounts)

    def apply_changelog_batch(
        self, batch: Iterable[EventT], to_key: Callable[[Any], Any], to_value: Callable[[Any], Any]
    ) -> None:
        applied = 0
        for event in batch:
            message = event.message
            if message.value is None:  # a tombstone: nothing we write, but never fatal
                continue
            self.accounts.restore(message.partition, message.key, message.value)
            applied += 1
        log.debug("applied %d changelog records", applied)

    async def on_recovery_completed(self, active_tps: Set[TP], standby_tps: Set[TP]) -> None:
        active = {tp.partition for tp in active_tps}
        self.accounts.drop([p for p in self.accounts.partitions if p not in active])
        log.info("%s recovered: entities per partition %s, outputs published up to %s",
                 self.table.name, self.accounts.accounts(), self.accounts.published)

    def _clear(self) -> None:
        self.accounts.drop(self.accounts.partitions)


def register_store() -> None:
    """Make `tributary-accounts://` resolvable by Faust (idempotent)."""
    stores.STORES.aliases.setdefault(STORE_SCHEME, f"{__name__}:AccountStore")
