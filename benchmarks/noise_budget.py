"""Noise budget: what officials received during a run, and whether each alert was true.

Reads the data folder a stack left behind (``make demo`` for ten minutes,
then Ctrl-C: ``var/demo``) and prints:

* notices (e-mails, webhooks) per official: in all, after each one's first
  notice, and the most any official received in a sliding hour; alert items
  per official (a notice carries several);
* the dossier alerts firing at the end against the dossiers' state at the
  end, recomputed from dossier_tracker's database (the source of truth) with
  the monitor's conditions, one alert a dossier (the most severe condition it
  meets, as the monitor fires them): firing and not true (false alerts), true
  and not firing (missed);
* notified dossier alerts that were stale when sent: the notice went out
  after the tracker had recorded the event that ended the dossier (more than
  ``--slack`` seconds before).

    .venv/bin/python benchmarks/noise_budget.py var/demo
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import sqlite3
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.deadline_monitor.domain import (
    DOSSIER_KINDS,
    DossierFacts,
    Policy,
    dossier_conditions,
    horizons,
)
from shared.agencies import load_agencies
from shared.calendar import VN_TZ, load_calendar
from shared.events import END_STATUSES


def moment(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def notices(db: Path) -> list[tuple[str, dt.datetime, list[tuple[str, str, str]]]]:
    """(receiver, sent at, [(kind, state, alert key)]) of every notice, in the order sent."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT outbox_id, receiver_id, sent_at, kind, state, alert_key FROM notifier_log ORDER BY sent_at"
        ).fetchall()
    by_notice: dict[int, tuple[str, dt.datetime, list[tuple[str, str, str]]]] = {}
    for outbox_id, receiver, sent_at, kind, state, key in rows:
        by_notice.setdefault(outbox_id, (receiver, moment(sent_at), []))[2].append((kind, state, key))
    return sorted(by_notice.values(), key=lambda n: n[1])


def most_in_an_hour(times: list[dt.datetime]) -> int:
    best = 0
    for i, start in enumerate(times):
        best = max(best, bisect.bisect_left(times, start + dt.timedelta(hours=1)) - i)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--slack", type=float, default=5.0, help="seconds a notice may trail the ending event")
    args = parser.parse_args()
    data = args.data_dir

    sent = notices(data / "notifier.db")
    if not sent:
        print("no notice was sent")
        return 1
    start, end = sent[0][1], sent[-1][1]
    print(f"notices: {len(sent)} from {start:%H:%M:%S} to {end:%H:%M:%S} UTC ({(end - start).total_seconds() / 60:.1f} min)")
    times: dict[str, list[dt.datetime]] = defaultdict(list)
    items: Counter[str] = Counter()
    for receiver, at, entries in sent:
        times[receiver].append(at)
        items[receiver] += len(entries)
    after_first = {r: len(t) - 1 for r, t in times.items()}
    print(f"officials notified: {len(times)}; notices each: max {max(len(t) for t in times.values())}, "
          f"after the first: max {max(after_first.values())}, in any hour: max "
          f"{max(most_in_an_hour(t) for t in times.values())}")
    print(f"alert items each: max {max(items.values())}, median {sorted(items.values())[len(items) // 2]}")
    kinds = Counter((kind, state) for _, _, entries in sent for kind, state, _ in entries)
    print("items by kind: " + ", ".join(f"{k} {s} {n}" for (k, s), n in sorted(kinds.items())))

    # The state at the end, from the tracker, against what the monitor has firing.
    calendar = load_calendar()
    directory = load_agencies()
    with sqlite3.connect(data / "deadline_monitor.db") as conn:
        marks = ",".join("?" * len(DOSSIER_KINDS))
        firing = {key for (key,) in conn.execute(
            f"SELECT alert_key FROM monitor_alert WHERE state = 'firing' AND kind IN ({marks})", DOSSIER_KINDS)}
        (last_update,) = conn.execute("SELECT max(updated_at) FROM monitor_dossier").fetchone()
    today = moment(last_update).astimezone(VN_TZ).date()
    h = horizons(today, calendar=calendar, policy=Policy())
    true_now: set[str] = set()
    with sqlite3.connect(data / "dossier_tracker.db") as conn:
        for code, agency, proc, field, is_open, due, paused, pause_on, supplements in conn.execute(
            "SELECT dossier_code, agency_code, procedure_code, field_code, is_open, due_day, paused, "
            "pause_started_on, supplement_requests FROM tracker_dossier"
        ):
            if not directory.known(agency):
                continue
            facts = DossierFacts(
                dossier_code=code, agency_code=agency, procedure_code=proc, field_code=field, is_open=bool(is_open),
                due_day=dt.date.fromisoformat(due) if due else None, paused=bool(paused),
                pause_started_on=dt.date.fromisoformat(pause_on) if pause_on else None,
                supplement_requests=supplements,
            )
            held = dossier_conditions(facts, h)
            if held:  # one alert a dossier: the most severe condition it meets
                true_now.add(f"{max(held, key=DOSSIER_KINDS.index)}:{code}")
        ended: dict[str, dt.datetime] = {}
        for code, recorded in conn.execute(
            "SELECT dossier_code, min(recorded_at) FROM tracker_dossier_event WHERE status IN "
            f"({','.join(str(s) for s in sorted(END_STATUSES))}) GROUP BY 1"
        ):
            ended[code] = moment(recorded)
    false, missed = sorted(firing - true_now), sorted(true_now - firing)
    print(f"dossier alerts firing at the end ({today}): {len(firing)}; true by the tracker's state: "
          f"{len(firing & true_now)}; false: {len(false)}; missed: {len(missed)}")
    for key in false[:10]:
        print(f"  false: {key}")
    for key in missed[:10]:
        print(f"  missed: {key}")

    stale = []
    for receiver, at, entries in sent:
        for kind, state, key in entries:
            code = key.split(":", 1)[1]
            if state == "firing" and kind in DOSSIER_KINDS and code in ended and \
                    ended[code] < at - dt.timedelta(seconds=args.slack):
                stale.append((receiver, key, (at - ended[code]).total_seconds()))
    notified = sum(1 for _, _, e in sent for k, s, _ in e if s == "firing" and k in DOSSIER_KINDS)
    print(f"dossier alerts notified firing: {notified}; stale when sent (the dossier had ended): {len(stale)}")
    for receiver, key, late in stale[:10]:
        print(f"  stale: {key} to {receiver}, {late:.0f} s after the end was recorded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
