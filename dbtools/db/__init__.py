"""Shared: reaching the databases.

``engines`` (where the job database lives on each engine, and how names are spelt there),
``environments`` (which server a name like ``dev`` means, connections, one-line connection errors)
and ``procs`` (calling the package's procedures the same way on both engines). Used by every
concern; imports none of them.
"""
