"""Causal donor features, shared by training and the streaming worker.

A `DonorState` (models.features.donor_state) ingests donor events in event-time order;
`DonorFeaturizer.featurize(donor_ids, at)` reads model inputs for some donors from the
state as it is at time `at`. Offline: replay every event before the cut-off, then read
all eligible donors at the cut-off (offline.train.donor_replay + `featurize`). Worker: ingest a gift,
then read that donor at the gift's time. Same kernel, same numbers (tests check it).

Reading never writes, and every time-dependent feature is measured back from `at`, so a
read at `at` sees exactly the ingested events; `featurize` refuses an `at` earlier than
the latest event ingested (it would read the future).

Missing is never zero: every tabular feature has a mask column (1 = present), and the
neighbour vectors carry explicit "missing" indicator features next to zero-filled values.

Shapes (N donors, W gift window, K neighbours read per type, 5 relationship types):
    tab       [N, F_TAB], tab_mask [N, F_TAB]   profile, giving, referral and degree aggregates
    seq       [N, W, F_GIFT], seq_mask [N, W]   last W gifts, right-aligned (newest last)
    node      [N, F_NODE]                       the donor's own node vector (GraphSAGE root)
    nbr       [N, 5, K, F_NODE + F_EDGE], nbr_mask [N, 5, K]
                                                latest live neighbours per type, newest first,
                                                each read from its own state at `at`
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import numpy as np

from models.features._donor_kernel import _featurize
from models.features.donor_schema import (  # noqa: F401 - the schema's names, where features are used
    CHANNELS,
    EDGE_FEATURES,
    F_EDGE,
    F_GIFT,
    F_NBR,
    F_NODE,
    F_TAB,
    GIFT_FEATURES,
    N_RELATIONSHIP_TYPES,
    NODE_FEATURES,
    REGION_BUCKETS,
    RELATIONSHIPS,
    TAB_FEATURES,
    DonorFeatureConfig,
)
from models.features.donor_state import DonorState, donor_key, donor_state_time, month_index


@dataclass
class DonorBatch:
    """Model inputs for a set of donors at one time (float32 numpy arrays, see module doc)."""

    tab: np.ndarray
    tab_mask: np.ndarray
    seq: np.ndarray
    seq_mask: np.ndarray
    node: np.ndarray
    nbr: np.ndarray
    nbr_mask: np.ndarray

    def __len__(self) -> int:
        return self.tab.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)

    def modality_mask(self) -> np.ndarray:
        """[N, 3] float32: tabular (always), sequence (any gift), network (any live neighbour)."""
        return np.stack(
            [np.ones(len(self), np.float32), self.seq_mask.max(axis=1, initial=0.0),
             self.nbr_mask.reshape(len(self), -1).max(axis=1, initial=0.0)], axis=1
        ).astype(np.float32)

    @classmethod
    def empty(cls, n: int, config: DonorFeatureConfig) -> "DonorBatch":
        W, K = config.window, config.neighbours
        return cls(
            tab=np.zeros((n, F_TAB), np.float32),
            tab_mask=np.zeros((n, F_TAB), np.float32),
            seq=np.zeros((n, W, F_GIFT), np.float32),
            seq_mask=np.zeros((n, W), np.float32),
            node=np.zeros((n, F_NODE), np.float32),
            nbr=np.zeros((n, N_RELATIONSHIP_TYPES, K, F_NBR), np.float32),
            nbr_mask=np.zeros((n, N_RELATIONSHIP_TYPES, K), np.float32),
        )

    @classmethod
    def concat(cls, batches: list["DonorBatch"]) -> "DonorBatch":
        return cls(**{k: np.concatenate([b.__dict__[k] for b in batches]) for k in batches[0].__dict__})

    def take(self, index) -> "DonorBatch":
        return DonorBatch(**{k: v[index] for k, v in self.__dict__.items()})


class DonorFeaturizer:
    """Reads model inputs for donors from a `DonorState` as of a time.

    >>> from datetime import datetime, timezone
    >>> from models.contracts import GiftChannel, GiftEvent
    >>> config = DonorFeatureConfig(window=4, fanout=8, neighbours=2)
    >>> f = DonorFeaturizer(config.new_state(), config)
    >>> for day in (1, 2, 3):
    ...     f.state.ingest(GiftEvent(event_id=f"g{day}", event_time=datetime(2024, 3, day, tzinfo=timezone.utc),
    ...                              donor_id="d1", amount=10.0, channel=GiftChannel.MAIL))
    >>> batch = f.featurize(["d1", "nobody"], datetime(2024, 3, 4, tzinfo=timezone.utc))
    >>> batch.seq_mask.tolist()
    [[0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    >>> batch.modality_mask().tolist()
    [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    """

    def __init__(self, state: DonorState, config: DonorFeatureConfig = DonorFeatureConfig()):
        if (state.window, state.fanout, state.region_buckets) != (config.window, config.fanout, config.region_buckets):
            raise ValueError(
                f"state keeps window {state.window}, fanout {state.fanout}, {state.region_buckets} region buckets; "
                f"features expect {config.window}, {config.fanout}, {config.region_buckets}"
            )
        self.state, self.config = state, config

    def featurize(self, donor_ids: Iterable[str], at: datetime, strict: bool = True) -> DonorBatch:
        """Inputs of `donor_ids` as of `at` (every ingested event counts; unknown donors read empty).

        strict: refuse an `at` before the latest ingested event, which would let later
        events leak into features "at" an earlier time. A worker that scores a late event
        may pass False: ages are then clamped at zero.
        """
        keys = np.array([donor_key(d) for d in donor_ids], dtype=np.int64)
        return self.featurize_keys(keys, at, strict)

    def featurize_keys(self, keys: np.ndarray, at: datetime, strict: bool = True) -> DonorBatch:
        t = donor_state_time(at)
        if strict and t < self.state.watermark:
            raise ValueError(
                f"features at {at.isoformat()} requested, but the state already holds events up to "
                f"{self.state.watermark:.0f} s after 2000-01-01: they would leak into the features"
            )
        state = self.state
        rows = np.array([state.lookup(int(k)) for k in keys], dtype=np.int64)
        batch = DonorBatch.empty(len(rows), self.config)
        if len(rows) == 0:
            return batch
        _featurize(
            rows, t, month_index(at), state.meta, state.profile,
            state.ring["amount"], state.ring["time"], state.ring["month"], state.ring["code"],
            state.adj_block, state.adj_len, state.degree,
            state.pool["neighbour"], state.pool["time"], state.pool["strength"],
            batch.tab, batch.tab_mask, batch.seq, batch.seq_mask, batch.node, batch.nbr, batch.nbr_mask,
        )  # fmt: skip
        return batch
