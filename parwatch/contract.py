"""The published contract, generated from the code: ``docs/contract/``.

    parwatch contract export [--out DIR]    write the documents (default docs/contract)
    parwatch contract export --check        exit 1 when the committed documents differ from the code

* ``schemas/<type>.json``: the JSON Schema of each event type, from the pydantic model
  the consumers validate with (``shared.events.ENVELOPES``, ``model_json_schema()``),
  its text patterns' Unicode categories (``\\p{Cc}``, which Python's ``re`` cannot read
  and JavaScript only with the ``u`` flag) spelled out as code points
  (:func:`portable_pattern`);
* ``asyncapi.json``: an AsyncAPI 3.0 document of every subject parwatch consumes and
  publishes. parwatch's consumers are not FastStream subscribers (``shared.consumer``
  subscribes with nats-py's push API, for the reasons given there), so FastStream
  cannot generate it; it is built here from the code instead: who consumes what is
  read from each service's ``handlers.register`` (run against a recorder), the
  subjects and streams from ``shared.streams``, and who publishes what from
  :data:`PUBLISHERS`, the one table kept by hand (a test holds it to the streams and
  the consumers);
* ``openapi-ingest.json``: the OpenAPI document of dossier_tracker's HTTP ingest
  (``POST /events``), as its FastAPI route declares it.

A test regenerates all of them and compares them with the committed files, so the
documents cannot drift from the code.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import re
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import events as ev
from shared import streams as st

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "contract"
SERVICES = ("dossier_tracker", "deadline_monitor", "scoring", "notifier")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: Who publishes on each subject (by hand: publishing has no registry in the code). Outside systems in words.
PUBLISHERS: dict[str, tuple[str, ...]] = {
    st.DOSSIER_EVENTS: ("one-stop-shop systems", "dossier_tracker (HTTP ingest, POST /events)", "parwatch import"),
    st.RATING_EVENTS: ("kiosks and portals", "dossier_tracker (HTTP ingest, POST /events)"),
    st.PLAN_EVENTS: ("agencies' officials or their tools", "dossier_tracker (HTTP ingest, POST /events)",
                     "deadline_monitor (the officials' web page, POST /plan/report)", "parwatch plan report"),
    st.ALERTS: ("deadline_monitor", "scoring"),
    st.DEADLETTER: ("dossier_tracker", "deadline_monitor", "scoring", "notifier"),
    st.DOSSIER_STATE: ("dossier_tracker",),
    st.PLAN_TASK_STATE: ("deadline_monitor",),
    st.ACCEPTED_RATINGS: ("dossier_tracker",),
    st.ACCEPTED_PLAN_REPORTS: ("dossier_tracker",),
}


@dataclass(frozen=True)
class Subscription:
    service: str
    subject: str
    types: frozenset[str]


class _Recorder:
    """Stands for :class:`shared.consumer.Consumers` while a service's ``handlers.register`` runs."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.found: list[Subscription] = []

    def batches(self, subject: str, *, durable: str, accept: type[ev.CloudEvent[Any]], in_flight: int = 1
                ) -> Callable[[Any], Any]:
        self.found.append(Subscription(self.service, subject, ev.types_of(accept)))
        return lambda handler: handler


class _AnyService:
    """Stands for a service layer: every attribute is a callable."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def subscriptions() -> list[Subscription]:
    """What each service consumes, as its ``handlers.register`` declares it."""
    found: list[Subscription] = []
    for service in SERVICES:
        module = importlib.import_module(f"services.{service}.handlers")
        recorder = _Recorder(service)
        module.register(recorder, _AnyService(), durable=service)
        found.extend(recorder.found)
    return found


def types_on(subject: str, subs: list[Subscription]) -> list[str]:
    """The event types a subject carries: those its consumers accept (every subject has a consumer; a test says
    so)."""
    return sorted({t for s in subs if s.subject == subject for t in s.types})


#: A negated character class of Unicode categories, as shared.events' text patterns write it: [^\p{Cc}\p{Cf}].
_CATEGORY_CLASS = re.compile(r"\[\^((?:\\p\{[A-Z][a-z]\})+)\]")
_LAST_BMP = 0xFFFF


@functools.cache
def _code_points(categories: frozenset[str]) -> tuple[int, ...]:
    return tuple(c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in categories)


def _ranges(points: tuple[int, ...]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in points:
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def portable_pattern(pattern: str) -> str:
    """``pattern`` with each negated class of Unicode categories (``[^\\p{Cc}\\p{Cf}]``) spelled out as the code
    points :mod:`unicodedata` gives those categories, so that Python's ``re`` (the ``jsonschema`` package) and
    ECMA-262 with or without the ``u`` flag read it alike: the Basic Multilingual Plane as ``\\uXXXX`` ranges of
    the class, each character beyond it (two UTF-16 units to JavaScript without ``u``) as itself in a negative
    lookahead before it."""

    def spell(match: re.Match[str]) -> str:
        points = _code_points(frozenset(re.findall(r"\\p\{(\w+)\}", match.group(1))))
        bmp = "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}"
                      for a, b in _ranges(tuple(c for c in points if c <= _LAST_BMP)))
        beyond = "|".join(chr(c) for c in points if c > _LAST_BMP)
        return f"(?:(?!{beyond})[^{bmp}])" if beyond else f"[^{bmp}]"

    return _CATEGORY_CLASS.sub(spell, pattern)


def _portable(node: Any) -> Any:
    """A JSON Schema with every ``pattern`` and ``patternProperties`` key made :func:`portable_pattern`."""
    if isinstance(node, dict):
        return {k: portable_pattern(v) if k == "pattern" and isinstance(v, str)
                else {portable_pattern(p): _portable(s) for p, s in v.items()} if k == "patternProperties"
                else _portable(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_portable(v) for v in node]
    return node


def schema_of(event_type: str) -> dict[str, Any]:
    schema = _portable(ev.ENVELOPES[event_type].model_json_schema())
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"{event_type}.json", **schema,
            "description": f"CloudEvent {event_type} in structured JSON mode, as parwatch validates it "
                           "(shared/events.py; rules a schema cannot say, such as subject = data.dossier_code or "
                           "received_at with status 2, are in ../../../shared/contract.md and the README). Free "
                           "text refuses Unicode's control, format and line and paragraph separator characters "
                           "(Cc, Cf, Zl, Zp): the patterns list them as code points, of Unicode "
                           f"{unicodedata.unidata_version}, so that any ECMA-262 or Python regular expression engine "
                           "reads them."}


def _channel_id(subject: str) -> str:
    return subject.replace(".", "_")


def asyncapi() -> dict[str, Any]:
    subs = subscriptions()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in st.STREAMS:
        for subject in spec.subjects:
            cid = _channel_id(subject)
            types = types_on(subject, subs)
            for t in types:
                messages[t.replace(".", "_")] = {
                    "name": t,
                    "title": t,
                    "contentType": ev.CONTENT_TYPE,
                    "headers": {"type": "object", "properties": {
                        "Content-Type": {"const": ev.CONTENT_TYPE},
                        "Nats-Msg-Id": {"type": "string", "description": "broker-side dedup: the event id, or a "
                                        "digest of (type, source, id) where many sources share a stream"}}},
                    "payload": {"$ref": f"schemas/{t}.json"},
                }
            channels[cid] = {
                "address": subject,
                "description": f"JetStream stream {spec.name}: {spec.description}",
                "messages": {t.replace(".", "_"): {"$ref": f"#/components/messages/{t.replace('.', '_')}"}
                             for t in types},
            }
            for publisher in PUBLISHERS.get(subject, ()):
                operations[f"{_slug(publisher)}_sends_{cid}"] = {
                    "action": "send",
                    "channel": {"$ref": f"#/channels/{cid}"},
                    "summary": f"{publisher} publishes on {subject} (JetStream publish, acked)",
                }
            for s in subs:
                if s.subject == subject:
                    operations[f"{s.service}_receives_{cid}"] = {
                        "action": "receive",
                        "channel": {"$ref": f"#/channels/{cid}"},
                        "summary": f"{s.service} consumes {subject} (durable JetStream consumer)",
                        "messages": [{"$ref": f"#/channels/{cid}/messages/{t.replace('.', '_')}"}
                                     for t in sorted(s.types)],
                    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "parwatch event contract",
            "version": "1",
            "description": "Every subject parwatch consumes and publishes on NATS JetStream. Generated by "
                           "`parwatch contract export` from the code (parwatch/contract.py); the contract in words "
                           "is ../shared/contract.md.",
        },
        "defaultContentType": ev.CONTENT_TYPE,
        "servers": {"embedded": {"host": "127.0.0.1:14222", "protocol": "nats",
                                 "description": "the nats-server `make run` starts (PARWATCH_NATS_URL: another)"}},
        "channels": channels,
        "operations": dict(sorted(operations.items())),
        "components": {"messages": dict(sorted(messages.items()))},
    }


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text.split(" (")[0]).strip("_")


def ingest_openapi() -> dict[str, Any]:
    from fastapi import FastAPI

    from services.dossier_tracker.http_ingest import IngestLimits, SourceLimits, ingest_router

    app = FastAPI(title="parwatch dossier_tracker: HTTP ingest", version="1",
                  description="CloudEvents over HTTP (structured, binary and batch modes) for systems that cannot "
                              "speak NATS; the tracker serves the same document at /openapi.json with its other "
                              "routes. README: 'Publishing over HTTP'.")
    app.include_router(ingest_router(source_of=lambda key: None, limits=IngestLimits(max_batch=1, max_batch_bytes=1),
                                     rates=SourceLimits(rate=1, burst=1), jetstream=lambda: None))  # type: ignore
    return app.openapi()


def documents() -> dict[str, str]:
    """Every document, by path under the output folder, as the text to write."""
    docs = {f"schemas/{t}.json": schema_of(t) for t in sorted(ev.ENVELOPES)}
    docs["asyncapi.json"] = asyncapi()
    docs["openapi-ingest.json"] = ingest_openapi()
    return {path: _escape_invisible(json.dumps(doc, indent=2, ensure_ascii=False)) + "\n" for path, doc in docs.items()}


def _escape_invisible(text: str) -> str:
    """JSON text with the characters no one could see or tell apart (a pattern lists them) as ``\\u`` escapes."""
    return "".join(json.dumps(c)[1:-1] if c > "\x7e" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")
                   else c for c in text)


def differences(out: Path) -> list[str]:
    """Paths under ``out`` that differ from what the code generates, or are missing or extra."""
    wanted = documents()
    have = {p.relative_to(out).as_posix() for p in out.rglob("*.json")} if out.is_dir() else set()
    changed = [p for p, text in wanted.items() if p not in have or (out / p).read_text(encoding="utf-8") != text]
    return sorted(changed + [p for p in have - set(wanted)])


def export(out: Path) -> list[str]:
    written = []
    for path, text in documents().items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    contract = sub.add_parser("contract", help="the published contract documents (AsyncAPI, JSON Schemas, OpenAPI)")
    csub = contract.add_subparsers(dest="contract_command", metavar="COMMAND", required=True)
    exp = csub.add_parser("export", help="write docs/contract/ from the code (or check it with --check)")
    exp.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default docs/contract)")
    exp.add_argument("--check", action="store_true", help="write nothing; exit 1 if a document differs")
    exp.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    if args.check:
        stale = differences(args.out)
        for path in stale:
            print(f"differs from the code: {args.out / path}", file=sys.stderr)
        if stale:
            print("run `parwatch contract export` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in export(args.out):
        print(f"wrote {args.out / path}")
    return 0
