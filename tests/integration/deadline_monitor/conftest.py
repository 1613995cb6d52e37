"""A plan of the test's own for deadline_monitor, with the environment its settings are read from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MONTHLY_PLAN = """\
plan_id: {plan_id}
title: Kế hoạch thử nghiệm
issued_on: {year}-01-01
issuer: TUY_PHONG
valid_from: {year}-01-01
valid_until: {year}-12-31
tasks:
  - id: {task_id}
    section: A.1
    title: Báo cáo kết quả cải cách hành chính hằng tháng
    owner: [PTP, XA_CHI_CONG]
    due: {{every: month, day: 31}}
"""


@pytest.fixture
def monthly_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_nats_server: Any) -> Callable[..., Path]:
    """Writes a plan of one task due on each month's last day for PTP and XA_CHI_CONG over ``year`` into
    ``tmp_path / "plans"``, and points the environment (as ``parwatch`` and ``create_app`` read it) at this test's
    nats-server, a data folder and those plans alone (not the shipped ones); returns the plans folder."""

    def write(*, plan_id: str, task_id: str, year: int) -> Path:
        plans = tmp_path / "plans"
        plans.mkdir(exist_ok=True)
        (plans / "plan.yaml").write_text(MONTHLY_PLAN.format(plan_id=plan_id, task_id=task_id, year=year),
                                         encoding="utf-8")
        monkeypatch.setenv("PARWATCH_NATS_URL", own_nats_server.url)
        monkeypatch.setenv("PARWATCH_DATA_DIR", str(tmp_path / "var"))
        monkeypatch.setenv("PARWATCH_MONITOR_INCLUDE_SHIPPED_PLANS", "false")
        monkeypatch.setenv("PARWATCH_MONITOR_PLANS_DIR", str(plans))
        return plans

    return write
