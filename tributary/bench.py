"""`tributary bench`: throughput, latency, per-stage cost and memory of the worker.

Everything runs here, on the embedded broker, measured in one run side by side with
baselines: a no-op Faust agent reading the same topic with the same batching, and a
pass-through agent that also publishes one record per event (the ceiling for a scorer).
    1. baselines: events/s of Faust alone, and of Faust passing each event on;
    2. throughput: the whole stream replayed as fast as possible into a fresh worker;
       events/s from the first to the last outcome record (Kafka create timestamps);
    3. latency: a fresh worker at a steady `rate`; consume-to-publish latency per event
       is the outcome record's timestamp minus the input record's (one machine clock).
       Beside it, the floor: the same input at the same rate through a bare aiokafka loop
       that consumes and publishes each record (tributary.bench_floor): no scorer on this
       broker and these cores can beat it. The stream goes on (unmeasured) for a few
       seconds after the measured events, as a live stream would: otherwise the last ones
       would wait for partitions that went quiet only because the bench stopped;
    4. per-stage seconds per event and where the latency goes (the worker's per-phase
       histograms) from its own metrics, peak RSS from /proc, and bytes of feature state
       per account.
A throwaway model of the served architecture is used unless `--model-dir` is given:
cost does not depend on the weights.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models import strict_json
from models.contracts import TransactionEvent, decode
from models.worlds import open_world
from stream.kafka.embedded_broker import EMBEDDED_FETCH_WAIT_MS, EmbeddedBroker, free_port
from stream.kafka.readback import read_topics
from stream.kafka.topics import ensure_topics
from stream.monitoring.metrics import LATENCY_PHASES
from stream.replay import iter_wire_events, replay_world
from stream.settings import TopicNames, WorkerSettings
from stream.worker_process import start_worker


@dataclass
class BenchResult:
    events: int
    events_per_s: float
    noop_events_per_s: float
    passthrough_events_per_s: float  # a Faust agent publishing one record per event, deliveries awaited
    p50_ms: float
    p95_ms: float
    p99_ms: float
    latency_rate: float
    latency_rate_achieved: float  # what the producer managed (it shares the cores)
    latency_events: int
    floor_p50_ms: float  # a bare consume-and-publish loop at the same rate (tributary.bench_floor)
    floor_p95_ms: float
    floor_p99_ms: float
    latency_phases_ms: dict  # phase -> {mean, p50, p99} per event (stream.monitoring.metrics.LATENCY_PHASES)
    peak_rss_mb: float
    batch_max: int
    batch_wait_ms: int
    stage_us_per_event: dict
    state_bytes_per_account: float
    accounts: int
    model: str


def run_bench(world_dir: Path, model_dir: Path, fraud_model: str, rate: float, latency_seconds: float,
              batch_max: int, batch_wait_ms: int, progress=print) -> BenchResult:
    world = open_world(world_dir)
    events = [decode(e.value, TransactionEvent) for e in iter_wire_events(world) if e.stream == "transactions"]
    with EmbeddedBroker() as broker:
        base = WorkerSettings(bootstrap_servers=broker.bootstrap, batch_max=batch_max, batch_wait_ms=batch_wait_ms,
                              model_dir=str(model_dir), fraud_model=fraud_model)

        progress(f"1/3 no-op Faust agent over {len(events):,} events, then one that passes each on")
        noop_topics = _topics("noop")
        asyncio.run(_setup(base, noop_topics, "bench-noop", world))

        def baseline(*to_topic: str) -> float:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                subprocess.run(
                    [sys.executable, "-m", "tributary.bench_noop", broker.bootstrap, noop_topics.transactions,
                     str(len(events)), str(batch_max), str(batch_wait_ms), out.name, *to_topic],
                    capture_output=True, timeout=900, check=False,
                    env={**os.environ, "TRIBUTARY_FETCH_MAX_WAIT_MS": str(EMBEDDED_FETCH_WAIT_MS)},
                )
                return float(json.loads(Path(out.name).read_text() or "{}").get("events_per_s", float("nan")))

        noop_rate = baseline()
        passthrough_rate = baseline(noop_topics.outcomes)

        progress("2/3 worker, as fast as possible")
        full_topics = _topics("full")
        metrics_port = free_port()
        settings = base.model_copy(update={"topics": full_topics, "app_id": "bench-full", "metrics_port": metrics_port})
        asyncio.run(_setup(settings, full_topics, settings.app_id, world=None))
        worker = start_worker(settings)
        try:
            asyncio.run(replay_world(world, settings, progress=False))
            outcomes = asyncio.run(read_topics(settings, [full_topics.outcomes], expected=len(events), timeout_s=900, settle_s=1))
            stamps = sorted(r.timestamp for r in outcomes)
            rate_full = (len(stamps) - 1) / max((stamps[-1] - stamps[0]) / 1000, 1e-9)
            stages = _stage_costs(metrics_port)
            rss = _peak_rss_mb(worker.pid)
        finally:
            _stop(worker)

        count = min(len(events), int(rate * latency_seconds))
        tail = events[count:count + int(rate * TAIL_S)]
        progress(f"3/3 worker at a steady {rate:,.0f} events/s for {count:,} events; then the floor, a bare "
                 "consume-and-publish loop, at the same rate")
        steady_topics = _topics("steady")
        metrics_port = free_port()
        settings = base.model_copy(update={"topics": steady_topics, "app_id": "bench-steady", "metrics_port": metrics_port})
        asyncio.run(_setup(settings, steady_topics, settings.app_id, world=None))
        worker = start_worker(settings)
        try:
            latencies, achieved = asyncio.run(_worker_latencies(settings, events[:count], tail, rate))
            phases = _latency_phases(metrics_port, steady_topics.transactions)
            rss = max(rss, _peak_rss_mb(worker.pid))
        finally:
            _stop(worker)
        floor = _floor_latencies(base.model_copy(update={"topics": _topics("floor")}), events[:count], tail, rate)
    state_bytes, accounts = _state_bytes(events, model_dir, fraud_model)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]).tolist()
    f50, f95, f99 = np.percentile(floor, [50, 95, 99]).tolist()
    return BenchResult(
        events=len(events), events_per_s=round(rate_full, 1), noop_events_per_s=round(noop_rate, 1),
        passthrough_events_per_s=round(passthrough_rate, 1),
        p50_ms=round(p50, 2), p95_ms=round(p95, 2), p99_ms=round(p99, 2), latency_rate=rate,
        latency_rate_achieved=round(achieved, 1), latency_events=len(latencies),
        floor_p50_ms=round(f50, 2), floor_p95_ms=round(f95, 2), floor_p99_ms=round(f99, 2), latency_phases_ms=phases,
        peak_rss_mb=round(rss, 1), batch_max=batch_max, batch_wait_ms=batch_wait_ms,
        stage_us_per_event=stages, state_bytes_per_account=round(state_bytes, 1), accounts=accounts, model=fraud_model,
    )


def _topics(tag: str) -> TopicNames:
    names = TopicNames()
    return names.model_copy(update={f: f"bench-{tag}-{getattr(names, f)}" for f in TopicNames.model_fields})


async def _setup(settings: WorkerSettings, topics: TopicNames, app_id: str, world) -> None:
    scoped = settings.model_copy(update={"topics": topics, "app_id": app_id})
    await ensure_topics(scoped)
    if world is not None:
        await replay_world(world, scoped, progress=False)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


TAIL_S = 5.0  # seconds of unmeasured input after the measured events (more than the graph's idle wait)


async def _produce_at_rate(settings: WorkerSettings, events: list[TransactionEvent], tail: list[TransactionEvent],
                           rate: float) -> tuple[dict[str, int], float]:
    """Send `events` then `tail` at `rate`, without waiting for each delivery (the rate
    would then be one round trip per event). Returns the Kafka timestamp of each of
    `events` and the rate the measured ones went out at."""
    from aiokafka import AIOKafkaProducer

    from models.contracts import encode
    from stream.kafka.client_args import aiokafka_args

    producer = AIOKafkaProducer(**aiokafka_args(settings), linger_ms=0)
    await producer.start()
    deliveries = {}
    try:
        started = measured_until = time.monotonic()
        for i, event in enumerate(events + tail):
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            delivery = await producer.send(settings.topics.transactions, encode(event), key=event.source_account.encode())
            if i < len(events):
                deliveries[event.event_id] = delivery
                measured_until = time.monotonic()
        achieved = len(events) / max(measured_until - started, 1e-9)
        return {event_id: (await delivery).timestamp for event_id, delivery in deliveries.items()}, achieved
    finally:
        await producer.stop()


async def _latencies_of(settings: WorkerSettings, topic: str, sent_ms: dict[str, int], expected: int) -> np.ndarray:
    """Each measured event's output timestamp minus its input's (outputs carry `event_id`)."""
    outputs = await read_topics(settings, [topic], expected=expected, timeout_s=300, settle_s=1)
    return np.array([r.timestamp - sent_ms[e] for r in outputs if (e := json.loads(r.value)["event_id"]) in sent_ms],
                    dtype=np.float64)


async def _worker_latencies(settings: WorkerSettings, events: list[TransactionEvent], tail: list[TransactionEvent],
                            rate: float) -> tuple[np.ndarray, float]:
    from aiokafka import AIOKafkaProducer

    from models.contracts import encode
    from stream.kafka.client_args import aiokafka_args

    # Warm up: time nothing until the worker has joined its group and scored one event.
    warm_up, events = events[0], events[1:]
    producer = AIOKafkaProducer(**aiokafka_args(settings), linger_ms=0)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.transactions, encode(warm_up), key=warm_up.source_account.encode())
    finally:
        await producer.stop()
    await read_topics(settings, [settings.topics.outcomes], expected=1, timeout_s=120, settle_s=0)
    sent_ms, achieved = await _produce_at_rate(settings, events, tail, rate)
    latencies = await _latencies_of(settings, settings.topics.outcomes, sent_ms, len(events) + len(tail) + 1)
    return latencies, achieved


def _floor_latencies(settings: WorkerSettings, events: list[TransactionEvent], tail: list[TransactionEvent],
                     rate: float) -> np.ndarray:
    asyncio.run(ensure_topics(settings))
    topics = settings.topics
    with tempfile.TemporaryDirectory() as scratch:
        ready = Path(scratch) / "ready"
        env = {**os.environ, "TRIBUTARY_FETCH_MAX_WAIT_MS": str(EMBEDDED_FETCH_WAIT_MS)}
        floor = subprocess.Popen([sys.executable, "-m", "tributary.bench_floor", settings.bootstrap_servers,
                                  topics.transactions, topics.outcomes, str(len(events) + len(tail)), str(ready)],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not ready.exists() and floor.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            sent_ms, _ = asyncio.run(_produce_at_rate(settings, events, tail, rate))
            return asyncio.run(_latencies_of(settings, topics.outcomes, sent_ms, len(events) + len(tail)))
        finally:
            _stop(floor)


def _latency_phases(port: int, topic: str) -> dict:
    """Per phase: mean, and p50 / p99 interpolated in the histogram's buckets (as
    Prometheus' histogram_quantile does), in ms."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    phases = {}
    for phase in LATENCY_PHASES:
        labels = rf'(?=[^}}]*phase="{phase}")(?=[^}}]*topic="{re.escape(topic)}")'
        buckets = sorted((float(le), float(n)) for le, n in re.findall(
            rf'^tributary_latency_phase_seconds_bucket\{{{labels}[^}}]*le="([^"]+)"[^}}]*\}} (\S+)', text, re.M))
        total = re.search(rf'^tributary_latency_phase_seconds_sum\{{{labels}[^}}]*\}} (\S+)', text, re.M)
        if not buckets or buckets[-1][1] == 0 or total is None:
            continue
        count = buckets[-1][1]
        phases[phase] = {"mean": round(float(total.group(1)) / count * 1000, 2),
                         "p50": round(_bucket_quantile(buckets, 0.5) * 1000, 2),
                         "p99": round(_bucket_quantile(buckets, 0.99) * 1000, 2)}
    return phases


def _bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of cumulative (upper bound, count) buckets, linear within a bucket.

    >>> round(_bucket_quantile([(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)], 0.75), 6)
    0.15
    >>> _bucket_quantile([(0.1, 0.0), (0.2, 0.0), (float("inf"), 10.0)], 0.5)  # all beyond the last bound
    0.2
    """
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower  # beyond the last bound: its lower edge, as Prometheus does
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = upper, cumulative
    return lower


def _stage_costs(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    consumed = sum(float(v) for v in re.findall(r'^tributary_events_consumed_total\{[^}]*\} (\S+)', text, re.M))
    costs = {}
    for stage, seconds in re.findall(r'^tributary_stage_duration_seconds_sum\{stage="([^"]+)",[^}]*\} (\S+)', text, re.M):
        costs[stage] = round(float(seconds) / max(consumed, 1) * 1e6, 1)
    return costs


def _peak_rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def _state_bytes(events: list[TransactionEvent], model_dir: Path, fraud_model: str) -> tuple[float, int]:
    """Feature state per account after the whole stream (one partition: all accounts).

    Arrays are counted exactly, including the growth headroom of their capacity; the
    account index (a numba typed dict) is measured as the RSS growth of an equal dict.
    """
    from models.artifacts import latest_version, served_root
    from models.features.account_state import AccountState
    from models.features.transactions import RawTransaction, TransactionFeaturizer
    from models.model_store import load_fraud_model

    features = load_fraud_model(latest_version(served_root(model_dir), fraud_model)).features
    raw = [RawTransaction.from_event(e) for e in events]
    state = AccountState(window=features.window, capacity=1024)
    featurizer = TransactionFeaturizer(state, features)
    for start in range(0, len(raw), 4096):
        featurizer.featurize(raw[start:start + 4096])
    arrays = state.nbytes_per_account() * state.capacity
    return (arrays + _index_bytes(len(state))) / max(len(state), 1), len(state)


def _index_bytes(entries: int, sample: int = 500_000) -> float:
    """RSS growth of a numba typed dict like the account index, scaled to `entries`.

    Measured on `sample` entries: at a few thousand, RSS moves in allocator-sized steps
    and says nothing per entry.
    """
    import psutil
    from numba import types
    from numba.typed import Dict

    from models.features.account_state import AccountState

    index = Dict.empty(key_type=types.int64, value_type=types.int64)
    process = psutil.Process()
    before = process.memory_info().rss
    AccountState.fill_index_for_measurement(index, sample)
    per_entry = max(process.memory_info().rss - before, 0) / sample
    del index
    return per_entry * entries


def memory_at_scale(accounts: int, progress=print) -> dict:
    """Feature state per account once `accounts` accounts are in it: the state every worker
    keeps, the whole graph (models.features.served_view), so no replicated view comes on top.

    Two transfers per account (each account sends at least once, receivers drawn at random),
    recorded as a worker records other partitions' transactions. Given three ways: the
    arrays (exact, with their growth headroom), the account index (RSS growth of an equal
    dict), and this process's whole RSS growth while the state filled.
    """
    import psutil

    from models.features.account_state import AccountState
    from models.features.transactions import RawTransaction, TransactionFeatureConfig, TransactionFeaturizer
    from stream.state.graph_merge import RUN

    process = psutil.Process()
    config = TransactionFeatureConfig()
    index_per_entry = _index_bytes(1)  # first, while freed memory cannot hide the dict's growth
    warm = TransactionFeaturizer(AccountState(window=config.window), config)  # compile the kernels: not state
    warm.featurize([RawTransaction("a", "b", 1.0, 1.7e9, 1, -1, "e")], np.zeros(1, dtype=np.bool_))
    before = process.memory_info().rss
    state = AccountState(window=config.window, capacity=1024)
    featurizer = TransactionFeaturizer(state, config)
    rng = np.random.default_rng(0)
    total = 2 * accounts
    sources = np.concatenate([rng.permutation(accounts), rng.integers(0, accounts, total - accounts)])
    destinations = rng.integers(0, accounts, total)
    amounts = rng.lognormal(5, 1.5, total).round(2)
    chunk = RUN  # as many as the merge records per kernel call: the state's growth headroom is the worker's
    for start in range(0, total, chunk):
        rows = range(start, min(start + chunk, total))
        raw = [RawTransaction(f"acct{sources[i]}", f"acct{destinations[i]}", float(amounts[i]), 1.7e9 + 60.0 * i, 1, -1,
                              f"e{i}") for i in rows]
        featurizer.featurize(raw, np.zeros(len(raw), dtype=np.bool_))  # recorded only, as other partitions' are
        if start // chunk % 100 == 0:
            progress(f"  {min(start + chunk, total):,} of {total:,} transfers recorded")
    grown = process.memory_info().rss - before
    held = len(state)
    arrays = state.nbytes_per_account() * state.capacity / held
    index = index_per_entry
    return {"accounts": held, "transfers": total, "array_bytes_per_account": round(arrays, 1),
            "index_bytes_per_account": round(index, 1), "state_bytes_per_account": round(arrays + index, 1),
            "rss_growth_bytes_per_account": round(grown / held, 1), "capacity": state.capacity}


def bench_model_dir(root: Path) -> Path:
    """A throwaway artifact of the served architecture (quick-profile fusion-gated)."""
    import torch

    from models.artifacts import ArtifactManifest, save_artifact
    from models.features.transactions import TransactionFeatureConfig
    from offline.train.fraud import PROFILES, build_model, model_specs

    spec = next(s for s in model_specs(PROFILES["quick"]) if s.name == "fusion-gated")
    torch.manual_seed(0)
    model = build_model(spec)
    features = TransactionFeatureConfig()
    manifest = ArtifactManifest(name=spec.name, task="fraud", hyperparameters={"model": spec.to_dict()},
                                feature_schema=features.schema(), feature_schema_hash=features.schema_hash(),
                                threshold=0.99, reference_distributions={})
    save_artifact(root, manifest, model.state_dict())
    return root


def print_table(result: BenchResult) -> None:
    rows = [
        ("events", f"{result.events:,}"),
        ("worker events/s (full speed)", f"{result.events_per_s:,.0f}"),
        ("no-op Faust agent events/s (baseline)", f"{result.noop_events_per_s:,.0f}"),
        ("worker / no-op", f"{result.events_per_s / max(result.noop_events_per_s, 1):.0%}"),
        ("pass-through Faust agent events/s (the ceiling)", f"{result.passthrough_events_per_s:,.0f}"),
        ("worker / pass-through", f"{result.events_per_s / max(result.passthrough_events_per_s, 1):.0%}"),
        (f"latency at {result.latency_rate:,.0f}/s p50 / p95 / p99 (ms)", f"{result.p50_ms} / {result.p95_ms} / {result.p99_ms}"),
        ("  floor: bare consume-and-publish loop (ms)", f"{result.floor_p50_ms} / {result.floor_p95_ms} / {result.floor_p99_ms}"),
        ("  input rate the producer reached (events/s)", f"{result.latency_rate_achieved:,.0f}"),
        ("peak RSS of the worker (MB)", f"{result.peak_rss_mb:,.0f}"),
        ("feature state per account (bytes)", f"{result.state_bytes_per_account:,.0f} ({result.accounts:,} accounts)"),
        ("batch max / wait (ms)", f"{result.batch_max} / {result.batch_wait_ms}"),
    ]
    rows += [(f"  stage {stage} (us/event)", f"{us:,.1f}") for stage, us in result.stage_us_per_event.items()]
    rows += [(f"  latency in {phase} mean / p50 / p99 (ms)", f"{v['mean']} / {v['p50']} / {v['p99']}")
             for phase, v in result.latency_phases_ms.items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def bench_main(data: Path | None, model_dir: Path | None, fraud_model: str, accounts: int, days: int, rate: float,
               latency_seconds: float, batch_max: int, batch_wait_ms: int, as_json: bool) -> BenchResult:
    say = (lambda message: print(message, file=sys.stderr)) if as_json else print
    with tempfile.TemporaryDirectory(prefix="tributary-bench-") as scratch:
        if data is None:
            from offline.generate.fraud_world import generate_fraud_world

            data = Path(scratch) / "world"
            say(f"generating a synthetic world: {accounts:,} accounts, {days} days")
            generate_fraud_world(data, accounts=accounts, days=days, seed=7, progress=False)
        if model_dir is None:
            model_dir = bench_model_dir(Path(scratch) / "models")
            fraud_model = "fusion-gated"
        else:  # "served": the model training chose, as a worker would serve it
            from models.artifacts import DEFAULT_FRAUD_MODEL, resolve_model_name, served_root

            fraud_model = resolve_model_name(served_root(model_dir), "fraud", fraud_model, DEFAULT_FRAUD_MODEL)
        result = run_bench(data, model_dir, fraud_model, rate, latency_seconds, batch_max, batch_wait_ms, progress=say)
    if as_json:
        print(strict_json.dumps(asdict(result)))
    else:
        print_table(result)
    return result
