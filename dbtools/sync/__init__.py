"""Paged sync sessions: a paged source staged per scope, promoted when its last page arrived.

See docs/sync.md. :mod:`.source` defines what a source is; :mod:`.jsonl` and :mod:`.http` are the
two sources the package ships; :mod:`.session` runs a session against the job database.
"""
