"""Messages in Vietnamese: Jinja2 templates (plain text and HTML) and the webhook body.

Everything that came from an alert (ref, summary, labels, agency code) is
data to the templates, so the HTML templates' autoescaping covers all of it.
Dates are dd/mm/yyyy in Asia/Ho_Chi_Minh. Receivers are greeted by their
post, never by name; no address appears in a message.

An agency code outside the agency directory never reaches a subject or a
body (:func:`scrub`): the agency is shown as ``unknown`` and named
``shared.agencies.UNKNOWN_NAME``, the alert's own summary is replaced by a
fixed text, and a ref or key holding the code is replaced too. The code came
from outside: it may read like an order to pay.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.notifier.domain.ack import ACK_KINDS
from services.notifier.domain.model import KIND_ORDER, LEVEL_HEAD, LEVEL_LEADERSHIP, Directory, EscalationPolicy
from services.notifier.notify import Message
from shared.agencies import UNKNOWN
from shared.calendar import to_local

TEMPLATES = Path(__file__).parent / "templates"
PLAN = "Kế hoạch 146/KH-UBND"


@dataclass(frozen=True)
class KindText:
    noun: str  # counted in subjects: "2 hồ sơ sắp đến hạn"
    title: str  # one alert: "Hồ sơ {ref} sắp đến hạn trả kết quả"
    action: str  # what to do, with the due day
    action_nodue: str  # what to do, when the due day is not known


KINDS: Mapping[str, KindText] = {
    "dossier_due_soon": KindText(
        "hồ sơ sắp đến hạn",
        "Hồ sơ {ref} sắp đến hạn trả kết quả",
        "Ưu tiên giải quyết và trả kết quả hồ sơ {ref} đúng hạn, chậm nhất ngày {due}.",
        "Ưu tiên giải quyết và trả kết quả hồ sơ {ref} đúng hạn.",
    ),
    "dossier_overdue": KindText(
        "hồ sơ quá hạn",
        "Hồ sơ {ref} đã quá hạn trả kết quả",
        "Khẩn trương giải quyết hồ sơ {ref} (hạn trả kết quả ngày {due} đã qua); nếu chưa gửi, gửi ngay phiếu xin lỗi "
        "và hẹn lại ngày trả kết quả cho người dân.",
        "Khẩn trương giải quyết hồ sơ {ref}; nếu chưa gửi, gửi ngay phiếu xin lỗi và hẹn lại ngày trả kết quả cho "
        "người dân.",
    ),
    "dossier_apology_due": KindText(
        "hồ sơ cần gửi phiếu xin lỗi",
        "Hồ sơ {ref} sẽ trễ hạn",
        "Hồ sơ {ref} sẽ trễ hạn: gửi phiếu xin lỗi và hẹn lại ngày trả kết quả trước ngày {due}.",
        "Hồ sơ {ref} sẽ trễ hạn: gửi phiếu xin lỗi và hẹn lại ngày trả kết quả trước hạn trả kết quả.",
    ),
    "plan_task_due_soon": KindText(
        "nhiệm vụ sắp đến hạn",
        "Nhiệm vụ {ref} sắp đến hạn",
        "Hoàn thành nhiệm vụ {ref} và báo cáo kết quả trước ngày {due}.",
        "Hoàn thành nhiệm vụ {ref} và báo cáo kết quả đúng hạn.",
    ),
    "plan_task_overdue": KindText(
        "nhiệm vụ quá hạn",
        "Nhiệm vụ {ref} đã quá hạn",
        "Khẩn trương hoàn thành nhiệm vụ {ref} (hạn ngày {due} đã qua) và báo cáo kết quả, nêu rõ lý do chậm.",
        "Khẩn trương hoàn thành nhiệm vụ {ref} và báo cáo kết quả, nêu rõ lý do chậm.",
    ),
    "kpi_below_target": KindText(
        "chỉ tiêu chưa đạt",
        "Chỉ tiêu {ref} chưa đạt mục tiêu",
        "Rà soát nguyên nhân chỉ tiêu {ref} chưa đạt và đề ra biện pháp khắc phục trước ngày {due}.",
        "Rà soát nguyên nhân chỉ tiêu {ref} chưa đạt và đề ra biện pháp khắc phục.",
    ),
    "deadletter": KindText(
        "dữ liệu bị từ chối",
        "Dữ liệu gửi đến {ref} bị từ chối",
        "Kiểm tra hệ thống gửi dữ liệu và gửi lại bản tin đúng định dạng trước ngày {due}.",
        "Kiểm tra hệ thống gửi dữ liệu và gửi lại bản tin đúng định dạng.",
    ),
    "unknown_agency": KindText(
        "cảnh báo mã đơn vị ngoài danh mục",
        "Dữ liệu mang mã đơn vị không có trong danh mục đơn vị",
        "Kiểm tra mã đơn vị trong hệ thống gửi dữ liệu, hoặc bổ sung đơn vị vào danh mục đơn vị, trước ngày {due}; "
        "xem danh sách mã bằng lệnh: parwatch agencies unknown.",
        "Kiểm tra mã đơn vị trong hệ thống gửi dữ liệu, hoặc bổ sung đơn vị vào danh mục đơn vị; xem danh sách mã "
        "bằng lệnh: parwatch agencies unknown.",
    ),
    "operator_alert": KindText(
        "cảnh báo vận hành hệ thống",
        "Cảnh báo vận hành hệ thống: {ref}",
        "Kiểm tra và khắc phục sự cố của hệ thống parwatch theo nội dung cảnh báo trước ngày {due}.",
        "Kiểm tra và khắc phục sự cố của hệ thống parwatch theo nội dung cảnh báo (Prometheus, Alertmanager, các "
        "dịch vụ parwatch); cảnh báo tự kết thúc khi Prometheus thấy hệ thống trở lại bình thường.",
    ),
}
#: The summary shown for an alert whose agency is outside the directory (its own may carry the code).
UNKNOWN_AGENCY_SUMMARY = (
    "Cảnh báo của một đơn vị không có trong danh mục đơn vị; nội dung gốc không được hiển thị vì mã đơn vị do hệ "
    "thống bên ngoài gửi đến. Kiểm tra mã đơn vị trong hệ thống gửi dữ liệu (lệnh: parwatch agencies unknown)."
)
OTHER = KindText("cảnh báo", "Cảnh báo {ref}", "Xem nội dung cảnh báo và xử lý trước ngày {due}.",
                 "Xem nội dung cảnh báo và xử lý theo quy định.")

#: The acknowledge links' wording in a message.
ACK_LABELS = {"apology_sent": "Đã gửi thư xin lỗi", "handling": "Đang xử lý"}
SEVERITY_TEXT = {"info": "Thông tin", "warning": "Cảnh báo", "critical": "Khẩn"}
COUNT_KINDS = KIND_ORDER

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def kind_text(kind: str) -> KindText:
    return KINDS.get(kind, OTHER)


def fmt_date(day: dt.date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else ""


def fmt_time(moment: dt.datetime | None) -> str:
    return to_local(moment).strftime("%d/%m/%Y %H:%M") if moment else ""


def due_day(labels: Mapping[str, str]) -> dt.date | None:
    """The due day an alert carries in its labels (``due_day``, ``due_on`` or ``due_at``), if any."""
    for key in ("due_day", "due_on", "due_date", "due_at"):
        value = labels.get(key)
        if not value:
            continue
        try:
            if "T" in value or " " in value:
                moment = dt.datetime.fromisoformat(value)
                return to_local(moment).date() if moment.tzinfo else moment.date()
            return dt.date.fromisoformat(value)
        except ValueError:
            continue
    return None


def one_line(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def scrub(raw: Mapping[str, Any], directory: Directory) -> dict[str, Any]:
    """A notice item as it may be shown: for an agency code outside the directory, the agency is ``unknown``,
    the summary a fixed text, and a key or ref that holds the code a digest of it. Known agencies: unchanged."""
    item = dict(raw)
    code = str(item.get("agency_code", ""))
    if directory.knows(code):
        return item
    item["agency_code"] = UNKNOWN
    item["summary"] = UNKNOWN_AGENCY_SUMMARY
    for field in ("alert_key", "ref"):
        value = str(item.get(field, ""))
        if code and code != UNKNOWN and code in value:
            item[field] = "unknown-" + hashlib.sha256(value.encode()).hexdigest()[:12]
    return item


class AckLinkMaker(Protocol):
    def __call__(self, alert_key: str, receiver_id: str, *, now: dt.datetime) -> dict[str, str]: ...


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


class Renderer:
    """Turns an outbox payload into a :class:`Message` for any channel."""

    def __init__(self, *, directory: Directory, escalation: EscalationPolicy, templates: Path = TEMPLATES,
                 ack_links: AckLinkMaker | None = None) -> None:
        self.directory = directory
        self.escalation = escalation
        #: (alert key, receiver id, now) -> {ack kind: signed URL}; none: messages carry no acknowledge links.
        self.ack_links = ack_links
        self.html = Environment(
            loader=FileSystemLoader(templates),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=True, default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.text = Environment(
            loader=FileSystemLoader(templates),
            autoescape=False,  # noqa: S701 - plain text; the HTML environment escapes
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    # -- public ----------------------------------------------------------------
    def render(self, payload: Mapping[str, Any], *, delivery_id: str, sent_at: dt.datetime) -> Message:
        if payload["type"] == "digest":
            view, data = self._digest_view(payload)
            name = "digest"
        else:
            view, data = self._alerts_view(payload, now=sent_at)
            name = "notification"
        view["delivery_id"] = delivery_id
        data.update({"version": 1, "delivery_id": delivery_id, "sent_at": sent_at.isoformat(),
                     "subject": view["subject"]})
        text = self.text.get_template(f"{name}.txt.j2").render(view)
        html = self.html.get_template(f"{name}.html.j2").render(view)
        data["text"] = text
        return Message(delivery_id=delivery_id, subject=view["subject"], text=text, html=html, data=data)

    # -- alerts ------------------------------------------------------------------
    def salutation(self, role: str, agency_code: str, receiver: str | None = None) -> str:
        official = self.directory.officials.get(receiver or "")
        if official is not None and (not self.directory.knows(agency_code) or (
                official.id in self.directory.technical_desk and official.agency_code != agency_code)):
            return official.title  # the technical desk, by its post: the agency says nothing here
        if role == "district_leadership":
            return f"Lãnh đạo {self.directory.district_name}"
        agency = self.directory.agency_name(agency_code)
        if role == "head":
            return f"Lãnh đạo {agency}"
        return f"Công chức phụ trách - {agency}"

    def _item(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        raw = scrub(raw, self.directory)
        labels = raw.get("labels") or {}
        due = due_day(labels)
        kt = kind_text(raw["kind"])
        ref = raw["ref"]
        level = int(raw.get("level", 0))
        escalation = ""
        if level == LEVEL_HEAD:
            escalation = (f"Chuyển cấp: cảnh báo đã kéo dài quá {self.escalation.head_after_hours:g} giờ làm việc; "
                          "đề nghị Lãnh đạo đơn vị chỉ đạo xử lý.")
        elif level == LEVEL_LEADERSHIP:
            escalation = (f"Chuyển cấp: cảnh báo đã kéo dài quá {self.escalation.leadership_after_hours:g} giờ làm "
                          f"việc; báo cáo Lãnh đạo {self.directory.district_name}.")
        starts_at = _parse_time(raw["starts_at"])
        ends_at = _parse_time(raw.get("ends_at"))
        return {
            "alert_key": raw["alert_key"],
            "state": raw["state"],
            "repeat": int(raw.get("repeat", 0)),
            "level": level,
            "kind": raw["kind"],
            "severity": raw["severity"],
            "severity_text": SEVERITY_TEXT.get(raw["severity"], raw["severity"]),
            "agency_code": raw["agency_code"],
            "agency_name": self.directory.agency_name(raw["agency_code"]),
            "ref": ref,
            "summary": raw["summary"],
            "title": kt.title.format(ref=ref),
            "action": kt.action.format(ref=ref, due=fmt_date(due)) if due else kt.action_nodue.format(ref=ref),
            "due_day": fmt_date(due),
            "due_day_iso": due.isoformat() if due else None,
            "starts_at": fmt_time(starts_at),
            "ends_at": fmt_time(ends_at),
            "escalation": escalation,
            "starts_at_iso": raw["starts_at"],
            "ends_at_iso": raw.get("ends_at"),
        }

    def alerts_subject(self, agency_code: str, items: list[dict[str, Any]]) -> str:
        agency = self.directory.agency_name(agency_code)
        firing = [i for i in items if i["state"] == "firing"]
        resolved = [i for i in items if i["state"] == "resolved"]
        counts = Counter(i["kind"] for i in firing)
        order = [k for k in COUNT_KINDS if k in counts] + sorted(k for k in counts if k not in COUNT_KINDS)
        parts = [f"{counts[k]} {kind_text(k).noun}" for k in order]
        if firing and all(i["repeat"] for i in firing):
            parts[0] = "nhắc lại: " + parts[0]
        if resolved:
            parts.append(f"{len(resolved)} cảnh báo đã kết thúc")
        tags = ""
        if any(i["severity"] == "critical" for i in firing):
            tags += "[KHẨN] "
        if any(i["level"] for i in firing):
            tags += "[Chuyển cấp] "
        return one_line(f"[parwatch] {tags}{agency}: {', '.join(parts)}")

    def _links(self, raw: Mapping[str, Any], receiver: str | None, now: dt.datetime) -> list[dict[str, str]]:
        """The acknowledge links of a firing item (none for an agency outside the directory: the desk's)."""
        if (self.ack_links is None or not receiver or raw["state"] != "firing"
                or not self.directory.knows(str(raw.get("agency_code", "")))):
            return []
        urls = self.ack_links(raw["alert_key"], receiver, now=now)
        return [{"kind": kind, "label": ACK_LABELS[kind], "url": url} for kind, url in urls.items()]

    def _alerts_view(self, payload: Mapping[str, Any], *, now: dt.datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        agency_code = self.directory.agency_label(payload["agency"])
        items = [self._item(i) | {"ack_links": self._links(i, payload.get("receiver"), now)}
                 for i in payload["items"]]
        view = {
            "subject": self.alerts_subject(agency_code, items),
            "salutation": self.salutation(payload["role"], agency_code, payload.get("receiver")),
            "agency_name": self.directory.agency_name(agency_code),
            "district_name": self.directory.district_name,
            "plan": PLAN,
            "new": [i for i in items if i["state"] == "firing" and not i["repeat"]],
            "repeats": [i for i in items if i["state"] == "firing" and i["repeat"]],
            "resolved": [i for i in items if i["state"] == "resolved"],
        }
        data = {
            "type": "alerts",
            "receiver": payload["receiver"],
            "agency": {"code": agency_code, "name": view["agency_name"]},
            "alerts": [
                {
                    "alert_key": i["alert_key"],
                    "state": i["state"],
                    "kind": i["kind"],
                    "severity": i["severity"],
                    "agency_code": i["agency_code"],
                    "ref": i["ref"],
                    "summary": i["summary"],
                    "starts_at": i["starts_at_iso"],
                    "ends_at": i["ends_at_iso"],
                    "due_day": i["due_day_iso"],
                    "escalation_level": i["level"],
                    "repeat": i["repeat"],
                    "action": i["action"] if i["state"] == "firing" else "",
                }
                for i in items
            ],
        }
        return view, data

    # -- digests ------------------------------------------------------------------
    def _entry(self, raw: Mapping[str, Any], agency_code: str) -> dict[str, Any]:
        raw = scrub(raw | {"agency_code": agency_code}, self.directory)
        due = due_day(raw.get("labels") or {})
        return {
            "ref": raw["ref"],
            "kind": raw["kind"],
            "title": kind_text(raw["kind"]).title.format(ref=raw["ref"]),
            "summary": raw["summary"],
            "due_day": fmt_date(due),
            "starts_at": fmt_time(_parse_time(raw["starts_at"])),
            "ends_at": fmt_time(_parse_time(raw.get("ends_at"))),
            "ack": self._ack_text(raw.get("ack")),
        }

    def _ack_text(self, ack: Mapping[str, Any] | None) -> str:
        """Who acknowledged (by post) and when: "đang xử lý - Một cửa Phòng Tư pháp, 25/11/2026 10:00"."""
        if not ack:
            return ""
        official = self.directory.officials.get(ack["official_id"])
        who = official.title if official else ack["official_id"]
        note = f" ({one_line(ack['note'])})" if ack.get("note") else ""
        return f"{ACK_KINDS.get(ack['kind'], ack['kind'])} - {who}, {fmt_time(_parse_time(ack['acked_at']))}{note}"

    def _digest_view(self, payload: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        d = payload["digest"]
        period = d["period"]
        start, end = dt.date.fromisoformat(period["start"]), dt.date.fromisoformat(period["end"])
        kind = d["kind"]
        agency_code = self.directory.agency_label(d["agency_code"])
        agency = self.directory.agency_name(agency_code)
        if kind == "weekly":
            week = period["key"].split("-W")
            label = f"báo cáo tuần {int(week[1])}/{week[0]} ({fmt_date(start)} - {fmt_date(end)})"
        else:
            label = f"tổng hợp tháng {start.month:02d}/{start.year}"
        if kind == "district_monthly":
            subject = f"[parwatch] {self.directory.district_name}: {label} các cơ quan, đơn vị"
        else:
            subject = f"[parwatch] {agency}: {label}"
        sections = []
        for key, heading in (
            ("overdue", "Hồ sơ quá hạn chưa giải quyết"),
            ("apology_due", "Hồ sơ sẽ trễ hạn, cần gửi phiếu xin lỗi và hẹn lại ngày trả kết quả"),
            ("due_soon", "Hồ sơ sắp đến hạn"),
            ("ended_late", "Hồ sơ đã kết thúc trễ hạn trong kỳ"),
            ("tasks", f"Nhiệm vụ {PLAN} đến hạn hoặc quá hạn"),
            ("kpis", "Chỉ tiêu chưa đạt mục tiêu"),
        ):
            entries = [self._entry(e, agency_code) for e in d.get(key, ())]
            if kind == "weekly" or entries:
                sections.append({"key": key, "heading": heading, "entries": entries})
        rows = []
        counts = [c | {"agency_code": self.directory.agency_label(c["agency_code"])} for c in d.get("counts", ())]
        for c in counts:
            rows.append({
                "agency_name": self.directory.agency_name(c["agency_code"]),
                "kinds": [
                    {"label": kind_text(k).noun, "fired": c["fired"].get(k, 0), "resolved": c["resolved"].get(k, 0),
                     "open": c["open_at_end"].get(k, 0)}
                    for k in COUNT_KINDS
                    if c["fired"].get(k) or c["resolved"].get(k) or c["open_at_end"].get(k)
                ],
                "fired": sum(c["fired"].values()),
                "resolved": sum(c["resolved"].values()),
                "open": sum(c["open_at_end"].values()),
                "overdue_fired": c["fired"].get("dossier_overdue", 0),
            })
        view = {
            "subject": one_line(subject),
            "salutation": self.salutation(payload["role"], agency_code, payload.get("receiver")),
            "kind": kind,
            "label": label,
            "agency_name": agency,
            "district_name": self.directory.district_name,
            "plan": PLAN,
            "period_start": fmt_date(start),
            "period_end": fmt_date(end),
            "sections": sections,
            "rows": rows,
            "by_field": list(d.get("by_field", ())),  # codes already made safe (domain.digest)
        }
        data = {
            "type": "digest",
            "receiver": payload["receiver"],
            "agency": {"code": agency_code, "name": agency},
            "digest": {"kind": kind, "period": period, "sections": {s["key"]: s["entries"] for s in sections},
                       "counts": counts, "by_field": d.get("by_field", [])},
        }
        return view, data
