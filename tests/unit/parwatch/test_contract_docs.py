"""docs/contract/ holds what the code generates: the JSON Schemas, the AsyncAPI document, the ingest's OpenAPI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import StringConstraints, TypeAdapter

from parwatch.contract import DEFAULT_OUT, PUBLISHERS, differences, documents, subscriptions
from parwatch.importer import convert_file, load_mapping
from services.dossier_tracker.http_ingest import BATCH, PATH, STRUCTURED, SUBJECTS
from shared.events import DOSSIER_TYPE, ENVELOPES, NOTE_PATTERN, TEXT_PATTERN, EventRejected, encode, parse_event
from shared.streams import STREAMS

REPO = Path(__file__).resolve().parents[3]
REFUSED = frozenset({"Cc", "Cf", "Zl", "Zp"})


def test_the_committed_documents_are_what_the_code_generates() -> None:
    stale = differences(DEFAULT_OUT)
    listed = re.search(r"code points, of Unicode ([0-9.]+),", published(DOSSIER_TYPE)["description"])
    if listed is not None and listed[1] != unicodedata.unidata_version:  # the schemas list another version's
        assert [p for p in stale if not p.startswith("schemas/")] == []
        pytest.skip(f"docs/contract/schemas list Unicode {listed[1]}'s code points and this Python's unicodedata "
                    f"is Unicode {unicodedata.unidata_version}: the schemas are compared on a Python of the same")
    assert stale == [], "run `parwatch contract export` and commit docs/contract/"


def test_a_changed_or_extra_document_is_found(tmp_path: Path) -> None:
    for path, text in documents().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    assert differences(tmp_path) == []
    schema = tmp_path / "schemas" / "vn.tthc.dossier.status_changed.json"
    schema.write_text(schema.read_text(encoding="utf-8").replace('"status"', '"state"'), encoding="utf-8")
    (tmp_path / "schemas" / "vn.tthc.old.json").write_text("{}", encoding="utf-8")
    assert differences(tmp_path) == ["schemas/vn.tthc.dossier.status_changed.json", "schemas/vn.tthc.old.json"]


def test_every_subject_has_publishers_consumers_and_types() -> None:
    subjects = {s for spec in STREAMS for s in spec.subjects}
    assert set(PUBLISHERS) == subjects
    subs = subscriptions()
    assert {s.subject for s in subs} == subjects
    doc = json.loads(documents()["asyncapi.json"])
    assert {c["address"] for c in doc["channels"].values()} == subjects
    for name, channel in doc["channels"].items():
        assert channel["messages"], name
    # The HTTP door publishes each type on the subject its consumer takes it from.
    for event_type, subject in SUBJECTS.items():
        assert any(s.subject == subject and event_type in s.types for s in subs)
    receivers = {(op["channel"]["$ref"], op["summary"].split()[0]) for op in doc["operations"].values()
                 if op["action"] == "receive"}
    assert ("#/channels/tthc_dossier_events", "dossier_tracker") in receivers
    assert ("#/channels/tthc_alerts", "notifier") in receivers


def test_each_event_type_has_its_schema_and_the_ingest_its_three_modes() -> None:
    docs = documents()
    for event_type, model in ENVELOPES.items():
        schema = json.loads(docs[f"schemas/{event_type}.json"])
        assert set(schema["properties"]) == set(model.model_fields)
        assert schema["additionalProperties"] is False
    openapi = json.loads(docs["openapi-ingest.json"])
    post = openapi["paths"][PATH]["post"]
    assert {STRUCTURED, BATCH, "application/json"} <= set(post["requestBody"]["content"])
    assert {"202", "400", "401", "403", "413", "429"} <= set(post["responses"])


def test_the_tracker_serves_the_published_ingest_operation(tmp_path: Path) -> None:
    from services.dossier_tracker.app import create_app
    from services.dossier_tracker.settings import TrackerSettings
    from shared.settings import CommonSettings

    common = CommonSettings(nats_url="nats://127.0.0.1:1", database_url=f"sqlite:///{tmp_path / 'tracker.db'}")
    _, app = create_app(common, TrackerSettings())  # nothing connects before start
    served = app.openapi()
    published = json.loads((DEFAULT_OUT / "openapi-ingest.json").read_text(encoding="utf-8"))
    assert served["paths"][PATH] == published["paths"][PATH]
    for name in ("IngestAnswer", "EventOutcome"):
        assert served["components"]["schemas"][name] == published["components"]["schemas"][name]


def test_the_openapi_documents_are_valid_openapi() -> None:
    """The published ingest document and the tracker's whole /openapi.json pass openapi-spec-validator (AsyncAPI
    has no maintained Python validator: asyncapi.json is held to the code by the tests above)."""
    validator = pytest.importorskip("openapi_spec_validator",
                                    reason="openapi-spec-validator is a test dependency: pip install -e '.[test]'")
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    from services.dossier_tracker.app import create_app
    from services.dossier_tracker.settings import TrackerSettings
    from shared.settings import CommonSettings

    published = json.loads((DEFAULT_OUT / "openapi-ingest.json").read_text(encoding="utf-8"))
    validator.validate(published)
    common = CommonSettings(nats_url="nats://127.0.0.1:1", database_url="sqlite://")
    validator.validate(create_app(common, TrackerSettings())[1].openapi())
    published["paths"][PATH]["post"]["responses"]["413"].pop("description")  # the validator does refuse
    with pytest.raises(OpenAPIValidationError):
        validator.validate(published)


def published(event_type: str) -> dict[str, Any]:
    return json.loads((DEFAULT_OUT / "schemas" / f"{event_type}.json").read_text(encoding="utf-8"))


def patterns(node: Any) -> set[str]:
    """Every regular expression of a schema: ``pattern`` values and ``patternProperties`` keys."""
    if isinstance(node, dict):
        return set().union(*(patterns(v) for v in node.values()),
                           {node["pattern"]} if isinstance(node.get("pattern"), str) else set(),
                           set(node.get("patternProperties", {})))
    if isinstance(node, list):
        return set().union(*(patterns(v) for v in node))
    return set()


def test_the_published_patterns_name_no_unicode_category_and_python_reads_each_code_point_as_parwatch() -> None:
    """Python's re (what the jsonschema package uses) cannot read \\p{Cc}; the published patterns list code points.
    Every code point this Python's unicodedata assigns is refused by the published text pattern exactly when the
    model's own pattern (pydantic's regex engine) refuses it; a note also keeps tab and line breaks."""
    found = set().union(*(patterns(published(t)) for t in ENVELOPES))
    assert found and not any("\\p{" in p for p in found)
    text = {p for p in found if p.startswith("^(?:(?!")}
    note = {p for p in found if p.startswith("^(?:(?:(?!")}
    assert len(text) == 1 and len(note) == 1, sorted(p[:40] for p in found)
    published_text, published_note = re.compile(text.pop()), re.compile(note.pop())
    model_text = TypeAdapter(Annotated[str, StringConstraints(pattern=TEXT_PATTERN)])
    model_note = TypeAdapter(Annotated[str, StringConstraints(pattern=NOTE_PATTERN)])
    assigned = "".join(chr(c) for c in range(sys.maxunicode + 1)
                       if unicodedata.category(chr(c)) not in ("Cn", "Cs"))  # Unicode versions differ on the rest
    refused = "".join(c for c in assigned if unicodedata.category(c) in REFUSED)
    for pattern, model, kept in ((published_text, model_text, ""), (published_note, model_note, "\t\n\r")):
        allowed = "".join(c for c in assigned if c not in refused or c in kept)
        assert pattern.fullmatch(allowed)
        model.validate_python(allowed)
        for c in refused:
            if c in kept:
                continue
            assert not pattern.fullmatch(f"a{c}b"), hex(ord(c))
            with pytest.raises(ValueError):
                model.validate_python(f"a{c}b")


@pytest.mark.skipif(shutil.which("node") is None, reason="no node on this machine to read the patterns as JavaScript")
def test_javascript_reads_the_published_patterns_alike_with_and_without_the_u_flag() -> None:
    found = sorted(set().union(*(patterns(published(t)) for t in ENVELOPES)))
    samples = ["Hồ sơ 12 của Phòng Tư pháp 📄", "flag 🏴", "a\u0007b", "a\u202eb", "a\u2028b", "a\U000e0001b",
               "a\U000e0067b", "\U000110bd", "a\tb", "𝄞 music", "\U0001d173"]
    script = ("const [patterns, samples] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(patterns.map(p => ['', 'u'].map(f => samples.map("
              "s => new RegExp(p, f).test(s))))));")
    out = subprocess.run(["node", "-e", script], input=json.dumps([found, samples]), capture_output=True,
                         text=True, check=True, timeout=60).stdout
    for pattern, (plain, unicode) in zip(found, json.loads(out), strict=True):
        python = [re.search(pattern, s) is not None for s in samples]
        assert plain == unicode == python, pattern[:60]


def test_python_jsonschema_takes_every_event_parwatch_takes_and_refuses_controls_and_unknown_fields() -> None:
    """The published schemas read by the jsonschema package (Draft 2020-12), as a publisher in Python would: every
    event `parwatch import` makes of the shipped sample and the README's curl example pass; an event with a control
    or format character, or a field the contract does not know, is refused by the schema and by parwatch."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test dependency: pip install -e '.[test]'")
    validators = {}
    for event_type in ENVELOPES:
        schema = published(event_type)
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[event_type] = jsonschema.Draft202012Validator(schema)
    dossier = validators[DOSSIER_TYPE]

    good, _ = convert_file(REPO / "docs" / "import" / "sample-export-motcua.csv",
                           load_mapping(REPO / "docs" / "import" / "mapping-motcua.yaml"), source="motcua.tuyphong")
    events = [json.loads(encode(e)) for _, made in good for e in made]
    curl = re.search(r"-d '(\{.*?\})'\n", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    assert curl is not None, "the README's curl example"
    events.append(json.loads(curl.group(1)))
    assert len(events) > 300
    for event in events:
        parse_event(json.dumps(event))
        assert [e.message for e in dossier.iter_errors(event)] == []
    vietnamese = dict(events[-1], id="Hồ sơ nộp trực tuyến 📄 #1")
    parse_event(json.dumps(vietnamese))
    assert dossier.is_valid(vietnamese)

    base = events[0]
    refused = {
        "a bell in the subject": dict(base, subject=base["subject"] + "\u0007"),
        "a right-to-left override in the source": dict(base, source="motcua\u202e.tuyphong"),
        "a line separator in the id": dict(base, id="H\u2028x"),
        "a language tag (beyond the BMP) in the id": dict(base, id="H\U000e0001x"),
        "an unknown attribute": dict(base, priority="high"),
        "an unknown data field": dict(base, data=dict(base["data"], citizen_name="Trần Thị B")),
    }
    for case, event in refused.items():
        with pytest.raises(EventRejected):
            parse_event(json.dumps(event))
        assert not dossier.is_valid(event), case
