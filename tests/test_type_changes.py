"""Changing a TVP/composite type that procedures depend on (dbtools.deploy.types.replace_type)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext

from dbtools import commands
from dbtools.deploy import repeatable, types
from dbtools.deploy.render import RenderedObject, render_objects

from .catalog import snapshot
from .test_migrations import deployment_log

TYPE = "DbToolsTestRowType"
V1 = {"mssql": "    [Id] int NOT NULL PRIMARY KEY,\n    [Label] nvarchar(50) NULL",
      "postgresql": '    "Id" integer,\n    "Label" text'}
V2 = {"mssql": V1["mssql"] + ",\n    [Weight] int NULL",
      "postgresql": V1["postgresql"] + ',\n    "Weight" integer'}


def user_object(engine_name: str) -> RenderedObject:
    """A package procedure taking the type: counts rows and sums the last column."""
    if engine_name == "mssql":
        sql = (
            "CREATE OR ALTER PROCEDURE [dbo].[usp_DbToolsTest_TypeUser]\n"
            f"    @Rows [dbo].[{TYPE}] READONLY\nAS\nBEGIN\n    SET NOCOUNT ON;\n"
            "    SELECT COUNT(*) AS RowsSeen FROM @Rows;\nEND;\n"
        )
    else:
        sql = (
            'CREATE OR REPLACE PROCEDURE "BlobDeltaJobs"."usp_DbToolsTest_TypeUser"(\n'
            f'    IN "Rows" "BlobDeltaJobs"."{TYPE}"[], INOUT "RowsSeen" integer DEFAULT NULL)\n'
            "LANGUAGE plpgsql\nSET search_path = pg_catalog, pg_temp\nAS $procedure$\n"
            'BEGIN\n    "RowsSeen" := cardinality("Rows");\nEND;\n$procedure$\n'
        )
    return RenderedObject("usp_DbToolsTest_TypeUser", "PROCEDURE", engine_name, sql, "test")


@pytest.fixture
def with_type(server, monkeypatch):
    """Job DB at head, the test type at V1 and a package procedure that uses it."""
    commands.migrate(url=server.url_string)
    engine = server.job_engine()
    with engine.begin() as conn:
        types.create_type(MigrationContext.configure(conn), TYPE, mssql=V1["mssql"], postgresql=V1["postgresql"])
    engine.dispose()
    extended = lambda name: render_objects(name) + [user_object(name)]  # noqa: E731
    monkeypatch.setattr(repeatable, "render_objects", extended)
    monkeypatch.setattr(types, "render_objects", extended)
    commands.migrate(url=server.url_string)
    return server


def type_columns(server):
    engine = server.job_engine()
    with engine.connect() as conn:
        if server.engine.name == "mssql":
            rows = conn.exec_driver_sql(
                "SELECT c.name FROM sys.table_types AS tt JOIN sys.columns AS c ON c.object_id = tt.type_table_object_id "
                "WHERE tt.name = ? ORDER BY c.column_id", (TYPE,)).all()
        else:
            rows = conn.exec_driver_sql(
                "SELECT a.attname FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid "
                "JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = 'BlobDeltaJobs' AND t.typname = %(t)s AND a.attnum > 0 ORDER BY a.attnum",
                {"t": TYPE}).all()
    engine.dispose()
    return [r[0] for r in rows]


def replace(server, columns):
    engine = server.job_engine()
    try:
        with engine.begin() as conn:
            return types.replace_type(MigrationContext.configure(conn), TYPE,
                                      mssql=columns["mssql"], postgresql=columns["postgresql"])
    finally:
        engine.dispose()


def call_user(server, rows):
    engine = server.job_engine()
    with engine.connect() as conn:
        if server.engine.name == "mssql":
            value = conn.exec_driver_sql(
                "SET NOCOUNT ON; DECLARE @r [dbo].[" + TYPE + "]; INSERT INTO @r ([Id], [Label], [Weight]) VALUES (?, ?, ?), (?, ?, ?); "
                "EXEC [dbo].[usp_DbToolsTest_TypeUser] @Rows = @r;", tuple(v for row in rows for v in row)).scalar()
        else:
            value = conn.exec_driver_sql(
                'CALL "BlobDeltaJobs"."usp_DbToolsTest_TypeUser"(ARRAY[ROW(%s, %s, %s), ROW(%s, %s, %s)]::"BlobDeltaJobs"."'
                + TYPE + '"[])', tuple(v for row in rows for v in row)).scalar()
    engine.dispose()
    return value


def test_replacing_a_type_recreates_it_and_the_deploy_at_head_redeploys_its_dependents(with_type):
    server = with_type
    log_before = deployment_log(server)

    detached = replace(server, V2)
    migrated = commands.migrate(url=server.url_string)

    assert detached == ["usp_DbToolsTest_TypeUser"]
    assert [(o.name, o.action) for o in migrated.outcome.objects if o.action != "Unchanged"] == [
        ("usp_DbToolsTest_TypeUser", "Deployed")]
    assert type_columns(server) == ["Id", "Label", "Weight"]
    assert call_user(server, [(1, "a", 10), (2, "b", 20)]) == 2
    checksum = user_object(server.engine.name).checksum
    assert deployment_log(server) == log_before + [
        ("usp_DbToolsTest_TypeUser", "PROCEDURE", "Dropped", None, "0.1.0"),
        ("usp_DbToolsTest_TypeUser", "PROCEDURE", "Deployed", checksum, "0.1.0"),
    ]


@pytest.mark.parametrize("package_uses_the_type", [True, False])
def test_a_type_used_by_an_object_dbtools_does_not_manage_is_left_alone_with_a_clear_error(
        with_type, monkeypatch, package_uses_the_type):
    server = with_type
    if not package_uses_the_type:
        monkeypatch.setattr(types, "render_objects", render_objects)
        engine = server.job_engine()
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP PROCEDURE " + server.engine.job_object("usp_DbToolsTest_TypeUser"))
        engine.dispose()
    engine = server.job_engine()
    with engine.begin() as conn:
        if server.engine.name == "mssql":
            conn.exec_driver_sql(f"CREATE PROCEDURE dbo.SomeoneElses @R dbo.{TYPE} READONLY AS SELECT 1;")
        else:
            conn.exec_driver_sql(
                f'CREATE FUNCTION "BlobDeltaJobs"."SomeoneElses"(r "BlobDeltaJobs"."{TYPE}") RETURNS int '
                "LANGUAGE sql AS 'SELECT 1'")
    with engine.connect() as conn:
        before = snapshot(conn, server.engine)
    log_before = deployment_log(server)

    with pytest.raises(sa.exc.DBAPIError) as raised:
        replace(server, V2)

    with engine.connect() as conn:
        after = snapshot(conn, server.engine)
    engine.dispose()
    assert "is used by objects dbtools does not manage" in str(raised.value)
    assert "SomeoneElses" in str(raised.value)
    assert after == before
    assert deployment_log(server) == log_before
    assert type_columns(server) == ["Id", "Label"]


def test_the_offline_script_for_a_type_change_checks_detaches_then_recreates(monkeypatch):
    import io

    from alembic.runtime.migration import MigrationContext as MC

    extended = lambda name: render_objects(name) + [user_object(name)]  # noqa: E731
    monkeypatch.setattr(types, "render_objects", extended)
    for dialect in ("mssql", "postgresql"):
        buffer = io.StringIO()
        ctx = MC.configure(dialect_name=dialect, opts={"as_sql": True, "output_buffer": buffer,
                                                       "literal_binds": True})
        types.replace_type(ctx, TYPE, mssql=V2["mssql"], postgresql=V2["postgresql"])
        script = buffer.getvalue()
        guard = script.index("does not manage")
        detach = script.index("ALTER PROCEDURE [dbo].[usp_DbToolsTest_TypeUser]\nAS\n    THROW 50030"
                              if dialect == "mssql" else "DROP ROUTINE")
        logged = script.index("'Dropped'")
        drop_type = script.index("DROP TYPE IF EXISTS")
        create_type = script.index("CREATE TYPE")
        assert guard < detach < logged < drop_type < create_type, dialect
        assert user_object(dialect).sql.strip()[:60] not in script, "redeploying is the head deploy's job"
