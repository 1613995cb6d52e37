"""parwatch keys add|list|revoke on the tracker's database (a SQLite file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from parwatch.cli import main
from services.dossier_tracker.api_keys import KeyChecker, KeyStore
from shared.db import make_engine


def test_a_key_is_shown_once_bound_to_its_source_and_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    monkeypatch.setenv("PARWATCH_DATABASE_URL", url)
    assert main(["keys", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no API keys"
    assert main(["keys", "add", "--source", "motcua.tuyphong"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    key_id = key.removeprefix("pwk_").split(".")[0]
    assert key.startswith("pwk_") and "shown this once" in out.err

    engine = make_engine(url)
    checker = KeyChecker(KeyStore(engine))
    assert checker.source_of(key) == "motcua.tuyphong"
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "motcua.tuyphong" in listed and "valid" in listed
    assert key.split(".")[1] not in listed

    assert main(["keys", "revoke", key_id]) == 0
    assert checker.source_of(key) is None
    assert main(["keys", "revoke", key_id]) == 1
    assert main(["keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "add", "--source", "tab\tin it"]) == 2
    engine.dispose()
