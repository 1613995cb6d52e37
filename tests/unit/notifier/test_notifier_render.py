"""Messages: Vietnamese with diacritics, dd/mm/yyyy, what to do; HTML escapes everything."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from services.notifier.domain.model import EscalationPolicy, notice_key
from services.notifier.render import Renderer, due_day

VN = dt.timezone(dt.timedelta(hours=7))
START = dt.datetime(2026, 11, 24, 8, 15, tzinfo=VN)
SCRIPT = "<script>alert('x')</script>"


@pytest.fixture
def renderer(directory) -> Renderer:
    return Renderer(directory=directory, escalation=EscalationPolicy(head_after_hours=8, leadership_after_hours=24))


def item(key="k1", *, kind="dossier_apology_due", ref="H31.12-231124-0001", state="firing", level=0, repeat=0,
         severity="warning", summary="Hồ sơ sẽ trễ hạn trả kết quả", agency="PTP", labels=None, ends_at=None):
    return {"notice_key": notice_key(key, START, state, repeat), "alert_key": key, "state": state, "level": level,
            "repeat": repeat, "kind": kind, "severity": severity, "agency_code": agency, "ref": ref,
            "summary": summary, "starts_at": START.isoformat(), "ends_at": ends_at,
            "labels": {"due_day": "2026-11-27"} if labels is None else labels}


def payload(*items, role="officer", agency="PTP", receiver="ptp-desk"):
    return {"type": "alerts", "receiver": receiver, "role": role, "agency": agency, "items": list(items)}


NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)


def test_subject_counts_by_kind_in_vietnamese(renderer):
    m = renderer.render(payload(item("a", kind="dossier_due_soon", ref="H-1"), item("b", kind="dossier_due_soon",
                                                                                     ref="H-2")),
                        delivery_id="parwatch-1", sent_at=NOW)
    assert m.subject == "[parwatch] Phòng Tư pháp: 2 hồ sơ sắp đến hạn"
    m = renderer.render(payload(item("a", kind="dossier_overdue", severity="critical"), item("b"),
                                item("c", state="resolved", ends_at=NOW.isoformat())),
                        delivery_id="parwatch-2", sent_at=NOW)
    assert m.subject == ("[parwatch] [KHẨN] Phòng Tư pháp: 1 hồ sơ quá hạn, 1 hồ sơ cần gửi phiếu xin lỗi, "
                         "1 cảnh báo đã kết thúc")


def test_text_names_the_dossier_agency_due_day_and_what_to_do(renderer):
    m = renderer.render(payload(item()), delivery_id="parwatch-7", sent_at=NOW)
    assert "Kính gửi: Công chức phụ trách - Phòng Tư pháp" in m.text
    assert ("Hồ sơ H31.12-231124-0001 sẽ trễ hạn: gửi phiếu xin lỗi và hẹn lại ngày trả kết quả trước ngày "
            "27/11/2026.") in m.text
    assert "Phát sinh từ: 24/11/2026 08:15" in m.text
    assert "(hạn: 27/11/2026)" in m.text and "Mã thông báo: parwatch-7" in m.text
    assert "@" not in m.text and "@" not in m.html  # no address in a message
    assert "trễ hạn" in m.text and "\ufffd" not in m.text  # real diacritics, nothing mangled


def test_plan_tasks_and_escalation_and_resolved(renderer):
    m = renderer.render(
        payload(item("t", kind="plan_task_overdue", ref="KH146-II.3-2026-11", level=1,
                     labels={"due_day": "2026-11-20"}),
                item("r", kind="dossier_due_soon", ref="H-9", state="resolved",
                     ends_at=dt.datetime(2026, 11, 25, 8, 30, tzinfo=VN).isoformat()),
                role="head", receiver="ptp-head"),
        delivery_id="parwatch-8", sent_at=NOW)
    assert m.subject == "[parwatch] [Chuyển cấp] Phòng Tư pháp: 1 nhiệm vụ quá hạn, 1 cảnh báo đã kết thúc"
    assert "Kính gửi: Lãnh đạo Phòng Tư pháp" in m.text
    assert "Khẩn trương hoàn thành nhiệm vụ KH146-II.3-2026-11 (hạn ngày 20/11/2026 đã qua)" in m.text
    assert "Chuyển cấp: cảnh báo đã kéo dài quá 8 giờ làm việc" in m.text
    assert "Hồ sơ H-9 sắp đến hạn trả kết quả: cảnh báo đã kết thúc lúc 25/11/2026 08:30." in m.text
    lead = renderer.render(payload(item(level=2), role="district_leadership", receiver="lead"),
                           delivery_id="x", sent_at=NOW)
    assert "Kính gửi: Lãnh đạo Ủy ban nhân dân huyện Tuy Phong" in lead.text
    assert "báo cáo Lãnh đạo Ủy ban nhân dân huyện Tuy Phong" in lead.text


def test_html_escapes_a_script_in_every_field_and_text_keeps_it_verbatim(renderer):
    # The agency is a directory code: one outside it never reaches a message (test_notifier_unknown_agency).
    evil = item(SCRIPT, kind="dossier_overdue", ref=SCRIPT, summary=f"Tóm tắt {SCRIPT}",
                labels={"due_day": SCRIPT, "note": SCRIPT})
    m = renderer.render(payload(evil), delivery_id="parwatch-9", sent_at=NOW)
    assert "<script" not in m.html.lower()
    assert "&lt;script&gt;" in m.html
    assert SCRIPT in m.text  # plain text is not HTML: nothing to escape
    assert m.subject == "[parwatch] Phòng Tư pháp: 1 hồ sơ quá hạn"  # the directory's name, no alert text
    body = json.dumps(m.data, ensure_ascii=False)
    assert json.loads(body)["alerts"][0]["ref"] == SCRIPT  # JSON keeps data as data


def test_a_newline_in_a_field_cannot_forge_a_header(renderer):
    m = renderer.render(payload(item(), agency="PTP\r\nBcc: someone@example.org"), delivery_id="x", sent_at=NOW)
    assert "\r" not in m.subject and "\n" not in m.subject


def test_webhook_body_is_structured(renderer):
    m = renderer.render(payload(item()), delivery_id="parwatch-3", sent_at=NOW)
    d = m.data
    assert d["type"] == "alerts" and d["delivery_id"] == "parwatch-3" and d["version"] == 1
    assert d["agency"] == {"code": "PTP", "name": "Phòng Tư pháp"}
    a = d["alerts"][0]
    assert a["due_day"] == "2026-11-27" and a["kind"] == "dossier_apology_due" and a["escalation_level"] == 0
    assert a["action"].startswith("Hồ sơ H31.12-231124-0001 sẽ trễ hạn")
    assert d["subject"] == m.subject and d["text"] == m.text


def test_due_day_from_labels():
    assert due_day({"due_day": "2026-11-27"}) == dt.date(2026, 11, 27)
    assert due_day({"due_at": "2026-11-27T01:00:00+00:00"}) == dt.date(2026, 11, 27)
    assert due_day({"due_at": "2026-11-26T18:00:00+00:00"}) == dt.date(2026, 11, 27)  # 01:00 in Vietnam
    assert due_day({"due_day": "soon"}) is None
    assert due_day({}) is None
