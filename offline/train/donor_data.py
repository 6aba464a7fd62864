"""The donor training data: targets, the 70/15/15 split by donor id, features as of the cut-off.

Targets come from the world: `donor_targets` gives the segments the data set has (all
five for the synthetic world, `targets_available` for CDNOW), `donor_response` gives
one target, `responded` (pva97nk). Features of the labelled donors are read from a
donor state replayed up to the cut-off (events strictly before it; asserted), with the
same code the worker runs. A world with no cut-off (pva97nk's single snapshot) is read
at its last event.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from models.contracts import Segment
from models.features.donor_state import DonorState, donor_state_time
from models.features.donors import (
    DonorBatch,
    DonorFeatureConfig,
    DonorFeaturizer,
)
from models.features.partitioning import DEFAULT_PARTITIONS, PartitionOf
from models.nn.donor_model import MODALITIES
from models.worlds import World, WorldError, WorldKind
from offline.train.donor_replay import donor_states_at

# Loss weights per segment, from the design; renormalised over the targets a world has.
TARGET_WEIGHTS = {
    Segment.HIGH_ENGAGEMENT.value: 0.25,
    Segment.NETWORK_INFLUENCE.value: 0.20,
    Segment.GIVING_CONSISTENCY.value: 0.20,
    Segment.HIGH_VALUE.value: 0.20,
    Segment.RECENT_ENGAGEMENT.value: 0.15,
}
RESPONSE_TARGET = "responded"
FOCAL_ALPHA, FOCAL_GAMMA = 0.75, 2.0
SPLIT = (0.70, 0.15)  # train, validation; the rest is test
TRAIN, VALIDATION, TEST = 0, 1, 2
@dataclass
class DonorDataset:
    """Features, labels and split of the labelled donors of one world."""

    donor_ids: np.ndarray  # object array of str
    targets: tuple[str, ...]
    labels: np.ndarray  # [N, T] float32 (0/1)
    batch: DonorBatch
    split: np.ndarray  # [N] TRAIN / VALIDATION / TEST
    at: datetime
    split_desc: str
    notes: list[str]
    description: dict  # what goes into the artifact's training_data
    partitions: int = 1  # input partitions of the worker whose view the features are

    def index(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.split == part)


def split_of(donor_ids) -> np.ndarray:
    """TRAIN / VALIDATION / TEST per donor from a hash of its id: stable across runs and worlds."""
    u = np.array([int.from_bytes(hashlib.blake2b(f"split:{d}".encode(), digest_size=8).digest(), "little") / 2.0**64
                  for d in donor_ids])
    return np.where(u < SPLIT[0], TRAIN, np.where(u < SPLIT[0] + SPLIT[1], VALIDATION, TEST)).astype(np.int8)


def load_donor_dataset(world: World, config: DonorFeatureConfig = DonorFeatureConfig(),
                       partitions: int = DEFAULT_PARTITIONS) -> DonorDataset:
    """Targets from the world's label files, features from the state at the cut-off, as a
    worker with `partitions` input partitions holds it: each donor read from its home
    partition's state, its neighbours as that partition saw them."""
    m = world.manifest
    if m.kind is not WorldKind.DONORS:
        raise WorldError(f"{world.root} is a {m.kind.value} world; `train donors` needs a donor world")
    notes: list[str] = []
    if world.has_labels("donor_targets"):
        table = world.read_labels("donor_targets")
        offered = m.parameters.get("targets_available") or list(TARGET_WEIGHTS)
        unavailable = [t for t in TARGET_WEIGHTS if t not in offered]
        if unavailable:
            notes.append(f"Targets this data set cannot define (world parameters `targets_available`): "
                         f"{', '.join(unavailable)}; they are not trained and left out of the report.")
        targets = [t for t in TARGET_WEIGHTS if t in offered]
        if m.cutoff is None:
            raise WorldError(f"{world.root} has donor_targets but no cut-off in {world.root / 'world.json'}")
        at, inclusive = m.cutoff, False
    elif world.has_labels("donor_response"):
        table = world.read_labels("donor_response")
        targets = [RESPONSE_TARGET]
        if m.cutoff is not None:
            at, inclusive = m.cutoff, False
        elif m.time_range is not None:
            at, inclusive = m.time_range[1], True
            notes.append(f"The world has no cut-off: features are read at its last event ({at.isoformat()}), "
                         "i.e. the profile snapshot the response label refers to.")
        else:
            raise WorldError(f"{world.root} has no events to read features from")
    else:
        raise WorldError(f"{world.root} has neither donor_targets nor donor_response labels; nothing to train on")

    ids = np.array(table.column("donor_id").to_pylist(), dtype=object)
    labels = np.stack([np.asarray(table.column(t).fill_null(False), dtype=np.float32) for t in targets], axis=1)
    empty = [t for j, t in enumerate(targets) if not labels[:, j].any()]
    if empty:
        notes.append(f"Targets with no positive donor in this world: {', '.join(empty)}; not trained, not reported.")
        keep = [j for j, t in enumerate(targets) if t not in empty]
        targets, labels = [targets[j] for j in keep], labels[:, keep]
    if not targets:
        raise WorldError(f"{world.root}: no target has a positive donor; nothing to train")

    states = donor_states_at(world, at, config, inclusive=inclusive, partitions=partitions)
    if not inclusive:
        # The guard the targets rely on: nothing at or after the cut-off was read.
        assert all(s.watermark < donor_state_time(at) for s in states), \
            "an event at or after the cut-off reached the features"
    batch = _featurize_at_home(states, ids, at, config)
    if partitions > 1:
        notes.append(f"Features are those a worker with {partitions} input partitions reads: each donor from its own "
                     "partition's state, where a referrer or related donor keyed to another partition has only what "
                     "this partition saw of them.")
    split = split_of(ids)
    modalities = batch.modality_mask().mean(axis=0)
    if m.cutoff is not None:
        split_desc = (f"random 70/15/15 split of donors by id hash; features from events before the cut-off "
                      f"{m.cutoff.date()}, targets on [{m.cutoff.date()}, {m.horizon.date() if m.horizon else '?'}), "
                      "so the temporal split is the cut-off itself")
    else:
        split_desc = "random 70/15/15 split of donors by id hash (no cut-off: one snapshot and its response)"
    description = {
        "world": str(world.root),
        "source": m.source,
        "synthetic": m.synthetic,
        "seed": m.seed,
        "cutoff": m.cutoff.isoformat() if m.cutoff else None,
        "horizon": m.horizon.isoformat() if m.horizon else None,
        "features_at": at.isoformat(),
        "donors": int(len(ids)),
        "donors_in_state": sum(len(s) for s in states),
        "partitions": partitions,
        "split": {name: int((split == part).sum())
                  for part, name in ((TRAIN, "train"), (VALIDATION, "validation"), (TEST, "test"))},
        "positives": {t: int(labels[:, j].sum()) for j, t in enumerate(targets)},
        "modality_share": {name: round(float(v), 4) for name, v in zip(MODALITIES, modalities)},
        "event_counts": dict(m.counts),
    }
    return DonorDataset(ids, tuple(targets), labels, batch, split, at, split_desc, notes, description, partitions)


def _featurize_at_home(states: list[DonorState], ids: np.ndarray, at: datetime, config: DonorFeatureConfig) -> DonorBatch:
    """Each donor's features from the state of its input partition, in the order of `ids`."""
    if len(states) == 1:
        return DonorFeaturizer(states[0], config).featurize(ids.tolist(), at)
    home = PartitionOf(len(states))(ids.tolist())
    order = np.argsort(home, kind="stable")
    parts = [DonorFeaturizer(state, config).featurize(ids[home == p].tolist(), at)
             for p, state in enumerate(states) if (home == p).any()]
    batch = DonorBatch.concat(parts)  # rows grouped by partition, in `order`
    return batch.take(np.argsort(order, kind="stable"))
