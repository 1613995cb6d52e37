"""docs/contract/ holds what the code generates: the JSON Schemas, the AsyncAPI document, the ingest's OpenAPI."""

from __future__ import annotations

import json
from pathlib import Path

from parwatch.contract import DEFAULT_OUT, PUBLISHERS, differences, documents, subscriptions
from services.dossier_tracker.http_ingest import BATCH, PATH, STRUCTURED, SUBJECTS
from shared.events import ENVELOPES
from shared.streams import STREAMS


def test_the_committed_documents_are_what_the_code_generates() -> None:
    assert differences(DEFAULT_OUT) == [], "run `parwatch contract export` and commit docs/contract/"


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
