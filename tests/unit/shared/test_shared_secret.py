"""shared.secret.load_secret: a kept secret is made once, whole, owner-only; an unusable one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.secret import load_secret


def test_a_secret_is_made_once_whole_and_owner_only(tmp_path: Path) -> None:
    first = load_secret(None, tmp_path, name="s")
    assert len(first) >= 32 and load_secret(None, tmp_path, name="s") == first
    assert (tmp_path / "s").stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # nothing left aside
    assert load_secret(b"configured", tmp_path, name="s") == b"configured"


@pytest.mark.parametrize("kept", ["", "\n", "short"])
def test_an_empty_or_partial_kept_secret_is_refused_not_signed_with(tmp_path: Path, kept: str) -> None:
    # What a crash between creating the file and writing it left, or a process reading it while another wrote it:
    # signing with an empty key would let anyone make a valid session or link.
    (tmp_path / "s").write_text(kept, encoding="utf-8")
    with pytest.raises(ValueError, match="no usable secret"):
        load_secret(None, tmp_path, name="s")
