"""How the officials' page writes numbers, dates and periods: Vietnamese conventions, pure functions.

A value that cannot be computed is shown as absent (:data:`ABSENT`), never as 0.
"""

from __future__ import annotations

import datetime as dt

from shared.calendar import period_name

#: What the page shows for a figure that has no value (no dossier, a part parwatch cannot compute).
ABSENT = "—"

WEEKDAYS = ("Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ nhật")

STATE_TEXT = {
    "done": "Đã hoàn thành",
    "done_late": "Hoàn thành trễ hạn",
    "open": "Đang thực hiện",
    "overdue": "Quá hạn",
    "due_soon": "Sắp đến hạn",
    "awaiting_supplement": "Chờ bổ sung",
    "in_time": "Trong hạn",
}

SEVERITY_TEXT = {"info": "Thông tin", "warning": "Cảnh báo", "critical": "Nghiêm trọng"}


def number(value: float, *, digits: int = 0) -> str:
    """``1234.5`` -> ``1.234,5``: a dot between thousands, a comma before decimals, as Vietnamese writes them."""
    text = f"{value:,.{digits}f}"
    return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def pct(ratio: float | None, *, digits: int = 1) -> str:
    """A ratio 0..1 as a percentage, ``0.975`` -> ``97,5 %``; None -> :data:`ABSENT`."""
    if ratio is None:
        return ABSENT
    return f"{number(ratio * 100, digits=digits)} %"


def points(value: float | None, *, digits: int = 1) -> str:
    return ABSENT if value is None else number(value, digits=digits)


def vn_date(day: dt.date | None) -> str:
    """``dd/mm/yyyy``; None -> :data:`ABSENT`."""
    return ABSENT if day is None else day.strftime("%d/%m/%Y")


def vn_long_date(day: dt.date) -> str:
    """``Thứ Tư, ngày 02/12/2026``."""
    return f"{WEEKDAYS[day.weekday()]}, ngày {day.strftime('%d/%m/%Y')}"


def vn_time(moment: dt.datetime | None, *, tz: dt.tzinfo) -> str:
    """``08:15 02/12/2026`` in the business time zone; None -> :data:`ABSENT`."""
    if moment is None:
        return ABSENT
    return moment.astimezone(tz).strftime("%H:%M %d/%m/%Y")


def period_label(key: str) -> str:
    """A period key as a heading names it: ``2026-11`` -> ``Tháng 11/2026``, ``2026-Q4`` -> ``Quý IV/2026``,
    ``2026`` -> ``Năm 2026``, ``2026-W48`` -> ``Tuần 48/2026``."""
    name = period_name(key)
    return name[:1].upper() + name[1:]


def short_month(key: str) -> str:
    """``2026-11`` -> ``T11/26`` (a chart's axis)."""
    year, month = key.split("-")
    return f"T{int(month)}/{year[2:]}"


def days_late(due_day: dt.date | None, today: dt.date) -> int | None:
    """Calendar days past the due day (0 on or before it); None without a due day."""
    if due_day is None:
        return None
    return max(0, (today - due_day).days)


def state_text(state: str) -> str:
    return STATE_TEXT.get(state, state)


def meets(ratio: float | None, target: float) -> str:
    """A CSS class: ``ok`` at or above the target, ``below`` under it, ``absent`` without a value."""
    if ratio is None:
        return "absent"
    return "ok" if ratio >= target else "below"


KIND_TEXT = {
    "dossier_due_soon": "Hồ sơ sắp đến hạn",
    "dossier_overdue": "Hồ sơ quá hạn",
    "dossier_apology_due": "Cần gửi thư xin lỗi",
    "plan_task_due_soon": "Nhiệm vụ sắp đến hạn",
    "plan_task_overdue": "Nhiệm vụ quá hạn",
    "kpi_below_target": "Chỉ tiêu dưới mục tiêu",
    "deadletter": "Thông điệp bị từ chối",
    "unknown_agency": "Đơn vị không có trong danh mục",
    "operator_alert": "Cảnh báo vận hành hệ thống",
}

ACK_KIND_TEXT = {"apology_sent": "Đã gửi thư xin lỗi", "handling": "Đang xử lý"}


def kind_text(kind: str) -> str:
    return KIND_TEXT.get(kind, kind)


#: Decision 766's parts as parwatch computes them (services.scoring.domain), in Vietnamese: (part, how).
INDEX_PARTS = {
    "progress": ("Tiến độ giải quyết", "20 × tỷ lệ đúng hạn"),
    "handling_satisfaction": ("Mức độ hài lòng trong giải quyết TTHC",
                              "tối đa 6 điểm theo tỷ lệ trễ hạn và tỷ lệ không hài lòng"),
    "online_filing": ("Hồ sơ nộp trực tuyến", "đủ điểm khi từ 50 % hồ sơ nộp trực tuyến"),
    "national_sync": ("Đồng bộ Cổng Dịch vụ công quốc gia", "đủ điểm khi 100 % hồ sơ được đồng bộ"),
    "publicity_other": ("Công khai, minh bạch (phần còn lại)", "không có sự kiện nào mang dữ liệu này"),
    "online_service_other": ("Dịch vụ trực tuyến và thanh toán (phần còn lại)",
                             "sự kiện không cho biết thủ tục hay hồ sơ nào phải nộp phí"),
    "digitization": ("Số hóa hồ sơ, kết quả", "sự kiện chỉ cho biết hồ sơ có được số hóa hay không"),
    "satisfaction_other": ("Xử lý phản ánh, kiến nghị", "không có sự kiện nào mang dữ liệu này"),
}

GROUPS = {
    "progress": "Tiến độ giải quyết",
    "satisfaction": "Mức độ hài lòng",
    "online_service": "Dịch vụ trực tuyến, thanh toán",
    "publicity_transparency": "Công khai, minh bạch",
    "digitization": "Số hóa",
}


def index_part(part: str) -> tuple[str, str]:
    return INDEX_PARTS.get(part, (part, ""))


#: Why deadline_monitor refused a plan report (its reasons name the `parwatch plan report` option), in Vietnamese.
REPORT_REFUSALS = (
    ("--agency", "đơn vị này không phải là đơn vị chủ trì nhiệm vụ"),
    ("--period", "kỳ báo cáo không khớp với kỳ nào của nhiệm vụ trong thời hạn kế hoạch"),
    ("--done-on", "ngày hoàn thành chưa tới"),
    ("--plan", "không xác định được kế hoạch của nhiệm vụ"),
    ("TASK", "không có nhiệm vụ này trong kế hoạch đang có hiệu lực"),
)


def report_refusal(detail: str) -> str:
    """deadline_monitor's refusal of a plan report as officials read it."""
    for option, text in REPORT_REFUSALS:
        if detail.startswith(option):
            return text
    return "báo cáo không hợp lệ"
