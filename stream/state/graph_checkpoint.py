"""Snapshots of the merged transaction graph on local disk, so a restart need not read the whole topic.

The merged state (stream.state.graph_merge) is a function of the `transactions` topic up
to a position: one offset per partition. A checkpoint is that state and that position.
A restarted worker loads the newest one and reads the topic on from its position, the
way Kafka Streams restores a store from a local checkpoint and its changelog's offsets.

Trust nothing on disk blindly:
- a checkpoint names the feature schema, the topic and its partition count it was built
  for; any other is never loaded;
- it also holds a digest of the last record it merged from each partition. The merge
  reads that record again before anything else and starts from scratch when it differs
  (a recreated topic, another cluster) or is gone;
- it is written to a hidden folder renamed into place when complete, so a crash while
  writing leaves no half checkpoint. Unreadable ones are skipped.

Every worker of a group holds the same graph, so workers sharing a directory may use each
other's checkpoints. A few of the newest are kept: when a restarted worker needs the
features of a transaction its newest checkpoint has already passed (it was merged but
never published), an older one that precedes it will do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.features.account_state import AccountState

log = logging.getLogger("tributary.worker")

STATE = "state.npz"
POSITION = "position.json"
PREFIX = "graph-"


def record_digest(value: bytes | None) -> str:
    """What a checkpoint remembers of a record: enough to tell it from any other."""
    return hashlib.blake2b(value or b"", digest_size=16).hexdigest()


@dataclass(frozen=True)
class MergePosition:
    """Where the merge stands: per partition, the offset after its last merged record, the
    time key of that record and its digest (None: nothing merged yet); the last merge key;
    how many records are in the state."""

    next_offset: list[int]
    last_time: list[int | None]
    last_digest: list[str | None]
    last_key: tuple[int, int]
    merged: int

    def to_json(self) -> dict:
        return {"next_offset": self.next_offset, "last_time": self.last_time, "last_digest": self.last_digest,
                "last_key": list(self.last_key), "merged": self.merged}

    @classmethod
    def from_json(cls, data: dict) -> MergePosition:
        return cls([int(o) for o in data["next_offset"]], [None if t is None else int(t) for t in data["last_time"]],
                   [None if d is None else str(d) for d in data["last_digest"]],
                   (int(data["last_key"][0]), int(data["last_key"][1])), int(data["merged"]))


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    position: MergePosition


class GraphCheckpoints:
    """The checkpoints of one graph (`identity`: schema hash, topic, partitions) in `directory`."""

    def __init__(self, directory: str | Path, identity: dict, keep: int = 3):
        self.directory = Path(directory)
        self.identity = identity
        self.keep = keep
        self._writing = threading.Lock()  # one write at a time; a save while one runs is skipped
        self.written = 0

    def newest_first(self) -> list[Checkpoint]:
        """Complete checkpoints of this graph, the most records first."""
        found = []
        for folder in self.directory.glob(f"{PREFIX}*"):
            try:
                data = json.loads((folder / POSITION).read_text())
                if data.get("identity") != self.identity:
                    continue
                found.append(Checkpoint(folder, MergePosition.from_json(data["position"])))
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                continue  # being removed by another worker, or damaged: not a candidate
        return sorted(found, key=lambda c: (c.position.merged, c.path.name), reverse=True)

    def load(self, checkpoint: Checkpoint, window: int) -> AccountState | None:
        """The state of a checkpoint, or None when it cannot be read (then use another)."""
        try:
            with np.load(checkpoint.path / STATE, allow_pickle=False) as stored:
                return AccountState.from_arrays(window, {name: stored[name] for name in stored.files})
        except (OSError, ValueError, KeyError) as error:
            log.warning("graph checkpoint %s is unreadable (%s); not using it", checkpoint.path, error)
            return None

    def save_in_background(self, arrays: dict[str, np.ndarray], position: MergePosition) -> bool:
        """Write a checkpoint on a thread of its own (the arrays are copies: the merge goes on).
        False when a write is still running: this one is skipped."""
        if not self._writing.acquire(blocking=False):
            return False
        threading.Thread(target=self._save_and_release, args=(arrays, position), daemon=True,
                         name="tributary-graph-checkpoint").start()
        return True

    def wait_written(self, timeout_s: float) -> bool:
        """Until the write in progress (if any) is done; False on timeout."""
        if not self._writing.acquire(timeout=timeout_s):
            return False
        self._writing.release()
        return True

    def _save_and_release(self, arrays: dict[str, np.ndarray], position: MergePosition) -> None:
        try:
            self.save(arrays, position)
        except OSError as error:  # a full disk must not stop scoring: restarts just read more
            log.warning("could not write a graph checkpoint to %s: %s", self.directory, error)
        finally:
            self._writing.release()

    def save(self, arrays: dict[str, np.ndarray], position: MergePosition) -> Path:
        name = f"{PREFIX}{position.merged:012d}-{uuid.uuid4().hex[:12]}"  # workers sharing the folder never clash
        final = self.directory / name
        partial = self.directory / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        np.savez(partial / STATE, **arrays)  # type: ignore[arg-type]  # numpy's stubs miss **arrays
        (partial / POSITION).write_text(json.dumps({"identity": self.identity, "position": position.to_json()}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        self.written += 1
        self._prune()
        return final

    def _prune(self) -> None:
        for old in self.newest_first()[self.keep:]:
            shutil.rmtree(old.path, ignore_errors=True)
