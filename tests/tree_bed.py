"""Change a FileTable-shaped source as users do, and compare the engine's target with it.

:class:`Tree` works on one configured table of a :class:`tests.delta_bed.DeltaBed`, on either
engine. Every change writes the source the way a FileTable changes (a move rewrites the path of
the blob and of its whole subtree in one statement; a deletion removes a subtree in one
statement) and stamps the metadata ModifiedOn of the blob that changed, and of that blob only:
the descendants of a moved folder keep theirs, as in a FileTable. A deletion is recorded in
``BlobDeltaDeletionLog`` as the caller of the package must do it (README, "Deletions").

Paths are never reused: a moved or new blob gets a path number no blob ever had.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime

from dbtools.delta.sample import METADATA_DB, SOURCE_DB, TARGET_DB

from .delta_bed import DeltaBed

COLUMNS = ("stream_id", "name", "file_stream", "path_locator", "parent_path_locator", "is_directory",
           "creation_time", "last_write_time")


def upper(path: str) -> str:
    """The end of a subtree's range in binary ("C") order: '/1/3/' -> '/1/30'."""
    return path[:-1] + "0"


class Tree:
    def __init__(self, bed: DeltaBed, table: str):
        self.bed = bed
        self.table = table
        self.name = table.rsplit(".", 1)[1]
        self.source = bed.table(SOURCE_DB, self.name)
        self.target = bed.table(TARGET_DB, self.name)
        self.metadata = bed.table(METADATA_DB, self.name)
        self._numbers = itertools.count(7000)

    # ------------------------------------------------------------------ plumbing
    @property
    def mssql(self) -> bool:
        return self.bed.info.name == "mssql"

    def _path_value(self, mark: str) -> str:
        return f"hierarchyid::Parse({mark})" if self.mssql else mark

    def _content_value(self, mark: str) -> str:
        """A file_stream value: typed as varbinary on SQL Server, where a NULL could be described as varchar."""
        return f"CONVERT(varbinary(max), {mark})" if self.mssql else mark

    def _id(self, value: uuid.UUID):
        return str(value) if self.mssql else value

    def _under(self, alias: str, mark_path: str, mark_upper: str, inclusive: bool = True) -> str:
        """Rows of ``alias`` at or under the path bound to ``mark_path`` (the upper bound on PostgreSQL)."""
        if self.mssql:
            cond = f"{alias}.path_locator.IsDescendantOf(hierarchyid::Parse({mark_path})) = 1"
            return cond if inclusive else cond + f" AND {alias}.path_locator <> hierarchyid::Parse({mark_path})"
        low = ">=" if inclusive else ">"
        return (f"{alias}.path_locator COLLATE \"C\" {low} {mark_path} COLLATE \"C\" "
                f"AND {alias}.path_locator COLLATE \"C\" < {mark_upper} COLLATE \"C\"")

    def rows(self, which: str) -> set[tuple]:
        """Every row of the source or the target, whole (paths in string form, content as bytes)."""
        table = self.source if which == "source" else self.target
        columns = ", ".join(
            f"{c}.ToString() AS {c}" if self.mssql and c.endswith("path_locator") else c for c in COLUMNS)
        result = set()
        for r in self.bed.sql(f"SELECT {columns} FROM {table}"):
            result.add((uuid.UUID(str(r[0])), r[1], None if r[2] is None else bytes(r[2]), r[3], r[4], bool(r[5]),
                        r[6], r[7]))
        return result

    def path_of(self, stream_id: uuid.UUID) -> str:
        column = "path_locator.ToString()" if self.mssql else "path_locator"
        return self.bed.sql(f"SELECT {column} FROM {self.source} WHERE stream_id = {self.bed.mark('i')}",
                            self.bed.params(i=stream_id))[0][0]

    def unit_of(self, stream_id: uuid.UUID) -> uuid.UUID:
        q = self.bed.info.quote
        return uuid.UUID(str(self.bed.sql(
            f"SELECT {q('OwningBusinessUnit')} FROM {self.metadata} WHERE stream_id = {self.bed.mark('i')}",
            self.bed.params(i=stream_id))[0][0]))

    def stamp(self, stream_id: uuid.UUID, at: datetime) -> None:
        q = self.bed.info.quote
        self.bed.sql(f"UPDATE {self.metadata} SET {q('ModifiedOn')} = {self.bed.mark('m')} "
                     f"WHERE stream_id = {self.bed.mark('i')}", self.bed.params(m=at, i=stream_id))

    def new_path(self, parent: str | None) -> str:
        return f"{parent or '/'}{next(self._numbers)}/"

    # ------------------------------------------------------------------ changes
    def rename(self, stream_id: uuid.UUID, name: str, at: datetime) -> None:
        self.bed.sql(f"UPDATE {self.source} SET name = {self.bed.mark('n')} WHERE stream_id = {self.bed.mark('i')}",
                     self.bed.params(n=name, i=stream_id))
        self.stamp(stream_id, at)

    def rewrite(self, stream_id: uuid.UUID, content: bytes, at: datetime) -> None:
        self.bed.sql(f"UPDATE {self.source} SET file_stream = {self.bed.mark('c')}, last_write_time = {self.bed.mark('w')} "
                     f"WHERE stream_id = {self.bed.mark('i')}", self.bed.params(c=content, w=at, i=stream_id))
        self.stamp(stream_id, at)

    def move(self, stream_id: uuid.UUID, new_parent: str | None, at: datetime) -> str:
        """Move a blob (and its subtree, in one statement) under ``new_parent`` (None: to the top)."""
        old = self.path_of(stream_id)
        new = self.new_path(new_parent)
        m = self.bed.mark
        if self.mssql:
            self.bed.sql(f"UPDATE {self.source} SET path_locator = path_locator.GetReparentedValue("
                         f"hierarchyid::Parse(?), hierarchyid::Parse(?)) "
                         f"WHERE path_locator.IsDescendantOf(hierarchyid::Parse(?)) = 1", (old, new, old))
        else:
            self.bed.sql(f"UPDATE {self.source} AS s SET path_locator = {m('new')} || substr(s.path_locator, length({m('old')}) + 1) "
                         f"WHERE {self._under('s', m('old'), m('up'))}", {"new": new, "old": old, "up": upper(old)})
        self.stamp(stream_id, at)
        return new

    def create(self, parent: str | None, name: str, *, directory: bool, at: datetime, unit: uuid.UUID,
               content: bytes | None = None) -> uuid.UUID:
        stream_id = uuid.uuid4()
        path = self.new_path(parent)
        m = self.bed.mark
        self.bed.sql(f"INSERT INTO {self.source} (stream_id, name, file_stream, path_locator, is_directory, "
                     f"creation_time, last_write_time) VALUES ({m('i')}, {m('n')}, {self._content_value(m('c'))}, {self._path_value(m('p'))}, "
                     f"{m('d')}, {m('t')}, {m('w')})",
                     self.bed.params(i=stream_id, n=name, c=None if directory else (content or b"new"), p=path,
                                     d=directory, t=at, w=at))
        q = self.bed.info.quote
        self.bed.sql(f"INSERT INTO {self.metadata} (stream_id, {q('ModifiedOn')}, {q('OwningBusinessUnit')}) "
                     f"VALUES ({m('i')}, {m('m')}, {m('u')})", self.bed.params(i=stream_id, m=at, u=unit))
        return stream_id

    def delete(self, stream_id: uuid.UUID, at: datetime, *, log: str = "each") -> list[uuid.UUID]:
        """Delete a blob and its subtree from the source and its metadata; record the deletion.

        ``log``: ``each`` records every deleted blob (as a trigger would), ``top`` only the blob
        named (the engine takes its subtree with it), ``none`` nothing.
        """
        path = self.path_of(stream_id)
        m = self.bed.mark
        under = self._under("s", m("p"), m("up"))
        params = {"p": path, "up": upper(path)} if not self.mssql else (path,)
        gone = [uuid.UUID(str(r[0])) for r in self.bed.sql(f"SELECT s.stream_id FROM {self.source} AS s WHERE {under}", params)]
        units = {g: self.unit_of(g) for g in gone}
        self.bed.sql(f"DELETE FROM {self.source} WHERE stream_id IN (SELECT s.stream_id FROM {self.source} AS s WHERE {under})"
                     if not self.mssql else
                     f"DELETE s FROM {self.source} AS s WHERE {under}", params)
        for g in gone:
            self.bed.sql(f"DELETE FROM {self.metadata} WHERE stream_id = {m('i')}", self.bed.params(i=g))
        logged = {"each": gone, "top": [stream_id], "none": []}[log]
        for g in logged:
            self.log_deletion(g, at, units[g])
        return gone

    def log_deletion(self, stream_id: uuid.UUID, at: datetime, unit: uuid.UUID | None) -> None:
        q, m = self.bed.info.quote, self.bed.mark
        self.bed.sql(f"INSERT INTO {self.bed.info.job_object('BlobDeltaDeletionLog')} "
                     f"({q('TableName')}, stream_id, {q('BusinessUnit')}, {q('DeletedAt')}, {q('Source')}) "
                     f"VALUES ({m('t')}, {m('i')}, {m('u')}, {m('d')}, {m('s')})",
                     self.bed.params(t=self.table, i=stream_id, u=unit, d=at, s="tests"))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict:
        """What a run of this table changes: its target rows, recorded versions, deletion log marks
        and watermark (the source and metadata are never written by a run)."""
        q, t = self.bed.info.quote, self.bed.info.job_object
        m = self.bed.mark
        version_columns = ("TableName", "stream_id", "ModifiedOn", "BusinessUnit", "RunId", "CopiedAt")
        return {
            "target": sorted(self.rows("target"), key=lambda r: r[3].count("/")),
            "versions": self.bed.sql(f"SELECT {', '.join(q(c) for c in version_columns)} FROM {t('BlobDeltaTargetVersion')} "
                                     f"WHERE {q('TableName')} = {m('t')}", self.bed.params(t=self.table)),
            "log": self.bed.sql(f"SELECT {q('DeletionId')}, {q('AppliedAt')}, {q('RunId')} FROM {t('BlobDeltaDeletionLog')} "
                                f"WHERE {q('TableName')} = {m('t')}", self.bed.params(t=self.table)),
            "watermark": self.bed.sql(f"SELECT {q('LastHighWaterModifiedOn')}, {q('LastRunId')}, {q('LastRunCompletedAt')}, "
                                      f"{q('IsInitialFullLoadDone')} FROM {t('BlobDeltaHighWatermark')} "
                                      f"WHERE {q('TableName')} = {m('t')}", self.bed.params(t=self.table))[0],
        }

    def restore(self, saved: dict) -> None:
        """Put back what :meth:`checkpoint` saved (parents before children, as the foreign key wants)."""
        q, t = self.bed.info.quote, self.bed.info.job_object
        m = self.bed.mark
        self.bed.sql(f"DELETE FROM {self.target}")
        columns = [c for c in COLUMNS if c != "parent_path_locator"]
        values = ", ".join(self._path_value(m(c)) if c == "path_locator" else self._content_value(m(c)) if c == "file_stream"
                           else m(c) for c in columns)
        rows = [dict(zip(COLUMNS, r)) for r in saved["target"]]
        if rows:  # one statement a row, parents first
            self.bed.sql(f"INSERT INTO {self.target} ({', '.join(columns)}) VALUES ({values})",
                         [self.bed.params(**{c: row[c] for c in columns}) for row in rows])
        self.bed.sql(f"DELETE FROM {t('BlobDeltaTargetVersion')} WHERE {q('TableName')} = {m('t')}", self.bed.params(t=self.table))
        names = ("a", "b", "c", "d", "e", "f")
        if saved["versions"]:
            self.bed.sql(f"INSERT INTO {t('BlobDeltaTargetVersion')} ({', '.join(q(c) for c in ('TableName', 'stream_id', 'ModifiedOn', 'BusinessUnit', 'RunId', 'CopiedAt'))}) "
                         f"VALUES ({', '.join(m(n) for n in names)})",
                         [self.bed.params(**{n: (uuid.UUID(str(x)) if i in (1, 3, 4) and x is not None else x)
                                             for i, (n, x) in enumerate(zip(names, v))}) for v in saved["versions"]])
        for deletion_id, applied, run_id in saved["log"]:
            self.bed.sql(f"UPDATE {t('BlobDeltaDeletionLog')} SET {q('AppliedAt')} = {m('a')}, {q('RunId')} = {m('r')} "
                         f"WHERE {q('DeletionId')} = {m('i')}",
                         self.bed.params(a=applied, r=None if run_id is None else uuid.UUID(str(run_id)), i=deletion_id))
        mark, last, completed, done = saved["watermark"]
        self.bed.sql(f"UPDATE {t('BlobDeltaHighWatermark')} SET {q('LastHighWaterModifiedOn')} = {m('a')}, "
                     f"{q('LastRunId')} = {m('b')}, {q('LastRunCompletedAt')} = {m('c')}, {q('IsInitialFullLoadDone')} = {m('d')} "
                     f"WHERE {q('TableName')} = {m('t')}",
                     self.bed.params(a=mark, b=None if last is None else uuid.UUID(str(last)), c=completed, d=bool(done),
                                     t=self.table))

    # ------------------------------------------------------------------ looking
    def ids(self, which: str, *, directories: bool | None = None, under: str | None = None) -> list[uuid.UUID]:
        """Blobs of the source (or target), in path order, optionally only folders/files or one subtree."""
        rows = sorted(self.rows(which), key=lambda r: r[3])
        return [r[0] for r in rows
                if (directories is None or r[5] == directories) and (under is None or r[3].startswith(under))]

    def depth_of(self, stream_id: uuid.UUID) -> int:
        return self.path_of(stream_id).count("/") - 1

    def assert_target_equals_source(self) -> None:
        source, target = self.rows("source"), self.rows("target")
        assert len({r[0] for r in target}) == len(target), "each stream_id once"
        missing = sorted(source - target, key=lambda r: r[3])
        extra = sorted(target - source, key=lambda r: r[3])
        shown = lambda rows: [(r[0], r[1], r[3], r[5]) for r in rows]  # noqa: E731 (id, name, path, folder)
        assert (missing, extra) == ([], []), f"target differs from source: missing {shown(missing)}, extra {shown(extra)}"
        assert self.bed.orphans(self.table) == []
