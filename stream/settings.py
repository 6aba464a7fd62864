"""One frozen settings object for everything that talks to Kafka.

Every field is read from an environment variable `TRIBUTARY_<FIELD>` (upper case) or
passed explicitly (the CLI does that for flags). Our own prefix on purpose: Faust
reads ~80 unprefixed variables (BROKER_URL, WEB_PORT, ...) that override App(...)
arguments, and we do not want a stray variable to change the worker's guarantees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.contracts import DEFAULT_MAX_MESSAGE_BYTES
from models.errors import TributaryError
from models.features.partitioning import DEFAULT_PARTITIONS

# TRIBUTARY_* variables that are read elsewhere, not by the settings.
NOT_SETTINGS = {"TRIBUTARY_BENCH_LOGLEVEL"}


class TopicNames(BaseSettings):
    """Topic names; override one with e.g. TRIBUTARY_TOPIC_TRANSACTIONS=payments."""

    model_config = SettingsConfigDict(env_prefix="TRIBUTARY_TOPIC_", frozen=True, extra="forbid")

    transactions: str = "transactions"
    gifts: str = "gifts"
    donor_profiles: str = "donor-profiles"
    donor_relationships: str = "donor-relationships"
    fraud_labels: str = Field("fraud-labels", description="late labels (confirmed fraud, chargebacks)")
    fraud_alerts: str = "fraud-alerts"
    donor_segments: str = "donor-segments"
    drift_reports: str = "drift-reports"
    dead_letters: str = "dead-letters"
    outcomes: str = Field("event-outcomes", description="one record per consumed event that was not dead-lettered")

    def for_stream(self, stream: str) -> str:
        """The input topic of a world's event stream (see models.worlds.EVENT_STREAMS)."""
        try:
            return getattr(self, stream)
        except AttributeError:
            raise KeyError(f"no topic for event stream {stream!r}") from None


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIBUTARY_", frozen=True, extra="forbid")

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="comma-separated host:port list of the Kafka cluster"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = Field(None, description="CA bundle that signed the brokers' certificates")
    ssl_certfile: str | None = Field(None, description="client certificate, for mutual TLS")
    ssl_keyfile: str | None = None
    partitions: int = Field(
        DEFAULT_PARTITIONS,
        ge=1,
        description="partitions per topic; the most worker processes that can share the load. "
        "Input topics and changelogs must agree, so changing it means recreating topics.",
    )
    replication_factor: int = Field(1, ge=1, description="3 on a production cluster; 1 on a single broker")
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES, ge=1024, description="larger input messages are dead-lettered as oversized"
    )
    connect_timeout_s: float = Field(
        15.0, gt=0, description="how long a command waits for the Kafka cluster to answer when it starts, "
        "before it stops with a message saying so",
    )
    topics: TopicNames = Field(default_factory=TopicNames)


class WorkerSettings(KafkaSettings):
    """Everything `tributary worker` reads (all as TRIBUTARY_<FIELD> variables)."""

    app_id: str = Field("tributary-worker", description="consumer group and prefix of the changelog topics")
    model_dir: str = Field("var/models", description="a `tributary train` output (artifacts/ inside) or an artifacts root")
    fraud_model: str = Field(
        "served", description="which fraud model under model_dir to serve (latest version): a model name, or "
        "'served' for the one `tributary train` chose on validation (artifacts/served.json; fusion-gated if none)",
    )
    donor_model: str = Field(
        "served", description="which donor model under model_dir to serve: a name, or 'served' for the one "
        "`tributary train donors` chose on validation (multitarget if none); the donor topics are consumed only "
        "when it is there ('' never)",
    )
    batch_max: int = Field(256, ge=1, description="events per micro-batch at most: larger = more throughput")
    batch_wait_ms: int = Field(20, ge=1, description="longest wait to fill a batch: smaller = lower latency")
    graph_idle_ms: int = Field(
        1000, ge=0, description="how long the merge of all transaction partitions waits for a partition that "
        "has nothing more before passing it by (stream.state.graph_merge)",
    )
    graph_checkpoint_interval_s: float = Field(
        300.0, ge=0, description="how often the merged transaction graph is snapshotted to local disk, so that a "
        "restart reads the topic on from the snapshot instead of from its start (0: never; "
        "stream.state.graph_checkpoint); also at every clean stop",
    )
    graph_checkpoint_dir: str = Field(
        "", description="where graph snapshots go ('': <temp dir>/tributary-graph/<app id>); workers of one group "
        "may share it",
    )
    pipeline_depth: int = Field(
        2, ge=1, le=8, description="batches in flight per agent: 1 overlaps only buffering with work; 2 also "
        "processes the next batch while one publishes",
    )
    torch_threads: int = Field(1, ge=1, description="CPU threads for inference; the event loop keeps a core")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    metrics_port: int = Field(9108, description="Prometheus /metrics port; 0 disables it")
    metrics_address: str = Field("127.0.0.1", description="bind address of /metrics (loopback by default)")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="exactly_once needs a real Kafka (transactions); the embedded broker has none"
    )
    session_timeout_s: float = Field(60.0, description="consumer group session timeout; ~10 on the embedded broker")
    heartbeat_interval_s: float = Field(
        3.0, gt=0, description="how often the consumer tells its group it is alive: at most a third of "
        "session_timeout_s, so one late heartbeat does not cost the worker its partitions",
    )
    producer_max_batch_size: int | None = Field(
        None, description="1 on the embedded broker (its end offsets are wrong after multi-record batches)"
    )
    reload_interval_s: float = Field(10.0, gt=0, description="how often to look for a newer model version")
    commit_interval_s: float = Field(
        2.8, gt=0, description="how often consumed offsets are committed (Faust's default): shorter = fewer "
        "events read again after a crash, more commit requests",
    )
    publish_timeout_s: float = Field(
        300.0, gt=0, description="how long a batch's outputs may fail to publish (broker away) before the worker "
        "stops with exit code 3, to be restarted; its events are read again then",
    )
    shutdown_timeout_s: float = Field(
        60.0, gt=0, description="after SIGTERM or SIGINT, how long the batches in hand may take to publish before "
        "the process exits anyway (code 4); what was not published is read again after the restart",
    )
    fetch_max_wait_ms: int | None = Field(
        None, ge=1, description="consumer fetch long-poll; Faust fixes 1500 ms. The embedded broker answers a "
        "waiting fetch only when it times out, so there every event waits up to this long: set ~10",
    )
    drift_window: int = Field(5000, ge=100, description="events per PSI evaluation")
    label_memory: int = Field(
        200_000, ge=0, description="scored transactions remembered for late labels (about 150 bytes each); 0: "
        "do not consume the label topic",
    )
    label_window: int = Field(500, ge=10, description="labels per precision/recall evaluation")
    performance_margin: float = Field(
        0.1, gt=0, description="a drift report when labelled precision or recall falls this far below the "
        "artifact's held-out figure",
    )
    psi_threshold: float = Field(0.2, gt=0)
    alert_policy: str = Field(
        "model", description="how many fraud alerts: model (its own threshold), threshold=X, top_fraction=Q, "
        "alerts_per_day=N; or @FILE holding one, read again at every reload check",
    )

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> "WorkerSettings":
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ValueError(f"TRIBUTARY_HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s:g}) must be at most a third "
                             f"of TRIBUTARY_SESSION_TIMEOUT_S ({self.session_timeout_s:g}); lower it, or raise that")
        return self

    @staticmethod
    def unknown_variables(environ: dict[str, str]) -> list[str]:
        """TRIBUTARY_* variables in `environ` that no setting reads (misspelt, most likely).

        pydantic-settings ignores them silently: TRIBUTARY_BATCHMAX=64 would leave the
        batch size at its default without a word.
        """
        known = {f"TRIBUTARY_{name.upper()}" for name in WorkerSettings.model_fields if name != "topics"}
        known |= {f"TRIBUTARY_TOPIC_{name.upper()}" for name in TopicNames.model_fields}
        known |= NOT_SETTINGS
        return sorted(v for v in environ if v.upper().startswith("TRIBUTARY_") and v.upper() not in known)

    def changelog_topic(self, table: str) -> str:
        """Faust's name for a table's changelog topic."""
        return f"{self.app_id}-{table}-changelog"


class SettingsError(TributaryError, ValueError):
    """A TRIBUTARY_* variable (or the flag that stands for it) that no setting accepts."""


Loaded = TypeVar("Loaded", bound=KafkaSettings)


def load_settings(kind: type[Loaded], **overrides: Any) -> Loaded:
    """`kind` from the environment and `overrides` (flags), or a SettingsError that names
    each variable to fix, in one line.

    Unknown TRIBUTARY_* variables are refused by every command, not only the worker: the
    same environment (a compose file, a shell) usually serves them all, and a misspelt
    TRIBUTARY_PARTITION=8 would otherwise create topics with the default 4 partitions.
    """
    import os

    unknown = WorkerSettings.unknown_variables(dict(os.environ))
    if unknown:
        raise SettingsError(
            f"unknown settings variables {', '.join(unknown)}: no setting reads them (misspelt?). The valid "
            "names are in the README's configuration table; unset or correct them.")
    try:
        return kind(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_invalid(error, overrides)) from None


def describe_invalid(error: ValidationError, overrides: Mapping[str, object]) -> str:
    """One line for pydantic's multi-line report: which variable, what it holds, what it should."""
    problems = []
    for problem in error.errors():
        path = [str(part) for part in problem["loc"]]
        if not path:  # a rule over several settings: its message names them
            problems.append(problem["msg"].removeprefix("Value error, ").rstrip("."))
            continue
        if path[:1] == ["topics"]:
            variable = "TRIBUTARY_TOPIC_" + "_".join(path[1:]).upper()
        else:
            variable = "TRIBUTARY_" + "_".join(path).upper()
        source = "--" + path[0].replace("_", "-") if path and path[0] in overrides else variable
        problems.append(f"{source}={problem.get('input')!r}: {problem['msg'].rstrip('.')}")
    return f"bad settings: {'; '.join(problems)}. Correct or unset them (the README's configuration table lists each)."
