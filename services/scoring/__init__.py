"""scoring: the figures officials are judged by, per agency and period (rule 7, Decision 766, Plan 146)."""
