"""`python -m tributary.bench_restart`: what a worker restart costs, from the topic's start and from a checkpoint.

Side by side in one run, over one in-memory topic (no broker: the merge's own work,
which is what grows with the history a topic retains):
    from the start     merge every record, as a restart without a checkpoint does
    checkpoint         snapshot the whole state: the copy the scoring thread makes, then
                       the write (on a thread of its own in the worker), and its size
    from checkpoint    load the newest snapshot, read each partition's last merged record
                       again to check it, then merge the records that came after it

    python -m tributary.bench_restart [--transactions 1000000] [--accounts 200000]
        [--partitions 4] [--tail 0.01] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from models.contracts import TransactionEvent
from models.features.partitioning import PartitionOf
from models.features.transactions import TransactionFeatureConfig
from stream.pipeline.records import RawRecord, decode_or_dead_letter
from stream.state.graph_checkpoint import GraphCheckpoints
from stream.state.graph_merge import GraphMerge

START_S = 1_735_689_600  # 2025-01-01T00:00:00Z


class _Topic:
    """The graph feed over records held in memory, every partition complete (caught up)."""

    def __init__(self, log: dict[int, list[RawRecord]], shown: dict[int, int]):
        self.partitions = len(log)
        self.log, self.shown = log, shown  # shown[p]: records of p produced so far
        self.at = [0] * self.partitions

    def peek(self, partition: int) -> RawRecord | None:
        at = self.at[partition]
        return self.log[partition][at] if at < self.shown[partition] else None

    def pop(self, partition: int) -> RawRecord:
        record = self.log[partition][self.at[partition]]
        self.at[partition] += 1
        return record

    def caught_up(self, partition: int) -> bool:
        return self.at[partition] >= self.shown[partition]

    def wait(self, timeout_s: float) -> None:
        pass

    def rewind(self, offsets: list[int] | None = None) -> None:
        self.at = list(offsets) if offsets is not None else [0] * self.partitions

    def buffered(self) -> int:
        return sum(s - a for s, a in zip(self.shown.values(), self.at))

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def synthetic_topic(transactions: int, accounts: int, partitions: int, seed: int = 7):
    """Transfers between random accounts, two seconds apart, each in its source's partition."""
    rng = np.random.default_rng(seed)
    sources = rng.integers(0, accounts, transactions)
    destinations = (sources + 1 + rng.integers(0, accounts - 1, transactions)) % accounts
    amounts = np.round(rng.lognormal(4, 1.2, transactions), 2)
    partition = PartitionOf(partitions)([f"a{s}" for s in sources]).tolist()
    log: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
    order = []
    for i in range(transactions):
        p = partition[i]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START_S + 2 * i))
        value = (f'{{"event_id":"t{i}","event_time":"{stamp}","source_account":"a{sources[i]}",'
                 f'"destination_account":"a{destinations[i]}","amount":{amounts[i]},"type":"transfer"}}').encode()
        log[p].append(RawRecord("transactions", p, len(log[p]), f"a{sources[i]}".encode(), value))
        order.append((p, len(log[p]) - 1))
    return log, order


def run(transactions: int, accounts: int, partitions: int, tail: float, progress: bool = True) -> dict:
    config = TransactionFeatureConfig()
    log, order = synthetic_topic(transactions, accounts, partitions)
    cut = int(round(transactions * (1 - tail)))
    at_cut = {p: 0 for p in range(partitions)}
    for p, _ in order[:cut]:
        at_cut[p] += 1
    everything = {p: len(records) for p, records in log.items()}
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)

    def merge(topic: _Topic, checkpoints: GraphCheckpoints | None = None) -> GraphMerge:
        # Nothing scored here: the records are only recorded, as for another worker's partitions.
        return GraphMerge(config, topic, lambda r: decode_or_dead_letter(r, TransactionEvent, 16_384)[0],
                          lambda p: None, idle_s=0, checkpoints=checkpoints, checkpoint_every_s=1e9)

    def merge_to_the_end(m: GraphMerge) -> float:
        started = time.perf_counter()
        m.record_through({p: everything[p] - 1 for p in range(partitions) if everything[p]})
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="tributary-bench-restart-") as folder:
        checkpoints = GraphCheckpoints(folder, {"bench": True})
        say(f"{transactions:,} transactions over {accounts:,} accounts; merging the first {cut:,} ...")
        before = merge(_Topic(log, at_cut), checkpoints)
        started = time.perf_counter()
        before.record_through({p: n - 1 for p, n in at_cut.items() if n})
        first_part_s = time.perf_counter() - started
        started = time.perf_counter()
        arrays = before.state.to_arrays()
        copy_s = time.perf_counter() - started
        position = before.position()
        started = time.perf_counter()
        path = checkpoints.save(arrays, position)
        write_s = time.perf_counter() - started
        size = sum(f.stat().st_size for f in Path(path).iterdir())
        accounts_held = len(before.state)
        del before, arrays

        say("restarting from the start ...")
        scratch = merge(_Topic(log, everything))
        scratch_s = merge_to_the_end(scratch)
        say("restarting from the checkpoint ...")
        restored = merge(_Topic(log, everything), GraphCheckpoints(folder, {"bench": True}))
        restored_s = merge_to_the_end(restored)
        assert restored.restored == cut and restored.merged == scratch.merged == transactions
        same = all(np.array_equal(a, b) for a, b in zip(scratch.state.to_arrays().values(),
                                                          restored.state.to_arrays().values()))
    return {
        "transactions": transactions, "accounts": accounts_held, "partitions": partitions,
        "tail_transactions": transactions - cut,
        "from_start_s": round(scratch_s, 2), "from_start_us_per_record": round(scratch_s / transactions * 1e6, 1),
        "from_checkpoint_s": round(restored_s, 2), "checkpoint_load_s": round(restored.restore_s, 2),
        "checkpoint_copy_s": round(copy_s, 3), "checkpoint_write_s": round(write_s, 2),
        "checkpoint_bytes": size, "checkpoint_bytes_per_account": round(size / max(accounts_held, 1), 1),
        "merge_of_the_first_part_s": round(first_part_s, 2),
        "same_state": bool(same),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--tail", type=float, default=0.01, help="share of the records after the checkpoint")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.transactions, args.accounts, args.partitions, args.tail, progress=not args.json)
    if args.json:
        print(json.dumps(result))
        return
    print(f"restart after {result['transactions']:,} transactions ({result['accounts']:,} accounts, "
          f"{result['partitions']} partitions)")
    print(f"  from the start of the topic   {result['from_start_s']:>8.2f} s  "
          f"({result['from_start_us_per_record']} µs per record)")
    print(f"  from a checkpoint             {result['from_checkpoint_s']:>8.2f} s  "
          f"(loading it {result['checkpoint_load_s']:.2f} s, then {result['tail_transactions']:,} records merged)")
    print(f"  checkpoint: copy {result['checkpoint_copy_s']:.3f} s on the scoring thread, write "
          f"{result['checkpoint_write_s']:.2f} s, {result['checkpoint_bytes'] / 1e6:,.1f} MB "
          f"({result['checkpoint_bytes_per_account']:.0f} B per account)")
    print(f"  same state both ways: {result['same_state']}")


if __name__ == "__main__":
    main()
