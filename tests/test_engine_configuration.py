"""Revision 0003: engine configuration columns, seeded script sets and table configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from dbtools import commands

from .catalog import snapshot
from .test_static_checks import unparsable

VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"
# The revisions that froze script texts, oldest first; a later one overrides the files it has.
SCRIPT_REVISIONS = ("0003", "0004", "0008", "0009", "0010", "0013", "0014", "0015", "0016", "0017")


def frozen_script(engine_name: str, name: str, upto: str = SCRIPT_REVISIONS[-1]) -> str:
    """The text a database at revision ``upto`` must hold for script ``name``."""
    text = None
    for revision in SCRIPT_REVISIONS:
        if revision > upto:
            break
        path = VERSIONS / f"{revision}_scripts" / engine_name / f"{name}.sql"
        if path.exists():
            text = path.read_text(encoding="utf-8")
    assert text is not None, name
    return text


def seeded_scripts(server):
    e = server.engine
    q, t = e.quote, e.job_object
    steps = rows(server, f"SELECT {q('ScriptSet')}, {q('StepNumber')}, {q('StepName')}, {q('ScriptText')} "
                         f"FROM {t('BlobDeltaStepScript')} ORDER BY {q('ScriptSet')}, {q('StepNumber')}")
    queue = rows(server, f"SELECT {q('ScriptName')}, {q('ScriptSet')}, {q('ScriptText')} "
                         f"FROM {t('BlobDeltaQueuePopulationScript')} ORDER BY {q('ScriptName')}")
    return steps, queue


def expected_scripts(engine_name, upto=SCRIPT_REVISIONS[-1]):
    read = lambda name: frozen_script(engine_name, name, upto)  # noqa: E731
    return (
        [
            ("Flat", 1, "Upsert", read("Flat_1_Upsert")),
            ("Hierarchical", 1, "Roots", read("Hierarchical_1_Roots")),
            ("Hierarchical", 2, "MissingParentsBatch", read("Hierarchical_2_MissingParentsBatch")),
            ("Hierarchical", 3, "Children", read("Hierarchical_3_Children")),
        ] + ([("Hierarchical", 4, "Deletions", read("Hierarchical_4_Deletions"))] if upto >= "0010" else []),
        [("HierarchicalMissingParents", "Hierarchical", read("Hierarchical_QueuePopulation"))],
    )
SEEDED_TABLES = ["Gwent_LA_FileTable.dbo.ClientAttachment", "Gwent_LA_FileTable.dbo.ReferralAttachment"]


def rows(server, sql):
    engine = server.job_engine()
    with engine.connect() as conn:
        result = [tuple(r) for r in conn.exec_driver_sql(sql)]
    engine.dispose()
    return result


def test_the_script_sets_are_seeded_with_the_frozen_scripts(server):
    commands.migrate(url=server.url_string)

    assert seeded_scripts(server) == expected_scripts(server.engine.name)


def scripts_up_and_down(server, base: str, upto: str = "head"):
    """The seeded scripts at revision ``base``, at ``upto``, and after downgrading back to ``base``."""
    commands.migrate(url=server.url_string, revision=base)
    at_base = seeded_scripts(server)
    commands.migrate(url=server.url_string, revision=upto)
    at_upto = seeded_scripts(server)
    commands.downgrade(url=server.url_string, revision=base)
    return at_base, at_upto, seeded_scripts(server)


def test_revision_0004_replaces_the_windowed_scripts_and_its_downgrade_restores_0003s(server):
    at_0003, at_head, after_downgrade = scripts_up_and_down(server, "0003")

    assert at_0003 == expected_scripts(server.engine.name, upto="0003")
    assert at_head == expected_scripts(server.engine.name)
    assert at_head != at_0003
    assert after_downgrade == at_0003


def test_revision_0008_replaces_the_flat_script_adds_the_first_load_flag_and_its_downgrade_restores_0004s(server):
    e = server.engine
    commands.migrate(url=server.url_string, revision="0007")
    at_0007 = seeded_scripts(server)
    commands.migrate(url=server.url_string, revision="0008")
    at_0008 = seeded_scripts(server)
    columns_0008 = run_step_columns_of(server)
    commands.downgrade(url=server.url_string, revision="0007")
    after_downgrade = seeded_scripts(server)
    downgraded_columns = run_step_columns_of(server)

    assert at_0007 == expected_scripts(e.name, upto="0007")
    assert at_0008 == expected_scripts(e.name, upto="0008")
    changed = [a[:3] for a, b in zip(at_0007[0], at_0008[0]) if a != b]
    assert changed == [("Flat", 1, "Upsert")] and at_0007[1] == at_0008[1]
    assert after_downgrade == at_0007
    assert columns_0008 - downgraded_columns == {"TargetWasEmpty"}
    assert downgraded_columns - columns_0008 == set()


def test_revision_0009_replaces_postgresqls_children_script_and_its_downgrade_restores_0004s(server):
    e = server.engine
    at_0008, at_0009, after_downgrade = scripts_up_and_down(server, "0008", "0009")

    assert at_0008 == expected_scripts(e.name, upto="0008")
    assert at_0009 == expected_scripts(e.name, upto="0009")
    changed = [a[:3] for a, b in zip(at_0008[0], at_0009[0]) if a != b]
    assert changed == ([("Hierarchical", 3, "Children")] if e.name == "postgresql" else [])
    assert at_0008[1] == at_0009[1]
    assert after_downgrade == at_0008


def plan_scripts(server):
    e = server.engine
    q, t = e.quote, e.job_object
    return rows(server, f"SELECT {q('ScriptSet')}, {q('ScriptText')} FROM {t('BlobDeltaPlanScript')} ORDER BY {q('ScriptSet')}")


def test_revision_0010_replaces_every_script_adds_deletions_and_plans_and_its_downgrade_restores_0009s(server):
    # Assemble
    e = server.engine
    commands.migrate(url=server.url_string, revision="0009")
    at_0009, columns_0009 = seeded_scripts(server), run_step_columns_of(server)

    # Act
    commands.migrate(url=server.url_string, revision="0010")
    at_0010, columns_0010, plans = seeded_scripts(server), run_step_columns_of(server), plan_scripts(server)
    commands.downgrade(url=server.url_string, revision="0009")

    # Assert
    assert at_0010 == expected_scripts(e.name, upto="0010")
    assert plans == [("Flat", frozen_script(e.name, "Flat_Plan")), ("Hierarchical", frozen_script(e.name, "Hierarchical_Plan"))]
    assert [a[:3] for a, b in zip(at_0009[0], at_0010[0]) if a != b] == [
        ("Flat", 1, "Upsert"), ("Hierarchical", 1, "Roots"), ("Hierarchical", 2, "MissingParentsBatch"),
        ("Hierarchical", 3, "Children")]
    assert at_0010[1] != at_0009[1]
    assert columns_0010 - columns_0009 == {"RowsInserted", "RowsUpdated", "RowsDeleted", "RowsMoved"}
    assert (seeded_scripts(server), run_step_columns_of(server)) == (at_0009, columns_0009)


def test_revision_0013_replaces_postgresqls_queue_population_script_and_its_downgrade_restores_0010s(server):
    e = server.engine
    at_0012, at_0013, after_downgrade = scripts_up_and_down(server, "0012", "0013")

    assert at_0012 == expected_scripts(e.name, upto="0012")
    assert at_0013 == expected_scripts(e.name, upto="0013")
    assert at_0012[0] == at_0013[0]
    assert (at_0012[1] != at_0013[1]) == (e.name == "postgresql")
    assert after_downgrade == at_0012


def test_revision_0014_replaces_postgresqls_children_script_and_its_downgrade_restores_0010s(server):
    e = server.engine
    at_0013, at_0014, after_downgrade = scripts_up_and_down(server, "0013", "0014")

    assert at_0013 == expected_scripts(e.name, upto="0013")
    assert at_0014 == expected_scripts(e.name, upto="0014")
    changed = [a[:3] for a, b in zip(at_0013[0], at_0014[0]) if a != b]
    assert changed == ([("Hierarchical", 3, "Children")] if e.name == "postgresql" else [])
    assert at_0013[1] == at_0014[1]
    assert after_downgrade == at_0013


def test_revision_0015_replaces_postgresqls_queue_population_and_children_scripts_and_its_downgrade_restores_them(server):
    e = server.engine
    at_0014, at_0015, after_downgrade = scripts_up_and_down(server, "0014", "0015")

    assert at_0014 == expected_scripts(e.name, upto="0014")
    assert at_0015 == expected_scripts(e.name, upto="0015")
    changed = [a[:3] for a, b in zip(at_0014[0], at_0015[0]) if a != b]
    assert changed == ([("Hierarchical", 3, "Children")] if e.name == "postgresql" else [])
    assert (at_0014[1] != at_0015[1]) == (e.name == "postgresql")
    assert after_downgrade == at_0014


def version_table_storage(server) -> str | None:
    """PostgreSQL: the versions table's storage options; SQL Server: its clustered index's fill factor."""
    e = server.engine
    engine = server.job_engine()
    try:
        with engine.connect() as conn:
            if e.name == "postgresql":
                options = conn.execute(sa.text("SELECT reloptions FROM pg_catalog.pg_class WHERE oid = CAST(:t AS regclass)"),
                                       {"t": e.job_object("BlobDeltaTargetVersion")}).scalar_one()
                return ",".join(options) if options else None
            return str(conn.execute(sa.text("SELECT fill_factor FROM sys.indexes WHERE object_id = OBJECT_ID(:t) "
                                            "AND index_id = 1"), {"t": e.job_object("BlobDeltaTargetVersion")}).scalar_one())
    finally:
        engine.dispose()


def test_revision_0016_leaves_room_in_postgresqls_version_pages_and_its_downgrade_takes_it_back(server):
    # Assemble
    e = server.engine
    commands.migrate(url=server.url_string, revision="0015")
    before = version_table_storage(server)

    # Act
    commands.migrate(url=server.url_string, revision="0016")
    at_0016 = version_table_storage(server)
    commands.downgrade(url=server.url_string, revision="0015")
    after_downgrade = version_table_storage(server)

    # Assert: PostgreSQL's pages keep 15% free for rewritten versions; SQL Server's index is unchanged
    if e.name == "postgresql":
        assert (before, at_0016, after_downgrade) == (None, "fillfactor=85", None)
    else:
        assert (before, at_0016, after_downgrade) == ("0", "0", "0")


def test_revision_0016_replaces_postgresqls_queue_population_script_and_its_downgrade_restores_0015s(server):
    e = server.engine
    at_0015, at_0016, after_downgrade = scripts_up_and_down(server, "0015", "0016")

    assert at_0015 == expected_scripts(e.name, upto="0015")
    assert at_0016 == expected_scripts(e.name, upto="0016")
    assert at_0015[0] == at_0016[0]
    assert (at_0015[1] != at_0016[1]) == (e.name == "postgresql")
    assert after_downgrade == at_0015


def candidate_table(server) -> tuple[bool, str | None]:
    """Whether the job database has BlobDeltaRunCandidate, and (PostgreSQL) its persistence and key."""
    e = server.engine
    engine = server.job_engine()
    try:
        with engine.connect() as conn:
            if e.name != "postgresql":
                return (conn.execute(sa.text("SELECT OBJECT_ID(:t)"), {"t": e.job_object("BlobDeltaRunCandidate")})
                        .scalar() is not None, None)
            row = conn.execute(sa.text(
                "SELECT c.relpersistence, pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_class AS c "
                "JOIN pg_catalog.pg_index AS i ON i.indrelid = c.oid "
                "WHERE c.oid = pg_catalog.to_regclass(:t)"), {"t": e.job_object("BlobDeltaRunCandidate")}).all()
            return (bool(row), ";".join(f"{p} {d.split(' USING ', 1)[1]}" for p, d in row) or None)
    finally:
        engine.dispose()


def test_revision_0017_gives_postgresql_an_unlogged_candidate_list_and_new_step_scripts_and_its_downgrade_restores_0016s(server):
    # Assemble
    e = server.engine
    at_0016, at_0017, after_downgrade = scripts_up_and_down(server, "0016", "0017")
    commands.migrate(url=server.url_string, revision="0017")
    table_at_0017 = candidate_table(server)
    commands.downgrade(url=server.url_string, revision="0016")
    table_after_downgrade = candidate_table(server)

    # Assert: PostgreSQL's Roots, Children and queue population scripts change, SQL Server's do not
    assert at_0016 == expected_scripts(e.name, upto="0016")
    assert at_0017 == expected_scripts(e.name, upto="0017")
    changed = [a[:3] for a, b in zip(at_0016[0], at_0017[0]) if a != b]
    assert changed == ([("Hierarchical", 1, "Roots"), ("Hierarchical", 3, "Children")] if e.name == "postgresql" else [])
    assert (at_0016[1] != at_0017[1]) == (e.name == "postgresql")
    assert after_downgrade == at_0016
    if e.name == "postgresql":
        assert table_at_0017 == (True, 'u btree ("RunId", stream_id, "TableName") NULLS NOT DISTINCT')
    else:
        assert table_at_0017 == (False, None)
    assert table_after_downgrade == (False, None)


def run_step_columns_of(server) -> set[str]:
    engine = server.job_engine()
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("BlobDeltaRunStep", schema=server.engine.job_schema)}
    finally:
        engine.dispose()


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
    "{VersionObject}": "[BlobDeltaJobs].[dbo].[BlobDeltaTargetVersion]",
    "{DeletionLogObject}": "[BlobDeltaJobs].[dbo].[BlobDeltaDeletionLog]",
    "{MetadataIdColumn}": "[stream_id]",
    "{MetadataModifiedOnCol}": "[ModifiedOn]",
    "{MetadataBusinessUnitCol}": "[OwningBusinessUnit]",
    "{BusinessUnitIdColumn}": "[BusinessUnitId]",
    "{ColumnList}": "[stream_id], [ModifiedOn], [OwningBusinessUnit], [Payload]",
    "{SourceColumnList}": "s.[stream_id], s.[ModifiedOn], s.[OwningBusinessUnit], s.[Payload]",
    "{UpdateList}": "t.[ModifiedOn] = b.[ModifiedOn], t.[OwningBusinessUnit] = b.[OwningBusinessUnit], t.[Payload] = b.[Payload]",
    "{SourceUpdateList}": "t.[ModifiedOn] = s.[ModifiedOn], t.[OwningBusinessUnit] = s.[OwningBusinessUnit], t.[Payload] = s.[Payload]",
}


# {SourceRow} as usp_BlobDelta_Run fills it: a join on the key, or the metadata row itself.
SOURCE_ROWS = {
    "joined": "JOIN [Gwent_LA_FileTable].[dbo].[ReferralAttachment] AS s ON s.[stream_id] = m.[stream_id]",
    "self": "CROSS APPLY (SELECT m.[stream_id], m.[ModifiedOn], m.[OwningBusinessUnit], m.[Payload]) AS s",
}


@pytest.mark.parametrize("source_row", sorted(SOURCE_ROWS))
@pytest.mark.parametrize("path", sorted(VERSIONS.glob("*_scripts/mssql/*.sql")),
                         ids=lambda p: f"{p.parent.parent.name[:4]}-{p.stem}")
def test_every_seeded_sql_server_script_parses_in_sqlfluff_tsql_once_placeholders_are_filled(path, source_row):
    text = path.read_text(encoding="utf-8")
    for placeholder, value in {**SAMPLE_NAMES, "{SourceRow}": SOURCE_ROWS[source_row]}.items():
        text = text.replace(placeholder, value)
    declare = ("DECLARE @BatchSize int, @ExcludedStreamId uniqueidentifier, @WindowStart datetime2(3), "
               "@WindowEnd datetime2(3), @BusinessUnitId uniqueidentifier, @RunId uniqueidentifier, "
               "@TableName nvarchar(400), @RowsProcessed int, @AfterModifiedOn datetime2(3), "
               "@LastModifiedOn datetime2(3), @TargetWasEmpty bit, @RowsInserted int, @RowsUpdated int, "
               "@RowsDeleted int, @RowsMoved int, @FullSync bit;\n")

    assert "{" not in text, "every placeholder has a sample value"
    assert unparsable(declare + text, "tsql") == []
