"""`tributary bench-model`: the models alone, batch by batch, on the CPU and on CUDA.

No broker, no worker: a generated (or given) world is featurised once with the code the
worker and training run, then batches of each size are scored again and again the way
the worker scores them (numpy in, a copy to the device, one forward pass in
`torch.inference_mode`, scores back as numpy), and each call is timed.
    fraud   the served fraud model through `FraudScorer.score`
    donors  the multi-target donor model through `DonorModel.score`
Each row gives the per-batch latency (p50, p99, ms), events/s (batch size over the mean
latency) and, for CUDA rows, the largest absolute difference between the scores CUDA
gave and the CPU's scores of the same rows (the parity the worker needs when it scores
on a GPU what was evaluated on a CPU).

Untrained models of the served architecture are used unless model directories are
given (cost does not depend on the weights); their input normalisation is set from the
world, so the scores compared between devices are not all saturated at 0 or 1.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from models import strict_json

DEFAULT_BATCH_SIZES = (1, 16, 64, 256, 1024)
MODELS = ("fraud", "donors")


@dataclass
class Row:
    model: str
    device: str
    batch: int
    repeats: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    events_per_s: float
    max_abs_diff_vs_cpu: float | None = None


@dataclass
class ModelInfo:
    name: str
    version: str
    trained: bool
    parameters: int
    rows_featurised: int
    featurise_s: float
    max_abs_diff_vs_cpu: dict = field(default_factory=dict)  # device -> over every featurised row


@dataclass
class BenchModelResult:
    environment: dict
    models: dict
    rows: list
    notes: list


# --- the scorers, as the worker (fraud) and the trainer (donors) call them ----------------------


class _FraudScorerAdapter:
    def __init__(self, loaded, device: torch.device):
        from stream.scoring.fraud_scorer import FraudScorer

        self.loaded = loaded
        self.scorer = FraudScorer(loaded, device)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.scorer.score(self.loaded, inputs)


class _DonorScorerAdapter:
    def __init__(self, loaded, device: torch.device):
        from stream.scoring.donor_scorer import DonorScorer

        self.loaded = loaded
        self.scorer = DonorScorer(loaded, device)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        from models.features.donors import DonorBatch

        return self.scorer.score(self.loaded, DonorBatch(**inputs))


def _copy(loaded):
    """The loaded artifact with its own copy of the model (a scorer moves its model to its device)."""
    import copy
    from dataclasses import replace

    return replace(loaded, model=copy.deepcopy(loaded.model).to("cpu"))


# --- models and inputs ------------------------------------------------------------------------------


def _fraud_inputs(world_dir: Path, features) -> tuple[dict[str, np.ndarray], float]:
    """Every transaction of the world featurised in event-time order (training's code path)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from models.features.account_state import AccountState
    from models.features.transactions import TransactionBatch, TransactionFeaturizer
    from models.worlds import open_world
    from offline.train.fraud_data import type_and_channel_codes

    started = time.perf_counter()
    world = open_world(world_dir)
    featurizer = TransactionFeaturizer(AccountState(window=features.window, capacity=1 << 14), features)
    parts = []
    for batch in world.iter_events("transactions", batch_size=8192):
        times = pc.divide(batch.column("event_time").cast(pa.int64()), 1_000_000.0).to_numpy()
        types, channels = type_and_channel_codes(batch)
        parts.append(featurizer.featurize_columns(
            batch.column("source_account").to_pylist(), batch.column("destination_account").to_pylist(),
            batch.column("amount").to_numpy(), times, types, channels,
        ))
    return TransactionBatch.concat(parts).arrays(), time.perf_counter() - started


def _fraud_model(world_dir: Path, model_dir: Path | None, name: str, profile: str, scratch: Path):
    """(LoadedFraudModel, inputs, featurise seconds, trained?)."""
    from models.artifacts import ArtifactManifest, latest_version, save_artifact, served_root
    from models.features.transactions import TransactionFeatureConfig
    from models.model_store import load_fraud_model
    from offline.train.fraud import PROFILES, build_model, model_specs, normalisation_stats

    if model_dir is not None:
        loaded = load_fraud_model(latest_version(served_root(model_dir), name))
        inputs, seconds = _fraud_inputs(world_dir, loaded.features)
        return loaded, inputs, seconds, True
    features = TransactionFeatureConfig()
    inputs, seconds = _fraud_inputs(world_dir, features)
    spec = next(s for s in model_specs(PROFILES[profile]) if s.name == name)
    torch.manual_seed(0)
    model = build_model(spec)
    model.set_normalisation(normalisation_stats(inputs))
    manifest = ArtifactManifest(name=spec.name, task="fraud", hyperparameters={"model": spec.to_dict(), "profile": profile},
                                feature_schema=features.schema(), feature_schema_hash=features.schema_hash(),
                                threshold=0.5, reference_distributions={})
    path = save_artifact(scratch / "fraud", manifest, model.state_dict())
    return load_fraud_model(path), inputs, seconds, False


def _donor_model(world_dir: Path, model_dir: Path | None, profile: str, scratch: Path):
    """(LoadedDonorModel, inputs, featurise seconds, trained?)."""
    from models.artifacts import ArtifactManifest, latest_version, read_manifest, save_artifact, served_root
    from models.features.donors import F_EDGE, F_GIFT, F_NODE, F_TAB, N_RELATIONSHIP_TYPES, DonorFeatureConfig
    from models.model_store import load_donor_model
    from models.nn.donor_model import DonorModel, DonorModelSpec
    from models.worlds import open_world
    from offline.train.donor_data import TRAIN, load_donor_dataset
    from offline.train.donor_neural import PROFILES, normalisation_stats, tabular_quantiles

    path = latest_version(served_root(model_dir), "multitarget") if model_dir is not None else None
    config = DonorFeatureConfig.from_schema(read_manifest(path).feature_schema) if path else DonorFeatureConfig()
    started = time.perf_counter()
    data = load_donor_dataset(open_world(world_dir), config)
    seconds = time.perf_counter() - started
    inputs = data.batch.arrays()
    if path is not None:
        return load_donor_model(path), inputs, seconds, True
    dims = {"tab": F_TAB, "gift": F_GIFT, "node": F_NODE, "edge": F_EDGE, "window": config.window,
            "neighbours": config.neighbours, "types": N_RELATIONSHIP_TYPES}
    spec = DonorModelSpec(name="multitarget", targets=data.targets, dims=dims, **PROFILES[profile].widths)
    torch.manual_seed(0)
    model = DonorModel(spec)
    train = data.index(TRAIN)
    model.set_normalisation(normalisation_stats(data.batch, train), tabular_quantiles(data.batch, train, spec.tab_bins))
    manifest = ArtifactManifest(name="multitarget", task="donors", hyperparameters={"model": spec.to_dict()},
                                feature_schema=config.schema(), feature_schema_hash=config.schema_hash(),
                                threshold={t: 0.5 for t in spec.targets})
    path = save_artifact(scratch / "donors", manifest, model.state_dict())
    return load_donor_model(path), inputs, seconds, False


# --- timing ----------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _slices(n: int, batch: int, count: int) -> list[np.ndarray]:
    """`count` consecutive windows of `batch` rows, wrapping around the featurised rows."""
    return [(np.arange(batch) + i * batch) % n for i in range(count)]


def time_batches(score, inputs: dict[str, np.ndarray], device: torch.device, batch: int, repeats: int, warmup: int,
                 reference: np.ndarray | None, distinct: int = 8) -> tuple[np.ndarray, float | None]:
    """Seconds per call of `score` on `repeats` batches of `batch` rows, after `warmup` calls;
    and the largest |score - reference| over the timed rows (None without a reference)."""
    n = len(next(iter(inputs.values())))
    # Gathered outside the timed region (the worker's batches arrive as arrays already);
    # a few distinct batches, used in turn, bound the memory this takes.
    windows = _slices(n, batch, min(warmup + repeats, distinct))
    batches = [{k: np.ascontiguousarray(v[w]) for k, v in inputs.items()} for w in windows]
    for i in range(warmup):
        score(batches[i % len(batches)])
    _sync(device)
    seconds = np.empty(repeats)
    diff = 0.0
    for i in range(repeats):
        w, b = windows[(warmup + i) % len(windows)], batches[(warmup + i) % len(batches)]
        _sync(device)
        started = time.perf_counter()
        scores = score(b)
        _sync(device)
        seconds[i] = time.perf_counter() - started
        if reference is not None:
            diff = max(diff, float(np.max(np.abs(scores - reference[w]))))
    return seconds, (diff if reference is not None else None)


def score_all(score, inputs: dict[str, np.ndarray], chunk: int = 1024) -> np.ndarray:
    n = len(next(iter(inputs.values())))
    return np.concatenate([score({k: v[s:s + chunk] for k, v in inputs.items()}) for s in range(0, n, chunk)])


def resolve_devices(requested: tuple[str, ...], notes: list[str]) -> list[torch.device]:
    wanted = list(dict.fromkeys(requested or ("auto",)))
    devices: list[str] = []
    for name in wanted:
        if name == "auto":
            devices += ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        else:
            devices.append(name)
    devices = list(dict.fromkeys(devices))
    if "cuda" in devices and not torch.cuda.is_available():
        devices.remove("cuda")
        notes.append("CUDA rows skipped: torch.cuda.is_available() is False on this machine "
                     f"(torch {torch.__version__}).")
    elif "cuda" not in devices and not torch.cuda.is_available():
        notes.append(f"No CUDA on this machine (torch {torch.__version__}): CPU rows only.")
    return [torch.device(d) for d in devices]


def environment(threads: int) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": None,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_runtime"] = torch.version.cuda
    return info


def run_bench_model(
    fraud_world: Path,
    donor_world: Path,
    scratch: Path,
    models: tuple[str, ...] = MODELS,
    devices: tuple[str, ...] = ("auto",),
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    repeats: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    model_dir: Path | None = None,
    fraud_model: str = "fusion-gated",
    donor_model_dir: Path | None = None,
    profile: str = "quick",
    cudnn_tf32: bool = False,
    progress=print,
) -> BenchModelResult:
    threads = threads or max(1, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    notes: list[str] = []
    chosen = resolve_devices(devices, notes)
    rows: list[Row] = []
    infos: dict[str, ModelInfo] = {}
    for kind in models:
        if kind == "fraud":
            loaded, inputs, seconds, trained = _fraud_model(fraud_world, model_dir, fraud_model, profile, scratch)
            adapter = _FraudScorerAdapter
        else:
            loaded, inputs, seconds, trained = _donor_model(donor_world, donor_model_dir, profile, scratch)
            adapter = _DonorScorerAdapter

        def make(device, loaded=loaded, adapter=adapter):
            scorer = adapter(_copy(loaded), device)
            if device.type == "cuda" and cudnn_tf32:
                torch.backends.cudnn.allow_tf32 = True  # torch's default, which the served scorers turn off
            return scorer

        n = len(next(iter(inputs.values())))
        info = ModelInfo(name=loaded.manifest.name, version=loaded.version, trained=trained,
                         parameters=sum(p.numel() for p in loaded.model.parameters()), rows_featurised=n,
                         featurise_s=round(seconds, 2))
        infos[kind] = info
        progress(f"{kind}: {info.name} ({'trained' if trained else 'untrained'}, {info.parameters:,} parameters), "
                 f"{n:,} rows featurised in {seconds:.1f} s")
        reference = score_all(make(torch.device("cpu")), inputs)
        for device in chosen:
            score = make(device)
            if device.type != "cpu":
                everything = score_all(score, inputs)
                info.max_abs_diff_vs_cpu[device.type] = float(np.max(np.abs(everything - reference)))
            for batch in batch_sizes:
                seconds_per_call, diff = time_batches(score, inputs, device, batch, repeats, warmup,
                                                      reference if device.type != "cpu" else None)
                p50, p99 = np.percentile(seconds_per_call, [50, 99]) * 1e3
                mean = float(seconds_per_call.mean())
                rows.append(Row(kind, device.type, batch, repeats, round(float(p50), 4), round(float(p99), 4),
                                round(mean * 1e3, 4), round(batch / mean, 1),
                                None if diff is None else float(f"{diff:.3g}")))
                print(f"  {kind} {device.type} batch {batch}: p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
                      f"{batch / mean:,.0f} events/s", file=sys.stderr, flush=True)
            del score
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if any(d.type == "cuda" for d in chosen):
        notes.append("CUDA rows ran with cuDNN's TF32 on (--cudnn-tf32), not as the worker serves" if cudnn_tf32 else
                     "CUDA rows ran as the worker serves: exact float32 (cuDNN and matmul TF32 off).")
        notes.append("CUDA timings include the host-to-device copy of the inputs and the copy of the scores back "
                     "(what the worker pays per batch); each call is bracketed by torch.cuda.synchronize.")
    return BenchModelResult(environment(threads), {k: asdict(v) for k, v in infos.items()},
                            [asdict(r) for r in rows], notes)


# --- the command -----------------------------------------------------------------------------------


def print_table(result: BenchModelResult) -> None:
    env = result.environment
    print(f"torch {env['torch']}, {env['torch_threads']} CPU threads of {env['cpu_count']}, "
          f"CUDA: {env['cuda_device'] or 'none'}")
    for kind, info in result.models.items():
        diffs = ", ".join(f"{d} {v:.3g}" for d, v in info["max_abs_diff_vs_cpu"].items()) or "-"
        print(f"{kind}: {info['name']} {info['version']} ({'trained' if info['trained'] else 'untrained'}, "
              f"{info['parameters']:,} parameters; {info['rows_featurised']:,} rows; max |score - CPU score| "
              f"over all rows: {diffs})")
    header = f"{'model':<8}{'device':<8}{'batch':>7}{'p50 ms':>10}{'p99 ms':>10}{'events/s':>12}{'max|diff| vs CPU':>18}"
    print(header)
    print("-" * len(header))
    for r in result.rows:
        diff = "-" if r["max_abs_diff_vs_cpu"] is None else f"{r['max_abs_diff_vs_cpu']:.3g}"
        print(f"{r['model']:<8}{r['device']:<8}{r['batch']:>7}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
              f"{r['events_per_s']:>12,.0f}{diff:>18}")
    for note in result.notes:
        print(f"note: {note}")


def bench_model_main(
    fraud_data: Path | None, donor_data: Path | None, accounts: int, days: int, donors: int,
    models: tuple[str, ...], devices: tuple[str, ...], batch_sizes: tuple[int, ...], repeats: int, warmup: int,
    threads: int | None, model_dir: Path | None, fraud_model: str, donor_model_dir: Path | None, profile: str,
    cudnn_tf32: bool, as_json: bool,
) -> BenchModelResult:
    say = (lambda message: print(message, file=sys.stderr, flush=True)) if as_json else print
    models = tuple(dict.fromkeys(models or MODELS))
    with tempfile.TemporaryDirectory(prefix="tributary-bench-model-") as scratch:
        scratch = Path(scratch)
        if "fraud" in models and fraud_data is None:
            from offline.generate.fraud_world import generate_fraud_world

            fraud_data = scratch / "fraud-world"
            say(f"generating a fraud world: {accounts:,} accounts, {days} days")
            generate_fraud_world(fraud_data, accounts=accounts, days=days, seed=7, progress=False)
        if "donors" in models and donor_data is None:
            from offline.generate.donor_world import generate_donor_world

            donor_data = scratch / "donor-world"
            say(f"generating a donor world: {donors:,} donors")
            generate_donor_world(donor_data, donors=donors, seed=7, progress=False)
        result = run_bench_model(fraud_data, donor_data, scratch, models, devices, batch_sizes, repeats, warmup,
                                 threads, model_dir, fraud_model, donor_model_dir, profile, cudnn_tf32, progress=say)
    if as_json:
        print(strict_json.dumps(asdict(result)))
    else:
        print_table(result)
    return result
