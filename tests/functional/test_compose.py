"""The compose stack (docker-compose.yml, Dockerfile, deploy/) checked without Docker.

There is no Docker engine in CI, so these tests read the files: services, pinned
images, health checks, loopback-only ports, that every TRIBUTARY_* variable is a real
setting. Where a compose binary is installed, `config -q` validates the files as
Compose itself reads them. Metrics, Prometheus and Grafana: test_monitoring_config.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import click
import pytest

from stream.kafka.topics import topic_specs
from stream.settings import TopicNames, WorkerSettings
from tests.functional.compose_files import (
    COMPOSE,
    GPU_OVERRIDE,
    ROOT,
    environment,
    load_yaml,
    project_version,
)
from tributary.cli import main

SERVICES = {"kafka", "topics", "world", "train", "worker", "replay", "replay-donors", "alerts", "prometheus", "grafana",
            "replay-test"}
# Services built from our Dockerfile (image tributary:<project version>).
OWN_SERVICES = {"topics", "world", "train", "worker", "replay", "replay-donors", "alerts", "replay-test"}
# An exact release: 3.9.1, v3.5.0, 3.11.13-slim-bookworm, 0.1.0-cuda. Not `latest`, not `3`.
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+([.+-][\w.-]+)?$")
# Series Prometheus makes itself rather than scraping them from the worker.
PROMETHEUS_BUILTINS = {"up"}


# -- services and images ---------------------------------------------------------------


def test_the_stack_has_every_service(services):
    assert SERVICES <= set(services), f"missing: {sorted(SERVICES - set(services))}"


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_every_image_is_pinned_to_an_exact_version(path):
    for name, service in load_yaml(path)["services"].items():
        image = service.get("image")
        assert image, f"{path.name}: {name} has no image (built services need a versioned tag too)"
        repository, _, tag = image.rpartition(":")
        assert repository and PINNED_TAG.match(tag), f"{path.name}: {name} image {image!r} is not pinned to a release"


def test_our_image_is_built_here_and_tagged_with_the_project_version(services):
    for name in OWN_SERVICES:
        service = services[name]
        # Without `build`, `docker compose up` would try to pull a `tributary` image from a registry.
        assert service.get("build", {}).get("context") == ".", name
        assert service["image"] == f"tributary:{project_version()}", name


def test_dockerfile_base_image_is_pinned():
    bases = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert bases
    for base in bases:
        assert PINNED_TAG.match(base.rpartition(":")[2]), f"Dockerfile base {base!r} is not pinned"


def test_dockerfile_installs_under_the_constraints():
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    installs = re.findall(r"pip install[^;&\n]*", text)
    assert len(installs) >= 3  # torch, the dependencies, the project
    for command in installs:
        assert "-c constraints.txt" in command, command
    # The torch version comes from constraints.txt, never a second copy here.
    assert not re.search(r"torch==\d", text)


def test_dockerignore_keeps_local_state_out_of_the_image():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert ".*" in patterns or {".git", ".venv"} <= patterns
    assert "var" in patterns
    needed = ["pyproject.toml", "constraints.txt", "README.md", "models", "offline", "stream", "tributary", "deploy/docker"]
    assert not patterns & set(needed)


def test_entrypoint_scripts_exist_and_are_in_the_image(services):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/docker" in dockerfile
    for name, service in services.items():
        for word in service.get("entrypoint") or []:
            if word.startswith("/app/"):
                script = ROOT / word.removeprefix("/app/")
                assert script.is_file(), f"{name}: {word} is not in the repository"
                assert script.stat().st_mode & 0o111, f"{name}: {script} is not executable"


@pytest.mark.parametrize("name", sorted(OWN_SERVICES))
def test_commands_and_flags_of_our_services_exist(services, name):
    service = services[name]
    if service.get("entrypoint"):
        return  # a script from deploy/docker (checked above)
    words = [str(w) for w in service["command"]]
    command: click.Command = main
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    if command is main and name == "replay-test" and "replay-test" not in main.commands:
        pytest.skip("`tributary replay-test` is not registered in tributary/cli.py yet")
    assert command is not main, f"{name}: {service['command']} is not a tributary command"
    options = {opt for param in command.params for opt in param.opts}
    for word in words:
        if word.startswith("--"):
            assert word in options, f"{name}: {command.name} has no option {word}"


# -- health, restarts, ordering -------------------------------------------------------


def test_long_running_services_have_health_checks(services):
    for name in ("kafka", "worker", "prometheus", "grafana"):
        check = services[name].get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"


def _depends_on(service: dict) -> dict[str, dict]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):  # the short form: just started
        return {name: {"condition": "service_started"} for name in depends}
    return depends


def test_depends_on_conditions_fit_the_services_they_name(services):
    for name, service in services.items():
        for dependency, spec in _depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{name} waits for {dependency} to be healthy; it has no check"
            elif condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is waited on to finish; make it one-shot"
            else:
                assert condition == "service_started"


def test_worker_runs_exactly_once_restarts_and_waits_for_topics_and_model(services):
    worker = services["worker"]
    assert environment(worker)["TRIBUTARY_PROCESSING_GUARANTEE"] == "exactly_once"
    assert worker["restart"] in ("on-failure", "unless-stopped")
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["train"]["condition"] == "service_completed_successfully"


def test_topics_are_created_by_our_one_shot_command_after_kafka_is_healthy(services):
    topics = services["topics"]
    assert [str(w) for w in topics["command"]] == ["topics", "create"]
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_replay_test_is_behind_its_profile_and_nothing_else_is(services):
    assert services["replay-test"]["profiles"] == ["replay-test"]
    assert services["replay-test"]["command"][0] == "replay-test"
    assert {"--data", "--model-dir"} <= set(services["replay-test"]["command"])
    assert [n for n, s in services.items() if s.get("profiles") and n != "replay-test"] == []


# -- ports and configuration ------------------------------------------------------------


def _published(ports) -> list[tuple[str, str]]:
    """(host ip, the whole entry) of each published port, short or long syntax."""
    out = []
    for entry in ports or []:
        if isinstance(entry, dict):
            out.append((str(entry.get("host_ip", "")), str(entry)))
        else:
            parts = str(entry).split(":")
            out.append((parts[0] if len(parts) == 3 else "", str(entry)))
    return out


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_every_published_port_is_bound_to_loopback(path):
    for name, service in load_yaml(path)["services"].items():
        for host_ip, entry in _published(service.get("ports")):
            assert host_ip == "127.0.0.1", f"{path.name}: {name} publishes {entry} beyond loopback"


def _setting_variables() -> set[str]:
    prefix = WorkerSettings.model_config["env_prefix"]
    topic_prefix = TopicNames.model_config["env_prefix"]
    fields = {f"{prefix}{name}".upper() for name in WorkerSettings.model_fields if name != "topics"}
    return fields | {f"{topic_prefix}{name}".upper() for name in TopicNames.model_fields}


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_every_tributary_variable_is_a_real_setting(path):
    # pydantic-settings ignores unknown TRIBUTARY_* variables silently, so a typo would
    # leave a default in place without a word.
    known = _setting_variables()
    for name, service in load_yaml(path)["services"].items():
        for variable in environment(service):
            if variable.startswith("TRIBUTARY"):
                assert variable in known, f"{path.name}: {name} sets {variable}, which no setting reads"


def test_every_service_environment_is_a_valid_worker_configuration(services, monkeypatch):
    for service in services.values():
        env = {k: v for k, v in environment(service).items() if k.startswith("TRIBUTARY")}
        with monkeypatch.context() as patch:
            for variable, value in env.items():
                patch.setenv(variable, value)
            WorkerSettings()  # raises on a value the settings refuse


def test_services_sharing_kafka_agree_on_the_topic_layout(services):
    # topics, worker, replay, alerts and replay-test must derive the same topic names,
    # partition counts and changelog names, or state lands on the wrong topic.
    layout_keys = {"TRIBUTARY_BOOTSTRAP_SERVERS", "TRIBUTARY_PARTITIONS", "TRIBUTARY_REPLICATION_FACTOR", "TRIBUTARY_APP_ID"}
    layouts = {}
    for name, service in services.items():
        env = environment(service)
        if "TRIBUTARY_BOOTSTRAP_SERVERS" in env:
            layouts[name] = {k: v for k, v in env.items() if k in layout_keys or k.startswith("TRIBUTARY_TOPIC_")}
    assert {"topics", "worker", "replay", "replay-donors", "alerts", "replay-test"} <= set(layouts)
    assert all(layout == layouts["worker"] for layout in layouts.values()), layouts
    assert set(layouts["worker"]) >= layout_keys


def test_the_trained_models_are_the_served_ones(services):
    worker = environment(services["worker"])
    train = environment(services["train"])
    for variable in ("TRIBUTARY_MODEL_DIR", "TRIBUTARY_FRAUD_MODEL", "TRIBUTARY_DONOR_MODEL"):
        assert train[variable] == worker[variable], variable
    assert environment(services["replay-test"])["TRIBUTARY_FRAUD_MODEL"] == worker["TRIBUTARY_FRAUD_MODEL"]
    command = [str(w) for w in services["replay-test"]["command"]]
    assert command[command.index("--model-dir") + 1] == worker["TRIBUTARY_MODEL_DIR"]
    assert "--embedded" not in command  # the service tests the stack's worker on the stack's Kafka


def test_changelog_topics_of_the_stack_are_compacted(services, monkeypatch):
    for variable, value in environment(services["topics"]).items():
        monkeypatch.setenv(variable, value)
    settings = WorkerSettings()
    changelogs = [s for s in topic_specs(settings) if s.name.endswith("-changelog")]
    assert changelogs
    for spec in changelogs:
        assert spec.name.startswith(f"{settings.app_id}-")
        assert spec.config.get("cleanup.policy") == "compact", spec
        assert spec.partitions == settings.partitions


def test_kafka_is_kraft_single_node_with_an_internal_listener_and_a_named_volume(compose, services):
    kafka = services["kafka"]
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_NODE_ID"] and env["CLUSTER_ID"]
    bootstrap = environment(services["worker"])["TRIBUTARY_BOOTSTRAP_SERVERS"]
    assert bootstrap in env["KAFKA_ADVERTISED_LISTENERS"]
    # exactly_once on one broker needs a transaction log that fits on it.
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    data = [v.split(":") for v in kafka["volumes"]]
    assert [(source, target) for source, target, *_ in data] == [("kafka-data", env["KAFKA_LOG_DIRS"])]
    assert "kafka-data" in compose["volumes"]


def test_gpu_override_builds_cuda_torch_and_reserves_a_gpu(services, gpu_services):
    worker = gpu_services["worker"]
    assert worker["build"]["args"]["TORCH_VARIANT"] == "cuda"
    assert worker["image"] != services["worker"]["image"]  # the CPU services keep their image
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    assert environment(worker)["TRIBUTARY_DEVICE"] == "cuda"


# -- Compose itself, where installed ------------------------------------------------------


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"]],
                         ids=["base", "gpu"])
def test_compose_validates_the_files(files):
    command = _compose_command()
    if command is None:
        pytest.skip("no compose binary (`docker compose` or `docker-compose`) on this machine")
    args = [part for f in files for part in ("-f", f)]
    result = subprocess.run([*command, *args, "--profile", "replay-test", "config", "-q"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
