"""deploy/alertmanager/alertmanager.yml, Prometheus's ``alerting:`` and compose agree with each other and with the
notifier: Prometheus sends to the compose service Alertmanager is, Alertmanager's webhook names the notifier's
service, port and receiver path, and carries the token the notifier reads, which compose refuses to start without.

Alertmanager's own ``amtool`` and Prometheus's ``promtool`` check the files when installed (Debian's
``prometheus-alertmanager`` and ``prometheus``; .ci/run installs both).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.notifier.alertmanager import PATH
from services.notifier.settings import NotifierSettings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
AMTOOL = shutil.which("amtool")
PROMTOOL = shutil.which("promtool")
TOKEN_ENV = NotifierSettings.model_config["env_prefix"] + "ALERTMANAGER_TOKEN"


def load(*parts: str) -> Any:
    return yaml.safe_load(DEPLOY.joinpath(*parts).read_text(encoding="utf-8"))


def compose_services() -> dict[str, Any]:
    return load("compose.yaml")["services"]


def webhook() -> dict[str, Any]:
    config = load("alertmanager", "alertmanager.yml")
    receivers = {r["name"]: r for r in config["receivers"]}
    [hook] = receivers[config["route"]["receiver"]]["webhook_configs"]
    return hook


def flag(command: list[str], name: str) -> str:
    [value] = [c.split("=", 1)[1] for c in command if c.startswith(f"--{name}=")]
    return value


def test_the_token_variable_is_the_one_the_notifier_reads():
    assert "alertmanager_token" in NotifierSettings.model_fields
    assert TOKEN_ENV == "PARWATCH_NOTIFIER_ALERTMANAGER_TOKEN"


def test_alertmanagers_webhook_is_the_notifiers_receiver_on_its_compose_service_and_port():
    services = compose_services()
    [notifier] = [name for name, spec in services.items() if spec.get("environment", {}).get("SERVICE") == "notifier"]
    env = services[notifier]["environment"]
    url = urlsplit(webhook()["url"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("http", notifier, int(env["PARWATCH_NOTIFIER_PORT"]),
                                                              PATH)
    assert env["PARWATCH_HTTP_HOST"] == "0.0.0.0"  # other containers reach it
    assert webhook()["send_resolved"] is True


def test_prometheus_sends_to_the_compose_alertmanager():
    services = compose_services()
    am = services["alertmanager"]
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", am["image"])  # an exact version
    config_file = flag(am["command"], "config.file")
    assert f"./alertmanager/alertmanager.yml:{config_file}:ro" in am["volumes"]
    listen = flag(am["command"], "web.listen-address") if any(
        c.startswith("--web.listen-address=") for c in am["command"]) else ":9093"  # Alertmanager's default
    port = int(listen.rsplit(":", 1)[1])
    [target] = [t for group in load("prometheus", "prometheus.yml")["alerting"]["alertmanagers"]
                for sc in group["static_configs"] for t in sc["targets"]]
    assert target == f"alertmanager:{port}"
    assert f"127.0.0.1:{port}:{port}" in am["ports"]  # the UI on loopback only


def test_alertmanager_carries_the_token_compose_refuses_to_start_without():
    services = compose_services()
    auth = webhook()["http_config"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and "credentials" not in auth  # never the secret in the file
    [secret] = services["alertmanager"]["secrets"]
    assert auth["credentials_file"] == f"/run/secrets/{secret}"
    assert load("compose.yaml")["secrets"][secret] == {"environment": TOKEN_ENV}
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    uses = re.findall(r"\$\{" + TOKEN_ENV + r"([^}]*)\}", text)
    assert uses and all(use.startswith(":?") for use in uses), uses
    notifier_env = services["notifier"]["environment"]
    assert notifier_env[TOKEN_ENV].startswith("${" + TOKEN_ENV + ":?")


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (Debian package `prometheus-alertmanager`; "
                                           ".ci/run installs it)")
def test_amtool_accepts_the_shipped_config():
    assert AMTOOL is not None
    done = subprocess.run([AMTOOL, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 receivers" in done.stdout


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; .ci/run "
                                             "installs it)")
def test_promtool_accepts_prometheus_yml_with_its_alerting_section(tmp_path):
    assert PROMTOOL is not None
    config = load("prometheus", "prometheus.yml")
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules.yml")]  # where compose mounts it, here
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_kubernetes_alertmanagerconfig_names_the_notifiers_service_and_secret():
    config = load("alertmanager", "alertmanagerconfig.k8s.yaml")
    [receiver] = config["spec"]["receivers"]
    assert config["spec"]["route"]["receiver"] == receiver["name"]
    [hook] = receiver["webhookConfigs"]
    [service] = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "notifier.yaml").read_text(encoding="utf-8"))
                 if d and d["kind"] == "Service"]
    url = urlsplit(hook["url"])
    [port] = service["spec"]["ports"]
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert (url.port, url.path, hook["sendResolved"]) == (port["port"], PATH, True)
    assert hook["httpConfig"]["authorization"]["credentials"] == {"name": "parwatch-secrets", "key": TOKEN_ENV}
    assert config["metadata"]["namespace"] == service["metadata"]["namespace"]
