"""Every donor relationship recorded from both ends, as the worker needs it at P > 1.

Relationship events are keyed by `donor_id`, so a relationship recorded once reaches
only that donor's partition; the home partition of `related_donor_id` never sees the
edge, and its donor's network features miss it (synthetic world, 4 partitions:
`network_influence` PR-AUC 0.727 as recorded, 0.768 with both ends; docs/worker.md).
Every relationship type Tributary knows is symmetric, so each row gets its mirror: the
two donors swapped, a derived event id, the same time, type, action and strength. The
mirror follows its row, so a time-sorted table stays sorted. A row whose mirror the
table holds already (same time, donors swapped, same type and action) gets none: files
that record both ends themselves are left as they are.

With one partition both rows land in the same state, which keeps one edge per pair, so
the degree is unchanged; only the count of edge events grows, and training reads the
world, mirrors included, as the worker does.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.contracts._base import MAX_ID_LENGTH

MIRROR_SUFFIX = ":r"


def mirror_event_id(event_id: str) -> str:
    """The mirror's event id: the row's own with a suffix, or a digest of it when that would be too long.

    >>> mirror_event_id("dr000000001")
    'dr000000001:r'
    """
    mirrored = event_id + MIRROR_SUFFIX
    if len(mirrored) <= MAX_ID_LENGTH:
        return mirrored
    return "r:" + hashlib.blake2b(event_id.encode(), digest_size=24).hexdigest()


def with_both_ends(table: pa.Table) -> pa.Table:
    """`table` (DonorRelationship rows) with each row followed by its mirror, unless present."""
    n = table.num_rows
    if n == 0:
        return table
    donors, related = table.column("donor_id"), table.column("related_donor_id")
    mirror = table.set_column(table.schema.get_field_index("donor_id"), "donor_id", related)
    mirror = mirror.set_column(mirror.schema.get_field_index("related_donor_id"), "related_donor_id", donors)
    ids = [mirror_event_id(i) for i in table.column("event_id").to_pylist()]
    mirror = mirror.set_column(mirror.schema.get_field_index("event_id"), "event_id",
                               pa.array(ids, type=table.schema.field("event_id").type))
    needed = pc.invert(pc.is_in(_identity(mirror), value_set=_identity(table))).to_numpy(zero_copy_only=False)
    # Row i, then its mirror: order by (row, is mirror), which keeps the table's time order.
    rows = np.concatenate([np.arange(n), np.flatnonzero(needed)])
    is_mirror = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(int(needed.sum()), dtype=np.int64)])
    order = np.lexsort((is_mirror, rows))
    return pa.concat_tables([table, mirror.filter(pa.array(needed))]).take(pa.array(order))


def _identity(table: pa.Table) -> pa.Array:
    """What makes two rows the same relationship event, as one string per row (the event id aside)."""
    parts = [pc.cast(table.column(name), pa.string()) for name in
             ("event_time", "donor_id", "related_donor_id", "relationship_type", "action")]
    return pc.binary_join_element_wise(*parts, "\x1f").combine_chunks()
