"""Prometheus's own tool checks what parwatch ships for it: the rules parse, every alert rule behaves as its unit
tests say (deploy/prometheus/rules.test.yml), and every PromQL expression of the Grafana dashboard parses.

promtool comes from Debian's `prometheus` package; `.ci/run` installs it when missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; .ci/run installs it)"
)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_parse() -> None:
    done = promtool("check", "rules", DEPLOY / "prometheus" / "rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_rule_has_unit_tests_that_pass() -> None:
    tests = yaml.safe_load((DEPLOY / "prometheus" / "rules.test.yml").read_text(encoding="utf-8"))
    tested = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])}
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text(encoding="utf-8"))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    assert alerts <= tested, sorted(alerts - tested)
    done = promtool("test", "rules", DEPLOY / "prometheus" / "rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


# Grafana's variables, as a query would see them once Grafana has filled them in.
GRAFANA_VALUES = {"$agency": ".*", "$period": "month", "${agency}": ".*", "${period}": "month"}


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "parwatch.json").read_text(encoding="utf-8"))
    queries = [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":  # label_values(metric, label) is Grafana's: its metric is the PromQL
            queries.append((var["name"], re.sub(r"^label_values\((.+),\s*\w+\)$", r"\1", var["definition"])))
    return queries


def test_every_dashboard_query_is_promql_that_parses(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert queries
    rules = []
    for i, (_, expr) in enumerate(queries):
        for var, value in GRAFANA_VALUES.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query:q{i}", "expr": expr})
    file = tmp_path / "dashboard.rules.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    done = promtool("check", "rules", file)
    assert done.returncode == 0, done.stdout + done.stderr
