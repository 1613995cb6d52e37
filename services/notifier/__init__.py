"""notifier: the right official hears about an alert, once, in Vietnamese.

Consumes ``tthc.alerts`` (contract: Alerts), routes each alert to officials
from a directory file, groups, deduplicates, silences, escalates, and delivers
over SMTP, webhooks or the log. See ``docs/notifier.md``.
"""
