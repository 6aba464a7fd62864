"""`python -m tributary.bench_evidence`: does an alert's evidence point at the laundering?

An alert cites the earlier transactions behind its score (stream.scoring.alert_evidence).
On a world with transaction labels this checks them: for every alert a worker with P
partitions raises on a fraudulent transaction in the test period, how many of the
transactions it cites are fraudulent themselves. Three rankings of the same window
steps, side by side in one run:
    occlusion    what the worker cites: the fall of the score's log-odds when the step
                 (and the neighbour it leads to) is taken out of what the model read
    latest       each window's newest steps in turn
    random       the window steps in random order (seed 0): the floor
Choose on `--split validation` (the default); report `--split test`.

    python -m tributary.bench_evidence --data WORLD --models TRAIN_OUT [--model served] [--partitions 4] [--top 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from models.artifacts import latest_version, served_root
from models.features.served_view import ServedViewFeaturizer
from models.model_store import load_fraud_model
from models.worlds import open_world
from offline.evaluation.evidence import cites_fraud, fraudulent_transfers
from offline.train.fraud_data import TEST, VALIDATION, load_fraud_dataset
from stream.scoring.alert_evidence import alert_evidence, step_occlusion
from stream.scoring.fraud_scorer import FraudScorer, take_rows

CHUNK = 256  # alerts weighed per call
RANKINGS = ("occlusion (what the worker cites)", "latest", "random")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tributary.bench_evidence", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="a `tributary train fraud` output folder")
    parser.add_argument("--model", default="served")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--top", type=int, default=3, help="evidence steps judged per alert")
    parser.add_argument("--newest", type=int, default=None, help="weigh only the newest N steps of each window")
    parser.add_argument("--split", choices=("validation", "test"), default="validation",
                        help="the period judged (choose on validation, report test)")
    args = parser.parse_args(argv)

    world = open_world(args.data)
    loaded = load_fraud_model(latest_version(served_root(args.models), args.model))
    featurizer = ServedViewFeaturizer(loaded.features, args.partitions)
    data = load_fraud_dataset(world, loaded.features, partitions=args.partitions, featurizer=featurizer,
                              train_negative_share=0.0)
    names = featurizer.featurizer.state.names
    fraudulent = fraudulent_transfers(world)
    scorer = FraudScorer(loaded)
    period = np.flatnonzero(data.split == (TEST if args.split == "test" else VALIDATION))
    scores = scorer.score(loaded, take_rows(data.inputs, period))
    caught = period[(scores >= loaded.threshold) & data.labels[period]]
    print(f"{loaded.manifest.name} at P={args.partitions}: {len(caught):,} alerts on the {args.split} period's "
          f"{int(data.labels[period].sum()):,} fraudulent transactions (threshold {loaded.threshold:.3f})")
    if not len(caught):
        return 1

    rng = np.random.default_rng(0)
    tallies = {name: [0, 0, 0] for name in RANKINGS}  # cited, fraudulent, alerts hit
    window = data.inputs.seq_mask.shape[2]
    occlusion_s = 0.0
    for start in range(0, len(caught), CHUNK):
        rows = caught[start:start + CHUNK]
        clock = time.perf_counter()
        occluded = step_occlusion(lambda inputs: scorer.score(loaded, inputs), take_rows(data.inputs, rows), args.newest)
        occlusion_s += time.perf_counter() - clock
        rankings = {
            "occlusion (what the worker cites)": occluded,
            # The newest step of each window, then the next newest of each, ...: a step's position.
            "latest": np.broadcast_to(np.arange(window, dtype=np.float32), (len(rows), 2, window)),
            "random": rng.random((len(rows), 2, window)),
        }
        for name, weights in rankings.items():
            for row, (evidence, _) in zip(rows.tolist(), alert_evidence(data.inputs, rows, weights, names, args.top)):
                hits = sum(cites_fraud(step.model_dump(), data.sources[row], data.destinations[row], fraudulent)
                           for step in evidence)
                tally = tallies[name]
                tally[0] += len(evidence)
                tally[1] += hits
                tally[2] += hits > 0
    print(f"\n| ranking | steps cited (top {args.top} per alert) | fraudulent share | alerts citing one at least |")
    print("|---|---|---|---|")
    for name, (cited, hits, alerts) in tallies.items():
        print(f"| {name} | {cited:,} | {hits / cited:.3f} | {alerts / len(caught):.3f} |")
    print(f"\nocclusion: {occlusion_s / len(caught) * 1e3:.1f} ms per alert (scored once per window step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
