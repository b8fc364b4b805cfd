"""Where the job database lives on each engine, and how names are spelled there.

SQL Server
    The job DB is the database ``BlobDeltaJobs``, schema ``dbo``. Other databases named in
    configuration are reached by three-part names ``[Db].[schema].[Table]``.

PostgreSQL
    There are no cross-database queries, so the job DB is the schema ``"BlobDeltaJobs"`` of
    the connected database, and every SQL Server database named in configuration maps to a
    schema of the same name: ``Gwent_LA_FileTable.dbo.ReferralAttachment`` becomes
    ``"Gwent_LA_FileTable"."ReferralAttachment"`` (the SQL Server schema part is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import URL

from ..errors import ConfigurationError

JOB_DATABASE = "BlobDeltaJobs"
DEPLOYMENT_LOG = "BlobDeltaDeploymentLog"

SUPPORTED = ("mssql", "postgresql")


@dataclass(frozen=True)
class EngineInfo:
    """Naming facts for one engine (``mssql`` or ``postgresql``)."""

    name: str

    @property
    def job_schema(self) -> str:
        """Schema that holds the job tables inside the job database."""
        return "dbo" if self.name == "mssql" else JOB_DATABASE

    def quote(self, identifier: str) -> str:
        """Quote one identifier the way the engine's own QUOTENAME / %I would."""
        if self.name == "mssql":
            return "[" + identifier.replace("]", "]]") + "]"
        return '"' + identifier.replace('"', '""') + '"'

    def job_object(self, name: str) -> str:
        """Qualified name of an object in the job DB, as written inside the job DB."""
        return f"{self.quote(self.job_schema)}.{self.quote(name)}"

    def mapped_object(self, database: str, schema: str, table: str) -> str:
        """A configured ``database.schema.table`` as this engine reaches it."""
        if self.name == "mssql":
            return ".".join(self.quote(p) for p in (database, schema, table))
        return f"{self.quote(database)}.{self.quote(table)}"


def engine_for(name_or_url: str | URL) -> EngineInfo:
    """Return the :class:`EngineInfo` for an engine name or an SQLAlchemy URL."""
    if isinstance(name_or_url, URL):
        name = name_or_url.get_backend_name()
    else:
        name = name_or_url
    if name not in SUPPORTED:
        raise ConfigurationError(
            f"engine {name!r} is not supported; allowed values: {', '.join(SUPPORTED)}"
        )
    return EngineInfo(name)
