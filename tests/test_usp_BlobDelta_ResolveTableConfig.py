"""usp_BlobDelta_ResolveTableConfig on every available engine."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dbtools import commands
from dbtools.db.procs import ProcedureValidationError, call_procedure

from .catalog import snapshot

OUTPUTS = {
    "SourceObject": "nvarchar(776)",
    "TargetObject": "nvarchar(776)",
    "MetadataObject": "nvarchar(776)",
    "MetadataIdColumn": "sysname",
    "MetadataModifiedOnCol": "sysname",
    "MetadataBusinessUnitCol": "sysname",
    "SafetyBufferMinutes": "int",
    "ScriptSet": "nvarchar(50)",
    "IsActive": "bit",
    "BusinessUnitObject": "nvarchar(776)",
    "BusinessUnitIdColumn": "sysname",
}
METADATA_COLUMNS = {
    "postgresql": '"stream_id" uuid NOT NULL, "ModifiedOn" timestamp(3) NOT NULL, "owningbusinessunit" uuid',
    "mssql": "[stream_id] uniqueidentifier NOT NULL, [ModifiedOn] datetime2(3) NOT NULL, [owningbusinessunit] uniqueidentifier",
}
BU_COLUMNS = {
    "postgresql": '"BusinessUnitId" uuid PRIMARY KEY, "Name" text',
    "mssql": "[BusinessUnitId] uniqueidentifier PRIMARY KEY, [Name] nvarchar(100)",
}
BLOB_COLUMNS = {
    "postgresql": '"stream_id" uuid PRIMARY KEY, "name" text',
    "mssql": "[stream_id] uniqueidentifier PRIMARY KEY, [name] nvarchar(255)",
}


def configure(server, table_name, **overrides):
    e = server.engine
    row = {
        "TableName": table_name,
        "SourceDatabase": "Gwent_LA_FileTable", "SourceTable": "ReferralAttachment",
        "TargetDatabase": "BlobDelta_Target", "TargetTable": "ReferralAttachment",
        "MetadataDatabase": "AdvancedRBS_MetaData", "MetadataTable": "ReferralAttachmentBase",
        "MetadataBusinessUnitCol": "owningbusinessunit",
        "BusinessUnitDatabase": "Gwent_LA_FileTable", "BusinessUnitTable": "LA_BU",
        **overrides,
    }
    columns = ", ".join(e.quote(c) for c in row)
    marks = ", ".join("?" if e.name == "mssql" else f"%({c})s" for c in row)
    engine = server.job_engine()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {e.job_object('BlobDeltaTableConfig')} ({columns}) VALUES ({marks})",
            tuple(row.values()) if e.name == "mssql" else row,
        )
    engine.dispose()


def resolve(server, table_name):
    engine = server.job_engine()
    try:
        with engine.begin() as conn:
            return call_procedure(conn, server.engine, "usp_BlobDelta_ResolveTableConfig",
                                  {"TableName": table_name}, OUTPUTS)
    finally:
        engine.dispose()


def full_name(server, database, schema, table):
    return server.engine.mapped_object(database, schema, table)


@pytest.fixture
def job(server, sources):
    commands.migrate(url=server.url_string)
    engine = server.job_engine()
    with engine.begin() as conn:  # these tests own the configuration: start without the seeds
        conn.exec_driver_sql(f"DELETE FROM {server.engine.job_object('BlobDeltaHighWatermark')}")
        conn.exec_driver_sql(f"DELETE FROM {server.engine.job_object('BlobDeltaTableConfig')}")
    engine.dispose()
    e = server.engine.name
    sources.table("Gwent_LA_FileTable", "ReferralAttachment", BLOB_COLUMNS[e])
    sources.table("BlobDelta_Target", "ReferralAttachment", BLOB_COLUMNS[e])
    sources.table("AdvancedRBS_MetaData", "ReferralAttachmentBase", METADATA_COLUMNS[e])
    sources.table("Gwent_LA_FileTable", "LA_BU", BU_COLUMNS[e])
    return server


def test_a_complete_configuration_resolves_to_quoted_names_and_settings(job):
    configure(job, "Gwent_LA_FileTable.dbo.ReferralAttachment")

    result = resolve(job, "Gwent_LA_FileTable.dbo.ReferralAttachment")

    assert result == {
        "SourceObject": full_name(job, "Gwent_LA_FileTable", "dbo", "ReferralAttachment"),
        "TargetObject": full_name(job, "BlobDelta_Target", "dbo", "ReferralAttachment"),
        "MetadataObject": full_name(job, "AdvancedRBS_MetaData", "dbo", "ReferralAttachmentBase"),
        "MetadataIdColumn": "stream_id",
        "MetadataModifiedOnCol": "ModifiedOn",
        "MetadataBusinessUnitCol": "owningbusinessunit",
        "SafetyBufferMinutes": 240,
        "ScriptSet": "Hierarchical",
        "IsActive": True,
        "BusinessUnitObject": full_name(job, "Gwent_LA_FileTable", "dbo", "LA_BU"),
        "BusinessUnitIdColumn": "BusinessUnitId",
    }


def test_an_unknown_table_is_refused_with_the_configured_tables_as_allowed_values(job):
    configure(job, "Gwent_LA_FileTable.dbo.ReferralAttachment")
    configure(job, "Gwent_LA_FileTable.dbo.ClientAttachment", SourceTable="ClientAttachment")

    with pytest.raises(ProcedureValidationError) as raised:
        resolve(job, "Gwent_LA_FileTable.dbo.NoSuchTable")

    # Each engine names the job table as it knows it: dbo.X on SQL Server, "BlobDeltaJobs"."X" on PostgreSQL.
    config = "dbo.BlobDeltaTableConfig" if job.engine.name == "mssql" else '"BlobDeltaJobs"."BlobDeltaTableConfig"'
    assert str(raised.value) == (
        f"@TableName 'Gwent_LA_FileTable.dbo.NoSuchTable' is not configured in {config}; "
        "allowed values: Gwent_LA_FileTable.dbo.ClientAttachment, Gwent_LA_FileTable.dbo.ReferralAttachment"
    )


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_missing_table_name_is_refused(job, value):
    with pytest.raises(ProcedureValidationError, match="@TableName is required"):
        resolve(job, value)


def test_every_missing_object_is_reported_together(job):
    configure(job, "Broken", SourceDatabase="No_Such_Db", TargetTable="NoSuchTarget",
              MetadataModifiedOnCol="LastChanged", MetadataBusinessUnitCol="bu", BusinessUnitIdColumn="BU")

    with pytest.raises(ProcedureValidationError) as raised:
        resolve(job, "Broken")

    q = job.engine.quote
    assert str(raised.value).splitlines() == [
        f"Table 'Broken': source database {q('No_Such_Db')} does not exist or is not visible to the caller "
        "(BlobDeltaTableConfig.SourceDatabase).",
        f"Table 'Broken': target table {full_name(job, 'BlobDelta_Target', 'dbo', 'NoSuchTarget')} "
        "does not exist or is not visible to the caller.",
        f"Table 'Broken': column {q('LastChanged')} (BlobDeltaTableConfig.MetadataModifiedOnCol) does not exist "
        f"in metadata table {full_name(job, 'AdvancedRBS_MetaData', 'dbo', 'ReferralAttachmentBase')}.",
        f"Table 'Broken': column {q('bu')} (BlobDeltaTableConfig.MetadataBusinessUnitCol) does not exist "
        f"in metadata table {full_name(job, 'AdvancedRBS_MetaData', 'dbo', 'ReferralAttachmentBase')}.",
        f"Table 'Broken': column {q('BU')} (BlobDeltaTableConfig.BusinessUnitIdColumn) does not exist "
        f"in business unit table {full_name(job, 'Gwent_LA_FileTable', 'dbo', 'LA_BU')}.",
    ]


HOSTILE = "Evil]\"'; DROP TABLE x;--"
HOSTILE_COLUMN = "id]\"';--"


def test_hostile_identifiers_in_configuration_are_quoted_not_executed(job, sources):
    e = job.engine.name
    q = job.engine.quote
    sources.table("AdvancedRBS_MetaData", HOSTILE, METADATA_COLUMNS[e].replace(q("stream_id"), q(HOSTILE_COLUMN)))
    configure(job, "Hostile ]'\"", MetadataTable=HOSTILE, MetadataIdColumn=HOSTILE_COLUMN)
    engine = job.job_engine()
    with engine.connect() as conn:
        before = snapshot(conn, job.engine)

    result = resolve(job, "Hostile ]'\"")

    with engine.connect() as conn:
        after = snapshot(conn, job.engine)
    engine.dispose()
    assert result["MetadataObject"] == full_name(job, "AdvancedRBS_MetaData", "dbo", HOSTILE)
    assert result["MetadataIdColumn"] == HOSTILE_COLUMN
    assert after == before


def test_a_hostile_name_that_does_not_exist_is_reported_and_changes_nothing(job):
    configure(job, "Hostile", SourceTable="x]; DROP TABLE [dbo].[BlobDeltaRun];--",
              MetadataIdColumn="a'); DROP TABLE \"BlobDeltaJobs\".\"BlobDeltaRun\";--")
    engine = job.job_engine()
    with engine.connect() as conn:
        before = snapshot(conn, job.engine)

    with pytest.raises(ProcedureValidationError) as raised:
        resolve(job, "Hostile")

    with engine.connect() as conn:
        after = snapshot(conn, job.engine)
    engine.dispose()
    lines = str(raised.value).splitlines()
    assert len(lines) == 2
    assert lines[0] == (
        "Table 'Hostile': source table or view "
        + full_name(job, "Gwent_LA_FileTable", "dbo", "x]; DROP TABLE [dbo].[BlobDeltaRun];--")
        + " does not exist or is not visible to the caller."
    )
    assert "(BlobDeltaTableConfig.MetadataIdColumn) does not exist" in lines[1]
    assert after == before


def test_a_view_is_accepted_as_metadata_but_not_as_target(job, sources):
    e = job.engine
    engine = sa.create_engine(job.url, poolclass=sa.pool.NullPool) if e.name == "postgresql" else None
    if e.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql('CREATE VIEW "AdvancedRBS_MetaData"."MetaView" AS '
                                 'SELECT * FROM "AdvancedRBS_MetaData"."ReferralAttachmentBase"')
            conn.exec_driver_sql('CREATE VIEW "BlobDelta_Target"."TargetView" AS '
                                 'SELECT * FROM "BlobDelta_Target"."ReferralAttachment"')
        engine.dispose()
    else:
        for database, ddl in (("AdvancedRBS_MetaData", "CREATE VIEW dbo.MetaView AS SELECT * FROM dbo.ReferralAttachmentBase"),
                              ("BlobDelta_Target", "CREATE VIEW dbo.TargetView AS SELECT * FROM dbo.ReferralAttachment")):
            engine = sa.create_engine(job.url.set(database=database), poolclass=sa.pool.NullPool)
            with engine.begin() as conn:
                conn.exec_driver_sql(ddl)
            engine.dispose()
    configure(job, "ViewMeta", MetadataTable="MetaView")
    configure(job, "ViewTarget", TargetTable="TargetView")

    resolved = resolve(job, "ViewMeta")
    with pytest.raises(ProcedureValidationError) as raised:
        resolve(job, "ViewTarget")

    assert resolved["MetadataObject"] == full_name(job, "AdvancedRBS_MetaData", "dbo", "MetaView")
    assert str(raised.value) == (
        "Table 'ViewTarget': target table " + full_name(job, "BlobDelta_Target", "dbo", "TargetView")
        + " does not exist or is not visible to the caller."
    )


def test_a_percent_sign_in_a_name_survives_into_the_error_text(job):
    configure(job, "100%_sure", SourceTable="Blob%Table")

    with pytest.raises(ProcedureValidationError) as raised:
        resolve(job, "100%_sure")

    assert str(raised.value) == (
        "Table '100%_sure': source table or view " + full_name(job, "Gwent_LA_FileTable", "dbo", "Blob%Table")
        + " does not exist or is not visible to the caller."
    )


def test_a_long_list_of_problems_is_cut_at_the_same_length_on_both_engines(job):
    table_name = "L" * 300
    configure(job, table_name, SourceDatabase="D" * 120, TargetDatabase="E" * 120, MetadataDatabase="F" * 120)

    with pytest.raises(ProcedureValidationError) as raised:
        resolve(job, table_name)

    text = str(raised.value)
    first = f"Table '{table_name}': source database {job.engine.quote('D' * 120)} does not exist or is not visible"
    assert len(text) == 1000
    assert text.endswith(" ... (truncated)")
    assert text.startswith(first)


def test_a_table_without_a_business_unit_table_is_refused(job):
    configure(job, "NoScope", BusinessUnitDatabase=None, BusinessUnitTable=None)

    with pytest.raises(ProcedureValidationError) as raised:
        resolve(job, "NoScope")

    assert str(raised.value) == (
        "Table 'NoScope': BlobDeltaTableConfig.BusinessUnitDatabase and BusinessUnitTable are required "
        "(the business-unit table that scopes a run, e.g. Gwent_LA_FileTable.dbo.LA_BU)."
    )
