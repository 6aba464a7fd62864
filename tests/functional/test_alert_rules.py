"""The alerting rules, unit-tested by Prometheus's own promtool against input series
(deploy/prometheus/rules.test.yml): each alert fires where it should and stays quiet on
healthy series. `make test` fetches promtool into .venv/tools (Debian's package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.compose_files import DEPLOY

RULES = DEPLOY / "prometheus" / "rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rules.test.yml"


def _promtool() -> str:
    fetched = Path(sys.prefix) / "tools" / "promtool"
    found = str(fetched) if fetched.is_file() else shutil.which("promtool")
    if found is None:
        pytest.skip("no promtool: `make test` fetches it where apt-get reaches a Debian mirror")
    return found


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60)


def test_the_rules_are_valid_prometheus_rules():
    checked = _run("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_on_its_series_and_stays_quiet_on_healthy_ones():
    tested = _run("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alerting_rule_has_a_unit_test():
    import yaml

    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    assert alerts == tested, f"alerts without a test: {sorted(alerts - tested)}"
