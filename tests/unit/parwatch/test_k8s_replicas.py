"""The Kubernetes manifests run every service as two replicas that a drain or a rollout never takes both of."""

from __future__ import annotations

from pathlib import Path

import yaml

from parwatch.supervisor import SERVICES

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"


def test_every_service_runs_two_replicas_kept_by_a_disruption_budget() -> None:
    for svc in SERVICES:
        docs = list(yaml.safe_load_all((K8S / f"{svc.name.replace('_', '-')}.yaml").read_text(encoding="utf-8")))
        [deployment] = [d for d in docs if d["kind"] == "Deployment"]
        [budget] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
        spec = deployment["spec"]
        assert spec["replicas"] >= 2, svc.name
        assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        assert budget["spec"]["minAvailable"] == 1
        assert budget["spec"]["selector"] == spec["selector"]  # the budget guards these very pods
        assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
