"""The notifier's decisions: pure functions and frozen dataclasses.

No async, no I/O, no clock: ``now`` is always passed in. ``routing`` says who
should hear of an alert, ``escalation`` who else after how long, ``silence``
and ``quiet`` whether to hold it, ``dispatch`` what to send now (grouping,
repeats, resolved notices), ``digest`` what the weekly and monthly reports hold.
"""
