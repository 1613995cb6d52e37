"""``parwatch demo``: the stack plus a synthetic feed of Tuy Phong district.

Two parts, kept apart:

- :class:`DistrictFeed` is pure: from a seed, a start time and a working-day
  calendar it plans the life of every dossier of the district's departments
  and communes (online registration, receipt, processing, supplement requests,
  financial obligations, withdrawals, resolution early, on time or late,
  return of the result, the applicant's rating) and renders contract
  CloudEvents in time order. Plan task reports on the occurrences of the
  demo's plan (Plan 146 copied to the current year, :func:`demo_plan`: most
  done a few days before they fall due, some late, a few never, the months
  before the feed's start sent first as its history) and a small share of
  deliberately malformed messages (so dead letters show) are mixed in. No I/O, no clock:
  the caller moves the simulated clock.
- :class:`FeedPublisher` runs beside the stack (a
  :class:`parwatch.supervisor.Companion`): it backfills the past
  ``backfill_days`` days of history at once, then publishes live at ``rate``
  events per second with nats-py JetStream (``Nats-Msg-Id`` = event id).

In live mode the district's next planned steps are brought forward to the
wall clock (a day of the district goes by in minutes), so the figures move
within a minute. Nothing in the feed is personal data: dossier codes are
synthetic, and the contract has no field for a person.

The demo keeps its data apart from ``make run``'s: ``./var/demo`` unless
``PARWATCH_DATA_DIR`` is set. Started again on the same folder it does not
load the history twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

import shared
from shared.backoff import Backoff
from shared.calendar import AFTERNOON, MORNING, VN_TZ, WorkingCalendar, load_calendar
from shared.events import CONTENT_TYPE, DOSSIER_TYPE, PLAN_TYPE, RATING_TYPE
from shared.settings import CommonSettings
from shared.streams import DOSSIER_EVENTS, PLAN_EVENTS, RATING_EVENTS

log = logging.getLogger(__name__)

SOURCE_DOSSIERS = "demo/mot-cua-tuy-phong"  # the district's one-stop-shop system (simulated)
SOURCE_RATINGS = "demo/kiosk-danh-gia"
SOURCE_PLANS = "demo/bao-cao-ke-hoach"
AGENCIES_FILE = Path(shared.__file__).parent / "data" / "agencies.yaml"
PLANS_DIR = Path(__file__).resolve().parents[1] / "services" / "deadline_monitor" / "plans"

# -- the district's procedures (illustrative codes, realistic durations) ------------


@dataclass(frozen=True)
class Procedure:
    """A procedure as the demo simulates it. Codes are the demo's own, not MaTTHC."""

    code: str
    field_code: str
    name: str
    value: float
    unit: str  # working_days | days | hours
    weight: float = 1.0
    financial: float = 0.0  # share of dossiers asked to pay a financial obligation (status 6)
    fee: bool = True


COMMUNE_PROCEDURES: tuple[Procedure, ...] = (
    Procedure("HT-KHAI-SINH", "HO_TICH", "Đăng ký khai sinh", 1, "working_days", 5, fee=False),
    Procedure("HT-KET-HON", "HO_TICH", "Đăng ký kết hôn", 5, "working_days", 2, fee=False),
    Procedure("HT-KHAI-TU", "HO_TICH", "Đăng ký khai tử", 1, "working_days", 1, fee=False),
    Procedure("HT-XAC-NHAN-TTHN", "HO_TICH", "Cấp giấy xác nhận tình trạng hôn nhân", 3, "working_days", 2),
    Procedure("CT-BAN-SAO", "CHUNG_THUC", "Chứng thực bản sao từ bản chính", 4, "hours", 6),
    Procedure("CT-CHU-KY", "CHUNG_THUC", "Chứng thực chữ ký", 4, "hours", 2),
    Procedure("BTXH-TRO-CAP", "BAO_TRO_XA_HOI", "Trợ cấp xã hội hằng tháng", 15, "working_days", 1, fee=False),
    Procedure("DD-HOA-GIAI", "DAT_DAI", "Hòa giải tranh chấp đất đai", 45, "days", 0.3, fee=False),
)

DEPARTMENT_PROCEDURES: dict[str, tuple[Procedure, ...]] = {
    "PTNMT": (
        Procedure("DD-CAP-GCN", "DAT_DAI", "Cấp Giấy chứng nhận quyền sử dụng đất lần đầu", 30, "working_days", 3, 0.6),
        Procedure("DD-CHUYEN-NHUONG", "DAT_DAI", "Đăng ký biến động do chuyển nhượng quyền sử dụng đất", 10,
                  "working_days", 5, 0.8),
        Procedure("DD-CHUYEN-MUC-DICH", "DAT_DAI", "Chuyển mục đích sử dụng đất", 15, "working_days", 2, 0.9),
        Procedure("MT-KE-HOACH-BVMT", "MOI_TRUONG", "Đăng ký kế hoạch bảo vệ môi trường", 10, "working_days", 0.5),
    ),
    "PTP": (
        Procedure("TP-CHUNG-THUC-HD", "CHUNG_THUC", "Chứng thực hợp đồng, giao dịch", 2, "working_days", 3),
        Procedure("TP-THAY-DOI-HO-TICH", "HO_TICH", "Thay đổi, cải chính, bổ sung thông tin hộ tịch", 3,
                  "working_days", 2),
        Procedure("TP-KHAI-SINH-YTNN", "HO_TICH", "Đăng ký khai sinh có yếu tố nước ngoài", 15, "working_days", 0.3),
    ),
    "PTCKH": (
        Procedure("KD-HO-KINH-DOANH", "KINH_DOANH", "Đăng ký thành lập hộ kinh doanh", 3, "working_days", 4),
        Procedure("KD-THAY-DOI-HKD", "KINH_DOANH", "Đăng ký thay đổi nội dung hộ kinh doanh", 3, "working_days", 2),
    ),
    "PKTHT": (
        Procedure("XD-GIAY-PHEP", "XAY_DUNG", "Cấp giấy phép xây dựng nhà ở riêng lẻ", 15, "working_days", 4),
        Procedure("GT-DAU-NOI", "GIAO_THONG", "Chấp thuận đấu nối đường bộ", 10, "working_days", 0.5),
    ),
    "PLDTBXH": (
        Procedure("LD-NGUOI-CO-CONG", "NGUOI_CO_CONG", "Giải quyết chế độ người có công", 20, "working_days", 2,
                  fee=False),
        Procedure("LD-BAO-TRO", "BAO_TRO_XA_HOI", "Hỗ trợ kinh phí nhận chăm sóc đối tượng bảo trợ xã hội", 10,
                  "working_days", 2, fee=False),
    ),
    "PGDDT": (
        Procedure("GD-CHUYEN-TRUONG", "GIAO_DUC", "Chuyển trường đối với học sinh trung học cơ sở", 3,
                  "working_days", 2, fee=False),
        Procedure("GD-BAN-SAO-VB", "GIAO_DUC", "Cấp bản sao văn bằng, chứng chỉ từ sổ gốc", 1, "working_days", 1),
    ),
    "PYT": (Procedure("YT-ATTP", "AN_TOAN_THUC_PHAM", "Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm",
                      15, "working_days", 1),),
    "PVHTT": (Procedure("VH-KARAOKE", "VAN_HOA", "Cấp giấy phép kinh doanh dịch vụ karaoke", 5, "working_days", 0.5),),
    "PNNPTNT": (Procedure("NN-TRANG-TRAI", "NONG_NGHIEP", "Cấp giấy chứng nhận kinh tế trang trại", 5,
                          "working_days", 0.5, fee=False),),
    "PNV": (Procedure("NV-TON-GIAO", "TON_GIAO", "Đăng ký hoạt động tín ngưỡng", 15, "days", 0.3, fee=False),),
    "VP_HDND_UBND": (Procedure("VP-CUNG-CAP-TT", "TIEP_CONG_DAN", "Cung cấp thông tin theo yêu cầu", 15,
                               "working_days", 0.3, fee=False),),
    "TTRA": (Procedure("TTR-KHIEU-NAI", "KHIEU_NAI", "Giải quyết khiếu nại lần đầu", 30, "days", 0.3, fee=False),),
}

#: Share of each agency's dossiers the demo resolves late (the rest early or on time).
LATE_SHARE: dict[str, float] = {"PTNMT": 0.12, "PKTHT": 0.06, "XA_CHI_CONG": 0.07, "XA_PHAN_DUNG": 0.05}
DEFAULT_LATE_SHARE = 0.012
#: Daily volume weight of each unit (the district's total is spread by these).
VOLUME: dict[str, float] = {
    "PTNMT": 12, "PTCKH": 5, "PKTHT": 4, "PTP": 5, "PLDTBXH": 3, "PGDDT": 2, "PYT": 1, "PVHTT": 0.5,
    "PNNPTNT": 0.5, "PNV": 0.3, "VP_HDND_UBND": 0.3, "TTRA": 0.3,
    "TT_LIEN_HUONG": 7, "TT_PHAN_RI_CUA": 7,
}
DEFAULT_COMMUNE_VOLUME = 4.0

MALFORMED_KINDS = ("not_json", "naive_time", "unknown_field", "bad_status", "missing_received_at", "subject_mismatch")


@dataclass(frozen=True)
class Agency:
    code: str
    kind: str  # department | commune
    name: str


def load_agencies(path: Path = AGENCIES_FILE) -> tuple[Agency, ...]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return tuple(Agency(a["code"], a["kind"], a["name"]) for a in raw["agencies"])


# -- plan tasks (read from the deadline_monitor's plan files when present) -------------


@dataclass(frozen=True)
class PlanTask:
    plan_id: str
    task_id: str
    owners: tuple[str, ...]
    every: str | None  # week | month | year | None (dated or continuous)
    valid_from: dt.date
    valid_until: dt.date


def _owners(owner: object, agencies: Sequence[Agency]) -> tuple[str, ...]:
    known = {a.code for a in agencies}
    if isinstance(owner, str):
        owner = [owner]
    if isinstance(owner, list):
        return tuple(c for c in owner if isinstance(c, str) and c in known)
    if isinstance(owner, dict):
        codes = tuple(c for c in owner.get("codes") or () if c in known)
        group = owner.get("group")
        if group == "all":
            codes += tuple(a.code for a in agencies)
        elif group == "departments":
            codes += tuple(a.code for a in agencies if a.kind == "department")
        elif group == "communes":
            codes += tuple(a.code for a in agencies if a.kind == "commune")
        return tuple(dict.fromkeys(codes))
    return ()


def load_plan_tasks(folder: Path, agencies: Sequence[Agency]) -> tuple[PlanTask, ...]:
    """Plan ids and task ids with their owners; an unreadable file is skipped and logged."""
    if not folder.is_dir():
        return ()
    tasks: list[PlanTask] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            plan_id = str(raw["plan_id"])
            start = _as_date(raw.get("valid_from"))
            end = _as_date(raw.get("valid_until"))
            for t in raw.get("tasks") or ():
                owners = _owners(t.get("owner"), agencies)
                due = t.get("due") or {}
                every = due.get("every") if isinstance(due, dict) else None
                if not isinstance(due, dict) or due.get("continuous"):
                    continue  # an ongoing duty has no occurrence to report on
                if owners:
                    tasks.append(PlanTask(plan_id, str(t["id"]), owners, every, start, end))
        except Exception as exc:  # a plan file being written: the demo goes on without it
            log.warning("plan file %s not usable for the demo: %s", path.name, type(exc).__name__)
    return tuple(tasks)


@dataclass(frozen=True)
class PlanOccurrence:
    """One occurrence of a plan task for one owner (deadline_monitor tracks the same): the demo reports on it."""

    plan_id: str
    task_id: str
    agency_code: str
    period: str  # "" for a one-shot task
    due_day: dt.date


def plan_occurrences(path: Path, *, calendar: WorkingCalendar) -> tuple[PlanOccurrence, ...]:
    """The occurrences of the plan file at ``path``, as deadline_monitor tracks them (its own code computes them)."""
    from services.deadline_monitor.domain import plan_occurrence_specs
    from services.deadline_monitor.plan import load_agencies as load_directory
    from services.deadline_monitor.plan import load_plan

    directory = load_directory()
    plan = load_plan(path, agencies=directory)
    return tuple(
        PlanOccurrence(s.plan_id, s.task_id, s.agency_code, s.period, s.due_day)
        for s in plan_occurrence_specs(plan, agencies=directory, calendar=calendar)
    )


def current_plan_copy(folder: Path, *, year: int, source: Path | None = None) -> Path:
    """Plan 146 copied to ``year`` for the whole calendar year, written into ``folder`` (the demo's plans).

    The shipped plan stays the 2023 text; the copy moves every date by the years
    between (``parwatch plan copy``), and its validity is the whole of ``year``
    so that the duties of the months before today exist for the demo's history.
    """
    from services.deadline_monitor.plan import copy_plan_text

    source = source or PLANS_DIR / "plan-146-2023.yaml"
    text = copy_plan_text(source.read_text(encoding="utf-8"), year=year, source=str(source),
                          valid_from=dt.date(year, 1, 1), valid_until=dt.date(year, 12, 31))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{source.stem.rsplit('-', 1)[0]}-{year}.yaml"
    target.write_text(text, encoding="utf-8")
    return target


def _as_date(value: object) -> dt.date:
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


# -- the pure feed ---------------------------------------------------------------------


@dataclass(frozen=True)
class FeedMessage:
    """One message to publish: subject, Nats-Msg-Id and body."""

    subject: str
    msg_id: str
    body: bytes
    at: dt.datetime
    kind: str  # dossier | rating | plan | malformed
    dossier_code: str | None = None


@dataclass
class DossierPlan:
    """The planned life of one dossier; rendered step by step."""

    code: str
    agency: str
    procedure: Procedure
    channel: int
    online_payment: bool | None
    digitized: bool
    synced_national: bool
    sends_due_at: bool
    sends_sequence: bool
    sequence: int = 0
    received_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    paused_on: dt.date | None = None
    last_at: dt.datetime | None = None


@dataclass(frozen=True)
class Rating:
    overall: str
    criteria: Mapping[str, int] | None


@dataclass(order=True)
class _Step:
    at: dt.datetime
    order: int
    dossier: DossierPlan = field(compare=False)
    status: int | None = field(compare=False, default=None)
    rating: Rating | None = field(compare=False, default=None)
    report: PlanOccurrence | None = field(compare=False, default=None)


class DistrictFeed:
    """A deterministic synthetic district: same seed, start and calls, same messages.

    :meth:`advance` emits what happened up to a simulated time, in time
    order; how the time is cut into calls does not change what comes out
    (planning and rendering draw from two random streams). :meth:`pull_forward`
    (live mode) brings the next planned steps forward to a given moment and
    lets new dossiers arrive.
    """

    def __init__(
        self,
        *,
        seed: int,
        start: dt.datetime,
        run_tag: str,
        calendar: WorkingCalendar,
        agencies: Sequence[Agency],
        plan_tasks: Sequence[PlanTask] = (),
        dossiers_per_day: float = 300.0,
        malformed_share: float = 0.004,
        plan_reports_per_day: float = 6.0,
        occurrences: Sequence[PlanOccurrence] = (),
        history: bool = True,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start needs an offset")
        self.rng = random.Random(seed)
        self.render_rng = random.Random(f"{seed}:render")  # apart, so chunking never changes the plan
        self.now = start.astimezone(VN_TZ)
        self.run_tag = run_tag
        self.calendar = calendar
        self.agencies = tuple(agencies)
        self.plan_tasks = tuple(plan_tasks)
        self.dossiers_per_day = dossiers_per_day
        self.malformed_share = malformed_share
        self.plan_reports_per_day = plan_reports_per_day
        self._heap: list[_Step] = []
        self._order = itertools.count()
        self._dossier_no = itertools.count(1)
        self._msg_no = itertools.count(1)
        self._days_planned: set[dt.date] = set()
        self._weights = [VOLUME.get(a.code, DEFAULT_COMMUNE_VOLUME if a.kind == "commune" else 0.3) for a in agencies]
        self._reports_by_day, self._history = self._plan_occurrence_reports(occurrences, seed=seed)
        if not history:
            self._history = []

    # -- public -----------------------------------------------------------------------
    def advance(self, until: dt.datetime) -> list[FeedMessage]:
        """Everything planned in (now, until], in time order; the clock moves to ``until``."""
        until = until.astimezone(VN_TZ)
        if until <= self.now:
            return []
        out: list[FeedMessage] = []
        if self._history:  # the plan reports made before the feed's start, first: what the district did until then
            history, self._history = self._history, []
            for at, occ in history:
                out += self._occurrence_report(occ, at=at)
        day = self.now.date()
        while day <= until.date():
            if day not in self._days_planned:
                self._days_planned.add(day)
                self._plan_day(day, out_of_range_before=self.now)
            day += dt.timedelta(days=1)
        while self._heap and self._heap[0].at <= until:
            step = heapq.heappop(self._heap)
            out.extend(self._render(step, at=step.at))
        self.now = until
        return out

    def pull_forward(self, now: dt.datetime, n: int) -> list[FeedMessage]:
        """Live mode: ``n`` dossier events at ``now`` (the next planned steps, and new arrivals)."""
        now = now.astimezone(VN_TZ)
        now = max(now, self.now)
        out: list[FeedMessage] = []
        tick = dt.timedelta(microseconds=1)
        at = now
        while len(out) < n:
            # About one event in five opens a new dossier, which keeps the population steady.
            if not self._heap or self.rng.random() < 0.2:
                self._plan_dossier(at)
            step = heapq.heappop(self._heap)
            out.extend(self._render(step, at=at))
            at += tick
            if not self._reports_by_day_given and self.render_rng.random() < self.plan_reports_per_day / max(
                self.dossiers_per_day * 4.5, 1
            ):
                out.extend(self._plan_report(at))
        self.now = max(self.now, at)
        return out

    @property
    def pending(self) -> int:
        return len(self._heap)

    # -- planning ---------------------------------------------------------------------
    def _plan_day(self, day: dt.date, *, out_of_range_before: dt.datetime) -> None:
        rng = self.rng
        working = self.calendar.is_working_day(day)
        mean = self.dossiers_per_day if working else self.dossiers_per_day * 0.03
        count = max(0, round(rng.gauss(mean, mean * 0.12)))
        for _ in range(count):
            if working:
                arrival = self._working_moment(day, rng.random())
            else:  # online filings on a day off, received the next working day
                arrival = dt.datetime.combine(day, dt.time(8), VN_TZ) + dt.timedelta(minutes=rng.uniform(0, 720))
            if arrival > out_of_range_before:
                self._plan_dossier(arrival)
        for at, occ in self._reports_by_day.pop(day, ()):
            if at > out_of_range_before:
                heapq.heappush(self._heap, _Step(at, next(self._order), _PLAN_MARKER, report=occ))
        if working and self.plan_tasks and not self._reports_by_day_given:
            for _ in range(self._poisson(self.plan_reports_per_day)):
                at = self._working_moment(day, rng.random())
                if at > out_of_range_before:
                    heapq.heappush(self._heap, _Step(at, next(self._order), _PLAN_MARKER))

    def _plan_dossier(self, arrival: dt.datetime) -> None:
        rng, cal = self.rng, self.calendar
        agency = rng.choices(self.agencies, weights=self._weights)[0]
        procs = COMMUNE_PROCEDURES if agency.kind == "commune" else DEPARTMENT_PROCEDURES.get(agency.code, ())
        if not procs:
            return
        proc = rng.choices(procs, weights=[p.weight for p in procs])[0]
        r = rng.random()
        channel = 2 if r < 0.6 else (1 if r < 0.96 else 3)
        n = next(self._dossier_no)
        local = arrival.astimezone(VN_TZ)
        d = DossierPlan(
            code=f"{agency.code.replace('_', '')[:10]}-{local:%y%m%d}-{self.run_tag}{n:05d}",
            agency=agency.code,
            procedure=proc,
            channel=channel,
            online_payment=(rng.random() < 0.45) if channel == 2 and proc.fee else None,
            digitized=rng.random() < (0.6 if agency.code == "PTNMT" else 0.8),
            synced_national=rng.random() < 0.96,
            sends_due_at=rng.random() < 0.4,
            sends_sequence=rng.random() < 0.9,
        )
        steps: list[tuple[dt.datetime, int]] = []

        def later(t: dt.datetime, minutes_lo: float, minutes_hi: float) -> dt.datetime:
            return t + dt.timedelta(minutes=rng.uniform(minutes_lo, minutes_hi))

        t = local
        if channel == 2:
            day_start = dt.datetime.combine(local.date(), dt.time(6), VN_TZ)
            registered = (day_start + (local - day_start) * rng.uniform(0.2, 0.95)) if local > day_start else local
            steps.append((registered, 1))
            if rng.random() < 0.02:  # not accepted: never received, never counted (rule 1)
                steps.append((later(registered, 20, 90), 3))
                self._push(d, steps)
                return
        received = t if cal.is_working_day(t.date()) else self._working_moment(cal.next_working_day(t.date()), 0.1)
        steps.append((received, 2))
        receipt_day = cal.receipt_day(received)
        due_day = cal.due_day(received_at=received, value=proc.value, unit=proc.unit)
        cursor = later(received, 5, 120)
        steps.append((cursor, 4))

        paused = 0
        if rng.random() < 0.07:  # supplement requested, then resumed
            cursor = self._moment_between(receipt_day, due_day, after=cursor)
            steps.append((cursor, 5))
            k = rng.randint(1, 4)
            cursor = self._working_moment(cal.add_working_days(cursor.date(), k), rng.random())
            steps.append((cursor, 4))
            paused += k
            if rng.random() < 0.12:  # a second supplement request: late whatever the dates (rule 4)
                cursor = later(cursor, 60, 600)
                steps.append((cursor, 5))
                k = rng.randint(1, 3)
                cursor = self._working_moment(cal.add_working_days(cursor.date(), k), rng.random())
                steps.append((cursor, 4))
                paused += k
        if rng.random() < proc.financial * 0.5:  # financial obligation, paid after a few days
            cursor = self._moment_between(receipt_day, due_day, after=cursor)
            steps.append((cursor, 6))
            k = rng.randint(1, 3)
            cursor = self._working_moment(cal.add_working_days(cursor.date(), k), rng.random())
            steps.append((cursor, 4))
            paused += k

        due_moved = cal.add_working_days(due_day, paused)
        r = rng.random()
        if r < 0.015:
            steps.append((self._moment_between(receipt_day, due_moved, after=cursor), 7))  # withdrawn
            self._push(d, steps)
            return
        if r < 0.02:
            steps.append((self._moment_between(receipt_day, due_moved, after=cursor), 8))  # processing stopped
            self._push(d, steps)
            return
        r = rng.random()
        late = r < LATE_SHARE.get(agency.code, DEFAULT_LATE_SHARE)
        if late:
            end_day = cal.add_working_days(due_moved, rng.randint(1, 6))
        elif r < 0.3 or due_moved <= receipt_day:
            end_day = due_moved
        else:
            span = max(0, cal.working_days_between(receipt_day, due_moved) - 1)
            end_day = cal.add_working_days(receipt_day, rng.randint(0, span))
        end = self._working_moment(end_day, rng.random())
        if end <= cursor:
            end = later(cursor, 10, 90)
        steps.append((end, 9))
        last = end
        if rng.random() < 0.85:
            last = self._working_moment(cal.add_working_days(end.date(), rng.randint(0, 2)), rng.random())
            if last <= end:
                last = later(end, 10, 120)
            steps.append((last, 10))
        rating = None
        if rng.random() < 0.65:
            rating = self._rating(late=late or paused > 0 and rng.random() < 0.2)
        self._push(d, steps, rating=(later(last, 5, 1800), rating) if rating else None)

    def _rating(self, *, late: bool) -> Rating:
        rng = self.rng
        r = rng.random()
        if late:
            overall = "unsatisfied" if r < 0.45 else ("satisfied" if r < 0.85 else "very_satisfied")
        else:
            overall = "unsatisfied" if r < 0.03 else ("satisfied" if r < 0.45 else "very_satisfied")
        criteria = None
        if rng.random() < 0.8:
            low = {"unsatisfied": 0.5, "satisfied": 0.15, "very_satisfied": 0.03}[overall]
            criteria = {f"c{i}": (2 if rng.random() > low else rng.choice((0, 1))) for i in range(1, 10)}
        return Rating(overall, criteria)

    def _push(
        self,
        d: DossierPlan,
        steps: list[tuple[dt.datetime, int]],
        *,
        rating: tuple[dt.datetime, Rating] | None = None,
    ) -> None:
        previous: dt.datetime | None = None
        for at, status in steps:
            at = at.replace(microsecond=0)
            if previous is not None and at <= previous:
                at = previous + dt.timedelta(minutes=1)
            heapq.heappush(self._heap, _Step(at, next(self._order), d, status=status))
            previous = at
        if rating is not None:
            at = max(rating[0], (previous or rating[0]) + dt.timedelta(minutes=1))
            heapq.heappush(self._heap, _Step(at, next(self._order), d, rating=rating[1]))

    # -- rendering ----------------------------------------------------------------------
    def _render(self, step: _Step, *, at: dt.datetime) -> list[FeedMessage]:
        if step.report is not None:
            return self._occurrence_report(step.report, at=at)
        if step.dossier is _PLAN_MARKER:
            return self._plan_report(at)
        d = step.dossier
        if d.last_at is not None and at <= d.last_at:
            at = d.last_at + dt.timedelta(microseconds=1)
        d.last_at = at
        if step.rating is not None:
            return [self._rating_message(d, step.rating, at=at)]
        assert step.status is not None
        out = [self._status_message(d, step.status, at=at)]
        if self.render_rng.random() < self.malformed_share:
            out.append(self._malformed(at))
        return out

    def _status_message(self, d: DossierPlan, status: int, *, at: dt.datetime) -> FeedMessage:
        if status == 2 and d.received_at is None:
            d.received_at = at
            p = d.procedure
            if d.sends_due_at:
                due = self.calendar.due_day(received_at=at, value=p.value, unit=p.unit)
                d.due_at = dt.datetime.combine(due, dt.time(16, 30), VN_TZ)
        if status in (5, 6):
            d.paused_on = d.paused_on or at.astimezone(VN_TZ).date()
        elif d.paused_on is not None:
            # The source issues a new return date after a pause, moved by the paused working days.
            if d.due_at is not None:
                moved = self.calendar.working_days_between(d.paused_on, at.astimezone(VN_TZ).date())
                due = self.calendar.add_working_days(d.due_at.date(), moved)
                d.due_at = dt.datetime.combine(due, d.due_at.timetz())
            d.paused_on = None
        d.sequence += 1
        data: dict[str, Any] = {
            "dossier_code": d.code,
            "status": status,
            "occurred_at": _iso(at),
            "agency_code": d.agency,
            "procedure_code": d.procedure.code,
            "field_code": d.procedure.field_code,
            "statutory_duration": {"value": d.procedure.value, "unit": d.procedure.unit},
            "channel": d.channel,
            "digitized": d.digitized,
            "synced_national": d.synced_national,
        }
        if d.sends_sequence:
            data["sequence"] = d.sequence
        if d.received_at is not None:
            data["received_at"] = _iso(d.received_at)
        if d.due_at is not None:
            data["due_at"] = _iso(d.due_at)
        if d.online_payment is not None:
            data["online_payment"] = d.online_payment
        return self._message(DOSSIER_EVENTS, DOSSIER_TYPE, SOURCE_DOSSIERS, data, at=at, subject=d.code, kind="dossier",
                             dossier_code=d.code)

    def _rating_message(self, d: DossierPlan, rating: Rating, *, at: dt.datetime) -> FeedMessage:
        data: dict[str, Any] = {
            "dossier_code": d.code,
            "agency_code": d.agency,
            "rated_at": _iso(at),
            "overall": rating.overall,
        }
        if rating.criteria is not None:
            data["criteria"] = dict(rating.criteria)
        return self._message(RATING_EVENTS, RATING_TYPE, SOURCE_RATINGS, data, at=at, subject=d.code, kind="rating",
                             dossier_code=d.code)

    # -- plan reports on the tracked occurrences ----------------------------------------
    def _plan_occurrence_reports(
        self, occurrences: Sequence[PlanOccurrence], *, seed: int
    ) -> tuple[dict[dt.date, list[tuple[dt.datetime, PlanOccurrence]]], list[tuple[dt.datetime, PlanOccurrence]]]:
        """When each occurrence is reported done, decided once (a random stream of its own, so the dossiers stay
        as they are): most a few working days before their due day, some late, a few never. Those reported before
        the feed's start are its history, sent first; the others come on their day."""
        self._reports_by_day_given = bool(occurrences)
        rng = random.Random(f"{seed}:plan-reports")
        by_day: dict[dt.date, list[tuple[dt.datetime, PlanOccurrence]]] = {}
        history: list[tuple[dt.datetime, PlanOccurrence]] = []
        for occ in sorted(occurrences, key=lambda o: (o.due_day, o.plan_id, o.task_id, o.agency_code, o.period)):
            r = rng.random()
            if r < 0.06:
                continue  # never reported: overdue
            early = 0 if r < 0.3 else rng.randint(1, 4)
            day = (self.calendar.add_working_days(occ.due_day, rng.randint(1, 5)) if r < 0.16
                   else self._working_days_before(occ.due_day, early))
            at = self._working_moment(day, rng.random()).replace(microsecond=0)
            if at <= self.now:
                history.append((at, occ))
            else:
                by_day.setdefault(day, []).append((at, occ))
        history.sort(key=lambda item: item[0])
        return by_day, history

    def _working_days_before(self, day: dt.date, n: int) -> dt.date:
        for _ in range(n):
            day -= dt.timedelta(days=1)
            while not self.calendar.is_working_day(day):
                day -= dt.timedelta(days=1)
        return day

    def _occurrence_report(self, occ: PlanOccurrence, *, at: dt.datetime) -> list[FeedMessage]:
        data: dict[str, Any] = {
            "plan_id": occ.plan_id,
            "task_id": occ.task_id,
            "agency_code": occ.agency_code,
            "state": "done",
            "reported_at": _iso(at),
        }
        if occ.period:
            data["period"] = occ.period
        return [self._message(PLAN_EVENTS, PLAN_TYPE, SOURCE_PLANS, data, at=at, subject=occ.task_id, kind="plan")]

    def _plan_report(self, at: dt.datetime) -> list[FeedMessage]:
        day = at.astimezone(VN_TZ).date()
        in_force = [t for t in self.plan_tasks if t.valid_from <= day <= t.valid_until + dt.timedelta(days=31)]
        if not in_force:
            return []  # a closed plan takes no report (deadline_monitor would dead-letter it)
        rng = self.render_rng
        task = rng.choice(in_force)
        agency = rng.choice(task.owners)
        r = rng.random()
        state = "done" if r < 0.7 else ("in_progress" if r < 0.95 else "blocked")
        data: dict[str, Any] = {
            "plan_id": task.plan_id,
            "task_id": task.task_id,
            "agency_code": agency,
            "state": state,
            "reported_at": _iso(at),
        }
        period = self._period(task, at=at)
        if period:
            data["period"] = period
        if state == "blocked":
            data["note"] = "Đang chờ ý kiến của cơ quan chuyên môn cấp huyện."
        elif state == "done" and rng.random() < 0.3:
            data["note"] = "Đã hoàn thành và gửi báo cáo về Phòng Nội vụ."
        return [self._message(PLAN_EVENTS, PLAN_TYPE, SOURCE_PLANS, data, at=at, subject=task.task_id, kind="plan")]

    def _period(self, task: PlanTask, *, at: dt.datetime | None = None) -> str | None:
        """For a recurring task, the period of the report's day or the one before (a late report), kept inside
        the plan's validity: a period the monitor tracks."""
        if task.every is None:
            return None
        today = (at or self.now).astimezone(VN_TZ).date()
        back = {"week": dt.timedelta(days=7), "month": dt.timedelta(days=28), "year": dt.timedelta(days=365)}
        day = today - back.get(task.every, dt.timedelta(0)) if self.render_rng.random() < 0.3 else today
        day = min(max(day, task.valid_from), task.valid_until)
        if task.every == "week":
            year, week, _ = day.isocalendar()
            return f"{year}-W{week:02d}"
        if task.every == "month":
            return f"{day:%Y-%m}"
        if task.every == "year":
            return f"{day:%Y}"
        return None

    def _malformed(self, at: dt.datetime) -> FeedMessage:
        """A message a sloppy source might send; dossier_tracker dead-letters it."""
        kind = self.render_rng.choice(MALFORMED_KINDS)
        msg_id = f"{self.run_tag}-{next(self._msg_no):08d}"
        code = f"LOI-{self.run_tag}-{msg_id[-6:]}"
        good: dict[str, Any] = {
            "specversion": "1.0",
            "id": msg_id,
            "source": SOURCE_DOSSIERS,
            "type": DOSSIER_TYPE,
            "time": _iso(at),
            "subject": code,
            "data": {
                "dossier_code": code,
                "status": 4,
                "occurred_at": _iso(at),
                "agency_code": "PTNMT",
                "procedure_code": "DD-CAP-GCN",
                "field_code": "DAT_DAI",
            },
        }
        if kind == "not_json":
            body = json.dumps(good).encode()[:-7]
        else:
            if kind == "naive_time":
                good["data"]["occurred_at"] = at.replace(tzinfo=None).isoformat(timespec="seconds")
            elif kind == "unknown_field":
                good["data"]["legacy_status_text"] = "dang xu ly"
            elif kind == "bad_status":
                good["data"]["status"] = 11
            elif kind == "missing_received_at":
                good["data"]["status"] = 2
            elif kind == "subject_mismatch":
                good["subject"] = code + "-X"
            body = json.dumps(good, ensure_ascii=False).encode()
        return FeedMessage(DOSSIER_EVENTS, msg_id, body, at, "malformed")

    def _message(
        self,
        stream_subject: str,
        etype: str,
        source: str,
        data: dict[str, Any],
        *,
        at: dt.datetime,
        subject: str,
        kind: str,
        dossier_code: str | None = None,
    ) -> FeedMessage:
        event_id = f"{self.run_tag}-{next(self._msg_no):08d}"
        envelope = {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": etype,
            "time": _iso(at),
            "subject": subject,
            "datacontenttype": "application/json",
            "data": data,
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        return FeedMessage(stream_subject, event_id, body, at, kind, dossier_code or data.get("dossier_code"))

    # -- time helpers --------------------------------------------------------------------
    def _working_moment(self, day: dt.date, frac: float) -> dt.datetime:
        """A moment in the working hours of ``day`` (07:00-11:30, 13:30-17:00) at ``frac`` of them."""
        morning = (MORNING[1].hour * 60 + MORNING[1].minute) - (MORNING[0].hour * 60 + MORNING[0].minute)
        afternoon = (AFTERNOON[1].hour * 60 + AFTERNOON[1].minute) - (AFTERNOON[0].hour * 60 + AFTERNOON[0].minute)
        minutes = frac * (morning + afternoon)
        start = MORNING[0] if minutes < morning else AFTERNOON[0]
        offset = minutes if minutes < morning else minutes - morning
        return dt.datetime.combine(day, start, VN_TZ) + dt.timedelta(minutes=offset)

    def _moment_between(self, first: dt.date, last: dt.date, *, after: dt.datetime) -> dt.datetime:
        """A working moment on a working day in [first, last], after ``after``."""
        first = max(first, after.date())
        span = self.calendar.working_days_between(first, last) if last > first else 0
        day = self.calendar.add_working_days(first, self.rng.randint(0, span)) if span else first
        moment = self._working_moment(day, self.rng.random())
        return moment if moment > after else after + dt.timedelta(minutes=self.rng.uniform(10, 120))

    def _poisson(self, mean: float) -> int:
        # Knuth's method: small means only.
        limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1


#: How long the feed waits before sending a chunk again while NATS is away.
RETRY = Backoff(first=0.5, cap=10.0)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(VN_TZ).isoformat()


_PLAN_MARKER = DossierPlan(
    code="-", agency="-", procedure=COMMUNE_PROCEDURES[0], channel=1, online_payment=None, digitized=False,
    synced_national=False, sends_due_at=False, sends_sequence=False,
)


# -- publishing (I/O) ----------------------------------------------------------------------


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def run_tag_for(moment: dt.datetime) -> str:
    """A short tag that keeps this run's dossier codes and event ids apart from other runs'."""
    n, digits = int(moment.timestamp()), "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out[-6:]


@dataclass
class FeedStats:
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, messages: Iterable[FeedMessage]) -> None:
        for m in messages:
            self.by_kind[m.kind] = self.by_kind.get(m.kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def summary(self) -> str:
        k = self.by_kind
        return (
            f"{k.get('dossier', 0):,} dossier events, {k.get('rating', 0):,} ratings, "
            f"{k.get('plan', 0):,} plan reports, {k.get('malformed', 0):,} malformed"
        )


class FeedPublisher:
    """Publishes a :class:`DistrictFeed` beside the running stack (a supervisor Companion)."""

    def __init__(
        self,
        *,
        rate: float,
        seed: int,
        data_dir: Path,
        calendar: WorkingCalendar,
        backfill_days: int = 30,
        dossiers_per_day: float = 300.0,
        out: IO[str] | None = None,
        clock: Any = utc_now,
        plan_file: Path | None = None,
    ) -> None:
        self.plan_file = plan_file  # the plan the feed reports on (the current year's copy); None: random reports
        self.rate = rate
        self.seed = seed
        self.data_dir = data_dir
        self.calendar = calendar
        self.backfill_days = backfill_days
        self.dossiers_per_day = dossiers_per_day
        self.out = out or sys.stdout
        self.clock = clock
        self.stats = FeedStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tracker_metrics: str | None = None
        self._say: Callable[[str], None] | None = None

    # -- Companion ---------------------------------------------------------------------------
    def start(self, stack: Any) -> None:
        self._say = getattr(stack, "say", None)  # above the live status, without tearing it
        tracker = next((s for s in stack.services if s.name == "dossier_tracker" and s.port), None)
        self._tracker_metrics = tracker.url("/metrics") if tracker else None
        self._thread = threading.Thread(target=self._main, args=(stack.nats_url,), name="demo-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self.say(f"demo: stopped after {self.stats.total:,} messages ({self.stats.summary()})")

    # -- the loop -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if self._say is not None:
            self._say(text)
        else:
            print(text, file=self.out, flush=True)

    def status_lines(self) -> list[str]:
        """The feed's progress, shown under the stack's figures in the live status."""
        return [f"demo: {self.stats.total:,} messages ({self.stats.summary()}), live at {self.rate:g}/s"]

    def _main(self, nats_url: str) -> None:
        try:
            asyncio.run(self._run(nats_url))
        except Exception:  # the stack goes on without the feed; the operator sees why
            log.exception("demo feed stopped by an error")

    def make_feed(self, *, start: dt.datetime, run_tag: str, history: bool = True) -> DistrictFeed:
        agencies = load_agencies()
        if self.plan_file is not None:  # reports on the occurrences deadline_monitor tracks, history included
            tasks: tuple[PlanTask, ...] = ()
            occurrences = plan_occurrences(self.plan_file, calendar=self.calendar)
        else:
            folder = Path(os.environ.get("PARWATCH_MONITOR_PLANS_DIR") or PLANS_DIR)  # the operator's plans
            tasks, occurrences = load_plan_tasks(folder, agencies), ()
        return DistrictFeed(
            seed=self.seed,
            start=start,
            run_tag=run_tag,
            calendar=self.calendar,
            agencies=agencies,
            plan_tasks=tasks,
            dossiers_per_day=self.dossiers_per_day,
            occurrences=occurrences,
            history=history,
        )

    async def _run(self, nats_url: str) -> None:
        import nats

        servers = [u.strip() for u in nats_url.split(",") if u.strip()]
        auth = CommonSettings().nats_auth()  # a deployment's publisher seed and CA, when set (make demo: none)
        nc = await nats.connect(servers, max_reconnect_attempts=-1, reconnect_time_wait=1, **auth.connect_options())
        try:
            js = nc.jetstream(timeout=10)
            now = self.clock()
            tag = run_tag_for(now)
            marker = self.data_dir / "demo-feed.json"
            if marker.exists():
                feed = self.make_feed(start=now, run_tag=tag, history=False)  # sent with the history already
                self.say(f"demo: history already loaded in {self.data_dir} (remove the folder to start afresh)")
            else:
                feed = self.make_feed(start=now - dt.timedelta(days=self.backfill_days), run_tag=tag)
                await self._backfill(js, feed, until=now)
                if self._stop.is_set():
                    return  # interrupted: the next start loads the history again
                marker.write_text(json.dumps({"loaded_at": now.isoformat(), "seed": self.seed, "run": tag}) + "\n")
            await self._live(js, feed)
        finally:
            await nc.close()

    async def _backfill(self, js: Any, feed: DistrictFeed, *, until: dt.datetime) -> None:
        self.say(f"demo: loading {self.backfill_days} days of Tuy Phong's history (seed {self.seed})...")
        started = time.monotonic()
        day = feed.now
        while day < until and not self._stop.is_set():
            day = min(until, day + dt.timedelta(days=1))
            await self._publish(js, feed.advance(day))
        took = time.monotonic() - started
        self.say(f"demo: history loaded in {took:.1f}s: {self.stats.summary()}")
        where = f" at {self._tracker_metrics}" if self._tracker_metrics else ""
        self.say(f"demo: now live at {self.rate:g} events/s; watch parwatch_dossiers_ended_total{where}")

    async def _live(self, js: Any, feed: DistrictFeed) -> None:
        budget, last, next_report = 0.0, time.monotonic(), time.monotonic() + 30
        while not self._stop.is_set():
            await asyncio.sleep(0.25)
            now = time.monotonic()
            budget += self.rate * (now - last)
            last = now
            n = int(budget)
            if n:
                budget -= n
                await self._publish(js, feed.pull_forward(self.clock(), n))
            if now >= next_report:  # to the log file; the live status shows the same (status_lines)
                next_report = now + 30
                log.info("demo: %s messages so far (%s)", f"{self.stats.total:,}", self.stats.summary())

    async def _publish(self, js: Any, messages: Sequence[FeedMessage], *, chunk: int = 256) -> None:
        """Publish with JetStream acks; a failed chunk is sent again (Nats-Msg-Id dedups it)."""
        for i in range(0, len(messages), chunk):
            part = messages[i : i + chunk]
            failures = 0
            while True:
                try:
                    await asyncio.gather(
                        *(
                            js.publish(
                                m.subject, m.body, headers={"Content-Type": CONTENT_TYPE, "Nats-Msg-Id": m.msg_id}
                            )
                            for m in part
                        )
                    )
                    break
                except Exception as exc:  # NATS restarting: wait and send the chunk again
                    if self._stop.is_set():
                        return
                    failures += 1
                    log.warning("demo publish failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(RETRY.delay(failures))
            self.stats.add(part)


def demo_plan(data_dir: Path, *, year: int) -> Path | None:
    """Plan 146 is dated 2023 and closed: the demo runs on its copy for ``year``, written to ``data_dir/plans`` and
    loaded by deadline_monitor from there (``PARWATCH_MONITOR_PLANS_DIR``), so that the feed's reports meet
    tracked occurrences. An operator's own ``PARWATCH_MONITOR_PLANS_DIR`` wins: no copy, random reports."""
    if os.environ.get("PARWATCH_MONITOR_PLANS_DIR"):
        return None
    copy = current_plan_copy(data_dir / "plans", year=year)
    os.environ["PARWATCH_MONITOR_PLANS_DIR"] = str(copy.parent)
    return copy


def run_demo(*, rate: float = 20.0, seed: int = 146) -> int:
    """The stack plus the synthetic feed, until SIGINT or SIGTERM."""
    from parwatch.supervisor import run_stack

    if rate <= 0:
        log.error("--rate must be above 0")
        return 2
    common = CommonSettings()
    data_dir = common.data_dir if "data_dir" in common.model_fields_set else common.data_dir / "demo"
    if common.database_url:
        log.warning("PARWATCH_DATABASE_URL is set: the demo's synthetic dossiers go into that database")
    feed = FeedPublisher(
        rate=rate, seed=seed, data_dir=data_dir.resolve(), calendar=load_calendar(common.calendar_overrides),
        plan_file=demo_plan(data_dir.resolve(), year=dt.datetime.now(VN_TZ).year),
    )
    return run_stack(data_dir=data_dir, companion=feed)
