"""Replay a world's donor events into a `DonorState`: how training reads the state at a cut-off.

Parquet batches through pyarrow, so the worker never imports it: the worker ingests
events one by one (models.features.donor_state), this ingests columns, and both end
in the same state.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.features.donor_layout import (
    AGE_BAND_CODES,
    GIFT_CHANNEL_CODES,
    N_PROFILE_INPUTS,
    NO_KEY,
    RELATIONSHIP_CODES,
)
from models.features.donor_schema import CHANNELS, RELATIONSHIPS, DonorFeatureConfig
from models.features.donor_state import DonorState, donor_key, month_index_us, region_bucket, state_times_us
from models.features.partitioning import PartitionOf
from models.worlds import World

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

def donor_state_at(
    world: World, until: datetime, config: DonorFeatureConfig = DonorFeatureConfig(), inclusive: bool = False,
    batch_size: int = 1 << 20,
) -> DonorState:
    """Ingest every event of `world` before `until` (at or before it when `inclusive`).

    Streams go in one after the other, each in its own (event-time) order: the state
    does not depend on how streams interleave (see donor_state), so this equals a worker
    that ingested the same events one by one. Reads in Parquet batches: bounded memory.
    """
    return donor_states_at(world, until, config, inclusive, batch_size, partitions=1)[0]


def donor_states_at(
    world: World, until: datetime, config: DonorFeatureConfig = DonorFeatureConfig(), inclusive: bool = False,
    batch_size: int = 1 << 20, partitions: int = 1,
) -> list[DonorState]:
    """`donor_state_at` as a worker with `partitions` input partitions holds it: one state
    per partition, each fed the events keyed (by donor id) to that partition, as the
    worker's per-partition donor state is (stream.state.partitioned_donors)."""
    donors = world.manifest.parameters.get("donors", 0)
    states = [config.new_state(capacity=max(1024, donors // partitions + 16)) for _ in range(partitions)]
    partition_of = PartitionOf(partitions)
    limit_us = _us(until)
    for stream, ingest in (("donor_profiles", _ingest_profiles), ("donor_relationships", _ingest_relationships),
                           ("gifts", _ingest_gifts)):  # fmt: skip
        if stream not in world.streams:
            continue
        for batch in world.iter_events(stream, batch_size=batch_size):
            times = np.asarray(pc.cast(batch.column("event_time"), pa.int64()))
            keep = times <= limit_us if inclusive else times < limit_us
            if not keep.all():
                batch = batch.filter(pa.array(keep))
                times = times[keep]
            if batch.num_rows:
                home = partitions_of(batch.column("donor_id"), partition_of)
                for p, state in enumerate(states):
                    mine = home == p
                    if mine.all():
                        ingest(state, batch, times, config)
                    elif mine.any():
                        ingest(state, batch.filter(pa.array(mine)), times[mine], config)
            if not keep[-1:].all():
                break  # streams are sorted by event_time: nothing later can qualify
    return states


def partitions_of(ids: pa.Array | pa.ChunkedArray, partition_of: PartitionOf) -> np.ndarray:
    """The input partition of every donor id (its record key), each distinct id hashed once."""
    if partition_of.partitions == 1:
        return np.zeros(len(ids), dtype=np.int64)
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    encoded = pc.dictionary_encode(ids)
    return partition_of(encoded.dictionary.to_pylist())[np.asarray(encoded.indices, dtype=np.int64)]


def _us(when: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime, exactly (no float round trip)."""
    return (when - _UNIX_EPOCH) // timedelta(microseconds=1)


def keys_of(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """donor_key of every id (NO_KEY for null), hashing each distinct id once."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    encoded = pc.dictionary_encode(ids)
    unique = np.array([donor_key(v) for v in encoded.dictionary.to_pylist()] + [NO_KEY], dtype=np.int64)
    codes = np.asarray(pc.fill_null(encoded.indices, len(unique) - 1), dtype=np.int64)
    return unique[codes]


def _floats(column) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.cast(column, pa.float64()), math.nan), dtype=np.float64)


def _codes(column, mapping) -> np.ndarray:
    """Category strings -> float codes via `mapping` (a callable or dict); null/unmapped -> NaN."""
    encoded = pc.dictionary_encode(column)
    get = mapping if callable(mapping) else (lambda v: mapping.get(v, math.nan))
    table = np.array([get(v) for v in encoded.dictionary.to_pylist()] + [math.nan], dtype=np.float64)
    return table[np.asarray(pc.fill_null(encoded.indices, len(table) - 1), dtype=np.int64)]


def _ingest_gifts(state: DonorState, batch: pa.RecordBatch, times_us: np.ndarray, config: DonorFeatureConfig) -> None:
    channels = _codes(batch.column("channel"), GIFT_CHANNEL_CODES)
    if np.isnan(channels).any():
        raise ValueError("gift with an unknown or null channel; the contract requires one of " + ", ".join(CHANNELS))
    recurring = np.asarray(pc.fill_null(batch.column("is_recurring"), False), dtype=bool)
    state.ingest_gifts(keys_of(batch.column("donor_id")), keys_of(batch.column("referrer_donor_id")),
                       state_times_us(times_us), month_index_us(times_us), _floats(batch.column("amount")),
                       channels.astype(np.int64), recurring)


def _ingest_profiles(state: DonorState, batch: pa.RecordBatch, times_us: np.ndarray, config: DonorFeatureConfig) -> None:
    buckets = config.region_buckets
    values = np.stack(
        [
            _floats(batch.column("tenure_years")),
            _codes(batch.column("age_band"), AGE_BAND_CODES),
            _floats(batch.column("wealth_index")),
            _floats(batch.column("home_owner")),
            _codes(batch.column("region"), lambda r: region_bucket(r, buckets) if r is not None else math.nan),
            *(_floats(batch.column(name)) for name in (
                "event_attendance_12m", "email_open_rate_12m", "volunteer_hours_12m", "promotions_received_12m",
                "prior_gift_count", "prior_gift_total", "months_since_last_gift", "months_since_first_gift")),
        ],
        axis=1,
    )
    assert values.shape[1] == N_PROFILE_INPUTS
    state.ingest_profiles(keys_of(batch.column("donor_id")), state_times_us(times_us), values)


def _ingest_relationships(state: DonorState, batch: pa.RecordBatch, times_us: np.ndarray, config: DonorFeatureConfig) -> None:
    kinds = _codes(batch.column("relationship_type"), RELATIONSHIP_CODES)
    if np.isnan(kinds).any():
        raise ValueError("relationship with an unknown type; valid: " + ", ".join(RELATIONSHIPS))
    added = np.asarray(pc.equal(pc.fill_null(batch.column("action"), "add"), "add"), dtype=bool)
    state.ingest_relationships(keys_of(batch.column("donor_id")), keys_of(batch.column("related_donor_id")),
                               state_times_us(times_us), kinds.astype(np.int64), added,
                               _floats(batch.column("strength")).astype(np.float32))
