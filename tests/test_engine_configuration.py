"""Revision 0003: engine configuration columns, seeded script sets and table configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbtools import commands

from .catalog import snapshot
from .test_static_checks import unparsable

SCRIPTS = Path(__file__).resolve().parent.parent / "migrations" / "versions" / "0003_scripts"
SEEDED_TABLES = ["Gwent_LA_FileTable.dbo.ClientAttachment", "Gwent_LA_FileTable.dbo.ReferralAttachment"]


def rows(server, sql):
    engine = server.job_engine()
    with engine.connect() as conn:
        result = [tuple(r) for r in conn.exec_driver_sql(sql)]
    engine.dispose()
    return result


def test_the_script_sets_are_seeded_with_the_frozen_scripts(server):
    commands.migrate(url=server.url_string)
    e = server.engine
    q, t = e.quote, e.job_object
    folder = SCRIPTS / e.name

    steps = rows(server, f"SELECT {q('ScriptSet')}, {q('StepNumber')}, {q('StepName')}, {q('ScriptText')} "
                         f"FROM {t('BlobDeltaStepScript')} ORDER BY {q('ScriptSet')}, {q('StepNumber')}")
    queue = rows(server, f"SELECT {q('ScriptName')}, {q('ScriptSet')}, {q('ScriptText')} "
                         f"FROM {t('BlobDeltaQueuePopulationScript')} ORDER BY {q('ScriptName')}")

    read = lambda name: (folder / f"{name}.sql").read_text(encoding="utf-8")  # noqa: E731
    assert steps == [
        ("Flat", 1, "Upsert", read("Flat_1_Upsert")),
        ("Hierarchical", 1, "Roots", read("Hierarchical_1_Roots")),
        ("Hierarchical", 2, "MissingParentsBatch", read("Hierarchical_2_MissingParentsBatch")),
        ("Hierarchical", 3, "Children", read("Hierarchical_3_Children")),
    ]
    assert queue == [("HierarchicalMissingParents", "Hierarchical", read("Hierarchical_QueuePopulation"))]


def test_the_two_attachment_tables_are_configured_with_watermarks_and_defaults(server):
    commands.migrate(url=server.url_string)
    e = server.engine
    q, t = e.quote, e.job_object
    columns = ["TableName", "SourceDatabase", "SourceTable", "TargetDatabase", "TargetTable", "MetadataDatabase",
               "MetadataTable", "MetadataIdColumn", "MetadataModifiedOnCol", "MetadataBusinessUnitCol", "ScriptSet",
               "QueuePopulationScriptName", "SafetyBufferMinutes", "FullSyncBaselineMonths", "FullSyncBaselineDays",
               "LeaseMinutes", "BusinessUnitDatabase", "BusinessUnitTable", "BusinessUnitIdColumn"]

    config = rows(server, f"SELECT {', '.join(q(c) for c in columns)} FROM {t('BlobDeltaTableConfig')} "
                          f"ORDER BY {q('TableName')}")
    watermarks = rows(server, f"SELECT {q('TableName')}, {q('LastHighWaterModifiedOn')} "
                              f"FROM {t('BlobDeltaHighWatermark')} ORDER BY {q('TableName')}")

    assert config == [
        (name, "Gwent_LA_FileTable", table, "Gwent_LA_FileTable_Delta", table, "AdvancedRBS_MetaData", table,
         "stream_id", "ModifiedOn", "OwningBusinessUnit", "Hierarchical", "HierarchicalMissingParents",
         240, 1, 1, 120, "Gwent_LA_FileTable", "LA_BU", "BusinessUnitId")
        for name, table in ((n, n.rsplit(".", 1)[1]) for n in SEEDED_TABLES)
    ]
    assert watermarks == [(name, None) for name in SEEDED_TABLES]


def test_downgrading_0003_gives_back_exactly_the_0002_catalog(server):
    commands.migrate(url=server.url_string, revision="0002")
    engine = server.job_engine()
    with engine.connect() as conn:
        at_0002 = snapshot(conn, server.engine)
    engine.dispose()
    commands.migrate(url=server.url_string)

    commands.downgrade(url=server.url_string, revision="0002")

    engine = server.job_engine()
    with engine.connect() as conn:
        after = snapshot(conn, server.engine)
        leftovers = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM {server.engine.job_object('BlobDeltaStepScript')}").scalar()
    engine.dispose()
    assert after == at_0002
    assert leftovers == 0


SAMPLE_NAMES = {
    "{SourceObject}": "[Gwent_LA_FileTable].[dbo].[ReferralAttachment]",
    "{TargetObject}": "[Gwent_LA_FileTable_Delta].[dbo].[ReferralAttachment]",
    "{MetadataObject}": "[AdvancedRBS_MetaData].[dbo].[ReferralAttachment]",
    "{BusinessUnitObject}": "[Gwent_LA_FileTable].[dbo].[LA_BU]",
    "{QueueObject}": "[dbo].[BlobDeltaMissingParentsQueue]",
    "{MetadataIdColumn}": "[stream_id]",
    "{MetadataModifiedOnCol}": "[ModifiedOn]",
    "{MetadataBusinessUnitCol}": "[OwningBusinessUnit]",
    "{BusinessUnitIdColumn}": "[BusinessUnitId]",
    "{ColumnList}": "[stream_id], [ModifiedOn], [OwningBusinessUnit], [Payload]",
    "{SourceColumnList}": "s.[stream_id], s.[ModifiedOn], s.[OwningBusinessUnit], s.[Payload]",
    "{UpdateList}": "t.[ModifiedOn] = b.[ModifiedOn], t.[OwningBusinessUnit] = b.[OwningBusinessUnit], t.[Payload] = b.[Payload]",
}


@pytest.mark.parametrize("path", sorted((SCRIPTS / "mssql").glob("*.sql")), ids=lambda p: p.stem)
def test_every_seeded_sql_server_script_parses_in_sqlfluff_tsql_once_placeholders_are_filled(path):
    text = path.read_text(encoding="utf-8")
    for placeholder, value in SAMPLE_NAMES.items():
        text = text.replace(placeholder, value)
    declare = ("DECLARE @BatchSize int, @ExcludedStreamId uniqueidentifier, @WindowStart datetime2(3), "
               "@WindowEnd datetime2(3), @BusinessUnitId uniqueidentifier, @RunId uniqueidentifier, "
               "@TableName nvarchar(400), @RowsProcessed int;\n")

    assert "{" not in text, "every placeholder has a sample value"
    assert unparsable(declare + text, "tsql") == []
