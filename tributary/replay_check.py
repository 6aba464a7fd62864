"""What `tributary replay-test` read back, and its verdict: conservation and quality.

Reading: which output records belong to this run (by input position: see
tributary.replay_test). Checking: nothing lost, duplicates agree, one dead letter per
planted event with the expected reason, and alert precision and recall no worse than
the offline evaluation of the same events, minus a margin.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from stream.settings import TopicNames

MARKER = "replay-test"  # in every planted event's key: how this tool's records are recognised
# Streamed and offline scores of the same events agree to float rounding when the worker
# starts from empty state (tests/integration/test_worker_integration.py checks 1e-5).
SCORE_TOLERANCE = 1e-5

# ---------------------------------------------------------------------------------------
# Reading back: which records are this run's

@dataclass
class Readback:
    """This run's output records, parsed (JSON dicts as published)."""

    outcomes: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)  # alerts on replayed event ids (of any run: see check)
    unreadable: int = 0


class Collector:
    """Sorts output records as they are read: this run's outcomes and dead letters are those
    from input positions at or after where the run started; alerts are matched later."""

    def __init__(self, topics: TopicNames, start_offsets: dict[int, int], event_ids: set[str], planted: int):
        self.topics = topics
        self.start_offsets = start_offsets
        self.event_ids = event_ids
        self.planted = planted
        self.readback = Readback()
        self._scored: set[str] = set()
        self._lettered: set[tuple[int, int]] = set()

    def _ours(self, record: dict) -> bool:
        start = self.start_offsets.get(record.get("partition"))
        return record.get("topic") == self.topics.transactions and start is not None and record.get("offset", -1) >= start

    def feed(self, records: Iterable) -> bool:
        """Take records (anything with .topic and .value); True once everything awaited arrived."""
        for record in records:
            try:
                value = json.loads(record.value)
            except (TypeError, ValueError):
                self.readback.unreadable += 1
                continue
            if record.topic == self.topics.outcomes and self._ours(value):
                self.readback.outcomes.append(value)
                self._scored.add(value.get("event_id"))
            elif record.topic == self.topics.dead_letters and self._ours(value):
                self.readback.dead_letters.append(value)
                self._lettered.add((value["partition"], value["offset"]))
            elif record.topic == self.topics.fraud_alerts and value.get("event_id") in self.event_ids:
                self.readback.alerts.append(value)
        return self.event_ids <= self._scored and len(self._lettered) >= self.planted


# ---------------------------------------------------------------------------------------
# The checks: pure, on what was sent and what came back

@dataclass(frozen=True)
class Expected:
    event_ids: list[str]  # replayed transactions
    labels: dict[str, bool]  # event id -> is fraud
    planted: dict[str, str]  # planted key -> expected dead-letter reason
    offline_scores: dict[str, float]  # event id -> offline score (the worker's per-partition view)
    threshold: float
    model: str  # name and version the offline scores came from


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Report:
    figures: list[tuple[str, str]]
    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    # What the checks were computed from, to re-check or inspect.
    expected: Expected | None = None
    readback: Readback | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]


def _precision_recall(flagged: set[str], fraud: set[str]) -> tuple[float, float]:
    caught = len(flagged & fraud)
    return caught / max(len(flagged), 1), caught / max(len(fraud), 1)


def _letter_key(letter: dict) -> str | None:
    try:
        return base64.b64decode(letter["key"]).decode() if letter.get("key") else None
    except (ValueError, UnicodeDecodeError):
        return None


def check(expected: Expected, got: Readback, margin: float) -> Report:
    ids = set(expected.event_ids)
    per_event: dict[str, list[dict]] = defaultdict(list)
    for outcome in got.outcomes:
        per_event[outcome.get("event_id")].append(outcome)
    missing = ids - set(per_event)
    foreign = set(per_event) - ids
    disagree = sorted(e for e, copies in per_event.items()
                      if len({(c.get("scores", {}).get("fraud"), c.get("alert_id")) for c in copies}) > 1)
    duplicates = sum(len(c) - 1 for e, c in per_event.items() if e in ids)

    # Dead letters by input position: a redelivered bad event may be dead-lettered twice.
    letters: dict[tuple, list[dict]] = defaultdict(list)
    for letter in got.dead_letters:
        letters[(letter.get("partition"), letter.get("offset"))].append(letter)
    by_key: dict[str | None, list[dict]] = defaultdict(list)
    for copies in letters.values():
        by_key[_letter_key(copies[0])].append(copies[0])
    unplanted = sum(len(v) for k, v in by_key.items() if k not in expected.planted)
    without_letter = [k for k in expected.planted if k not in by_key]
    lettered_twice = [k for k, v in by_key.items() if k in expected.planted and len(v) > 1]
    wrong_reason = sorted(f"{k.split(':')[2]} got {v[0].get('reason')}, expected {expected.planted[k]}"
                          for k, v in by_key.items() if k in expected.planted and v[0].get("reason") != expected.planted[k])
    reasons = Counter(copies[0].get("reason") for copies in letters.values())

    # Alerts of this run: on replayed events, with an alert id that one of its outcomes names.
    # (An alert id is event id + model version: an earlier run of the same world with the
    # same model published the same ids, and cannot be told apart. Scores can.)
    named = {c["alert_id"]: e for e, copies in per_event.items() if e in ids for c in copies if c.get("alert_id")}
    alert_ids = {a.get("alert_id") for a in got.alerts}
    streamed = {a["event_id"] for a in got.alerts if a.get("alert_id") in named}
    unpublished = sorted(set(named) - alert_ids)
    offline = {e for e, s in expected.offline_scores.items() if e in ids and s >= expected.threshold}
    fraud = {e for e in ids if expected.labels.get(e)}
    precision, recall = _precision_recall(streamed, fraud)
    offline_precision, offline_recall = _precision_recall(offline, fraud)
    served = {e: copies[0].get("scores", {}).get("fraud") for e, copies in per_event.items() if e in ids}
    gaps = [abs(s - expected.offline_scores[e]) for e, s in served.items()
            if s is not None and e in expected.offline_scores]
    versions = Counter(f"{c.get('model_name')} {c.get('model_version')}" for c in got.outcomes)

    figures = [
        ("transactions replayed", f"{len(ids):,}"),
        ("  with an outcome", f"{len(ids) - len(missing):,}"),
        ("  without an outcome", f"{len(missing):,}"),
        ("  duplicate outcomes (at-least-once)", f"{duplicates:,}"),
        ("  duplicates that disagree", f"{len(disagree):,}"),
        ("outcomes for events not replayed", f"{len(foreign):,}"),
        ("bad events planted", f"{len(expected.planted):,}"),
        ("dead letters of this run (distinct inputs)", f"{len(letters):,}  "
         + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))),
        ("  planted events without a dead letter", f"{len(without_letter):,}"),
        ("  dead letters of events not planted", f"{unplanted:,}"),
        ("model that scored the run", ", ".join(f"{v} ({n:,} outcomes)" for v, n in versions.items()) or "none"),
        ("offline evaluation by", f"{expected.model}, threshold {expected.threshold:.4f}"),
        ("fraudulent transactions (labels)", f"{len(fraud):,}"),
        ("alerts streamed / offline", f"{len(streamed):,} / {len(offline):,}"),
        ("  alerts in one but not the other", f"{len(streamed ^ offline):,}"),
        ("largest |streamed - offline| score", f"{max(gaps):.2e}" if gaps else "n/a"),
        ("alert precision streamed / offline", f"{precision:.3f} / {offline_precision:.3f}"),
        ("alert recall streamed / offline", f"{recall:.3f} / {offline_recall:.3f}"),
    ]
    checks = [
        Check("every replayed transaction has an outcome", not missing,
              f"{len(missing):,} missing" + (f", e.g. {sorted(missing)[:3]}" if missing else "")),
        Check("duplicate outcomes agree on score and alert", not disagree,
              f"{len(disagree):,} disagree" + (f", e.g. {disagree[:3]}" if disagree else "")),
        Check("no outcome for an event that was not replayed", not foreign,
              f"{len(foreign):,}" + (f", e.g. {sorted(foreign)[:3]}" if foreign else "")),
        Check("dead letters = bad events planted", len(letters) == len(expected.planted) and not without_letter
              and not unplanted and not lettered_twice,
              f"{len(letters):,} of {len(expected.planted):,}; {len(without_letter)} planted without one, "
              f"{unplanted} not planted"),
        Check("each dead letter has the expected reason", not wrong_reason,
              "; ".join(wrong_reason[:3]) or "all as expected"),
        Check("every alert an outcome names was published", not unpublished, f"{len(unpublished):,} missing"),
        Check("one model version scored the run", len(versions) <= 1,
              f"{len(versions)} versions" if len(versions) > 1 else "yes"),
        Check(f"alert precision >= offline - {margin:g}", precision >= offline_precision - margin - 1e-12,
              f"{precision:.3f} vs {offline_precision:.3f}"),
        Check(f"alert recall >= offline - {margin:g}", recall >= offline_recall - margin - 1e-12,
              f"{recall:.3f} vs {offline_recall:.3f}"),
    ]
    notes = []
    if gaps and max(gaps) > SCORE_TOLERANCE:
        notes.append(f"{sum(g > SCORE_TOLERANCE for g in gaps):,} streamed scores differ from the offline view by more "
                     f"than {SCORE_TOLERANCE:g}: the worker's state probably held these accounts' earlier events (this "
                     "world replayed before to the same worker?), so the quality comparison is not like for like")
    return Report(figures, checks, notes, expected=expected, readback=got)


def format_report(report: Report) -> str:
    width = max(len(k) for k, _ in report.figures)
    lines = [f"{k:<{width}}  {v}" for k, v in report.figures]
    lines += [""] + [f"  {n}" for n in report.notes] + ([""] if report.notes else [])
    name_width = max(len(c.name) for c in report.checks)
    lines += [f"{'PASS' if c.passed else 'FAIL'}  {c.name:<{name_width}}  {c.detail}" for c in report.checks]
    passed = sum(c.passed for c in report.checks)
    lines += ["", f"replay-test {'PASSED' if report.passed else 'FAILED'}: {passed} of {len(report.checks)} checks pass"]
    return "\n".join(lines)


