"""Errors a user can cause end as one line that says what to fix: exit code 1, no traceback.

One test per case a new user meets in the first hour: no broker, a broker that never
answers, a bad or misspelt setting, an unknown model name, a world too small or without
fraud. `--debug` brings the traceback back.
"""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tributary.cli import main

REFUSED = "127.0.0.1:1"  # nothing listens on port 1: the connection is refused at once
PAYSIM_HEADER = ("step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,newbalanceDest,"
                 "isFraud,isFlaggedFraud")


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_one_clear_line(result: Result, *must_name: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), f"an exception escaped: {result.exception!r}"
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for name in must_name:
        assert name in errors[0], f"{name!r} not in {errors[0]!r}"


@pytest.mark.parametrize("command", [["topics", "create"], ["alerts"], ["worker"]], ids=" ".join)
def test_no_broker_is_one_line_naming_the_address_and_the_fix(command):
    assert_one_clear_line(run(*command, "--bootstrap", REFUSED), REFUSED, "tributary broker", "--bootstrap")


def test_replay_with_no_broker_is_one_line(tmp_path):
    world = paysim_world(tmp_path, rows=200, fraud_every=20)
    assert_one_clear_line(run("replay", str(world), "--bootstrap", REFUSED), REFUSED, "tributary broker")


def test_a_broker_that_never_answers_is_reported_within_the_connect_timeout():
    # A socket that listens but never accepts: the kernel completes the TCP handshake,
    # and no Kafka answer ever comes, as with a wrong port behind a load balancer.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        started = time.monotonic()
        result = run("topics", "create", "--bootstrap", address, env={"TRIBUTARY_CONNECT_TIMEOUT_S": "2"})
        elapsed = time.monotonic() - started
    assert_one_clear_line(result, address, "within 2 s", "TRIBUTARY_CONNECT_TIMEOUT_S")
    # aiokafka alone waits 40 s per request and then some; the margin is for a slow machine.
    assert elapsed < 2 + 20, f"reported after {elapsed:.1f} s with a connect timeout of 2 s"


def test_a_bad_setting_value_names_the_variable_and_what_it_should_be():
    result = run("topics", "create", "--bootstrap", REFUSED, env={"TRIBUTARY_BATCH_MAX": "abc"})
    assert_one_clear_line(result, "TRIBUTARY_BATCH_MAX='abc'", "integer")


def test_a_heartbeat_too_slow_for_the_session_is_refused_in_one_line():
    result = run("worker", "--bootstrap", REFUSED, env={"TRIBUTARY_HEARTBEAT_INTERVAL_S": "5",
                                                        "TRIBUTARY_SESSION_TIMEOUT_S": "10"})
    assert_one_clear_line(result, "TRIBUTARY_HEARTBEAT_INTERVAL_S (5)", "a third", "TRIBUTARY_SESSION_TIMEOUT_S (10)")
    assert "TRIBUTARY_={" not in result.output  # a rule over two settings names them, not the whole input


def test_a_misspelt_setting_is_refused_by_every_command_before_it_connects():
    for command in (["topics", "create"], ["alerts"], ["worker"]):
        result = run(*command, "--bootstrap", REFUSED, env={"TRIBUTARY_PARTITION": "8"})
        assert_one_clear_line(result, "TRIBUTARY_PARTITION", "misspelt")


def test_an_unknown_fraud_model_lists_the_valid_names(tmp_path):
    world = paysim_world(tmp_path, rows=200, fraud_every=20)
    result = run("train", "fraud", "--data", str(world), "--out", str(tmp_path / "out"), "--model", "gnn-typo")
    assert_one_clear_line(result, "'gnn-typo'", "fusion-gated", "lightgbm")
    assert not (tmp_path / "out" / "artifacts").exists()


def test_an_unknown_donor_model_lists_the_valid_names(tmp_path):
    world = tmp_path / "donors"
    assert run("generate", "donors", "--donors", "50", "--out", str(world)).exit_code == 0
    result = run("train", "donors", "--data", str(world), "--out", str(tmp_path / "out"), "--model", "typo")
    assert_one_clear_line(result, "'typo'", "multitarget")


def test_a_world_without_fraud_is_refused_not_trained_to_nan(tmp_path):
    world = paysim_world(tmp_path, rows=3000, fraud_every=None)
    result = run("train", "fraud", "--data", str(world), "--out", str(tmp_path / "out"), "--model", "tabular-mlp")
    assert_one_clear_line(result, "only one class", "Label the fraud")


def test_a_two_transaction_world_is_refused_with_what_to_do(tmp_path):
    world = paysim_world(tmp_path, rows=2, fraud_every=2)
    result = run("train", "fraud", "--data", str(world), "--out", str(tmp_path / "out"), "--model", "tabular-mlp")
    assert_one_clear_line(result, "2 transactions are too few", "larger world")


def test_a_tiny_donor_world_is_refused_with_what_to_do(tmp_path):
    world = tmp_path / "donors"
    assert run("generate", "donors", "--donors", "8", "--seed", "7", "--out", str(world)).exit_code == 0
    result = run("train", "donors", "--data", str(world), "--out", str(tmp_path / "out"), "--model", "multitarget")
    assert_one_clear_line(result, "labelled donors are too few", "larger world")


def test_evaluate_json_is_strict_json_when_a_metric_is_undefined(tmp_path, model_dir):
    world = paysim_world(tmp_path, rows=600, fraud_every=None)  # no fraud: PR-AUC is undefined
    result = run("evaluate", "--model", str(model_dir), "--data", str(world), "--out", str(tmp_path / "eval"), "--json")
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    report = json.loads(result.output, parse_constant=refuse)
    assert any(m["pr_auc"] is None for m in report["models"].values())


def test_debug_shows_the_traceback():
    result = run("--debug", "topics", "create", "--bootstrap", REFUSED)
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "BrokerUnreachable"


def paysim_world(tmp_path: Path, rows: int, fraud_every: int | None) -> Path:
    """A small PaySim-shaped world: 30 transfers an hour between 300 accounts."""
    rng = random.Random(rows)
    lines = [PAYSIM_HEADER]
    for i in range(rows):
        fraud = int(fraud_every is not None and i % fraud_every == fraud_every - 1)
        lines.append(f"{1 + i // 30},TRANSFER,{rng.uniform(1, 1000):.2f},C{rng.randint(1, 300)},0,0,"
                     f"C{rng.randint(1, 300)},0,0,{fraud},0")
    csv = tmp_path / f"paysim-{rows}.csv"
    csv.write_text("\n".join(lines) + "\n")
    world = tmp_path / f"world-{rows}"
    result = run("import", "paysim", str(csv), "--out", str(world))
    assert result.exit_code == 0, result.output
    return world
