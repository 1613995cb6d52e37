"""The directory file: the shipped example loads; every mistake names file, line and field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.notifier.config import ConfigError, load_agency_names, load_directory, parse_directory
from services.notifier.settings import EXAMPLE_DIRECTORY, NotifierSettings

GOOD = """\
version: 1
agencies:
  - code: PTP
    officials:
      - id: ptp-desk
        name: Một cửa Phòng Tư pháp
        role: officer
        email: ptp.desk@example.invalid
routes:
  - name: default
    receivers: [officer]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_directory(text, source="dir.yaml")
    return info.value.problems


def test_the_shipped_example_covers_every_agency_with_role_mailboxes_only():
    directory = load_directory(EXAMPLE_DIRECTORY)
    _, _, names = load_agency_names()
    covered = {o.agency_code for o in directory.officials.values()}
    assert covered == set(names)  # the district and its 24 units
    for code in names:
        if code != directory.district_code:
            assert directory.officials_in(code, "officer") and directory.officials_in(code, "head"), code
    assert directory.leadership()
    assert all(o.email and o.email.endswith("@example.invalid") for o in directory.officials.values())
    assert directory.agency_name("PTP") == "Phòng Tư pháp"
    assert [r.name for r in directory.routes][-1] == "default"


def test_a_good_file_loads_with_names_from_agencies_yaml():
    d = parse_directory(GOOD)
    assert d.officials["ptp-desk"].agency_code == "PTP"
    assert d.agency_name("XA_VINH_TAN") == "Xã Vĩnh Tân"
    assert d.district_name == "Ủy ban nhân dân huyện Tuy Phong"


def test_unknown_agency_code_names_file_line_and_field():
    found = problems(GOOD.replace("code: PTP", "code: PHONG_TU_PHAP"))
    assert len(found) == 1
    assert found[0].startswith("dir.yaml:3: agencies[0].code: unknown agency code 'PHONG_TU_PHAP'")


def test_bad_role_and_bad_email_are_reported_together_with_their_lines():
    text = GOOD.replace("role: officer", "role: chief").replace("ptp.desk@example.invalid", "not-an-address")
    found = problems(text)
    assert any(p.startswith("dir.yaml:7: agencies[0].officials[0].role:") for p in found), found
    assert any(p.startswith("dir.yaml:8: agencies[0].officials[0].email:") and "e-mail" in p for p in found), found


def test_route_to_an_unknown_official_or_kind_is_refused():
    text = GOOD.replace("receivers: [officer]", "receivers: [officer, ptp-boss]\n    match: {kind: [dossier_overdu]}")
    found = problems(text)
    assert any("dir.yaml:11: routes[0].receivers[1]:" in p and "'ptp-boss'" in p for p in found), found
    assert any("routes[0].match.kind[0]: unknown alert kind 'dossier_overdu'" in p for p in found), found


def test_duplicate_official_ids_and_unknown_fields():
    dup = GOOD.replace("routes:", "      - {id: ptp-desk, name: X, role: head, email: a@example.invalid}\nroutes:")
    assert any("official id 'ptp-desk' is used twice" in p for p in problems(dup))
    extra = GOOD.replace("        role: officer", "        role: officer\n        phone: '0900000000'")
    found = problems(extra)
    assert found == ["dir.yaml:8: agencies[0].officials[0].phone: Extra inputs are not permitted"]


def test_plain_http_webhook_only_on_loopback():
    bad = GOOD.replace("email: ptp.desk@example.invalid", "webhook: http://chat.example.org/hook")
    assert any("officials[0].webhook" in p and "https" in p for p in problems(bad))
    ok = GOOD.replace("email: ptp.desk@example.invalid", "webhook: http://127.0.0.1:8080/hook")
    assert parse_directory(ok).officials["ptp-desk"].webhook == "http://127.0.0.1:8080/hook"


def test_bad_duration_and_yaml_syntax_and_missing_file(tmp_path: Path):
    found = problems(GOOD + "    group_wait: soon\n")
    assert any(p.startswith("dir.yaml:12: routes[0].group_wait:") for p in found), found
    found = problems(GOOD.replace("receivers: [officer]", "receivers: [officer"))
    assert len(found) == 1 and found[0].startswith("dir.yaml:") and "not valid YAML" in found[0]
    with pytest.raises(ConfigError, match="cannot read"):
        load_directory(tmp_path / "missing.yaml")


def test_settings_parse_durations_and_refuse_plain_smtp_to_a_remote_host(tmp_path: Path):
    s = NotifierSettings(group_wait="45s", repeat_interval="2d", group_interval=600)
    assert s.group_wait == dt.timedelta(seconds=45)
    assert s.repeat_interval == dt.timedelta(days=2)
    assert s.group_interval == dt.timedelta(minutes=10)
    assert s.port == 9104 and s.directory_path() == EXAMPLE_DIRECTORY
    with pytest.raises(ValidationError, match="loopback"):
        NotifierSettings(smtp_host="mail.example.org", smtp_security="none")
    NotifierSettings(smtp_host="127.0.0.1", smtp_security="none")
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    assert NotifierSettings(smtp_password_file=secret).smtp_password_value() == "s3cret"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PARWATCH_NOTIFIER_SMTP_HOST", "smtp.example.org")
    monkeypatch.setenv("PARWATCH_NOTIFIER_SMTP_PASSWORD", "pw")
    monkeypatch.setenv("PARWATCH_NOTIFIER_WEBHOOK_SECRETS", '{"tech": "k1"}')
    monkeypatch.setenv("PARWATCH_NOTIFIER_WEBHOOK_SECRET", "default-key")
    s = NotifierSettings()
    assert s.smtp_port_or_default() == 587
    assert s.smtp_password_value() == "pw"
    assert s.webhook_secret_for("tech") == b"k1"
    assert s.webhook_secret_for("other") == b"default-key"
    assert "pw" not in repr(s)


def test_delivery_backoff_doubles_up_to_the_cap():
    backoff = NotifierSettings().delivery_backoff()  # 10s, 15m: the relay's delay after a channel refused
    assert [backoff.delay(i) for i in (1, 2, 3, 4, 7, 20)] == [10, 20, 40, 80, 640, 900]
    assert NotifierSettings(retry_first_delay="1m", retry_max_delay="1h").delivery_backoff().delay(10) == 3600
    with pytest.raises(ValidationError, match="retry_max_delay"):
        NotifierSettings(retry_first_delay="1h", retry_max_delay="1m")
    with pytest.raises(ValidationError, match="retry_first_delay"):
        NotifierSettings(retry_first_delay=0)
