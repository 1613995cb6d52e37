"""Inhibition: a firing alert mutes others that share its cause (Alertmanager's ``inhibit_rules``).

A rule has ``source_matchers``, ``target_matchers`` and ``equal``: while an
alert matching every source matcher fires, an alert matching every target
matcher, with the same value of each ``equal`` label (a label missing on
both counts as the same), is *inhibited*: not notified, not reminded, not
escalated. An alert never inhibits itself. When the source resolves, a
target still firing is notified again as usual (its first notice, or a
reminder when one is due).

The labels matched are the alert's own labels, over which the notifier sets
``kind``, ``severity``, ``agency`` (agency code), ``ref`` and ``scope``
(``district`` for the district's own code, else ``agency``). Matchers are
Alertmanager's: ``name="value"``, ``name!="value"``, ``name=~"regex"``,
``name!~"regex"`` (regexes anchored at both ends).

One addition to Alertmanager: ``receivers`` (roles or official ids) limits a
rule to those receivers; the others still hear of the target. The district's
KPI rule uses it: the district leadership hears of the district's figure, not
of each commune's same figure again, while each commune's head still does.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.notifier.domain.model import AlertRecord, Official

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s]*))\s*$')


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        found = re.fullmatch(self.value, got) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matcher(text: str) -> Matcher:
    """``kind="dossier_overdue"`` -> a :class:`Matcher`; a ValueError names what is wrong."""
    m = _MATCHER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a matcher; write e.g. kind=\"dossier_overdue\" (ops: = != =~ !~)")
    name, op, quoted, bare = m.groups()
    value = quoted.replace('\\"', '"') if quoted is not None else bare
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: not a regular expression ({exc})") from None
    return Matcher(name, op, value)


@dataclass(frozen=True)
class InhibitRule:
    name: str
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()
    receivers: frozenset[str] = frozenset()  # roles or official ids; empty: every receiver

    def applies_to(self, official: Official | None) -> bool:
        if not self.receivers:
            return True
        return official is not None and (official.id in self.receivers or official.role in self.receivers)


def _rule(name: str, source: list[str], target: list[str], equal: list[str], receivers: Iterable[str] = ()) -> InhibitRule:
    return InhibitRule(name=name, source=tuple(parse_matcher(m) for m in source),
                       target=tuple(parse_matcher(m) for m in target), equal=tuple(equal),
                       receivers=frozenset(receivers))


#: Used when the directory file has no ``inhibit_rules`` key (``inhibit_rules: []`` turns inhibition off).
DEFAULT_INHIBIT_RULES: tuple[InhibitRule, ...] = (
    # An overdue dossier: the due-soon and apology-due notices of the same dossier say nothing more.
    _rule("dossier-overdue", ['kind="dossier_overdue"'], ['kind=~"dossier_due_soon|dossier_apology_due"'],
          ["ref", "agency"]),
    # The district's own KPI below target: its leadership does not hear the same KPI again per commune.
    _rule("district-kpi", ['kind="kpi_below_target"', 'scope="district"'],
          ['kind="kpi_below_target"', 'scope="agency"'], ["kpi", "period"], ["district_leadership"]),
)


def alert_labels(alert: AlertRecord, *, district_code: str) -> dict[str, str]:
    """What matchers see of an alert: its labels, with the notifier's own names over them."""
    return {**alert.labels, "kind": alert.kind, "severity": alert.severity, "agency": alert.agency_code,
            "ref": alert.ref, "scope": "district" if alert.agency_code == district_code else "agency"}


@dataclass(frozen=True)
class Inhibition:
    rule: str
    source_key: str


@dataclass
class Inhibitor:
    """The firing sources of every rule at one moment, indexed by their ``equal`` values, for quick checks."""

    rules: tuple[InhibitRule, ...]
    district_code: str
    _sources: dict[int, dict[tuple[str, ...], list[str]]] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: Iterable[InhibitRule], alerts: Iterable[AlertRecord], *, district_code: str) -> Inhibitor:
        inhibitor = cls(tuple(rules), district_code)
        if not inhibitor.rules:
            return inhibitor
        for alert in alerts:
            if not alert.firing:
                continue
            labels = alert_labels(alert, district_code=district_code)
            for i, rule in enumerate(inhibitor.rules):
                if all(m.matches(labels) for m in rule.source):
                    index = inhibitor._sources.setdefault(i, defaultdict(list))
                    index[tuple(labels.get(n, "") for n in rule.equal)].append(alert.alert_key)
        return inhibitor

    def inhibits(self, alert: AlertRecord, official: Official | None) -> Inhibition | None:
        """The rule and source that inhibit ``alert`` for ``official`` now, or None."""
        if not self._sources:
            return None
        labels = alert_labels(alert, district_code=self.district_code)
        for i, rule in enumerate(self.rules):
            index = self._sources.get(i)
            if not index or not rule.applies_to(official) or not all(m.matches(labels) for m in rule.target):
                continue
            for key in index.get(tuple(labels.get(n, "") for n in rule.equal), ()):
                if key != alert.alert_key:
                    return Inhibition(rule.name, key)
        return None
