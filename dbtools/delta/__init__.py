"""The delta engine from Python: ``dbtools run``, ``resume``, ``status``, ``runs``, ``report``, ``sample``.

``runner`` (calls the operator procedure and reads back what a run did), ``runs`` (runs as operators
see them: one JSON schema), ``report`` (one HTML page per run) and ``sample`` (sample source,
metadata and target tables). Imports only the shared modules.
"""
