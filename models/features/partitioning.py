"""Which partition a keyed event lands in: Kafka's default partitioner, without Kafka.

Workers merge the transaction partitions in (event time, partition) order, and keep
donor state per partition, so code that wants to compute offline exactly what the
workers compute must split the stream the way the producer did: murmur2 of the key
bytes, as Kafka's Java client and aiokafka do it.
"""

from __future__ import annotations

import numpy as np

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c), as an unsigned 32-bit int.

    >>> murmur2(b"acct0000123")
    4014635507
    """
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    rounded = length & ~3
    for i in range(0, rounded, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length & 3
    if rest == 3:
        h ^= data[rounded + 2] << 16
    if rest >= 2:
        h ^= data[rounded + 1] << 8
    if rest >= 1:
        h ^= data[rounded]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# The partition count a fresh deployment gets (TRIBUTARY_PARTITIONS): what offline
# training and evaluation simulate unless told otherwise, so that the metrics they
# report are those of the model as a default worker serves it.
DEFAULT_PARTITIONS = 4


class PartitionOf:
    """`kafka_partition` of string keys, remembered per key (murmur2 in Python is slow,
    and a stream repeats its accounts).

    >>> PartitionOf(4)(["acct0000123", "acct0000123"]).tolist()
    [3, 3]
    """

    def __init__(self, partitions: int):
        if partitions < 1:
            raise ValueError(f"partitions must be 1 or more, not {partitions}")
        self.partitions = partitions
        self._known: dict[str, int] = {}

    def __call__(self, keys: list[str]) -> np.ndarray:
        if self.partitions == 1:
            return np.zeros(len(keys), dtype=np.int64)
        known = self._known
        out = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            partition = known.get(key)
            if partition is None:
                partition = known[key] = kafka_partition(key.encode(), self.partitions)
            out[i] = partition
        return out
