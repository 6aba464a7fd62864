"""The command-line program: help everywhere, the broker command starts and stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream.kafka.embedded_broker import free_port
from tributary.cli import main

COMMANDS = [
    [], ["generate"], ["generate", "fraud"], ["generate", "donors"], ["import"], ["broker"],
    ["replay"], ["topics"], ["topics", "create"], ["demo"], ["worker"], ["alerts"], ["bench"], ["bench-model"], ["train"],
    ["train", "fraud"], ["train", "donors"], ["evaluate"], ["replay-test"], ["install-model"], ["schema"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tributary")
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_import_help_documents_expected_columns():
    output = CliRunner().invoke(main, ["import", "--help"]).output
    for source in ("paysim", "amlsim", "bitcoin-otc", "cdnow", "pva97nk"):
        assert source in output


def test_replay_of_a_directory_that_is_not_a_world_says_what_to_do(tmp_path):
    result = CliRunner().invoke(main, ["replay", str(tmp_path), "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "Error:" in result.output and "tributary generate" in result.output
    assert "Traceback" not in result.output


def test_import_of_a_wrong_file_is_one_clear_message(tmp_path):
    bad = tmp_path / "not-paysim.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    result = CliRunner().invoke(main, ["import", "paysim", str(bad), "--out", str(tmp_path / "w")])
    assert result.exit_code == 1
    assert "Error:" in result.output and "not-paysim.csv" in result.output and "expected" in result.output


@pytest.mark.integration
def test_broker_command_answers_and_stops_on_sigterm():
    port = free_port()
    tributary = Path(sys.executable).parent / "tributary"
    process = subprocess.Popen([str(tributary), "broker", "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert "listening on 127.0.0.1:%d" % port in process.stdout.readline()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "broker stopped" in process.stdout.read()
        # "broker stopped" is printed after the broker process was waited for: its port is closed.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)


def test_worker_refuses_a_misspelt_setting_variable(monkeypatch):
    monkeypatch.setenv("TRIBUTARY_BATCHMAX", "64")
    result = CliRunner().invoke(main, ["worker"])
    assert result.exit_code == 1 and "TRIBUTARY_BATCHMAX" in result.output and "misspelt" in result.output


def test_install_model_rolls_a_version_out_once(tmp_path):
    from models.artifacts import latest_version
    from tests.serving_helpers import untrained_fraud_artifact

    version = untrained_fraud_artifact(tmp_path / "staging", version="20260101T000000000000Z")
    served = tmp_path / "served"
    (served / "artifacts").mkdir(parents=True)
    first = CliRunner().invoke(main, ["install-model", str(version), "--model-dir", str(served)])
    assert first.exit_code == 0, first.output
    assert latest_version(served / "artifacts", "fusion-gated").name == version.name
    again = CliRunner().invoke(main, ["install-model", str(version), "--model-dir", str(served)])
    assert again.exit_code == 1 and "installed" in again.output and "Traceback" not in again.output
