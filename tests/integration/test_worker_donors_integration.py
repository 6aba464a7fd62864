"""Donor serving in the worker subprocess, on the real embedded broker.

Profiles and relationships first (with poison on each donor topic), then the gifts:
with a kill -9 in the middle of a batch of gifts (placed there
by the input: see tests/worker_harness.py) and a restart. Checks conservation
(one outcome or one dead letter per event), the dead-letter reasons, parity of every
gift's five probabilities with the offline computation (so the state restored from the
changelog is exact), and segment updates exactly where the offline memberships change.

Why profiles and relationships go first: Kafka orders a partition, never three topics,
so how the worker interleaves them depends on fetch timing. The donor state after a
topic's events does not depend on the interleaving (models.features.donor_state), so
with the other topics complete before the gifts, every gift's features are determined.
"""

from __future__ import annotations

from collections import Counter

import pytest

from models.contracts import DonorProfile, DonorRelationship, GiftEvent, decode
from models.model_store import load_donor_model
from models.worlds import open_world
from offline.generate.donor_world import generate_donor_world
from offline.serving_view import donor_worker_view_scores
from stream.replay import iter_wire_events
from stream.state.commit_protocol import marker_topic
from tests.readback import (
    ChangelogMarkers,
    Readback,
    kill_in_mid_batch,
)
from tests.serving_helpers import untrained_donor_artifact, untrained_fraud_artifact
from tests.worker_harness import (
    MANY_BATCHES,
    Record,
    Worker,
    end_offsets,
    no_traceback,
    produce,
    same_outcomes,
    wait_for_commits,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONTRACTS = {"gifts": GiftEvent, "donor_profiles": DonorProfile, "donor_relationships": DonorRelationship}
POISON = [
    ("gifts", b"{not json", "malformed_json"),
    ("gifts", b'{"event_id": "p1", "event_time": "2024-02-01T00:00:00Z", "donor_id": "d1", "amount": -5, '
              b'"channel": "online"}', "schema_violation"),
    ("donor_profiles", b'{"event_id": "p2", "event_time": "2024-02-01T00:00:00Z", "donor_id": "d1", '
                       b'"wealth_index": 7}', "schema_violation"),
    ("donor_relationships", b'{"event_id": "p3", "event_time": "2024-02-01T00:00:00Z", "donor_id": "d1", '
                            b'"related_donor_id": "d1", "relationship_type": "family"}', "schema_violation"),
    ("donor_relationships", b"z" * 40_000, "oversized"),
]


@pytest.fixture(scope="module")
def donor_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("donor-world")
    generate_donor_world(root, donors=300, seed=13, progress=False)
    return open_world(root)


@pytest.fixture(scope="module")
def donor_model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    untrained_fraud_artifact(root, threshold=0.5, seed=3)
    untrained_donor_artifact(root, threshold=0.5, seed=4)
    return root


@pytest.mark.fault
def test_donor_events_are_conserved_and_match_the_offline_scores_across_a_kill(broker, donor_world, donor_model_dir):
    # One run with a kill in mid-batch checks everything an uninterrupted run would: the
    # restarted worker's outputs must equal the offline computation too.
    settings = worker_settings(broker.bootstrap, "it-donors-kill", donor_model_dir)
    wire = list(iter_wire_events(donor_world))
    context = [w for w in wire if w.stream != "gifts"]
    gifts = [w for w in wire if w.stream == "gifts"]
    events = {w: decode(w.value, CONTRACTS[w.stream]) for w in wire}
    assert len(gifts) > 2000 and len(context) > 2000

    def records(wire_events):
        return [Record(settings.topics.for_stream(w.stream), w.key, w.value) for w in wire_events]

    readback = Readback(settings)
    donor_topics = [settings.topics.gifts, settings.topics.donor_profiles, settings.topics.donor_relationships]

    def topic_of_marker(key: bytes) -> str | None:
        index = marker_topic(key)
        return None if index is None else donor_topics[index]

    markers = ChangelogMarkers(settings, "donors", topic_of_marker)
    # A commit interval longer than the test: the killed worker never commits, so the
    # restarted one reads everything again.
    first = Worker(settings.model_copy(update={"commit_interval_s": 3600.0, **MANY_BATCHES}), "first worker")
    second = first
    try:
        applied = produce(settings, records(context))
        poisoned = produce(settings, [Record(settings.topics.for_stream(stream), f"poison{i}".encode(), value)
                                      for i, (stream, value, _) in enumerate(POISON)])
        readback.wait_for(applied + poisoned, "the profiles, relationships and poison", [first])
        first.pause()  # the gifts are all there when it wakes: batch after batch
        scored = produce(settings, records(gifts))
        first.resume()
        kill_in_mid_batch(first, readback, markers, scored)
        second = Worker(settings, "restarted worker")
        everything = applied + poisoned + scored
        readback.wait_for(everything, "an outcome or dead letter for every donor event", [second])
        wait_for_commits(settings, end_offsets(everything), [second])
        readback.drain()
    finally:
        for worker in {first, second}:
            worker.stop()
        readback.close()
        markers.close()
    no_traceback(second)

    # Conservation: every event at least one outcome, duplicates identical; each poison one dead letter.
    for position in applied + scored:
        assert position not in readback.dead_letters and same_outcomes(readback.outcomes[position])
    assert Counter(readback.dead_letters[p][0]["reason"] for p in poisoned) == Counter(r for *_, r in POISON)
    assert all(len(readback.dead_letters[p]) == 1 for p in poisoned)

    # Parity, before and after the restart: the same computation offline.
    loaded = load_donor_model(next(donor_model_dir.glob("multitarget/*")))
    ordered = [events[w] for w in context] + [events[w] for w in gifts]
    offline = donor_worker_view_scores(ordered, loaded.model, loaded.features, settings.partitions)
    assert set(offline) == {events[w].event_id for w in gifts}
    served = {o["event_id"]: o for p in scored for o in readback.outcomes[p]}
    worst = max(abs(served[e]["scores"][t] - offline[e][j]) for e in offline for j, t in enumerate(loaded.targets))
    assert worst <= 1e-5, f"worker and offline donor scores differ by up to {worst}"

    # Segment updates: exactly at the gifts where the offline memberships change.
    membership, changes = {}, {}
    for w in gifts:
        gift = events[w]
        now = frozenset(t for j, t in enumerate(loaded.targets) if offline[gift.event_id][j] >= loaded.thresholds[t])
        if now != membership.get(gift.donor_id, frozenset()):
            changes[gift.event_id] = now
        membership[gift.donor_id] = now
    published = {u["event_id"]: frozenset(u["segments"]) for u in readback.segment_updates}
    assert published == changes and changes
