"""Create every topic explicitly, with the configured partition count.

Explicitly, because brokers auto-create unknown topics with their own default partition
count (Tansu: 4), and a table's changelog must have as many partitions as the stream
that updates it, or per-entity state ends up on the wrong worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from models.errors import TributaryError
from stream.kafka.client_args import aiokafka_args
from stream.kafka.connect import started
from stream.settings import KafkaSettings, WorkerSettings

# Tables of the worker, whose changelogs must exist with the input topics' partition count.
WORKER_TABLES = ("accounts", "donors")


class TopicLayoutError(TributaryError):
    pass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic of the worker (inputs, outputs, table changelogs), in a stable order."""
    names = settings.topics
    worker = settings if isinstance(settings, WorkerSettings) else WorkerSettings(**_kafka_fields(settings))
    changelogs = [
        TopicSpec(worker.changelog_topic(table), settings.partitions, {"cleanup.policy": "compact"})
        for table in WORKER_TABLES
    ]
    return [
        TopicSpec(name, settings.partitions)
        for name in (
            names.transactions,
            names.gifts,
            names.donor_profiles,
            names.donor_relationships,
            names.fraud_labels,
            names.fraud_alerts,
            names.donor_segments,
            names.drift_reports,
            names.dead_letters,
            names.outcomes,
        )
    ] + changelogs


def _kafka_fields(settings: KafkaSettings) -> dict:
    return {name: getattr(settings, name) for name in KafkaSettings.model_fields}


async def ensure_topics(settings: KafkaSettings, specs: list[TopicSpec] | None = None) -> dict[str, str]:
    """Create missing topics; check existing ones have the expected partition count.

    Returns {topic: "created" | "exists"}. Raises TopicLayoutError naming the topic
    when an existing topic has another partition count (state would be mis-partitioned).
    """
    specs = specs if specs is not None else topic_specs(settings)
    admin = await started(AIOKafkaAdminClient(**aiokafka_args(settings), request_timeout_ms=30_000), settings)
    try:
        existing = set(await admin.list_topics())
        outcome: dict[str, str] = {}
        missing = [s for s in specs if s.name not in existing]
        for spec in missing:
            try:
                await admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, settings.replication_factor, topic_configs=spec.config)]
                )
                outcome[spec.name] = "created"
            except TopicAlreadyExistsError:  # created by someone else meanwhile
                outcome[spec.name] = "exists"
        present = [s for s in specs if s.name not in outcome or outcome[s.name] == "exists"]
        if present:
            described = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics([s.name for s in present])}
            for spec in present:
                outcome[spec.name] = "exists"
                found = described.get(spec.name)
                if found is not None and found != spec.partitions:
                    raise TopicLayoutError(
                        f"topic {spec.name!r} has {found} partitions, the settings say {spec.partitions}. "
                        "Set TRIBUTARY_PARTITIONS to match, or recreate the topic (its data is lost)."
                    )
        return {s.name: outcome[s.name] for s in specs}
    finally:
        await admin.close()
