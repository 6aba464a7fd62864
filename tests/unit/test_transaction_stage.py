"""The transaction stage without Faust: outcomes, dead letters, parity, redelivery, restore."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.contracts import DeadLetter, EventOutcome, FraudAlert, TransactionEvent
from models.features.account_state import AccountState
from models.features.patterns import patterns_of
from models.features.transactions import RawTransaction, TransactionFeatureConfig, TransactionFeaturizer
from models.model_store import load_fraud_model
from stream.pipeline.records import RawRecord
from stream.pipeline.transactions import TransactionStage
from stream.scoring.fraud_scorer import FraudScorer
from stream.scoring.served import ModelSwapError
from stream.settings import TopicNames
from stream.state.published_markers import PublishedMarkers
from tests.serving_helpers import restore_compacted, transaction_record, transaction_stage, untrained_fraud_artifact

TOPICS = TopicNames()


def stage_for(path, accounts=None, topic=None) -> TransactionStage:
    return transaction_stage(path, accounts, topic)


def records(n=300, accounts=20, partition=0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.choice(accounts, 2, replace=False)
        out.append(transaction_record(i, f"acct{a}", f"acct{b}", float(rng.lognormal(4, 1)), partition=partition))
    return out


def outputs_of(result, topic):
    return [o for o in result.outputs if o.topic == topic]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return untrained_fraud_artifact(tmp_path_factory.mktemp("models"), threshold=0.5)


def test_every_good_event_gets_one_outcome(artifact):
    result = stage_for(artifact).process(records(200))
    outcomes = [EventOutcome.model_validate_json(o.value) for o in outputs_of(result, TOPICS.outcomes)]
    assert [o.event_id for o in outcomes] == [f"t{i}" for i in range(200)]
    assert result.scored == 200 and result.consumed == 200 and not result.dead_letters
    assert all(o.model_name == "fusion-gated" and 0 <= o.scores["fraud"] <= 1 for o in outcomes)


def test_alerts_follow_the_threshold_and_carry_reasons(tmp_path):
    everything = stage_for(untrained_fraud_artifact(tmp_path / "a", threshold=0.0)).process(records(50))
    alerts = [FraudAlert.model_validate_json(o.value) for o in outputs_of(everything, TOPICS.fraud_alerts)]
    assert len(alerts) == everything.alerts == 50
    assert all(sum(r.kind == "feature" for r in a.reasons) == 4 and a.alert_id.endswith(a.event_id) for a in alerts)
    # Then the patterns each transaction matches (the same rule offline: models.features.patterns).
    batch = TransactionFeaturizer(AccountState(window=50), TransactionFeatureConfig()).featurize(
        [RawTransaction.from_event(TransactionEvent.model_validate_json(r.value)) for r in records(50)])
    for alert, row in zip(alerts, batch.event):
        assert [(r.name, r.value) for r in alert.reasons if r.kind == "pattern"] == patterns_of(row)
    assert any(r.kind == "pattern" for a in alerts for r in a.reasons)
    nothing = stage_for(untrained_fraud_artifact(tmp_path / "b", threshold=1.0)).process(records(50))
    assert nothing.alerts == 0 and not outputs_of(nothing, TOPICS.fraud_alerts)


def test_alert_evidence_cites_earlier_transactions_of_its_accounts(tmp_path):
    """Each evidence step is an earlier transaction of the alert's source or destination, as
    the input had it, and each counterparty's count and amount are those of the input."""
    inputs = records(80, accounts=12)
    result = stage_for(untrained_fraud_artifact(tmp_path / "a", threshold=0.0)).process(inputs)
    events = [TransactionEvent.model_validate_json(r.value) for r in inputs]
    alerts = [FraudAlert.model_validate_json(o.value) for o in outputs_of(result, TOPICS.fraud_alerts)]
    assert len(alerts) == 80
    cited = 0
    for position, alert in enumerate(alerts):
        earlier = events[:position]
        # Both windows' steps: a transaction between the two accounts is a step of each.
        steps = sum((end in (e.source_account, e.destination_account))
                    for e in earlier for end in (alert.source_account, alert.destination_account))
        assert len(alert.evidence) == min(6, steps)
        weights = [step.weight for step in alert.evidence]
        assert weights == sorted(weights, reverse=True), "most raising first"
        for step in alert.evidence:
            account = alert.source_account if step.account == "source" else alert.destination_account
            source, destination = (account, step.counterparty) if step.direction == "out" else (step.counterparty, account)
            assert any(e.source_account == source and e.destination_account == destination
                       and e.event_time == step.event_time and e.amount == pytest.approx(step.amount, rel=1e-5, abs=0.01)
                       for e in earlier), step
            cited += 1
        for party in alert.counterparties:
            mine = [e for e in earlier for end in (alert.source_account, alert.destination_account)
                    if {e.source_account, e.destination_account} == {end, party.account}]
            assert party.transactions == len(mine)
            assert party.amount == pytest.approx(sum(e.amount for e in mine), rel=1e-5, abs=0.05)
        strengths = [p.weight for p in alert.counterparties]
        assert strengths == sorted(strengths, reverse=True)
    assert cited > 200 and not alerts[0].evidence  # the first transaction has no history to cite


POISON = [
    (b"{not json", "malformed_json"),
    (None, "malformed_json"),
    (b'{"event_id": "x"}', "schema_violation"),
    (b'{"event_id": "bad1", "event_time": "2025-02-01T00:00:00Z", "source_account": "a", '
     b'"destination_account": "b", "amount": NaN, "type": "transfer"}', "schema_violation"),
    (b'{"event_id": "bad2", "event_time": "2025-02-01T00:00:00Z", "source_account": "a", '
     b'"destination_account": "b", "amount": -3, "type": "transfer"}', "schema_violation"),
    (b"x" * 20_000, "oversized"),
]


def test_poison_is_dead_lettered_and_good_events_still_scored(artifact):
    good = records(40)
    mixed = list(good)
    for j, (value, _) in enumerate(POISON):
        mixed.insert(5 * j + 1, RawRecord("transactions", 0, 1000 + j, b"k", value))
    result = stage_for(artifact).process(mixed)
    letters = [DeadLetter.model_validate_json(o.value) for o in outputs_of(result, TOPICS.dead_letters)]
    assert sorted(letter.reason.value for letter in letters) == sorted(reason for _, reason in POISON)
    assert {letter.offset for letter in letters} == {1000 + j for j in range(len(POISON))}
    assert result.scored == 40
    assert len(outputs_of(result, TOPICS.outcomes)) + len(letters) == len(mixed)  # conservation


def test_scores_equal_the_offline_computation(artifact):
    """Parity: the same artifact and feature code offline give the same scores."""
    stream_records = records(400)
    stage = stage_for(artifact)
    served = {}
    for start in range(0, 400, 37):  # uneven batches on purpose
        for o in outputs_of(stage.process(stream_records[start:start + 37]), TOPICS.outcomes):
            outcome = EventOutcome.model_validate_json(o.value)
            served[outcome.event_id] = outcome.scores["fraud"]

    loaded = load_fraud_model(artifact)
    featurizer = TransactionFeaturizer(AccountState(window=loaded.features.window), loaded.features)
    events = [json.loads(r.value) for r in stream_records]
    from datetime import datetime
    raw = [RawTransaction(e["source_account"], e["destination_account"], e["amount"],
                          datetime.fromisoformat(e["event_time"]).timestamp(), 1, -1) for e in events]
    offline = FraudScorer(loaded).score(loaded, featurizer.featurize(raw).arrays())
    assert np.abs(np.array([served[e["event_id"]] for e in events]) - offline).max() <= 1e-6


def test_redelivered_batch_is_neither_applied_nor_scored_twice(artifact):
    stage = stage_for(artifact)
    batch = records(100)
    first = stage.process(batch)
    again = stage.process(batch)
    assert first.scored == 100 and again.replayed == 100 and again.scored == 0 and not again.outputs


def test_state_restored_from_changelog_continues_exactly(artifact):
    stream_records = records(300, partition=2)
    uninterrupted = stage_for(artifact)
    uninterrupted.process(stream_records[:200])
    expected = uninterrupted.process(stream_records[200:])

    crashed = stage_for(artifact)
    restored_accounts = PublishedMarkers()
    restore_compacted(restored_accounts, [crashed.process(stream_records[start:start + 50]) for start in range(0, 200, 50)])
    resumed = stage_for(artifact, restored_accounts, crashed.topic).process(stream_records[150:])  # redelivery from 150
    assert resumed.replayed == 50
    got = {EventOutcome.model_validate_json(o.value).event_id: EventOutcome.model_validate_json(o.value).scores
           for o in outputs_of(resumed, TOPICS.outcomes)}
    want = {EventOutcome.model_validate_json(o.value).event_id: EventOutcome.model_validate_json(o.value).scores
            for o in outputs_of(expected, TOPICS.outcomes)}
    assert got == want


def test_partitions_share_one_graph(artifact):
    """A transaction sees the other partitions' history: the same scores as one partition."""
    one = records(120)
    split = [RawRecord(r.topic, i % 3, i // 3, r.key, r.value) for i, r in enumerate(one)]
    assert _scores(stage_for(artifact).process(split)) == _scores(stage_for(artifact).process(one))
    stage = stage_for(artifact)
    stage.process(split)
    assert set(stage.accounts.partitions) == {0, 1, 2}
    stage.accounts.drop([1])
    assert stage.accounts.partitions == [0, 2]


def test_swap_serves_the_new_version_and_refuses_other_features(artifact, tmp_path):
    stage = stage_for(artifact)
    stage.process(records(20))
    newer = load_fraud_model(untrained_fraud_artifact(tmp_path, seed=1, version="99990101T000000000000Z"))
    stage.scorer.swap(newer)
    result = stage.process(records(20, seed=5))
    assert result.model == ("fusion-gated", "99990101T000000000000Z")
    from models.features.transactions import TransactionFeatureConfig
    other = load_fraud_model(untrained_fraud_artifact(tmp_path / "o", features=TransactionFeatureConfig(window=20)))
    with pytest.raises(ModelSwapError, match="fresh state"):
        stage.scorer.swap(other)


def _scores(result):
    return {EventOutcome.model_validate_json(o.value).event_id: EventOutcome.model_validate_json(o.value).scores["fraud"]
            for o in outputs_of(result, TOPICS.outcomes)}


def _restored(artifact, topic, *changelogs):
    accounts = PublishedMarkers()
    for changelog in changelogs:
        for partition, items in changelog.items():
            for key, blob in items:
                accounts.restore(partition, key, blob)
    return stage_for(artifact, accounts, topic)


def test_crash_after_outputs_but_midway_through_the_changelog(artifact):
    """Batch B's outputs and marker landed, only half of its account records did."""
    recs = records(300)
    original = stage_for(artifact)
    a, b, c = original.process(recs[:100]), original.process(recs[100:200]), original.process(recs[200:])
    half_of_b = {p: [*w.markers, *w.records[: len(w.records) // 2]] for p, w in b.changelog.items()}
    resumed = _restored(artifact, original.topic, a.changelog, half_of_b)
    again_b = resumed.process(recs[100:200])
    assert again_b.replayed == 100 and again_b.scored == 0  # outputs exist: never scored twice
    assert _scores(resumed.process(recs[200:])) == _scores(c)


def test_crash_before_anything_of_the_batch_reached_the_changelog(artifact):
    """Batch B's outputs may or may not have been published; its state was not: redo it."""
    recs = records(300)
    original = stage_for(artifact)
    a, b, c = original.process(recs[:100]), original.process(recs[100:200]), original.process(recs[200:])
    resumed = _restored(artifact, original.topic, a.changelog)
    assert _scores(resumed.process(recs[100:200])) == _scores(b)  # duplicates say the same
    assert _scores(resumed.process(recs[200:])) == _scores(c)


@pytest.mark.parametrize("key", [None, b"acct999", b"acct1 ", b"x" * 70_000], ids=["null", "other-account", "padded", "huge"])
def test_a_key_that_is_not_the_source_account_is_dead_lettered_and_not_recorded(artifact, key):
    stage = stage_for(artifact)
    good = transaction_record(0, "acct1", "acct2", 50.0)
    result = stage.process([RawRecord("transactions", 0, 0, key, good.value)])
    (letter,) = [DeadLetter.model_validate_json(o.value) for o in outputs_of(result, TOPICS.dead_letters)]
    assert letter.reason.value == "key_mismatch" and letter.field == "source_account"
    assert "keyed by source_account" in letter.message and "'acct1'" in letter.message
    assert result.scored == 0 and len(stage.view.state) == 0  # never seen by the state
    assert stage.process([transaction_record(0, "acct1", "acct2", 50.0, offset=1)]).scored == 1  # keyed right


def _with_repeats(recs: list[RawRecord]) -> tuple[list[RawRecord], set[int]]:
    """`recs` with three repeated event ids slipped in at new offsets: two copies of a
    transaction (a producer retry) and one other payload under an id already used."""
    retry_of, reuse_of = recs[10], recs[20]
    reused = json.loads(reuse_of.value) | {"amount": 999.0, "destination_account": "acct19"}
    repeats = [RawRecord("transactions", 0, 0, retry_of.key, retry_of.value),
               RawRecord("transactions", 0, 0, retry_of.key, retry_of.value),
               RawRecord("transactions", 0, 0, reuse_of.key, json.dumps(reused).encode())]
    out = recs[:11] + repeats[:2] + recs[11:21] + repeats[2:] + recs[21:]
    return [RawRecord(r.topic, r.partition, offset, r.key, r.value) for offset, r in enumerate(out)], {11, 12, 23}


def test_a_repeated_event_id_is_dead_lettered_and_changes_nothing(artifact):
    plain = records(120)
    with_repeats, repeat_offsets = _with_repeats(plain)
    expected = _scores(stage_for(artifact).process(plain))
    result = stage_for(artifact).process(with_repeats)
    letters = [DeadLetter.model_validate_json(o.value) for o in outputs_of(result, TOPICS.dead_letters)]
    assert {letter.offset for letter in letters} == repeat_offsets
    assert {letter.reason.value for letter in letters} == {"duplicate_event"} and "must be unique" in letters[0].message
    assert _scores(result) == expected  # the repeats were neither scored nor counted in any state


def test_a_repeat_redelivered_after_a_restart_stays_out_of_the_state(artifact):
    recs, _ = _with_repeats(records(120))
    uninterrupted = stage_for(artifact)
    uninterrupted.process(recs[:60])
    expected = _scores(uninterrupted.process(recs[60:]))
    crashed = stage_for(artifact)
    first = crashed.process(recs[:20])  # outputs, markers and state durable, repeats 11 and 12 included
    crashed.process(recs[20:60])  # of these (repeat 23 among them) nothing reached the changelog
    resumed = _restored(artifact, crashed.topic, first.changelog)
    again = resumed.process(recs[:60])  # redelivered from the start
    assert again.replayed == 20 and again.dead_letters == {"duplicate_event": 1}  # 23's letter, again
    assert _scores(resumed.process(recs[60:])) == expected


def test_an_event_id_reused_long_after_is_scored_as_a_new_transaction(artifact):
    # Only the source's last RECENT_EVENT_IDS transactions are remembered: ids must be unique.
    recs = [transaction_record(i, "acct1", f"acct{2 + i}", 10.0) for i in range(12)]
    reuse = RawRecord("transactions", 0, 12, b"acct1", recs[0].value)
    result = stage_for(artifact).process(recs + [reuse])
    assert result.scored == 13 and not result.dead_letters


def test_a_redelivered_bad_record_is_not_dead_lettered_again(artifact):
    """Dead letters are outputs like the others: the partition's marker covers them."""
    poison = RawRecord("transactions", 1, 0, b"k", b"{not json")  # the only record of partition 1
    recs = [poison] + records(20)
    stage = stage_for(artifact)
    first = stage.process(recs)
    assert first.dead_letters == {"malformed_json": 1} and 1 in first.changelog
    again = _restored(artifact, stage.topic, first.changelog).process(recs)
    assert again.replayed == 21 and not again.outputs
